//! The audit's embedding caches: `STEM.npy` with `STEM.json` ([`CacheKey`]) once every record is
//! embedded, and, while embedding, `STEM.partial/`: the key with the chunk size (`key.json`) and
//! one `.npy` per `every` records (`000000.npy`, `000001.npy`, …), each written to a temporary
//! file and renamed, so that a run killed part-way leaves only whole chunks and the next run with
//! the same key continues after the last of them (docs/CURATE.md, "Resuming").

use super::{CacheKey, Network};
use crate::events::{Event, Observer};
use anyhow::{bail, Context, Result};
use image::RgbImage;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What `STEM.partial/key.json` holds: the finished cache's key and the records per chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PartialKey {
    #[serde(flatten)]
    key: CacheKey,
    every: usize,
}

/// The finished embeddings `STEM.npy` in `folder` when `STEM.json` says they are `key`'s.
pub fn complete(folder: &Path, stem: &str, key: &CacheKey) -> Option<Vec<f32>> {
    let bytes = std::fs::read(folder.join(format!("{stem}.json"))).ok()?;
    let old: CacheKey = serde_json::from_slice(&bytes).ok()?;
    if &old != key {
        return None;
    }
    let m = facekit_eval::npy::read_f32(&folder.join(format!("{stem}.npy"))).ok()?;
    (m.rows == key.records && m.cols == key.dim).then_some(m.data)
}

/// The folder of `stem`'s chunks in `folder`.
pub fn partial_dir(folder: &Path, stem: &str) -> PathBuf {
    folder.join(format!("{stem}.partial"))
}

fn chunk_path(dir: &Path, k: usize) -> PathBuf {
    dir.join(format!("{k:06}.npy"))
}

/// Where [`embed_resumable`] keeps its work: cache `stem` in `folder` for `key`, a chunk every
/// `every` records.
#[derive(Debug, Clone, Copy)]
pub struct Store<'a> {
    /// The audit folder.
    pub folder: &'a Path,
    /// The cache's file stem (`embeddings`).
    pub stem: &'a str,
    /// What is embedded.
    pub key: &'a CacheKey,
    /// Records per chunk.
    pub every: usize,
}

/// Embeds `key.records` images made by `image(i)` with `net`, saving every `every` records as a
/// chunk in [`partial_dir`]`(folder, stem)` and first taking back the whole chunks an earlier
/// run with the same key and chunk size left there (any other content of that folder is
/// removed). Every chunk is embedded on its own, so a resumed run computes exactly what an
/// uninterrupted one does. `events` hears [`Event::EmbeddingsResumed`] when chunks were taken
/// back, the faces' progress from the resumed count, and [`Event::EmbeddingsSaved`] after each
/// chunk.
pub fn embed_resumable(
    net: &Network,
    store: Store<'_>,
    batch_size: usize,
    events: &Observer,
    image: impl Fn(usize) -> Result<RgbImage> + Sync,
) -> Result<Vec<f32>> {
    let Store { folder, stem, key, every } = store;
    if every == 0 {
        bail!("the embeddings must be saved every 1 record or more");
    }
    let (n, dim) = (key.records, key.dim);
    let dir = partial_dir(folder, stem);
    let want = PartialKey { key: key.clone(), every };
    let mut out = taken_back(&dir, &want).unwrap_or_default();
    if out.is_empty() {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        facekit_io::durable::write_json(dir.join("key.json"), &want)?;
    }
    let done = out.len() / dim.max(1);
    if done > 0 {
        events.emit(Event::EmbeddingsResumed { folder: &dir, done: done as u64, total: n as u64 });
    }
    let work = crate::events::FaceWork::Embedding;
    events.emit(Event::FacesBegin { work, total: n as u64, done: done as u64 });
    // The network's own begin and end would restart the progress at each chunk.
    let inner = {
        let events = events.clone();
        Observer::new(move |e| {
            if let Event::FacesDone { .. } = e {
                events.emit(*e)
            }
        })
    };
    for start in (done..n).step_by(every) {
        let end = (start + every).min(n);
        let rows = net.embed(end - start, batch_size, &inner, |i| image(start + i))?;
        facekit_eval::npy::write_f32(&chunk_path(&dir, start / every), end - start, dim, &rows)?;
        out.extend(rows);
        events.emit(Event::EmbeddingsSaved { done: end as u64, total: n as u64 });
    }
    events.emit(Event::FacesEnd { work });
    Ok(out)
}

/// The rows of the whole chunks in `dir` when its key is `want`, after removing what is not one
/// of them (a chunk's temporary file, chunks after a missing or unreadable one); `None` when
/// there are none to take back.
fn taken_back(dir: &Path, want: &PartialKey) -> Option<Vec<f32>> {
    let bytes = std::fs::read(dir.join("key.json")).ok()?;
    let old: PartialKey = serde_json::from_slice(&bytes).ok()?;
    if &old != want {
        return None;
    }
    let (n, dim, every) = (want.key.records, want.key.dim, want.every);
    let mut out = Vec::new();
    let mut k = 0;
    while k * every < n {
        let rows = every.min(n - k * every);
        match facekit_eval::npy::read_f32(&chunk_path(dir, k)) {
            Ok(m) if m.rows == rows && m.cols == dim => out.extend(m.data),
            _ => break,
        }
        k += 1;
    }
    let kept: Vec<PathBuf> = (0..k).map(|j| chunk_path(dir, j)).chain([dir.join("key.json")]).collect();
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        if !kept.contains(&entry.path()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    (k > 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(records: usize) -> PartialKey {
        PartialKey {
            key: CacheKey { manifest_sha256: "m".into(), network_sha256: "n".into(), records, dim: 2 },
            every: 2,
        }
    }

    #[test]
    fn takes_back_whole_chunks_up_to_the_first_gap() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("e.partial");
        facekit_io::durable::write_json(dir.join("key.json"), &key(7)).unwrap();
        facekit_eval::npy::write_f32(&chunk_path(&dir, 0), 2, 2, &[1., 2., 3., 4.]).unwrap();
        facekit_eval::npy::write_f32(&chunk_path(&dir, 1), 2, 2, &[5., 6., 7., 8.]).unwrap();
        // A chunk of the wrong size (as a torn write would be) and one after it.
        facekit_eval::npy::write_f32(&chunk_path(&dir, 2), 1, 2, &[9., 9.]).unwrap();
        facekit_eval::npy::write_f32(&chunk_path(&dir, 3), 1, 2, &[9., 9.]).unwrap();
        std::fs::write(dir.join(".tmp-1-000002.npy"), b"torn").unwrap();
        assert_eq!(taken_back(&dir, &key(7)), Some(vec![1., 2., 3., 4., 5., 6., 7., 8.]));
        let mut left: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        left.sort();
        assert_eq!(left, ["000000.npy", "000001.npy", "key.json"]);
        // Another key (a different record count, chunk size or dataset) takes nothing back.
        assert_eq!(taken_back(&dir, &key(8)), None);
        assert_eq!(taken_back(&dir, &PartialKey { every: 3, ..key(7) }), None);
    }
}
