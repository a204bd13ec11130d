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
    pub(crate) fn changes_colour(&self) -> bool {
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

/// Writes the RGB8 image `src` (rows `src_pitch` bytes apart) into `dst` (`side` x `side`, rows
/// back to back) as `view` says: mirrored when flipped, then brightness, contrast and greyscale
/// in torchvision's order (brightness, then contrast around the mean luma of the brightened
/// image, then grey), clamped after each step as torchvision does on uint8 images.
///
/// `src` is a decode buffer still in the core's cache and `dst` the batch slot, cold: each row
/// is transformed into a row buffer in L1 and streamed into the slot with non-temporal stores,
/// so the slot is written once and never read (libjpeg-turbo writes aligned rows the same way,
/// which is why the loader does not decode a flipped image into the slot and mirror it there:
/// reading it back from memory cost a third of a 224x224 decode).
pub(crate) fn write_view(src: &[u8], src_pitch: usize, dst: &mut [u8], side: usize, view: &View) {
    let row = side * 3;
    assert!(row <= MAX_ROW_BYTES && src_pitch >= row && dst.len() == row * side, "write_view: image sizes disagree");
    assert!(src.len() >= src_pitch * (side - 1) + row, "write_view: the source is smaller than its rows");
    let lut = colour_table(rows(src, src_pitch, row, side), side * side, view);
    let mut buf = RowBuffer([0; MAX_ROW_BYTES + 16]);
    for (s, d) in rows(src, src_pitch, row, side).zip(dst.chunks_exact_mut(row)) {
        let b = &mut buf.0[..row + 16];
        match (&lut, view.grey, view.flip) {
            (None, false, true) => mirror_row(s, b),
            (None, false, false) => b[..row].copy_from_slice(s),
            _ => map_row(s, &mut b[..row], lut.as_ref(), view.grey, view.flip),
        }
        stream_row(&b[..row], d);
    }
    stream_fence();
}

/// The `side` rows of `row` bytes of an image whose rows are `pitch` bytes apart.
fn rows(img: &[u8], pitch: usize, row: usize, side: usize) -> impl Iterator<Item = &[u8]> {
    (0..side).map(move |r| &img[r * pitch..r * pitch + row])
}

/// Bytes of the widest row [`write_view`] takes: the loader's largest output side (4096) in RGB.
const MAX_ROW_BYTES: usize = 4096 * 3;

/// A row, with 16 bytes to spare for the last vector store of [`mirror_row`].
#[repr(C, align(64))]
struct RowBuffer([u8; MAX_ROW_BYTES + 16]);

/// The brightness-and-contrast table of `view` for an image of `pixels` pixels given as `rows`
/// (`None` when both are 1).
fn colour_table<'a>(rows: impl Iterator<Item = &'a [u8]>, pixels: usize, view: &View) -> Option<[u8; 256]> {
    if view.brightness == 1.0 && view.contrast == 1.0 {
        return None;
    }
    let bright: [u8; 256] = std::array::from_fn(|v| clamp_u8(v as f32 * view.brightness));
    if view.contrast == 1.0 {
        return Some(bright);
    }
    // The mean luma of the brightened image, from per-channel histograms: one pass, no copy.
    let mut hist = [[0u64; 256]; 3];
    for px in rows.flat_map(|r| r.chunks_exact(3)) {
        for c in 0..3 {
            hist[c][px[c] as usize] += 1;
        }
    }
    let n = pixels.max(1) as f64;
    let mean = |c: usize| hist[c].iter().enumerate().map(|(v, &k)| bright[v] as f64 * k as f64).sum::<f64>() / n;
    let m = (LUMA[0] as f64 * mean(0) + LUMA[1] as f64 * mean(1) + LUMA[2] as f64 * mean(2)) as f32;
    Some(std::array::from_fn(|v| clamp_u8((bright[v] as f32 - m) * view.contrast + m)))
}

/// Writes the pixels of the row `src` in reverse order into `dst`, which has 16 bytes more than
/// `src` (the vector path's last store may cover them).
fn mirror_row(src: &[u8], dst: &mut [u8]) {
    assert!(dst.len() >= src.len() + 16);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("ssse3") {
        // SAFETY: the CPU has SSSE3 (checked above).
        return unsafe { mirror_row_ssse3(src, dst) };
    }
    mirror_pixels(src, dst, 0);
}

/// Output pixels `from..` of [`mirror_row`], a pixel at a time.
fn mirror_pixels(src: &[u8], dst: &mut [u8], from: usize) {
    let n = src.len() / 3;
    for j in from..n {
        let k = n - 1 - j;
        dst[3 * j..3 * j + 3].copy_from_slice(&src[3 * k..3 * k + 3]);
    }
}

/// [`mirror_row`] five pixels a step: one 16-byte load, one byte shuffle, one 16-byte store.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
unsafe fn mirror_row_ssse3(src: &[u8], dst: &mut [u8]) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_setr_epi8, _mm_shuffle_epi8, _mm_storeu_si128};
    let n = src.len() / 3;
    // The load starts one byte before its five pixels (lane 0, unused); output pixel k of the
    // five is input pixel 4 - k; the store's last byte is the next output pixel's first.
    let reverse5 = _mm_setr_epi8(13, 14, 15, 10, 11, 12, 7, 8, 9, 4, 5, 6, 1, 2, 3, 0);
    let mut i = 0;
    while i + 5 < n {
        let from = 3 * (n - i - 5) - 1;
        // SAFETY: i + 5 < n gives from >= 2 and from + 16 = 3 * (n - i) <= src.len(); the
        // store ends at 3 * i + 16 <= src.len() + 16 <= dst.len().
        unsafe {
            let v = _mm_loadu_si128(src.as_ptr().add(from) as *const __m128i);
            _mm_storeu_si128(dst.as_mut_ptr().add(3 * i) as *mut __m128i, _mm_shuffle_epi8(v, reverse5));
        }
        i += 5;
    }
    mirror_pixels(src, dst, i);
}

/// Copies a row into the slot: with non-temporal stores where the slot row is 16-byte aligned
/// (the slot is written once and read by another thread or the device, never by this core).
fn stream_row(src: &[u8], dst: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if (dst.as_ptr() as usize).is_multiple_of(16) {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
        let whole = dst.len() / 16 * 16;
        for k in (0..whole).step_by(16) {
            // SAFETY: k + 16 <= whole <= len of both; the store address is 16-byte aligned
            // (dst is, and k is a multiple of 16). SSE2 is part of x86_64.
            unsafe {
                _mm_stream_si128(
                    dst.as_mut_ptr().add(k) as *mut __m128i,
                    _mm_loadu_si128(src.as_ptr().add(k) as *const __m128i),
                )
            };
        }
        dst[whole..].copy_from_slice(&src[whole..]);
        return;
    }
    dst.copy_from_slice(src);
}

/// Orders the non-temporal stores before whatever follows (the batch is handed to another
/// thread; such stores are not ordered by the channel's atomics alone).
fn stream_fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of x86_64.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
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
pub(crate) fn flip_decision(seed: u64, epoch: u64, index: u64) -> bool {
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
        // A 2x2 image whose rows are the same two pixels.
        let img: Vec<u8> = vec![10, 100, 200, 50, 60, 70, 10, 100, 200, 50, 60, 70];
        let apply = |view: View| {
            let mut out = vec![0; 12];
            write_view(&img, 6, &mut out, 2, &view);
            out
        };
        assert_eq!(apply(View::IDENTITY), img);
        assert_eq!(apply(View { brightness: 1.5, ..View::IDENTITY })[..6], [15, 150, 255, 75, 90, 105]);

        // Contrast 0 leaves every channel at the mean luma.
        let c = apply(View { contrast: 0.0, ..View::IDENTITY });
        let m = (0.299 * 30.0 + 0.587 * 80.0 + 0.114 * 135.0) as f32;
        assert!(c.iter().all(|&v| v == m.round() as u8), "{c:?} vs {m}");

        let g = apply(View { grey: true, ..View::IDENTITY });
        assert_eq!(g[0..3], [g[0], g[0], g[0]]);
        assert_eq!(g[0], (0.299f32 * 10.0 + 0.587 * 100.0 + 0.114 * 200.0).round() as u8);
    }

    #[test]
    fn write_view_mirrors_rows_of_a_pitched_source_and_applies_the_same_colours_to_mirrored_pixels() {
        // A 3x3 image in rows of 16 bytes: pixel k of row r is [10r + k, 100 + k, 200 - k].
        let mut src = vec![0xEE; 16 * 3];
        for r in 0..3 {
            for k in 0..3 {
                src[16 * r + 3 * k..16 * r + 3 * k + 3].copy_from_slice(&[
                    10 * r as u8 + k as u8,
                    100 + k as u8,
                    200 - k as u8,
                ]);
            }
        }
        let packed: Vec<u8> = src.chunks(16).flat_map(|r| r[..9].to_vec()).collect();
        let mut out = vec![0; 27];
        write_view(&src, 16, &mut out, 3, &View { flip: true, ..View::IDENTITY });
        assert_eq!(&out[..9], &[2, 102, 198, 1, 101, 199, 0, 100, 200]);
        assert_eq!(&out[18..21], &packed[24..27]);
        let colour = View { brightness: 1.3, contrast: 0.7, grey: true, ..View::IDENTITY };
        let (mut want, mut flipped) = (vec![0; 27], vec![0; 27]);
        write_view(&src, 16, &mut want, 3, &colour);
        write_view(&src, 16, &mut flipped, 3, &View { flip: true, ..colour });
        for r in 0..3 {
            for k in 0..3 {
                let (o, w) = ((r * 3 + k) * 3, (r * 3 + 2 - k) * 3);
                assert_eq!(flipped[o..o + 3], want[w..w + 3], "row {r} pixel {k}");
            }
        }
    }

    #[test]
    fn the_fast_mirror_is_the_pixel_at_a_time_mirror_for_every_row_length() {
        for n in 1..80 {
            let src: Vec<u8> = (0..3 * n).map(|v| (v * 7 + n) as u8).collect();
            let want: Vec<u8> = src.chunks_exact(3).rev().flatten().copied().collect();
            let (mut fast, mut slow) = (vec![0; 3 * n + 16], vec![0; 3 * n + 16]);
            mirror_row(&src, &mut fast);
            mirror_pixels(&src, &mut slow, 0);
            assert_eq!(&fast[..3 * n], want, "{n} pixels");
            assert_eq!(&slow[..3 * n], want, "{n} pixels");
        }
    }

    #[test]
    fn rows_reach_the_slot_whatever_its_alignment() {
        let src: Vec<u8> = (0..100).collect();
        for offset in 0..16 {
            let mut slot = [0u8; 132];
            stream_row(&src, &mut slot[offset..offset + 100]);
            stream_fence();
            assert_eq!(&slot[offset..offset + 100], &src[..], "offset {offset}");
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
