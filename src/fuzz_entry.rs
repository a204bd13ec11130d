//! The bodies of the fuzz targets (`fuzz/`), one per parser of untrusted input. They live here so
//! that `tests/fuzz_corpus.rs` replays every saved input through exactly the code the fuzzer ran,
//! on the stable toolchain. Each must return (any `Err` is fine) without panicking, hanging or
//! allocating beyond the budgets of docs/RELIABILITY.md.
#![doc(hidden)]

/// A shard file's bytes: structure, every record, every payload decoded.
pub fn shard(data: &[u8]) {
    let opts = crate::shard::verify::VerifyOptions { decode: true };
    let report = crate::shard::verify::verify_bytes("fuzz", data, opts, &|_| {});
    assert!(report.good_records <= report.records);
    let _ = crate::shard::ShardReader::open_bytes_for_test(data);
}

/// A record header (48 bytes), then the path and payload it announces, decoded as the loader does.
pub fn record(data: &[u8]) {
    use crate::shard::format::{RecordHeader, RECORD_HEADER_LEN};
    let Ok(header) = RecordHeader::decode(data, 0) else { return };
    let path_end = RECORD_HEADER_LEN + header.path_len as usize;
    let (Some(path), Some(payload)) = (data.get(RECORD_HEADER_LEN..path_end), data.get(path_end..)) else { return };
    // The loader only sees records whose size the manifest allows: the fuzzer's header stands in
    // for a manifest of that size, capped at what a face chip can be.
    if u32::from(header.width) * u32::from(header.height) > 1024 * 1024 {
        return;
    }
    let view = crate::shard::reader::RecordView { header, path, payload };
    // The loader's output size is the training image size (at most 4096, checked by its config).
    for size in [u32::from(header.width).clamp(1, 256), 48] {
        let _ = crate::data::decode_record(&view, size);
    }
}

/// Manifest JSON, label-map TSV and pack progress JSON from the same bytes.
pub fn manifest(data: &[u8]) {
    if let Ok(m) = serde_json::from_slice::<crate::shard::Manifest>(data) {
        let _ = m.problems();
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::shard::manifest::LabelMap::parse(text);
    }
    if let Ok(cp) = serde_json::from_slice::<crate::pack::checkpoint::Checkpoint>(data) {
        let _ = cp.check_consistent();
    }
}

/// Any bytes as an input photo.
pub fn image(data: &[u8]) {
    if let Ok(img) = crate::image_io::decode_image(data) {
        let (w, h) = img.dimensions();
        assert!(u64::from(w) * u64::from(h) <= crate::image_io::MAX_PIXELS);
    }
}

/// Landmarks and attributes tables.
pub fn tables(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::pack::landmarks::LandmarkTable::parse(text);
    }
    let _ = crate::pack::attributes::AttributeTable::from_reader(data);
}

/// An LFW-style pairs list.
pub fn pairs(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(list) = crate::eval::pairs::PairList::parse(text) {
            for p in &list.pairs {
                assert!(crate::fsx::is_plain_name(&p.left.name) && crate::fsx::is_plain_name(&p.right.name));
            }
        }
    }
}

/// An insightface verification `.bin`.
pub fn pickle(data: &[u8]) {
    if let Ok(bin) = crate::eval::pickle::parse_verification_bin(data) {
        let bytes: usize = bin.images.iter().map(Vec::len).sum();
        assert!(bytes <= 2 * data.len() + (1 << 20));
    }
}

/// A float32 `.npy` matrix.
pub fn npy(data: &[u8]) {
    if let Ok(m) = crate::eval::npy::decode_f32(data) {
        assert_eq!(m.data.len(), m.rows * m.cols);
    }
}
