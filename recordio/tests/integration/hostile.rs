//! Hostile and damaged files: every byte flipped, every truncation, lengths claiming gigabytes,
//! indexes pointing anywhere, malformed index lines, payloads announcing a billion labels. Each
//! gives records or a clean error naming the offset, never a panic, a hang or an allocation
//! larger than the file.

use crate::{largest_allocation, MAGIC_BYTES};
use facekit_recordio::frame::{encode_lrec, CFLAG_END, CFLAG_MIDDLE, CFLAG_START, CFLAG_WHOLE, MAX_LENGTH};
use facekit_recordio::index::parse_idx;
use facekit_recordio::writer::encode_record;
use facekit_recordio::{pack, read_idx, unpack, Error, FrameError, IrHeader, PayloadError, RecReader};
use rand::{Rng, SeedableRng};
use std::path::Path;

fn framed(payloads: &[&[u8]]) -> (Vec<u8>, Vec<u64>) {
    let mut out = Vec::new();
    let mut offsets = Vec::new();
    for p in payloads {
        offsets.push(out.len() as u64);
        encode_record(p, &mut out).unwrap();
    }
    (out, offsets)
}

/// A small file of whole, empty and split records.
fn small_file() -> (Vec<u8>, Vec<u64>) {
    let image = pack(IrHeader { flag: 0, label: 3.0, id: 1, id2: 0 }, &[], b"\xff\xd8jpeg");
    let split = [&b"abcd"[..], &MAGIC_BYTES, b"efgh", &MAGIC_BYTES, b"ij"].concat();
    let labels = pack(IrHeader { flag: 0, label: 0.0, id: 0, id2: 1 }, &[1.0, 4.0], b"");
    framed(&[&image, b"", &split, &labels, b"xyz"])
}

/// Everything a reader can do with `bytes`, checked for the promises; returns the frames' count.
fn exercise(bytes: Vec<u8>, offsets: &[u64]) -> usize {
    let len = bytes.len();
    let reader = RecReader::from_bytes(bytes);
    let (good, largest) = largest_allocation(|| {
        let mut good = 0;
        let mut items = 0;
        for item in reader.scan(len) {
            items += 1;
            assert!(items <= len / 4 + 1, "the scan must make progress");
            if let Ok(f) = item {
                assert!(f.payload.len() <= len && f.next > f.offset && f.next <= len as u64);
                let _ = unpack(&f.payload).map(|u| u.label_values());
                good += 1;
            }
        }
        for &off in offsets {
            for max in [len, usize::MAX, 3] {
                let measured = reader.measure(off, max);
                match reader.read_at(off, max) {
                    Ok(f) => {
                        assert!(f.payload.len() <= len.min(max));
                        assert_eq!(measured.ok(), Some(f.payload.len() as u64), "measure agrees with read_at at {off}");
                    }
                    Err(e) => {
                        let m = measured.expect_err("measure fails where read_at fails");
                        assert_eq!(m.offset(), e.offset(), "{m} / {e}");
                        match e {
                            FrameError::PastEnd { offset, .. } => assert!(offset >= len as u64),
                            e => assert!(e.offset() <= len as u64, "{e}"),
                        }
                    }
                }
            }
        }
        good
    });
    assert!(largest <= len.max(64), "allocated {largest} bytes for a {len}-byte file");
    good
}

#[test]
fn every_flipped_byte_gives_records_or_clean_errors() {
    let (file, offsets) = small_file();
    assert_eq!(exercise(file.clone(), &offsets), 5);
    for i in 0..file.len() {
        for mask in [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff] {
            let mut bad = file.clone();
            bad[i] ^= mask;
            exercise(bad, &offsets);
        }
    }
}

#[test]
fn every_truncation_gives_records_or_clean_errors() {
    let (file, offsets) = small_file();
    for cut in 0..file.len() {
        let good = exercise(file[..cut].to_vec(), &offsets);
        let whole = offsets.iter().skip(1).chain([&(file.len() as u64)]).filter(|&&end| end <= cut as u64).count();
        assert_eq!(good, whole, "cut at {cut}");
    }
}

#[test]
fn a_length_near_2_pow_29_on_a_tiny_file_is_refused_without_allocating_it() {
    for cflag in [CFLAG_WHOLE, CFLAG_START] {
        let file = [&MAGIC_BYTES[..], &encode_lrec(cflag, MAX_LENGTH).to_le_bytes(), b"tiny"].concat();
        let reader = RecReader::from_bytes(file);
        let (err, largest) = largest_allocation(|| reader.read_at(0, usize::MAX).unwrap_err());
        assert!(matches!(err, FrameError::Truncated { offset: 8, .. }), "{err}");
        assert!(largest < 1024, "{largest}");
        let err = reader.read_at(0, 1 << 20).unwrap_err();
        assert!(matches!(err, FrameError::TooLong { offset: 0, length, .. } if length == MAX_LENGTH as u64), "{err}");
        assert!(err.to_string().contains("at byte 0"), "{err}");
    }
    // A split record whose parts add up past the limit is refused at the part that crosses it.
    let (file, _) = framed(&[&[&[7u8; 40][..], &MAGIC_BYTES, &[8; 40]].concat()]);
    let err = RecReader::from_bytes(file).read_at(0, 60).unwrap_err();
    assert!(matches!(err, FrameError::TooLong { offset: 48, .. }), "{err}");
}

#[test]
fn continuation_parts_out_of_order_are_refused() {
    let part =
        |cflag, data: &[u8]| [&MAGIC_BYTES[..], &encode_lrec(cflag, data.len() as u32).to_le_bytes(), data].concat();
    for (file, at) in [
        (part(CFLAG_MIDDLE, b"abcd"), 0),
        (part(CFLAG_END, b"abcd"), 0),
        ([part(CFLAG_START, b"abcd"), part(CFLAG_WHOLE, b"efgh")].concat(), 12),
        ([part(CFLAG_START, b"abcd"), part(CFLAG_MIDDLE, b""), part(CFLAG_START, b"")].concat(), 20),
    ] {
        let err = RecReader::from_bytes(file).read_at(0, 100).unwrap_err();
        assert!(matches!(err, FrameError::BadContinuation { offset, .. } if offset == at), "{err}");
    }
    // A start part that ends the file is a truncated record.
    let err = RecReader::from_bytes(part(CFLAG_START, b"abcd")).read_at(0, 100).unwrap_err();
    assert!(matches!(err, FrameError::Truncated { offset: 12, what: "header", .. }), "{err}");
}

#[test]
fn a_continuation_flag_of_4_to_7_is_damage_not_a_whole_record() {
    // dmlc-core's readers take any flag but 0 and 3 for "more parts follow" and glue the next
    // record on (MXNet's `read_idx` returns both payloads and the magic between them); its
    // writer never sets the top bit. Such a part is damage, reported where it is.
    let image = pack(IrHeader { flag: 0, label: 1.0, id: 0, id2: 0 }, &[], b"\xff\xd8jpeg");
    let (file, offsets) = framed(&[&image, &image, &image]);
    for cflag in 4..8u32 {
        let mut bad = file.clone();
        let at = offsets[1] as usize;
        let (_, length) =
            facekit_recordio::frame::decode_lrec(u32::from_le_bytes(bad[at + 4..at + 8].try_into().unwrap()));
        bad[at + 4..at + 8].copy_from_slice(&((cflag << 29) | length).to_le_bytes());
        let reader = RecReader::from_bytes(bad);
        let err = reader.read_at(offsets[1], 1 << 20).unwrap_err();
        assert!(matches!(err, FrameError::BadFlag { offset, cflag: c } if offset == offsets[1] && c == cflag), "{err}");
        assert!(err.to_string().contains(&format!("continuation flag {cflag}")), "{err}");
        assert!(reader.measure(offsets[1], 1 << 20).is_err());
        // The records around it are intact, and a scan reports it once and goes on.
        assert_eq!(reader.read_at(offsets[2], 1 << 20).unwrap().payload, image);
        let items: Vec<_> = reader.scan(1 << 20).collect();
        assert_eq!(items.iter().filter(|i| i.is_ok()).count(), 2, "cflag {cflag}");
        assert_eq!(
            items.iter().filter_map(|i| i.as_ref().err()).map(FrameError::offset).collect::<Vec<_>>(),
            [offsets[1]]
        );
    }
}

#[test]
fn a_key_listed_twice_is_read_once_at_its_last_line_as_mxnet_reads_it() {
    let entry = |key, offset| facekit_recordio::IdxEntry { key, offset };
    let lines = vec![entry(0, 0), entry(1, 36), entry(2, 72), entry(1, 108), entry(3, 144), entry(1, 36)];
    let index = facekit_recordio::Index::new(lines);
    assert_eq!(index.entries, [entry(0, 0), entry(2, 72), entry(3, 144), entry(1, 36)]);
    let replaced: Vec<(usize, u64, usize)> =
        index.replaced.iter().map(|r| (r.line, r.entry.offset, r.by_line)).collect();
    assert_eq!(replaced, [(2, 36, 6), (4, 108, 6)]);
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("train.idx"), "0\t0\n5\t8\n5\t16\n").unwrap();
    let index = facekit_recordio::Index::read(&t.path().join("train.idx")).unwrap();
    assert_eq!(index.entries, [entry(0, 0), entry(5, 16)]);
    assert_eq!(index.replaced.len(), 1);
}

#[test]
fn an_index_pointing_past_the_end_or_into_a_record_is_reported_with_the_offset() {
    let t = tempfile::tempdir().unwrap();
    let rec = t.path().join("train.rec");
    let (file, offsets) = small_file();
    std::fs::write(&rec, &file).unwrap();
    let reader = RecReader::open(&rec).unwrap();
    assert_eq!(reader.len(), file.len() as u64);
    let err = reader.read_at(file.len() as u64, 1 << 20).unwrap_err();
    assert!(matches!(err, FrameError::PastEnd { .. }), "{err}");
    let err = reader.read_at(u64::MAX, 1 << 20).unwrap_err();
    assert!(matches!(err, FrameError::PastEnd { offset: u64::MAX, .. }), "{err}");
    let inside = offsets[0] + 12;
    let err = reader.read_at(inside, 1 << 20).unwrap_err();
    assert!(matches!(err, FrameError::BadMagic { offset, .. } if offset == inside), "{err}");
    let msg = reader.error(err).to_string();
    assert!(msg.contains("train.rec") && msg.contains(&format!("at byte {inside}")), "{msg}");
}

#[test]
fn malformed_index_lines_name_the_file_and_line() {
    let p = Path::new("data/train.idx");
    assert_eq!(parse_idx("0\t0\n1\t36\r\n 2\t72 \n", p).unwrap().len(), 3);
    assert!(parse_idx("", p).unwrap().is_empty());
    for (text, line) in [
        ("0\t0\n1\t\n", 2),
        ("0\t0\nx\t8\n", 2),
        ("1 8\n", 1),
        ("1\t8\t9\n", 1),
        ("0\t0\n\n1\t8\n", 2),
        ("-1\t0\n", 1),
        ("+1\t0\n", 1),
        ("1\t99999999999999999999999\n", 1),
        ("0\t0\n1\t8\n2\t0x10\n", 3),
    ] {
        let err = parse_idx(text, p).unwrap_err();
        assert!(matches!(err, Error::Line { line: l, .. } if l == line), "{text:?}: {err}");
        assert!(err.to_string().contains(&format!("data/train.idx line {line}")), "{err}");
    }
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("bin.idx"), b"0\t\xff\n").unwrap();
    assert!(matches!(read_idx(&t.path().join("bin.idx")), Err(Error::File(_))));
    assert!(read_idx(&t.path().join("missing.idx")).unwrap_err().to_string().contains("missing.idx"));
}

#[test]
fn a_flag_claiming_a_billion_labels_is_an_error_not_an_allocation() {
    let payload = [&1_000_000_000u32.to_le_bytes()[..], &[0; 20], b"short image"].concat();
    let (err, largest) = largest_allocation(|| unpack(&payload).unwrap_err());
    assert_eq!(err, PayloadError::Labels { flag: 1_000_000_000, needed: 4_000_000_000, available: 11 });
    assert!(largest < 1024, "{largest}");
    assert_eq!(unpack(&[0; 23]).unwrap_err(), PayloadError::Short { len: 23 });
    let max = [&u32::MAX.to_le_bytes()[..], &[0; 20]].concat();
    assert!(matches!(unpack(&max), Err(PayloadError::Labels { .. })));
}

#[test]
fn nan_and_negative_labels_come_back_as_values() {
    let h = IrHeader { flag: 99, label: f32::NAN, id: 5, id2: 6 };
    let u = unpack(&pack(h, &[], b"img")).map(|u| (u.header, u.label_values(), u.image.to_vec())).unwrap();
    assert_eq!(u.0.flag, 0, "pack derives the flag");
    assert!(u.1.len() == 1 && u.1[0].is_nan());
    assert_eq!(u.2, b"img");
    let payload = pack(h, &[-3.5, f32::NAN, f32::NEG_INFINITY], b"");
    let u = unpack(&payload).unwrap();
    assert_eq!((u.header.flag, u.header.label, u.header.id, u.header.id2), (3, 0.0, 5, 6));
    let v = u.label_values();
    assert_eq!((v[0], v[1].is_nan(), v[2]), (-3.5, true, f32::NEG_INFINITY));
    assert!(u.image.is_empty());
}

#[test]
fn scan_resynchronises_after_garbage_with_exactly_one_error() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let payloads: Vec<Vec<u8>> = (0..10).map(|i| [&vec![i as u8; i * 7][..], &MAGIC_BYTES, b"tail"].concat()).collect();
    let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
    let (file, offsets) = framed(&refs);
    for (garbage_len, fake_magic) in [(100usize, false), (4, false), (64, true), (200_000, false)] {
        let mut garbage: Vec<u8> = (0..garbage_len).map(|_| rng.random()).collect();
        if fake_magic {
            // An aligned magic whose length runs past the end is not a boundary.
            garbage[8..12].copy_from_slice(&MAGIC_BYTES);
            garbage[12..16].copy_from_slice(&encode_lrec(CFLAG_WHOLE, MAX_LENGTH).to_le_bytes());
        }
        garbage[..4].copy_from_slice(b"junk");
        let at = offsets[4] as usize;
        let bad = [&file[..at], &garbage, &file[at..]].concat();
        let reader = RecReader::from_bytes(bad);
        let items: Vec<_> = reader.scan(1 << 20).collect();
        let errors: Vec<&FrameError> = items.iter().filter_map(|i| i.as_ref().err()).collect();
        assert_eq!(errors.len(), 1, "{garbage_len} bytes of garbage: {errors:?}");
        assert_eq!(errors[0].offset(), at as u64);
        let good: Vec<&[u8]> = items.iter().filter_map(|i| i.as_ref().ok()).map(|f| f.payload.as_slice()).collect();
        assert_eq!(good, refs);
    }
    // Garbage at the very end: one error, and the scan ends.
    let bad = [&file[..], b"\x0a\x23\xd7\xce\x05"].concat();
    let items: Vec<_> = RecReader::from_bytes(bad).scan(1 << 20).collect();
    assert_eq!((items.len(), items.iter().filter(|i| i.is_err()).count()), (11, 1));
}
