//! `<name>.rejects.tsv`, written while the pack runs instead of collected in memory.
//!
//! A pack of millions of raw photos can reject hundreds of thousands of them; holding those in
//! memory and copying them into every checkpoint would make memory and checkpoint cost grow with
//! the input. Instead each rejected file is appended to `<name>.rejects.tsv.partial`; a checkpoint
//! fsyncs it and records its length, `--resume` cuts it back to that length, and the finished pack
//! renames it to `<name>.rejects.tsv`. The `.partial` name never looks like a finished list.

use super::report::Reject;
use anyhow::{bail, Context, Result};
use facekit_io::tsv;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// First line of every rejects list.
pub(crate) const HEADER: &str = "path\treason\tdetail\n";

/// The rejects list of a pack in progress.
pub(crate) struct RejectsLog {
    out: BufWriter<File>,
    partial: PathBuf,
    target: PathBuf,
    bytes: u64,
}

impl RejectsLog {
    /// Starts an empty list for `target` (any earlier partial list is discarded).
    pub fn create(target: &Path) -> Result<Self> {
        let partial = partial_path(target);
        if let Some(dir) = partial.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create folder {}", dir.display()))?;
        }
        let file = File::create(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
        let mut log = RejectsLog { out: BufWriter::new(file), partial, target: target.to_path_buf(), bytes: 0 };
        log.write(HEADER.as_bytes())?;
        Ok(log)
    }

    /// Reopens the partial list of an interrupted pack, cut back to the `bytes` its last
    /// checkpoint recorded (lines written after that checkpoint are written again).
    pub fn resume(target: &Path, bytes: u64) -> Result<Self> {
        let partial = partial_path(target);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&partial)
            .with_context(|| format!("cannot resume: the rejects list {} is missing", partial.display()))?;
        let len = file.metadata().with_context(|| format!("cannot read {}", partial.display()))?.len();
        if len < bytes || bytes < HEADER.len() as u64 {
            bail!(
                "cannot resume: the rejects list {} holds {len} bytes, its checkpoint recorded {bytes}",
                partial.display()
            );
        }
        file.set_len(bytes).with_context(|| format!("cannot truncate {}", partial.display()))?;
        file.seek(SeekFrom::End(0)).with_context(|| format!("cannot seek in {}", partial.display()))?;
        Ok(RejectsLog { out: BufWriter::new(file), partial, target: target.to_path_buf(), bytes })
    }

    /// Appends one rejected file as `path<TAB>reason<TAB>detail` (tabs and newlines in the
    /// fields become spaces, so that every line has three fields).
    pub fn push(&mut self, r: &Reject) -> Result<()> {
        self.push_row(&r.path, r.reason.code(), &r.detail)
    }

    /// Appends a line of any reason code (`missing_photo`, which is no [`RejectReason`] of a
    /// pack's input); `code` must hold no tab or newline.
    ///
    /// [`RejectReason`]: crate::RejectReason
    pub(crate) fn push_row(&mut self, path: &str, code: &str, detail: &str) -> Result<()> {
        let line = format!("{}\t{code}\t{}\n", tsv::field(path), tsv::field(detail));
        self.write(line.as_bytes())
    }

    /// Makes everything pushed so far durable; returns the length a checkpoint should record.
    pub fn sync(&mut self) -> Result<u64> {
        self.out.flush().with_context(|| format!("cannot write {}", self.partial.display()))?;
        self.out.get_ref().sync_data().with_context(|| format!("cannot fsync {}", self.partial.display()))?;
        Ok(self.bytes)
    }

    /// Syncs the list and renames it to its final name.
    pub fn finish(mut self) -> Result<()> {
        self.sync()?;
        facekit_io::durable::commit_file(&self.partial, &self.target)?;
        Ok(())
    }

    /// Gives the list of a finished pack its final name, cut to the `bytes` its final checkpoint
    /// recorded; nothing to do when an earlier attempt already did it.
    pub fn complete(target: &Path, bytes: u64) -> Result<()> {
        let partial = partial_path(target);
        if !partial.exists() {
            if target.is_file() {
                return Ok(());
            }
            bail!("the rejects list is missing: neither {} nor {} exists", partial.display(), target.display());
        }
        let log = RejectsLog::resume(target, bytes)?;
        log.finish()
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).with_context(|| format!("cannot write {}", self.partial.display()))?;
        self.bytes += bytes.len() as u64;
        Ok(())
    }
}

/// `<target>.partial`: where the list grows until the pack finishes.
pub(crate) fn partial_path(target: &Path) -> PathBuf {
    let mut name = target.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    target.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reject(n: usize) -> Reject {
        Reject {
            path: format!("raw/p{n}.jpg"),
            reason: crate::reason::RejectReason::NoFace,
            detail: format!("no face\tin {n}"),
        }
    }

    #[test]
    fn finished_list_has_the_header_and_one_clean_line_per_reject() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("celeb.rejects.tsv");
        let mut log = RejectsLog::create(&target).unwrap();
        log.push(&reject(1)).unwrap();
        log.push(&reject(2)).unwrap();
        assert!(!target.exists(), "the final name appears only when the pack finishes");
        log.finish().unwrap();
        let text = std::fs::read_to_string(&target).unwrap();
        assert_eq!(
            text,
            "path\treason\tdetail\nraw/p1.jpg\tno_face\tno face in 1\nraw/p2.jpg\tno_face\tno face in 2\n"
        );
        assert!(!partial_path(&target).exists());
    }

    #[test]
    fn resume_drops_lines_written_after_the_checkpoint() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("celeb.rejects.tsv");
        let mut log = RejectsLog::create(&target).unwrap();
        log.push(&reject(1)).unwrap();
        let at = log.sync().unwrap();
        log.push(&reject(2)).unwrap();
        log.sync().unwrap();
        drop(log); // a crash after the second line, before the next checkpoint

        let mut log = RejectsLog::resume(&target, at).unwrap();
        log.push(&reject(3)).unwrap();
        log.finish().unwrap();
        let text = std::fs::read_to_string(&target).unwrap();
        assert_eq!(
            text.lines().map(|l| l.split('\t').next().unwrap()).collect::<Vec<_>>(),
            ["path", "raw/p1.jpg", "raw/p3.jpg"]
        );
    }

    #[test]
    fn resume_refuses_a_list_shorter_than_its_checkpoint_or_missing() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("celeb.rejects.tsv");
        let err = RejectsLog::resume(&target, 100).err().unwrap();
        assert!(format!("{err:#}").contains("is missing"), "{err:#}");
        let mut log = RejectsLog::create(&target).unwrap();
        let at = log.sync().unwrap();
        drop(log);
        let err = RejectsLog::resume(&target, at + 1).err().unwrap();
        assert!(format!("{err:#}").contains("its checkpoint recorded"), "{err:#}");
    }
}
