//! The run's logs: `loss_debug/losses.tsv` (the loss of every step), `train_log.jsonl` (one JSON
//! object per logged step and per validation), the same numbers as TensorBoard scalars
//! ([`super::tensorboard`]), and the chart `curves.png` (training loss, learning rate, and below
//! them the validation metrics).

use super::tensorboard::{self, EventWriter};
use crate::run::paths::{RunPaths, LOG_FILE, LOSSES_FILE, LOSS_DEBUG_DIR};
use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// Losses of one step, per task (`None` where the task is not trained).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct StepLosses {
    /// The weighted sum that was minimised.
    pub total: f64,
    /// Identity (ArcFace) loss.
    pub fr: Option<f64>,
    /// Gender loss.
    pub gender: Option<f64>,
    /// Age loss.
    pub age: Option<f64>,
}

/// Column header of `losses.tsv`.
pub(crate) const LOSSES_HEADER: &str = "step\tepoch\tlr\ttotal\tfr\tgender\tage";

/// Appends to the run's logs and redraws its charts.
pub(crate) struct RunLogs {
    curves: PathBuf,
    losses: File,
    jsonl: File,
    /// Every `train_log.jsonl` record's numbers, as TensorBoard scalars.
    tensorboard: EventWriter,
    /// (step, total loss) of every step, for the loss chart.
    loss_points: Vec<(f64, f64)>,
    /// (step, learning rate) of every step.
    lr_points: Vec<(f64, f64)>,
    /// Validation metric name -> (step, value).
    valid_points: Vec<(String, Vec<(f64, f64)>)>,
    /// `--eval-bin` legend name (`lfw.bin accuracy`) -> (step, accuracy).
    bin_points: Vec<(String, Vec<(f64, f64)>)>,
}

impl RunLogs {
    /// Opens the logs of the run `run`. Lines (and TensorBoard events) for steps after
    /// `keep_through` are dropped first: they come from steps past the checkpoint a resume starts
    /// from, which will be redone.
    pub fn open(run: &RunPaths, keep_through: u64) -> Result<Self> {
        let losses_path = run.losses();
        let jsonl_path = run.log();
        std::fs::create_dir_all(run.loss_debug())
            .with_context(|| format!("cannot create {}", run.loss_debug().display()))?;
        let loss_lines = truncate_after(&losses_path, keep_through, tsv_step)?;
        let json_lines = truncate_after(&jsonl_path, keep_through, json_step)?;
        let mut logs = RunLogs {
            curves: run.curves(),
            losses: append(&losses_path)?,
            jsonl: append(&jsonl_path)?,
            tensorboard: EventWriter::open(run, keep_through)?,
            loss_points: Vec::new(),
            lr_points: Vec::new(),
            valid_points: Vec::new(),
            bin_points: Vec::new(),
        };
        if loss_lines.is_empty() {
            writeln!(logs.losses, "{LOSSES_HEADER}")
                .with_context(|| format!("cannot write {}", losses_path.display()))?;
        }
        for line in loss_lines.iter().filter(|l| !l.starts_with("step")) {
            let f: Vec<&str> = line.split('\t').collect();
            let field = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok());
            if let (Some(s), Some(t)) = (field(0), field(3)) {
                logs.loss_points.push((s, t));
            }
            if let (Some(s), Some(lr)) = (field(0), field(2)) {
                logs.lr_points.push((s, lr));
            }
        }
        for line in &json_lines {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
                logs.add_points(&v);
            }
        }
        Ok(logs)
    }

    /// Records the losses of one step in `losses.tsv`.
    pub fn step(&mut self, step: u64, epoch: u64, lr: f64, l: &StepLosses) -> Result<()> {
        let opt = |v: Option<f64>| v.map(|x| format!("{x:.9}")).unwrap_or_else(|| "-".into());
        writeln!(
            self.losses,
            "{step}\t{epoch}\t{lr:e}\t{:.9}\t{}\t{}\t{}",
            l.total,
            opt(l.fr),
            opt(l.gender),
            opt(l.age)
        )
        .with_context(|| format!("cannot write {LOSS_DEBUG_DIR}/{LOSSES_FILE}"))?;
        self.loss_points.push((step as f64, l.total));
        self.lr_points.push((step as f64, lr));
        Ok(())
    }

    /// Appends one JSON object (must hold `step`) to `train_log.jsonl` and its numbers to the
    /// TensorBoard event file, both flushed; a `validation` or an `eval_bin` object in it also
    /// feeds the validation chart.
    pub fn event(&mut self, value: &serde_json::Value) -> Result<()> {
        // Flush the per-step file too, so both logs agree at every logged step.
        self.losses.flush().with_context(|| format!("cannot write {LOSS_DEBUG_DIR}/{LOSSES_FILE}"))?;
        writeln!(self.jsonl, "{value}").with_context(|| format!("cannot write {LOG_FILE}"))?;
        self.jsonl.flush().with_context(|| format!("cannot write {LOG_FILE}"))?;
        if let Some(step) = value["step"].as_u64() {
            self.tensorboard.scalars(step, &tensorboard::scalars(value))?;
        }
        self.add_points(value);
        Ok(())
    }

    /// The chart's points in a `train_log.jsonl` object: validation metrics, or one `--eval-bin`
    /// set's accuracy.
    fn add_points(&mut self, value: &serde_json::Value) {
        let Some(step) = value["step"].as_f64() else { return };
        if let Some(m) = value["validation"].as_object() {
            self.add_valid_points(step, m);
        }
        if let (Some(set), Some(acc)) = (value["eval_bin"]["set"].as_str(), value["eval_bin"]["accuracy"].as_f64()) {
            let name = format!("{set}.bin accuracy");
            match self.bin_points.iter_mut().find(|(n, _)| *n == name) {
                Some((_, pts)) => pts.push((step, acc)),
                None => self.bin_points.push((name, vec![(step, acc)])),
            }
        }
    }

    fn add_valid_points(&mut self, step: f64, metrics: &serde_json::Map<String, serde_json::Value>) {
        for (name, v) in metrics {
            let Some(v) = v.as_f64() else { continue };
            match self.valid_points.iter_mut().find(|(n, _)| n == name) {
                Some((_, pts)) => pts.push((step, v)),
                None => self.valid_points.push((name.clone(), vec![(step, v)])),
            }
        }
    }

    /// Redraws `curves.png`: the loss of every step (thin and pale) and its running mean (bold),
    /// the learning rate of every step; below them, when the run
    /// validates or scores `--eval-bin` sets, the validation accuracies and each set's 10-fold
    /// accuracy (fractions, one series each) and, for Age and Multi, the age error in years, each
    /// on its own axis so that neither flattens the other.
    pub fn draw(&mut self) -> Result<()> {
        use facekit_eval::plot::{ChartSpec, Panel, Series};
        self.losses.flush().with_context(|| format!("cannot write {LOSS_DEBUG_DIR}/{LOSSES_FILE}"))?;
        // A fiftieth of the run, but at least 10 steps: a mean of fewer would be as noisy as the loss.
        let n = self.loss_points.len();
        let window = (n / 50).max(10.min(n)).max(1);
        let mean: Vec<(f64, f64)> = self
            .loss_points
            .windows(window)
            .map(|w| (w[w.len() - 1].0, w.iter().map(|p| p.1).sum::<f64>() / w.len() as f64))
            .collect();
        let mean_name = format!("mean of {window} steps");
        let loss = [
            Series { name: "loss of each step", points: &self.loss_points, faint: true },
            Series { name: &mean_name, points: &mean, faint: false },
        ];
        let lr = [Series { name: "learning rate", points: &self.lr_points, faint: false }];
        // The verification threshold is a by-product, not a quality measure: left out.
        let fractions: Vec<Series> = self
            .valid_points
            .iter()
            .filter(|(n, _)| n.ends_with("_accuracy") || n.ends_with("_baseline"))
            .chain(&self.bin_points)
            .map(|(n, p)| Series { name: n, points: p, faint: false })
            .collect();
        let years: Vec<Series> = self
            .valid_points
            .iter()
            .filter(|(n, _)| n == "age_mae")
            .map(|(n, p)| Series { name: n, points: p, faint: false })
            .collect();
        // Every panel spans the steps of the loss, so that validation points sit under their step.
        let x_range = self.loss_points.first().zip(self.loss_points.last()).map(|(a, b)| (a.0, b.0));
        let spec = ChartSpec { title: "Training loss", x_label: "step", y_label: "loss", log_x: false };
        let mut panels = vec![Panel { spec, series: &loss, markers: false, x_range }];
        let spec = ChartSpec { title: "Learning rate", x_label: "step", y_label: "learning rate", log_x: false };
        panels.push(Panel { spec, series: &lr, markers: false, x_range });
        if !fractions.is_empty() {
            let title = if self.bin_points.is_empty() {
                "Validation accuracy"
            } else {
                "Validation and .bin verification accuracy"
            };
            let spec = ChartSpec { title, x_label: "step", y_label: "fraction correct", log_x: false };
            panels.push(Panel { spec, series: &fractions, markers: true, x_range });
        }
        if !years.is_empty() {
            let spec = ChartSpec {
                title: "Validation age error",
                x_label: "step",
                y_label: "mean absolute error (years)",
                log_x: false,
            };
            panels.push(Panel { spec, series: &years, markers: true, x_range });
        }
        facekit_eval::plot::figure(&self.curves, &panels)
    }

    /// Flushes both logs.
    pub fn flush(&mut self) -> Result<()> {
        self.losses.flush().with_context(|| format!("cannot write {LOSS_DEBUG_DIR}/{LOSSES_FILE}"))?;
        self.jsonl.flush().with_context(|| format!("cannot write {LOG_FILE}"))
    }
}

fn append(path: &Path) -> Result<File> {
    OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("cannot open {}", path.display()))
}

fn tsv_step(line: &str) -> Option<u64> {
    line.split('\t').next()?.parse().ok()
}

fn json_step(line: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(line).ok()?["step"].as_u64()
}

/// Keeps the lines of `path` whose step is at most `keep_through` (and lines without a step, such
/// as the header), rewriting the file atomically when anything is dropped. Returns the kept lines.
fn truncate_after(path: &Path, keep_through: u64, step_of: fn(&str) -> Option<u64>) -> Result<Vec<String>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut kept = Vec::new();
    let mut dropped = false;
    for line in BufReader::new(file).lines() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if line.trim().is_empty() || step_of(&line).is_some_and(|s| s > keep_through) {
            dropped = true;
            continue;
        }
        kept.push(line);
    }
    if dropped {
        let mut text = kept.join("\n");
        if !kept.is_empty() {
            text.push('\n');
        }
        facekit_io::durable::write(path, text.as_bytes())?;
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopening_drops_steps_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunPaths::new(dir.path());
        let mut logs = RunLogs::open(&run, 0).unwrap();
        for s in 1..=5 {
            logs.step(s, 0, 0.1, &StepLosses { total: s as f64, fr: Some(s as f64), gender: None, age: None }).unwrap();
            logs.event(&serde_json::json!({ "step": s, "loss": s })).unwrap();
        }
        logs.flush().unwrap();
        drop(logs);
        let logs = RunLogs::open(&run, 3).unwrap();
        assert_eq!(logs.loss_points.iter().map(|p| p.0).collect::<Vec<_>>(), vec![1.0, 2.0, 3.0]);
        let tsv = std::fs::read_to_string(run.losses()).unwrap();
        assert_eq!(tsv.lines().count(), 4, "{tsv}");
        assert!(tsv.starts_with(LOSSES_HEADER));
        let jsonl = std::fs::read_to_string(run.log()).unwrap();
        assert_eq!(jsonl.lines().count(), 3);
    }
}
