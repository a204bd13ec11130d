//! The output of `facekit embed`: `embeddings.npy` (float32 `[N, dim]`, L2-normalised rows) and
//! `labels.tsv` (`index, class_id, identity, path, prepared`), read back by `eval verify
//! --embeddings` for all-pairs verification.

use anyhow::{bail, Context, Result};
use facekit_io::{bounded, durable, tsv};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// One line of `labels.tsv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The record's class id (datasets), `None` for photos from a folder.
    pub class: Option<u32>,
    /// The identity's name: the label map's, or the photo's folder.
    pub identity: String,
    /// The record's origin path, or the photo's path below the folder.
    pub path: String,
    /// How the face was prepared (`record`, `aligned`, `centre-crop-fallback`, ...).
    pub prepared: String,
}

/// Writes `embeddings.npy` and `labels.tsv` into `out` (each atomically).
pub fn write(out: &Path, emb: &[f32], dim: usize, rows: &[Row]) -> Result<()> {
    crate::npy::write_f32(&out.join("embeddings.npy"), rows.len(), dim, emb)?;
    let mut f = durable::AtomicFile::create(out.join("labels.tsv"))?;
    let mut text = String::from("index\tclass_id\tidentity\tpath\tprepared\n");
    for (i, r) in rows.iter().enumerate() {
        let class = r.class.map(|c| c.to_string()).unwrap_or_default();
        text.push_str(&format!("{i}\t{class}\t{}\t{}\t{}\n", tsv::field(&r.identity), tsv::field(&r.path), r.prepared));
    }
    f.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", out.join("labels.tsv").display()))?;
    Ok(f.commit()?)
}

/// Reads the identity label of every row of a `labels.tsv`, as a number that is equal for two
/// rows exactly when they are the same identity: the class id where there is one; for folder
/// photos (no class id) each distinct identity name gets its own number, counting on from the
/// largest class id, in order of first appearance (no hashing, so no two people can share one).
pub fn read_labels(path: &Path) -> Result<Vec<Option<u32>>> {
    let text = bounded::read_string(path, bounded::EMBEDDINGS)?;
    let mut rows: Vec<(Option<u32>, &str)> = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() < 3 {
            bail!("{} line {}: expected index, class_id, identity, ...", path.display(), n + 1);
        }
        let class = match cols[1] {
            "" => None,
            c => Some(
                c.parse::<u32>().with_context(|| format!("{} line {}: bad class id {c:?}", path.display(), n + 1))?,
            ),
        };
        rows.push((class, cols[2]));
    }
    let mut next = rows.iter().filter_map(|r| r.0).max().map_or(0, |m| m + 1);
    let mut by_name: HashMap<&str, u32> = HashMap::new();
    let mut out = Vec::with_capacity(rows.len());
    for (class, identity) in rows {
        out.push(match (class, identity) {
            (Some(c), _) => Some(c),
            (None, "") => None,
            (None, name) => Some(*by_name.entry(name).or_insert_with(|| {
                next += 1;
                next - 1
            })),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_folder_identity_gets_its_own_label() {
        let t = tempfile::tempdir().unwrap();
        // 100,000 names: 4 bytes of a hash would merge two of them (the birthday bound).
        let rows: Vec<Row> = (0..100_000)
            .map(|i| Row {
                class: None,
                identity: format!("person_{}", i / 2),
                path: format!("{i}.jpg"),
                prepared: "aligned".into(),
            })
            .collect();
        write(t.path(), &vec![0.0; rows.len()], 1, &rows).unwrap();
        let labels = read_labels(&t.path().join("labels.tsv")).unwrap();
        let distinct: std::collections::HashSet<_> = labels.iter().collect();
        assert_eq!(distinct.len(), 50_000);
        assert!(labels.chunks(2).all(|p| p[0] == p[1]));
    }
}
