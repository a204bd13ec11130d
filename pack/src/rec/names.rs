//! `facekit import rec --names FILE`: the identity names of an imported dataset's classes, which
//! a `.rec` does not hold (its labels are bare numbers).
//!
//! Two forms are read:
//! - one name per line, line `k` naming class `k - 1` (what insightface-style sets that ship
//!   names carry, and what `cut -f3` of a label map gives);
//! - a facekit label map (`NAME.labels.tsv`, the header `class_id<TAB>source<TAB>identity`
//!   first), so that a dataset exported with `export rec` gets its names back on import.
//!
//! Every class needs a name, once: an empty line, a duplicate name or a count other than the
//! dataset's classes is an error naming the file and the line.

use anyhow::{bail, Result};
use facekit_shard::manifest::LabelMap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The first line of a facekit label map.
const LABEL_MAP_HEADER: &str = "class_id\tsource\tidentity";

/// The names of classes `0..len`, read from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityNames {
    /// The file read, for messages.
    pub file: PathBuf,
    /// Class `k`'s name at index `k`.
    pub names: Vec<String>,
    /// The line of the file holding class 0's name (2 in a label map, after its header).
    first_line: usize,
}

impl IdentityNames {
    /// Reads and checks a names file (see the module documentation).
    pub fn read(path: &Path) -> Result<Self> {
        let text = facekit_io::bounded::read_string(path, facekit_io::bounded::LABEL_MAP)?;
        Self::parse(&text, path)
    }

    /// Parses the text of a names file; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let file = path.to_path_buf();
        let at = |line: usize| format!("names file {} line {line}", path.display());
        let (names, first_line) = if text.lines().next().map(|l| l.trim_end_matches('\r')) == Some(LABEL_MAP_HEADER) {
            let map = LabelMap::parse(text)
                .map_err(|why| anyhow::anyhow!("names file {} is not a valid label map: {why}", path.display()))?;
            (map.entries.into_iter().map(|e| e.identity).collect::<Vec<_>>(), 2)
        } else {
            let mut names = Vec::new();
            for (i, line) in text.lines().enumerate() {
                let line = line.strip_suffix('\r').unwrap_or(line);
                if line.contains('\t') {
                    bail!(
                        "{}: holds a tab; a names file has one name per line, line k naming class k-1 \
                         (no class ids), or is a facekit label map",
                        at(i + 1)
                    );
                }
                names.push(line.to_string());
            }
            (names, 1)
        };
        let mut seen: HashMap<&str, usize> = HashMap::with_capacity(names.len());
        for (k, name) in names.iter().enumerate() {
            let line = k + first_line;
            if name.trim().is_empty() {
                bail!("{}: empty name for class {k}; every class needs a name", at(line));
            }
            if let Some(first) = seen.insert(name, line) {
                bail!(
                    "{}: the name {name:?} of class {k} is already on line {first}; identity names must be unique",
                    at(line)
                );
            }
        }
        if names.is_empty() {
            bail!("names file {} holds no name", path.display());
        }
        Ok(IdentityNames { file, names, first_line })
    }

    /// Number of names (and so of classes).
    pub fn len(&self) -> u32 {
        u32::try_from(self.names.len()).unwrap_or(u32::MAX)
    }

    /// True when there is no name (never, once read).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Refuses a count other than the dataset's `classes`, which `what` says where they came from.
    pub fn check_count(&self, classes: u32, what: &str) -> Result<()> {
        if self.len() != classes {
            bail!(
                "names file {} names {} classes (lines {} to {}), but {what} has {classes}: one name per class id is needed",
                self.file.display(),
                self.names.len(),
                self.first_line,
                self.first_line + self.names.len() - 1
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<IdentityNames> {
        IdentityNames::parse(text, Path::new("ids.txt"))
    }

    #[test]
    fn one_name_per_line_or_a_label_map_give_the_same_names() {
        let plain = parse("alice\r\nbob\ncarol\n").unwrap();
        assert_eq!(plain.names, ["alice", "bob", "carol"]);
        let map = parse("class_id\tsource\tidentity\n0\tlfw\talice\n1\tlfw\tbob\n2\tlfw\tcarol\n").unwrap();
        assert_eq!(map.names, plain.names);
        let e = map.check_count(4, "property").unwrap_err().to_string();
        assert!(e.contains("ids.txt") && e.contains("3 classes (lines 2 to 4)") && e.contains("has 4"), "{e}");
    }

    #[test]
    fn an_empty_line_a_duplicate_or_a_tab_names_the_file_and_line() {
        for (text, says) in [
            ("alice\n\nbob\n", "ids.txt line 2: empty name for class 1"),
            ("alice\nbob\nalice\n", "ids.txt line 3: the name \"alice\" of class 2 is already on line 1"),
            ("0\talice\n", "ids.txt line 1: holds a tab"),
            ("", "holds no name"),
            ("class_id\tsource\tidentity\n0\ta\tx\n2\ta\ty\n", "not a valid label map"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }
}
