//! What training and inference tell their caller while they run. The library never prints: it
//! emits [`Event`]s to the [`Observer`] its caller passes in, and the command line prints them and
//! draws the progress bars (`src/cli/train_events.rs`), as it does for the pack pipeline's
//! `facekit_pack::pipeline::Event`s.

use crate::trainer::eval_bins::BinScore;
use crate::trainer::state::ScalerState;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// Something a caller may want to know, in the order it happens.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// Setup removed temporary files an interrupted run left in the run folder (under its lock,
    /// so they were stale).
    RemovedTemps {
        /// How many.
        count: usize,
        /// The run folder.
        run: &'a Path,
    },
    /// `--resume` takes these settings of this command line instead of the saved ones
    /// (`--lr 0.01 (was 0.1)`, ...).
    ResumingWith {
        /// Each change, described.
        changed: &'a [String],
    },
    /// The threads a rank decodes and computes with.
    Threads {
        /// Decode workers of the loader.
        workers: usize,
        /// libtorch's compute threads.
        threads: usize,
    },
    /// An `--eval-bin` set was read and decoded.
    EvalBinDecoded {
        /// The set's name (file stem).
        name: &'a str,
        /// Pairs in the set.
        pairs: usize,
        /// Images decoded.
        images: usize,
        /// Their side in pixels.
        size: u32,
        /// Time spent reading and decoding, in seconds.
        seconds: f64,
        /// Bytes of decoded pixels kept for the run.
        bytes: usize,
    },
    /// A resumed run continues from its `last` checkpoint at this position.
    Resuming {
        /// The run folder.
        run: &'a Path,
        /// Steps done.
        step: u64,
        /// The epoch it is in.
        epoch: u64,
        /// Micro-batches of that epoch done.
        batch: u64,
    },
    /// Where and how the run computes.
    Device {
        /// The device (`cpu`, `cuda:0`).
        device: &'a str,
        /// Precision and memory format, described.
        numerics: &'a str,
    },
    /// What a step sees.
    Batch {
        /// Images per micro-batch on each rank.
        per_rank: usize,
        /// Ranks training together.
        ranks: usize,
        /// Micro-batches accumulated per step.
        accumulate: u64,
        /// Images per step, all ranks together.
        global: usize,
    },
    /// Partial FC shards the classifier's centres over the ranks.
    PartialFc {
        /// The fraction of each shard's centres trained on per step.
        sample_rate: f64,
        /// Classes in all.
        classes: i64,
        /// Ranks they are shared over.
        ranks: usize,
        /// Classes held by rank 0.
        on_rank0: i64,
        /// Bytes of rank 0's head: centres, gradient and optimiser state.
        head_bytes: u64,
    },
    /// `--init` loaded weights into the new run (what loaded, what is new, what was ignored).
    Init {
        /// The report's summary.
        summary: &'a str,
    },
    /// The loop starts (rank 0 only): `step` steps are done of `max_steps` (`None` when the
    /// schedule decides when the run ends).
    Begin {
        /// Steps done before this process started.
        step: u64,
        /// The run's length in steps, when known.
        max_steps: Option<u64>,
    },
    /// A step completed (rank 0 only).
    Stepped {
        /// Its number, counted across resumes from 1.
        step: u64,
    },
    /// Every `--log-every` steps (rank 0 only): where the run stands and how fast it goes.
    Progress {
        /// The step.
        step: u64,
        /// The run's length in steps, when known.
        max_steps: Option<u64>,
        /// The epoch it is in.
        epoch: u64,
        /// The step's total loss.
        loss: f64,
        /// Its learning rate.
        lr: f64,
        /// Images per second over the window since the last progress, all ranks together.
        images_per_second: f64,
        /// Mean time a step of that window waited for its batch, in milliseconds.
        data_wait_ms: f64,
        /// The fp16 loss scaler's state; `None` without loss scaling.
        scaler: Option<&'a ScalerState>,
        /// The gradient norm before clipping (with `--clip-grad-norm`).
        grad_norm: Option<f64>,
        /// Estimated seconds to the step limit, when there is one and a rate is known.
        eta_seconds: Option<f64>,
    },
    /// The plateau schedule shrank the learning rate after this step (rank 0 only).
    LrShrunk {
        /// The step.
        step: u64,
        /// The new rate.
        lr: f64,
    },
    /// A corrupt record was skipped (`--skip-corrupt`), on the rank that read it.
    SkippedCorrupt {
        /// The error, naming shard, record and byte offset.
        error: &'a str,
    },
    /// Validation scored the network (rank 0 only).
    Validation {
        /// The step.
        step: u64,
        /// Metric name -> value.
        metrics: &'a BTreeMap<String, f64>,
        /// Images scored.
        images: u64,
    },
    /// One `--eval-bin` set scored the network (rank 0 only).
    EvalBin {
        /// The step.
        step: u64,
        /// The result.
        score: &'a BinScore,
    },
    /// The loop ended; what follows is the run's outcome.
    Ended,
    /// A run folder has no `best` checkpoint (trained without validation): inference uses `last`.
    UsingLast {
        /// The run folder.
        run: &'a Path,
    },
    /// Work on `total` faces begins.
    FacesBegin {
        /// What is done to them.
        work: FaceWork,
        /// Faces in all.
        total: u64,
        /// Faces already done (by an earlier run whose work is taken back).
        done: u64,
    },
    /// `count` more faces are done (possibly from several threads at once).
    FacesDone {
        /// What is done to them.
        work: FaceWork,
        /// Faces done since the last such event.
        count: u64,
    },
    /// The work on faces ended.
    FacesEnd {
        /// What was done to them.
        work: FaceWork,
    },
    /// An audit takes back the embeddings of `done` of `total` records that an interrupted run
    /// saved in `folder`.
    EmbeddingsResumed {
        /// The folder of saved chunks.
        folder: &'a Path,
        /// Records taken back.
        done: u64,
        /// Records in all.
        total: u64,
    },
    /// An audit saved the embeddings of its first `done` of `total` records.
    EmbeddingsSaved {
        /// Records saved so far.
        done: u64,
        /// Records in all.
        total: u64,
    },
}

/// What is done to a batch of faces during inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaceWork {
    /// Image files read, decoded and aligned or cropped into chips.
    Preparing,
    /// Chips through the network.
    Embedding,
}

type Callback = dyn Fn(&Event) + Send + Sync;

/// The caller's receiver of [`Event`]s; the default one ignores them.
#[derive(Clone, Default)]
pub struct Observer(Option<Arc<Callback>>);

impl Observer {
    /// An observer calling `f` for every event.
    pub fn new(f: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        Observer(Some(Arc::new(f)))
    }

    /// Delivers `event`.
    pub fn emit(&self, event: Event) {
        if let Some(f) = &self.0 {
            f(&event)
        }
    }
}

impl fmt::Debug for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "Observer(..)" } else { "Observer(none)" })
    }
}
