//! The RecordIO import's plan and workers without the command line: an `.idx` read as MXNet reads
//! it (each key once, each record once, every line left out listed with its offset), and the
//! workers' memory bounded by the bytes of the records in flight, whatever their number.

use facekit_io::StopFlag;
use facekit_pack::pipeline::workers;
use facekit_pack::rec::inflight;
use facekit_pack::rec::input::{Entry, Plan, MAX_RECORD_BYTES};
use facekit_pack::rec::record::Outcome;
use facekit_pack::RejectReason;
use facekit_recordio::insightface::{header_record, identity_record, image_record};
use facekit_recordio::writer::encode_record;
use facekit_recordio::{IdxEntry, Index, RecReader};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The pipeline's workers over `entries`, each costing the bytes of its record as the import's
/// entries do.
fn run_entries(
    reader: &RecReader,
    entries: &[Entry],
    threads: usize,
    budget: u64,
    stop: &StopFlag,
    work: impl Fn(Entry) -> Outcome + Sync,
    sink: impl FnMut(Entry, Outcome) -> anyhow::Result<bool>,
) -> anyhow::Result<bool> {
    let cost = |e: &Entry| reader.measure(e.offset, MAX_RECORD_BYTES).unwrap_or(0) + inflight::ENTRY_OVERHEAD;
    let w = workers::Work {
        threads,
        thread_name: "facekit-import",
        budget,
        stop,
        cost: &cost,
        init: &|| (),
        work: &|_: &mut (), e: &Entry| work(*e),
        name: &|e: &Entry| format!("the record at byte {}", e.offset),
    };
    workers::run(entries.iter().copied(), &w, sink)
}

/// A `.rec` of `payloads` in memory, and the offset of each.
fn rec(payloads: &[Vec<u8>]) -> (RecReader, Vec<u64>) {
    let mut bytes = Vec::new();
    let mut offsets = Vec::new();
    for p in payloads {
        offsets.push(bytes.len() as u64);
        encode_record(p, &mut bytes).unwrap();
    }
    (RecReader::from_bytes(bytes), offsets)
}

fn entry(key: u64, offset: u64) -> IdxEntry {
    IdxEntry { key, offset }
}

#[test]
fn an_index_naming_a_key_or_a_record_twice_imports_each_record_once_and_lists_the_rest() {
    let images: Vec<Vec<u8>> = (0..4).map(|k| image_record(k, k as f32, b"\xff\xd8 not decoded here")).collect();
    let (reader, at) = rec(&images);
    let lines = vec![
        entry(0, at[0]),
        entry(1, at[1]),
        entry(2, at[2]),
        entry(1, at[1]), // the same line again: MXNet's dict keeps one
        entry(3, at[3]),
        entry(7, at[2]), // a second key for record 2
        entry(0, at[0]),
    ];
    let plan = Plan::from_index(Index::new(lines), "train.idx", &reader);
    let keys: Vec<(Option<u64>, u64)> = plan.entries.iter().map(|e| (e.key, e.offset)).collect();
    assert_eq!(
        keys,
        [(Some(0), at[0]), (Some(1), at[1]), (Some(2), at[2]), (Some(3), at[3])],
        "each record once, in file order"
    );
    let listed: Vec<(u64, RejectReason)> = plan.skipped.iter().map(|s| (s.offset, s.reason)).collect();
    assert_eq!(
        listed,
        [
            (at[0], RejectReason::RepeatedEntry),
            (at[1], RejectReason::RepeatedEntry),
            (at[2], RejectReason::RepeatedEntry)
        ]
    );
    let details: Vec<&str> = plan.skipped.iter().map(|s| s.detail.as_str()).collect();
    assert!(details[0].contains("key 0: line 1 of train.idx") && details[0].contains("line 7"), "{details:?}");
    assert!(details[1].contains("key 1: line 2 of train.idx") && details[1].contains("line 4"), "{details:?}");
    assert!(details[2].contains("key 7") && details[2].contains("key 2 already names"), "{details:?}");
}

#[test]
fn keys_outside_insightfaces_ranges_are_listed_not_counted_as_layout() {
    // Images at keys 1..3, identities at 3..4, record 0: and key 9, which arcface_torch never reads.
    let payloads = vec![
        header_record(3, 4),
        image_record(1, 0.0, b"a"),
        image_record(2, 0.0, b"b"),
        identity_record(3, 1, 3),
        image_record(9, 0.0, b"c"),
    ];
    let (reader, at) = rec(&payloads);
    let lines = (0..5).map(|i| entry([0, 1, 2, 3, 9][i], at[i])).collect();
    let plan = Plan::from_index(Index::new(lines), "train.idx", &reader);
    assert_eq!(plan.entries.iter().map(|e| e.key).collect::<Vec<_>>(), [Some(1), Some(2)]);
    assert_eq!(plan.layout_records, 2);
    assert_eq!(plan.skipped.len(), 1);
    assert_eq!((plan.skipped[0].offset, plan.skipped[0].reason), (at[4], RejectReason::OutsideLayout));
    assert!(plan.skipped[0].detail.contains("key 9"), "{}", plan.skipped[0].detail);
}

/// Entries of `n` records of `len` bytes each, in memory.
fn big_records(n: usize, len: usize) -> (RecReader, Vec<Entry>) {
    let payloads: Vec<Vec<u8>> = (0..n).map(|k| vec![k as u8; len]).collect();
    let (reader, at) = rec(&payloads);
    (reader, at.into_iter().map(|offset| Entry { key: None, offset }).collect())
}

#[test]
fn the_bytes_in_flight_stay_within_the_budget_however_many_records_there_are() {
    // 40 records of 4 MB with a 10 MB budget: at most two records between read and written.
    let (reader, entries) = big_records(40, 4 << 20);
    let budget = 10 << 20;
    let held = AtomicU64::new(0);
    let most = AtomicU64::new(0);
    let order = Mutex::new(Vec::new());
    let done = run_entries(
        &reader,
        &entries,
        4,
        budget,
        &StopFlag::new(),
        |e| {
            let frame = reader.read_at(e.offset, 64 << 20).unwrap();
            let now = held.fetch_add(frame.payload.len() as u64, Ordering::SeqCst) + frame.payload.len() as u64;
            most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(2));
            Outcome::Rejected(RejectReason::BadRecord, frame.payload.len().to_string())
        },
        |e, outcome| {
            let Outcome::Rejected(_, len) = outcome else { unreachable!() };
            held.fetch_sub(len.parse().unwrap(), Ordering::SeqCst);
            order.lock().unwrap().push(e.offset);
            Ok(true)
        },
    )
    .unwrap();
    assert!(done);
    assert_eq!(
        *order.lock().unwrap(),
        entries.iter().map(|e| e.offset).collect::<Vec<_>>(),
        "outcomes leave in file order"
    );
    let most = most.load(Ordering::SeqCst);
    assert!(most <= budget, "{most} bytes held at once with a budget of {budget}");
    assert!(most >= 4 << 20);
}

#[test]
fn a_writer_that_stops_or_fails_and_a_panicking_worker_never_leave_a_thread_waiting() {
    let (reader, entries) = big_records(30, 1 << 20);
    let budget = 3 << 20;
    let mut seen = 0;
    let done = run_entries(
        &reader,
        &entries,
        3,
        budget,
        &StopFlag::new(),
        |_| Outcome::Rejected(RejectReason::BadRecord, String::new()),
        |_, _| {
            seen += 1;
            Ok(seen < 5)
        },
    )
    .unwrap();
    assert!(!done);
    assert_eq!(seen, 5);
    let err = run_entries(
        &reader,
        &entries,
        3,
        budget,
        &StopFlag::new(),
        |_| Outcome::Rejected(RejectReason::BadRecord, String::new()),
        |_, _| anyhow::bail!("disk full"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("disk full"));
    let err = run_entries(
        &reader,
        &entries,
        3,
        budget,
        &StopFlag::new(),
        |e| {
            assert!(e.offset < entries[7].offset, "a bug in a worker");
            Outcome::Rejected(RejectReason::BadRecord, String::new())
        },
        |_, _| Ok(true),
    )
    .unwrap_err();
    assert!(err.to_string().contains(&format!("at byte {}", entries[7].offset)), "{err}");
}

#[test]
fn more_threads_than_the_machine_can_use_are_refused_with_the_number() {
    let cores = facekit_io::memory::cores();
    assert!(inflight::check_threads(cores).is_ok());
    let err = inflight::check_threads(100_000).unwrap_err().to_string();
    assert!(err.contains("--threads 100000") && err.contains(&format!("{} core", cores)), "{err}");
    assert!(inflight::check_threads(0).is_err());
    // The budget always fits the largest record, and never more than a quarter of the memory.
    let one = facekit_pack::rec::input::MAX_RECORD_BYTES as u64;
    assert!(inflight::budget(1) > one);
    if let Some(avail) = facekit_io::memory::available() {
        assert!(inflight::budget(10_000) <= (avail / 4).max(one + inflight::ENTRY_OVERHEAD));
    }
}
