//! What a pack or an import tells its caller while it runs. The library never prints: it emits
//! [`Event`]s to the [`Observer`] in its options, and the command line prints them (and may stop
//! the run at one, which is how tests inject a crash at a named step).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// Something a caller may want to know, in the order it happens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event<'a> {
    /// Temporary files of an interrupted run were removed from `dir` (under the dataset's lock,
    /// so they were stale).
    RemovedTemps {
        /// How many.
        count: usize,
        /// Where.
        dir: &'a Path,
    },
    /// `--resume` was asked, but there is no progress file: the run starts from the beginning.
    NothingToResume {
        /// The progress file looked for.
        progress: &'a Path,
    },
    /// The run continues after `consumed` of `total` items, `shards` training shards done.
    Resuming {
        /// Items accounted for by the checkpoint.
        consumed: u64,
        /// Items of the whole input.
        total: u64,
        /// Complete training shards.
        shards: usize,
    },
    /// An earlier run wrote every shard and stopped in its last steps: only those are done now.
    Completing {
        /// The dataset, as messages name it (`dir/name`).
        dataset: &'a str,
    },
    /// A merge or filter starts copying the records of `dataset`.
    Reading {
        /// The dataset read, as messages name it (`dir/name`).
        dataset: &'a str,
        /// Its records.
        records: u64,
    },
    /// A checkpoint was written after a complete shard.
    Checkpoint {
        /// Complete training shards so far.
        shards: usize,
    },
    /// One of the finishing steps is done (each is safe to redo by `--resume`).
    Finished(Step),
}

/// The steps of the finishing sequence, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The final checkpoint (every shard complete) is written.
    Checkpoint,
    /// The manifests and label maps are written.
    Manifests,
    /// The rejects list has its final name.
    Rejects,
    /// A replacement's old datasets are hidden and the new ones not all in place yet.
    Replacing,
}

impl Step {
    /// The step's name (`checkpoint`, `manifests`, `rejects`, `replacing`).
    pub fn name(self) -> &'static str {
        match self {
            Step::Checkpoint => "checkpoint",
            Step::Manifests => "manifests",
            Step::Rejects => "rejects",
            Step::Replacing => "replacing",
        }
    }
}

/// What the observer wants after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on.
    Continue,
    /// Stop here, as a crash would: the run ends as interrupted, resumable from its last
    /// checkpoint. Honoured after [`Event::Checkpoint`] and [`Event::Finished`].
    Stop,
}

type Callback = dyn Fn(&Event) -> Flow + Send + Sync;

/// The caller's receiver of [`Event`]s; the default one ignores them.
#[derive(Clone, Default)]
pub struct Observer(Option<Arc<Callback>>);

impl Observer {
    /// An observer calling `f` for every event.
    pub fn new(f: impl Fn(&Event) -> Flow + Send + Sync + 'static) -> Self {
        Observer(Some(Arc::new(f)))
    }

    /// Delivers `event`.
    pub fn emit(&self, event: Event) -> Flow {
        self.0.as_ref().map_or(Flow::Continue, |f| f(&event))
    }

    /// Delivers [`Event::Finished`]; true when the run must stop there.
    pub(crate) fn finished(&self, step: Step) -> bool {
        self.emit(Event::Finished(step)) == Flow::Stop
    }
}

impl fmt::Debug for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "Observer(..)" } else { "Observer(none)" })
    }
}
