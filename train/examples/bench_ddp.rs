//! Benchmark helper for `scripts/bench-ddp.sh`: one rank of a Gloo group (127.0.0.1, CPU) timing a
//! training step with DDP's Reducer and without it, so that the all-reduce overhead is the
//! difference. `scripts/bench_ddp_reference.py` is the same measurement with PyTorch's own
//! `DistributedDataParallel`.
//!
//! A step is forward (train mode), MSE against a fixed random target, backward, and zeroing the
//! gradients in place (no optimiser: the update is the same work with or without DDP). Each rank
//! has its own synthetic batch. After `--warmup` DDP steps (the Reducer rebuilds its buckets after
//! the first and collects runtime statistics on the first 10), `--rounds` rounds each time `--steps` local steps then `--steps` DDP steps, so load
//! drifts on a shared machine hit both modes alike. Every step is timed on its own; a step's time
//! is the slower rank's (all-reduced MAX after the round, outside the timing), which is what a
//! synchronous data-parallel step is bound by. Rank 0 prints one JSON line.
//!
//! usage: bench_ddp --rank R --world W --port-file FILE [--net tiny|resnet50] [--batch N]
//!        [--image-size S] [--warmup N] [--rounds N] [--steps N] [--threads N]
//! Rank 0 hosts the store on a free port and writes it to FILE; the other ranks wait for FILE.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use facekit_train::dist::{Backend, ProcessGroup, ReduceOp, Reducer, Store};
use facekit_train::model::{Arch, FaceNet, NetConfig, Task};
use tch::{nn, Device, Kind, Reduction, Tensor};

/// How long rendezvous and collectives may wait for the other rank (a loaded box is slow).
const TIMEOUT: Duration = Duration::from_secs(300);

fn main() -> Result<()> {
    let args = parse_args()?;
    let get = |k: &str, d: &str| args.get(k).cloned().unwrap_or_else(|| d.to_string());
    let rank: usize = get("rank", "0").parse()?;
    let world: usize = get("world", "2").parse()?;
    let port_file = args.get("port-file").context("--port-file is required")?.clone();
    let net = get("net", "tiny");
    let arch = match net.as_str() {
        "tiny" => Arch::Tiny,
        "resnet50" => Arch::Resnet50,
        other => bail!("--net {other}: expected tiny or resnet50"),
    };
    let batch: i64 = get("batch", "8").parse()?;
    let image_size: i64 = get("image-size", "32").parse()?;
    let warmup: usize = get("warmup", "10").parse()?;
    let rounds: usize = get("rounds", "3").parse()?;
    let steps: usize = get("steps", "5").parse()?;
    let threads: i32 = get("threads", "1").parse()?;
    tch::set_num_threads(threads);
    tch::manual_seed(rank as i64);

    let store = rendezvous(rank, world, Path::new(&port_file))?;
    let group = ProcessGroup::new(&store, "bench", rank, world, Backend::Gloo, TIMEOUT, Some("127.0.0.1"))?;

    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = NetConfig { arch, image_size, num_classes: 2, task: Task::Fr, ..NetConfig::default() };
    let model = FaceNet::new(&vs.root(), &cfg)?;
    // Creation order, identical on every rank (the Reducer checks it); `variables()` is a HashMap.
    let params = vs.trainable_variables();
    let refs: Vec<&Tensor> = params.iter().collect();
    let grad_bytes: i64 = params.iter().map(|p| p.numel() as i64 * 4).sum();
    let n_params: i64 = params.iter().map(|p| p.numel() as i64).sum();
    tch::no_grad(|| group.broadcast(&refs, 0))?;
    let mut reducer = Reducer::new(&group, &refs, false)?;

    let x = Tensor::randn([batch, 3, image_size, image_size], (Kind::Float, Device::Cpu));
    let target = Tensor::randn([batch, cfg.embedding_size], (Kind::Float, Device::Cpu));

    let mut step = |ddp: bool, zero: bool| -> Result<f64> {
        let t = Instant::now();
        if ddp {
            reducer.prepare_forward()?;
        }
        let emb = model.embed(&x, true);
        let loss = emb.mse_loss(&target, Reduction::Mean);
        if ddp {
            reducer.prepare_backward(&[])?;
        }
        loss.backward();
        for p in params.iter().filter(|_| zero) {
            // What tch's optimiser zero_grad and PyTorch's zero_grad(set_to_none=False) do.
            let mut g = p.grad();
            if g.defined() {
                let _ = g.detach_();
                let _ = g.zero_();
            }
        }
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };

    for _ in 0..warmup {
        step(true, true)?;
    }
    let mut local = Vec::new();
    let mut ddp = Vec::new();
    for _ in 0..rounds {
        for (mode, out) in [(false, &mut local), (true, &mut ddp)] {
            group.barrier()?;
            let ms: Vec<f64> = (0..steps).map(|_| step(mode, true)).collect::<Result<_>>()?;
            let t = Tensor::from_slice(&ms);
            group.all_reduce(&[&t], ReduceOp::Max)?;
            out.extend(Vec::<f64>::try_from(&t)?);
        }
    }
    // A figure from a Reducer that did not reduce would be meaningless: local gradients must
    // differ across the ranks (different batches), reduced ones must not.
    step(false, false)?;
    if spread(&group, &params)? == 0.0 {
        bail!("local gradients are already equal across ranks: the check below proves nothing");
    }
    for p in &params {
        let _ = p.grad().zero_();
    }
    step(true, false)?;
    let s = spread(&group, &params)?;
    if s != 0.0 {
        bail!("gradients differ across ranks after a DDP step (largest spread of a |grad| sum: {s})");
    }

    if rank == 0 {
        let (ml, md) = (median(&local), median(&ddp));
        println!(
            "{{\"impl\":\"facekit\",\"net\":\"{net}\",\"world\":{world},\"batch\":{batch},\"image_size\":{image_size},\
             \"threads\":{threads},\"params\":{n_params},\"grad_mb\":{:.2},\"steps_per_mode\":{},\
             \"ms_local\":{ml:.3},\"ms_ddp\":{md:.3},\"overhead_ms\":{:.3},\"ms_local_all\":{:?},\"ms_ddp_all\":{:?}}}",
            grad_bytes as f64 / 1e6,
            local.len(),
            md - ml,
            round3(&local),
            round3(&ddp),
        );
    }
    group.barrier()?;
    Ok(())
}

/// `--key value` pairs.
fn parse_args() -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let Some(key) = k.strip_prefix("--") else { bail!("unexpected argument {k}") };
        let v = it.next().with_context(|| format!("{k} needs a value"))?;
        out.insert(key.to_string(), v);
    }
    Ok(out)
}

/// Rank 0 hosts the store on a free port and publishes it in `port_file` (written whole, then
/// renamed, so a reader never sees half a number); the others poll for the file.
fn rendezvous(rank: usize, world: usize, port_file: &Path) -> Result<Store> {
    if rank == 0 {
        let store = Store::host("127.0.0.1", 0, world, TIMEOUT, "bench")?;
        let tmp = port_file.with_extension("tmp");
        std::fs::write(&tmp, store.port()?.to_string())?;
        std::fs::rename(&tmp, port_file)?;
        return Ok(store);
    }
    let start = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(port_file) {
            return Store::connect("127.0.0.1", s.trim().parse()?, TIMEOUT, "bench");
        }
        if start.elapsed() > TIMEOUT {
            bail!("rank 0 did not publish its port in {}", port_file.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The largest difference across ranks of any parameter's sum of |grad| (0: equal everywhere).
fn spread(group: &ProcessGroup, params: &[Tensor]) -> Result<f64> {
    let sums: Vec<f64> = params.iter().map(|p| p.grad().abs().sum(Kind::Double).double_value(&[])).collect();
    let hi = Tensor::from_slice(&sums);
    let lo = hi.neg();
    group.all_reduce(&[&hi, &lo], ReduceOp::Max)?;
    Ok((hi + lo).abs().max().double_value(&[]))
}

/// The middle value (mean of the two middle ones for an even count).
fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Values rounded to microseconds, for the JSON line.
fn round3(xs: &[f64]) -> Vec<f64> {
    xs.iter().map(|x| (x * 1e3).round() / 1e3).collect()
}
