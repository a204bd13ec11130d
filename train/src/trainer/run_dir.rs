//! The run folder held by one training process: [`RunDir`], locked, with the clean-up of what an
//! interrupted run left there. Its paths (every name in a run folder) are [`RunPaths`].

use crate::run::paths::{RunPaths, LOCK_FILE, STATE_FILE};
use anyhow::{bail, Context, Result};
use facekit_io::lock::{self, Lock};
use std::fs;
use std::path::Path;

/// A locked run folder.
#[derive(Debug)]
pub struct RunDir {
    paths: RunPaths,
    /// Whether this process created the folder (it is removed again if the run never starts).
    created: bool,
    /// Held by the process that writes the run (rank 0); `None` for the ranks that only read it.
    _lock: Option<Lock>,
}

impl std::ops::Deref for RunDir {
    type Target = RunPaths;
    fn deref(&self) -> &RunPaths {
        &self.paths
    }
}

impl RunDir {
    /// Locks the folder `root`, creating it when `create` is set and it does not exist.
    pub fn lock(root: &Path, create: bool) -> Result<Self> {
        let created = create && !root.exists();
        if created {
            fs::create_dir_all(root).with_context(|| format!("cannot create run folder {}", root.display()))?;
        } else if !root.is_dir() {
            bail!("run folder {} does not exist", root.display());
        }
        let paths = RunPaths::new(root);
        let lock = match lock::exclusive(&paths.lock(), &format!("run folder {}", root.display())) {
            Ok(l) => l,
            Err(e) => {
                if created {
                    let _ = fs::remove_dir_all(root);
                }
                return Err(e.into());
            }
        };
        Ok(RunDir { paths, created, _lock: Some(lock) })
    }

    /// The folder `root` as a rank other than 0 sees it: not locked, not created (rank 0 does
    /// both), read for a resume's configuration and checkpoint, never written.
    pub fn follow(root: &Path) -> Self {
        RunDir { paths: RunPaths::new(root), created: false, _lock: None }
    }

    /// The paths of the run.
    pub fn paths(&self) -> &RunPaths {
        &self.paths
    }

    /// Whether this process created the folder.
    pub fn created(&self) -> bool {
        self.created
    }

    /// Removes everything in the folder but its lock: what `--overwrite` does, once the new run
    /// has checked its whole configuration and opened its data.
    pub fn clear(&self) -> Result<()> {
        let root = self.paths.root();
        for entry in fs::read_dir(root).with_context(|| format!("cannot list {}", root.display()))? {
            let entry = entry?;
            if entry.file_name() == LOCK_FILE {
                continue;
            }
            remove_any(&entry.path())?;
        }
        Ok(())
    }

    /// Removes the temporary files and folders a killed or failed run left (`.tmp-*` in the folder,
    /// in `checkpoints/` and in the logs' `loss_debug/` and `tensorboard/`), and settles a checkpoint replacement that a crash interrupted
    /// (`checkpoints/.old-NAME`: dropped when `NAME` is complete, renamed back when it is not
    /// there). Under the folder's lock all of them are stale, whatever PID their name carries.
    /// Returns how many entries were removed.
    pub(crate) fn remove_stale(&self) -> Result<usize> {
        let mut removed = 0;
        let (ckpts, logs, events) = (self.paths.checkpoints(), self.paths.loss_debug(), self.paths.tensorboard());
        // The logs' folders too: a resume rewrites `losses.tsv` and event files atomically.
        for dir in [self.paths.root(), &ckpts, &logs, &events] {
            let Ok(entries) = fs::read_dir(dir) else { continue };
            for entry in entries {
                let entry = entry?;
                if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                    remove_any(&entry.path())?;
                    removed += 1;
                }
            }
        }
        let Ok(entries) = fs::read_dir(&ckpts) else { return Ok(removed) };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(target) = name.strip_prefix(".old-") else { continue };
            let target = ckpts.join(target);
            if target.join(STATE_FILE).is_file() {
                remove_any(&entry.path())?;
                removed += 1;
            } else {
                if target.exists() {
                    remove_any(&target)?;
                }
                fs::rename(entry.path(), &target).with_context(|| format!("cannot restore {}", target.display()))?;
            }
        }
        Ok(removed)
    }

    /// Called when the run fails before it started: a folder this process created holds nothing
    /// but the lock, and goes.
    pub(crate) fn abandon(self) {
        if self.created {
            let _ = fs::remove_dir_all(self.paths.root());
        }
    }
}

fn remove_any(p: &Path) -> Result<()> {
    let r = if p.is_dir() { fs::remove_dir_all(p) } else { fs::remove_file(p) };
    r.with_context(|| format!("cannot remove {}", p.display()))
}
