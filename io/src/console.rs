//! Lines for the person watching a long job, written so that a closed stdout or stderr
//! (`facekit train ... 2>&1 | head`, a terminal that went away, a full log disk) never ends it:
//! Rust's printing macros panic when the write fails, which would take a days-long run down without
//! its checkpoint. A job's record is in its own files; what it prints is a courtesy, and a line
//! that cannot be written is dropped.
//!
//! Lines quote names the program did not choose: file names, records' paths, identities read from
//! a dataset or a `.rec`. A control character in one of them (an escape sequence, a carriage
//! return, a newline) would move the cursor, recolour or forge lines on the reader's terminal and
//! in the log, so every line is written through [`printable`].

use std::borrow::Cow;
use std::io::Write;

/// Writes `line` and a newline to stderr; a failed write (closed pipe, closed terminal) is ignored.
pub fn line(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{}", printable(line));
}

/// Writes `line` and a newline to stdout; a failed write is ignored (see the module doc).
pub fn out(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", printable(line)).and_then(|()| out.flush());
}

/// Writes `text` (a pretty-printed JSON document, lines joined by newlines) to stdout line by
/// line, each through [`printable`]; a failed write is ignored.
pub fn out_lines(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = text.lines().try_for_each(|l| writeln!(out, "{}", printable(l))).and_then(|()| out.flush());
}

/// `line` with every control character but the tab (which separates the columns of the tables
/// facekit prints) written as Rust writes it in a string literal (`\u{1b}`, `\n`, `\r`): one line
/// on the screen, whatever the names in it hold.
pub fn printable(line: &str) -> Cow<'_, str> {
    let hostile = |c: char| c.is_control() && c != '\t';
    if !line.contains(hostile) {
        return Cow::Borrowed(line);
    }
    let mut text = String::with_capacity(line.len() + 8);
    for c in line.chars() {
        if hostile(c) {
            text.extend(c.escape_default());
        } else {
            text.push(c);
        }
    }
    Cow::Owned(text)
}

#[cfg(test)]
mod tests {
    use super::printable;
    use std::borrow::Cow;

    #[test]
    fn names_with_control_characters_are_printed_escaped_on_one_line() {
        let name = "record 7 (evil\u{1b}[2J\rfake: ok\nfacekit: done\u{7f})";
        assert_eq!(printable(name), "record 7 (evil\\u{1b}[2J\\rfake: ok\\nfacekit: done\\u{7f})");
    }

    #[test]
    fn ordinary_lines_tabs_and_other_scripts_are_left_alone() {
        for line in ["pack: 398 of 400 packed", "id\tname\tcount", "Zoë Ünal 王菲 — 12 %"] {
            assert!(matches!(printable(line), Cow::Borrowed(l) if l == line));
        }
    }
}
