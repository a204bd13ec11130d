//! The dataset manifest (JSON), the label map (TSV) and the naming of a dataset's files.

use super::error::{Error, Result};
use super::format::Encoding;
use facekit_io::{bounded, durable, tsv};
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// Value of the manifest's `format` field.
pub(crate) const MANIFEST_FORMAT: &str = "facekit-dataset";
/// The manifest version this build writes and reads.
pub(crate) const MANIFEST_VERSION: u32 = 1;

/// Where a dataset's files live: `dir/name.manifest.json`, `dir/name-00000.shard`, ...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetPaths {
    dir: PathBuf,
    name: String,
}

impl DatasetPaths {
    /// The dataset called `base` (`training/celeb` means folder `training`, name `celeb`).
    pub fn new(base: impl AsRef<Path>) -> Self {
        let base = base.as_ref();
        let dir = base.parent().map(Path::to_path_buf).unwrap_or_default();
        let name = base.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        DatasetPaths { dir, name }
    }

    /// Finds a dataset from what a user typed: a manifest path, a dataset base path, or a bare
    /// name looked up in `data_dir`.
    pub fn resolve(arg: &str, data_dir: Option<&Path>) -> Result<Self> {
        let stripped = arg.strip_suffix(".manifest.json").unwrap_or(arg);
        let direct = DatasetPaths::new(stripped);
        if direct.manifest().is_file() {
            return Ok(direct);
        }
        if let Some(dir) = data_dir {
            let in_dir = DatasetPaths::new(dir.join(stripped));
            if in_dir.manifest().is_file() {
                return Ok(in_dir);
            }
            return Err(Error::NotFound {
                name: arg.into(),
                looked: format!("neither {} nor {} exists", direct.manifest().display(), in_dir.manifest().display()),
            });
        }
        Err(Error::NotFound { name: arg.into(), looked: format!("{} does not exist", direct.manifest().display()) })
    }

    /// The dataset's name (file stem shared by all its files).
    pub fn name(&self) -> String {
        self.name.clone()
    }

    /// The folder holding the dataset.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `name.manifest.json`.
    pub fn manifest(&self) -> PathBuf {
        self.file(".manifest.json")
    }

    /// `name.labels.tsv`.
    pub fn labels(&self) -> PathBuf {
        self.file(".labels.tsv")
    }

    /// `name.report.json` (written by `facekit pack`).
    pub fn report(&self) -> PathBuf {
        self.file(".report.json")
    }

    /// `name.rejects.tsv` (written by `facekit pack`).
    pub fn rejects(&self) -> PathBuf {
        self.file(".rejects.tsv")
    }

    /// `name.lock`: held exclusively by a writer of this dataset, shared by its readers (see
    /// [`facekit_io::lock`]).
    pub fn lock(&self) -> PathBuf {
        self.file(".lock")
    }

    /// `name.progress.json` (kept by `facekit pack` for `--resume`).
    pub fn progress(&self) -> PathBuf {
        self.file(".progress.json")
    }

    /// Shard number `n`: `name-00000.shard`.
    pub fn shard(&self, n: usize) -> PathBuf {
        self.file(&format!("-{n:05}.shard"))
    }

    /// Where a dataset that will replace this one is written until it is complete:
    /// `.NAME.staging/NAME*` beside it (same file names, so its manifest holds once moved).
    pub fn staging(&self) -> Self {
        DatasetPaths { dir: self.dir.join(format!(".{}.staging", self.name)), name: self.name.clone() }
    }

    /// The dataset `path` is a file of (manifest, label map, shard, rejects list, report,
    /// progress file or lock of a dataset whose manifest or progress file is beside it), if any:
    /// the [`facekit_io::output::Recogniser`] of datasets, so that no command writes over one
    /// it did not create.
    pub fn owner_of(path: &Path) -> Option<facekit_io::output::Owner> {
        let file = path.file_name()?.to_str()?;
        let dir = path.parent()?;
        let shard_stem = file
            .strip_suffix(".shard")
            .and_then(|s| s.rsplit_once('-'))
            .filter(|(_, n)| is_shard_number(n))
            .map(|(name, _)| name);
        let stems = FILE_SUFFIXES
            .iter()
            .chain([".lock"].iter())
            .filter_map(|suffix| file.strip_suffix(suffix))
            .chain(shard_stem);
        stems
            .map(|name| DatasetPaths { dir: dir.to_path_buf(), name: name.to_string() })
            .find(|d| d.manifest().is_file() || d.progress().is_file())
            .map(|d| {
                let root = d.dir.join(&d.name);
                facekit_io::output::Owner { what: format!("dataset {}", root.display()), root }
            })
    }

    /// A sibling dataset whose name has `suffix` appended (`celeb` -> `celeb.valid`).
    pub fn with_suffix(&self, suffix: &str) -> Self {
        DatasetPaths { dir: self.dir.clone(), name: format!("{}{suffix}", self.name) }
    }

    /// Shard files of this dataset present on disk, by number.
    pub fn shards_on_disk(&self) -> Result<Vec<(usize, PathBuf)>> {
        let dir = if self.dir.as_os_str().is_empty() { Path::new(".") } else { &self.dir };
        let mut found = Vec::new();
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
            Err(e) => return Err(Error::io("list", dir)(e)),
        };
        let prefix = format!("{}-", self.name);
        for entry in entries {
            let entry = entry.map_err(Error::io("list", dir))?;
            let fname = entry.file_name().to_string_lossy().into_owned();
            if let Some(num) = fname.strip_prefix(&prefix).and_then(|r| r.strip_suffix(".shard")) {
                if num.len() >= 5 && num.bytes().all(|c| c.is_ascii_digit()) {
                    if let Ok(n) = num.parse() {
                        found.push((n, entry.path()));
                    }
                }
            }
        }
        found.sort();
        Ok(found)
    }

    /// Removes temporary files (`.tmp-PID-<one of this dataset's files>`, see [`facekit_io::durable`])
    /// that a killed writer left behind; returns how many. Call it only while holding the
    /// dataset's exclusive [`DatasetPaths::lock`]: that proves no other process writes them,
    /// whatever PID their name carries (a reused or zombie PID included). They never look like a
    /// dataset file, but a hard-killed pack of 1 GiB shards should not leave a gigabyte behind
    /// per crash.
    pub fn remove_stale_temps(&self) -> Result<usize> {
        let dir = if self.dir.as_os_str().is_empty() { Path::new(".") } else { &self.dir };
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::io("list", dir)(e)),
        };
        let ours = |target: &str| {
            let Some(rest) = target.strip_prefix(self.name.as_str()) else { return false };
            FILE_SUFFIXES.contains(&rest)
                || rest.strip_prefix('-').and_then(|r| r.strip_suffix(".shard")).is_some_and(is_shard_number)
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(Error::io("list", dir))?;
            let fname = entry.file_name().to_string_lossy().into_owned();
            let Some((pid, target)) = fname.strip_prefix(".tmp-").and_then(|r| r.split_once('-')) else { continue };
            if pid.parse::<u32>().is_err() {
                continue;
            }
            if ours(target) && pid != std::process::id().to_string() {
                remove_if_exists(&entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Removes the manifest, label map and every shard of this dataset.
    pub fn remove_existing(&self) -> Result<()> {
        for p in [self.manifest(), self.labels()] {
            remove_if_exists(&p)?;
        }
        self.remove_shards_from(0)
    }

    /// Removes shards numbered `first` and above.
    pub fn remove_shards_from(&self, first: usize) -> Result<()> {
        for (n, p) in self.shards_on_disk()? {
            if n >= first {
                remove_if_exists(&p)?;
            }
        }
        Ok(())
    }

    fn file(&self, suffix: &str) -> PathBuf {
        self.dir.join(format!("{}{suffix}", self.name))
    }
}

/// The endings of a dataset's files after its name, shards (`-00000.shard`) and lock aside.
const FILE_SUFFIXES: [&str; 6] =
    [".manifest.json", ".labels.tsv", ".report.json", ".rejects.tsv", ".progress.json", ".rejects.tsv.partial"];

/// True for the number part of a shard's file name (five digits or more).
fn is_shard_number(n: &str) -> bool {
    n.len() >= 5 && n.bytes().all(|c| c.is_ascii_digit())
}

fn remove_if_exists(p: &Path) -> Result<()> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", p)(e)),
    }
}

/// One shard as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// File name, relative to the manifest's folder.
    pub file: String,
    /// Number of records.
    pub records: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// CRC32 of the whole file.
    pub crc32: u32,
}

/// One source (a top-level collection such as MS-Celeb-1M-v1c) and its class-id range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// Source number, as stored in records.
    pub id: u16,
    /// Source name (folder name).
    pub name: String,
    /// First class id of this source.
    pub class_offset: u32,
    /// Number of classes (identities) of this source.
    pub classes: u32,
    /// Number of records from this source.
    pub records: u64,
}

/// How faces were aligned before packing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlignmentInfo {
    /// Alignment method, e.g. `dlib-5pt-similarity`.
    pub method: String,
    /// Face detector used (`hog`, `cnn`), or `landmarks-file` when landmarks were given.
    pub detector: String,
    /// Output side in pixels.
    pub size: u32,
    /// Padding around the template, as a fraction of the face (dlib's meaning).
    pub padding: f64,
    /// Name of the landmark template.
    pub template: String,
    /// Template points in output pixels, in landmark order.
    pub template_points: Vec<[f64; 2]>,
    /// Interpolation used when sampling.
    pub interpolation: String,
}

/// The file an imported dataset was made from (`facekit import rec`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginInfo {
    /// The format read, e.g. `mxnet-recordio`.
    pub format: String,
    /// The file read.
    pub path: String,
    /// Its layout: `insightface` (header and identity records) or `im2rec` (images only).
    pub layout: String,
    /// Its index file, when there was one.
    pub idx: Option<String>,
    /// insightface's `property` file, when there was one.
    pub property: Option<String>,
}

/// How the images in the records are encoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodingInfo {
    /// Encoding of every record.
    pub format: Encoding,
    /// JPEG quality, for JPEG.
    pub quality: Option<u8>,
    /// JPEG chroma subsampling (`420`, `444`), for JPEG written by `facekit pack`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chroma: Option<String>,
    /// Image width of every record.
    pub width: u32,
    /// Image height of every record.
    pub height: u32,
}

/// The manifest: what a dataset holds and how it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always `facekit-dataset`.
    pub format: String,
    /// Manifest version (1).
    pub format_version: u32,
    /// Dataset name.
    pub name: String,
    /// The facekit version that wrote it.
    pub tool_version: String,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
    /// Total number of records.
    pub records: u64,
    /// Number of identity classes (class ids are `0..classes`).
    pub classes: u32,
    /// The sources and their class ranges.
    pub sources: Vec<SourceInfo>,
    /// How the faces were aligned, if they were.
    pub alignment: Option<AlignmentInfo>,
    /// How the images are encoded.
    pub encoding: EncodingInfo,
    /// File name of the label map.
    pub label_map: String,
    /// The shards, in order.
    pub shards: Vec<ShardInfo>,
    /// Where the records came from when they were imported rather than packed from photos.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<OriginInfo>,
    /// Which part of a pack split across machines this dataset is (`facekit pack --part K/N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<PartInfo>,
    /// The datasets `facekit merge` joined into this one, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_from: Option<Vec<MergedInput>>,
    /// What `facekit filter` removed to make this dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filtered: Option<FilterInfo>,
}

/// One part of a pack split across machines: a run of whole identities of the input stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartInfo {
    /// The part's number, from 1.
    pub index: u32,
    /// How many parts the input was split into.
    pub count: u32,
    /// The fingerprint of the whole input (every part of one pack has the same).
    pub input_sha256: String,
    /// Files of the whole input.
    pub input_files: u64,
    /// The part's first file in the input stream (from 0).
    pub first_file: u64,
    /// One past the part's last file in the input stream.
    pub end_file: u64,
}

/// One dataset joined by `facekit merge`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergedInput {
    /// The dataset, as given (`training/celeb.part1`).
    pub dataset: String,
    /// Its records copied.
    pub records: u64,
    /// Its first class id in the merged dataset (its ids are offset by this much), or `None`
    /// where identities were matched by name (`--same-identities`) or ids kept (parts).
    pub class_offset: Option<u32>,
}

/// What `facekit filter` dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterInfo {
    /// The dataset filtered.
    pub from: String,
    /// The `--drop` list (records by key), if given.
    pub drop: Option<DropListInfo>,
    /// The `--drop-identities` list, if given.
    pub drop_identities: Option<DropListInfo>,
    /// Records removed (listed, or of a dropped identity).
    pub records_dropped: u64,
    /// Classes removed from the label map (0 with `--keep-ids`).
    pub classes_dropped: u32,
    /// Class ids kept as they were (`--keep-ids`) rather than renumbered.
    pub kept_ids: bool,
}

/// One drop list given to `facekit filter`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropListInfo {
    /// The file, as given.
    pub path: String,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
    /// Entries it lists.
    pub entries: u64,
    /// Entries that matched nothing in the dataset.
    pub unmatched: u64,
}

impl Manifest {
    /// A manifest with the given content and no shards yet (the writer fills those in).
    pub fn new(
        classes: u32,
        sources: Vec<SourceInfo>,
        alignment: Option<AlignmentInfo>,
        encoding: EncodingInfo,
    ) -> Self {
        Manifest {
            format: MANIFEST_FORMAT.into(),
            format_version: MANIFEST_VERSION,
            name: String::new(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            records: 0,
            classes,
            sources,
            alignment,
            encoding,
            label_map: String::new(),
            shards: Vec::new(),
            origin: None,
            part: None,
            merged_from: None,
            filtered: None,
        }
    }

    /// Reads a manifest and checks its format and version ([`Manifest::problems`] checks the rest).
    pub fn read(path: &Path) -> Result<Self> {
        let text = bounded::read(path, bounded::MANIFEST)?;
        let m = Self::from_json(&text).map_err(|reason| Error::invalid(path, reason))?;
        Ok(m)
    }

    /// Parses a manifest's bytes and checks its format and version.
    pub fn from_json(text: &[u8]) -> std::result::Result<Self, String> {
        let m: Manifest = serde_json::from_slice(text).map_err(|e| format!("is not a valid manifest: {e}"))?;
        if m.format != MANIFEST_FORMAT {
            return Err(format!("is not a facekit manifest (format is '{}')", m.format));
        }
        if m.format_version != MANIFEST_VERSION {
            return Err(format!("has unsupported manifest version {}", m.format_version));
        }
        Ok(m)
    }

    /// What is wrong with the manifest on its own (before any shard is opened): shard or label-map
    /// names that are not plain file names of the manifest's folder, a shard listed twice, counts
    /// that do not add up, an impossible image size. Empty when it is sound.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !bounded::is_plain_name(&self.label_map) {
            out.push(format!("label_map '{}' is not a file name in the manifest's folder", self.label_map));
        }
        let mut seen = std::collections::HashSet::new();
        for (k, sh) in self.shards.iter().enumerate() {
            if !bounded::is_plain_name(&sh.file) || !sh.file.ends_with(".shard") {
                out.push(format!("shards[{k}].file '{}' is not a .shard file name in the manifest's folder", sh.file));
            } else if !seen.insert(sh.file.as_str()) {
                out.push(format!("shards[{k}].file '{}' is listed twice", sh.file));
            }
        }
        let total = self.shards.iter().try_fold(0u64, |t, sh| t.checked_add(sh.records));
        if total != Some(self.records) {
            out.push(format!(
                "its shards list {} records, its total says {}",
                total.map_or("too many".into(), |t| t.to_string()),
                self.records
            ));
        }
        let e = &self.encoding;
        let pixels = u64::from(e.width) * u64::from(e.height);
        if e.width == 0
            || e.height == 0
            || e.width > u32::from(u16::MAX)
            || e.height > u32::from(u16::MAX)
            || pixels > super::format::MAX_RECORD_PIXELS
        {
            out.push(format!(
                "encoding size {}x{} is not a record size (1 to 65535 pixels a side, at most {} pixels)",
                e.width,
                e.height,
                super::format::MAX_RECORD_PIXELS
            ));
        }
        out
    }

    /// Writes the manifest atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        Ok(durable::write_json(path, self)?)
    }
}

/// One line of the label map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelEntry {
    /// Class id.
    pub class_id: u32,
    /// Source name.
    pub source: String,
    /// Identity name (the folder name).
    pub identity: String,
}

/// Identity name to class id, per source. Stored as TSV: `class_id<TAB>source<TAB>identity`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelMap {
    /// Entries, sorted by class id.
    pub entries: Vec<LabelEntry>,
}

impl LabelMap {
    /// Writes the label map atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut out = String::from("class_id\tsource\tidentity\n");
        for e in &self.entries {
            out.push_str(&format!("{}\t{}\t{}\n", e.class_id, tsv::field(&e.source), tsv::field(&e.identity)));
        }
        Ok(durable::write(path, out.as_bytes())?)
    }

    /// Reads a label map. Class ids must be 0, 1, 2, ... in order (as facekit writes them):
    /// a duplicate, missing or unsorted id is an error naming its line.
    pub fn read(path: &Path) -> Result<Self> {
        let text = bounded::read_string(path, bounded::LABEL_MAP)?;
        Self::parse(&text).map_err(|reason| Error::invalid(path, format!("is not a valid label map: {reason}")))
    }

    /// Parses the text of a label map (see [`LabelMap::read`]); the error names the line.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let mut lines = text.lines().enumerate();
        match lines.next() {
            Some((_, h)) if h.trim_end_matches('\r') == "class_id\tsource\tidentity" => {}
            _ => return Err("line 1: expected the header `class_id<TAB>source<TAB>identity`".into()),
        }
        let mut entries = Vec::new();
        for (i, line) in lines {
            let mut f = line.trim_end_matches('\r').split('\t');
            let (Some(id), Some(source), Some(identity), None) = (f.next(), f.next(), f.next(), f.next()) else {
                return Err(format!("line {}: expected 3 tab-separated fields", i + 1));
            };
            let class_id: u32 = id.parse().map_err(|_| format!("line {}: class id '{id}' is not a number", i + 1))?;
            if class_id as usize != entries.len() {
                return Err(format!(
                    "line {}: class id {class_id} where {} was expected (ids are 0, 1, 2, ... in order, each once)",
                    i + 1,
                    entries.len()
                ));
            }
            entries.push(LabelEntry { class_id, source: source.into(), identity: identity.into() });
        }
        Ok(LabelMap { entries })
    }

    /// The identity name of a class, if known.
    pub fn identity(&self, class_id: u32) -> Option<&str> {
        self.entries.binary_search_by_key(&class_id, |e| e.class_id).ok().map(|i| self.entries[i].identity.as_str())
    }
}
