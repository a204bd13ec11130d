//! Errors as a command line prints them: one line of causes, outermost first, each said once.
//!
//! Two habits of the libraries under facekit would otherwise reach the user: a context that quotes
//! its source and also returns it as `source()` (the operating system's message printed twice),
//! and libtorch's C++ exceptions, whose messages end in the C++ backtrace ("Exception raised from
//! ... frame #0: ..."), which names frames of facekit's build, never the user's problem.

/// `err` and its causes joined by `: `, each cut before a libtorch backtrace; a cause whose text
/// an outer one already holds is not said again.
pub fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    for cause in std::iter::successors(Some(err), |e| e.source()) {
        let full = cause.to_string();
        let said = without_backtrace(&full);
        if said.is_empty() || text.contains(said) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(said);
    }
    text
}

/// `message` without the backtrace libtorch appends to its exceptions' messages.
fn without_backtrace(message: &str) -> &str {
    let cut =
        ["Exception raised from ", "frame #0:"].iter().filter_map(|m| message.find(m)).min().unwrap_or(message.len());
    message[..cut].trim_end()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    /// An error that quotes its source in its message and also returns it, as many do.
    #[derive(Debug)]
    struct Quoting(std::io::Error);

    impl fmt::Display for Quoting {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "cannot read lm.txt: {}", self.0)
        }
    }

    impl std::error::Error for Quoting {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[derive(Debug)]
    struct Torch;

    impl fmt::Display for Torch {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("Internal torch error: shape mismatch\nException raised from copy_ at aten/src/ATen/native/Copy.cpp:42 (most recent call first):\nframe #0: c10::Error::Error(...) + 0x9d (0x7f in libc10.so)\nframe #1: at::copy_ + 0x12")
        }
    }

    impl std::error::Error for Torch {}

    #[test]
    fn a_quoted_cause_is_said_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let said = io.to_string();
        let text = describe(&Quoting(io));
        assert_eq!(text.matches(said.as_str()).count(), 1, "{text}");
        assert!(text.starts_with("cannot read lm.txt: "), "{text}");
    }

    #[test]
    fn libtorch_backtraces_are_cut() {
        assert_eq!(describe(&Torch), "Internal torch error: shape mismatch");
    }
}
