//! A run folder (`Model/<run>/`): every name in it, spelled here and nowhere else, for the trainer
//! that writes it and for whatever reads a run (`embed`, `eval`, `export`, `train --init`).
//! [`RunPaths`] gives every path of one run folder; [`locate`] finds the weights and `net.json` of
//! a run folder, an export folder (which names its weights and network as a checkpoint and a run
//! do) or a weights file.
//!
//! ```text
//! Model/<run>/
//!   .lock                      held by the process training into the folder
//!   config.json                the run's configuration, command lines and datasets
//!   net.json                   the network's configuration (what inference rebuilds)
//!   init.json                  what `--init` loaded, when it was given
//!   train_log.jsonl            one JSON object per logged step and per validation
//!   loss_debug/losses.tsv      the loss of every step
//!   curves.png                 loss, learning-rate and validation curves
//!   tensorboard/events.out.tfevents.SECS.HOST.PID.N
//!                              TensorBoard's event files, one per start of the run
//!   checkpoints/last/, best/   model.safetensors, optimizer.safetensors, state.json
//! ```

use crate::events::{Event, Observer};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Name of the lock file inside a run folder.
pub(crate) const LOCK_FILE: &str = ".lock";
/// The run's configuration, command lines and datasets.
pub(crate) const CONFIG_FILE: &str = "config.json";
/// The network's configuration (`model::NetConfig`), in a run folder and in an export folder.
pub const NET_FILE: &str = "net.json";
/// `--init`'s report: what loaded, what is new, what was ignored.
pub(crate) const INIT_FILE: &str = "init.json";
/// One JSON object per logged step and per validation.
pub(crate) const LOG_FILE: &str = "train_log.jsonl";
/// The folder of [`LOSSES_FILE`].
pub(crate) const LOSS_DEBUG_DIR: &str = "loss_debug";
/// The loss of every step, inside [`LOSS_DEBUG_DIR`].
pub(crate) const LOSSES_FILE: &str = "losses.tsv";
/// Loss, learning-rate and validation curves.
pub(crate) const CURVES_FILE: &str = "curves.png";
/// The folder of TensorBoard's event files.
pub const TENSORBOARD_DIR: &str = "tensorboard";
/// How TensorBoard's event files begin (its readers look for `tfevents` in the name).
pub const EVENTS_FILE_PREFIX: &str = "events.out.tfevents.";
/// The folder of the checkpoints ([`LAST`], [`BEST`]).
pub(crate) const CHECKPOINTS_DIR: &str = "checkpoints";
/// The checkpoint written every `--checkpoint-every` steps and at the end.
pub const LAST: &str = "last";
/// The checkpoint of the best validation metric.
pub const BEST: &str = "best";
/// Weights file inside a checkpoint folder (and inside an export folder).
pub const MODEL_FILE: &str = "model.safetensors";
/// Optimiser state file inside a checkpoint folder.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// The trainer's state inside a checkpoint folder.
pub const STATE_FILE: &str = "state.json";

/// Every path of a run folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPaths {
    root: PathBuf,
}

impl RunPaths {
    /// The run in folder `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunPaths { root: root.into() }
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `config.json`.
    pub fn config(&self) -> PathBuf {
        self.root.join(CONFIG_FILE)
    }

    /// `net.json`.
    pub fn net(&self) -> PathBuf {
        self.root.join(NET_FILE)
    }

    /// `init.json`.
    pub(crate) fn init_report(&self) -> PathBuf {
        self.root.join(INIT_FILE)
    }

    /// `train_log.jsonl`.
    pub fn log(&self) -> PathBuf {
        self.root.join(LOG_FILE)
    }

    /// `loss_debug/`.
    pub fn loss_debug(&self) -> PathBuf {
        self.root.join(LOSS_DEBUG_DIR)
    }

    /// `loss_debug/losses.tsv`.
    pub fn losses(&self) -> PathBuf {
        self.loss_debug().join(LOSSES_FILE)
    }

    /// `curves.png`.
    pub fn curves(&self) -> PathBuf {
        self.root.join(CURVES_FILE)
    }

    /// `tensorboard/`.
    pub fn tensorboard(&self) -> PathBuf {
        self.root.join(TENSORBOARD_DIR)
    }

    /// `tensorboard/events.out.tfevents.SECS.HOST.PID.N`, named as TensorFlow names them: TensorBoard
    /// reads a folder's event files in name order, so `secs` orders the starts of a run.
    pub fn event_file(&self, secs: u64, host: &str, pid: u32, n: usize) -> PathBuf {
        self.tensorboard().join(format!("{EVENTS_FILE_PREFIX}{secs:010}.{host}.{pid}.{n}"))
    }

    /// The event files in `tensorboard/`, in name order (none when the folder does not exist).
    pub fn event_files(&self) -> Result<Vec<PathBuf>> {
        let dir = self.tensorboard();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
        };
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
            if entry.file_name().to_string_lossy().starts_with(EVENTS_FILE_PREFIX) {
                files.push(entry.path());
            }
        }
        files.sort();
        Ok(files)
    }

    /// `checkpoints/`.
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join(CHECKPOINTS_DIR)
    }

    /// `checkpoints/NAME/` ([`LAST`] or [`BEST`]), whether or not it exists.
    pub fn checkpoint(&self, name: &str) -> PathBuf {
        self.checkpoints().join(name)
    }

    /// The folder of checkpoint `name` if one is complete on disk: `checkpoints/NAME/`, or the
    /// predecessor a crash in the middle of replacing it left as `checkpoints/.old-NAME/`.
    pub(crate) fn existing_checkpoint(&self, name: &str) -> Option<PathBuf> {
        facekit_io::durable::settled_dir(&self.checkpoint(name), |d| d.join(STATE_FILE).is_file())
    }

    /// `.lock`.
    pub fn lock(&self) -> PathBuf {
        self.root.join(LOCK_FILE)
    }

    /// The run folder `path` is, if it is one (its `config.json` beside its lock or its
    /// checkpoints): the [`facekit_io::output::Recogniser`] of run folders, so that no command
    /// writes into one it did not create.
    pub fn owner_of(path: &Path) -> Option<facekit_io::output::Owner> {
        let run = RunPaths::new(path);
        (run.config().is_file() && (run.lock().is_file() || run.checkpoints().is_dir())).then(|| {
            facekit_io::output::Owner { what: format!("run folder {}", path.display()), root: path.to_path_buf() }
        })
    }
}

/// The seconds in the name of an event file ([`RunPaths::event_file`]).
pub fn event_file_seconds(path: &Path) -> Option<u64> {
    path.file_name()?.to_str()?.strip_prefix(EVENTS_FILE_PREFIX)?.split('.').next()?.parse().ok()
}

/// Where the weights and `net.json` of `model` are: a run folder (`Model/<run>`, checkpoint
/// `best` or `last`; `None`: `best`, or `last` with a note for a run trained without validation),
/// an export folder (`model.safetensors` + `net.json`), or a `.safetensors` file with `net.json`
/// beside it or in the run folder above it. `events` hears of a fallback to `last`
/// ([`Event::UsingLast`]).
pub fn locate(model: &Path, checkpoint: Option<&str>, events: &Observer) -> Result<(PathBuf, PathBuf)> {
    let run = RunPaths::new(model);
    let weights = if model.is_file() {
        model.to_path_buf()
    } else if model.join(MODEL_FILE).is_file() {
        model.join(MODEL_FILE)
    } else if run.net().is_file() {
        let dir = match checkpoint {
            Some(name) => run.existing_checkpoint(name).with_context(|| {
                format!(
                    "run {} has no checkpoint `{name}` (expected {}/)",
                    model.display(),
                    run.checkpoint(name).display()
                )
            })?,
            None => match run.existing_checkpoint(BEST) {
                Some(d) => d,
                None => {
                    let last = run.existing_checkpoint(LAST).with_context(|| {
                        format!("run {} has no checkpoint yet (neither best nor last)", model.display())
                    })?;
                    events.emit(Event::UsingLast { run: model });
                    last
                }
            },
        };
        dir.join(MODEL_FILE)
    } else {
        bail!(
            "{} is neither a run folder (with {NET_FILE}), an export folder nor a .safetensors file",
            model.display()
        );
    };
    let net_json = weights
        .ancestors()
        .skip(1)
        .take(4)
        .map(|d| RunPaths::new(d).net())
        .find(|p| p.is_file())
        .with_context(|| format!("no {NET_FILE} next to {} or in the run folder above it", weights.display()))?;
    Ok((weights, net_json))
}
