//! Where a pack or an import writes, so that a finished dataset is replaced only when asked
//! (`--overwrite`), only once its successor is complete, and never by `--resume`.
//!
//! A run over a finished dataset writes its successor in the dataset's staging folder
//! ([`DatasetPaths::staging`], `.NAME.staging/`) under the same file names, progress file
//! included, so that `--resume` continues it there. Once the successor is complete (manifests,
//! rejects list, report), [`Destination::finish`] commits it: a commit record first, then every
//! old manifest removed (an old dataset is gone at once, never half there), then the new files
//! moved into place, each dataset's manifest last and the main dataset last of all, then the
//! staging folder removed. Each step is safe to redo: a run stopped in the middle is finished by
//! `--resume`, and every other run of that name is refused until then.

use crate::pipeline::{Observer, Step};
use anyhow::{bail, Context, Result};
use facekit_shard::{DatasetPaths, Manifest};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The file in the staging folder that says its datasets are being put in place.
const COMMIT_RECORD: &str = "commit.json";

/// Which of a run's datasets it made (a manifest was written), recorded before the first old
/// file is removed so that a redo knows an absent staged dataset from one moved already.
#[derive(Debug, Serialize, Deserialize)]
struct CommitRecord {
    made: Vec<bool>,
}

/// Where a run writes the datasets it makes: the main dataset and its siblings (`celeb.valid`).
#[derive(Debug, Clone)]
pub struct Destination {
    /// The datasets as they are found once finished, the main one first.
    finals: Vec<DatasetPaths>,
    /// Where this run writes them: the same paths, or the same names in the staging folder.
    works: Vec<DatasetPaths>,
    /// The command, for messages (`pack`, `import`).
    tool: &'static str,
}

impl Destination {
    /// Decides where a run of `main` and its `siblings` (name suffixes) writes; called under
    /// their locks, before anything is read or written. Refuses to start over a finished dataset
    /// without `overwrite`, to `resume` when only a finished dataset is there, and anything but
    /// `resume` while a replacement is half put in place. A fresh run clears a staging folder
    /// left by a replacement that never finished.
    pub fn choose(
        main: &DatasetPaths,
        siblings: &[&str],
        resume: bool,
        overwrite: bool,
        tool: &'static str,
    ) -> Result<Self> {
        let staged = main.staging();
        let at =
            |base: &DatasetPaths| Destination { finals: family(main, siblings), works: family(base, siblings), tool };
        let name = base_name(main);
        if staged.dir().join(COMMIT_RECORD).is_file() {
            if !resume {
                bail!(
                    "an earlier {tool} of {name} finished a replacement and stopped while putting it in place; \
                     run it again with --resume to finish that (nothing else is done with {name} until then)"
                );
            }
            return Ok(at(&staged));
        }
        let finished = family(main, siblings).iter().any(|d| d.manifest().is_file());
        if resume {
            if staged.progress().is_file() {
                return Ok(at(&staged));
            }
            if finished && !main.progress().is_file() {
                bail!(
                    "nothing to resume: {name} is a finished dataset ({} does not exist), and --resume never replaces one; \
                     to replace it, run without --resume and with --overwrite",
                    main.progress().display()
                );
            }
            return Ok(at(main));
        }
        if finished && !overwrite {
            bail!("{name} already exists; pass --overwrite to replace it (the old dataset stays until the new one is complete), or choose another output");
        }
        remove_dir(staged.dir())?;
        Ok(at(if finished { &staged } else { main }))
    }

    /// Where this run writes dataset `i` (0 the main one, then the siblings in order).
    pub fn work(&self, i: usize) -> &DatasetPaths {
        &self.works[i]
    }

    /// Where dataset `i` is found once finished.
    pub(crate) fn final_paths(&self, i: usize) -> &DatasetPaths {
        &self.finals[i]
    }

    /// True when this run writes in the staging folder, replacing a finished dataset.
    pub(crate) fn staged(&self) -> bool {
        self.works[0] != self.finals[0]
    }

    /// True when an earlier run finished its replacement and stopped while putting it in place:
    /// [`Destination::finish`] is all that is left to do.
    pub fn committing(&self) -> bool {
        self.staged() && self.works[0].dir().join(COMMIT_RECORD).is_file()
    }

    /// The name reports give the main dataset: where it is found once finished, or, for a
    /// replacement that made nothing (and so replaces nothing), where its rejects list stays.
    pub(crate) fn shown_name(&self, made: bool) -> String {
        base_name(if made || !self.staged() { &self.finals[0] } else { &self.works[0] })
    }

    /// The last step of a finished run, safe to redo. In place, the progress file goes. Staged,
    /// the new datasets replace the old ones when the main one was made (see the module
    /// documentation); otherwise the old ones stay, and so do the staged rejects list and report.
    /// False when the observer stopped it at [`Step::Replacing`] (the old datasets hidden, the
    /// main one not yet in place), as a crash there would.
    pub fn finish(&self, events: &Observer) -> Result<bool> {
        if !self.staged() {
            remove_file(&self.works[0].progress())?;
            return Ok(true);
        }
        let record_path = self.works[0].dir().join(COMMIT_RECORD);
        if !record_path.is_file() && !self.works[0].manifest().is_file() {
            remove_file(&self.works[0].progress())?;
            return Ok(true);
        }
        let record = self.commit_record(&record_path)?;
        self.hide_old(&record)?;
        for i in (0..self.works.len()).rev().filter(|&i| record.made[i]) {
            if i == 0 && events.finished(Step::Replacing) {
                return Ok(false);
            }
            move_dataset(&self.works[i], &self.finals[i])?;
        }
        remove_dir(self.works[0].dir())?;
        Ok(true)
    }

    fn commit_record(&self, path: &Path) -> Result<CommitRecord> {
        if path.is_file() {
            let text = facekit_io::bounded::read(path, facekit_io::bounded::STATE)?;
            let record: CommitRecord = serde_json::from_slice(&text).with_context(|| {
                format!(
                    "{} is damaged; remove {} and run the {} again",
                    path.display(),
                    self.works[0].dir().display(),
                    self.tool
                )
            })?;
            if record.made.len() != self.works.len() {
                bail!(
                    "{} records {} datasets, this {} makes {}",
                    path.display(),
                    record.made.len(),
                    self.tool,
                    self.works.len()
                );
            }
            return Ok(record);
        }
        let record = CommitRecord { made: self.works.iter().map(|w| w.manifest().is_file()).collect() };
        facekit_io::durable::write_json(path, &record)?;
        Ok(record)
    }

    /// Removes every old dataset's manifest (an old dataset not made again goes whole) and the
    /// old progress files, before any new file moves in; a dataset whose new manifest was moved
    /// already is left alone.
    fn hide_old(&self, record: &CommitRecord) -> Result<()> {
        for ((work, old), &made) in self.works.iter().zip(&self.finals).zip(&record.made) {
            if !made {
                old.remove_existing()?;
            } else if work.manifest().is_file() {
                remove_file(&old.manifest())?;
            }
            remove_file(&old.progress())?;
        }
        Ok(())
    }
}

/// `main` and its siblings.
fn family(main: &DatasetPaths, siblings: &[&str]) -> Vec<DatasetPaths> {
    std::iter::once(main.clone()).chain(siblings.iter().map(|s| main.with_suffix(s))).collect()
}

/// Moves the files of the complete dataset `from` over those of `to`, its manifest last; shards
/// of `to` beyond the new ones go. Redone after a crash, it moves what is left.
fn move_dataset(from: &DatasetPaths, to: &DatasetPaths) -> Result<()> {
    if !from.manifest().is_file() {
        return Ok(());
    }
    let shards = Manifest::read(&from.manifest())?.shards.len();
    for (n, p) in from.shards_on_disk()? {
        rename(&p, &to.shard(n))?;
    }
    to.remove_shards_from(shards)?;
    for (a, b) in [(from.labels(), to.labels()), (from.rejects(), to.rejects()), (from.report(), to.report())] {
        if a.is_file() {
            rename(&a, &b)?;
        }
    }
    rename(&from.manifest(), &to.manifest())
}

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).with_context(|| format!("cannot move {} to {}", from.display(), to.display()))?;
    facekit_io::durable::sync_parent(to);
    Ok(())
}

/// Removes a file; one that is not there is no error.
pub(crate) fn remove_file(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", p.display())),
    }
}

fn remove_dir(p: &Path) -> Result<()> {
    match std::fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", p.display())),
    }
}

/// `dir/name`, as messages and reports name a dataset.
pub(crate) fn base_name(p: &DatasetPaths) -> String {
    p.dir().join(p.name()).display().to_string()
}
