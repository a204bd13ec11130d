//! What tests read back from a `facekit train` run folder: the loss of every step.

use std::path::Path;

/// The header of `loss_debug/losses.tsv`, as facekit-train's trainer writes it (its
/// `trainer::logs::LOSSES_HEADER`; testkit cannot depend on the crate whose tests use it).
pub const LOSSES_HEADER: &str = "step\tepoch\tlr\ttotal\tfr\tgender\tage";

/// One row of a run's `loss_debug/losses.tsv`: the losses of one step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepLoss {
    /// The step, from 1.
    pub step: u64,
    /// The epoch the step was in.
    pub epoch: u64,
    /// The learning rate the step used.
    pub lr: f64,
    /// The loss the step minimised.
    pub total: f64,
    /// The FR, gender and age losses, `None` where the step had none (`-` in the file).
    pub tasks: [Option<f64>; 3],
}

/// Every row of `run/loss_debug/losses.tsv`, in order, after checking its header. A row that is
/// not as the trainer writes it fails the test.
pub fn step_losses(run: &Path) -> Vec<StepLoss> {
    let path = run.join("loss_debug/losses.tsv");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(LOSSES_HEADER), "{}", path.display());
    lines
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 7, "{}: {l:?}", path.display());
            let task = |s: &str| (s != "-").then(|| s.parse().unwrap());
            StepLoss {
                step: f[0].parse().unwrap(),
                epoch: f[1].parse().unwrap(),
                lr: f[2].parse().unwrap(),
                total: f[3].parse().unwrap(),
                tasks: [task(f[4]), task(f[5]), task(f[6])],
            }
        })
        .collect()
}
