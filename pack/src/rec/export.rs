//! `facekit export rec`: a facekit dataset as insightface's `train.rec`, `train.idx` and
//! `property`, so that arcface_torch (and DALI's MXNet reader) train on it unchanged.
//!
//! insightface's layout: images at keys `1..=N` grouped by class in class order, each with
//! `IRHeader(0, class, key, 0)`; then one identity record per class (keys `N+1 ..`) holding its
//! key range; then record 0 holding the identity records' range. JPEG and PNG payloads are
//! copied as they are; raw payloads become PNG (lossless).
//!
//! The files of one export are committed together or not at all: they are written into a
//! temporary folder beside the output, which then replaces it ([`facekit_io::output::Held`]);
//! the output's lock is beside it too, never in what is delivered.

use crate::encode::encode;
use anyhow::{bail, Context, Result};
use facekit_recordio::{insightface, Property, RecWriter};
use facekit_shard::{Dataset, Encoding, RecordView};
use image::RgbImage;
use rayon::prelude::*;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The files an export folder holds: what a later export may replace. `.facekit-export.lock` is
/// the lock an earlier facekit left inside the folder.
pub const FILES: [&str; 5] = ["train.rec", "train.idx", "property", "skipped.tsv", ".facekit-export.lock"];

/// Everything `facekit export rec` needs.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The dataset to export (a name in `data_dir`, a base path or a manifest path).
    pub dataset: String,
    /// Folder where bare dataset names are looked up.
    pub data_dir: PathBuf,
    /// Output folder for `train.rec`, `train.idx` and `property`.
    pub out: PathBuf,
    /// Worker threads (for re-encoding raw payloads).
    pub threads: usize,
    /// Show a progress bar.
    pub progress: bool,
}

/// What an export wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    /// `train.rec`.
    pub rec: PathBuf,
    /// `train.idx`.
    pub idx: PathBuf,
    /// `property`.
    pub property: PathBuf,
    /// Image records written.
    pub images: u64,
    /// Identity records written (one per class).
    pub identities: u64,
    /// Records without a class, which insightface's layout cannot hold: not exported, listed in
    /// `skipped.tsv` in the output folder.
    pub skipped: u64,
    /// Image payloads re-encoded as PNG (raw records).
    pub reencoded: u64,
    /// Bytes of `train.rec`.
    pub rec_bytes: u64,
    /// Seconds it took.
    pub elapsed_s: f64,
}

/// Exports a dataset in insightface's RecordIO layout, replacing the output folder whole.
pub fn export_rec(opts: &ExportOptions) -> Result<ExportReport> {
    let started = Instant::now();
    let ds = Dataset::open_name(&opts.dataset, Some(&opts.data_dir))?;
    let held = facekit_io::output::hold(&opts.out, &format!("export folder {}", opts.out.display()), &[])?;
    let mut written = None;
    held.replace_dir(|dir| -> Result<()> {
        written = Some(write_export(&ds, opts, dir)?);
        Ok(())
    })?;
    let w = written.expect("written by a successful build");
    let rec = opts.out.join("train.rec");
    Ok(ExportReport {
        idx: rec.with_extension("idx"),
        rec,
        property: opts.out.join("property"),
        images: w.images,
        identities: w.identities,
        skipped: w.skipped,
        reencoded: w.reencoded,
        rec_bytes: w.rec_bytes,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

/// What [`write_export`] wrote.
struct Written {
    images: u64,
    identities: u64,
    skipped: u64,
    reencoded: u64,
    rec_bytes: u64,
}

/// Writes the export's files into the folder `out`.
fn write_export(ds: &Dataset, opts: &ExportOptions, out: &Path) -> Result<Written> {
    let m = ds.manifest();
    let classes = m.classes as u64;
    // Records grouped by class, in dataset order within a class: insightface's readers find an
    // identity's images as one key range.
    let class_ids = ds.class_ids();
    let mut order: Vec<Vec<u32>> = vec![Vec::new(); classes as usize];
    let mut skipped = Vec::new();
    for (i, c) in class_ids.iter().enumerate() {
        match c {
            Some(c) if (*c as u64) < classes => order[*c as usize].push(i as u32),
            _ => skipped.push(i),
        }
    }
    let images: u64 = order.iter().map(|v| v.len() as u64).sum();
    if images == 0 {
        bail!("dataset {} has no record with a class: nothing insightface could train on", opts.dataset);
    }
    let rec_path = out.join("train.rec");
    let mut writer = RecWriter::create(&rec_path)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads.max(1))
        .build()
        .context("cannot start worker threads")?;
    let bar = facekit_io::progress::items(images, "records");
    if !opts.progress {
        facekit_io::progress::hide(&bar);
    }
    let mut key = 1u64;
    let mut ranges = Vec::with_capacity(classes as usize);
    let mut reencoded = 0u64;
    let flat: Vec<(u32, u32)> =
        order.iter().enumerate().flat_map(|(c, v)| v.iter().map(move |&i| (c as u32, i))).collect();
    for (c, v) in order.iter().enumerate() {
        ranges.push((c, key, key + v.len() as u64));
        key += v.len() as u64;
    }
    let mut next_key = 1u64;
    for chunk in flat.chunks(1024) {
        let payloads: Vec<Result<(Vec<u8>, bool)>> = pool.install(|| {
            chunk
                .par_iter()
                .map(|&(_, i)| {
                    let r = ds.record(i as usize)?;
                    image_file_bytes(&r).with_context(|| {
                        format!("record {i} of {} ({})", opts.dataset, String::from_utf8_lossy(r.path))
                    })
                })
                .collect()
        });
        for (&(class, _), payload) in chunk.iter().zip(payloads) {
            let (bytes, converted) = payload?;
            reencoded += u64::from(converted);
            writer.write(next_key, &insightface::image_record(next_key, class as f32, &bytes))?;
            next_key += 1;
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let first_identity = next_key;
    for (c, first, end) in &ranges {
        writer.write(
            first_identity + *c as u64,
            &insightface::identity_record(first_identity + *c as u64, *first, *end),
        )?;
    }
    let end = first_identity + classes;
    writer.write(0, &insightface::header_record(first_identity, end))?;
    let written = writer.offset();
    writer.finish()?;
    Property { classes, height: m.encoding.height, width: m.encoding.width }.write(&out.join("property"))?;
    if !skipped.is_empty() {
        write_skipped(ds, &skipped, &out.join("skipped.tsv"))?;
    }
    Ok(Written { images, identities: classes, skipped: skipped.len() as u64, reencoded, rec_bytes: written })
}

/// The record's image as a file's bytes: JPEG and PNG as stored, raw pixels as PNG (lossless, so
/// the record's own pixels). The flag says whether it was re-encoded. Also what `eval make-bin
/// --dataset` stores.
pub fn image_file_bytes(r: &RecordView<'_>) -> Result<(Vec<u8>, bool)> {
    let (w, h) = (u32::from(r.header.width), u32::from(r.header.height));
    let enc = Encoding::from_code(r.header.encoding).context("unknown encoding")?;
    let pixels = match enc {
        Encoding::Jpeg | Encoding::Png => return Ok((r.payload.to_vec(), false)),
        Encoding::Raw => r.payload.to_vec(),
        Encoding::RawZstd => {
            zstd::bulk::decompress(r.payload, w as usize * h as usize * 3).context("damaged zstd payload")?
        }
    };
    let img = RgbImage::from_raw(w, h, pixels).context("raw payload does not match the record's size")?;
    Ok((encode(&img, Encoding::Png, 100)?, true))
}

fn write_skipped(ds: &Dataset, skipped: &[usize], path: &Path) -> Result<()> {
    let mut out = String::from("record\tpath\treason\n");
    for &i in skipped {
        let p = ds.record(i).map(|r| String::from_utf8_lossy(r.path).into_owned()).unwrap_or_default();
        out.push_str(&format!("{i}\t{}\tno class id (insightface's layout needs one)\n", facekit_io::tsv::field(&p)));
    }
    Ok(facekit_io::durable::write(path, out.as_bytes())?)
}
