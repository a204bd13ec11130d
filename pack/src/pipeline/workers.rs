//! The pipeline's workers: items processed in parallel, handed on in input order, with what
//! they hold bounded by a budget (bytes for an import, whose records may be 60 MB each; a count
//! of photos for a pack).
//!
//! Each worker takes the next item in input order and, before processing it, reserves its cost
//! from one [`Budget`]; the writer, on the calling thread, hands outcomes on in input order and
//! gives their cost back once each is written. Items reserve in input order and are written in
//! input order, so the oldest unwritten item always holds its cost: the pipeline cannot
//! deadlock as long as one item fits the budget (costs are capped at the whole budget).

use anyhow::Result;
use facekit_io::StopFlag;
use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex};

/// What the workers do, and what the writer is told.
pub struct Work<'a, I, W, O> {
    /// Worker threads.
    pub threads: usize,
    /// Name of the worker threads (`facekit-pack-3`).
    pub thread_name: &'static str,
    /// Most cost held between taking items and writing them.
    pub budget: u64,
    /// Checked before each item is taken.
    pub stop: &'a StopFlag,
    /// An item's cost, measured before it is processed.
    pub cost: &'a (dyn Fn(&I) -> u64 + Sync),
    /// Each worker's own state (a face detector).
    pub init: &'a (dyn Fn() -> W + Sync),
    /// One item processed.
    pub work: &'a (dyn Fn(&mut W, &I) -> O + Sync),
    /// The item, as an error names it (`the record at byte 10`).
    pub name: &'a (dyn Fn(&I) -> String + Sync),
}

/// A worker's outcome, or `Err` when it panicked.
type Worked<O> = std::result::Result<O, ()>;

/// Runs `work` on every item of `items` and hands each item and outcome to `sink` in input
/// order, on the calling thread. True when every item was handed over; false when `stop` was
/// set or `sink` returned false (it has then seen a prefix of the items). An error of `sink`
/// stops the workers and is returned.
pub fn run<I: Send, W, O: Send>(
    items: impl Iterator<Item = I> + Send,
    w: &Work<'_, I, W, O>,
    mut sink: impl FnMut(I, O) -> Result<bool>,
) -> Result<bool> {
    let budget = Budget::new(w.budget);
    let next = Mutex::new(Dispenser { items, taken: 0, exhausted: false });
    let (tx, rx) = crossbeam_channel::unbounded::<(usize, I, Worked<O>, u64)>();
    std::thread::scope(|s| {
        for i in 0..w.threads {
            let (tx, budget, next) = (tx.clone(), &budget, &next);
            std::thread::Builder::new()
                .name(format!("{}-{i}", w.thread_name))
                .spawn_scoped(s, move || {
                    let mut state = None;
                    while let Some((k, item, cost)) = take(next, budget, w) {
                        let state = state.get_or_insert_with(w.init);
                        // A panic must not leave a gap the writer waits on forever.
                        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (w.work)(state, &item)))
                            .map_err(|_| ());
                        if tx.send((k, item, outcome, cost)).is_err() {
                            break;
                        }
                    }
                })
                .expect("cannot start a worker thread");
        }
        drop(tx);
        let written = write_in_order(rx, &budget, w, &mut sink);
        // Whatever ended the writing, no worker may wait for a cost that will never come back.
        budget.close();
        let Some(written) = written? else { return Ok(false) };
        let d = next.lock().expect("dispenser lock");
        Ok(d.exhausted && d.taken == written)
    })
}

/// The items not yet taken, in input order.
struct Dispenser<T> {
    items: T,
    taken: usize,
    exhausted: bool,
}

/// The next item for a worker, with its cost reserved; `None` when there is none, a stop was
/// asked for or the writer gave up. Measuring and reserving happen under one lock, so items
/// reserve in input order.
fn take<I, W, O, T: Iterator<Item = I>>(
    next: &Mutex<Dispenser<T>>,
    budget: &Budget,
    w: &Work<'_, I, W, O>,
) -> Option<(usize, I, u64)> {
    let mut d = next.lock().expect("dispenser lock");
    if d.exhausted || w.stop.is_set() || budget.is_closed() {
        return None;
    }
    let Some(item) = d.items.next() else {
        d.exhausted = true;
        return None;
    };
    let cost = (w.cost)(&item);
    if !budget.reserve(cost) {
        return None;
    }
    let k = d.taken;
    d.taken += 1;
    Some((k, item, cost))
}

/// The writer: outcomes arrive in any order and leave in input order. The number written once
/// the workers ended; `None` when the sink stopped them.
fn write_in_order<I, W, O>(
    rx: crossbeam_channel::Receiver<(usize, I, Worked<O>, u64)>,
    budget: &Budget,
    w: &Work<'_, I, W, O>,
    sink: &mut impl FnMut(I, O) -> Result<bool>,
) -> Result<Option<usize>> {
    let mut waiting: BTreeMap<usize, (I, Worked<O>, u64)> = BTreeMap::new();
    let mut written = 0;
    for (k, item, outcome, cost) in rx {
        waiting.insert(k, (item, outcome, cost));
        while let Some((item, outcome, cost)) = waiting.remove(&written) {
            let Ok(outcome) = outcome else {
                anyhow::bail!("a worker thread panicked on {}", (w.name)(&item));
            };
            let go_on = sink(item, outcome);
            budget.release(cost);
            if !go_on? {
                return Ok(None);
            }
            written += 1;
        }
    }
    Ok(Some(written))
}

/// Cost that may still be reserved, shared by the workers and the writer.
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

    /// Waits until `cost` (at most the whole budget) is free and takes it; false once closed.
    fn reserve(&self, cost: u64) -> bool {
        let cost = cost.min(self.total);
        let mut s = self.state.lock().expect("budget lock");
        while s.free < cost && !s.closed {
            s = self.freed.wait(s).expect("budget lock");
        }
        if s.closed {
            return false;
        }
        s.free -= cost;
        true
    }

    fn release(&self, cost: u64) {
        let mut s = self.state.lock().expect("budget lock");
        s.free = (s.free + cost.min(self.total)).min(self.total);
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
