//! `facekit filter training/NAME --drop LIST.tsv [--drop-identities LIST.tsv] -o training/NEW`:
//! a copy of a dataset without the listed records and identities, records copied (never
//! re-encoded), its manifest's `filtered` saying what was dropped.
//!
//! Drop lists are TSV files (docs/CURATE.md): a header line naming the columns, then one line
//! per entry; other columns are ignored, empty lines and `#` lines skipped.
//! - `--drop`: column `record`, a record's key: the path it stores (`source/identity/file.jpg`
//!   for a pack, `train.rec#123` for an import), which is what `verify-shard` and the rejects
//!   list name a photo by and does not change when a dataset is merged or filtered (a record's
//!   position does). Every record with that key is dropped.
//! - `--drop-identities`: column `identity`, the identity name of the label map, and optionally
//!   `source` to say which source's; a name found in several sources without a `source` column is
//!   refused as ambiguous. Every record of the identity is dropped, and by default the label map
//!   is renumbered without the dropped classes (`keep_ids`: ids and label map unchanged). A class
//!   whose records were all dropped by `--drop` keeps its line: only `--drop-identities` removes
//!   an identity.
//!
//! The `.valid` companion, when there is one, is filtered by the same lists into `NEW.valid`.

use super::{bar, copy, sha256_hex, Family, Output};
use crate::pipeline::{Event, Observer};
use crate::replace::base_name;
use anyhow::{bail, Context, Result};
use facekit_shard::manifest::{DropListInfo, FilterInfo, LabelEntry, LabelMap};
use facekit_shard::{Dataset, DatasetWriter, Manifest};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Everything `facekit filter` needs.
#[derive(Debug, Clone)]
pub struct FilterOptions {
    /// The dataset to filter.
    pub input: PathBuf,
    /// The new dataset.
    pub output: PathBuf,
    /// `--drop`: records to drop, by key.
    pub drop: Option<PathBuf>,
    /// `--drop-identities`: identities to drop.
    pub drop_identities: Option<PathBuf>,
    /// Keep class ids and the label map as they are.
    pub keep_ids: bool,
    /// Target shard size in bytes.
    pub shard_size: u64,
    /// Show a progress bar.
    pub progress: bool,
    /// Where notices go.
    pub events: Observer,
}

/// What a filter made.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FilterReport {
    /// The dataset written (`dir/name`).
    pub dataset: String,
    /// Its records.
    pub records: u64,
    /// Records dropped from the training dataset.
    pub dropped: u64,
    /// Records of the `.valid` companion written, and those dropped from it.
    pub valid: Option<(u64, u64)>,
    /// Classes of the new label map.
    pub classes: u32,
    /// Classes removed from the label map.
    pub classes_dropped: u32,
    /// `--drop` keys that matched no record.
    pub unmatched_records: u64,
    /// `--drop-identities` lines that matched no identity.
    pub unmatched_identities: u64,
}

impl FilterReport {
    /// One line for the user.
    pub fn summary(&self) -> String {
        let valid = self.valid.map_or(String::new(), |(k, d)| format!("; validation: {k} kept, {d} dropped"));
        let mut s = format!(
            "filtered into {}: {} records kept, {} dropped, {} classes ({} removed){valid}",
            self.dataset, self.records, self.dropped, self.classes, self.classes_dropped
        );
        if self.unmatched_records > 0 || self.unmatched_identities > 0 {
            s.push_str(&format!(
                "; {} listed record(s) and {} listed identit(ies) matched nothing",
                self.unmatched_records, self.unmatched_identities
            ));
        }
        s
    }
}

/// One drop list: its entries (the named columns of each line) and its digest.
struct DropList {
    path: PathBuf,
    sha256: String,
    rows: Vec<Vec<Option<String>>>,
}

impl DropList {
    /// Reads `path`, taking columns `wanted` (the first is required) from its header.
    fn read(path: &Path, wanted: &[&str]) -> Result<Self> {
        let bytes = facekit_io::bounded::read(path, facekit_io::bounded::TABLE)?;
        let text = std::str::from_utf8(&bytes).with_context(|| format!("drop list {} is not UTF-8", path.display()))?;
        let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'));
        let Some((_, header)) = lines.next() else {
            bail!("drop list {} is empty (it needs a header line)", path.display())
        };
        let names: Vec<&str> = header.trim_end_matches('\r').split('\t').map(str::trim).collect();
        let cols: Vec<Option<usize>> = wanted.iter().map(|w| names.iter().position(|n| n == w)).collect();
        let Some(key) = cols[0] else {
            bail!(
                "drop list {}: line 1 has no `{}` column (its columns: {}); see docs/CURATE.md",
                path.display(),
                wanted[0],
                names.join(", ")
            )
        };
        let mut rows = Vec::new();
        for (i, line) in lines {
            let fields: Vec<&str> = line.trim_end_matches('\r').split('\t').collect();
            let row: Vec<Option<String>> = cols
                .iter()
                .map(|c| c.and_then(|c| fields.get(c)).map(|f| f.to_string()).filter(|f| !f.is_empty()))
                .collect();
            if row[0].is_none() || fields.len() <= key {
                bail!("drop list {}: line {} has no `{}` value", path.display(), i + 1, wanted[0]);
            }
            rows.push(row);
        }
        Ok(DropList { path: path.to_path_buf(), sha256: sha256_hex(&bytes), rows })
    }

    fn info(&self, unmatched: u64) -> DropListInfo {
        DropListInfo {
            path: self.path.display().to_string(),
            sha256: self.sha256.clone(),
            entries: self.rows.len() as u64,
            unmatched,
        }
    }
}

/// The classes of the identities listed, and the number of lines that matched none.
fn dropped_classes(list: &DropList, labels: &LabelMap) -> Result<(HashSet<u32>, u64)> {
    let mut by_name: HashMap<&str, Vec<&LabelEntry>> = HashMap::new();
    for e in &labels.entries {
        by_name.entry(e.identity.as_str()).or_default().push(e);
    }
    let mut classes = HashSet::new();
    let mut unmatched = 0;
    for row in &list.rows {
        let name = row[0].as_deref().expect("checked when read");
        let found: Vec<&&LabelEntry> = by_name
            .get(name)
            .map(|v| v.iter().filter(|e| row[1].as_deref().is_none_or(|s| s == e.source)).collect())
            .unwrap_or_default();
        if found.len() > 1 && row[1].is_none() {
            let sources: Vec<&str> = found.iter().map(|e| e.source.as_str()).collect();
            bail!(
                "drop list {}: identity '{name}' is in sources {}; add a `source` column to say which",
                list.path.display(),
                sources.join(", ")
            );
        }
        if found.is_empty() {
            unmatched += 1;
        }
        classes.extend(found.iter().map(|e| e.class_id));
    }
    Ok((classes, unmatched))
}

/// Writes the filtered copy of `opts.input`; see the module's documentation.
pub fn filter(opts: &FilterOptions) -> Result<FilterReport> {
    if opts.drop.is_none() && opts.drop_identities.is_none() {
        bail!("nothing to drop: give --drop LIST.tsv and/or --drop-identities LIST.tsv");
    }
    let input = Family::open(&opts.input)?;
    let records = opts.drop.as_deref().map(|p| DropList::read(p, &["record"])).transpose()?;
    let identities = opts.drop_identities.as_deref().map(|p| DropList::read(p, &["identity", "source"])).transpose()?;
    let labels = input.main.labels();
    let (gone, unmatched_identities) = match &identities {
        Some(l) => dropped_classes(l, labels)?,
        None => (HashSet::new(), 0),
    };
    let keys: HashSet<&str> =
        records.iter().flat_map(|l| l.rows.iter().map(|r| r[0].as_deref().expect("checked when read"))).collect();

    // New class of every old one (`None`: dropped), and the new label map and sources.
    let m = input.main.manifest();
    let new_class: Vec<Option<u32>> = if opts.keep_ids {
        (0..m.classes).map(|c| (!gone.contains(&c)).then_some(c)).collect()
    } else {
        let mut next = 0;
        (0..m.classes)
            .map(|c| {
                (!gone.contains(&c)).then(|| {
                    next += 1;
                    next - 1
                })
            })
            .collect()
    };
    let new_labels = if opts.keep_ids {
        labels.clone()
    } else {
        LabelMap {
            entries: labels
                .entries
                .iter()
                .filter_map(|e| new_class[e.class_id as usize].map(|c| LabelEntry { class_id: c, ..e.clone() }))
                .collect(),
        }
    };
    let classes = new_labels.entries.len() as u32;
    let classes_dropped = m.classes - classes;

    let out = Output::claim(&opts.output, "filter", &opts.events)?;
    let total = input.main.len() as u64 + input.valid.as_ref().map_or(0, |v| v.len() as u64);
    let progress = bar(total, opts.progress);
    let mut matched: HashSet<String> = HashSet::new();
    // Each dataset's records are copied first and its manifest written only once both are copied,
    // when `filtered` (which counts the keys matched in either) is known: validation first,
    // training last.
    let mut run = |ds: &Dataset, paths: &facekit_shard::DatasetPaths| -> Result<(DatasetWriter, Manifest, u64)> {
        let shown = base_name(ds.paths());
        opts.events.emit(Event::Reading { dataset: &shown, records: ds.len() as u64 });
        let mut w = DatasetWriter::create(paths.clone(), opts.shard_size)?;
        let mut per_source = vec![0u64; ds.manifest().sources.len()];
        let kept = copy(ds, &shown, &mut w, &progress, |_, mut r| {
            if keys.contains(r.path.as_str()) {
                matched.insert(r.path.clone());
                return Ok(None);
            }
            if let Some(c) = r.labels.class_id {
                match new_class.get(c as usize) {
                    Some(Some(n)) => r.labels.class_id = Some(*n),
                    Some(None) => return Ok(None),
                    None => bail!("class {c} is not in the label map"),
                }
            }
            if let Some(n) = per_source.get_mut(usize::from(r.labels.source)) {
                *n += 1;
            }
            Ok(Some(r))
        })?;
        if kept == 0 {
            bail!("every record of {shown} would be dropped; a dataset needs at least one record");
        }
        let dropped = ds.len() as u64 - kept;
        let mut sources = ds.manifest().sources.clone();
        let mut offset = 0;
        for (s, n) in sources.iter_mut().zip(&per_source) {
            if !opts.keep_ids {
                let own =
                    (s.class_offset..s.class_offset + s.classes).filter(|c| new_class[*c as usize].is_some()).count();
                s.class_offset = offset;
                s.classes = own as u32;
                offset += own as u32;
            }
            s.records = *n;
        }
        let mut man = ds.manifest().clone();
        man.classes = classes;
        man.sources = sources;
        man.part = None;
        man.created_unix = Manifest::new(0, vec![], None, man.encoding.clone()).created_unix;
        man.tool_version = env!("CARGO_PKG_VERSION").into();
        Ok((w, man, dropped))
    };
    let valid = match &input.valid {
        Some(v) => Some(run(v, &out.valid)?),
        None => None,
    };
    let (w, mut main, dropped) = run(&input.main, &out.main)?;
    let unmatched_records = keys.len() as u64 - matched.len() as u64;
    let info = FilterInfo {
        from: input.shown.clone(),
        drop: records.as_ref().map(|l| l.info(unmatched_records)),
        drop_identities: identities.as_ref().map(|l| l.info(unmatched_identities)),
        records_dropped: 0,
        classes_dropped,
        kept_ids: opts.keep_ids,
    };
    let valid = match valid {
        Some((vw, mut vm, vdropped)) => {
            vm.filtered = Some(FilterInfo { records_dropped: vdropped, ..info.clone() });
            Some((vw.finish(vm, &new_labels)?.records, vdropped))
        }
        None => None,
    };
    let rejects = input.main.paths().rejects();
    if rejects.is_file() {
        let bytes = facekit_io::bounded::read(&rejects, facekit_io::bounded::TABLE)?;
        facekit_io::durable::write(out.main.rejects(), &bytes)
            .with_context(|| format!("cannot write {}", out.main.rejects().display()))?;
    }
    main.filtered = Some(FilterInfo { records_dropped: dropped, ..info });
    let main = w.finish(main, &new_labels)?;
    progress.finish_and_clear();
    Ok(FilterReport {
        dataset: base_name(&out.main),
        records: main.records,
        dropped,
        valid,
        classes,
        classes_dropped,
        unmatched_records,
        unmatched_identities,
    })
}
