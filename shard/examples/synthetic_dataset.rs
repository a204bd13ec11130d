//! Writes a synthetic dataset of random-payload records, for benchmarking the shard I/O path
//! (`scripts/bench-verify.sh`). Usage: `synthetic_dataset OUT_BASE TOTAL_MB [SHARD_MB]`.

use facekit_shard::manifest::{EncodingInfo, LabelEntry, LabelMap, SourceInfo};
use facekit_shard::{DatasetPaths, DatasetWriter, Encoding, Labels, Manifest, Record};
use rand::{Rng, SeedableRng};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() >= 3, "usage: synthetic_dataset OUT_BASE TOTAL_MB [SHARD_MB]");
    let total: u64 = args[2].parse::<u64>()? << 20;
    let shard: u64 = args.get(3).map(|s| s.parse::<u64>()).transpose()?.unwrap_or(256) << 20;
    let classes = 1000u32;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut w = DatasetWriter::create(DatasetPaths::new(&args[1]), shard)?;
    let mut written = 0u64;
    let mut i = 0u64;
    // Payloads of 10-30 KB, the size of a 224x224 JPEG at quality 95.
    let mut payload = vec![0u8; 30_000];
    rng.fill(&mut payload[..]);
    while written < total {
        let len = rng.random_range(10_000..30_000);
        payload[0..8].copy_from_slice(&i.to_le_bytes());
        let rec = Record {
            labels: Labels { class_id: Some((i % classes as u64) as u32), source: 0, gender: None, age: None },
            encoding: Encoding::Jpeg,
            width: 224,
            height: 224,
            origin_sha256: [0; 16],
            path: format!("id{}/{}.jpg", i % classes as u64, i),
            data: payload[..len].to_vec(),
        };
        w.push(&rec)?;
        written += len as u64 + 80;
        i += 1;
    }
    let labels = LabelMap {
        entries: (0..classes)
            .map(|c| LabelEntry { class_id: c, source: "synthetic".into(), identity: format!("id{c}") })
            .collect(),
    };
    let m = Manifest::new(
        classes,
        vec![SourceInfo { id: 0, name: "synthetic".into(), class_offset: 0, classes, records: i }],
        None,
        EncodingInfo { format: Encoding::Jpeg, quality: Some(95), chroma: None, width: 224, height: 224 },
    );
    let m = w.finish(m, &labels)?;
    println!("{} records in {} shards", m.records, m.shards.len());
    Ok(())
}
