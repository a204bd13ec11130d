//! `--init`: starting a new run from pretrained weights, matched to the network by name.
//!
//! The source is a `.safetensors` file (torchvision `resnet50` names for `resnet50`/`tiny`,
//! insightface `iresnet` names for the IR-ResNets, or a facekit `model.safetensors`) or a facekit
//! run or export folder (its `best` checkpoint, else `last`, found as `facekit export` finds it).
//!
//! Every tensor of the file either loads into the variable of the same name, or is ignored when
//! the network has no such variable (torchvision's `fc.*`, BN's `num_batches_tracked`) or when it
//! is an ArcFace centre (`arcface.*`: class sets differ between datasets). A name the network
//! lacks is retried without a leading `module.` (what DDP-wrapped models save). A shape mismatch
//! is an error, and so is a file of which nothing loads (the wrong network).

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

/// The safetensors file `source` stands for: itself, or the weights of a run or export folder.
pub fn weights_file(source: &Path) -> Result<PathBuf> {
    if source.is_dir() {
        let (weights, _net_json) = crate::infer::embed::locate(source, None).with_context(|| format!("--init {}", source.display()))?;
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
        let shapes: BTreeMap<String, Vec<i64>> = vs.variables().into_iter().map(|(n, t)| (n, t.size())).collect();
        Self::read_for(source, &shapes)
    }

    /// As [`Pretrained::read`], against a network described by its variables' names and shapes.
    pub fn read_for(source: &Path, shapes: &BTreeMap<String, Vec<i64>>) -> Result<Self> {
        let file = weights_file(source)?;
        let named = Tensor::read_safetensors(&file)
            .with_context(|| format!("--init {}: cannot read it as a safetensors file", file.display()))?;
        let mut loaded: BTreeMap<String, Tensor> = BTreeMap::new();
        let mut ignored = Vec::new();
        let mut renamed = BTreeMap::new();
        for (name, tensor) in named {
            let target = if name.starts_with(ARCFACE_PREFIX) {
                None
            } else if shapes.contains_key(&name) {
                Some(name.clone())
            } else {
                name.strip_prefix(DDP_PREFIX).filter(|n| shapes.contains_key(*n) && !n.starts_with(ARCFACE_PREFIX)).map(str::to_string)
            };
            let Some(target) = target else {
                ignored.push(name);
                continue;
            };
            let want = &shapes[&target];
            if &tensor.size() != want {
                bail!(
                    "--init {}: tensor {name} has shape {:?} in the file but the network's {target} has shape {want:?} \
                     (another architecture, --image-size or --embedding-size?)",
                    file.display(),
                    tensor.size()
                );
            }
            if !matches!(tensor.kind(), Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16) {
                bail!("--init {}: tensor {name} is {:?}, not floating point", file.display(), tensor.kind());
            }
            if loaded.contains_key(&target) {
                bail!("--init {}: the file holds {target} twice (once with a `module.` prefix)", file.display());
            }
            if target != name {
                renamed.insert(name, target.clone());
            }
            loaded.insert(target, tensor);
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
        let report = InitReport { source: source.to_path_buf(), file, loaded: loaded.keys().cloned().collect(), new, ignored, renamed };
        Ok(Pretrained { report, tensors: loaded.into_iter().collect() })
    }

    /// Copies the matched tensors into the variables of `vs`, converted to each variable's dtype
    /// and device, in place: the variables keep their identity (and requires_grad).
    pub fn copy_into(&self, vs: &VarStore) -> Result<()> {
        let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
        let wanted: BTreeSet<&str> = self.tensors.iter().map(|(n, _)| n.as_str()).collect();
        if let Some(missing) = wanted.iter().find(|n| !vars.contains_key(**n)) {
            bail!("--init {}: the network has no variable {missing} (it was matched against another one)", self.report.file.display());
        }
        tch::no_grad(|| -> Result<()> {
            for (name, t) in &self.tensors {
                let mut var = vars[name].shallow_clone();
                if var.size() != t.size() {
                    bail!("--init {}: {name} has shape {:?} in the file but {:?} in the network", self.report.file.display(), t.size(), var.size());
                }
                var.f_copy_(t).with_context(|| format!("--init {}: cannot copy {name}", self.report.file.display()))?;
            }
            Ok(())
        })
    }
}

/// Reads `source` and loads what matches into `vs` (see the module documentation).
pub fn load_into(vs: &VarStore, source: &Path) -> Result<InitReport> {
    let p = Pretrained::read(source, vs)?;
    p.copy_into(vs)?;
    Ok(p.report)
}
