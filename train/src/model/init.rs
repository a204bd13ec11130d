//! `--init`: starting a new run from pretrained weights, matched to the network by name.
//!
//! The source is a `.safetensors` file (torchvision `resnet50` names for `resnet50`/`tiny`,
//! insightface `iresnet` names for the IR-ResNets, arcface_torch's `MobileFaceNet` names for
//! `mobilefacenet`, or a facekit `model.safetensors`) or a facekit run or export folder (its
//! `best` checkpoint, else `last`, found as `facekit export` finds it).
//!
//! Every tensor of the file either loads into the variable of the same name, or is ignored when
//! the network has no such variable (torchvision's `fc.*`, BN's `num_batches_tracked`) or when it
//! is an ArcFace centre (`arcface.*`: class sets differ between datasets). A name the network
//! lacks is retried without a leading `module.` (what DDP-wrapped models save). A shape mismatch
//! is an error, and so is a file of which nothing loads (the wrong network).
//!
//! Memory is bounded by the network, not by the file: the safetensors header (at most 100 MB, as
//! the safetensors library allows) is read and checked first, names and shapes are matched from
//! it, and only the tensors that load are read, each checked against its shape before its bytes
//! are. A checkpoint with millions of ArcFace centres, or a file claiming more data than it has,
//! costs its header.

use crate::events::Observer;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use tch::nn::VarStore;
use tch::{Kind, Tensor};

/// Prefix of the ArcFace centres, which never carry over between runs.
const ARCFACE_PREFIX: &str = "arcface.";
/// Prefix `torch.nn.parallel.DistributedDataParallel` puts before every name of the model it wraps.
const DDP_PREFIX: &str = "module.";

/// What `--init` did, written as `init.json` in the run folder.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InitReport {
    /// The path given to `--init`.
    pub source: PathBuf,
    /// The safetensors file read (the checkpoint chosen when `source` is a folder).
    pub file: PathBuf,
    /// Variables that take their values from the file, by facekit name.
    pub loaded: Vec<String>,
    /// Variables the file does not have, which keep their fresh initialisation.
    pub new: Vec<String>,
    /// Tensors of the file that load into nothing, by their name in the file.
    pub ignored: Vec<String>,
    /// File names that loaded after dropping a leading `module.` (file name -> facekit name).
    pub renamed: BTreeMap<String, String>,
}

impl InitReport {
    /// The one-line summary the trainer prints.
    pub fn summary(&self) -> String {
        format!(
            "--init {}: loaded {} tensors, {} new, {} ignored",
            self.file.display(),
            self.loaded.len(),
            self.new.len(),
            self.ignored.len()
        )
    }
}

/// Pretrained weights read and matched against a network, ready to copy into it.
pub struct Pretrained {
    /// What loads, what is new, what is ignored.
    pub report: InitReport,
    /// (facekit name, tensor from the file) of everything that loads.
    tensors: Vec<(String, Tensor)>,
}

impl std::fmt::Debug for Pretrained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pretrained").field("report", &self.report).finish_non_exhaustive()
    }
}

/// The safetensors file `source` stands for: itself, or the weights of a run or export folder
/// (`events` hears when a run's `last` stands in for its `best`).
pub(crate) fn weights_file(source: &Path, events: &Observer) -> Result<PathBuf> {
    if source.is_dir() {
        let (weights, _net_json) =
            crate::run::paths::locate(source, None, events).with_context(|| format!("--init {}", source.display()))?;
        return Ok(weights);
    }
    // Opened as the project opens every untrusted path: a FIFO or device is named as such and
    // refused without blocking, where safetensors' reader would wait on it or read it forever.
    match facekit_io::bounded::open_regular(source) {
        Ok(_) => Ok(source.to_path_buf()),
        Err(e) if e.is_not_found() => bail!("--init {}: no such file or folder", source.display()),
        Err(e) => Err(e).with_context(|| format!("--init {}", source.display())),
    }
}

impl Pretrained {
    /// Reads `source` (see [`weights_file`]) and matches its tensors against the variables of
    /// `vs` (names and shapes only; `vs` is not changed).
    pub fn read(source: &Path, vs: &VarStore) -> Result<Self> {
        Self::read_observed(source, vs, &Observer::default())
    }

    /// As [`Pretrained::read`], telling `events` what a caller may show (see [`weights_file`]).
    pub(crate) fn read_observed(source: &Path, vs: &VarStore, events: &Observer) -> Result<Self> {
        let shapes: BTreeMap<String, Vec<i64>> = vs.variables().into_iter().map(|(n, t)| (n, t.size())).collect();
        Self::read_for(source, &shapes, events)
    }

    /// As [`Pretrained::read_observed`], against a network described by its variables' names and
    /// shapes.
    pub(crate) fn read_for(source: &Path, shapes: &BTreeMap<String, Vec<i64>>, events: &Observer) -> Result<Self> {
        let file = weights_file(source, events)?;
        let weights = SafetensorsFile::open(&file)
            .with_context(|| format!("--init {}: cannot read it as a safetensors file", file.display()))?;
        let mut loaded: BTreeMap<String, Stored> = BTreeMap::new();
        let mut ignored = Vec::new();
        let mut renamed = BTreeMap::new();
        for (name, tensor) in weights.tensors.iter().map(|(n, t)| (n.clone(), t)) {
            let target = if name.starts_with(ARCFACE_PREFIX) {
                None
            } else if shapes.contains_key(&name) {
                Some(name.clone())
            } else {
                name.strip_prefix(DDP_PREFIX)
                    .filter(|n| shapes.contains_key(*n) && !n.starts_with(ARCFACE_PREFIX))
                    .map(str::to_string)
            };
            let Some(target) = target else {
                ignored.push(name);
                continue;
            };
            let want = &shapes[&target];
            if &tensor.shape != want {
                bail!(
                    "--init {}: tensor {name} has shape {:?} in the file but the network's {target} has shape {want:?} \
                     (another architecture, --image-size or --embedding-size?)",
                    file.display(),
                    tensor.shape
                );
            }
            if tensor.kind.is_none() {
                bail!("--init {}: tensor {name} is {}, not floating point", file.display(), tensor.dtype);
            }
            if loaded.contains_key(&target) {
                bail!("--init {}: the file holds {target} twice (once with a `module.` prefix)", file.display());
            }
            if target != name {
                renamed.insert(name, target.clone());
            }
            loaded.insert(target, tensor.clone());
        }
        if loaded.is_empty() {
            let sample: Vec<&str> = ignored.iter().take(5).map(String::as_str).collect();
            bail!(
                "--init {}: none of its {} tensors matches a variable of this network (wrong --arch? its first names: {})",
                file.display(),
                ignored.len(),
                sample.join(", ")
            );
        }
        let new = shapes.keys().filter(|k| !loaded.contains_key(*k)).cloned().collect();
        ignored.sort();
        let tensors = loaded
            .iter()
            .map(|(target, stored)| {
                Ok((
                    target.clone(),
                    weights.read(stored).with_context(|| format!("--init {}: tensor {target}", file.display()))?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let report = InitReport {
            source: source.to_path_buf(),
            file,
            loaded: loaded.into_keys().collect(),
            new,
            ignored,
            renamed,
        };
        Ok(Pretrained { report, tensors })
    }

    /// Copies the matched tensors into the variables of `vs`, converted to each variable's dtype
    /// and device, in place: the variables keep their identity (and requires_grad).
    pub(crate) fn copy_into(&self, vs: &VarStore) -> Result<()> {
        let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
        let wanted: BTreeSet<&str> = self.tensors.iter().map(|(n, _)| n.as_str()).collect();
        if let Some(missing) = wanted.iter().find(|n| !vars.contains_key(**n)) {
            bail!(
                "--init {}: the network has no variable {missing} (it was matched against another one)",
                self.report.file.display()
            );
        }
        tch::no_grad(|| -> Result<()> {
            for (name, t) in &self.tensors {
                let mut var = vars[name].shallow_clone();
                if var.size() != t.size() {
                    bail!(
                        "--init {}: {name} has shape {:?} in the file but {:?} in the network",
                        self.report.file.display(),
                        t.size(),
                        var.size()
                    );
                }
                var.f_copy_(t).with_context(|| format!("--init {}: cannot copy {name}", self.report.file.display()))?;
            }
            Ok(())
        })
    }
}

/// The most bytes a safetensors header may have (the safetensors library's own limit).
pub(crate) const MAX_HEADER_BYTES: u64 = 100_000_000;

/// A tensor as a safetensors header describes it, checked against the file.
#[derive(Debug, Clone)]
struct Stored {
    /// The header's dtype (`F32`, `I64`, ...).
    dtype: String,
    /// The kind it loads as; `None` for a dtype that is not floating point.
    kind: Option<Kind>,
    shape: Vec<i64>,
    /// Where its bytes are in the file, and how many.
    offset: u64,
    bytes: u64,
}

/// A safetensors file whose header has been read and checked: every tensor's bytes lie inside
/// the file and are exactly its shape times its dtype's size. No tensor is read yet.
struct SafetensorsFile {
    file: std::fs::File,
    tensors: BTreeMap<String, Stored>,
}

impl SafetensorsFile {
    fn open(path: &Path) -> Result<Self> {
        use std::os::unix::fs::FileExt;
        let file = facekit_io::bounded::open_regular(path)?;
        let len = file.metadata().with_context(|| format!("cannot read {}", path.display()))?.len();
        let mut n = [0u8; 8];
        file.read_exact_at(&mut n, 0).context("shorter than the 8-byte header length")?;
        let n = u64::from_le_bytes(n);
        if n > MAX_HEADER_BYTES || n > len.saturating_sub(8) {
            bail!("its header claims {n} bytes (at most {MAX_HEADER_BYTES}, and at most the {len}-byte file)");
        }
        let mut header = vec![0u8; n as usize];
        file.read_exact_at(&mut header, 8).context("cannot read its header")?;
        let header: BTreeMap<String, serde_json::Value> =
            serde_json::from_slice(&header).context("its header is not a JSON object")?;
        let data = 8 + n;
        let tensors = header
            .into_iter()
            .filter(|(name, _)| name != "__metadata__")
            .map(|(name, v)| {
                Ok((name.clone(), Stored::parse(&v, data, len).with_context(|| format!("tensor {name}"))?))
            })
            .collect::<Result<_>>()?;
        Ok(SafetensorsFile { file, tensors })
    }

    /// Reads one tensor's bytes (checked when the header was read).
    fn read(&self, t: &Stored) -> Result<Tensor> {
        use std::os::unix::fs::FileExt;
        let kind = t.kind.context("not floating point")?;
        let mut bytes = vec![0u8; t.bytes as usize];
        self.file.read_exact_at(&mut bytes, t.offset).context("the file ends before its bytes")?;
        Ok(Tensor::f_from_data_size(&bytes, &t.shape, kind)?)
    }
}

impl Stored {
    /// A header entry `{"dtype", "shape", "data_offsets": [begin, end]}`; the offsets count from
    /// `data`, and the bytes must end within the `len`-byte file.
    fn parse(v: &serde_json::Value, data: u64, len: u64) -> Result<Self> {
        let dtype = v["dtype"].as_str().context("no dtype")?.to_string();
        let (kind, size) = match dtype.as_str() {
            "F64" => (Some(Kind::Double), 8),
            "F32" => (Some(Kind::Float), 4),
            "F16" => (Some(Kind::Half), 2),
            "BF16" => (Some(Kind::BFloat16), 2),
            "I64" | "U64" => (None, 8),
            "I32" | "U32" => (None, 4),
            "I16" | "U16" => (None, 2),
            "I8" | "U8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => (None, 1),
            other => bail!("unknown dtype {other:?}"),
        };
        let shape: Vec<i64> = v["shape"]
            .as_array()
            .context("no shape")?
            .iter()
            .map(|d| d.as_i64().filter(|&d| d >= 0).context("a dimension is not a non-negative integer"))
            .collect::<Result<_>>()?;
        let offsets = v["data_offsets"].as_array().context("no data_offsets")?;
        let [Some(begin), Some(end)] =
            [offsets.first().and_then(|o| o.as_u64()), offsets.get(1).and_then(|o| o.as_u64())]
        else {
            bail!("data_offsets is not [begin, end]");
        };
        let bytes = shape.iter().try_fold(size, |n: u64, &d| n.checked_mul(d as u64)).context("its shape overflows")?;
        if offsets.len() != 2 || end < begin || end - begin != bytes || data.checked_add(end).is_none_or(|e| e > len) {
            bail!("its bytes {begin}..{end} are not its {bytes}-byte shape {shape:?} inside the {len}-byte file");
        }
        Ok(Stored { dtype, kind, shape, offset: data + begin, bytes })
    }
}

/// Reads `source` and loads what matches into `vs` (see the module documentation).
pub fn load_into(vs: &VarStore, source: &Path) -> Result<InitReport> {
    let p = Pretrained::read(source, vs)?;
    p.copy_into(vs)?;
    Ok(p.report)
}
