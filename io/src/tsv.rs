//! Tab-separated text as facekit writes it (label maps, rejects lists, embedding labels).

/// A field with the characters that would break a TSV line (tab, newline, carriage return)
/// replaced by spaces, so that every line keeps its number of fields.
pub fn field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['\t', '\n', '\r']) {
        s.replace(['\t', '\n', '\r'], " ").into()
    } else {
        s.into()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn separators_inside_a_field_become_spaces() {
        assert_eq!(super::field("a\tb\nc\rd"), "a b c d");
        assert_eq!(super::field("plain"), "plain");
    }
}
