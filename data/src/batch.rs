//! A batch of decoded faces and their labels, as plain host memory.

/// `n` images of `size` x `size`, NHWC RGB8, and their labels. Unknown labels are -1.
///
/// The trainer moves `images` to the device and normalises there:
/// `x = (pixel / 255 - 0.5) / 0.5`, i.e. into [-1, 1], then permutes NHWC to NCHW.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Number of images.
    pub n: usize,
    /// Side of every image in pixels.
    pub size: u32,
    /// Pixels, `n * size * size * 3` bytes, image-major, then rows, columns, RGB.
    pub images: Vec<u8>,
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

impl Batch {
    /// An empty batch with room for `n` images of `size` x `size`.
    pub(crate) fn with_capacity(n: usize, size: u32) -> Self {
        Batch {
            n: 0,
            size,
            images: vec![0; n * Self::image_len_for(size)],
            class: Vec::with_capacity(n),
            gender: Vec::with_capacity(n),
            age: Vec::with_capacity(n),
            indices: Vec::with_capacity(n),
            flipped: Vec::with_capacity(n),
        }
    }

    fn image_len_for(size: u32) -> usize {
        size as usize * size as usize * 3
    }

    /// Appends the labels of the image just decoded into slot `n` (unknown ones as -1; gender as
    /// its code, 0 male and 1 female, which is the gender head's class index).
    pub(crate) fn push_labels(&mut self, l: &facekit_shard::Labels) {
        self.class.push(l.class_id.map_or(-1, i64::from));
        self.gender.push(l.gender.map_or(-1, |g| i64::from(g.code())));
        self.age.push(l.age.map_or(-1, i64::from));
        self.n += 1;
    }

    /// Bytes per image.
    pub fn image_len(&self) -> usize {
        Self::image_len_for(self.size)
    }

    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let l = self.image_len();
        &self.images[i * l..(i + 1) * l]
    }
}
