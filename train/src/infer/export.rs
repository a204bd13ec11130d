//! Exporting a trained network for use without facekit: weights as safetensors, a TorchScript
//! module traced from the Rust model, and ONNX converted from that module by PyTorch's exporter.
//!
//! Name mapping of `model.safetensors`: facekit's variable names are written unchanged. The
//! backbone's already are torchvision's `resnet50` names (`conv1.weight`, `bn1.running_mean`,
//! `layer1.0.downsample.0.weight`, ...; torchvision's `num_batches_tracked` and classifier `fc.*`
//! are absent) and its embedding head is `embedding.{bn_in,fc,bn_out}.*`; an IR-ResNet's are
//! insightface's `iresnet` names, embedding layers included (`conv1`, `prelu`, `layer1.0.bn1`, ...,
//! `bn2`, `fc`, `features`; no `num_batches_tracked`), and MobileFaceNet's arcface_torch's
//! (`layers.0.layers.0`, ..., `conv_sep`, `features.layers.3`). The optional task heads are
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
//! That Python runs under a time limit ([`ExportOptions::python_timeout`]), in a process group of
//! its own that is killed on a stop request, and dies with facekit however facekit ends.
//!
//! The files of one export are committed together or not at all: they are made in a temporary
//! folder beside the output, which then replaces it whole ([`facekit_io::output::Held`]).

use super::embed::EmbedModel;
use crate::run::paths::{MODEL_FILE, NET_FILE};
use anyhow::{bail, Context, Result};
use facekit_io::StopFlag;
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tch::{CModule, Kind, Tensor};

// The weights and `net.json` are named as in a run folder ([`MODEL_FILE`], [`NET_FILE`]), so that
// `run::paths::locate` reads an export folder as it reads a checkpoint.
/// TorchScript file inside an export folder.
pub(crate) const TORCHSCRIPT_FILE: &str = "model.torchscript.pt";
/// ONNX file inside an export folder.
pub const ONNX_FILE: &str = "model.onnx";
/// Every file an export folder holds: what a later export may replace.
pub const FILES: [&str; 4] = [MODEL_FILE, TORCHSCRIPT_FILE, ONNX_FILE, NET_FILE];
/// The TorchScript module traced only for the ONNX exporter, inside the folder being built and
/// removed before it is committed.
const ONNX_SOURCE_FILE: &str = ".onnx-source.torchscript.pt";

/// How long the ONNX exporter's Python may run by default: a ResNet-100 converts in about a
/// minute on one core, so this is room for a slow, shared machine, not for a hang.
pub const DEFAULT_PYTHON_TIMEOUT: Duration = Duration::from_secs(900);

/// ONNX opset of `model.onnx`. The networks' ops (conv, batch norm, pooling, flatten, gemm) need
/// no more than 11; 17 is a long-standing default of PyTorch's exporter, so its best-tested
/// target, and onnxruntime has run it since 1.12 (2022).
pub const ONNX_OPSET: i64 = 17;
/// Name of the ONNX graph's input.
pub(crate) const ONNX_INPUT: &str = "input";
/// Name of the ONNX graph's output.
pub(crate) const ONNX_OUTPUT: &str = "embedding";
/// Name of the dynamic batch dimension of the ONNX input and output.
pub(crate) const ONNX_BATCH_AXIS: &str = "batch";

/// Environment variable naming the Python that converts to ONNX when `--python` is not given.
pub(crate) const PYTHON_ENV: &str = "FACEKIT_PYTHON";

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
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The formats to write (order and repetition do not matter); `net.json` is always written.
    pub formats: Vec<Format>,
    /// The Python for ONNX; `None`: [`find_python`]'s choice.
    pub python: Option<PathBuf>,
    /// How long that Python may run before it is killed and the export fails.
    pub python_timeout: Duration,
    /// Set (Ctrl-C, SIGTERM) to kill that Python and fail the export, leaving the output as it was.
    pub stop: StopFlag,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            formats: DEFAULT_FORMATS.to_vec(),
            python: None,
            python_timeout: DEFAULT_PYTHON_TIMEOUT,
            stop: StopFlag::new(),
        }
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

/// Writes `model.safetensors`, `model.torchscript.pt` and `net.json` into `out` (the default
/// formats); see [`export_with`].
pub fn export(model: &EmbedModel, out: &Path) -> Result<ExportReport> {
    export_with(model, out, &ExportOptions::default())
}

/// Replaces the folder `out` with the requested formats and `net.json`, made in a temporary folder
/// beside it and committed together only once every format succeeded: a failed or stopped export
/// (no Python for ONNX, say) leaves the folder as it was, and a crash leaves the old folder or
/// the new one, never a mix. Files of formats not requested that an earlier export left go with
/// the old folder: beside this network's net.json they would pass for it.
pub fn export_with(model: &EmbedModel, out: &Path, opts: &ExportOptions) -> Result<ExportReport> {
    if opts.formats.is_empty() {
        bail!("no export format given (formats: safetensors, torchscript, onnx)");
    }
    let wants = |f: Format| opts.formats.contains(&f);
    let held = facekit_io::output::hold(out, &format!("export folder {}", out.display()), &[])?;
    let formats =
        [(Format::Safetensors, MODEL_FILE), (Format::Torchscript, TORCHSCRIPT_FILE), (Format::Onnx, ONNX_FILE)];
    let removed: Vec<PathBuf> = formats
        .iter()
        .filter(|(f, name)| !wants(*f) && out.join(name).exists())
        .map(|(_, name)| out.join(name))
        .collect();
    let mut made = None;
    held.replace_dir(|dir| -> Result<()> {
        made = Some(write_formats(model, dir, out, opts)?);
        Ok(())
    })?;
    let (tensors, onnx) = made.expect("made by a successful build");
    Ok(ExportReport {
        weights: wants(Format::Safetensors).then(|| out.join(MODEL_FILE)),
        torchscript: wants(Format::Torchscript).then(|| out.join(TORCHSCRIPT_FILE)),
        onnx,
        net_json: out.join(NET_FILE),
        removed,
        tensors,
        image_size: model.config.image_size,
        embedding_size: model.config.embedding_size,
    })
}

/// Writes the requested formats and `net.json` into the folder `dir` being built for `out`;
/// returns the number of tensors and the ONNX report.
fn write_formats(
    model: &EmbedModel,
    dir: &Path,
    out: &Path,
    opts: &ExportOptions,
) -> Result<(usize, Option<OnnxReport>)> {
    let wants = |f: Format| opts.formats.contains(&f);
    let mut vars: Vec<(String, Tensor)> = model
        .vs
        .variables()
        .into_iter()
        .filter(|(name, _)| !name.starts_with("arcface."))
        .map(|(name, t)| (name, t.to_device(tch::Device::Cpu).to_kind(Kind::Float).contiguous()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    if wants(Format::Safetensors) {
        let path = dir.join(MODEL_FILE);
        Tensor::write_safetensors(&vars, &path)
            .with_context(|| format!("cannot write {}", out.join(MODEL_FILE).display()))?;
    }
    let s = model.config.image_size;
    let ts_name = if wants(Format::Torchscript) { TORCHSCRIPT_FILE } else { ONNX_SOURCE_FILE };
    let ts = dir.join(ts_name);
    if wants(Format::Torchscript) || wants(Format::Onnx) {
        let example = Tensor::zeros([2, 3, s, s], (Kind::Float, model.device));
        let net = &model.net;
        let traced = tch::no_grad(|| {
            CModule::create_by_tracing("FaceNet", "forward", &[example], &mut |xs: &[Tensor]| {
                vec![net.embed(&xs[0], false)]
            })
        })
        .context("cannot trace the network")?;
        traced.save(&ts).with_context(|| format!("cannot write {}", out.join(ts_name).display()))?;
    }
    let onnx = if wants(Format::Onnx) {
        let python = find_python(opts.python.as_deref());
        let converter = Converter { python: &python, timeout: opts.python_timeout, stop: &opts.stop };
        Some(converter.to_onnx(&ts, &dir.join(ONNX_FILE), &out.join(ONNX_FILE), s, model.config.embedding_size)?)
    } else {
        None
    };
    if !wants(Format::Torchscript) && ts.exists() {
        std::fs::remove_file(&ts).with_context(|| format!("cannot remove {}", ts.display()))?;
    }
    facekit_io::durable::write_json(dir.join(NET_FILE), &model.config)?;
    Ok((vars.len(), onnx))
}

/// The Python that converts to ONNX: `explicit` (`--python`), else `$FACEKIT_PYTHON`, else
/// `python3` on `PATH` (scripts/setup.sh's `.facekit.env` puts the project venv, which has torch
/// and onnx, first). Whether it has them is checked when it runs.
pub(crate) fn find_python(explicit: Option<&Path>) -> PathBuf {
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

/// The Python that runs PyTorch's ONNX exporter, and the limits it runs under.
struct Converter<'a> {
    python: &'a Path,
    timeout: Duration,
    stop: &'a StopFlag,
}

/// What the converter's process left.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Converter<'_> {
    /// Runs the embedded conversion script on the TorchScript module `ts`, writing `tmp`, and
    /// checks that the file declares the documented interface; `target` only names the file in
    /// errors.
    fn to_onnx(&self, ts: &Path, tmp: &Path, target: &Path, size: i64, dim: i64) -> Result<OnnxReport> {
        let start = Instant::now();
        let python = self.python;
        let mut cmd = Command::new(python);
        cmd.arg("-c").arg(ONNX_SCRIPT).arg(ts).arg(tmp).args([size.to_string(), ONNX_OPSET.to_string()]).args([
            ONNX_INPUT,
            ONNX_OUTPUT,
            ONNX_BATCH_AXIS,
        ]);
        let run = self.run(cmd, target)?;
        if run.status.code() == Some(MISSING_MODULES) {
            let missing: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap_or_default();
            let names: Vec<&str> =
                missing["missing"].as_array().into_iter().flatten().filter_map(|m| m.as_str()).collect();
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
                tail(&run.stderr, 40)
            );
        }
        let got: ScriptReport = serde_json::from_str(run.stdout.lines().last().unwrap_or("")).with_context(|| {
            format!(
                "the ONNX exporter (Python `{}`) wrote {} but printed no report: {}",
                python.display(),
                target.display(),
                tail(&run.stdout, 10)
            )
        })?;
        let expect = |name: &str, rest: serde_json::Value| OnnxTensor {
            name: name.into(),
            dims: [serde_json::json!(ONNX_BATCH_AXIS)]
                .into_iter()
                .chain(rest.as_array().unwrap().iter().cloned())
                .collect(),
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

    /// Runs `cmd` to its end, within the time limit and until a stop request, in a process group
    /// of its own; whatever way this returns, that group is killed (a helper it started goes too).
    fn run(&self, mut cmd: Command, target: &Path) -> Result<Finished> {
        let python = self.python;
        if self.stop.is_set() {
            bail!(
                "stopped by {} before the ONNX exporter started; {} was not written",
                self.stop.describe(),
                target.display()
            );
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        die_with_this_process(&mut cmd);
        let mut child = cmd.spawn().with_context(|| {
            format!(
                "cannot run Python `{}` to write {}: ONNX export needs a Python with PyTorch and onnx; {}",
                python.display(),
                target.display(),
                install_hint(python)
            )
        })?;
        let group = KillGroupOnDrop(child.id());
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let deadline = Instant::now() + self.timeout;
        loop {
            if has_exited(&mut child).context("cannot wait for the ONNX exporter")? {
                break;
            }
            if self.stop.is_set() || Instant::now() >= deadline {
                drop(group);
                let _ = child.wait();
                if self.stop.is_set() {
                    bail!(
                        "stopped by {}: the ONNX exporter (Python `{}`) was killed; {} was not written",
                        self.stop.describe(),
                        python.display(),
                        target.display()
                    );
                }
                bail!(
                    "the ONNX exporter (Python `{}`) did not finish writing {} within {} s and was killed; give it longer with --onnx-timeout",
                    python.display(),
                    target.display(),
                    self.timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // The leader is not reaped yet, so its ID, the group's, cannot have been reused.
        drop(group);
        let status = child.wait().context("cannot wait for the ONNX exporter")?;
        let text = |h: std::thread::JoinHandle<String>| h.join().unwrap_or_default();
        Ok(Finished { status, stdout: text(stdout), stderr: text(stderr) })
    }
}

/// Reads a child's pipe to its end on a thread of its own, so that a chatty child never blocks on
/// a full pipe while it is waited for.
fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// True once `child` has ended, without reaping it: until it is reaped its ID (and so its process
/// group's) cannot be given to another process, so the group can still be killed safely.
fn has_exited(child: &mut std::process::Child) -> std::io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `info` is a plain C struct that waitid fills; an all-zero one is valid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our own child with a valid pointer; WNOWAIT leaves it unreaped.
        let r =
            unsafe { libc::waitid(libc::P_PID, child.id(), &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: waitid filled `info` (si_pid stays 0 while the child runs).
        Ok(unsafe { info.si_pid() } != 0)
    }
    // Elsewhere the child is reaped (std keeps its status for the `wait` that follows).
    #[cfg(not(target_os = "linux"))]
    {
        Ok(child.try_wait()?.is_some())
    }
}

/// The process group of a child started by [`die_with_this_process`] (its ID is the child's),
/// killed when dropped.
struct KillGroupOnDrop(u32);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Ok(pgid) = i32::try_from(self.0) {
            // SAFETY: kill(2) with a negative ID signals that process group; it touches no memory.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

/// Makes the child of `cmd` the leader of a process group of its own (so that the terminal's
/// Ctrl-C reaches facekit alone, which then kills the group) and has the kernel kill it when
/// facekit ends however it ends, `kill -9` included. Linux sends that signal when the thread that
/// started the child ends; the converter is started and waited for on one thread.
fn die_with_this_process(cmd: &mut Command) {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        #[cfg(target_os = "linux")]
        {
            let parent = std::process::id();
            // SAFETY: the closure runs in the child between fork and exec and only makes
            // async-signal-safe system calls (prctl, getppid, _exit).
            unsafe {
                cmd.pre_exec(move || {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // facekit may have ended before the request above was made.
                    if libc::getppid() as u32 != parent {
                        libc::_exit(1);
                    }
                    Ok(())
                });
            }
        }
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
