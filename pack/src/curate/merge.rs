//! `facekit merge PART... -o training/NAME`: datasets joined into one, records copied.
//!
//! Two cases, told apart by the inputs' manifests:
//! - **parts** of one pack (`facekit pack --part K/N`, each manifest's `part`): every part has the
//!   whole input's label map and class ids, and the parts are consecutive runs of the one input
//!   stream, so the records are copied in part order with their labels untouched and the result
//!   is the dataset a one-machine pack of the input writes (same records, bytes, order, label
//!   map, shards at the same `--shard-size`), and the rejects lists joined in part order are its
//!   rejects list. The parts must share the input fingerprint and number of parts and tile the
//!   input; a part that packed nothing has no manifest, and then the merge is refused.
//! - **separate datasets**: sources are appended in argument order and each gets the next range
//!   of class ids (its ids offset, names kept). Two datasets with a source of the same name are
//!   refused (their identities would be ambiguous) unless `same_identities` says that same names
//!   are the same people: then the sources become one, its identities the union (first
//!   appearance order), and records of a name in both datasets get one class.
//!
//! The `.valid` companions are merged the same way when every input has one.

use super::{bar, copy, Family, Output};
use crate::pipeline::{Event, Observer};
use crate::replace::base_name;
use anyhow::{bail, Context, Result};
use facekit_shard::manifest::{LabelEntry, LabelMap, MergedInput, SourceInfo};
use facekit_shard::{DatasetWriter, Manifest, Record};
use std::collections::HashMap;
use std::path::PathBuf;

/// Everything `facekit merge` needs.
#[derive(Debug, Clone)]
pub struct MergeOptions {
    /// The datasets to join, in order (parts in any order).
    pub inputs: Vec<PathBuf>,
    /// The new dataset (`training/celeb`).
    pub output: PathBuf,
    /// Same-named identities of same-named sources are one class (separate datasets only).
    pub same_identities: bool,
    /// Target shard size in bytes.
    pub shard_size: u64,
    /// Show a progress bar.
    pub progress: bool,
    /// Where notices go.
    pub events: Observer,
}

/// What a merge made.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MergeReport {
    /// The dataset written (`dir/name`).
    pub dataset: String,
    /// Its records.
    pub records: u64,
    /// Records of its `.valid` companion, when one was written.
    pub valid_records: Option<u64>,
    /// Its classes.
    pub classes: u32,
    /// Lines of the joined rejects list.
    pub rejects: u64,
    /// The number of parts joined, when the inputs were parts of one pack.
    pub parts: Option<u32>,
}

impl MergeReport {
    /// One line for the user.
    pub fn summary(&self) -> String {
        let what = self.parts.map_or_else(|| "datasets".to_string(), |n| format!("{n} part(s) of one pack"));
        let valid = self.valid_records.map_or(String::new(), |v| format!(", {v} validation records"));
        format!(
            "merged {what} into {}: {} records{valid}, {} classes, {} rejected files listed",
            self.dataset, self.records, self.classes, self.rejects
        )
    }
}

/// How one input's labels become the merged dataset's.
struct Relabel {
    /// New source number of each old one.
    source: Vec<u16>,
    /// New class id of each old one.
    class: Vec<u32>,
}

impl Relabel {
    fn apply(&self, mut r: Record) -> Result<Record> {
        let s = usize::from(r.labels.source);
        r.labels.source = *self.source.get(s).with_context(|| format!("source {s} is not in its manifest"))?;
        if let Some(c) = r.labels.class_id {
            r.labels.class_id =
                Some(*self.class.get(c as usize).with_context(|| format!("class {c} is not in its label map"))?);
        }
        Ok(r)
    }
}

/// The merged dataset's sources, label map and each input's relabelling.
struct Joined {
    sources: Vec<SourceInfo>,
    labels: LabelMap,
    relabel: Vec<Relabel>,
    offsets: Vec<Option<u32>>,
}

/// Joins the datasets of `opts` into a new one; see the module's documentation.
pub fn merge(opts: &MergeOptions) -> Result<MergeReport> {
    if opts.inputs.is_empty() {
        bail!("no dataset to merge");
    }
    let mut inputs = opts.inputs.iter().map(|p| Family::open(p)).collect::<Result<Vec<_>>>()?;
    let parts = parts_in_order(&mut inputs)?;
    check_alike(&inputs)?;
    let with_valid = inputs.iter().filter(|f| f.valid.is_some()).count();
    if with_valid != 0 && with_valid != inputs.len() {
        let lacking: Vec<&str> = inputs.iter().filter(|f| f.valid.is_none()).map(|f| f.shown.as_str()).collect();
        bail!(
            "some inputs have a .valid companion and {} do not: merge them all with or all without (move the .valid datasets aside)",
            lacking.join(", ")
        );
    }
    let joined = if parts.is_some() { keep_ids(&inputs) } else { join(&inputs, opts.same_identities)? };
    let out = Output::claim(&opts.output, "merge", &opts.events)?;
    let first = inputs[0].main.manifest().clone();
    let manifest = |records_per_source: Vec<u64>, merged_from: Vec<MergedInput>| {
        let mut sources = joined.sources.clone();
        for (s, n) in sources.iter_mut().zip(records_per_source) {
            s.records = n;
        }
        let mut m =
            Manifest::new(joined.labels.entries.len() as u32, sources, first.alignment.clone(), first.encoding.clone());
        m.origin =
            inputs.iter().all(|f| f.main.manifest().origin == first.origin).then(|| first.origin.clone()).flatten();
        m.merged_from = Some(merged_from);
        m
    };
    let total: u64 = inputs.iter().map(|f| f.main.len() as u64 + f.valid.as_ref().map_or(0, |v| v.len() as u64)).sum();
    let progress = bar(total, opts.progress);
    // Validation first, training last: the training manifest is the last file written.
    let mut valid_records = None;
    if with_valid > 0 {
        let mut w = DatasetWriter::create(out.valid.clone(), opts.shard_size)?;
        let (per_source, from) = copy_all(&inputs, &joined, true, &mut w, &progress, &opts.events)?;
        let m = w.finish(manifest(per_source, from), &joined.labels)?;
        valid_records = Some(m.records);
    }
    let mut w = DatasetWriter::create(out.main.clone(), opts.shard_size)?;
    let (per_source, from) = copy_all(&inputs, &joined, false, &mut w, &progress, &opts.events)?;
    let rejects = join_rejects(&inputs, &out.main.rejects())?;
    let m = w.finish(manifest(per_source, from), &joined.labels)?;
    progress.finish_and_clear();
    Ok(MergeReport {
        dataset: base_name(&out.main),
        records: m.records,
        valid_records,
        classes: m.classes,
        rejects,
        parts,
    })
}

/// Copies every input's training (or validation) records in order; the records per new source
/// and the manifest's `merged_from`.
fn copy_all(
    inputs: &[Family],
    joined: &Joined,
    valid: bool,
    w: &mut DatasetWriter,
    progress: &facekit_io::progress::ProgressBar,
    events: &Observer,
) -> Result<(Vec<u64>, Vec<MergedInput>)> {
    let mut per_source = vec![0u64; joined.sources.len()];
    let mut from = Vec::new();
    for ((f, relabel), offset) in inputs.iter().zip(&joined.relabel).zip(&joined.offsets) {
        let (ds, shown) = match (valid, &f.valid) {
            (true, Some(v)) => (v, base_name(v.paths())),
            (true, None) => continue,
            (false, _) => (&f.main, f.shown.clone()),
        };
        events.emit(Event::Reading { dataset: &shown, records: ds.len() as u64 });
        let n = copy(ds, &shown, w, progress, |_, r| {
            let r = relabel.apply(r)?;
            per_source[usize::from(r.labels.source)] += 1;
            Ok(Some(r))
        })?;
        from.push(MergedInput { dataset: shown, records: n, class_offset: *offset });
    }
    Ok((per_source, from))
}

/// When the inputs are parts of one pack: checks that they are all of the same pack and cover its
/// input exactly, puts them in part order and returns their number; `None` for separate datasets.
fn parts_in_order(inputs: &mut [Family]) -> Result<Option<u32>> {
    let with_part = inputs.iter().filter(|f| f.main.manifest().part.is_some()).count();
    if with_part == 0 {
        return Ok(None);
    }
    if with_part != inputs.len() {
        let whole: Vec<&str> =
            inputs.iter().filter(|f| f.main.manifest().part.is_none()).map(|f| f.shown.as_str()).collect();
        bail!(
            "{} of the inputs are parts of a pack (--part) and {} not: merge the parts first, then merge the result with the others",
            with_part,
            whole.join(", ")
        );
    }
    inputs.sort_by_key(|f| f.main.manifest().part.as_ref().map(|p| p.index));
    let first = inputs[0].main.manifest().part.clone().expect("checked above");
    let mut next = 0;
    let mut prev: Option<&Family> = None;
    for f in inputs.iter() {
        let p = f.main.manifest().part.as_ref().expect("checked above");
        if p.count != first.count || p.input_sha256 != first.input_sha256 || p.input_files != first.input_files {
            bail!(
                "{} is part {}/{} of input {} ({} files), {} part {}/{} of input {} ({} files): not parts of the same pack",
                f.shown,
                p.index,
                p.count,
                p.input_sha256,
                p.input_files,
                inputs[0].shown,
                first.index,
                first.count,
                first.input_sha256,
                first.input_files
            );
        }
        if let Some(q) = prev.filter(|q| q.main.manifest().part.as_ref().map(|x| x.index) == Some(p.index)) {
            bail!("{} and {} are both part {}/{}", q.shown, f.shown, p.index, p.count);
        }
        if p.first_file != next {
            bail!(
                "input files {next}..{} of the pack are in no part given (the part that has them is missing, or packed nothing and so has no dataset)",
                p.first_file
            );
        }
        if f.main.labels() != inputs[0].main.labels()
            || !same_ranges(&f.main.manifest().sources, &inputs[0].main.manifest().sources)
        {
            bail!(
                "{} and {} have different label maps or sources: not parts of the same pack",
                f.shown,
                inputs[0].shown
            );
        }
        next = p.end_file;
        prev = Some(f);
    }
    if next != first.input_files {
        bail!("input files {next}..{} of the pack are in no part given (a part is missing)", first.input_files);
    }
    Ok(Some(first.count))
}

fn same_ranges(a: &[SourceInfo], b: &[SourceInfo]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x.id, &x.name, x.class_offset, x.classes) == (y.id, &y.name, y.class_offset, y.classes))
}

/// Refuses inputs whose records are not alike: another encoding, image size or alignment.
fn check_alike(inputs: &[Family]) -> Result<()> {
    let first = inputs[0].main.manifest();
    for f in
        inputs.iter().flat_map(|f| std::iter::once((&f.main, &f.shown)).chain(f.valid.as_ref().map(|v| (v, &f.shown))))
    {
        let m = f.0.manifest();
        if m.encoding != first.encoding {
            bail!(
                "{} stores {:?} {}x{} records (quality {:?}), {} {:?} {}x{} (quality {:?}): a dataset has one encoding",
                f.1,
                m.encoding.format,
                m.encoding.width,
                m.encoding.height,
                m.encoding.quality,
                inputs[0].shown,
                first.encoding.format,
                first.encoding.width,
                first.encoding.height,
                first.encoding.quality
            );
        }
        if m.alignment != first.alignment {
            bail!(
                "{} and {} were aligned differently (see their manifests' `alignment`): a dataset has one alignment",
                f.1,
                inputs[0].shown
            );
        }
    }
    Ok(())
}

/// Parts: the label map and ids of the pack, unchanged.
fn keep_ids(inputs: &[Family]) -> Joined {
    let m = inputs[0].main.manifest();
    let relabel = inputs
        .iter()
        .map(|_| Relabel { source: m.sources.iter().map(|s| s.id).collect(), class: (0..m.classes).collect() })
        .collect();
    Joined {
        sources: m.sources.clone(),
        labels: inputs[0].main.labels().clone(),
        relabel,
        offsets: vec![None; inputs.len()],
    }
}

/// One input's new source of each source, and (new source, identity index) of each class.
type InputMap = (Vec<usize>, Vec<(usize, u32)>);

/// Separate datasets: sources appended, ids offset; same-named sources refused or, with
/// `same_identities`, joined by identity name.
fn join(inputs: &[Family], same_identities: bool) -> Result<Joined> {
    // Each merged source: its name and identities, in first-appearance order.
    let mut sources: Vec<(String, Vec<String>, HashMap<String, u32>)> = Vec::new();
    let mut by_name: HashMap<String, (usize, usize)> = HashMap::new();
    // Per input: new source index and (new source, identity index) of every class.
    let mut maps: Vec<InputMap> = Vec::new();
    let mut offsets = Vec::new();
    for (d, f) in inputs.iter().enumerate() {
        let m = f.main.manifest();
        let labels = f.main.labels();
        let mut src_map = Vec::new();
        let mut class_map = vec![(0usize, 0u32); m.classes as usize];
        let mut joined_any = false;
        for s in &m.sources {
            let target = match by_name.get(&s.name) {
                Some(&(k, from)) if from != d => {
                    if !same_identities {
                        bail!(
                            "source '{}' is in both {} and {}: its identities would be ambiguous. Give --same-identities if identities of the same name are the same people (one class each), or pack one of them under another source name",
                            s.name,
                            inputs[from].shown,
                            f.shown
                        );
                    }
                    joined_any = true;
                    k
                }
                _ => {
                    sources.push((s.name.clone(), Vec::new(), HashMap::new()));
                    by_name.insert(s.name.clone(), (sources.len() - 1, d));
                    sources.len() - 1
                }
            };
            src_map.push(target);
            for c in s.class_offset..s.class_offset + s.classes {
                let name = labels.entries.get(c as usize).map(|e| e.identity.clone()).with_context(|| {
                    format!("{}: class {c} of source '{}' is not in its label map", f.shown, s.name)
                })?;
                let (_, ids, index) = &mut sources[target];
                let i = *index.entry(name.clone()).or_insert_with(|| {
                    ids.push(name);
                    ids.len() as u32 - 1
                });
                class_map[c as usize] = (target, i);
            }
        }
        offsets.push(joined_any);
        maps.push((src_map, class_map));
    }
    if sources.len() > usize::from(u16::MAX) + 1 {
        bail!("the merged dataset would have {} sources; a record holds at most 65536", sources.len());
    }
    let mut infos = Vec::new();
    let mut entries = Vec::new();
    let mut offset = 0u32;
    for (id, (name, ids, _)) in sources.iter().enumerate() {
        let classes = u32::try_from(ids.len()).context("too many classes")?;
        infos.push(SourceInfo { id: id as u16, name: name.clone(), class_offset: offset, classes, records: 0 });
        for (i, identity) in ids.iter().enumerate() {
            entries.push(LabelEntry { class_id: offset + i as u32, source: name.clone(), identity: identity.clone() });
        }
        offset = offset.checked_add(classes).context("too many classes")?;
    }
    let relabel = maps
        .iter()
        .map(|(src, class)| Relabel {
            source: src.iter().map(|&s| s as u16).collect(),
            class: class.iter().map(|&(s, i)| infos[s].class_offset + i).collect(),
        })
        .collect::<Vec<_>>();
    let offsets = offsets
        .iter()
        .zip(&relabel)
        .zip(inputs)
        .map(|((&joined_any, r), f)| {
            let m = f.main.manifest();
            // A plain offset only when the input's ids moved by one constant.
            let off = r.class.first().copied().unwrap_or(0);
            (!joined_any && r.class.iter().enumerate().all(|(c, &n)| n == off + c as u32) && m.classes > 0)
                .then_some(off)
        })
        .collect();
    Ok(Joined { sources: infos, labels: LabelMap { entries }, relabel, offsets })
}

/// Writes the inputs' rejects lists, in order, as one (header once); returns its rows.
fn join_rejects(inputs: &[Family], target: &std::path::Path) -> Result<u64> {
    let mut out = crate::rejects::HEADER.to_string();
    let mut rows = 0;
    for f in inputs {
        let p = f.main.paths().rejects();
        if !p.is_file() {
            continue;
        }
        let text = facekit_io::bounded::read_string(&p, facekit_io::bounded::TABLE)?;
        let mut lines = text.lines();
        if lines.next().map(|h| format!("{h}\n")).as_deref() != Some(crate::rejects::HEADER) {
            bail!("{} is not a rejects list (its first line is not `path<TAB>reason<TAB>detail`)", p.display());
        }
        for line in lines.filter(|l| !l.is_empty()) {
            out.push_str(line);
            out.push('\n');
            rows += 1;
        }
    }
    facekit_io::durable::write(target, out.as_bytes()).with_context(|| format!("cannot write {}", target.display()))?;
    Ok(rows)
}
