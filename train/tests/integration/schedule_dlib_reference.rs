//! dlib's plateau rule against dlib itself: the two counters against the `dlib` Python package's
//! own functions on many random sequences, and `DlibPlateau`'s shrink/drop/stop trace against the
//! Python port of `dnn_trainer`'s rule in `scripts/dlib_lr_reference.py`.

use facekit_train::trainer::schedule::{
    count_steps_without_decrease, count_steps_without_decrease_robust, DlibPlateau, PROBABILITY_OF_DECREASE,
    QUANTILE_DISCARD,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
    // Box-Muller; 1 - u keeps the log argument in (0, 1].
    let u: f64 = 1.0 - rng.random::<f64>();
    let v: f64 = rng.random::<f64>();
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

/// Loss-like series of several shapes: noisy decay, flat, rising, very short, outliers, plateaus.
fn random_sequences(rng: &mut ChaCha8Rng, count: usize) -> Vec<Vec<f64>> {
    (0..count)
        .map(|i| {
            let len = match i % 7 {
                0 => rng.random_range(0..6usize),
                _ => rng.random_range(3..400usize),
            };
            let noise = [0.0, 0.01, 0.1, 1.0][rng.random_range(0..4)];
            let rate = rng.random_range(0.0..0.02);
            (0..len)
                .map(|t| {
                    let t = t as f64;
                    let base = match i % 6 {
                        0 => 5.0 * (-rate * t).exp(),
                        1 => 2.0,
                        2 => 1.0 + rate * t,
                        3 => {
                            if t < len as f64 / 2.0 {
                                4.0 - 0.01 * t
                            } else {
                                4.0 - 0.01 * len as f64 / 2.0
                            }
                        }
                        4 => 3.0 - rate * t,
                        _ => 1.0 / (1.0 + rate * t),
                    };
                    let spike = if i % 5 == 0 && rng.random::<f64>() < 0.05 { 20.0 } else { 0.0 };
                    base + noise * gaussian(rng) + spike
                })
                .collect()
        })
        .collect()
}

/// A loss that falls, then plateaus with noise, so the rule shrinks several times and stops.
fn plateau_losses(rng: &mut ChaCha8Rng, steps: usize) -> Vec<f64> {
    (0..steps)
        .map(|t| {
            let t = t as f64;
            let level = 1.0 + 3.0 * (-t / 300.0).exp();
            let outlier = if rng.random::<f64>() < 0.01 { 5.0 } else { 0.0 };
            level + 0.05 * gaussian(rng) + outlier
        })
        .collect()
}

fn run_reference(input: &Value) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let inp = dir.path().join("in.json");
    let out = dir.path().join("out.json");
    std::fs::write(&inp, serde_json::to_vec(input).unwrap()).unwrap();
    let script = facekit_testkit::workspace_root().join("scripts/dlib_lr_reference.py");
    let status = std::process::Command::new(facekit_testkit::venv_python())
        .arg(script)
        .arg(&inp)
        .arg(&out)
        .status()
        .expect("running the venv python");
    assert!(status.success(), "dlib_lr_reference.py failed");
    serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap()
}

#[test]
fn counters_and_plateau_rule_match_dlib() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let sequences = random_sequences(&mut rng, 420);
    let (threshold, dump_amount) = (150usize, 30usize);
    let losses = plateau_losses(&mut rng, 4000);
    let mut plateau = DlibPlateau::new(0.1);
    plateau.threshold = threshold;
    plateau.dump_amount = dump_amount;
    plateau.min_lr = 1e-4;
    let input = json!({
        "sequences": sequences,
        "plateau": {"lr": plateau.lr, "threshold": threshold, "shrink": plateau.shrink,
                    "min_lr": plateau.min_lr, "dump_amount": dump_amount, "losses": losses},
    });
    let reference = run_reference(&input);

    let mut mismatches = Vec::new();
    for (i, s) in sequences.iter().enumerate() {
        let plain = count_steps_without_decrease(s, PROBABILITY_OF_DECREASE);
        let robust = count_steps_without_decrease_robust(s, PROBABILITY_OF_DECREASE, QUANTILE_DISCARD);
        let want_plain = reference["plain"][i].as_u64().unwrap() as usize;
        let want_robust = reference["robust"][i].as_u64().unwrap() as usize;
        if (plain, robust) != (want_plain, want_robust) {
            mismatches.push((i, s.len(), plain, want_plain, robust, want_robust));
        }
    }
    assert!(mismatches.is_empty(), "(seq, len, ours, dlib, ours robust, dlib robust): {mismatches:?}");
    // The random shapes must exercise both outcomes, or the comparison proves little.
    let plain: Vec<u64> = reference["plain"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    let full = plain.iter().zip(&sequences).filter(|(c, s)| **c as usize == s.len() && s.len() > 5).count();
    let partial = plain.iter().zip(&sequences).filter(|(c, s)| (**c as usize) < s.len()).count();
    assert!(full > 20 && partial > 20, "sequences too uniform: {full} full, {partial} partial");

    let trace = reference["plateau"].as_array().unwrap();
    let mut shrinks = 0;
    let mut stopped_at = None;
    for (step, (&loss, want)) in losses.iter().zip(trace).enumerate() {
        let d = plateau.observe(loss);
        assert_eq!(d.lr, want["lr"].as_f64().unwrap(), "lr at step {step}");
        assert_eq!(d.shrunk, want["shrunk"].as_bool().unwrap(), "shrunk at step {step}");
        assert_eq!(d.stop, want["stop"].as_bool().unwrap(), "stop at step {step}");
        assert_eq!(plateau.history.len() as u64, want["history_len"].as_u64().unwrap(), "history at step {step}");
        shrinks += d.shrunk as usize;
        if d.stop && stopped_at.is_none() {
            stopped_at = Some(step);
        }
    }
    assert!(shrinks >= 3, "synthetic plateau shrank only {shrinks} times");
    assert!(stopped_at.is_some(), "the rate never fell below min_lr");
}

#[test]
fn plateau_state_survives_a_checkpoint_round_trip() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let losses = plateau_losses(&mut rng, 1500);
    let mut a = DlibPlateau::new(0.01);
    a.threshold = 100;
    a.dump_amount = 20;
    for &l in &losses[..700] {
        a.observe(l);
    }
    let mut b: DlibPlateau = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
    assert_eq!(a, b);
    for &l in &losses[700..] {
        assert_eq!(a.observe(l), b.observe(l));
    }
}
