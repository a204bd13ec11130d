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
        let _ = facekit_pack::checkpoint::check_consistent(&cp);
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
                assert!(p.left != p.right, "a pair of one photo with itself is refused");
            }
            // Any pairs may be unusable: what is kept is in order, and every fold keeps as many.
            let usable: Vec<bool> = list.pairs.iter().map(|p| p.left.number % 3 != 0).collect();
            let kept = facekit_eval::pairs::keep_folds(&list, &usable);
            assert!(kept.kept.windows(2).all(|w| w[0] < w[1]) && kept.kept.iter().all(|&i| usable[i]));
            assert_eq!(kept.folds.iter().map(|f| f.kept()).sum::<usize>(), kept.kept.len());
        }
    }
}

/// An insightface verification `.bin` (lists or numpy arrays of flags).
pub fn pickle(data: &[u8]) {
    if let Ok(bin) = facekit_eval::pickle::parse_verification_bin(data) {
        let bytes: usize = bin.images.iter().map(Vec::len).sum();
        assert!(bytes <= 2 * data.len() + (1 << 20));
        assert_eq!(bin.images.len(), 2 * bin.issame.len());
        assert!(bin.issame.len() <= data.len(), "every flag comes from at least a byte of the file");
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
        let measured = reader.measure(offset, data.len());
        match reader.read_at(offset, data.len()) {
            Ok(frame) => {
                assert!(frame.payload.len() <= data.len());
                assert_eq!(measured.ok(), Some(frame.payload.len() as u64));
            }
            Err(e) => assert_eq!(measured.err().map(|m| m.offset()), Some(e.offset())),
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

/// An `.idx` and a `.rec` imported together: the first two bytes (little-endian) are the length
/// of the `.idx` text, the rest is the `.rec`. The import's plan (each key once, as MXNet reads
/// it; each record once; every other line listed) and every planned record read and checked as
/// the import checks it.
pub fn rec_import(data: &[u8]) {
    use facekit_pack::rec::input::{Plan, MAX_RECORD_BYTES};
    use facekit_pack::rec::record::{import_one, Expect, LabelLimit};
    use facekit_recordio::{index::parse_idx, Index, RecReader};
    let Some((head, rest)) = data.split_first_chunk::<2>() else { return };
    let split = usize::from(u16::from_le_bytes(*head)).min(rest.len());
    let (idx, rec) = rest.split_at(split);
    let Ok(text) = std::str::from_utf8(idx) else { return };
    let Ok(lines) = parse_idx(text, std::path::Path::new("fuzz.idx")) else { return };
    let reader = RecReader::from_bytes(rec.to_vec());
    let index = Index::new(lines.clone());
    assert_eq!(index.entries.len() + index.replaced.len(), lines.len());
    let plan = Plan::from_index(index, "fuzz.idx", &reader);
    // Every line is an image entry, a record of the layout, or listed.
    assert_eq!(plan.entries.len() as u64 + plan.layout_records + plan.skipped.len() as u64, lines.len() as u64);
    let mut offsets: Vec<u64> = plan.entries.iter().map(|e| e.offset).collect();
    offsets.dedup();
    assert_eq!(offsets.len(), plan.entries.len(), "no record is imported twice");
    let expect = Expect {
        width: 8,
        height: 8,
        classes: LabelLimit::Records(plan.entries.len() as u32),
        encoding: facekit_shard::Encoding::Png,
    };
    for e in plan.entries.iter().take(64) {
        let _ = import_one(&reader, *e, &expect, "fuzz.rec");
        let _ = reader.measure(e.offset, MAX_RECORD_BYTES);
    }
}
