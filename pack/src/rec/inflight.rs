//! The import's workers, with the memory they hold bounded in bytes rather than in records.
//!
//! Records are small (a 112x112 JPEG is 5 KB) but need not be: one may hold up to
//! [`MAX_RECORD_BYTES`], so a number of records in flight bounds nothing (150 records of 60 MB
//! are 9 GB). So the import's cost of an entry in the pipeline's budget
//! ([`crate::pipeline::Source::cost`]) is the bytes its record will hold, measured from its part
//! headers before anything is read or allocated, and its budget is [`budget`] bytes. The
//! pipeline cannot deadlock as long as one record fits the budget, which [`budget`] guarantees.

use super::input::MAX_RECORD_BYTES;
use anyhow::Result;

/// Bytes counted for each entry besides its payload (the outcome, its reject detail, the
/// record's fields), so that a file of empty records cannot pile up outcomes without bound either.
pub const ENTRY_OVERHEAD: u64 = 4 << 10;

/// Most worker threads per core: the work is decoding, so more threads add memory (each holds
/// a record and a decode buffer) and no speed; a few per core hide disk and network latency.
pub(crate) const THREADS_PER_CORE: usize = 4;

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
