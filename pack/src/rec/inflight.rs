//! The import's workers, with the memory they hold bounded in bytes rather than in records.
//!
//! Records are small (a 112x112 JPEG is 5 KB) but need not be: one may hold up to
//! [`MAX_RECORD_BYTES`], so a number of records in flight bounds nothing (150 records of 60 MB
//! are 9 GB). Here each worker takes the next entry in file order and, before reading it,
//! reserves the bytes its record will hold (measured from its part headers, nothing read or
//! allocated yet) from one [`Budget`]; the writer, on the calling thread, hands outcomes on in
//! file order and gives their bytes back once each is written.
//!
//! Entries reserve in file order and are written in file order, so the oldest unwritten record
//! always holds its bytes: the pipeline cannot deadlock as long as one record fits the budget,
//! which [`budget`] guarantees.

use super::input::{Entry, MAX_RECORD_BYTES};
use super::record::Outcome;
use anyhow::Result;
use facekit_io::StopFlag;
use facekit_recordio::RecReader;
use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex};

/// Bytes counted for each entry besides its payload (the outcome, its reject detail, the
/// record's fields), so that a file of empty records cannot pile up outcomes without bound either.
pub const ENTRY_OVERHEAD: u64 = 4 << 10;

/// Most worker threads per core: the work is decoding, so more threads add memory (each holds
/// a record and a decode buffer) and no speed; a few per core hide disk and network latency.
pub const THREADS_PER_CORE: usize = 4;

/// The bytes records may hold between being read and being written, for `threads` workers:
/// two of the largest records per worker, at most a quarter of the memory available, and never
/// less than one largest record (so that any record can be read).
pub fn budget(threads: usize) -> u64 {
    let one = MAX_RECORD_BYTES as u64 + ENTRY_OVERHEAD;
    let wanted = (threads as u64).saturating_mul(2 * one);
    let room = facekit_io::memory::available().map_or(wanted, |a| a / 4);
    wanted.min(room).max(one)
}

/// Checks a worker count against this machine's cores ([`THREADS_PER_CORE`] per core at most).
pub fn check_threads(threads: usize) -> Result<()> {
    let cores = facekit_io::memory::cores();
    let most = cores.saturating_mul(THREADS_PER_CORE);
    if threads == 0 {
        anyhow::bail!("--threads must be at least 1");
    }
    if threads > most {
        anyhow::bail!(
            "--threads {threads} is more than this machine can use: at most {THREADS_PER_CORE} per core, {most} for its {cores} core(s) \
             (each thread holds a record and a decoded image; more would add memory and processes, not speed)"
        );
    }
    Ok(())
}

/// A worker's outcome, or `Err` when it panicked.
type Worked = std::result::Result<Outcome, ()>;

/// Bytes that may still be reserved, shared by the workers and the writer.
struct Budget {
    state: Mutex<BudgetState>,
    freed: Condvar,
    total: u64,
}

struct BudgetState {
    free: u64,
    /// Set by the writer when it stops early: waiting workers give up instead of waiting forever.
    closed: bool,
}

impl Budget {
    fn new(total: u64) -> Self {
        Budget { state: Mutex::new(BudgetState { free: total, closed: false }), freed: Condvar::new(), total }
    }

    /// Waits until `bytes` (at most the whole budget) are free and takes them; false once closed.
    fn reserve(&self, bytes: u64) -> bool {
        let bytes = bytes.min(self.total);
        let mut s = self.state.lock().expect("budget lock");
        while s.free < bytes && !s.closed {
            s = self.freed.wait(s).expect("budget lock");
        }
        if s.closed {
            return false;
        }
        s.free -= bytes;
        true
    }

    fn release(&self, bytes: u64) {
        let mut s = self.state.lock().expect("budget lock");
        s.free = (s.free + bytes.min(self.total)).min(self.total);
        self.freed.notify_all();
    }

    fn close(&self) {
        self.state.lock().expect("budget lock").closed = true;
        self.freed.notify_all();
    }

    fn is_closed(&self) -> bool {
        self.state.lock().expect("budget lock").closed
    }
}

/// Runs `work` on every entry with `threads` workers holding at most `budget` bytes of records,
/// and hands each outcome to `sink` in the entries' order, on the calling thread. True when every
/// entry was handed over; false when `stop` was set or `sink` returned false (it has then seen a
/// prefix of the entries). An error of `sink` stops the workers and is returned.
pub fn run(
    reader: &RecReader,
    entries: &[Entry],
    threads: usize,
    budget: u64,
    stop: &StopFlag,
    work: impl Fn(Entry) -> Outcome + Sync,
    mut sink: impl FnMut(Entry, Outcome) -> Result<bool>,
) -> Result<bool> {
    let budget = Budget::new(budget);
    let next = Mutex::new(0usize);
    let (tx, rx) = crossbeam_channel::unbounded::<(usize, Worked, u64)>();
    std::thread::scope(|s| {
        for i in 0..threads {
            let (tx, budget, next, work) = (tx.clone(), &budget, &next, &work);
            std::thread::Builder::new()
                .name(format!("facekit-import-{i}"))
                .spawn_scoped(s, move || {
                    while let Some((k, cost)) = take(reader, entries, next, budget, stop) {
                        // A panic must not leave a gap the writer waits on forever.
                        let outcome =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(entries[k]))).map_err(|_| ());
                        if tx.send((k, outcome, cost)).is_err() {
                            break;
                        }
                    }
                })
                .expect("cannot start an import thread");
        }
        drop(tx);
        let written = write_in_order(rx, entries, &budget, &mut sink);
        // Whatever ended the writing, no worker may wait for bytes that will never come back.
        budget.close();
        written
    })
}

/// The next entry for a worker, with the bytes reserved for it; `None` when there is none, a
/// stop was asked for or the writer gave up. Measuring and reserving happen under one lock, so
/// entries reserve in file order.
fn take(
    reader: &RecReader,
    entries: &[Entry],
    next: &Mutex<usize>,
    budget: &Budget,
    stop: &StopFlag,
) -> Option<(usize, u64)> {
    let mut n = next.lock().expect("dispenser lock");
    if *n >= entries.len() || stop.is_set() || budget.is_closed() {
        return None;
    }
    let k = *n;
    // A record that cannot be framed costs its reject's few bytes: reading it fails the same way.
    let cost = reader.measure(entries[k].offset, MAX_RECORD_BYTES).unwrap_or(0) + ENTRY_OVERHEAD;
    if !budget.reserve(cost) {
        return None;
    }
    *n += 1;
    Some((k, cost))
}

/// The writer: outcomes arrive in any order and leave in the entries' order.
fn write_in_order(
    rx: crossbeam_channel::Receiver<(usize, Worked, u64)>,
    entries: &[Entry],
    budget: &Budget,
    sink: &mut impl FnMut(Entry, Outcome) -> Result<bool>,
) -> Result<bool> {
    let mut waiting: BTreeMap<usize, (Worked, u64)> = BTreeMap::new();
    let mut written = 0;
    for (k, outcome, cost) in rx {
        waiting.insert(k, (outcome, cost));
        while let Some((outcome, cost)) = waiting.remove(&written) {
            let entry = entries[written];
            let Ok(outcome) = outcome else {
                anyhow::bail!("an import thread panicked on the record at byte {}", entry.offset);
            };
            let go_on = sink(entry, outcome);
            budget.release(cost);
            if !go_on? {
                return Ok(false);
            }
            written += 1;
        }
    }
    Ok(written == entries.len())
}
