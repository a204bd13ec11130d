//! Files and processes, as every facekit stage needs them:
//!
//! - [`bounded`]: reading files whose paths come from users or from other files: only regular
//!   files, never beyond a stated budget, names confined to their folder;
//! - [`durable`]: atomic, fsynced writes of files and folders;
//! - [`errors`]: errors as the command line prints them (each cause once, no C++ backtrace);
//! - [`lock`]: one writer per output, readers shared;
//! - [`output`]: what a command writes, checked before any work (never over an input, never into
//!   a dataset or run folder it did not create, never through a link or into a device) and held
//!   while it writes;
//! - [`memory`]: the memory and cores a job may use, for budgets derived from the machine;
//! - [`signals`]: stop requests (Ctrl-C, SIGTERM, SIGHUP) as a flag the caller injects;
//! - [`progress`]: progress bars with rate and ETA;
//! - [`console`]: lines for the user that a closed stdout or stderr cannot turn into a crash;
//! - [`tsv`]: tab-separated fields.

pub mod bounded;
pub mod console;
pub mod durable;
pub mod errors;
pub mod lock;
pub mod memory;
pub mod output;
pub mod progress;
pub mod signals;
pub mod tsv;

pub use bounded::{Budget, FileError};
pub use durable::{AtomicFile, WriteError};
pub use lock::{Lock, LockError};
pub use output::{OutputCheck, OutputError};
pub use signals::StopFlag;
