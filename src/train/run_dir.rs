//! A run folder (`Model/<run>/`) held by one training process: its lock, and the clean-up of what
//! an interrupted run left there.
//!
//! The folder's lock (`.lock`, see [`crate::lock`]) is taken before anything in it is read or
//! changed, so two runs can never write the same folder, and every temporary file found there
//! while holding it is stale whatever PID its name carries.

use crate::lock::Lock;
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};

/// Name of the lock file inside a run folder.
pub const LOCK_FILE: &str = ".lock";

/// A locked run folder.
#[derive(Debug)]
pub struct RunDir {
    root: PathBuf,
    /// Whether this process created the folder (it is removed again if the run never starts).
    created: bool,
    _lock: Lock,
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
        let lock = match crate::lock::exclusive(&root.join(LOCK_FILE), &format!("run folder {}", root.display())) {
            Ok(l) => l,
            Err(e) => {
                if created {
                    let _ = fs::remove_dir_all(root);
                }
                return Err(e);
            }
        };
        Ok(RunDir { root: root.to_path_buf(), created, _lock: lock })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Whether this process created the folder.
    pub fn created(&self) -> bool {
        self.created
    }

    /// Removes everything in the folder but its lock: what `--overwrite` does, once the new run
    /// has checked its whole configuration and opened its data.
    pub fn clear(&self) -> Result<()> {
        for entry in fs::read_dir(&self.root).with_context(|| format!("cannot list {}", self.root.display()))? {
            let entry = entry?;
            if entry.file_name() == LOCK_FILE {
                continue;
            }
            let p = entry.path();
            let removed = if entry.file_type()?.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
            removed.with_context(|| format!("cannot remove {}", p.display()))?;
        }
        Ok(())
    }

    /// Removes the temporary files and folders a killed or failed run left (`.tmp-*` in the folder
    /// and in `checkpoints/`), and settles a checkpoint replacement that a crash interrupted
    /// (`checkpoints/.old-NAME`: dropped when `NAME` is complete, renamed back when it is not
    /// there). Returns how many entries were removed.
    pub fn remove_stale(&self) -> Result<usize> {
        let mut removed = 0;
        let ckpts = self.root.join("checkpoints");
        for dir in [&self.root, &ckpts] {
            let Ok(entries) = fs::read_dir(dir) else { continue };
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(".tmp-") {
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
            if target.join("state.json").is_file() {
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
    pub fn abandon(self) {
        if self.created {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

fn remove_any(p: &Path) -> Result<()> {
    let r = if p.is_dir() { fs::remove_dir_all(p) } else { fs::remove_file(p) };
    r.with_context(|| format!("cannot remove {}", p.display()))
}
