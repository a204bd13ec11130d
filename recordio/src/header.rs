//! The payload of an image record, as `mxnet.recordio.pack` writes it: a 24-byte `IRHeader`
//! (`struct` format `'IfQQ'`, little-endian, no padding since every field is naturally aligned),
//! then `flag` float32 labels when `flag > 0`, then the image bytes (usually a JPEG).

use crate::error::PayloadError;

/// The `IRHeader` at the start of every image record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IrHeader {
    /// 0 for a single label in `label`; otherwise the number of float32 labels that follow.
    pub flag: u32,
    /// The label when `flag == 0` (mxnet writes 0 here when the labels are an array).
    pub label: f32,
    /// A record id (insightface: the record's key).
    pub id: u64,
    /// A second id (insightface: 1 in the header record, else 0).
    pub id2: u64,
}

impl IrHeader {
    /// Bytes of the encoded header.
    pub(crate) const LEN: usize = 24;

    /// Decodes the header from its 24 bytes.
    pub fn decode(bytes: &[u8; Self::LEN]) -> Self {
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
        IrHeader { flag: u32_at(0), label: f32::from_bits(u32_at(4)), id: u64_at(8), id2: u64_at(16) }
    }

    /// Encodes the header into its 24 bytes.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[0..4].copy_from_slice(&self.flag.to_le_bytes());
        out[4..8].copy_from_slice(&self.label.to_bits().to_le_bytes());
        out[8..16].copy_from_slice(&self.id.to_le_bytes());
        out[16..24].copy_from_slice(&self.id2.to_le_bytes());
        out
    }
}

/// A payload split into its header, labels and image bytes (borrowed from the payload).
#[derive(Debug, Clone, PartialEq)]
pub struct Unpacked<'a> {
    /// The header as stored.
    pub header: IrHeader,
    /// The `flag` labels after the header (empty when `flag == 0`).
    pub labels: Vec<f32>,
    /// Everything after the labels.
    pub image: &'a [u8],
}

impl Unpacked<'_> {
    /// The record's label values: the label array when `flag > 0`, else `[header.label]`
    /// (what `mxnet.recordio.unpack` returns as `header.label`).
    pub fn label_values(&self) -> Vec<f32> {
        if self.header.flag > 0 {
            self.labels.clone()
        } else {
            vec![self.header.label]
        }
    }
}

/// Splits a record payload into header, labels and image, as `mxnet.recordio.unpack` does.
///
/// Label values are returned as stored, NaN and negative ones included: judging them is the
/// caller's business. A flag announcing more labels than the payload holds is an error, found
/// from the lengths before anything is allocated.
pub fn unpack(payload: &[u8]) -> Result<Unpacked<'_>, PayloadError> {
    let (head, rest) =
        payload.split_first_chunk::<{ IrHeader::LEN }>().ok_or(PayloadError::Short { len: payload.len() })?;
    let header = IrHeader::decode(head);
    let needed = u64::from(header.flag) * 4;
    if needed > rest.len() as u64 {
        return Err(PayloadError::Labels { flag: header.flag, needed, available: rest.len() });
    }
    let (label_bytes, image) = rest.split_at(needed as usize);
    let labels = label_bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
    Ok(Unpacked { header, labels, image })
}

/// Builds a record payload as `mxnet.recordio.pack` does: with `labels` non-empty the flag is
/// their count and the header's label is written as 0; with none the flag is 0 and
/// `header.label` is the label. `header.flag` itself is ignored: it is derived, never trusted.
///
/// # Panics
/// When `labels` has more than `u32::MAX` values (16 GiB of labels).
pub fn pack(header: IrHeader, labels: &[f32], image: &[u8]) -> Vec<u8> {
    let header = if labels.is_empty() {
        IrHeader { flag: 0, ..header }
    } else {
        IrHeader { flag: u32::try_from(labels.len()).expect("at most u32::MAX labels"), label: 0.0, ..header }
    };
    let mut out = Vec::with_capacity(IrHeader::LEN + 4 * labels.len() + image.len());
    out.extend_from_slice(&header.encode());
    for l in labels {
        out.extend_from_slice(&l.to_le_bytes());
    }
    out.extend_from_slice(image);
    out
}
