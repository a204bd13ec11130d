//! `--landmarks FILE`: known 5-point landmarks, so that those images skip face detection.
//!
//! One face per line: `path [label] x1 y1 x2 y2 x3 y3 x4 y4 x5 y5`, points in the original image's
//! pixels, in insightface order (left eye, right eye, nose tip, left mouth corner, right mouth
//! corner). `path` is relative to the input root (`Abdullah_Gul/Abdullah_Gul_0001.jpg`), or
//! absolute. Fields are separated by tabs when the line has any (so paths may hold spaces), else by
//! whitespace. The optional integer `label` is accepted for compatibility with insightface lists and
//! ignored: class ids always come from the folders. Empty lines and lines starting with `#` are skipped.

use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::Path;

/// Five landmark points, `[x, y]` in source-image pixels, insightface order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KnownLandmarks(pub [[f64; 2]; 5]);

/// Landmarks by path key.
#[derive(Debug, Default)]
pub struct LandmarkTable {
    by_key: HashMap<String, KnownLandmarks>,
}

impl LandmarkTable {
    /// Reads and checks a landmarks file; errors name the file and line.
    pub fn read(path: &Path) -> Result<Self> {
        let text = facekit_io::bounded::read_string(path, facekit_io::bounded::TABLE)
            .context("cannot read the landmarks file")?;
        Self::parse(&text).with_context(|| format!("landmarks file {}", path.display()))
    }

    /// Parses the text of a landmarks file.
    pub fn parse(text: &str) -> Result<Self> {
        let mut by_key = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let fields: Vec<&str> =
                if line.contains('\t') { line.split('\t').collect() } else { line.split_whitespace().collect() };
            let n = fields.len();
            if n != 11 && n != 12 {
                bail!("line {}: expected `path [label] x1 y1 ... x5 y5` (11 or 12 fields), found {n}", i + 1);
            }
            if n == 12 && fields[1].trim().parse::<i64>().is_err() {
                bail!("line {}: label '{}' is not an integer", i + 1, fields[1]);
            }
            let mut pts = [[0f64; 2]; 5];
            for (k, v) in fields[n - 10..].iter().enumerate() {
                let x: f64 = v
                    .trim()
                    .parse()
                    .ok()
                    .filter(|x: &f64| x.is_finite())
                    .with_context(|| format!("line {}: coordinate '{v}' is not a number", i + 1))?;
                pts[k / 2][k % 2] = x;
            }
            let key = fields[0].trim().to_string();
            if key.is_empty() {
                bail!("line {}: empty path", i + 1);
            }
            if by_key.insert(key.clone(), KnownLandmarks(pts)).is_some() {
                bail!("line {}: '{key}' appears twice", i + 1);
            }
        }
        Ok(LandmarkTable { by_key })
    }

    /// The landmarks of the file with root-relative path `rel` (or absolute path `abs`).
    pub fn get(&self, rel: &str, abs: &Path) -> Option<KnownLandmarks> {
        self.by_key.get(rel).or_else(|| abs.to_str().and_then(|a| self.by_key.get(a))).copied()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True when the file had no entries.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_with_and_without_label_parse() {
        let t = LandmarkTable::parse(
            "# comment\na/1.jpg 1 2 3 4 5 6 7 8 9 10\nb c/2.jpg\t7\t1\t2\t3\t4\t5\t6\t7\t8\t9\t10.5\n",
        )
        .unwrap();
        assert_eq!(t.len(), 2);
        let p = t.get("b c/2.jpg", Path::new("/x")).unwrap();
        assert_eq!(p.0[4], [9.0, 10.5]);
        assert_eq!(t.get("a/1.jpg", Path::new("/x")).unwrap().0[0], [1.0, 2.0]);
    }

    #[test]
    fn malformed_lines_are_reported_with_their_number() {
        let err = LandmarkTable::parse("a.jpg 1 2 3\n").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
        let err = LandmarkTable::parse("a.jpg 1 2 3 4 5 6 7 8 9 10\nb.jpg 1 2 3 4 5 6 7 8 9 x\n").unwrap_err();
        assert!(err.to_string().contains("line 2") && err.to_string().contains("'x'"), "{err}");
        let err = LandmarkTable::parse("a.jpg 1 2 3 4 5 6 7 8 9 10\na.jpg 1 2 3 4 5 6 7 8 9 10\n").unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
    }
}
