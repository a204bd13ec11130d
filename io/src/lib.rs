//! Files and processes, as every facekit stage needs them:
//!
//! - [`bounded`]: reading files whose paths come from users or from other files: only regular
//!   files, never beyond a stated budget, names confined to their folder;
//! - [`durable`]: atomic, fsynced writes of files and folders;
//! - [`lock`]: one writer per output, readers shared;
//! - [`signals`]: stop requests (Ctrl-C, SIGTERM, SIGHUP) as a flag the caller injects;
//! - [`progress`]: progress bars with rate and ETA;
//! - [`console`]: lines for the user that a closed stdout or stderr cannot turn into a crash;
//! - [`tsv`]: tab-separated fields.

pub mod bounded;
pub mod console;
pub mod durable;
pub mod lock;
pub mod progress;
pub mod signals;
pub mod tsv;

pub use bounded::{Budget, FileError};
pub use durable::{AtomicFile, WriteError};
pub use lock::{Lock, LockError};
pub use signals::StopFlag;
