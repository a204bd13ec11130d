//! CPU cost of one training step per backbone, without the data path: forward in train mode,
//! ArcFace over `--classes` classes, backward, the trainer's fused SGD (0.9 / 5e-4), on one random
//! batch made once (what `facekit train --synthetic` times, without needing a packed set).
//! `--rounds` rounds each time `--steps` steps of every network in turn, so that load drifts on a
//! shared machine hit all networks alike; a network's figure is its median step. One JSON line
//! per network.
//!
//! usage: bench_backbones [--arch mbf,r50] [--image-size 112] [--batch 8] [--classes 1000]
//!        [--warmup 2] [--rounds 3] [--steps 4] [--threads 1]

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use facekit_train::loss::{BatchLabels, FaceLoss, HeadConfig};
use facekit_train::model::{Arch, FaceNet, NetConfig};
use facekit_train::trainer::optim::{Optimizer, Sgd};
use tch::{nn, Device, Kind, Tensor};

struct Bench {
    arch: Arch,
    vs: nn::VarStore,
    net: FaceNet,
    loss: FaceLoss,
    opt: Sgd,
    times_ms: Vec<f64>,
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let get = |k: &str, d: &str| args.get(k).cloned().unwrap_or_else(|| d.to_string());
    let image_size: i64 = get("image-size", "112").parse()?;
    let batch: i64 = get("batch", "8").parse()?;
    let classes: i64 = get("classes", "1000").parse()?;
    let warmup: usize = get("warmup", "2").parse()?;
    let rounds: usize = get("rounds", "3").parse()?;
    let steps: usize = get("steps", "4").parse()?;
    tch::set_num_threads(get("threads", "1").parse()?);
    tch::manual_seed(0);

    let mut benches = Vec::new();
    for name in get("arch", "mbf,r50").split(',') {
        let Ok(arch) = Arch::from_str(name, true) else { bail!("--arch {name}: not a facekit architecture") };
        let cfg = NetConfig { arch, image_size, num_classes: classes, ..NetConfig::default() };
        let vs = nn::VarStore::new(Device::Cpu);
        let net = FaceNet::new(&vs.root(), &cfg)?;
        let loss = FaceLoss::new(&vs.root(), &cfg, &HeadConfig::default())?;
        let opt = Sgd::new(&vs, 0.9, 5e-4);
        benches.push(Bench { arch, vs, net, loss, opt, times_ms: Vec::new() });
    }
    let x = Tensor::rand([batch, 3, image_size, image_size], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let labels = BatchLabels {
        class: Tensor::randint(classes, [batch], (Kind::Int64, Device::Cpu)),
        gender: Tensor::full([batch], -1, (Kind::Int64, Device::Cpu)),
        age: Tensor::full([batch], -1, (Kind::Int64, Device::Cpu)),
    };
    let step = |b: &mut Bench| -> Result<f64> {
        let t = Instant::now();
        b.opt.zero_grad();
        let total = b.loss.losses(&b.net.forward(&x, true), &labels).total;
        total.backward();
        b.opt.step(0.1)?;
        // The CPU runs every kernel before returning, so the clock covers the whole step.
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    for b in &mut benches {
        for _ in 0..warmup {
            step(b)?;
        }
    }
    for _ in 0..rounds {
        for b in &mut benches {
            for _ in 0..steps {
                let ms = step(b)?;
                b.times_ms.push(ms);
            }
        }
    }
    for b in &mut benches {
        b.times_ms.sort_by(f64::total_cmp);
        let median = b.times_ms[b.times_ms.len() / 2];
        let params: i64 = b.vs.trainable_variables().iter().map(|t| t.numel() as i64).sum::<i64>() - classes * 512;
        let name = b.arch.to_possible_value().context("every arch has a name")?.get_name().to_string();
        println!(
            "{}",
            serde_json::json!({
                "arch": name, "image_size": image_size, "batch": batch, "classes": classes,
                "backbone_params": params, "median_ms_per_step": median,
                "ms_per_image": median / batch as f64, "steps_ms": b.times_ms,
            })
        );
    }
    Ok(())
}

fn parse_args() -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let key = k.strip_prefix("--").with_context(|| format!("unexpected argument {k}"))?;
        let v = it.next().with_context(|| format!("--{key} needs a value"))?;
        out.insert(key.to_string(), v);
    }
    Ok(out)
}
