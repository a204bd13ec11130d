//! Curating finished datasets without touching their images: [`merge`] joins datasets (the parts
//! of a pack split across machines, or datasets packed separately), [`filter`] drops listed
//! records and identities. Both copy every kept record's payload, path, origin hash and labels
//! as they are (only a class id or source number may be renumbered, which rewrites the record's
//! header and CRC, never its image), write the result with the shard writer (every file atomic,
//! the manifest last), and handle a dataset's `.valid` companion beside it. The workflow is in
//! docs/CURATE.md.

pub mod filter;
pub mod merge;

pub use filter::{filter, FilterOptions, FilterReport};
pub use merge::{merge, MergeOptions, MergeReport};

use crate::pipeline::{Event, Observer};
use crate::replace::base_name;
use crate::run::VALID_SUFFIX;
use anyhow::{bail, Context, Result};
use facekit_io::lock::Lock;
use facekit_shard::{Dataset, DatasetPaths, DatasetWriter, Record};

/// A dataset given as input and its `.valid` companion, when one is beside it.
pub(crate) struct Family {
    /// The dataset as messages name it (`dir/name`).
    pub shown: String,
    pub main: Dataset,
    pub valid: Option<Dataset>,
}

impl Family {
    /// Opens the dataset `arg` names (a base path or a manifest path) under a shared lock, and
    /// its `.valid` companion if it has a manifest.
    pub fn open(arg: &std::path::Path) -> Result<Self> {
        let text = arg.to_string_lossy();
        let paths = DatasetPaths::resolve(&text, None)?;
        let shown = base_name(&paths);
        let main = Dataset::open(paths.clone()).with_context(|| format!("cannot open dataset {shown}"))?;
        let vpaths = paths.with_suffix(VALID_SUFFIX);
        let valid = if vpaths.manifest().is_file() {
            let v = Dataset::open(vpaths.clone())
                .with_context(|| format!("cannot open validation dataset {}", base_name(&vpaths)))?;
            if v.labels() != main.labels() {
                bail!("{} and {} have different label maps", base_name(&vpaths), shown);
            }
            Some(v)
        } else {
            None
        };
        Ok(Family { shown, main, valid })
    }
}

/// The output dataset and its `.valid` companion, locked exclusively and checked to be new.
pub(crate) struct Output {
    pub main: DatasetPaths,
    pub valid: DatasetPaths,
    _locks: Vec<Lock>,
}

impl Output {
    /// Locks `output` (and its `.valid`), refuses one that is finished or a pack's unfinished
    /// work, and removes temporaries a killed writer left (the lock proves they are stale).
    pub fn claim(output: &std::path::Path, tool: &str, events: &Observer) -> Result<Self> {
        if output.file_name().is_none() {
            bail!("output {} has no dataset name", output.display());
        }
        let main = DatasetPaths::new(output);
        let valid = main.with_suffix(VALID_SUFFIX);
        let mut locks = Vec::new();
        for d in [&main, &valid] {
            locks.push(facekit_io::lock::exclusive(&d.lock(), &format!("dataset {}", base_name(d)))?);
        }
        for d in [&main, &valid] {
            if d.manifest().is_file() || d.progress().is_file() {
                bail!(
                    "{} already exists; {tool} writes a new dataset: choose another name or remove it first",
                    base_name(d)
                );
            }
            if let Some(dir) = Some(d.dir()).filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| format!("cannot create folder {}", dir.display()))?;
            }
            let count = d.remove_stale_temps()?;
            if count > 0 {
                events.emit(Event::RemovedTemps { count, dir: d.dir() });
            }
        }
        Ok(Output { main, valid, _locks: locks })
    }
}

/// Copies the records of `ds` that `keep` returns (possibly relabelled) into `out`, in order;
/// an error names the dataset and the record.
pub(crate) fn copy(
    ds: &Dataset,
    shown: &str,
    out: &mut DatasetWriter,
    bar: &facekit_io::progress::ProgressBar,
    mut keep: impl FnMut(usize, Record) -> Result<Option<Record>>,
) -> Result<u64> {
    let mut copied = 0;
    for i in 0..ds.len() {
        let record = ds.get(i).with_context(|| format!("cannot read record {i} of dataset {shown}"))?;
        let path = record.path.clone();
        if let Some(r) = keep(i, record).with_context(|| format!("record {i} ({path}) of dataset {shown}"))? {
            out.push(&r).with_context(|| {
                format!("cannot write record {i} ({path}) of dataset {shown} into {}", base_name(out.paths()))
            })?;
            copied += 1;
        }
        bar.inc(1);
    }
    Ok(copied)
}

/// A progress bar over `total` records, hidden unless asked for.
pub(crate) fn bar(total: u64, shown: bool) -> facekit_io::progress::ProgressBar {
    let bar = facekit_io::progress::items(total, "records");
    if !shown {
        facekit_io::progress::hide(&bar);
    }
    bar
}

/// SHA-256 of `bytes`, hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}
