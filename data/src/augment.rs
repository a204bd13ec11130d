//! Per-image augmentation: the horizontal flip (on by default) and optional random crop,
//! brightness/contrast jitter and greyscale.
//!
//! Every random choice is a keyed hash of (seed, epoch, record index, what is being drawn) rather
//! than a draw from an RNG stream, so an image's augmentation never depends on which thread decodes
//! it or on what was decoded before: batches stay identical for any worker count and a resumed
//! run sees the same images as an uninterrupted one.

use super::error::{Error, Result};

/// Which augmentations a loader applies, and how strongly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Augment {
    /// Mirror each image left-right with probability 1/2.
    pub flip: bool,
    /// Random crop: keep a square whose side is a uniform fraction in `[1 - crop, 1]` of the
    /// record's side, at a uniform position, resized to the training size (0: off).
    pub crop: f32,
    /// Brightness and contrast jitter: each factor uniform in `[1 - jitter, 1 + jitter]`, as
    /// torchvision's `ColorJitter(brightness=j, contrast=j)` (0: off).
    pub color_jitter: f32,
    /// Probability of turning an image grey (ITU-R 601 luma in all three channels).
    pub grey: f32,
}

impl Default for Augment {
    fn default() -> Self {
        Augment { flip: true, crop: 0.0, color_jitter: 0.0, grey: 0.0 }
    }
}

impl Augment {
    /// No augmentation at all (validation, embedding).
    pub const NONE: Augment = Augment { flip: false, crop: 0.0, color_jitter: 0.0, grey: 0.0 };

    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        let refuse = |what: String| Err(Error::Config(what));
        if !(0.0..1.0).contains(&self.crop) {
            return refuse(format!("random crop {} is outside [0, 1)", self.crop));
        }
        if !(0.0..1.0).contains(&self.color_jitter) {
            return refuse(format!("colour jitter {} is outside [0, 1)", self.color_jitter));
        }
        if !(0.0..=1.0).contains(&self.grey) {
            return refuse(format!("greyscale probability {} is outside [0, 1]", self.grey));
        }
        Ok(())
    }

    /// What happens to global record `index` in `epoch`.
    pub fn draw(&self, seed: u64, epoch: u64, index: u64) -> View {
        let u = |salt: u64| unit(seed, epoch, index, salt);
        let crop = (self.crop > 0.0).then(|| {
            let side = 1.0 - self.crop * u(1) as f32;
            Crop { side, x: (1.0 - side) * u(2) as f32, y: (1.0 - side) * u(3) as f32 }
        });
        let jitter = |salt| 1.0 + self.color_jitter * (2.0 * u(salt) as f32 - 1.0);
        View {
            flip: self.flip && flip_decision(seed, epoch, index),
            crop,
            brightness: if self.color_jitter > 0.0 { jitter(4) } else { 1.0 },
            contrast: if self.color_jitter > 0.0 { jitter(5) } else { 1.0 },
            grey: self.grey > 0.0 && u(6) < self.grey as f64,
        }
    }
}

/// The augmentation of one image, drawn by [`Augment::draw`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct View {
    /// Mirror left-right.
    pub flip: bool,
    /// Part of the record to keep, before resizing.
    pub crop: Option<Crop>,
    /// Brightness factor (1: unchanged).
    pub brightness: f32,
    /// Contrast factor around the mean grey level (1: unchanged).
    pub contrast: f32,
    /// Turn grey.
    pub grey: bool,
}

impl View {
    /// The image as stored.
    pub const IDENTITY: View = View { flip: false, crop: None, brightness: 1.0, contrast: 1.0, grey: false };

    /// Whether the pixel values change (anything but flip and crop).
    pub fn changes_colour(&self) -> bool {
        self.brightness != 1.0 || self.contrast != 1.0 || self.grey
    }
}

/// A square crop as fractions of the record's width and height.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Crop {
    /// Side, as a fraction of the record's side.
    pub side: f32,
    /// Left edge, as a fraction of the width.
    pub x: f32,
    /// Top edge, as a fraction of the height.
    pub y: f32,
}

impl Crop {
    /// `(left, top, width, height)` in pixels of a `w` x `h` record.
    pub fn pixels(&self, w: u32, h: u32) -> (f64, f64, f64, f64) {
        let (w, h) = (w as f64, h as f64);
        (self.x as f64 * w, self.y as f64 * h, self.side as f64 * w, self.side as f64 * h)
    }
}

/// Applies `view` to an RGB8 image `side` pixels wide, in place: mirrored when flipped, then
/// brightness, contrast and greyscale in torchvision's order (brightness, then contrast around
/// the mean luma of the brightened image, then grey), clamped after each step as torchvision
/// does on uint8 images. One pass over the image (two with contrast, whose mean needs one of its
/// own). The loader calls it on an image just decoded into its batch slot, while the image is
/// still in the core's cache: writing the mirror into cold slot memory from a scratch buffer
/// cost three times as much.
pub fn apply_view(img: &mut [u8], side: usize, view: &View) {
    let lut = colour_table(img, view);
    let row = side * 3;
    if lut.is_none() && !view.grey {
        if view.flip {
            img.chunks_exact_mut(row).for_each(mirror_row);
        }
        return;
    }
    let mut copy = [0u8; MAX_ROW_BYTES];
    for r in img.chunks_exact_mut(row) {
        let src = &mut copy[..row];
        src.copy_from_slice(r);
        map_row(src, r, lut.as_ref(), view.grey, view.flip);
    }
}

/// Bytes of the widest row [`apply_view`] takes: the loader's largest output side (4096) in RGB.
const MAX_ROW_BYTES: usize = 4096 * 3;

/// The brightness-and-contrast table of `view` for image `img` (`None` when both are 1).
fn colour_table(img: &[u8], view: &View) -> Option<[u8; 256]> {
    if view.brightness == 1.0 && view.contrast == 1.0 {
        return None;
    }
    let bright: [u8; 256] = std::array::from_fn(|v| clamp_u8(v as f32 * view.brightness));
    if view.contrast == 1.0 {
        return Some(bright);
    }
    // The mean luma of the brightened image, from per-channel histograms: one pass, no copy.
    let mut hist = [[0u64; 256]; 3];
    for px in img.chunks_exact(3) {
        for c in 0..3 {
            hist[c][px[c] as usize] += 1;
        }
    }
    let n = (img.len() / 3).max(1) as f64;
    let mean = |c: usize| hist[c].iter().enumerate().map(|(v, &k)| bright[v] as f64 * k as f64).sum::<f64>() / n;
    let m = (LUMA[0] as f64 * mean(0) + LUMA[1] as f64 * mean(1) + LUMA[2] as f64 * mean(2)) as f32;
    Some(std::array::from_fn(|v| clamp_u8((bright[v] as f32 - m) * view.contrast + m)))
}

/// Reverses the pixels of one row in place.
fn mirror_row(row: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("ssse3") {
        // SAFETY: the CPU has SSSE3 (checked above).
        return unsafe { mirror_row_ssse3(row) };
    }
    mirror_pixels(row, 0);
}

/// Reverses pixels `from..n - from` of a row of `n` pixels in place, a pair at a time.
fn mirror_pixels(row: &mut [u8], from: usize) {
    let n = row.len() / 3;
    for j in from..n / 2 {
        let k = n - 1 - j;
        let (left, right) = row.split_at_mut(3 * k);
        left[3 * j..3 * j + 3].swap_with_slice(&mut right[..3]);
    }
}

/// [`mirror_row`] ten pixels a step, five from each end: two 16-byte loads, two byte shuffles,
/// two 16-byte stores. The flip is most of what the loader adds to the decoder: a pixel at a
/// time it cost a third of a 224x224 decode.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
unsafe fn mirror_row_ssse3(row: &mut [u8]) {
    use std::arch::x86_64::*;
    let n = row.len() / 3;
    let p = row.as_mut_ptr();
    // The left load at pixel a takes pixels a..a+5 in lanes 0..15 and the byte after in lane 15;
    // the right load at pixel b, from one byte earlier, takes the byte before in lane 0 and
    // pixels b..b+5 in lanes 1..16. Each store puts back the extra byte it covers unchanged.
    let right_to_left = _mm_setr_epi8(13, 14, 15, 10, 11, 12, 7, 8, 9, 4, 5, 6, 1, 2, 3, -1);
    let left_to_right = _mm_setr_epi8(-1, 12, 13, 14, 9, 10, 11, 6, 7, 8, 3, 4, 5, 0, 1, 2);
    let last = _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, -1);
    let first = _mm_setr_epi8(-1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    let mut a = 0;
    // b = n - a - 5; a + 6 <= b keeps the two 16-byte windows apart (the right one starts at
    // byte 3b - 1 >= 3a + 17).
    while 2 * a + 11 <= n {
        let b = n - a - 5;
        // SAFETY: 3a + 16 <= 3b - 1 < 3n and 3b - 1 >= 0, and 3b + 15 = 3n - 3a <= 3n: both
        // windows lie inside the row and do not overlap.
        unsafe {
            let l = _mm_loadu_si128(p.add(3 * a) as *const __m128i);
            let r = _mm_loadu_si128(p.add(3 * b - 1) as *const __m128i);
            let to_left = _mm_or_si128(_mm_shuffle_epi8(r, right_to_left), _mm_and_si128(l, last));
            let to_right = _mm_or_si128(_mm_shuffle_epi8(l, left_to_right), _mm_and_si128(r, first));
            _mm_storeu_si128(p.add(3 * a) as *mut __m128i, to_left);
            _mm_storeu_si128(p.add(3 * b - 1) as *mut __m128i, to_right);
        }
        a += 5;
    }
    mirror_pixels(row, a);
}

/// One row through the colour table and greyscale, mirrored when `flip`.
fn map_row(src: &[u8], dst: &mut [u8], lut: Option<&[u8; 256]>, grey: bool, flip: bool) {
    let lut = lut.unwrap_or(&IDENTITY_LUT);
    let write = |d: &mut [u8], s: &[u8]| d.copy_from_slice(&colour_pixel([s[0], s[1], s[2]], lut, grey));
    if flip {
        dst.chunks_exact_mut(3).zip(src.chunks_exact(3).rev()).for_each(|(d, s)| write(d, s));
    } else {
        dst.chunks_exact_mut(3).zip(src.chunks_exact(3)).for_each(|(d, s)| write(d, s));
    }
}

/// One pixel through the table, then to its luma when `grey`.
fn colour_pixel(px: [u8; 3], lut: &[u8; 256], grey: bool) -> [u8; 3] {
    let (r, g, b) = (lut[px[0] as usize], lut[px[1] as usize], lut[px[2] as usize]);
    if grey {
        let y = clamp_u8(LUMA[0] * r as f32 + LUMA[1] * g as f32 + LUMA[2] * b as f32);
        [y, y, y]
    } else {
        [r, g, b]
    }
}

/// The table that changes nothing (for greyscale without brightness or contrast).
const IDENTITY_LUT: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut v = 0;
    while v < 256 {
        t[v] = v as u8;
        v += 1;
    }
    t
};

/// ITU-R 601 luma weights (what Pillow's and torchvision's greyscale use).
const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

fn clamp_u8(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// The seeded coin toss behind the flip (kept apart from [`unit`] so that flips stay what they
/// were before the other augmentations existed).
pub fn flip_decision(seed: u64, epoch: u64, index: u64) -> bool {
    let h = splitmix64(seed ^ splitmix64(epoch ^ splitmix64(index ^ 0x666c_6970)));
    h >> 63 == 1
}

/// A uniform number in `[0, 1)` keyed by (seed, epoch, index, salt).
fn unit(seed: u64, epoch: u64, index: u64, salt: u64) -> f64 {
    let h = splitmix64(seed ^ splitmix64(epoch ^ splitmix64(index ^ splitmix64(salt ^ 0x6175_676d))));
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// SplitMix64's finaliser: a cheap, well-mixed 64-bit hash.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strong() -> Augment {
        Augment { flip: true, crop: 0.2, color_jitter: 0.4, grey: 0.25 }
    }

    #[test]
    fn flips_are_roughly_half_and_change_with_the_epoch() {
        let a: Vec<bool> = (0..10_000).map(|i| flip_decision(1, 0, i)).collect();
        let b: Vec<bool> = (0..10_000).map(|i| flip_decision(1, 1, i)).collect();
        let ones = a.iter().filter(|&&x| x).count();
        assert!((4_700..5_300).contains(&ones), "{ones} of 10000 flipped");
        let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
        assert!((4_700..5_300).contains(&same), "epochs agree on {same} of 10000");
    }

    #[test]
    fn draws_stay_in_range_follow_the_probabilities_and_repeat() {
        let aug = strong();
        let views: Vec<View> = (0..10_000).map(|i| aug.draw(3, 2, i)).collect();
        for v in &views {
            let c = v.crop.unwrap();
            assert!((0.8..=1.0).contains(&c.side), "{c:?}");
            assert!(c.x >= 0.0 && c.y >= 0.0 && c.x + c.side <= 1.0 + 1e-6 && c.y + c.side <= 1.0 + 1e-6, "{c:?}");
            assert!((0.6..=1.4).contains(&v.brightness) && (0.6..=1.4).contains(&v.contrast), "{v:?}");
        }
        let greys = views.iter().filter(|v| v.grey).count();
        assert!((2_300..2_700).contains(&greys), "{greys} of 10000 grey at p = 0.25");
        let small = views.iter().filter(|v| v.crop.unwrap().side < 0.9).count();
        assert!((4_700..5_300).contains(&small), "{small} of 10000 crops below 0.9");
        assert_eq!(views[17], aug.draw(3, 2, 17));
        assert_ne!(views[17], aug.draw(3, 3, 17));
        // The flip does not move when other augmentations are switched on.
        let plain = Augment::default();
        assert!((0..1000).all(|i| plain.draw(3, 2, i).flip == views[i as usize].flip));
        assert_eq!(Augment::NONE.draw(3, 2, 5), View::IDENTITY);
    }

    #[test]
    fn colour_changes_match_torchvision_formulas() {
        let img: Vec<u8> = vec![10, 100, 200, 50, 60, 70];
        let mut same = img.clone();
        apply_view(&mut same, 2, &View::IDENTITY);
        assert_eq!(same, img);

        let mut b = img.clone();
        apply_view(&mut b, 2, &View { brightness: 1.5, ..View::IDENTITY });
        assert_eq!(b, [15, 150, 255, 75, 90, 105]);

        // Contrast 0 leaves every channel at the mean luma.
        let mut c = img.clone();
        apply_view(&mut c, 2, &View { contrast: 0.0, ..View::IDENTITY });
        let m = (0.299 * 30.0 + 0.587 * 80.0 + 0.114 * 135.0) as f32;
        assert!(c.iter().all(|&v| v == m.round() as u8), "{c:?} vs {m}");

        let mut g = img.clone();
        apply_view(&mut g, 2, &View { grey: true, ..View::IDENTITY });
        assert_eq!(g[0..3], [g[0], g[0], g[0]]);
        assert_eq!(g[0], (0.299f32 * 10.0 + 0.587 * 100.0 + 0.114 * 200.0).round() as u8);
    }

    #[test]
    fn apply_view_mirrors_rows_and_applies_the_same_colours_to_mirrored_pixels() {
        // A 3x2 image: pixel k of row r is [10r + k, 100 + k, 200 - k].
        let img: Vec<u8> = (0..2).flat_map(|r| (0..3).flat_map(move |k| [10 * r + k, 100 + k, 200 - k])).collect();
        let mut out = img.clone();
        apply_view(&mut out, 3, &View { flip: true, ..View::IDENTITY });
        assert_eq!(&out[..9], &[2, 102, 198, 1, 101, 199, 0, 100, 200]);
        assert_eq!(&out[9..12], &img[15..18]);
        let mut same = img.clone();
        apply_view(&mut same, 3, &View::IDENTITY);
        assert_eq!(same, img);
        let colour = View { brightness: 1.3, contrast: 0.7, grey: true, ..View::IDENTITY };
        let mut want = img.clone();
        apply_view(&mut want, 3, &colour);
        let mut out = img.clone();
        apply_view(&mut out, 3, &View { flip: true, ..colour });
        for r in 0..2 {
            for k in 0..3 {
                let (o, w) = ((r * 3 + k) * 3, (r * 3 + 2 - k) * 3);
                assert_eq!(out[o..o + 3], want[w..w + 3], "row {r} pixel {k}");
            }
        }
    }

    #[test]
    fn the_fast_mirror_reverses_the_pixels_of_every_row_length() {
        for n in 1..80 {
            let src: Vec<u8> = (0..3 * n).map(|v| (v * 7 + n) as u8).collect();
            let want: Vec<u8> = src.chunks_exact(3).rev().flatten().copied().collect();
            let (mut fast, mut slow) = (src.clone(), src.clone());
            mirror_row(&mut fast);
            mirror_pixels(&mut slow, 0);
            assert_eq!(fast, want, "{n} pixels");
            assert_eq!(slow, want, "{n} pixels");
        }
    }

    #[test]
    fn out_of_range_settings_are_refused() {
        assert!(Augment { crop: 1.0, ..Augment::default() }.validate().is_err());
        assert!(Augment { color_jitter: -0.1, ..Augment::default() }.validate().is_err());
        assert!(Augment { grey: 1.5, ..Augment::default() }.validate().is_err());
        assert!(strong().validate().is_ok());
    }
}
