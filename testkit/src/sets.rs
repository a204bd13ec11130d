//! Small training sets of real photos, written the one way every training test writes them:
//! LFW identities (class labels) and UTKFace faces (gender and age from the file name), cut from
//! the shared data ([`crate::shared_data`]) and stored through facekit-shard's writer.
//!
//! What is written depends only on the photos and on these definitions: no seed, no clock except
//! the manifest's `created_unix`. The golden loss curves (`tests/assets/losses/`) were recorded on
//! [`CLI_LFW`] and [`CLI_UTK`], so a change to how a set is cut, resized, encoded, named, labelled
//! or split into shards moves them: `cargo test -p facekit --test cli -- golden` says so.

use facekit_shard::manifest::{EncodingInfo, LabelEntry, LabelMap, SourceInfo};
use facekit_shard::{DatasetPaths, DatasetWriter, Encoding, Gender, Labels, Manifest, Record};
use image::RgbImage;
use std::path::{Path, PathBuf};

/// How the records of a set are stored.
#[derive(Clone, Copy, Debug)]
pub enum Chips {
    /// Raw RGB pixels (`Encoding::Raw`).
    Raw,
    /// JPEG at this quality through facekit-pack's encoder, as `facekit pack` writes chips.
    Jpeg(u8),
}

/// Where and how a set is written: the chips' side and storage, the shard size and the name of
/// its one source.
#[derive(Clone, Copy, Debug)]
pub struct Storage {
    /// Every record is `side` x `side` pixels.
    pub side: u32,
    /// How the pixels are stored.
    pub chips: Chips,
    /// The shard size handed to [`DatasetWriter::create`].
    pub shard_bytes: u64,
    /// The name of the set's one source, in the manifest and in the label map.
    pub source: &'static str,
}

/// What the command line's training tests store (`--image-size 48`): JPEG at quality 90 in
/// 64 KiB shards, so that a corruption test can name a shard other than the only one.
pub const CLI_STORAGE: Storage = Storage { side: 48, chips: Chips::Jpeg(90), shard_bytes: 64 << 10, source: "src" };

/// The LFW identities with the most photos (ties by folder name), split into sets in a folder.
#[derive(Clone, Copy, Debug)]
pub struct LfwSets {
    /// How many identities, those with the most photos first: class `i` is the `i`-th.
    pub identities: usize,
    /// The sets written, in order: (name, photos of each identity). Each identity's photos are
    /// taken in file-name order, the first ones into the first set and so on.
    pub splits: &'static [(&'static str, usize)],
    /// How the records are stored.
    pub storage: Storage,
}

/// `lfw` and `lfw.valid` of the command line's tests (tests/cli) and of the trainer's divergence
/// tests: 10 identities, 24 and 6 photos each (240 records make 15 batches of 16).
pub const CLI_LFW: LfwSets = LfwSets { identities: 10, splits: &[("lfw", 24), ("lfw.valid", 6)], storage: CLI_STORAGE };

/// `lfw` of the trainer's host-read tests: 4 identities, 8 photos each, 32-pixel raw records in
/// one shard.
pub const SMALL_RAW_LFW: LfwSets = LfwSets {
    identities: 4,
    splits: &[("lfw", 8)],
    storage: Storage { side: 32, chips: Chips::Raw, shard_bytes: 1 << 20, source: "lfw" },
};

/// LFW photos are 250 px with the face in the middle: this centred square holds the face.
const LFW_FACE: u32 = 130;

impl LfwSets {
    /// Writes each of [`LfwSets::splits`] as a dataset in `dir` (`dir/lfw.manifest.json`, ...).
    /// A record's path is `identity/k` (`.jpg` added for JPEG chips), `k` counting the identity's
    /// photos across the splits; every set has the same label map.
    pub fn write(&self, dir: &Path) {
        let lfw = crate::shared_data().join("lfw100");
        let mut people: Vec<(usize, PathBuf)> = std::fs::read_dir(&lfw)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| (std::fs::read_dir(&p).unwrap().count(), p))
            .collect();
        people.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let storage = self.storage;
        let suffix = match storage.chips {
            Chips::Raw => "",
            Chips::Jpeg(_) => ".jpg",
        };
        let mut sets: Vec<Vec<Record>> = self.splits.iter().map(|_| Vec::new()).collect();
        let mut labels = LabelMap::default();
        for (class, (_, person)) in people.iter().take(self.identities).enumerate() {
            let identity = person.file_name().unwrap().to_string_lossy().into_owned();
            labels.entries.push(LabelEntry {
                class_id: class as u32,
                source: storage.source.into(),
                identity: identity.clone(),
            });
            let mut photos: Vec<PathBuf> = std::fs::read_dir(person).unwrap().map(|e| e.unwrap().path()).collect();
            photos.sort();
            let split_of = self.splits.iter().enumerate().flat_map(|(s, &(_, n))| std::iter::repeat_n(s, n));
            for (k, (photo, split)) in photos.iter().zip(split_of).enumerate() {
                let l = Labels { class_id: Some(class as u32), source: 0, gender: None, age: None };
                sets[split].push(storage.record(photo, Some(LFW_FACE), l, format!("{identity}/{k}{suffix}")));
            }
        }
        for ((name, _), records) in self.splits.iter().zip(&sets) {
            storage.write_set(&dir.join(name), records, self.identities as u32, &labels);
        }
    }
}

/// UTKFace faces with gender and age from the file name (`AGE_GENDER_RACE_...`), identity
/// unknown (no class, no label map), split into sets in a folder.
#[derive(Clone, Copy, Debug)]
pub struct UtkSets {
    /// The sets written, in order: (name, faces). The faces are taken in file-name order, those
    /// whose name gives no age or no gender 0 (male) or 1 (female) passed over.
    pub splits: &'static [(&'static str, usize)],
    /// How the records are stored.
    pub storage: Storage,
}

/// `utk` and `utk.valid` of the command line's tests: 640 and 200 faces.
pub const CLI_UTK: UtkSets = UtkSets { splits: &[("utk", 640), ("utk.valid", 200)], storage: CLI_STORAGE };

impl UtkSets {
    /// Writes each of [`UtkSets::splits`] as a dataset in `dir`; a record's path is the photo's
    /// file name. UTKFace photos are face crops already: they are resized, not cropped.
    pub fn write(&self, dir: &Path) {
        let utk = crate::shared_data().join("utkface2k");
        let mut photos: Vec<PathBuf> = std::fs::read_dir(&utk).unwrap().map(|e| e.unwrap().path()).collect();
        photos.sort();
        let wanted: usize = self.splits.iter().map(|s| s.1).sum();
        let mut records = Vec::new();
        for photo in &photos {
            let name = photo.file_name().unwrap().to_string_lossy().into_owned();
            let f: Vec<&str> = name.split('_').collect();
            let (Ok(age), Ok(g)) = (f[0].parse::<u16>(), f.get(1).unwrap_or(&"").parse::<u8>()) else { continue };
            let gender = match g {
                0 => Gender::Male,
                1 => Gender::Female,
                _ => continue,
            };
            let labels = Labels { class_id: None, source: 0, gender: Some(gender), age: Some(age) };
            records.push(self.storage.record(photo, None, labels, name));
            if records.len() == wanted {
                break;
            }
        }
        assert_eq!(records.len(), wanted, "{} has too few labelled faces", utk.display());
        let mut rest = &records[..];
        for &(name, n) in self.splits {
            let (set, after) = rest.split_at(n);
            self.storage.write_set(&dir.join(name), set, 0, &LabelMap::default());
            rest = after;
        }
    }
}

impl Storage {
    /// The record of `photo`: centre-cropped to `crop` pixels if given, resized to the side
    /// (triangle filter), stored as [`Storage::chips`] says.
    pub fn record(&self, photo: &Path, crop: Option<u32>, labels: Labels, path: String) -> Record {
        let mut img = image::open(photo).unwrap().into_rgb8();
        if let Some(c) = crop {
            let (w, h) = img.dimensions();
            img = image::imageops::crop_imm(&img, (w - c) / 2, (h - c) / 2, c, c).to_image();
        }
        let img = image::imageops::resize(&img, self.side, self.side, image::imageops::FilterType::Triangle);
        Record {
            labels,
            encoding: self.encoding(),
            width: self.side as u16,
            height: self.side as u16,
            origin_sha256: [0; 16],
            path,
            data: self.encode(img),
        }
    }

    /// Writes `records` as the dataset `base` of `classes` classes, with one source.
    pub fn write_set(&self, base: &Path, records: &[Record], classes: u32, labels: &LabelMap) {
        let mut w = DatasetWriter::create(DatasetPaths::new(base), self.shard_bytes).unwrap();
        for r in records {
            w.push(r).unwrap();
        }
        let source =
            SourceInfo { id: 0, name: self.source.into(), class_offset: 0, classes, records: records.len() as u64 };
        let quality = match self.chips {
            Chips::Raw => None,
            Chips::Jpeg(q) => Some(q),
        };
        let enc = EncodingInfo { format: self.encoding(), quality, chroma: None, width: self.side, height: self.side };
        w.finish(Manifest::new(classes, vec![source], None, enc), labels).unwrap();
    }

    fn encoding(&self) -> Encoding {
        match self.chips {
            Chips::Raw => Encoding::Raw,
            Chips::Jpeg(_) => Encoding::Jpeg,
        }
    }

    fn encode(&self, img: RgbImage) -> Vec<u8> {
        match self.chips {
            Chips::Raw => img.into_raw(),
            Chips::Jpeg(q) => facekit_pack::encode::encode(&img, Encoding::Jpeg, q).unwrap(),
        }
    }
}
