//! `facekit verify-shard`: prove that shards are intact, record by record.

use anyhow::{bail, Result};
use facekit_shard::verify::{self, DatasetReport, Problem, ShardReport, VerifyOptions};
use facekit_shard::DatasetPaths;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

/// Arguments of `facekit verify-shard`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Shard files, manifests (`NAME.manifest.json`) or dataset names (`training/celeb`).
    #[arg(required = true)]
    pub paths: Vec<String>,
    /// Also decode every image and check its size against the record header.
    #[arg(long)]
    pub decode: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Folder where bare dataset names are looked up.
    #[arg(long, default_value = "training")]
    pub data_dir: PathBuf,
}

/// One thing to verify.
enum Target {
    Shard(PathBuf),
    Dataset(DatasetPaths),
}

/// Verifies every path; exit 0 when all is intact, 1 when anything is corrupt, 2 on I/O errors.
pub fn run(args: VerifyArgs) -> Result<ExitCode> {
    let targets = args.paths.iter().map(|p| classify(p, &args.data_dir)).collect::<Result<Vec<_>>>()?;
    let total: u64 = targets.iter().map(target_bytes).sum();
    let bar = facekit_io::progress::bytes(total);
    if total < 256 << 20 {
        facekit_io::progress::hide(&bar);
    }
    let done = AtomicU64::new(0);
    let on_bytes = |n: u64| {
        bar.set_position(done.fetch_add(n, Ordering::Relaxed) + n);
    };
    let opts =
        VerifyOptions { decode: args.decode.then_some(&facekit_data::codec::decoded_size as &verify::PayloadCheck) };
    let mut datasets = Vec::new();
    let mut shards = Vec::new();
    for t in &targets {
        match t {
            Target::Shard(p) => shards.push(verify::verify_shard(p, opts, &on_bytes)?),
            Target::Dataset(d) => datasets.push(verify::verify_dataset(d, opts, &on_bytes)?),
        }
    }
    bar.finish_and_clear();
    let ok = shards.iter().all(ShardReport::is_ok) && datasets.iter().all(DatasetReport::is_ok);
    if args.json {
        let out = serde_json::json!({ "ok": ok, "datasets": datasets, "shards": shards });
        outln!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_text(&datasets, &shards, ok);
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn classify(arg: &str, data_dir: &Path) -> Result<Target> {
    let p = Path::new(arg);
    if arg.ends_with(".shard") {
        if !p.exists() {
            bail!("no such shard file: {arg}");
        }
        // A FIFO or device is named as what it is, without being opened for reading.
        facekit_io::bounded::open_regular(p)?;
        return Ok(Target::Shard(p.to_path_buf()));
    }
    Ok(Target::Dataset(DatasetPaths::resolve(arg, Some(data_dir))?))
}

fn target_bytes(t: &Target) -> u64 {
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    match t {
        Target::Shard(p) => len(p),
        Target::Dataset(d) => d.shards_on_disk().unwrap_or_default().iter().map(|(_, p)| len(p)).sum(),
    }
}

fn print_text(datasets: &[DatasetReport], shards: &[ShardReport], ok: bool) {
    let mut all_shards: Vec<&ShardReport> = shards.iter().collect();
    let mut problems: Vec<&Problem> = Vec::new();
    for d in datasets {
        problems.extend(&d.problems);
        all_shards.extend(&d.shards);
    }
    for s in &all_shards {
        problems.extend(&s.problems);
    }
    for p in &problems {
        let mut line = p.file.clone();
        if let Some(r) = p.record {
            line.push_str(&format!(": record {r}"));
        }
        if let Some(o) = p.offset {
            line.push_str(&format!(" (byte {o})"));
        }
        outln!("BAD {line}: {}", p.reason);
    }
    let records: u64 = all_shards.iter().map(|s| s.records).sum();
    let good: u64 = all_shards.iter().map(|s| s.good_records).sum();
    let bytes: u64 = all_shards.iter().map(|s| s.bytes).sum();
    outln!(
        "{}: {} dataset(s), {} shard(s), {} bytes, {good}/{records} records intact, {} problem(s)",
        if ok { "OK" } else { "CORRUPT" },
        datasets.len(),
        all_shards.len(),
        bytes,
        problems.len()
    );
}
