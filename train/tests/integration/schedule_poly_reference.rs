//! `--schedule poly` against arcface_torch's `PolynomialLRWarmup` as train_v2.py drives it: a
//! re-implementation of that scheduler (its chainable `get_lr`, stepped once per iteration on a
//! real torch optimiser, through torch's own `LRScheduler`) and its closed form, run in the
//! venv's Python. After the warm-up facekit's rate is the closed form at the same iteration;
//! during it, facekit's ramp is arcface_torch's one iteration earlier (docs/TRAINING.md).

use facekit_train::trainer::config::{ScheduleConfig, Warmup};
use facekit_train::trainer::schedule::Schedule;
use facekit_train::trainer::setup::build_schedule;
use facekit_train::TrainConfig;

/// The rate each of `total` iterations used in arcface_torch (`used`) and the closed form at
/// each iteration's `last_epoch` (`closed`).
fn reference(base: f64, warmup: u64, total: u64, power: f64) -> (Vec<f64>, Vec<f64>) {
    let script = format!(
        r#"
import json, torch
class PolyWarmup(torch.optim.lr_scheduler.LRScheduler):
    def __init__(self, opt, warmup, total, power):
        self.warmup, self.total, self.power = warmup, total, power
        super().__init__(opt)
    def get_lr(self):
        l, w, t = self.last_epoch, self.warmup, self.total
        if l == 0 or l > t:
            return [g["lr"] for g in self.optimizer.param_groups]
        if l <= w:
            return [b * l / w for b in self.base_lrs]
        f = ((1.0 - (l - w) / (t - w)) / (1.0 - (l - 1 - w) / (t - w))) ** self.power
        return [g["lr"] * f for g in self.optimizer.param_groups]
    def closed(self):
        l, w, t = self.last_epoch, self.warmup, self.total
        if w > 0 and l <= w:
            return self.base_lrs[0] * l / w
        return self.base_lrs[0] * (1.0 - (min(t, l) - w) / (t - w)) ** self.power
p = torch.zeros(1, requires_grad=True)
opt = torch.optim.SGD([p], lr={base:e})
s = PolyWarmup(opt, {warmup}, {total}, {power:e})
used, closed = [], []
for _ in range({total}):
    used.append(opt.param_groups[0]["lr"])
    closed.append(s.closed())
    s.step()
print(json.dumps([used, closed]))
"#
    );
    let out = std::process::Command::new(facekit_testkit::venv_python())
        .args(["-c", &script])
        .output()
        .expect("running the venv python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn facekit(base: f64, warmup: u64, total: u64, power: f64) -> Vec<f64> {
    let cfg = TrainConfig {
        lr: base,
        schedule: ScheduleConfig::Poly { power },
        warmup: Warmup::Steps(warmup),
        max_steps: Some(total),
        ..TrainConfig::default()
    };
    cfg.validate().unwrap();
    let mut s = build_schedule(&cfg, Some(total));
    (0..total)
        .map(|_| {
            let lr = s.lr();
            s.observe(1.0);
            lr
        })
        .collect()
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-300)
}

#[test]
fn poly_follows_arcface_torchs_polynomial_lr_warmup() {
    for (base, w, t, p) in [(0.1, 5, 30, 1.0), (0.1, 0, 20, 2.0), (0.02, 3, 12, 0.5), (1e-3, 8, 9, 1.0)] {
        let ours = facekit(base, w, t, p);
        let (used, closed) = reference(base, w, t, p);
        let case = format!("base {base} warm-up {w} of {t}, power {p}");
        // arcface_torch's first iteration runs at the full rate: its initial scheduler step
        // leaves the optimiser's lr unchanged.
        assert_eq!(used[0], base, "{case}: reference iteration 0");
        for k in 0..t as usize {
            if k < w as usize {
                // Warm-up: facekit base·(k+1)/w is arcface_torch's base·k'/w at k' = k + 1.
                assert!(close(ours[k], base * (k + 1) as f64 / w as f64, 1e-15), "{case}: step {k} ramp {}", ours[k]);
                assert!(
                    close(ours[k], used[k + 1], 1e-12),
                    "{case}: step {k}: facekit {} vs arcface_torch's step {} {}",
                    ours[k],
                    k + 1,
                    used[k + 1]
                );
            } else {
                assert_eq!(ours[k], closed[k], "{case}: step {k}: facekit vs the closed form");
                if k > 0 {
                    assert!(
                        close(ours[k], used[k], 1e-9),
                        "{case}: step {k}: facekit {} vs chained {}",
                        ours[k],
                        used[k]
                    );
                }
            }
        }
    }
}

#[test]
fn poly_state_resumes_exactly_through_json_and_warmup_epochs_count_batches() {
    let cfg = TrainConfig {
        lr: 0.1,
        schedule: ScheduleConfig::Poly { power: 2.0 },
        warmup: Warmup::Steps(4),
        max_steps: Some(25),
        ..TrainConfig::default()
    };
    let mut a = build_schedule(&cfg, Some(25));
    for _ in 0..7 {
        a.observe(0.5);
    }
    let mut b: Schedule = serde_json::from_value(serde_json::to_value(&a).unwrap()).unwrap();
    for _ in 7..25 {
        assert_eq!(a.lr(), b.lr());
        a.observe(0.5);
        b.observe(0.5);
    }
    assert_eq!(Warmup::Epochs(2).steps(15), 30, "arcface_torch: num_image // batch * warmup_epoch");
    assert_eq!(Warmup::Steps(7).steps(15), 7);
}
