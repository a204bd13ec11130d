//! Advisory locks that keep two facekit processes from writing the same output.
//!
//! A writer (`pack -o training/celeb`, `train` into a run folder) holds an exclusive lock on a
//! small lock file for as long as it runs; a second writer fails at once with a message naming
//! the holder. Readers of a dataset hold a shared lock, so a pack cannot rewrite shards that a
//! training run has mapped into memory. The kernel releases the locks when the process ends,
//! however it ends (even `kill -9`), so a lock is never left behind; the lock file itself stays
//! (removing it would race with a process about to lock it) and holds the last writer's PID.
//!
//! Because a held exclusive lock proves that no other facekit writes there, temporary files
//! found under it are stale whatever PID their name carries (a reused or zombie PID included).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why a lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds it.
    Held {
        /// What the lock protects (`dataset training/celeb`).
        what: String,
        /// The lock file.
        path: PathBuf,
        /// The holder's PID, when it wrote one.
        holder: Option<u32>,
        /// Whether an exclusive (writer's) lock was asked for.
        exclusive: bool,
    },
    /// The lock file could not be created or locked.
    Io {
        /// The lock file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Held { what, path, holder, exclusive } => write!(
                f,
                "{what} is {} by another facekit process{} (it holds {}); wait for it to finish{}",
                if *exclusive { "in use" } else { "being written" },
                holder.map(|pid| format!(" (PID {pid})")).unwrap_or_default(),
                path.display(),
                if *exclusive { " or choose another output" } else { "" }
            ),
            LockError::Io { path, source } => write!(f, "cannot lock {}: {source}", path.display()),
        }
    }
}

/// The operating system's error of [`LockError::Io`] is part of the message, so it is not also
/// the error's `source()`: a printer of the whole chain would say it twice.
impl std::error::Error for LockError {}

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct Lock {
    _file: File,
    path: PathBuf,
}

impl Lock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Takes the exclusive lock `path` (created if needed) for writing `what`, or fails at once when
/// another process holds it.
pub fn exclusive(path: &Path, what: &str) -> Result<Lock, LockError> {
    let io = |source| LockError::Io { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(LockError::Held {
                what: what.into(),
                path: path.to_path_buf(),
                holder: holder(path),
                exclusive: true,
            })
        }
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    // Informational only: who holds it, for the message above.
    let _ = file.set_len(0);
    let _ = writeln!(file, "{}", std::process::id());
    Ok(Lock { _file: file, path: path.to_path_buf() })
}

/// Takes a shared (reader's) lock on `path` when the lock file exists or can be created; `None`
/// where neither is possible (a read-only folder, where no writer can work either). Fails at once
/// when a writer holds the lock.
pub fn shared(path: &Path, what: &str) -> Result<Option<Lock>, LockError> {
    let file = match OpenOptions::new().read(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path) {
                Ok(f) => f,
                Err(_) => return Ok(None),
            }
        }
        Err(_) => return Ok(None),
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(Some(Lock { _file: file, path: path.to_path_buf() })),
        Err(TryLockError::WouldBlock) => {
            Err(LockError::Held { what: what.into(), path: path.to_path_buf(), holder: holder(path), exclusive: false })
        }
        Err(TryLockError::Error(e)) => Err(LockError::Io { path: path.to_path_buf(), source: e }),
    }
}

fn holder(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_fails_at_once_and_readers_wait_for_none() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("celeb.lock");
        let first = exclusive(&p, "dataset celeb").unwrap();
        let err = exclusive(&p, "dataset celeb").unwrap_err().to_string();
        assert!(err.contains("in use by another facekit process") && err.contains("celeb.lock"), "{err}");
        let err = shared(&p, "dataset celeb").unwrap_err().to_string();
        assert!(err.contains("being written"), "{err}");
        drop(first);
        let r1 = shared(&p, "dataset celeb").unwrap().unwrap();
        let r2 = shared(&p, "dataset celeb").unwrap().unwrap();
        assert!(exclusive(&p, "dataset celeb").is_err(), "readers keep writers out");
        drop((r1, r2));
        exclusive(&p, "dataset celeb").unwrap();
    }
}
