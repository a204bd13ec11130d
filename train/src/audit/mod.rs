//! `facekit audit`: every record of a dataset embedded with a face network, then exact and near
//! duplicates, probable mislabels, identities that are probably one person, and overlap with
//! evaluation sets, each a list a person (or `facekit filter --drop`) can act on (docs/CURATE.md).

pub mod cache;
pub mod search;
pub mod sheet;

use crate::events::{Event, FaceWork, Observer};
use crate::infer::embed::{self, EmbedModel};
use anyhow::{bail, Context, Result};
use facekit_pack::align::dlib::{FaceEncoder, ENCODER_MODEL, ENCODING_DIM};
use image::RgbImage;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::Device;

/// The network that embeds the faces.
pub enum Network {
    /// A facekit run or export (`--model`).
    Model(Box<EmbedModel>),
    /// dlib's face encoder from the models folder (the default).
    Dlib {
        /// The models folder (`None`: dlib's default, see `facekit_pack::align::dlib::models_dir`).
        models: Option<PathBuf>,
    },
}

/// Images handed to the network per progress event.
const CHUNK: usize = 64;

impl Network {
    /// Embedding size.
    pub fn dim(&self) -> usize {
        match self {
            Network::Model(m) => m.dim(),
            Network::Dlib { .. } => ENCODING_DIM,
        }
    }

    /// The file that holds the network's weights.
    pub fn weights(&self) -> PathBuf {
        match self {
            Network::Model(m) => m.weights.clone(),
            Network::Dlib { models } => facekit_pack::align::dlib::models_dir(models.as_deref()).join(ENCODER_MODEL),
        }
    }

    /// What the report calls it: `dlib` or `facekit`, with its weights file.
    pub fn describe(&self) -> String {
        let kind = if matches!(self, Network::Dlib { .. }) { "dlib" } else { "facekit" };
        format!("{kind}:{}", self.weights().display())
    }

    /// The default thresholds for this network (docs/CURATE.md, "Audit", says how each was chosen).
    pub fn default_thresholds(&self) -> Thresholds {
        match self {
            Network::Dlib { .. } => Thresholds { near: 0.95, mislabel: 0.40, same_person: 0.75, member: 0.75 },
            Network::Model(_) => Thresholds { near: 0.90, mislabel: 0.30, same_person: 0.60, member: 0.45 },
        }
    }

    /// Whether similarities are taken after subtracting the audited dataset's mean embedding:
    /// dlib's descriptors share a large common component (any two faces, of anyone, are at
    /// least about 0.8 similar as they come), which the mean removes; a facekit network is
    /// trained on cosine similarity and is used as it is.
    pub fn centred(&self) -> bool {
        matches!(self, Network::Dlib { .. })
    }

    /// L2-normalised embeddings of `n` images made by `image(i)`, telling `events` how far it is.
    pub fn embed(
        &self,
        n: usize,
        batch_size: usize,
        events: &Observer,
        image: impl Fn(usize) -> Result<RgbImage> + Sync,
    ) -> Result<Vec<f32>> {
        let mut out = match self {
            Network::Model(m) => {
                let size = m.image_size();
                embed::embed_all(m, n, batch_size, false, events, |i, buf| {
                    buf.copy_from_slice(crate::embedding::resize(&image(i)?, size).as_raw());
                    Ok(())
                })?
            }
            Network::Dlib { models } => {
                let threads = rayon::current_num_threads().max(1);
                let mut encoders: Vec<FaceEncoder> = (0..threads.min(n.max(1)))
                    .into_par_iter()
                    .map(|_| FaceEncoder::new(models.as_deref()))
                    .collect::<Result<_>>()?;
                let work = FaceWork::Embedding;
                events.emit(Event::FacesBegin { work, total: n as u64, done: 0 });
                let mut out = vec![0f32; n * ENCODING_DIM];
                let threads_used = encoders.len();
                for (c, chunk) in out.chunks_mut(CHUNK * ENCODING_DIM).enumerate() {
                    let per = chunk.len().div_ceil(ENCODING_DIM * threads_used).max(1) * ENCODING_DIM;
                    chunk.par_chunks_mut(per).zip(encoders.par_iter_mut()).enumerate().try_for_each(
                        |(t, (part, enc))| -> Result<()> {
                            for (k, row) in part.chunks_mut(ENCODING_DIM).enumerate() {
                                let i = c * CHUNK + t * per / ENCODING_DIM + k;
                                let (v, _found) = enc.encode(&image(i)?)?;
                                row.copy_from_slice(&v);
                            }
                            Ok(())
                        },
                    )?;
                    events.emit(Event::FacesDone { work, count: (chunk.len() / ENCODING_DIM) as u64 });
                }
                events.emit(Event::FacesEnd { work });
                out
            }
        };
        normalise(&mut out, self.dim());
        Ok(out)
    }
}

/// The mean of `n x dim` rows.
pub fn mean(values: &[f32], dim: usize) -> Vec<f32> {
    let mut m = vec![0f32; dim];
    let n = values.len() / dim.max(1);
    for row in values.chunks(dim.max(1)) {
        m.iter_mut().zip(row).for_each(|(a, v)| *a += v);
    }
    m.iter_mut().for_each(|a| *a /= n.max(1) as f32);
    m
}

/// Subtracts `mean` from every row and scales it back to unit length.
pub fn centre(values: &mut [f32], mean: &[f32]) {
    for row in values.chunks_mut(mean.len().max(1)) {
        row.iter_mut().zip(mean).for_each(|(v, m)| *v -= m);
    }
    normalise(values, mean.len());
}

/// Scales every row to unit length (a zero row stays zero).
pub fn normalise(values: &mut [f32], dim: usize) {
    for row in values.chunks_mut(dim.max(1)) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|v| *v /= norm);
        }
    }
}

/// Similarity thresholds (cosine of L2-normalised embeddings).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Two faces at least this similar are near duplicates (and a training face this similar to
    /// an evaluation face overlaps it).
    pub near: f32,
    /// A record less similar than this to its identity's centre (without it) is a probable mislabel.
    pub mislabel: f32,
    /// Two identities whose centres are at least this similar are probably one person (and an
    pub same_person: f32,
    /// A face at least this similar to an identity's centre is that person (an evaluation face
    /// whose person is in the training set).
    pub member: f32,
}

/// The records of a dataset as the audit sees them.
pub struct Faces {
    /// Each record's key as the dataset stores it.
    pub keys: Vec<String>,
    /// Each record's identity name (empty when unlabelled).
    pub identities: Vec<String>,
    /// SHA-256 of each record's stored bytes.
    pub bytes: Vec<[u8; 32]>,
    /// SHA-256 of each record's decoded pixels (with its size).
    pub pixels: Vec<[u8; 32]>,
}

/// Decodes one record at its stored size.
pub fn record_image(ds: &facekit_shard::Dataset, i: usize) -> Result<RgbImage> {
    let rec = ds.record(i)?;
    let size = u32::from(rec.header.width.max(rec.header.height)).max(1);
    facekit_data::decode::decode_record(&rec, size)
        .with_context(|| format!("record {i} ({}) cannot be decoded", String::from_utf8_lossy(rec.path)))
}

impl Faces {
    /// Reads keys, identities and both hashes of every record (decoding all, in parallel).
    pub fn read(ds: &facekit_shard::Dataset) -> Result<Faces> {
        let rows: Vec<(String, String, [u8; 32], [u8; 32])> = (0..ds.len())
            .into_par_iter()
            .map(|i| -> Result<_> {
                let rec = ds.record(i)?;
                let identity = rec.labels().class_id.and_then(|c| ds.labels().identity(c)).unwrap_or("").to_string();
                let key = String::from_utf8_lossy(rec.path).into_owned();
                let bytes: [u8; 32] = Sha256::digest(rec.payload).into();
                let img = record_image(ds, i)?;
                let mut h = Sha256::new();
                h.update(img.width().to_le_bytes());
                h.update(img.height().to_le_bytes());
                h.update(img.as_raw());
                Ok((key, identity, bytes, h.finalize().into()))
            })
            .collect::<Result<_>>()
            .with_context(|| format!("dataset {}", ds.paths().name()))?;
        let mut f = Faces { keys: vec![], identities: vec![], bytes: vec![], pixels: vec![] };
        for (k, id, b, p) in rows {
            f.keys.push(k);
            f.identities.push(id);
            f.bytes.push(b);
            f.pixels.push(p);
        }
        Ok(f)
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// One face a finding points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Face {
    /// A record of the audited dataset.
    Record(usize),
    /// Image `image` of evaluation set `set`.
    Eval {
        /// Index into the evaluation sets.
        set: usize,
        /// Image within it.
        image: usize,
    },
    /// An identity (its first record is its picture).
    Identity(usize),
}

/// One line of a finding's list.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The record (or identity) the line is about: what `filter --drop` would drop.
    pub subject: Face,
    /// Its similarity to the partner.
    pub score: f32,
    /// What it was found against.
    pub partner: Option<Face>,
    /// A word on the kind of case (`bytes`, `pixels`, `within`, `across`, `record`, `identity`).
    pub note: &'static str,
}

/// Where the faces of a set that the dataset is checked against come from.
pub enum SetFaces {
    /// An insightface verification `.bin`: its images, decoded.
    Bin(Vec<RgbImage>),
    /// Photos named by a pairs file, cut as the audited dataset's records were: the chips, each
    /// photo's path relative to the image root (`Name/Name_0001.jpg`) and its person.
    Photos {
        /// The chips, decoded.
        images: Vec<RgbImage>,
        /// Each photo's relative path.
        names: Vec<String>,
        /// Each photo's person.
        identities: Vec<String>,
    },
    /// Another dataset: its records, read when drawn, with each one's key and identity.
    Dataset {
        /// The dataset.
        ds: Box<facekit_shard::Dataset>,
        /// Each record's key as the dataset stores it.
        keys: Vec<String>,
        /// Each record's identity name (empty when unlabelled).
        identities: Vec<String>,
    },
}

/// A set of faces the dataset is checked against (`--against`), embedded.
pub struct EvalSet {
    /// Its name (the `.bin`'s file stem, or the dataset's name).
    pub name: String,
    /// The `.bin` file, or the dataset's manifest.
    pub path: PathBuf,
    /// Its faces.
    pub faces: SetFaces,
    /// Their embeddings, L2-normalised.
    pub embeddings: Vec<f32>,
}

impl EvalSet {
    /// Reads an insightface `.bin` and embeds its images with `net`.
    pub fn load(path: &Path, net: &Network, batch_size: usize, events: &Observer) -> Result<EvalSet> {
        let bin = facekit_eval::pickle::VerificationBin::read(path)?;
        let images: Vec<RgbImage> = bin
            .images
            .par_iter()
            .enumerate()
            .map(|(i, b)| {
                facekit_pack::photo::decode_image(b)
                    .with_context(|| format!("{}: image {i} cannot be decoded", path.display()))
            })
            .collect::<Result<_>>()?;
        let embeddings = net.embed(images.len(), batch_size, events, |i| Ok(images[i].clone()))?;
        let name = crate::embedding::bins::bin_name(path);
        Ok(EvalSet { name, path: path.to_path_buf(), faces: SetFaces::Bin(images), embeddings })
    }

    /// Photos as a set (`pairs`: the pairs file that named them): each of `images` with its
    /// relative path and person, embedded with `net`.
    pub fn photos(
        pairs: &Path,
        images: Vec<RgbImage>,
        names: Vec<String>,
        identities: Vec<String>,
        net: &Network,
        batch_size: usize,
        events: &Observer,
    ) -> Result<EvalSet> {
        let embeddings = net.embed(images.len(), batch_size, events, |i| Ok(images[i].clone()))?;
        let name = crate::embedding::bins::bin_name(pairs);
        Ok(EvalSet {
            name,
            path: pairs.to_path_buf(),
            faces: SetFaces::Photos { images, names, identities },
            embeddings,
        })
    }

    /// Another dataset as a set, with its records' `embeddings` (made by the caller, who caches
    /// them: [`cache`]).
    pub fn dataset(ds: facekit_shard::Dataset, embeddings: Vec<f32>) -> Result<EvalSet> {
        let (keys, identities) = keys_and_identities(&ds)?;
        Ok(EvalSet {
            name: ds.paths().name(),
            path: ds.paths().manifest(),
            faces: SetFaces::Dataset { ds: Box::new(ds), keys, identities },
            embeddings,
        })
    }

    /// Number of faces.
    pub fn len(&self) -> usize {
        match &self.faces {
            SetFaces::Bin(images) | SetFaces::Photos { images, .. } => images.len(),
            SetFaces::Dataset { keys, .. } => keys.len(),
        }
    }

    /// Whether there are no faces.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Face `i`'s picture.
    pub fn image(&self, i: usize) -> Result<RgbImage> {
        match &self.faces {
            SetFaces::Bin(images) | SetFaces::Photos { images, .. } => Ok(images[i].clone()),
            SetFaces::Dataset { ds, .. } => record_image(ds, i),
        }
    }

    /// How a list names face `i` and its identity: `SET#IMAGE` for a `.bin` (no identity), `SET#KEY`
    /// and the identity for a dataset.
    pub fn label(&self, i: usize) -> (String, String) {
        match &self.faces {
            SetFaces::Bin(_) => (format!("{}#{i}", self.name), String::new()),
            SetFaces::Photos { names, identities, .. } => {
                (format!("{}#{}", self.name, names[i]), identities[i].clone())
            }
            SetFaces::Dataset { keys, identities, .. } => (format!("{}#{}", self.name, keys[i]), identities[i].clone()),
        }
    }
}

/// Each record's key and identity name (empty when unlabelled).
pub fn keys_and_identities(ds: &facekit_shard::Dataset) -> Result<(Vec<String>, Vec<String>)> {
    let rows: Vec<(String, String)> = (0..ds.len())
        .into_par_iter()
        .map(|i| -> Result<_> {
            let rec = ds.record(i)?;
            let identity = rec.labels().class_id.and_then(|c| ds.labels().identity(c)).unwrap_or("").to_string();
            Ok((String::from_utf8_lossy(rec.path).into_owned(), identity))
        })
        .collect::<Result<_>>()
        .with_context(|| format!("dataset {}", ds.paths().name()))?;
    Ok(rows.into_iter().unzip())
}

/// What the audit found: one list per kind, each sorted worst first.
pub struct Findings {
    /// Records whose bytes or decoded pixels repeat an earlier record's (the earlier one is the partner).
    pub exact: Vec<Row>,
    /// Pairs of records at least `near` similar (the later one is the subject).
    pub near: Vec<Row>,
    /// Records far from their identity's centre, least similar first (partner: the nearest other identity).
    pub mislabels: Vec<Row>,
    /// Pairs of identities whose centres are at least `same_person` similar (the smaller identity is the subject).
    pub same_person: Vec<Row>,
    /// Per evaluation set: records at least `near` similar to one of its faces, and identities
    /// whose centre is at least `member` similar to one.
    pub overlap: Vec<Vec<Row>>,
}

fn by_score_desc(rows: &mut [Row]) {
    rows.sort_by(|a, b| b.score.total_cmp(&a.score));
}

/// Runs every check over `faces` and their L2-normalised `emb` (`dim` wide) on `device`.
pub fn analyse(
    faces: &Faces,
    emb: &[f32],
    dim: usize,
    sets: &[EvalSet],
    t: &Thresholds,
    device: Device,
) -> Result<Findings> {
    let n = faces.len();
    if emb.len() != n * dim {
        bail!("{} embedding values are not {n} records of {dim}", emb.len());
    }
    // Exact duplicates: the first record of each content is the one kept.
    let mut exact = Vec::new();
    let (mut first_bytes, mut first_pixels) = (HashMap::new(), HashMap::new());
    for i in 0..n {
        let fb = *first_bytes.entry(faces.bytes[i]).or_insert(i);
        let fp = *first_pixels.entry(faces.pixels[i]).or_insert(i);
        if fb != i {
            exact.push(Row { subject: Face::Record(i), score: 1.0, partner: Some(Face::Record(fb)), note: "bytes" });
        } else if fp != i {
            exact.push(Row { subject: Face::Record(i), score: 1.0, partner: Some(Face::Record(fp)), note: "pixels" });
        }
    }
    let all = search::matrix(emb, dim, device);
    let mut near: Vec<Row> = search::pairs_above(&all, None, t.near)
        .into_iter()
        .map(|(i, j, s)| Row {
            subject: Face::Record(j),
            score: s,
            partner: Some(Face::Record(i)),
            note: if faces.identities[i] == faces.identities[j] { "within" } else { "across" },
        })
        .collect();
    by_score_desc(&mut near);

    // Identities: members, sums of embeddings, centres.
    let mut names: Vec<&str> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut member = vec![usize::MAX; n];
    for (i, id) in faces.identities.iter().enumerate() {
        if id.is_empty() {
            continue;
        }
        let k = *index.entry(id.as_str()).or_insert_with(|| {
            names.push(id.as_str());
            names.len() - 1
        });
        member[i] = k;
    }
    let ids = names.len();
    let mut sums = vec![0f32; ids * dim];
    let mut counts = vec![0usize; ids];
    for i in 0..n {
        let k = member[i];
        if k == usize::MAX {
            continue;
        }
        counts[k] += 1;
        for (s, v) in sums[k * dim..(k + 1) * dim].iter_mut().zip(&emb[i * dim..(i + 1) * dim]) {
            *s += v;
        }
    }
    let mut centres = sums.clone();
    normalise(&mut centres, dim);
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();

    // Mislabels: each record against its identity's centre without it (with it, one wrong
    // photo among a few would pull the centre towards itself); identities of fewer than 3
    // records have no centre worth the name.
    let mut mislabels = Vec::new();
    for i in 0..n {
        let k = member[i];
        if k == usize::MAX || counts[k] < 3 {
            continue;
        }
        let e = &emb[i * dim..(i + 1) * dim];
        let mut c: Vec<f32> = sums[k * dim..(k + 1) * dim].iter().zip(e).map(|(s, v)| s - v).collect();
        normalise(&mut c, dim);
        let score = dot(e, &c);
        if score < t.mislabel {
            let best = (0..ids).filter(|&o| o != k).max_by(|&a, &b| {
                dot(e, &centres[a * dim..(a + 1) * dim]).total_cmp(&dot(e, &centres[b * dim..(b + 1) * dim]))
            });
            mislabels.push(Row { subject: Face::Record(i), score, partner: best.map(Face::Identity), note: "record" });
        }
    }
    mislabels.sort_by(|a, b| a.score.total_cmp(&b.score));

    let centre_m = search::matrix(&centres, dim, device);
    let mut same_person: Vec<Row> = search::pairs_above(&centre_m, None, t.same_person)
        .into_iter()
        .map(|(a, b, s)| {
            let (small, big) = if counts[b] <= counts[a] { (b, a) } else { (a, b) };
            Row { subject: Face::Identity(small), score: s, partner: Some(Face::Identity(big)), note: "identity" }
        })
        .collect();
    by_score_desc(&mut same_person);

    let mut overlap = Vec::new();
    for (si, set) in sets.iter().enumerate() {
        let m = search::matrix(&set.embeddings, dim, device);
        let mut rows: Vec<Row> = search::pairs_above(&all, Some(&m), t.near)
            .into_iter()
            .map(|(i, j, s)| Row {
                subject: Face::Record(i),
                score: s,
                partner: Some(Face::Eval { set: si, image: j }),
                note: "record",
            })
            .collect();
        rows.extend(search::pairs_above(&centre_m, Some(&m), t.member).into_iter().map(|(k, j, s)| Row {
            subject: Face::Identity(k),
            score: s,
            partner: Some(Face::Eval { set: si, image: j }),
            note: "identity",
        }));
        by_score_desc(&mut rows);
        overlap.push(rows);
    }
    Ok(Findings { exact, near, mislabels, same_person, overlap })
}

/// Names of the identities in the order [`Face::Identity`] numbers them, with each one's first record.
pub fn identities(faces: &Faces) -> Vec<(String, usize)> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, id) in faces.identities.iter().enumerate() {
        if !id.is_empty() && !seen.contains_key(id.as_str()) {
            seen.insert(id, out.len());
            out.push((id.clone(), i));
        }
    }
    out
}

/// The columns of every finding's TSV.
pub const TSV_HEADER: &str = "record\tidentity\tscore\tpartner\tpartner_identity\tkind";

/// The TSV lines (with [`TSV_HEADER`]) of `rows`: a record's line names its key and identity; an
/// identity's line has an empty `record`; a face of a set checked against is `SET#IMAGE` (a
/// `.bin`) or `SET#KEY` (a dataset, with its identity).
pub fn tsv(rows: &[Row], faces: &Faces, sets: &[EvalSet]) -> String {
    let ids = identities(faces);
    let name = |f: Face| -> (String, String) {
        match f {
            Face::Record(i) => (faces.keys[i].clone(), faces.identities[i].clone()),
            Face::Identity(k) => (String::new(), ids[k].0.clone()),
            Face::Eval { set, image } => sets[set].label(image),
        }
    };
    let field = |s: String| facekit_io::tsv::field(&s).into_owned();
    let mut out = String::from(TSV_HEADER);
    out.push('\n');
    for r in rows {
        let (record, identity) = name(r.subject);
        let (partner, partner_identity) = match r.partner {
            Some(Face::Identity(k)) => (ids[k].0.clone(), ids[k].0.clone()),
            Some(p) => {
                let (a, b) = name(p);
                (a, b)
            }
            None => (String::new(), String::new()),
        };
        out.push_str(&format!(
            "{}\t{}\t{:.4}\t{}\t{}\t{}\n",
            field(record),
            field(identity),
            r.score,
            field(partner),
            field(partner_identity),
            r.note
        ));
    }
    out
}

/// What `embeddings.json` says of `embeddings.npy`: a rerun with the same dataset and network reuses them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheKey {
    /// SHA-256 of the dataset's manifest.
    pub manifest_sha256: String,
    /// SHA-256 of the network's weights file.
    pub network_sha256: String,
    /// Records embedded.
    pub records: usize,
    /// Embedding size.
    pub dim: usize,
}
