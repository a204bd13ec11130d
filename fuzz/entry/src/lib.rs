//! The bodies of the fuzz targets (`fuzz/`), one per parser of untrusted input. They live in this
//! small crate so that the fuzzers and `tests/cli/fuzz_corpus.rs` (which replays every saved input
//! on the stable toolchain) run exactly the same code, and the product crates carry no test hooks.
//! Each must return (any `Err` is fine) without panicking, hanging or allocating beyond the
//! budgets of docs/RELIABILITY.md.

/// A shard file's bytes: structure, every record, every payload decoded.
pub fn shard(data: &[u8]) {
    use facekit_shard::verify::{verify_bytes, PayloadCheck, VerifyOptions};
    let opts = VerifyOptions { decode: Some(&facekit_data::codec::decoded_size as &PayloadCheck) };
    let report = verify_bytes("fuzz", data, opts, &|_| {});
    assert!(report.good_records <= report.records);
    let _ = facekit_shard::ShardReader::validate_bytes(data);
}

/// A record header (48 bytes), then the path and payload it announces, decoded as the loader does.
pub fn record(data: &[u8]) {
    use facekit_shard::format::{RecordHeader, RECORD_HEADER_LEN};
    let Ok(header) = RecordHeader::decode(data, 0) else { return };
    let path_end = RECORD_HEADER_LEN + header.path_len as usize;
    let (Some(path), Some(payload)) = (data.get(RECORD_HEADER_LEN..path_end), data.get(path_end..)) else { return };
    // The loader only sees records whose size the manifest allows: the fuzzer's header stands in
    // for a manifest of that size, capped at what a face chip can be.
    if u32::from(header.width) * u32::from(header.height) > 1024 * 1024 {
        return;
    }
    let view = facekit_shard::RecordView { header, path, payload };
    // The loader's output size is the training image size (at most 4096, checked by its config).
    for size in [u32::from(header.width).clamp(1, 256), 48] {
        let _ = facekit_data::decode_record(&view, size);
    }
}

/// Manifest JSON, label-map TSV and pack progress JSON from the same bytes.
pub fn manifest(data: &[u8]) {
    if let Ok(m) = facekit_shard::Manifest::from_json(data) {
        let _ = m.problems();
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = facekit_shard::LabelMap::parse(text);
    }
    if let Ok(cp) = serde_json::from_slice::<facekit_pack::checkpoint::Checkpoint>(data) {
        let _ = cp.check_consistent();
    }
}

/// Any bytes as an input photo.
pub fn image(data: &[u8]) {
    if let Ok(img) = facekit_pack::photo::decode_image(data) {
        let (w, h) = img.dimensions();
        assert!(u64::from(w) * u64::from(h) <= facekit_pack::photo::MAX_PIXELS);
    }
}

/// Landmarks and attributes tables.
pub fn tables(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = facekit_pack::landmarks::LandmarkTable::parse(text);
    }
    let _ = facekit_pack::attributes::AttributeTable::from_reader(data);
}

/// An LFW-style pairs list.
pub fn pairs(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(list) = facekit_eval::pairs::PairList::parse(text) {
            for p in &list.pairs {
                let plain = |n: &str| !n.is_empty() && n != "." && n != ".." && !n.contains('/') && !n.contains('\0');
                assert!(plain(&p.left.name) && plain(&p.right.name));
            }
        }
    }
}

/// An insightface verification `.bin`.
pub fn pickle(data: &[u8]) {
    if let Ok(bin) = facekit_eval::pickle::parse_verification_bin(data) {
        let bytes: usize = bin.images.iter().map(Vec::len).sum();
        assert!(bytes <= 2 * data.len() + (1 << 20));
    }
}

/// A float32 `.npy` matrix.
pub fn npy(data: &[u8]) {
    if let Ok(m) = facekit_eval::npy::decode_f32(data) {
        assert_eq!(m.data.len(), m.rows * m.cols);
    }
}

/// A `.rec` file: every record scanned (resynchronising after damage) and unpacked, insightface's
/// layout detected, reads at the offsets an `.idx` could name; the bytes framed as a record and
/// read back unchanged; the same bytes as an `.idx` and a `property` file.
pub fn recordio(data: &[u8]) {
    use facekit_recordio::{unpack, writer::encode_record, Layout, RecReader};
    let reader = RecReader::from_bytes(data.to_vec());
    let mut items = 0;
    for item in reader.scan(data.len()) {
        items += 1;
        assert!(items <= data.len() / 4 + 1, "the scan must make progress");
        let Ok(frame) = item else { continue };
        assert!(frame.payload.len() <= data.len() && frame.next > frame.offset);
        if let Ok(u) = unpack(&frame.payload) {
            assert!(u.labels.len() * 4 + u.image.len() + 24 == frame.payload.len());
            let _ = (u.label_values(), Layout::detect(Some(&u)));
        }
    }
    // Bounded so that a large input stays linear in its length.
    for offset in (0..data.len() as u64).step_by(4).take(256) {
        if let Ok(frame) = reader.read_at(offset, data.len()) {
            assert!(frame.payload.len() <= data.len());
        }
    }
    let mut framed = Vec::new();
    encode_record(data, &mut framed).expect("a fuzz input fits one record");
    let back = RecReader::from_bytes(framed).read_at(0, data.len()).expect("a framed record reads back");
    assert_eq!(back.payload, data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = facekit_recordio::index::parse_idx(text, std::path::Path::new("fuzz.idx"));
        let _ = facekit_recordio::Property::parse(text, std::path::Path::new("property"));
    }
}
