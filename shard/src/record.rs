//! A record as the rest of facekit sees it: one aligned face and its labels.

use super::format::{Encoding, Gender, RecordHeader, UNKNOWN_AGE, UNKNOWN_CLASS, UNKNOWN_GENDER};

/// The labels of one face. Every field but `source` may be unknown, and unknown is explicit:
/// a training task masks such records out of its loss instead of reading them as class 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Labels {
    /// Identity class id (global over all sources of the dataset).
    pub class_id: Option<u32>,
    /// Source number, an index into the manifest's `sources`.
    pub source: u16,
    /// Gender, where known.
    pub gender: Option<Gender>,
    /// Age in years, where known.
    pub age: Option<u16>,
}

impl Labels {
    /// The labels a record header stores (the one place their codes are decoded).
    pub(crate) fn from_header(h: &RecordHeader) -> Self {
        Labels {
            class_id: (h.class_id != UNKNOWN_CLASS).then_some(h.class_id),
            source: h.source,
            gender: match h.gender {
                0 => Some(Gender::Male),
                1 => Some(Gender::Female),
                _ => None,
            },
            age: (h.age != UNKNOWN_AGE).then_some(h.age),
        }
    }
}

/// One record: an encoded face image, its labels and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The labels.
    pub labels: Labels,
    /// How `data` is encoded.
    pub encoding: Encoding,
    /// Image width in pixels.
    pub width: u16,
    /// Image height in pixels.
    pub height: u16,
    /// First 16 bytes of the SHA-256 of the original file, to trace a record back to its photo.
    pub origin_sha256: [u8; 16],
    /// The original file's path relative to its input root (may be empty).
    pub path: String,
    /// The encoded image.
    pub data: Vec<u8>,
}

impl Record {
    /// The header this record is stored with (CRC field zero; the writer fills it in).
    pub(crate) fn header(&self) -> RecordHeader {
        RecordHeader {
            payload_len: self.data.len() as u32,
            class_id: self.labels.class_id.unwrap_or(UNKNOWN_CLASS),
            source: self.labels.source,
            encoding: self.encoding.code(),
            gender: self.labels.gender.map_or(UNKNOWN_GENDER, Gender::code),
            age: self.labels.age.unwrap_or(UNKNOWN_AGE),
            width: self.width,
            height: self.height,
            path_len: self.path.len() as u16,
            origin_sha256: self.origin_sha256,
            crc32: 0,
        }
    }

    /// Rebuilds a record from a validated header and its bytes.
    pub(crate) fn from_parts(h: &RecordHeader, path: &[u8], payload: &[u8]) -> Self {
        Record {
            labels: Labels::from_header(h),
            encoding: Encoding::from_code(h.encoding).expect("validated by RecordHeader::decode"),
            width: h.width,
            height: h.height,
            origin_sha256: h.origin_sha256,
            path: String::from_utf8_lossy(path).into_owned(),
            data: payload.to_vec(),
        }
    }
}
