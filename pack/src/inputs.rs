//! The input stream: every file under every root, in one deterministic order (roots in
//! command-line order, then sorted names, depth first), each tagged with its source and class.
//!
//! The stream is lazy, so memory stays bounded however many files there are; the same walk run
//! twice yields the same sequence, which is what makes `--resume` and thread-count independence work.

use super::layout::{Plan, RootLayout};
use crate::reason::RejectReason;
use std::path::{Path, PathBuf};
use walkdir::WalkDir;

/// One input file, where it belongs, and how it is named in records and reports.
#[derive(Debug, Clone)]
pub(crate) struct InputFile {
    /// Position in the stream, from 0.
    pub index: u64,
    /// The file on disk.
    pub file: PathBuf,
    /// Path relative to its root, `/`-separated: the key of `--landmarks` and `--attributes` lines.
    pub rel: String,
    /// Path stored in the record: the source name, then the path within the source.
    pub record_path: String,
    /// Source number.
    pub source: u16,
    /// Identity class, when the layout gives one.
    pub class: Option<u32>,
    /// The identity folder relative to the root (the per-identity key of `--attributes`).
    pub identity_key: Option<String>,
    /// Why this file cannot be packed before even reading it (outside the layout, unreadable folder).
    pub misplaced: Option<(RejectReason, String)>,
}

/// Iterates over every file of `plan`, in order.
pub fn walk(plan: &Plan) -> impl Iterator<Item = InputFile> + '_ {
    let mut index = 0u64;
    plan.roots
        .iter()
        .enumerate()
        .flat_map(move |(ri, root)| {
            WalkDir::new(&root.dir)
                .min_depth(1)
                .follow_links(true)
                .sort_by_file_name()
                .into_iter()
                .filter_map(move |entry| classify(plan, ri, &root.dir, root.layout, entry))
        })
        .map(move |mut f| {
            f.index = index;
            index += 1;
            f
        })
}

fn classify(
    plan: &Plan,
    ri: usize,
    root_dir: &Path,
    layout: RootLayout,
    entry: walkdir::Result<walkdir::DirEntry>,
) -> Option<InputFile> {
    let entry = match entry {
        Ok(e) if e.file_type().is_dir() => return None,
        Ok(e) => e,
        Err(err) => {
            // An unreadable folder or a symlink loop: listed as one rejected item so nothing
            // disappears from the counts unseen.
            let path = err.path().map(Path::to_path_buf).unwrap_or_else(|| root_dir.to_path_buf());
            let rel = rel_string(root_dir, &path);
            let src = plan.only_source(ri).map_or(0, |s| s.id);
            return Some(InputFile {
                index: 0,
                record_path: rel.clone(),
                rel,
                file: path,
                source: src,
                class: None,
                identity_key: None,
                misplaced: Some((RejectReason::Unreadable, err.to_string())),
            });
        }
    };
    let path = entry.path().to_path_buf();
    let rel_path = path.strip_prefix(root_dir).unwrap_or(&path).to_path_buf();
    let comps: Vec<&std::ffi::OsStr> = rel_path.iter().collect();
    let rel = rel_string(root_dir, &path);
    let mut f = InputFile {
        index: 0,
        file: path,
        record_path: String::new(),
        rel,
        source: 0,
        class: None,
        identity_key: None,
        misplaced: None,
    };
    let misplaced = |mut f: InputFile, why: &str, source: u16, prefix: &str| {
        f.source = source;
        f.record_path = join(prefix, &f.rel);
        f.misplaced = Some((RejectReason::OutsideLayout, why.to_string()));
        f
    };
    match layout {
        RootLayout::Flat | RootLayout::Identities => {
            let src = plan.only_source(ri).expect("every root has a source");
            f.source = src.id;
            f.record_path = join(&src.name, &f.rel);
            if layout == RootLayout::Flat {
                if comps.len() > 1 {
                    return Some(misplaced(f, "file in a sub-folder of a flat root", src.id, &src.name));
                }
                return Some(f);
            }
            if comps.len() < 2 {
                return Some(misplaced(
                    f,
                    "file directly in an identities root, outside any identity folder",
                    src.id,
                    &src.name,
                ));
            }
            match src.class_of(comps[0]) {
                Some(c) => {
                    f.class = Some(c);
                    f.identity_key = Some(comps[0].to_string_lossy().into_owned());
                    Some(f)
                }
                None => Some(misplaced(f, "folder is not one of the identities found at start", src.id, &src.name)),
            }
        }
        RootLayout::MultiSource => {
            let src = (comps.len() >= 3).then(|| plan.source_in(ri, comps[0])).flatten();
            let Some(src) = src else {
                let first = plan.only_source(ri).map_or(0, |s| s.id);
                return Some(misplaced(
                    f,
                    "file outside any <source>/<identity>/ folder of a multi-source root",
                    first,
                    "",
                ));
            };
            f.source = src.id;
            f.record_path = f.rel.clone();
            match src.class_of(comps[1]) {
                Some(c) => {
                    f.class = Some(c);
                    f.identity_key = Some(format!("{}/{}", comps[0].to_string_lossy(), comps[1].to_string_lossy()));
                    Some(f)
                }
                None => Some(misplaced(f, "folder is not one of the identities found at start", src.id, "")),
            }
        }
    }
}

fn join(prefix: &str, rel: &str) -> String {
    if prefix.is_empty() {
        rel.to_string()
    } else {
        format!("{prefix}/{rel}")
    }
}

/// `path` relative to `root`, with `/` separators whatever the platform.
fn rel_string(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let parts: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn touch(p: &Path) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"x").unwrap();
    }

    #[test]
    fn files_come_in_sorted_order_with_source_prefixed_paths() {
        let t = tempfile::tempdir().unwrap();
        let multi = t.path().join("multi");
        touch(&multi.join("msra/m1/2.jpg"));
        touch(&multi.join("msra/m1/1.jpg"));
        touch(&multi.join("celebrity/c0/1.jpg"));
        touch(&multi.join("celebrity/c0/sub/9.jpg"));
        let plan = Plan::scan(&[multi]).unwrap();
        let files: Vec<_> = walk(&plan).collect();
        let paths: Vec<_> = files.iter().map(|f| f.record_path.as_str()).collect();
        assert_eq!(paths, ["celebrity/c0/1.jpg", "celebrity/c0/sub/9.jpg", "msra/m1/1.jpg", "msra/m1/2.jpg"]);
        let classes: Vec<_> = files.iter().map(|f| f.class).collect();
        assert_eq!(classes, [Some(0), Some(0), Some(1), Some(1)]);
        assert_eq!(files[3].identity_key.as_deref(), Some("msra/m1"));
        assert!(files.iter().enumerate().all(|(i, f)| f.index == i as u64 && f.misplaced.is_none()));
    }

    #[test]
    fn stray_files_are_listed_not_dropped() {
        let t = tempfile::tempdir().unwrap();
        let ids = t.path().join("ids");
        touch(&ids.join("bob/1.jpg"));
        touch(&ids.join("stray.jpg"));
        let plan = Plan::scan(&[ids]).unwrap();
        let files: Vec<_> = walk(&plan).collect();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].record_path, "ids/bob/1.jpg");
        assert_eq!(files[1].record_path, "ids/stray.jpg");
        assert_eq!(files[1].misplaced.as_ref().map(|m| m.0), Some(RejectReason::OutsideLayout));
    }
}
