//! The layout insightface gives its `.rec` training sets (MS1M, Glint360K, WebFace42M), as
//! `RecBuilder` in insightface `recognition/common/rec_builder.py` writes it and
//! `MXFaceDataset` in `recognition/arcface_torch/dataset.py` reads it:
//!
//! - keys `1..a`: images, `IRHeader(0, label, key, 0)` then the JPEG, grouped by identity;
//! - keys `a..b`: one record per identity, `IRHeader(0, [first, end], key, 0)` with no image:
//!   its images are keys `first..end`;
//! - key 0, written last: `IRHeader(0, [a, b], 0, 1)` with no image.
//!
//! `mxnet.recordio.pack` turns a list label into `flag = len(label)`, `label = 0` followed by the
//! values as float32, so the ranges are float32 and exact only up to 2^24 (16.7 million): beyond
//! that insightface's own files hold rounded keys, and so do the records built here.
//! `im2rec` files have no header record: their images start at key 0 (insightface #2254).

use crate::header::{pack, IrHeader, Unpacked};
use std::ops::Range;

/// How the records of a `.rec` are organised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// insightface's: a header record 0, images, then one record per identity.
    Insightface {
        /// Keys of the image records.
        images: Range<u64>,
        /// Keys of the identity records.
        identities: Range<u64>,
    },
    /// Every record is an image (`im2rec`, or anything without insightface's header).
    Plain,
}

impl Layout {
    /// The layout told by record 0: insightface's when it has `flag > 0` and a label `[a, b]`
    /// of whole numbers with `1 <= a <= b` (what `MXFaceDataset` trusts, plus the sanity it
    /// lacks), else plain. `None` (no record 0) is plain.
    pub fn detect(record0: Option<&Unpacked<'_>>) -> Layout {
        let Some(r) = record0 else { return Layout::Plain };
        let [a, b] = r.labels[..] else { return Layout::Plain };
        if r.header.flag == 0 {
            return Layout::Plain;
        }
        let key = |v: f32| (v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < u64::MAX as f32).then_some(v as u64);
        match (key(a), key(b)) {
            (Some(a), Some(b)) if 1 <= a && a <= b => Layout::Insightface { images: 1..a, identities: a..b },
            _ => Layout::Plain,
        }
    }
}

/// Record 0 of insightface's layout: labels `[first_identity_key, end]`, `id = 0`, `id2 = 1`
/// (rec_builder.py `close`: `IRHeader(0, (id_idx, self.widx), 0, 1)`), no image.
pub fn header_record(first_identity_key: u64, end: u64) -> Vec<u8> {
    pack(IrHeader { flag: 0, label: 0.0, id: 0, id2: 1 }, &[first_identity_key as f32, end as f32], &[])
}

/// The record at `key` listing one identity's images, keys `first..end`
/// (rec_builder.py `close`: `IRHeader(0, id_flag, idx, 0)` packed with `b''`).
pub fn identity_record(key: u64, first: u64, end: u64) -> Vec<u8> {
    pack(IrHeader { flag: 0, label: 0.0, id: key, id2: 0 }, &[first as f32, end as f32], &[])
}

/// An image record at `key` with class `label` (rec_builder.py `add`: `IRHeader(0, label, idx, 0)`).
pub fn image_record(key: u64, label: f32, image: &[u8]) -> Vec<u8> {
    pack(IrHeader { flag: 0, label, id: key, id2: 0 }, &[], image)
}
