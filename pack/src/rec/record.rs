//! One RecordIO record to one facekit record, or a reason why not: read its frames, unpack the
//! MXNet header, check the label, decode the whole image (damage is found now, not in epoch 3),
//! and keep the image bytes exactly as they were.

use crate::photo::{decode_image, sniff_format};
use crate::reason::RejectReason;
use facekit_recordio::RecReader;
use facekit_shard::{Encoding, Labels, Record};
use image::ImageFormat;
use sha2::{Digest, Sha256};

use super::input::{Entry, MAX_RECORD_BYTES};

/// Largest class id a float32 label holds exactly (2^24); beyond it MXNet's labels are rounded.
pub(crate) const MAX_LABEL: u32 = 1 << 24;

/// What the import expects of every image record.
#[derive(Debug, Clone, Copy)]
pub struct Expect {
    /// Image width and height (from `property`, else from the first image).
    pub width: u32,
    /// See `width`.
    pub height: u32,
    /// Labels must be below this.
    pub classes: LabelLimit,
    /// The dataset's one encoding (a shard format rule): the first image's, JPEG or PNG.
    pub encoding: Encoding,
}

/// How many classes a dataset imported from a file can have: what `property` says, else what
/// the `--names` file names, else no more than the file has image records. A class id is a label, so without this one record
/// labelled 16,777,215 would make a label map of 16.7 million lines (gigabytes, and an ArcFace
/// head no machine holds) for a file of a thousand images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelLimit {
    /// `property`'s class count (checked to be at most the image records).
    Property(u32),
    /// The `--names` file's count, without `property` (checked to be at most the image records).
    Names(u32),
    /// The number of image records (at most [`MAX_LABEL`]).
    Records(u32),
}

impl LabelLimit {
    /// The class count fixed before the import (by `property` or the names file), when one was.
    pub fn fixed(self) -> Option<u32> {
        match self {
            LabelLimit::Property(n) | LabelLimit::Names(n) => Some(n),
            LabelLimit::Records(_) => None,
        }
    }

    /// The number every class id must be below.
    pub fn limit(self) -> u32 {
        match self {
            LabelLimit::Property(n) | LabelLimit::Names(n) | LabelLimit::Records(n) => n,
        }
    }
}

/// The result for one entry.
#[derive(Debug)]
pub enum Outcome {
    /// Imported: the record and its original label.
    Imported(Box<Record>),
    /// Rejected: why, and the detail for the rejects list (which names the key and offset).
    Rejected(RejectReason, String),
}

/// Reads and checks the record at `entry`.
pub fn import_one(reader: &RecReader, entry: Entry, expect: &Expect, rec_name: &str) -> Outcome {
    let at = |detail: String| match entry.key {
        Some(k) => format!("key {k}: {detail}"),
        None => detail,
    };
    let frame = match reader.read_at(entry.offset, MAX_RECORD_BYTES) {
        Ok(f) => f,
        Err(e) => return Outcome::Rejected(RejectReason::BadRecord, at(e.to_string())),
    };
    let u = match facekit_recordio::unpack(&frame.payload) {
        Ok(u) => u,
        Err(e) => return Outcome::Rejected(RejectReason::BadRecord, at(format!("byte offset {}: {e}", entry.offset))),
    };
    let key = entry.key.unwrap_or(u.header.id);
    let label = u.label_values().first().copied().unwrap_or(f32::NAN);
    let class = match check_label(label, expect.classes) {
        Ok(c) => c,
        Err(why) => return Outcome::Rejected(RejectReason::BadLabel, at(why)),
    };
    let encoding = match sniff_format(u.image) {
        Some(ImageFormat::Jpeg) => Encoding::Jpeg,
        Some(ImageFormat::Png) => Encoding::Png,
        _ if u.image.is_empty() => {
            return Outcome::Rejected(RejectReason::Empty, at("the record holds no image".into()))
        }
        other => {
            // Decodable or not, a shard stores JPEG or PNG as they are; say which it was.
            let what = match (other, decode_image(u.image)) {
                (_, Err(e)) => return Outcome::Rejected(e.reject_reason(), at(e.to_string())),
                (Some(f), Ok(_)) => format!("{f:?}"),
                (None, Ok(_)) => "an unrecognised format".into(),
            };
            return Outcome::Rejected(
                RejectReason::Unsupported,
                at(format!("{what} images cannot be stored as they are (JPEG and PNG can)")),
            );
        }
    };
    if encoding != expect.encoding {
        return Outcome::Rejected(
            RejectReason::Unsupported,
            at(format!("a {encoding:?} image in a dataset of {:?} images (one encoding per dataset; re-encoding would change the pixels)", expect.encoding)),
        );
    }
    let img = match decode_image(u.image) {
        Ok(img) => img,
        Err(e) => return Outcome::Rejected(e.reject_reason(), at(e.to_string())),
    };
    if img.width() != expect.width || img.height() != expect.height {
        return Outcome::Rejected(
            RejectReason::WrongSize,
            at(format!("{}x{} image in a {}x{} dataset", img.width(), img.height(), expect.width, expect.height)),
        );
    }
    let mut origin_sha256 = [0u8; 16];
    origin_sha256.copy_from_slice(&Sha256::digest(u.image)[..16]);
    let (width, height) = (img.width() as u16, img.height() as u16);
    // The image is the payload's tail: keep the payload's own buffer rather than a copy, so a
    // record costs its bytes once (what the import's byte budget counts).
    let image_start = frame.payload.len() - u.image.len();
    let mut data = frame.payload;
    data.drain(..image_start);
    Outcome::Imported(Box::new(Record {
        labels: Labels { class_id: Some(class), source: 0, gender: None, age: None },
        encoding,
        width,
        height,
        origin_sha256,
        path: format!("{rec_name}#{key}"),
        data,
    }))
}

/// A label MXNet stored as float32 must be a whole number below `classes` (and below 2^24, where
/// float32 stops counting exactly).
pub(crate) fn check_label(label: f32, classes: LabelLimit) -> Result<u32, String> {
    if !label.is_finite() || label < 0.0 || label.fract() != 0.0 || label >= MAX_LABEL as f32 {
        return Err(format!("label {label} is not a class id (a whole number from 0 to {})", MAX_LABEL - 1));
    }
    let class = label as u32;
    match classes {
        LabelLimit::Property(n) if class >= n => {
            Err(format!("label {class} is not below the {n} classes of the property file"))
        }
        LabelLimit::Names(n) if class >= n => {
            Err(format!("label {class} is not below the {n} classes of the names file"))
        }
        LabelLimit::Records(n) if class >= n => Err(format!(
            "label {class} is not below the {n} image records of the file: a dataset has at most one class per record, \
             so a label this large is damage (it would make {} classes, nearly all without a record)",
            u64::from(class) + 1
        )),
        _ => Ok(class),
    }
}

#[cfg(test)]
mod tests {
    use super::{check_label, LabelLimit, MAX_LABEL};

    #[test]
    fn labels_must_be_whole_nonnegative_and_in_range() {
        let records = LabelLimit::Records(MAX_LABEL);
        assert_eq!(check_label(0.0, records), Ok(0));
        assert_eq!(check_label(85741.0, LabelLimit::Property(85742)), Ok(85741));
        for bad in [f32::NAN, f32::INFINITY, -1.0, 2.5, 16_777_216.0] {
            assert!(check_label(bad, records).is_err(), "{bad}");
        }
        let e = check_label(10.0, LabelLimit::Property(10)).unwrap_err();
        assert!(e.contains("not below the 10 classes"), "{e}");
        let e = check_label(3.0, LabelLimit::Names(3)).unwrap_err();
        assert!(e.contains("not below the 3 classes of the names file"), "{e}");
    }

    #[test]
    fn a_label_beyond_the_files_records_is_damage_not_a_class() {
        let e = check_label(16_777_215.0, LabelLimit::Records(1000)).unwrap_err();
        assert!(e.contains("not below the 1000 image records") && e.contains("16777216 classes"), "{e}");
        assert_eq!(check_label(999.0, LabelLimit::Records(1000)), Ok(999));
    }
}
