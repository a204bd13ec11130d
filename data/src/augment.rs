//! Per-image augmentation: the horizontal flip (on by default) and optional random crop,
//! brightness/contrast jitter and greyscale.
//!
//! Every random choice is a keyed hash of (seed, epoch, record index, what is being drawn) rather
//! than a draw from an RNG stream, so an image's augmentation never depends on which thread decodes
//! it or on what was decoded before: batches stay identical for any worker count and a resumed
//! run sees the same images as an uninterrupted one.

use anyhow::{bail, Result};

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
        if !(0.0..1.0).contains(&self.crop) {
            bail!("random crop {} is outside [0, 1)", self.crop);
        }
        if !(0.0..1.0).contains(&self.color_jitter) {
            bail!("colour jitter {} is outside [0, 1)", self.color_jitter);
        }
        if !(0.0..=1.0).contains(&self.grey) {
            bail!("greyscale probability {} is outside [0, 1]", self.grey);
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

/// Applies brightness, contrast and greyscale to an RGB8 image in place, in torchvision's order
/// (brightness, then contrast around the mean luma of the brightened image, then grey), with
/// clamping after each step as torchvision does on uint8 images.
pub fn apply_colour(img: &mut [u8], view: &View) {
    if !view.changes_colour() {
        return;
    }
    let bright: [u8; 256] = std::array::from_fn(|v| clamp_u8(v as f32 * view.brightness));
    let mut lut = bright;
    if view.contrast != 1.0 {
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
        lut = std::array::from_fn(|v| clamp_u8((bright[v] as f32 - m) * view.contrast + m));
    }
    for px in img.chunks_exact_mut(3) {
        let (r, g, b) = (lut[px[0] as usize], lut[px[1] as usize], lut[px[2] as usize]);
        if view.grey {
            let y = clamp_u8(LUMA[0] * r as f32 + LUMA[1] * g as f32 + LUMA[2] * b as f32);
            px.copy_from_slice(&[y, y, y]);
        } else {
            px.copy_from_slice(&[r, g, b]);
        }
    }
}

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
        apply_colour(&mut same, &View::IDENTITY);
        assert_eq!(same, img);

        let mut b = img.clone();
        apply_colour(&mut b, &View { brightness: 1.5, ..View::IDENTITY });
        assert_eq!(b, [15, 150, 255, 75, 90, 105]);

        // Contrast 0 leaves every channel at the mean luma.
        let mut c = img.clone();
        apply_colour(&mut c, &View { contrast: 0.0, ..View::IDENTITY });
        let m = (0.299 * 30.0 + 0.587 * 80.0 + 0.114 * 135.0) as f32;
        assert!(c.iter().all(|&v| v == m.round() as u8), "{c:?} vs {m}");

        let mut g = img.clone();
        apply_colour(&mut g, &View { grey: true, ..View::IDENTITY });
        assert_eq!(g[0..3], [g[0], g[0], g[0]]);
        assert_eq!(g[0], (0.299f32 * 10.0 + 0.587 * 100.0 + 0.114 * 200.0).round() as u8);
    }

    #[test]
    fn out_of_range_settings_are_refused() {
        assert!(Augment { crop: 1.0, ..Augment::default() }.validate().is_err());
        assert!(Augment { color_jitter: -0.1, ..Augment::default() }.validate().is_err());
        assert!(Augment { grey: 1.5, ..Augment::default() }.validate().is_err());
        assert!(strong().validate().is_ok());
    }
}
