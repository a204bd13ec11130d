//! Stop requests: SIGINT (Ctrl-C), SIGTERM (what `kill`, Slurm and Kubernetes send before they
//! kill) and SIGHUP ask a long job to stop at its next safe point; a second signal ends the
//! process at once (everything facekit writes is atomic, so that is safe too, only less tidy).
//!
//! Library code never installs handlers: it takes a [`StopFlag`] from its caller and checks it,
//! so tests and embedders decide what stops a run. The one function here that installs handlers,
//! [`StopFlag::from_signals`], is the command line's to call (its handlers are process-wide and
//! never removed); no library calls it. The launcher of several ranks installs its own instead
//! (forwarding, not stopping), in the binary too.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A shared stop request: 0 while running, else the number of the signal that asked to stop
/// (or [`StopFlag::REQUESTED`] for a request made in code).
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<AtomicUsize>);

impl StopFlag {
    /// A stop asked for by code rather than by a signal.
    pub(crate) const REQUESTED: usize = usize::MAX;

    /// A flag no signal sets (tests, embedding).
    pub fn new() -> Self {
        Self::default()
    }

    /// A flag set by SIGINT, SIGTERM and SIGHUP; a second such signal exits the process with
    /// 128 + its number, as a shell reports a process killed by it. Installs process-wide handlers
    /// for good: for a program's `main` (the command line), never for a library.
    pub fn from_signals() -> std::io::Result<Self> {
        let flag = StopFlag::new();
        #[cfg(unix)]
        {
            let seen = Arc::new(std::sync::atomic::AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP] {
                // Handlers run in registration order: the shutdown check sees whether a signal
                // came before this one, then this one is recorded.
                signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, seen.clone())?;
                signal_hook::flag::register(sig, seen.clone())?;
                signal_hook::flag::register_usize(sig, flag.0.clone(), sig as usize)?;
            }
        }
        Ok(flag)
    }

    /// Asks to stop.
    pub fn request(&self) {
        let _ = self.0.compare_exchange(0, Self::REQUESTED, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// True once a stop was asked for.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst) != 0
    }

    /// The signal that asked to stop, if a signal did.
    pub fn signal(&self) -> Option<i32> {
        match self.0.load(Ordering::SeqCst) {
            0 | Self::REQUESTED => None,
            s => i32::try_from(s).ok(),
        }
    }

    /// The exit code for a job stopped by this request: 128 + the signal number (130 for Ctrl-C,
    /// 143 for SIGTERM), 130 for a request made in code.
    pub fn exit_code(&self) -> u8 {
        self.signal().and_then(|s| u8::try_from(128 + s).ok()).unwrap_or(130)
    }

    /// The signal's name, for messages (`SIGTERM`, or `a stop request`).
    pub fn describe(&self) -> &'static str {
        match self.signal() {
            Some(2) => "Ctrl-C (SIGINT)",
            Some(15) => "SIGTERM",
            Some(1) => "SIGHUP",
            _ => "a stop request",
        }
    }
}
