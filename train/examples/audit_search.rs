//! Time and memory of `facekit audit`'s nearest-neighbour search (exact blocked matrix products,
//! `facekit_train::audit::search`) on synthetic embeddings: N random unit vectors of D
//! dimensions with every 1000th one planted twice (a near duplicate), all pairs above 0.9.
//! `cargo run --release -p facekit-train --example audit_search -- [N] [D] [cpu|cuda] [ROWS]`
//! (docs/PERFORMANCE.md, "Audit"). With ROWS, only the first ROWS vectors are searched against
//! all N (the all-pairs search's first row blocks), for sizes whose whole search takes hours: the
//! full search's time is this one's times N / (2 ROWS), its memory the same.

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
    let rows: Option<usize> = args.get(4).and_then(|s| s.parse().ok()).filter(|&r| r < n);
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
    let (pairs, planted, gflop) = match rows {
        None => (search::pairs_above(&m, None, 0.9), planted, (n as f64) * (n as f64) / 2.0 * dim as f64 * 2.0 / 1e9),
        Some(r) => {
            // Rows against every vector: each row meets itself, and both members of a planted pair
            // among the rows meet their twin, so only pairs i < j are the all-pairs search's.
            let head = m.narrow(0, 0, r as i64);
            let found: Vec<_> = search::pairs_above(&head, Some(&m), 0.9).into_iter().filter(|p| p.0 < p.1).collect();
            (found, r.div_ceil(1000), r as f64 * n as f64 * dim as f64 * 2.0 / 1e9)
        }
    };
    let secs = t0.elapsed().as_secs_f64();
    let projected =
        rows.map_or(String::new(), |r| format!(" projected all pairs {:.0}s", secs * n as f64 / (2.0 * r as f64)));
    println!(
        "n={n} dim={dim} rows={} device={device:?} threads={} pairs={} (planted {planted}) time={secs:.1}s ({:.0} GFLOP/s){projected} peak RSS {:.0} MiB (embeddings {:.0} MiB, before search {:.0} MiB)",
        rows.unwrap_or(n),
        tch::get_num_threads(),
        pairs.len(),
        gflop / secs,
        peak_rss_mib(),
        (n * dim * 4) as f64 / 1048576.0,
        rss_before
    );
    assert!(pairs.len() >= planted, "the search missed planted pairs");
}
