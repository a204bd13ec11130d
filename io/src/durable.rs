//! Durable, atomic writes: a file (or a folder of files) is written under a temporary name in its
//! final folder, fsynced, renamed into place, and the folder fsynced, so that a reader or a
//! crashed run sees either no file or a complete one. A half-written file only ever exists under
//! a `.tmp-PID-` name that no facekit reader accepts. Every writer in facekit goes through here.

use serde::Serialize;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// A write that failed, with the path and the step.
#[derive(Debug)]
pub struct WriteError {
    /// What was being done (`create`, `write`, `fsync`, `rename ... to`).
    pub op: String,
    /// The file or folder.
    pub path: PathBuf,
    /// The operating system's error.
    pub source: std::io::Error,
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot {} {}: {}", self.op, self.path.display(), self.source)
    }
}

/// The operating system's error is part of the message, so it is not also the error's
/// `source()`: a printer of the whole chain would say it twice.
impl std::error::Error for WriteError {}

fn fail(op: impl Into<String>, path: &Path) -> impl FnOnce(std::io::Error) -> WriteError + '_ {
    let op = op.into();
    move |source| WriteError { op, path: path.to_path_buf(), source }
}

/// A file being written that becomes visible under its final name only on [`AtomicFile::commit`].
/// Dropping it without committing removes the temporary file.
pub struct AtomicFile {
    writer: Option<BufWriter<File>>,
    tmp: PathBuf,
    target: PathBuf,
}

impl AtomicFile {
    /// Starts writing `target` through a temporary file beside it (creating the folder).
    pub fn create(target: impl AsRef<Path>) -> Result<Self, WriteError> {
        let target = target.as_ref().to_path_buf();
        let tmp = temp_path(&target);
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(fail("create folder", dir))?;
        }
        let file = File::create(&tmp).map_err(fail("create", &tmp))?;
        Ok(Self { writer: Some(BufWriter::with_capacity(1 << 20, file)), tmp, target })
    }

    /// The final path this file will have once committed.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Writes bytes; the error names the file.
    pub fn put(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        let target = self.target.clone();
        self.write_all(bytes).map_err(fail("write", &target))
    }

    /// Flushes, fsyncs and renames into place, then fsyncs the folder so the rename survives a crash.
    pub fn commit(mut self) -> Result<(), WriteError> {
        let writer = self.writer.take().expect("writer present until commit");
        let file = writer.into_inner().map_err(|e| e.into_error()).map_err(fail("write", &self.tmp))?;
        file.sync_all().map_err(fail("fsync", &self.tmp))?;
        drop(file);
        fs::rename(&self.tmp, &self.target).map_err(fail(format!("rename {} to", self.tmp.display()), &self.target))?;
        sync_parent(&self.target);
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer.as_mut().expect("writer present until commit").write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.writer.as_mut().expect("writer present until commit").write_all(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.writer.as_mut().expect("writer present until commit").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Writes a whole file atomically.
pub fn write(target: impl AsRef<Path>, bytes: &[u8]) -> Result<(), WriteError> {
    let mut file = AtomicFile::create(target)?;
    file.put(bytes)?;
    file.commit()
}

/// Writes `value` as pretty JSON with a final newline, atomically (manifests, reports, configs).
pub fn write_json(target: impl AsRef<Path>, value: &impl Serialize) -> Result<(), WriteError> {
    let target = target.as_ref();
    let mut text = serde_json::to_vec_pretty(value).map_err(|e| WriteError {
        op: "serialise".into(),
        path: target.to_path_buf(),
        source: e.into(),
    })?;
    text.push(b'\n');
    write(target, &text)
}

/// Replaces the folder `target` with `build`'s output as one step: `build` fills a fresh
/// temporary folder beside it; every file in it is fsynced, then it is renamed into place. Linux
/// cannot swap two folders atomically without `renameat2`, so an existing `target` is first
/// renamed aside to `.old-NAME` and removed afterwards; a reader that finds `.old-NAME` without
/// `NAME` (a crash between the two renames) uses it (see [`settled_dir`]).
pub fn replace_dir<E: From<WriteError>>(target: &Path, build: impl FnOnce(&Path) -> Result<(), E>) -> Result<(), E> {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let parent = target.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(fail("create folder", parent))?;
    let tmp = parent.join(format!(".tmp-{}-{name}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(fail("remove", &tmp))?;
    }
    fs::create_dir(&tmp).map_err(fail("create folder", &tmp))?;
    if let Err(e) = build(&tmp) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    for entry in fs::read_dir(&tmp).map_err(fail("list", &tmp))? {
        let p = entry.map_err(fail("list", &tmp))?.path();
        File::open(&p).and_then(|f| f.sync_all()).map_err(fail("fsync", &p))?;
    }
    sync_dir(&tmp);
    let old = parent.join(format!(".old-{name}"));
    if old.exists() {
        fs::remove_dir_all(&old).map_err(fail("remove", &old))?;
    }
    if target.exists() {
        fs::rename(target, &old).map_err(fail("move aside", target))?;
    }
    fs::rename(&tmp, target).map_err(fail(format!("rename {} to", tmp.display()), target))?;
    sync_dir(parent);
    if old.exists() {
        fs::remove_dir_all(&old).map_err(fail("remove", &old))?;
    }
    Ok(())
}

/// The folder written by [`replace_dir`] at `target`, or its moved-aside predecessor after a crash
/// between the two renames; `complete` says whether a candidate holds what a finished one holds.
pub fn settled_dir(target: &Path, complete: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    let name = target.file_name()?.to_string_lossy().into_owned();
    let old = target.with_file_name(format!(".old-{name}"));
    [target.to_path_buf(), old].into_iter().find(|d| complete(d))
}

/// Finishes a file that another library wrote at [`temp_path`]`(target)` (a safetensors or
/// TorchScript writer that only takes a path): fsyncs it, renames it into place, fsyncs the folder.
pub fn commit_file(tmp: &Path, target: &Path) -> Result<(), WriteError> {
    File::open(tmp).and_then(|f| f.sync_all()).map_err(fail("fsync", tmp))?;
    fs::rename(tmp, target).map_err(fail(format!("rename {} to", tmp.display()), target))?;
    sync_parent(target);
    Ok(())
}

/// The temporary name for `target`: hidden, unique per process, never matching a facekit file name.
pub fn temp_path(target: &Path) -> PathBuf {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    target.with_file_name(format!(".tmp-{}-{name}", std::process::id()))
}

/// Fsyncs the folder holding `path`, so that a rename into it survives a crash (best effort).
pub fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent() {
        sync_dir(if dir.as_os_str().is_empty() { Path::new(".") } else { dir });
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_folder_build_leaves_the_old_folder_and_no_temporary() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("last");
        replace_dir::<WriteError>(&target, |d| write(d.join("a"), b"1")).unwrap();
        let err: Result<(), WriteError> = replace_dir(&target, |d| {
            write(d.join("a"), b"2")?;
            Err(WriteError { op: "test".into(), path: d.to_path_buf(), source: std::io::Error::other("no space") })
        });
        assert!(err.is_err());
        assert_eq!(fs::read(target.join("a")).unwrap(), b"1");
        replace_dir::<WriteError>(&target, |d| write(d.join("a"), b"3")).unwrap();
        assert_eq!(fs::read(target.join("a")).unwrap(), b"3");
        let names: Vec<String> =
            fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names, ["last"]);
    }

    #[test]
    fn a_crash_between_the_renames_leaves_the_old_folder_findable() {
        let t = tempfile::tempdir().unwrap();
        let old = t.path().join(".old-last");
        fs::create_dir(&old).unwrap();
        fs::write(old.join("state.json"), b"{}").unwrap();
        let found = settled_dir(&t.path().join("last"), |d| d.join("state.json").is_file());
        assert_eq!(found, Some(old));
    }
}
