//! Time and memory of `facekit audit`'s nearest-neighbour search (exact blocked matrix products,
//! `facekit_train::audit::search`) on synthetic embeddings: N random unit vectors of D
//! dimensions with every 1000th one planted twice (a near duplicate), all pairs above 0.9.
//! `cargo run --release -p facekit-train --example audit_search -- [N] [D] [cpu|cuda|hnsw] [ROWS]`
//! (docs/PERFORMANCE.md, "Audit"). With ROWS, only the first ROWS vectors are searched against
//! all N (the all-pairs search's first row blocks), for sizes whose whole search takes hours: the
//! full search's time is this one's times N / (2 ROWS), its memory the same. `hnsw` runs the exact
//! search on the CPU and then the approximate one of an HNSW graph (the `hnsw_rs` crate) over the
//! same vectors, the alternative the choice was measured against: build and search time, memory,
//! and how many of the exact search's pairs it finds.

use facekit_train::audit::{normalise, search};
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::time::Instant;

/// Similarity from which a pair is reported, as `facekit audit --near` with `--model`.
const THRESHOLD: f32 = 0.9;

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// `n` random unit vectors of `dim` values, every 1000th followed by a near twin; and the
/// number of twins.
fn vectors(n: usize, dim: usize) -> (Vec<f32>, usize) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut v: Vec<f32> = (0..n * dim).map(|_| rng.random::<f32>() - 0.5).collect();
    normalise(&mut v, dim);
    let mut planted = 0;
    for i in (0..n.saturating_sub(1)).step_by(1000) {
        for d in 0..dim {
            v[(i + 1) * dim + d] = v[i * dim + d] + 0.01 * (rng.random::<f32>() - 0.5);
        }
        planted += 1;
    }
    normalise(&mut v, dim);
    (v, planted)
}

/// The pairs `i < j` at or above [`THRESHOLD`] by an HNSW graph (16 links, construction
/// breadth 200), each vector asked for its 10 nearest with search breadth 64, on all cores.
fn hnsw_pairs(v: &[f32], dim: usize) -> (HashSet<(usize, usize)>, f64, f64) {
    use anndists::dist::DistCosine;
    use hnsw_rs::prelude::Hnsw;
    let rows: Vec<Vec<f32>> = v.chunks_exact(dim).map(<[f32]>::to_vec).collect();
    let n = rows.len();
    let t0 = Instant::now();
    let index = Hnsw::<f32, DistCosine>::new(16, n, 16.min((n as f32).ln() as usize), 200, DistCosine {});
    let with_ids: Vec<(&Vec<f32>, usize)> = rows.iter().zip(0..n).collect();
    index.parallel_insert(&with_ids);
    let build = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let found = index.parallel_search(&rows, 10, 64);
    let query = t1.elapsed().as_secs_f64();
    let pairs = found
        .iter()
        .enumerate()
        .flat_map(|(i, hits)| {
            // DistCosine is 1 - cosine. (DistDot, the same for unit vectors, asserts 1 - a.b >= 0, which
            // rounding breaks for a vector and itself.)
            hits.iter()
                .filter(move |h| h.d_id != i && 1.0 - h.distance >= THRESHOLD)
                .map(move |h| (i.min(h.d_id), i.max(h.d_id)))
        })
        .collect();
    (pairs, build, query)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let dim: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(512);
    let mode = args.get(3).map_or("cpu", String::as_str);
    let device = if mode == "cuda" { tch::Device::Cuda(0) } else { tch::Device::Cpu };
    let rows: Option<usize> = args.get(4).and_then(|s| s.parse().ok()).filter(|&r| r < n);
    let (v, planted) = vectors(n, dim);
    let rss_before = peak_rss_mib();
    let t0 = Instant::now();
    let m = search::matrix(&v, dim, device);
    let (pairs, planted, gflop) = match rows {
        None => {
            (search::pairs_above(&m, None, THRESHOLD), planted, (n as f64) * (n as f64) / 2.0 * dim as f64 * 2.0 / 1e9)
        }
        Some(r) => {
            // Rows against every vector: each row meets itself, and both members of a planted pair
            // among the rows meet their twin, so only pairs i < j are the all-pairs search's.
            let head = m.narrow(0, 0, r as i64);
            let found: Vec<_> =
                search::pairs_above(&head, Some(&m), THRESHOLD).into_iter().filter(|p| p.0 < p.1).collect();
            (found, r.div_ceil(1000), r as f64 * n as f64 * dim as f64 * 2.0 / 1e9)
        }
    };
    let secs = t0.elapsed().as_secs_f64();
    drop(m);
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
    if mode == "hnsw" && rows.is_none() {
        let exact: HashSet<(usize, usize)> = pairs.iter().map(|p| (p.0, p.1)).collect();
        let (approx, build, query) = hnsw_pairs(&v, dim);
        let recalled = exact.intersection(&approx).count();
        println!(
            "hnsw: build {build:.1}s, search {query:.1}s (total {:.1}s, exact {secs:.1}s), pairs {} of the exact {} found, {} not exact, peak RSS {:.0} MiB",
            build + query,
            recalled,
            exact.len(),
            approx.len() - recalled,
            peak_rss_mib()
        );
    }
}
