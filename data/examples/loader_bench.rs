//! Benchmark helper for `scripts/bench-loader.sh`: packs lfw100 photos into a 224x224 JPEG q95
//! dataset without dlib (plain resize, no alignment: the loader's cost does not depend on what
//! the face looks like), and times the loader over it.
//!
//! `loader_bench pack <lfw100> <out-dir>` writes dataset `<out-dir>/bench224` plus
//! `<out-dir>/payloads.bin` / `payloads.idx` (the same JPEG bytes, concatenated, with
//! little-endian u64 offsets) for `scripts/loader_reference.py`.
//! `loader_bench run <out-dir>/bench224 <workers> <epochs> <batch> <size>` prints one JSON line.
//! With `LOADER_BENCH_AUGMENT=CROP,JITTER,GREY` (for example `0.1,0.2,0.1`) the loader also
//! applies `--random-crop`, `--color-jitter` and `--grey-prob` with those values.

use anyhow::{bail, Context, Result};
use facekit_data::{Augment, Loader, LoaderConfig};
use facekit_pack::encode as codec;
use facekit_shard::manifest::{EncodingInfo, LabelEntry, LabelMap, SourceInfo};
use facekit_shard::{Dataset, DatasetPaths, DatasetWriter, Encoding, Labels, Manifest, Record};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

const SIDE: u32 = 224;
const QUALITY: u8 = 95;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("pack") if args.len() == 3 => pack(Path::new(&args[1]), Path::new(&args[2])),
        Some("run") if args.len() == 6 => run(&args[1], args[2].parse()?, args[3].parse()?, args[4].parse()?, args[5].parse()?),
        _ => bail!("usage: loader_bench pack <lfw100> <out-dir> | run <dataset> <workers> <epochs> <batch> <size>"),
    }
}

fn pack(lfw: &Path, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut people: Vec<PathBuf> = std::fs::read_dir(lfw)
        .with_context(|| format!("cannot list {}", lfw.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    people.sort();
    let mut jobs = Vec::new();
    let mut labels = LabelMap::default();
    for (class, person) in people.iter().enumerate() {
        let name = person.file_name().unwrap_or_default().to_string_lossy().into_owned();
        labels.entries.push(LabelEntry { class_id: class as u32, source: "lfw100".into(), identity: name });
        let mut photos: Vec<PathBuf> = std::fs::read_dir(person)?.map(|e| e.map(|e| e.path())).collect::<std::io::Result<_>>()?;
        photos.sort();
        jobs.extend(photos.into_iter().map(|p| (class as u32, p)));
    }
    let records: Vec<Record> = jobs
        .par_iter()
        .map(|(class, path)| -> Result<Record> {
            let img = image::open(path).with_context(|| format!("cannot read {}", path.display()))?.into_rgb8();
            let img = image::imageops::resize(&img, SIDE, SIDE, image::imageops::FilterType::Triangle);
            Ok(Record {
                labels: Labels { class_id: Some(*class), ..Labels::default() },
                encoding: Encoding::Jpeg,
                width: SIDE as u16,
                height: SIDE as u16,
                origin_sha256: [0; 16],
                path: path.strip_prefix(lfw).unwrap_or(path).to_string_lossy().into_owned(),
                data: codec::encode(&img, Encoding::Jpeg, QUALITY)?,
            })
        })
        .collect::<Result<_>>()?;
    let paths = DatasetPaths::new(out.join("bench224"));
    let mut w = DatasetWriter::create(paths, 64 << 20)?;
    let (mut blob, mut idx) = (Vec::new(), Vec::new());
    for r in &records {
        w.push(r)?;
        idx.extend_from_slice(&(blob.len() as u64).to_le_bytes());
        blob.extend_from_slice(&r.data);
    }
    idx.extend_from_slice(&(blob.len() as u64).to_le_bytes());
    let source = SourceInfo { id: 0, name: "lfw100".into(), class_offset: 0, classes: people.len() as u32, records: records.len() as u64 };
    let enc = EncodingInfo { format: Encoding::Jpeg, quality: Some(QUALITY), chroma: None, width: SIDE, height: SIDE };
    w.finish(Manifest::new(people.len() as u32, vec![source], None, enc), &labels)?;
    facekit_io::durable::write(&out.join("payloads.bin"), &blob)?;
    facekit_io::durable::write(&out.join("payloads.idx"), &idx)?;
    eprintln!("packed {} records, {:.1} KiB per JPEG", records.len(), blob.len() as f64 / records.len() as f64 / 1024.0);
    Ok(())
}

fn run(name: &str, workers: usize, epochs: u64, batch: usize, size: u32) -> Result<()> {
    let ds = Arc::new(Dataset::open_name(name, None)?);
    let augment = match std::env::var("LOADER_BENCH_AUGMENT") {
        Ok(spec) => {
            let v: Vec<f32> = spec.split(',').map(str::parse).collect::<Result<_, _>>().context("LOADER_BENCH_AUGMENT: three numbers")?;
            let [crop, color_jitter, grey] = v[..] else { bail!("LOADER_BENCH_AUGMENT needs CROP,JITTER,GREY") };
            Augment { flip: true, crop, color_jitter, grey }
        }
        Err(_) => Augment::default(),
    };
    let cfg = LoaderConfig {
        batch_size: batch,
        image_size: size,
        workers,
        prefetch: 2 * workers.max(1),
        drop_last: false,
        augment,
        ..LoaderConfig::default()
    };
    let loader = Loader::new(vec![ds], cfg)?;
    // One untimed epoch warms the page cache and the allocator, as a training run's first epoch would.
    let mut checksum = 0u64;
    for b in loader.epoch(0, 0) {
        checksum = checksum.wrapping_add(b?.images[0] as u64);
    }
    let t = Instant::now();
    let cpu0 = cpu_seconds()?;
    let mut images = 0u64;
    for e in 1..=epochs {
        for b in loader.epoch(e, 0) {
            let b = b?;
            images += b.n as u64;
            checksum = checksum.wrapping_add(b.images[b.images.len() / 2] as u64);
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds()? - cpu0;
    let rate = images as f64 / secs;
    println!(
        "{{\"impl\":\"facekit\",\"augment\":\"{augment:?}\",\"workers\":{workers},\"size\":{size},\"images\":{images},\"seconds\":{secs:.3},\"cpu_seconds\":{cpu:.3},\"images_per_s\":{rate:.1},\"images_per_cpu_s\":{:.1},\"checksum\":{checksum}}}",
        images as f64 / cpu
    );
    Ok(())
}

/// CPU time (user + system) of this process, all threads, from `/proc/self/stat`. The dev box is
/// shared with other builds, so CPU time, not wall time, is what "per core" can honestly mean.
fn cpu_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("cannot read /proc/self/stat")?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').context("unexpected /proc/self/stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    // USER_HZ is 100 on every Linux architecture facekit targets.
    Ok(ticks / 100.0)
}
