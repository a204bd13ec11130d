//! Why an input file (or an imported record) was not packed: one [`RejectReason`] per kind of failure, so that reports
//! count them under stable codes and nothing names a reason by a string literal.

use serde::{Deserialize, Serialize};

/// The reason a file is listed in `NAME.rejects.tsv` (its `code` is the TSV's second column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The file has no bytes.
    Empty,
    /// The bytes are no image format facekit knows.
    NotAnImage,
    /// A known format, damaged or cut short.
    TruncatedOrCorrupt,
    /// Over the size budget: file bytes, pixels per side or in all.
    TooLarge,
    /// A format or variant facekit does not decode.
    Unsupported,
    /// The operating system would not let it be read.
    Unreadable,
    /// A FIFO, socket or device among the photos.
    NotARegularFile,
    /// The detector found no face.
    NoFace,
    /// The face is too small to be useful.
    TooSmall,
    /// `--landmarks` has no line for it.
    NoLandmarks,
    /// Its `--landmarks` line cannot describe a face of this photo.
    BadLandmarks,
    /// Outside the layout's identity folders.
    OutsideLayout,
    /// Its path does not fit a record.
    PathTooLong,
    /// Its chip could not be encoded.
    EncodeFailed,
    /// A RecordIO record whose framing or header is damaged (bad magic, cut short, a length
    /// beyond the file).
    BadRecord,
    /// A RecordIO record whose label is no class id (negative, fractional, NaN, out of range).
    BadLabel,
    /// An imported image whose size differs from the dataset's.
    WrongSize,
    /// An `.idx` line that MXNet would not read (a later line lists its key again) or whose
    /// record another key already names: each record is imported once.
    RepeatedEntry,
}

impl RejectReason {
    /// The stable short code written in reports (`no_face`, `truncated_or_corrupt`, ...).
    pub fn code(self) -> &'static str {
        match self {
            RejectReason::Empty => "empty",
            RejectReason::NotAnImage => "not_an_image",
            RejectReason::TruncatedOrCorrupt => "truncated_or_corrupt",
            RejectReason::TooLarge => "too_large",
            RejectReason::Unsupported => "unsupported",
            RejectReason::Unreadable => "unreadable",
            RejectReason::NotARegularFile => "not_a_regular_file",
            RejectReason::NoFace => "no_face",
            RejectReason::TooSmall => "too_small",
            RejectReason::NoLandmarks => "no_landmarks",
            RejectReason::BadLandmarks => "bad_landmarks",
            RejectReason::OutsideLayout => "outside_layout",
            RejectReason::PathTooLong => "path_too_long",
            RejectReason::EncodeFailed => "encode_failed",
            RejectReason::BadRecord => "bad_record",
            RejectReason::BadLabel => "bad_label",
            RejectReason::WrongSize => "wrong_size",
            RejectReason::RepeatedEntry => "repeated_entry",
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

impl From<&facekit_io::FileError> for RejectReason {
    fn from(e: &facekit_io::FileError) -> Self {
        use facekit_io::FileError;
        match e {
            FileError::NotRegular { .. } => RejectReason::NotARegularFile,
            FileError::TooLarge { .. } => RejectReason::TooLarge,
            FileError::Escapes { .. } | FileError::NotText { .. } | FileError::Io { .. } => RejectReason::Unreadable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RejectReason;

    #[test]
    fn codes_are_the_serde_names() {
        for r in [
            RejectReason::NotARegularFile,
            RejectReason::TruncatedOrCorrupt,
            RejectReason::NoFace,
            RejectReason::PathTooLong,
        ] {
            assert_eq!(serde_json::to_value(r).unwrap(), serde_json::Value::from(r.code()));
        }
    }
}
