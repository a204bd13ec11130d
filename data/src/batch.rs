//! A batch of decoded faces and their labels, its images in a slot of the loader's ring.

use super::ring::Slot;

/// `n` images of `size` x `size`, NHWC RGB8, and their labels. Unknown labels are -1.
///
/// The trainer moves `images` to the device and normalises there:
/// `x = (pixel / 255 - 0.5) / 0.5`, i.e. into [-1, 1], then permutes NHWC to NCHW. Dropping the
/// batch gives its slot back to the loader's ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Number of images.
    pub n: usize,
    /// Side of every image in pixels.
    pub size: u32,
    /// Pixels, `n * size * size * 3` bytes, image-major, then rows, columns, RGB (a slot of the
    /// loader's ring; `Slot::from(vec)` makes one by hand).
    pub images: Slot,
    /// Class id (offset into the loader's global label space), -1 when unknown.
    pub class: Vec<i64>,
    /// Gender (0 male, 1 female), -1 when unknown.
    pub gender: Vec<i64>,
    /// Age in years, -1 when unknown.
    pub age: Vec<i64>,
    /// Global record number of each image (over the loader's concatenated datasets).
    pub indices: Vec<u64>,
    /// Whether each image was mirrored.
    pub flipped: Vec<bool>,
}

/// One image's place in a batch: its record, whether it was flipped, and its labels.
pub(crate) struct Entry {
    pub(crate) index: u64,
    pub(crate) flipped: bool,
    pub(crate) labels: facekit_shard::Labels,
}

impl Batch {
    /// The batch of `entries`, whose images are already in `images`. Unknown labels become -1;
    /// gender becomes its code, 0 male and 1 female, which is the gender head's class index.
    pub(crate) fn assemble(images: Slot, size: u32, entries: &[Entry]) -> Self {
        Batch {
            n: entries.len(),
            size,
            images,
            class: entries.iter().map(|e| e.labels.class_id.map_or(-1, i64::from)).collect(),
            gender: entries.iter().map(|e| e.labels.gender.map_or(-1, |g| i64::from(g.code()))).collect(),
            age: entries.iter().map(|e| e.labels.age.map_or(-1, i64::from)).collect(),
            indices: entries.iter().map(|e| e.index).collect(),
            flipped: entries.iter().map(|e| e.flipped).collect(),
        }
    }

    /// Bytes per image of `size` x `size`.
    pub(crate) fn image_len_for(size: u32) -> usize {
        size as usize * size as usize * 3
    }

    /// Bytes per image.
    pub(crate) fn image_len(&self) -> usize {
        Self::image_len_for(self.size)
    }

    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let l = self.image_len();
        &self.images[i * l..(i + 1) * l]
    }
}
