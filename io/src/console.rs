//! Lines for the person watching a long job, written so that a closed stdout or stderr
//! (`facekit train ... 2>&1 | head`, a terminal that went away, a full log disk) never ends it:
//! Rust's printing macros panic when the write fails, which would take a days-long run down without
//! its checkpoint. A job's record is in its own files; what it prints is a courtesy, and a line
//! that cannot be written is dropped.
//!
//! Lines quote names the program did not choose: file names, records' paths, identities read from
//! a dataset or a `.rec`. A control character in one of them (an escape sequence, a carriage
//! return, a backspace) would move the cursor, recolour or overwrite text on the reader's terminal
//! and in the log, so everything is written through [`printable`]. Newlines stay: facekit's own
//! documents (`--json`, `--print-config`) and quoted tool output (a Python traceback) have several
//! lines.

use std::borrow::Cow;
use std::io::Write;

/// Writes `line` and a newline to stderr ([`printable`]); a failed write (closed pipe, closed
/// terminal) is ignored.
pub fn line(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{}", printable(line));
}

/// Writes `text` and a newline to stdout ([`printable`]); a failed write is ignored (see the module doc).
pub fn out(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", printable(text)).and_then(|()| out.flush());
}

/// `text` with every control character but the newline and the tab (which separates the columns
/// of the tables facekit prints) written as Rust writes it in a string literal (`\u{1b}`, `\r`).
pub fn printable(text: &str) -> Cow<'_, str> {
    let hostile = |c: char| c.is_control() && c != '\t' && c != '\n';
    if !text.contains(hostile) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if hostile(c) {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    Cow::Owned(escaped)
}

#[cfg(test)]
mod tests {
    use super::printable;
    use std::borrow::Cow;

    #[test]
    fn escape_sequences_and_carriage_returns_in_names_are_printed_escaped() {
        let name = "record 7 (evil\u{1b}[2J\rfake: ok\u{8}\u{7f})";
        assert_eq!(printable(name), "record 7 (evil\\u{1b}[2J\\rfake: ok\\u{8}\\u{7f})");
    }

    #[test]
    fn ordinary_lines_documents_tabs_and_other_scripts_are_left_alone() {
        for text in ["pack: 398 of 400 packed", "id\tname\tcount", "Zoë Ünal 王菲 — 12 %", "{\n  \"ok\": true\n}"]
        {
            assert!(matches!(printable(text), Cow::Borrowed(t) if t == text));
        }
    }
}
