//! Input layouts: which folders are sources and identities, and the class ids they get.
//!
//! A root is classified by one rule, looking only at its non-hidden entries (names not starting
//! with `.`):
//! - **flat**: the root holds no folders. Every file is a face of an unknown identity
//!   (`class_id` unknown), for example UTKFace; the source is named after the root folder.
//! - **multi-source**: the root holds no files, and every one of its folders is non-empty and holds
//!   only folders. Each folder is a source (`root/msra/<identity>/...`).
//! - **identities**: anything else. Each folder is an identity (`root/<identity>/...`); the source is
//!   named after the root folder.
//!
//! Sources are numbered in command-line order of their roots, and by sorted folder name within a
//! multi-source root. Each source gets the next disjoint range of class ids, its identities in
//! sorted order.

use anyhow::{bail, Context, Result};
use facekit_shard::manifest::{LabelEntry, LabelMap, SourceInfo};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

/// How one root folder is organised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum RootLayout {
    /// `root/<identity>/<files>`.
    Identities,
    /// `root/<source>/<identity>/<files>`.
    MultiSource,
    /// `root/<files>`, identities unknown.
    Flat,
}

/// One input root and its layout.
#[derive(Debug, Clone)]
pub struct Root {
    /// The folder as given.
    pub dir: PathBuf,
    /// How it is organised.
    pub layout: RootLayout,
}

/// One source: a collection of identities with its own class-id range.
#[derive(Debug, Clone)]
pub struct Source {
    /// Source number (index into the manifest's sources).
    pub id: u16,
    /// Source name: the root folder's name, or the source folder's name in a multi-source root.
    pub name: String,
    /// Index of the root this source comes from.
    pub root: usize,
    /// Identity folder names, sorted; empty for a flat root.
    pub identities: Vec<OsString>,
    /// First class id of this source.
    pub class_offset: u32,
}

impl Source {
    /// The class id of identity folder `name`, if it is one of this source's identities.
    pub fn class_of(&self, name: &std::ffi::OsStr) -> Option<u32> {
        self.identities.binary_search_by(|i| i.as_os_str().cmp(name)).ok().map(|i| self.class_offset + i as u32)
    }
}

/// All roots, sources and class ranges of one pack.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The roots, in command-line order.
    pub roots: Vec<Root>,
    /// The sources, in class-id order.
    pub sources: Vec<Source>,
    /// Total number of identity classes.
    pub classes: u32,
}

impl Plan {
    /// Classifies every root and assigns sources and class ids.
    pub fn scan(dirs: &[PathBuf]) -> Result<Plan> {
        let mut roots = Vec::new();
        let mut sources: Vec<Source> = Vec::new();
        let mut next_class: u64 = 0;
        for (ri, dir) in dirs.iter().enumerate() {
            let listing = Listing::read(dir)?;
            let layout = listing.layout(dir)?;
            let mut add = |name: String, identities: Vec<OsString>| -> Result<()> {
                if sources.iter().any(|s| s.name == name) {
                    bail!(
                        "two sources are named '{name}' (the second from {}): sources need distinct folder names",
                        dir.display()
                    );
                }
                let id = u16::try_from(sources.len()).context("more than 65535 sources")?;
                let class_offset =
                    u32::try_from(next_class).ok().filter(|&c| c < u32::MAX).context("too many identities")?;
                next_class += identities.len() as u64;
                sources.push(Source { id, name, root: ri, identities, class_offset });
                Ok(())
            };
            match layout {
                RootLayout::Flat => add(root_name(dir)?, Vec::new())?,
                RootLayout::Identities => add(root_name(dir)?, listing.dirs.clone())?,
                RootLayout::MultiSource => {
                    for src in &listing.dirs {
                        let idents = Listing::read(&dir.join(src))?.dirs;
                        add(src.to_string_lossy().into_owned(), idents)?;
                    }
                }
            }
            roots.push(Root { dir: dir.clone(), layout });
        }
        let classes = u32::try_from(next_class).ok().filter(|&c| c < u32::MAX).context("too many identities")?;
        Ok(Plan { roots, sources, classes })
    }

    /// The label map: one line per identity, in class-id order.
    pub fn label_map(&self) -> LabelMap {
        let mut entries = Vec::with_capacity(self.classes as usize);
        for s in &self.sources {
            for (i, ident) in s.identities.iter().enumerate() {
                entries.push(LabelEntry {
                    class_id: s.class_offset + i as u32,
                    source: s.name.clone(),
                    identity: ident.to_string_lossy().into_owned(),
                });
            }
        }
        LabelMap { entries }
    }

    /// The manifest's source list, given the number of records packed per source.
    pub(crate) fn source_infos(&self, records: &[u64]) -> Vec<SourceInfo> {
        self.sources
            .iter()
            .map(|s| SourceInfo {
                id: s.id,
                name: s.name.clone(),
                class_offset: s.class_offset,
                classes: s.identities.len() as u32,
                records: records.get(s.id as usize).copied().unwrap_or(0),
            })
            .collect()
    }

    /// The source called `name` within root `root`.
    pub(crate) fn source_in(&self, root: usize, name: &std::ffi::OsStr) -> Option<&Source> {
        self.sources.iter().find(|s| s.root == root && std::ffi::OsStr::new(&s.name) == name)
    }

    /// The single source of a flat or identities root.
    pub(crate) fn only_source(&self, root: usize) -> Option<&Source> {
        self.sources.iter().find(|s| s.root == root)
    }
}

/// The non-hidden folders and files directly inside a folder, sorted.
struct Listing {
    dirs: Vec<OsString>,
    files: usize,
}

impl Listing {
    fn read(dir: &Path) -> Result<Listing> {
        let entries = fs::read_dir(dir).with_context(|| format!("cannot list input folder {}", dir.display()))?;
        let mut dirs = Vec::new();
        let mut files = 0;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list input folder {}", dir.display()))?;
            let name = entry.file_name();
            if is_hidden(&name) {
                continue;
            }
            // Follow symlinks: datasets are often assembled from links to other disks.
            match fs::metadata(entry.path()) {
                Ok(m) if m.is_dir() => dirs.push(name),
                _ => files += 1,
            }
        }
        dirs.sort();
        Ok(Listing { dirs, files })
    }

    fn layout(&self, dir: &Path) -> Result<RootLayout> {
        if self.dirs.is_empty() {
            return Ok(RootLayout::Flat);
        }
        if self.files > 0 {
            return Ok(RootLayout::Identities);
        }
        for d in &self.dirs {
            let inner = Listing::read(&dir.join(d))?;
            if inner.files > 0 || inner.dirs.is_empty() {
                return Ok(RootLayout::Identities);
            }
        }
        Ok(RootLayout::MultiSource)
    }
}

/// Names starting with `.` (`.DS_Store`, `.git`, facekit's own `.tmp-*` files) are not layout.
pub(crate) fn is_hidden(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().first() == Some(&b'.')
}

fn root_name(dir: &Path) -> Result<String> {
    let canon = dir.canonicalize().with_context(|| format!("cannot resolve input folder {}", dir.display()))?;
    Ok(canon.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "root".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"x").unwrap();
    }

    #[test]
    fn roots_are_classified_by_the_documented_rule() {
        let t = tempfile::tempdir().unwrap();
        let flat = t.path().join("flat");
        touch(&flat.join("a.jpg"));
        let ids = t.path().join("ids");
        touch(&ids.join("bob/1.jpg"));
        touch(&ids.join("amy/1.jpg"));
        let multi = t.path().join("multi");
        touch(&multi.join("msra/m1/1.jpg"));
        touch(&multi.join("celebrity/c1/1.jpg"));
        touch(&multi.join("celebrity/c0/1.jpg"));
        touch(&multi.join(".DS_Store"));
        let plan = Plan::scan(&[flat, ids, multi]).unwrap();
        let layouts: Vec<_> = plan.roots.iter().map(|r| r.layout).collect();
        assert_eq!(layouts, [RootLayout::Flat, RootLayout::Identities, RootLayout::MultiSource]);
        let names: Vec<_> = plan.sources.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["flat", "ids", "celebrity", "msra"]);
        let offsets: Vec<_> = plan.sources.iter().map(|s| s.class_offset).collect();
        assert_eq!(offsets, [0, 0, 2, 4]);
        assert_eq!(plan.classes, 5);
        let labels = plan.label_map();
        assert_eq!(labels.identity(0), Some("amy"));
        assert_eq!(labels.identity(3), Some("c1"));
        assert_eq!(labels.identity(4), Some("m1"));
    }

    #[test]
    fn duplicate_source_names_are_refused() {
        let t = tempfile::tempdir().unwrap();
        touch(&t.path().join("a/lfw/x/1.jpg"));
        touch(&t.path().join("b/lfw/y/1.jpg"));
        let err = Plan::scan(&[t.path().join("a/lfw"), t.path().join("b/lfw")]).unwrap_err();
        assert!(format!("{err:#}").contains("two sources are named 'lfw'"), "{err:#}");
    }
}
