//! Writing and reading back: payloads of every shape, the magic number anywhere in them, split
//! records framed exactly as dmlc-core frames them, and the durable-write promises.

use crate::MAGIC_BYTES;
use facekit_recordio::frame::{encode_lrec, CFLAG_END, CFLAG_MIDDLE, CFLAG_START, CFLAG_WHOLE};
use facekit_recordio::writer::encode_record;
use facekit_recordio::{read_idx, Error, RecReader, RecWriter};
use rand::{Rng, SeedableRng};

/// Random payloads, with the magic number planted at aligned and unaligned positions, at the
/// start and the end, several times, and empty ones.
fn payloads(rng: &mut impl Rng) -> Vec<Vec<u8>> {
    let mut out = vec![vec![], MAGIC_BYTES.to_vec(), [MAGIC_BYTES, MAGIC_BYTES].concat(), vec![0x0a], vec![1, 2, 3]];
    for i in 0..300 {
        let len = rng.random_range(0..600);
        let mut p: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let plants = rng.random_range(0..4);
        for _ in 0..plants {
            if p.len() >= 4 {
                let at = match i % 4 {
                    0 => 0,
                    1 => (p.len() - 4) & !3,
                    2 => p.len() - 4,
                    _ => rng.random_range(0..=p.len() - 4),
                };
                p[at..at + 4].copy_from_slice(&MAGIC_BYTES);
            }
        }
        out.push(p);
    }
    out
}

#[test]
fn random_payloads_with_magic_anywhere_come_back_byte_for_byte() {
    let t = tempfile::tempdir().unwrap();
    let rec = t.path().join("train.rec");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let payloads = payloads(&mut rng);
    let mut w = RecWriter::create(&rec).unwrap();
    let offsets: Vec<u64> = payloads.iter().enumerate().map(|(k, p)| w.write(k as u64 + 10, p).unwrap()).collect();
    assert_eq!(w.records(), payloads.len() as u64);
    w.finish().unwrap();

    let idx = read_idx(&t.path().join("train.idx")).unwrap();
    assert_eq!(idx.len(), payloads.len());
    let reader = RecReader::open(&rec).unwrap();
    for ((entry, p), offset) in idx.iter().zip(&payloads).zip(&offsets) {
        assert_eq!(entry.offset, *offset);
        let frame = reader.read_at(entry.offset, 1 << 20).unwrap();
        assert_eq!(&frame.payload, p, "key {}", entry.key);
    }
    let scanned: Vec<Vec<u8>> = reader.scan(1 << 20).map(|f| f.unwrap().payload).collect();
    assert_eq!(scanned, payloads);
    assert_eq!(idx.iter().map(|e| e.key).collect::<Vec<_>>(), (10..10 + payloads.len() as u64).collect::<Vec<_>>());
}

#[test]
fn magic_at_aligned_positions_is_split_as_dmlc_does_and_unaligned_is_not() {
    // Magic at 0 and 8 (aligned), "abcd" between, then "xy": dmlc's WriteRecord emits an empty
    // start part, a middle part "abcd", an end part "xy" padded to 4.
    let payload = [&MAGIC_BYTES[..], b"abcd", &MAGIC_BYTES, b"xy"].concat();
    let mut out = Vec::new();
    encode_record(&payload, &mut out).unwrap();
    let part =
        |cflag, data: &[u8]| [&MAGIC_BYTES[..], &encode_lrec(cflag, data.len() as u32).to_le_bytes(), data].concat();
    let expected = [part(CFLAG_START, b""), part(CFLAG_MIDDLE, b"abcd"), part(CFLAG_END, b"xy"), vec![0, 0]].concat();
    assert_eq!(out, expected);
    assert_eq!(RecReader::from_bytes(out).read_at(0, 100).unwrap().payload, payload);

    // Unaligned (at 1) and in the unaligned tail (at 3 of 7 bytes): one whole record.
    for payload in [[&[9u8][..], &MAGIC_BYTES, b"zzz"].concat(), [&b"abc"[..], &MAGIC_BYTES].concat()] {
        let mut out = Vec::new();
        encode_record(&payload, &mut out).unwrap();
        assert_eq!(out, [part(CFLAG_WHOLE, &payload), vec![0; (4 - payload.len() % 4) % 4]].concat());
    }
    // Magic as the last aligned word: an end part of length zero.
    let payload = [&b"abcd"[..], &MAGIC_BYTES].concat();
    let mut out = Vec::new();
    encode_record(&payload, &mut out).unwrap();
    assert_eq!(out, [part(CFLAG_START, b"abcd"), part(CFLAG_END, b"")].concat());
}

#[test]
fn split_records_are_reassembled_with_the_magic_between_parts() {
    let part = |cflag, data: &[u8]| {
        let mut p = [&MAGIC_BYTES[..], &encode_lrec(cflag, data.len() as u32).to_le_bytes(), data].concat();
        p.resize(p.len().next_multiple_of(4), 0);
        p
    };
    let file = [
        part(CFLAG_WHOLE, b"one"),
        part(CFLAG_START, b"ab__"),
        part(CFLAG_MIDDLE, b""),
        part(CFLAG_END, b"cd"),
        part(CFLAG_WHOLE, b""),
    ]
    .concat();
    let r = RecReader::from_bytes(file.clone());
    let frames: Vec<_> = r.scan(1 << 10).map(Result::unwrap).collect();
    assert_eq!(frames.len(), 3);
    assert_eq!(frames[0].payload, b"one");
    assert_eq!(frames[1].payload, [&b"ab__"[..], &MAGIC_BYTES, &MAGIC_BYTES, b"cd"].concat());
    assert_eq!((frames[1].offset, frames[1].next), (12, 12 + 12 + 8 + 12));
    assert_eq!(frames[2].payload, b"");
    assert_eq!(frames[2].next, file.len() as u64);
}

#[test]
fn many_threads_share_one_reader() {
    let t = tempfile::tempdir().unwrap();
    let rec = t.path().join("x.rec");
    let mut w = RecWriter::create(&rec).unwrap();
    let offsets: Vec<u64> = (0..64u64).map(|k| w.write(k, &vec![k as u8; k as usize * 3]).unwrap()).collect();
    w.finish().unwrap();
    let reader = RecReader::open(&rec).unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (reader, offsets) = (&reader, &offsets);
            s.spawn(move || {
                for (k, off) in offsets.iter().enumerate().skip(t).step_by(4) {
                    assert_eq!(reader.read_at(*off, 1 << 10).unwrap().payload, vec![k as u8; k * 3]);
                }
            });
        }
    });
}

#[test]
fn an_unfinished_write_leaves_no_file_and_finish_replaces_an_old_index() {
    let t = tempfile::tempdir().unwrap();
    let rec = t.path().join("train.rec");
    let mut w = RecWriter::create(&rec).unwrap();
    w.write(0, b"payload").unwrap();
    drop(w);
    assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0, "nothing, not even a temporary, is left");

    std::fs::write(t.path().join("train.idx"), "0\t0\n1\t999\n").unwrap();
    let mut w = RecWriter::create(&rec).unwrap();
    assert_eq!(w.write(5, b"abc").unwrap(), 0);
    assert_eq!(w.write(6, b"defgh").unwrap(), 12);
    assert_eq!(w.offset(), 12 + 16);
    w.finish().unwrap();
    assert_eq!(std::fs::read_to_string(t.path().join("train.idx")).unwrap(), "5\t0\n6\t12\n");
    let mut names: Vec<String> =
        std::fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["train.idx", "train.rec"]);
}

#[test]
fn a_payload_with_a_part_over_the_29_bit_length_is_refused_with_the_key() {
    let t = tempfile::tempdir().unwrap();
    let rec = t.path().join("big.rec");
    let mut w = RecWriter::create(&rec).unwrap();
    // Zeroed pages cost no memory until written; reading them maps the zero page.
    let big = vec![0u8; facekit_recordio::MAX_LENGTH as usize + 1];
    let err = w.write(42, &big).unwrap_err();
    assert!(matches!(err, Error::Unwritable { key: 42, .. }), "{err}");
    assert!(err.to_string().contains("big.rec") && err.to_string().contains("record 42"), "{err}");
}
