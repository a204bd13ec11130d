//! Benchmark helper for `scripts/bench-schedule.sh`: the per-step cost of dlib's plateau rule
//! (`DlibPlateau::observe`, dlib's default threshold 2000) and of one `count_steps_without_decrease`
//! call on 2000 losses, on a noisy flat loss where every check runs both counters.
//!
//! `schedule_bench <steps>` prints one JSON line.

use std::time::Instant;

use anyhow::{Context, Result};
use facekit_train::trainer::schedule::{count_steps_without_decrease, DlibPlateau, PROBABILITY_OF_DECREASE};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn main() -> Result<()> {
    let steps: usize = std::env::args().nth(1).context("usage: schedule_bench <steps>")?.parse()?;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let losses: Vec<f64> = (0..steps).map(|_| 1.0 + 0.1 * rng.random::<f64>()).collect();

    let mut p = DlibPlateau::new(0.1);
    p.min_lr = 0.0;
    let t = Instant::now();
    let mut shrinks = 0;
    for &l in &losses {
        shrinks += p.observe(l).shrunk as usize;
    }
    let observe_us = t.elapsed().as_secs_f64() * 1e6 / steps as f64;

    let window = &losses[..2000.min(steps)];
    let reps = 200;
    let t = Instant::now();
    let mut sink = 0;
    for _ in 0..reps {
        sink += count_steps_without_decrease(std::hint::black_box(window), PROBABILITY_OF_DECREASE);
    }
    let count_us = t.elapsed().as_secs_f64() * 1e6 / reps as f64;
    println!(
        "{{\"impl\":\"facekit\",\"steps\":{steps},\"shrinks\":{shrinks},\"observe_us_per_step\":{observe_us:.3},\
         \"count_2000_us\":{count_us:.1},\"sink\":{sink}}}"
    );
    Ok(())
}
