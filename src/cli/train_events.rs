//! What `facekit train`, `embed`, `eval` and `export` print of the events of training and
//! inference (`facekit_train::events::Event`), and the progress bars they draw: the library only
//! says what happens. Lines go to stderr above the bar; the progress lines every `--log-every`
//! steps are printed whether or not stderr is a terminal, since the bar draws on terminals alone
//! and those lines are the only progress a log file shows.

use facekit_io::progress::{self, ProgressBar};
use facekit_train::events::{Event, Observer};
use facekit_train::trainer::meter::duration_text;
use std::sync::{Mutex, PoisonError};

/// The observer the commands run with: every event a user should see, printed, and the bar of
/// the steps or faces in progress.
pub fn observer() -> Observer {
    let bar = Bar::default();
    Observer::new(move |event| show(&bar, event))
}

/// The progress bar being drawn, if any (events may come from several threads at once: the faces
/// are prepared in parallel).
#[derive(Default)]
struct Bar(Mutex<Option<ProgressBar>>);

impl Bar {
    fn get(&self) -> Option<ProgressBar> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn set(&self, bar: Option<ProgressBar>) -> Option<ProgressBar> {
        std::mem::replace(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner), bar)
    }

    /// Starts a bar of `len` `unit`s, shown only when `shown` (a run without a step limit has
    /// nothing to fill a bar with).
    fn start(&self, len: u64, unit: &str, position: u64, shown: bool) {
        let bar = progress::items(len, unit);
        bar.set_position(position);
        // The rate, and so the ETA, counts only what this run does, not what it resumed after.
        bar.reset_eta();
        if !shown {
            progress::hide(&bar);
        }
        self.set(Some(bar));
    }

    fn finish(&self) {
        if let Some(bar) = self.set(None) {
            bar.finish_and_clear();
        }
    }

    /// A line on stderr, above the bar when one is drawn.
    fn say(&self, line: &str) {
        match self.get() {
            Some(bar) => bar.suspend(|| errln!("{line}")),
            None => errln!("{line}"),
        }
    }
}

fn show(bar: &Bar, event: &Event) {
    match *event {
        Event::RemovedTemps { count, run } => bar.say(&format!(
            "facekit train: removed {count} temporary file(s) an interrupted run left in {}",
            run.display()
        )),
        Event::ResumingWith { changed } => bar.say(&format!("facekit train: resuming with {}", changed.join(", "))),
        Event::Threads { workers, threads } => {
            bar.say(&format!("facekit train: {workers} decode worker(s), {threads} compute thread(s) per rank"))
        }
        Event::EvalBinDecoded { name, pairs, images, size, seconds, bytes } => bar.say(&format!(
            "facekit train: --eval-bin {name}: {pairs} pairs, {images} images decoded at {size} px in {seconds:.1} s ({:.0} MB kept)",
            bytes as f64 / 1e6
        )),
        Event::Resuming { run, step, epoch, batch } => bar.say(&format!(
            "facekit train: resuming {} at step {step} (epoch {epoch}, batch {batch})",
            run.display()
        )),
        Event::Device { device, numerics } => bar.say(&format!("facekit train: device {device}, {numerics}")),
        Event::Batch { per_rank, ranks, accumulate, global } => {
            let mut line = format!("facekit train: batch {per_rank} per rank");
            if ranks > 1 {
                line += &format!(" x {ranks} ranks");
            }
            if accumulate > 1 {
                line += &format!(" x {accumulate} accumulated micro-batches");
            }
            bar.say(&(line + &format!(" = global batch {global} images per step")))
        }
        Event::PartialFc { sample_rate, classes, ranks, on_rank0, head_bytes } => bar.say(&format!(
            "facekit train: Partial FC at sample rate {sample_rate}: {classes} classes over {ranks} rank(s), {on_rank0} on rank 0, its head {:.1} MiB (centres, gradient, optimiser state)",
            head_bytes as f64 / f64::from(1u32 << 20)
        )),
        Event::Init { summary } => bar.say(&format!("facekit train: {summary}")),
        Event::Begin { step, max_steps } => bar.start(max_steps.unwrap_or(0), "steps", step, max_steps.is_some()),
        Event::Stepped { .. } => {
            if let Some(b) = bar.get() {
                b.inc(1)
            }
        }
        Event::Progress {
            step,
            max_steps,
            epoch,
            loss,
            lr,
            images_per_second,
            data_wait_ms,
            scaler,
            grad_norm,
            eta_seconds,
        } => {
            let of = max_steps.map(|m| format!("/{m}")).unwrap_or_default();
            let mut line = format!(
                "step {step}{of} epoch {epoch} loss {loss:.4} lr {lr:.3e} {images_per_second:.1} images/s data wait {data_wait_ms:.1} ms/step"
            );
            if let Some(s) = scaler {
                line += &format!(" loss scale {} ({} steps skipped)", s.scale, s.skipped_steps);
            }
            if let Some(norm) = grad_norm {
                line += &format!(" grad norm {norm:.3}");
            }
            if let Some(eta) = eta_seconds {
                line += &format!(" ETA {}", duration_text(eta));
            }
            if let Some(b) = bar.get() {
                b.set_message(format!("loss {loss:.4}"));
            }
            bar.say(&line)
        }
        Event::LrShrunk { step, lr } => bar.say(&format!("step {step}: learning rate now {lr:.3e}")),
        Event::SkippedCorrupt { error } => bar.say(&format!("facekit train: skipped corrupt record: {error}")),
        Event::Validation { step, metrics, .. } => {
            let scores = metrics.iter().map(|(k, x)| format!("{k} {x:.4}")).collect::<Vec<_>>().join(", ");
            bar.say(&format!("step {step} validation: {scores}"))
        }
        Event::EvalBin { step, score } => {
            let k = &score.report;
            bar.say(&format!(
                "step {step} {}: accuracy {:.4} +- {:.4}, threshold {:.3} ({} pairs, {} folds, flip test, {:.1} s)",
                score.name, k.accuracy_mean, k.accuracy_std, k.best_threshold, k.pairs, k.folds, score.seconds
            ))
        }
        Event::Ended => bar.finish(),
        Event::UsingLast { run } => bar.say(&format!(
            "facekit: run {} has no `best` checkpoint (trained without --valid-sets): using `last`",
            run.display()
        )),
        Event::FacesBegin { total, done, .. } => bar.start(total, "faces", done, true),
        Event::FacesDone { count, .. } => {
            if let Some(b) = bar.get() {
                b.inc(count)
            }
        }
        Event::FacesEnd { .. } => bar.finish(),
        Event::EmbeddingsResumed { folder, done, total } => bar.say(&format!(
            "facekit audit: resuming the embeddings after {done} of {total} records (saved in {})",
            folder.display()
        )),
        Event::EmbeddingsSaved { .. } => {}
    }
}
