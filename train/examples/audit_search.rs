//! Time and memory of `facekit audit`'s nearest-neighbour search (exact blocked matrix products,
//! `facekit_train::audit::search`) on synthetic embeddings: N random unit vectors of D
//! dimensions with every 1000th one planted twice (a near duplicate), all pairs above 0.9.
//! `cargo run --release -p facekit-train --example audit_search -- [N] [D] [cpu|cuda]`
//! (docs/PERFORMANCE.md, "Audit").

use facekit_train::audit::{normalise, search};
use rand::{Rng, SeedableRng};
use std::time::Instant;

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let dim: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(512);
    let device = match args.get(3).map(String::as_str) {
        Some("cuda") => tch::Device::Cuda(0),
        _ => tch::Device::Cpu,
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut v: Vec<f32> = (0..n * dim).map(|_| rng.random::<f32>() - 0.5).collect();
    normalise(&mut v, dim);
    // Every 1000th vector gets a twin a little off it: the pairs the search must return.
    let mut planted = 0;
    for i in (0..n.saturating_sub(1)).step_by(1000) {
        for d in 0..dim {
            v[(i + 1) * dim + d] = v[i * dim + d] + 0.01 * (rng.random::<f32>() - 0.5);
        }
        planted += 1;
    }
    normalise(&mut v, dim);
    let rss_before = peak_rss_mib();
    let t0 = Instant::now();
    let m = search::matrix(&v, dim, device);
    let pairs = search::pairs_above(&m, None, 0.9);
    let secs = t0.elapsed().as_secs_f64();
    let gflop = (n as f64) * (n as f64) / 2.0 * dim as f64 * 2.0 / 1e9;
    println!(
        "n={n} dim={dim} device={device:?} threads={} pairs={} (planted {planted}) time={secs:.1}s ({:.0} GFLOP/s) peak RSS {:.0} MiB (embeddings {:.0} MiB, before search {:.0} MiB)",
        tch::get_num_threads(),
        pairs.len(),
        gflop / secs,
        peak_rss_mib(),
        (n * dim * 4) as f64 / 1048576.0,
        rss_before
    );
    assert!(pairs.len() >= planted, "the search missed planted pairs");
}
