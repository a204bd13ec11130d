//! Benchmark helper for `scripts/bench-loader.sh`: packs lfw100 photos into JPEG q95 datasets
//! without dlib (plain resize, no alignment: the loader's cost does not depend on what the face
//! looks like), times the loader over them, and times raw decoding of the same payloads.
//!
//! - `loader_bench pack <lfw100> <out-dir> [copies]` writes datasets `<out-dir>/bench224` (224x224
//!   chips) and `<out-dir>/bench112` (stored 112x112 chips), plus `payloads224.bin/.idx` and
//!   `payloads112.bin/.idx` (the same JPEG bytes, concatenated, with little-endian u64 offsets)
//!   for the raw decoders here and `scripts/loader_reference.py`. With `copies` > 1 the photos
//!   are stored that many times (as new identities), for a dataset larger than memory.
//! - `loader_bench run <dataset> <workers> <epochs> <batch> <size>` times the loader; one JSON line.
//!   `LOADER_BENCH_AUGMENT=CROP,JITTER,GREY` (for example `0.1,0.2,0.1`) also applies
//!   `--random-crop`, `--color-jitter` and `--grey-prob`; `LOADER_BENCH_ORDER=quasi:WINDOW` uses
//!   the quasi-random order and `LOADER_BENCH_FETCH=read-ahead` the read-ahead;
//!   `LOADER_BENCH_WARM=0` skips the untimed warm-up epoch (for out-of-core runs).
//! - `loader_bench raw <payloads-prefix> <threads> <epochs> <turbo|zune>` decodes every payload
//!   with libjpeg-turbo or zune-jpeg into a reused buffer, records split over the threads: the
//!   decoder alone, what the loader is measured against. One JSON line.
//! - `loader_bench compare <payloads-prefix> [pixels-out]` decodes every payload with both
//!   decoders and reports how far apart their pixels are (one JSON line); with `pixels-out` it
//!   also writes libjpeg-turbo's pixels, concatenated, for a comparison with Pillow.

use anyhow::{bail, Context, Result};
use facekit_data::{Augment, Fetch, Loader, LoaderConfig, Order};
use facekit_pack::encode as codec;
use facekit_shard::manifest::{EncodingInfo, LabelEntry, LabelMap, SourceInfo};
use facekit_shard::{Dataset, DatasetPaths, DatasetWriter, Encoding, Labels, Manifest, Record};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

const QUALITY: u8 = 95;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("pack") if args.len() == 3 || args.len() == 4 => {
            let copies = args.get(3).map_or(Ok(1), |c| c.parse()).context("copies: a number")?;
            pack(Path::new(&args[1]), Path::new(&args[2]), copies)
        }
        Some("run") if args.len() == 6 => {
            run(&args[1], args[2].parse()?, args[3].parse()?, args[4].parse()?, args[5].parse()?)
        }
        Some("raw") if args.len() == 5 => raw(&args[1], args[2].parse()?, args[3].parse()?, &args[4]),
        Some("compare") if args.len() == 2 || args.len() == 3 => compare(&args[1], args.get(2).map(Path::new)),
        _ => bail!(
            "usage: loader_bench pack <lfw100> <out-dir> [copies] | run <dataset> <workers> <epochs> <batch> <size> \
             | raw <payloads-prefix> <threads> <epochs> <turbo|zune> | compare <payloads-prefix> [pixels-out]"
        ),
    }
}

/// One photo to pack: its class and path.
type Job = (u32, PathBuf);

/// The lfw100 photos as (class, path), people in name order, and the label map of `copies`
/// copies of them.
fn photos(lfw: &Path, copies: usize) -> Result<(Vec<Job>, LabelMap, u32)> {
    let mut people: Vec<PathBuf> = std::fs::read_dir(lfw)
        .with_context(|| format!("cannot list {}", lfw.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    people.sort();
    let mut jobs = Vec::new();
    let mut labels = LabelMap::default();
    for (class, person) in people.iter().enumerate() {
        let mut photos: Vec<PathBuf> =
            std::fs::read_dir(person)?.map(|e| e.map(|e| e.path())).collect::<std::io::Result<_>>()?;
        photos.sort();
        jobs.extend(photos.into_iter().map(|p| (class as u32, p)));
    }
    let classes = (people.len() * copies) as u32;
    for copy in 0..copies {
        for (class, person) in people.iter().enumerate() {
            let name = person.file_name().unwrap_or_default().to_string_lossy().into_owned();
            let identity = if copy == 0 { name } else { format!("{name}#{copy}") };
            labels.entries.push(LabelEntry {
                class_id: (copy * people.len() + class) as u32,
                source: "lfw100".into(),
                identity,
            });
        }
    }
    Ok((jobs, labels, classes))
}

fn pack(lfw: &Path, out: &Path, copies: usize) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let (jobs, labels, classes) = photos(lfw, copies.max(1))?;
    let people = classes / copies.max(1) as u32;
    for side in [224u32, 112] {
        let records: Vec<Record> = jobs
            .par_iter()
            .map(|(class, path)| -> Result<Record> {
                let img = image::open(path).with_context(|| format!("cannot read {}", path.display()))?.into_rgb8();
                let img = image::imageops::resize(&img, side, side, image::imageops::FilterType::Triangle);
                Ok(Record {
                    labels: Labels { class_id: Some(*class), ..Labels::default() },
                    encoding: Encoding::Jpeg,
                    width: side as u16,
                    height: side as u16,
                    origin_sha256: [0; 16],
                    path: path.strip_prefix(lfw).unwrap_or(path).to_string_lossy().into_owned(),
                    data: codec::encode(&img, Encoding::Jpeg, QUALITY)?,
                })
            })
            .collect::<Result<_>>()?;
        let paths = DatasetPaths::new(out.join(format!("bench{side}")));
        let mut w = DatasetWriter::create(paths, 64 << 20)?;
        let (mut blob, mut idx) = (Vec::new(), Vec::new());
        for copy in 0..copies.max(1) as u32 {
            for r in &records {
                let class = r.labels.class_id.map(|c| c + copy * people);
                w.push(&Record { labels: Labels { class_id: class, ..r.labels }, ..r.clone() })?;
            }
        }
        for r in &records {
            idx.extend_from_slice(&(blob.len() as u64).to_le_bytes());
            blob.extend_from_slice(&r.data);
        }
        idx.extend_from_slice(&(blob.len() as u64).to_le_bytes());
        let n = records.len() as u64 * copies.max(1) as u64;
        let source = SourceInfo { id: 0, name: "lfw100".into(), class_offset: 0, classes, records: n };
        let enc =
            EncodingInfo { format: Encoding::Jpeg, quality: Some(QUALITY), chroma: None, width: side, height: side };
        w.finish(Manifest::new(classes, vec![source], None, enc), &labels)?;
        facekit_io::durable::write(out.join(format!("payloads{side}.bin")), &blob)?;
        facekit_io::durable::write(out.join(format!("payloads{side}.idx")), &idx)?;
        facekit_io::console::line(&format!(
            "packed {n} records of {side}x{side}, {:.1} KiB per JPEG",
            blob.len() as f64 / records.len() as f64 / 1024.0
        ));
    }
    Ok(())
}

/// The order and fetch `LOADER_BENCH_ORDER` and `LOADER_BENCH_FETCH` ask for.
fn stages() -> Result<(Order, Fetch)> {
    let order = match std::env::var("LOADER_BENCH_ORDER").ok().as_deref() {
        None | Some("global") => Order::Global,
        Some(s) => match s.strip_prefix("quasi:") {
            Some(w) => Order::QuasiRandom { window: w.parse().context("LOADER_BENCH_ORDER=quasi:WINDOW")? },
            None => bail!("LOADER_BENCH_ORDER is global or quasi:WINDOW, not {s}"),
        },
    };
    let fetch = match std::env::var("LOADER_BENCH_FETCH").ok().as_deref() {
        None | Some("mapped") => Fetch::Mapped,
        Some("read-ahead") => Fetch::READ_AHEAD,
        Some(s) => bail!("LOADER_BENCH_FETCH is mapped or read-ahead, not {s}"),
    };
    Ok((order, fetch))
}

fn run(name: &str, workers: usize, epochs: u64, batch: usize, size: u32) -> Result<()> {
    let ds = Arc::new(Dataset::open_name(name, None)?);
    let augment = match std::env::var("LOADER_BENCH_AUGMENT") {
        Ok(spec) => {
            let v: Vec<f32> = spec
                .split(',')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .context("LOADER_BENCH_AUGMENT: three numbers")?;
            let [crop, color_jitter, grey] = v[..] else { bail!("LOADER_BENCH_AUGMENT needs CROP,JITTER,GREY") };
            Augment { flip: true, crop, color_jitter, grey }
        }
        Err(_) => Augment::default(),
    };
    let (order, fetch) = stages()?;
    let cfg = LoaderConfig {
        batch_size: batch,
        image_size: size,
        workers,
        prefetch: 2 * workers.max(1),
        drop_last: false,
        augment,
        order,
        fetch,
        ..LoaderConfig::default()
    };
    let loader = Loader::new(vec![ds], cfg)?;
    let mut checksum = 0u64;
    // One untimed epoch warms the page cache and the allocator, as a training run's first epoch would.
    if std::env::var("LOADER_BENCH_WARM").as_deref() != Ok("0") {
        for b in loader.epoch(0, 0) {
            checksum = checksum.wrapping_add(b?.images[0] as u64);
        }
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
    println!(
        "{{\"impl\":\"facekit\",\"order\":\"{order:?}\",\"fetch\":\"{fetch:?}\",\"augment\":\"{augment:?}\",\"workers\":{workers},\"size\":{size},\"images\":{images},\"seconds\":{secs:.3},\"cpu_seconds\":{cpu:.3},\"images_per_s\":{:.1},\"images_per_cpu_s\":{:.1},\"checksum\":{checksum}}}",
        images as f64 / secs,
        images as f64 / cpu
    );
    Ok(())
}

/// The payloads of `prefix.bin` / `prefix.idx`.
fn payloads(prefix: &str) -> Result<Vec<Vec<u8>>> {
    let blob = std::fs::read(format!("{prefix}.bin")).with_context(|| format!("cannot read {prefix}.bin"))?;
    let idx = std::fs::read(format!("{prefix}.idx")).with_context(|| format!("cannot read {prefix}.idx"))?;
    let offsets: Vec<usize> = idx.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap()) as usize).collect();
    Ok(offsets.windows(2).map(|w| blob[w[0]..w[1]].to_vec()).collect())
}

fn raw(prefix: &str, threads: usize, epochs: u64, decoder: &str) -> Result<()> {
    let all = payloads(prefix)?;
    if !matches!(decoder, "turbo" | "zune") {
        bail!("decoder is turbo or zune, not {decoder}");
    }
    let header = turbojpeg::read_header(&all[0])?;
    let (w, h) = (header.width, header.height);
    let t = Instant::now();
    let cpu0 = cpu_seconds()?;
    let checksum: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|k| {
                let mine: Vec<&Vec<u8>> = all.iter().skip(k).step_by(threads.max(1)).collect();
                s.spawn(move || decode_loop(&mine, w, h, epochs, decoder, &mut vec![0u8; w * h * 3]))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("decode thread")).sum::<Result<u64>>()
    })?;
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds()? - cpu0;
    let images = all.len() as u64 * epochs;
    println!(
        "{{\"impl\":\"raw-{decoder}\",\"workers\":{threads},\"size\":{w},\"images\":{images},\"seconds\":{secs:.3},\"cpu_seconds\":{cpu:.3},\"images_per_s\":{:.1},\"images_per_cpu_s\":{:.1},\"checksum\":{checksum}}}",
        images as f64 / secs,
        images as f64 / cpu
    );
    Ok(())
}

fn compare(prefix: &str, pixels_out: Option<&Path>) -> Result<()> {
    let all = payloads(prefix)?;
    let header = turbojpeg::read_header(&all[0])?;
    let (w, h) = (header.width, header.height);
    let (mut turbo, mut zune) = (vec![0u8; w * h * 3], vec![0u8; w * h * 3]);
    let (mut sum, mut max, mut differing, mut identical_images) = (0u64, 0u8, 0u64, 0u64);
    let mut dump = Vec::new();
    for p in &all {
        decode_loop(&[p], w, h, 1, "turbo", &mut turbo)?;
        decode_loop(&[p], w, h, 1, "zune", &mut zune)?;
        let mut same = true;
        for (a, b) in turbo.iter().zip(&zune) {
            let d = a.abs_diff(*b);
            sum += u64::from(d);
            max = max.max(d);
            differing += u64::from(d != 0);
            same &= d == 0;
        }
        identical_images += u64::from(same);
        if pixels_out.is_some() {
            dump.extend_from_slice(&turbo);
        }
    }
    if let Some(path) = pixels_out {
        facekit_io::durable::write(path, &dump)?;
    }
    let bytes = (all.len() * w * h * 3) as f64;
    println!(
        "{{\"compare\":\"libjpeg-turbo vs zune-jpeg\",\"size\":{w},\"images\":{},\"identical_images\":{identical_images},\"mean_abs_diff\":{:.4},\"max_abs_diff\":{max},\"differing_bytes\":{:.4}}}",
        all.len(),
        sum as f64 / bytes,
        differing as f64 / bytes
    );
    Ok(())
}

/// Decodes `payloads` `epochs` times into one reused RGB buffer.
fn decode_loop(payloads: &[&Vec<u8>], w: usize, h: usize, epochs: u64, decoder: &str, out: &mut [u8]) -> Result<u64> {
    let mut turbo = turbojpeg::Decompressor::new()?;
    let mut checksum = 0u64;
    for _ in 0..epochs {
        for p in payloads {
            if decoder == "turbo" {
                let image = turbojpeg::Image {
                    pixels: &mut *out,
                    width: w,
                    pitch: w * 3,
                    height: h,
                    format: turbojpeg::PixelFormat::RGB,
                };
                turbo.decompress(p, image)?;
            } else {
                let opts = zune_core::options::DecoderOptions::default()
                    .jpeg_set_out_colorspace(zune_core::colorspace::ColorSpace::RGB);
                let mut dec =
                    zune_jpeg::JpegDecoder::new_with_options(zune_core::bytestream::ZCursor::new(p.as_slice()), opts);
                dec.decode_into(out).map_err(|e| anyhow::anyhow!("zune-jpeg: {e:?}"))?;
            }
            checksum = checksum.wrapping_add(out[out.len() / 2] as u64);
        }
    }
    Ok(checksum)
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
