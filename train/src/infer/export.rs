//! Exporting a trained network for use without facekit: weights as safetensors, a TorchScript
//! module traced from the Rust model, and ONNX converted from that module by PyTorch's exporter.
//!
//! Name mapping of `model.safetensors`: facekit's variable names are written unchanged. The
//! backbone's already are torchvision's `resnet50` names (`conv1.weight`, `bn1.running_mean`,
//! `layer1.0.downsample.0.weight`, ...; torchvision's `num_batches_tracked` and classifier `fc.*`
//! are absent) and its embedding head is `embedding.{bn_in,fc,bn_out}.*`; an IR-ResNet's are
//! insightface's `iresnet` names, embedding layers included (`conv1`, `prelu`, `layer1.0.bn1`, ...,
//! `bn2`, `fc`, `features`; no `num_batches_tracked`). The optional task heads are
//! `gender_head.*`, `age_head.*`. ArcFace's class centres (`arcface.*`) are training-only and
//! left out.
//!
//! The TorchScript module maps a float32 NCHW batch of aligned faces of the network's input size,
//! normalised as `(x / 255 - 0.5) / 0.5`, to raw (not normalised) embeddings `[N, dim]`;
//! L2-normalise them before comparing with cosine similarity.
//!
//! The ONNX file is the same function: input [`ONNX_INPUT`] `float32 [batch, 3, S, S]`, output
//! [`ONNX_OUTPUT`] `float32 [batch, dim]`, batch a dynamic axis, opset [`ONNX_OPSET`]. libtorch's
//! C++ API has no ONNX exporter, so facekit runs PyTorch's (`torch.onnx.export` on the TorchScript
//! module, the `dynamo=False` path: the dynamo exporter needs a Python `nn.Module`, which a network
//! written in Rust does not have) through a Python with `torch` and `onnx`; see [`find_python`].

use super::embed::EmbedModel;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use tch::{CModule, Kind, Tensor};

/// File names inside an export folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// TorchScript file inside an export folder.
pub const TORCHSCRIPT_FILE: &str = "model.torchscript.pt";
/// ONNX file inside an export folder.
pub const ONNX_FILE: &str = "model.onnx";
/// Network configuration inside an export folder.
pub const NET_FILE: &str = "net.json";

/// ONNX opset of `model.onnx`. The networks' ops (conv, batch norm, pooling, flatten, gemm) need
/// no more than 11; 17 is a long-standing default of PyTorch's exporter, so its best-tested
/// target, and onnxruntime has run it since 1.12 (2022).
pub const ONNX_OPSET: i64 = 17;
/// Name of the ONNX graph's input.
pub const ONNX_INPUT: &str = "input";
/// Name of the ONNX graph's output.
pub const ONNX_OUTPUT: &str = "embedding";
/// Name of the dynamic batch dimension of the ONNX input and output.
pub const ONNX_BATCH_AXIS: &str = "batch";

/// Environment variable naming the Python that converts to ONNX when `--python` is not given.
pub const PYTHON_ENV: &str = "FACEKIT_PYTHON";

/// The converter run by that Python; embedded so that the binary needs no file beside it.
const ONNX_SCRIPT: &str = include_str!("export_onnx.py");
/// Exit status of the script when `torch` or `onnx` cannot be imported.
const MISSING_MODULES: i32 = 3;

/// A file format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// `model.safetensors`: the weights under the reference implementation's names (torchvision's or insightface's).
    Safetensors,
    /// `model.torchscript.pt`: the traced network, for `torch.jit.load` or libtorch.
    Torchscript,
    /// `model.onnx`: the traced network converted by PyTorch's ONNX exporter (needs Python with torch and onnx).
    Onnx,
}

/// What `facekit export` writes when no format is named (what it wrote before ONNX existed).
pub const DEFAULT_FORMATS: [Format; 2] = [Format::Safetensors, Format::Torchscript];

/// What to export and with which Python.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// The formats to write (order and repetition do not matter); `net.json` is always written.
    pub formats: Vec<Format>,
    /// The Python for ONNX; `None`: [`find_python`]'s choice.
    pub python: Option<PathBuf>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions { formats: DEFAULT_FORMATS.to_vec(), python: None }
    }
}

/// What was written.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    /// The safetensors weights (`None`: not requested).
    pub weights: Option<PathBuf>,
    /// The TorchScript module (`None`: not requested).
    pub torchscript: Option<PathBuf>,
    /// The ONNX model (`None`: not requested).
    pub onnx: Option<OnnxReport>,
    /// The network configuration copied beside them.
    pub net_json: PathBuf,
    /// Files of formats not requested that an earlier export had left in the folder, removed.
    pub removed: Vec<PathBuf>,
    /// Number of tensors of the network (written to the safetensors file when requested).
    pub tensors: usize,
    /// Input side in pixels.
    pub image_size: i64,
    /// Embedding dimension.
    pub embedding_size: i64,
}

/// The ONNX file and how it was made.
#[derive(Debug, Clone, Serialize)]
pub struct OnnxReport {
    /// `model.onnx`.
    pub path: PathBuf,
    /// Its opset ([`ONNX_OPSET`]).
    pub opset: i64,
    /// Its input: name and dimensions (`"batch"` for the dynamic one).
    pub input: OnnxTensor,
    /// Its output.
    pub output: OnnxTensor,
    /// The Python that ran PyTorch's exporter.
    pub python: PathBuf,
    /// That Python's torch version.
    pub torch_version: String,
    /// That Python's onnx version.
    pub onnx_version: String,
    /// Seconds the conversion took (Python start included).
    pub seconds: f64,
}

/// A graph input or output as the exported file declares it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnnxTensor {
    /// Its name.
    pub name: String,
    /// Its dimensions: a number, or the name of a dynamic dimension.
    pub dims: Vec<serde_json::Value>,
    /// Its element type (`FLOAT`).
    #[serde(rename = "type")]
    pub elem_type: String,
}

/// What the conversion script prints.
#[derive(Debug, Deserialize)]
struct ScriptReport {
    inputs: Vec<OnnxTensor>,
    outputs: Vec<OnnxTensor>,
    opset: Option<i64>,
    torch: String,
    onnx: String,
    python: PathBuf,
}

/// Temporary files of an export that are not committed yet; removed on drop, so that a failed
/// export leaves nothing behind.
#[derive(Default)]
struct Pending(Vec<PathBuf>);

impl Pending {
    fn add(&mut self, tmp: PathBuf) -> PathBuf {
        self.0.push(tmp.clone());
        tmp
    }
    fn commit(&mut self, tmp: &Path, target: &Path) -> Result<()> {
        facekit_io::durable::commit_file(tmp, target)?;
        self.0.retain(|p| p != tmp);
        Ok(())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Writes `model.safetensors`, `model.torchscript.pt` and `net.json` into `out` (the default
/// formats); see [`export_with`].
pub fn export(model: &EmbedModel, out: &Path) -> Result<ExportReport> {
    export_with(model, out, &ExportOptions::default())
}

/// Writes the requested formats and `net.json` into `out`. Every file is made under a temporary
/// name first and all are renamed into place only once every format succeeded: a failed export
/// (no Python for ONNX, say) leaves the folder as it was.
pub fn export_with(model: &EmbedModel, out: &Path, opts: &ExportOptions) -> Result<ExportReport> {
    if opts.formats.is_empty() {
        bail!("no export format given (formats: safetensors, torchscript, onnx)");
    }
    let wants = |f: Format| opts.formats.contains(&f);
    let python = wants(Format::Onnx).then(|| find_python(opts.python.as_deref()));
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut pending = Pending::default();

    let mut vars: Vec<(String, Tensor)> = model
        .vs
        .variables()
        .into_iter()
        .filter(|(name, _)| !name.starts_with("arcface."))
        .map(|(name, t)| (name, t.to_device(tch::Device::Cpu).to_kind(Kind::Float).contiguous()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let weights = out.join(WEIGHTS_FILE);
    let weights_tmp = wants(Format::Safetensors).then(|| pending.add(facekit_io::durable::temp_path(&weights)));
    if let Some(tmp) = &weights_tmp {
        Tensor::write_safetensors(&vars, tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    }

    let s = model.config.image_size;
    let torchscript = out.join(TORCHSCRIPT_FILE);
    let ts_tmp = (wants(Format::Torchscript) || wants(Format::Onnx)).then(|| pending.add(facekit_io::durable::temp_path(&torchscript)));
    if let Some(tmp) = &ts_tmp {
        let example = Tensor::zeros([2, 3, s, s], (Kind::Float, model.device));
        let net = &model.net;
        let traced = tch::no_grad(|| {
            CModule::create_by_tracing("FaceNet", "forward", &[example], &mut |xs: &[Tensor]| vec![net.embed(&xs[0], false)])
        })
        .context("cannot trace the network")?;
        traced.save(tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    }

    let onnx = out.join(ONNX_FILE);
    let onnx_done = match (&python, &ts_tmp) {
        (Some(py), Some(ts)) => {
            let tmp = pending.add(facekit_io::durable::temp_path(&onnx));
            Some((to_onnx(py, ts, &tmp, &onnx, s, model.config.embedding_size)?, tmp))
        }
        _ => None,
    };

    // Only now, with every requested format made, does anything in the folder change. A file of a
    // format not requested, left by an earlier export, would sit beside this network's net.json
    // as if it were this network (`--model export/` loads model.safetensors with that net.json):
    // it goes first.
    let mut removed = Vec::new();
    for (format, path) in [(Format::Safetensors, &weights), (Format::Torchscript, &torchscript), (Format::Onnx, &onnx)] {
        if !wants(format) && path.exists() {
            std::fs::remove_file(path).with_context(|| format!("cannot remove {} left by an earlier export", path.display()))?;
            removed.push(path.clone());
        }
    }
    if let Some(tmp) = &weights_tmp {
        pending.commit(tmp, &weights)?;
    }
    if let Some(tmp) = &ts_tmp {
        if wants(Format::Torchscript) {
            pending.commit(tmp, &torchscript)?;
        }
    }
    let onnx_report = match onnx_done {
        Some((report, tmp)) => {
            pending.commit(&tmp, &onnx)?;
            Some(report)
        }
        None => None,
    };
    let net_json = out.join(NET_FILE);
    facekit_io::durable::write_json(&net_json, &model.config)?;
    Ok(ExportReport {
        weights: weights_tmp.map(|_| weights),
        torchscript: wants(Format::Torchscript).then_some(torchscript),
        onnx: onnx_report,
        net_json,
        removed,
        tensors: vars.len(),
        image_size: s,
        embedding_size: model.config.embedding_size,
    })
}

/// The Python that converts to ONNX: `explicit` (`--python`), else `$FACEKIT_PYTHON`, else
/// `python3` on `PATH` (scripts/setup.sh's `.facekit.env` puts the project venv, which has torch
/// and onnx, first). Whether it has them is checked when it runs.
pub fn find_python(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    match std::env::var_os(PYTHON_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from("python3"),
    }
}

/// How to fix a Python that cannot convert.
fn install_hint(python: &Path) -> String {
    format!(
        "install them into that Python (`{} -m pip install torch onnx`), or name one that has them with --python or ${PYTHON_ENV}",
        python.display()
    )
}

/// Runs the embedded conversion script on the TorchScript module `ts`, writing `tmp`, and checks
/// that the file declares the documented interface; `target` only names the file in errors.
fn to_onnx(python: &Path, ts: &Path, tmp: &Path, target: &Path, size: i64, dim: i64) -> Result<OnnxReport> {
    let start = Instant::now();
    let run = Command::new(python)
        .arg("-c")
        .arg(ONNX_SCRIPT)
        .arg(ts)
        .arg(tmp)
        .args([size.to_string(), ONNX_OPSET.to_string()])
        .args([ONNX_INPUT, ONNX_OUTPUT, ONNX_BATCH_AXIS])
        .output()
        .with_context(|| {
            format!(
                "cannot run Python `{}` to write {}: ONNX export needs a Python with PyTorch and onnx; {}",
                python.display(),
                target.display(),
                install_hint(python)
            )
        })?;
    let stdout = String::from_utf8_lossy(&run.stdout);
    if run.status.code() == Some(MISSING_MODULES) {
        let missing: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_default();
        let names: Vec<&str> = missing["missing"].as_array().into_iter().flatten().filter_map(|m| m.as_str()).collect();
        bail!(
            "cannot write {}: Python `{}` cannot import {}; ONNX export runs PyTorch's exporter and needs torch and onnx: {}",
            target.display(),
            python.display(),
            names.join(", "),
            install_hint(python)
        );
    }
    if !run.status.success() {
        bail!(
            "PyTorch's ONNX exporter (Python `{}`) failed to write {} ({}):\n{}",
            python.display(),
            target.display(),
            run.status,
            tail(&String::from_utf8_lossy(&run.stderr), 40)
        );
    }
    let got: ScriptReport = serde_json::from_str(stdout.lines().last().unwrap_or("")).with_context(|| {
        format!("the ONNX exporter (Python `{}`) wrote {} but printed no report: {}", python.display(), target.display(), tail(&stdout, 10))
    })?;
    let expect = |name: &str, rest: serde_json::Value| OnnxTensor {
        name: name.into(),
        dims: [serde_json::json!(ONNX_BATCH_AXIS)].into_iter().chain(rest.as_array().unwrap().iter().cloned()).collect(),
        elem_type: "FLOAT".into(),
    };
    let input = expect(ONNX_INPUT, serde_json::json!([3, size, size]));
    let output = expect(ONNX_OUTPUT, serde_json::json!([dim]));
    if got.inputs != [input.clone()] || got.outputs != [output.clone()] || got.opset != Some(ONNX_OPSET) {
        bail!(
            "the ONNX exporter wrote {} with inputs {:?}, outputs {:?}, opset {:?}; expected {input:?}, {output:?}, opset {ONNX_OPSET}",
            target.display(),
            got.inputs,
            got.outputs,
            got.opset
        );
    }
    Ok(OnnxReport {
        path: target.to_path_buf(),
        opset: ONNX_OPSET,
        input,
        output,
        python: got.python,
        torch_version: got.torch,
        onnx_version: got.onnx,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
