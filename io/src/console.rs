//! Lines for the person watching a long job, written so that a closed stdout or stderr
//! (`facekit train ... 2>&1 | head`, a terminal that went away, a full log disk) never ends it:
//! Rust's printing macros panic when the write fails, which would take a days-long run down without
//! its checkpoint. A job's record is in its own files; what it prints is a courtesy, and a line
//! that cannot be written is dropped.

use std::io::Write;

/// Writes `line` and a newline to stderr; a failed write (closed pipe, closed terminal) is ignored.
pub fn line(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

/// Writes `line` and a newline to stdout; a failed write is ignored (see the module doc).
pub fn out(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}
