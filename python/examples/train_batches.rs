//! Prints the training batches `facekit train` gets from a dataset, one JSON line per batch
//! (record numbers, labels, flips and the CRC-32 of the pixels), for `tests/test_loader.py` to
//! compare with `facekit.Loader`'s. The loader is configured as the trainer configures its
//! training loader (`facekit_train::trainer::setup`, `loader_cfg(true)`): shuffled, `--seed`,
//! flip on, drop_last, this rank of the world, the defaults for the rest.
//!
//! usage: train_batches DATASET BATCH_SIZE IMAGE_SIZE SEED RANK WORLD_SIZE EPOCH

use facekit_data::{Augment, Loader, LoaderConfig};
use facekit_shard::Dataset;
use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            facekit_io::console::line(&format!("train_batches: {e}"));
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dataset, batch, size, seed, rank, world, epoch] = args.as_slice() else {
        return Err("usage: train_batches DATASET BATCH_SIZE IMAGE_SIZE SEED RANK WORLD_SIZE EPOCH".into());
    };
    let cfg = LoaderConfig {
        batch_size: batch.parse()?,
        image_size: size.parse()?,
        workers: 2,
        prefetch: 4,
        shuffle: true,
        seed: seed.parse()?,
        augment: Augment::default(),
        rank: rank.parse()?,
        world_size: world.parse()?,
        drop_last: true,
        skip_corrupt: false,
        ..LoaderConfig::default()
    };
    let loader = Loader::new(vec![Arc::new(Dataset::open_name(dataset, None)?)], cfg)?;
    for b in loader.epoch(epoch.parse()?, 0) {
        let b = b?;
        let line = serde_json::json!({
            "indices": b.indices,
            "labels": b.class,
            "flipped": b.flipped,
            "crc32": crc32fast::hash(&b.images),
        });
        println!("{line}");
    }
    Ok(())
}
