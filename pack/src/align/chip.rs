//! dlib's face-chip geometry and extraction, reproduced in pure Rust.
//!
//! This follows dlib 19.24 `image_transforms/interpolation.h` step by step so that a chip cut
//! here matches `dlib.get_face_chip` on the same landmarks:
//! - [`ChipDetails::from_points`] is the `chip_details(chip_points, img_points, dims)`
//!   constructor: fit a similarity from template to image points, keep its angle, and turn
//!   its scale and translation into an extraction rectangle (`centered_drect`, whose width is
//!   `cols * scale` in dlib's inclusive-pixel convention);
//! - [`extract_chip`] is `extract_image_chips` with bilinear interpolation: when the chip is
//!   much smaller than the rectangle, an image pyramid (`pyramid_down<2>`, a 5x5 binomial
//!   filter) built over a grown bounding box is sampled instead of the full image, so the
//!   downscale does not alias; pixels that fall outside (the grown box of) the image are 0;
//!   interpolated values are truncated to u8, as dlib's `vector_to_pixel` does.

use image::RgbImage;

use super::transform::{rotate_point, Affine, Point2, Similarity};

/// A floating rectangle with dlib's inclusive-pixel semantics (`width = right - left + 1`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DRect {
    /// Left edge (x of the left-most pixel centre).
    pub left: f64,
    /// Top edge.
    pub top: f64,
    /// Right edge (inclusive).
    pub right: f64,
    /// Bottom edge (inclusive).
    pub bottom: f64,
}

impl DRect {
    fn is_empty(&self) -> bool {
        self.top > self.bottom || self.left > self.right
    }
    fn width(&self) -> f64 {
        if self.is_empty() {
            0.0
        } else {
            self.right - self.left + 1.0
        }
    }
    fn height(&self) -> f64 {
        if self.is_empty() {
            0.0
        } else {
            self.bottom - self.top + 1.0
        }
    }
    fn area(&self) -> f64 {
        self.width() * self.height()
    }
    fn center(&self) -> Point2 {
        [(self.left + self.right) / 2.0, (self.top + self.bottom) / 2.0]
    }
    fn corners(&self) -> [Point2; 4] {
        // tl, tr, bl, br
        [[self.left, self.top], [self.right, self.top], [self.left, self.bottom], [self.right, self.bottom]]
    }
    fn translate(&self, dx: f64, dy: f64) -> DRect {
        DRect { left: self.left + dx, top: self.top + dy, right: self.right + dx, bottom: self.bottom + dy }
    }
    /// `pyramid_down<2>::rect_down`: dlib maps points down by `p / 2 - (1.25, 0.75)`.
    fn pyramid_down(&self) -> DRect {
        let d = |p: Point2| [p[0] / 2.0 - 1.25, p[1] / 2.0 - 0.75];
        let (a, b) = (d([self.left, self.top]), d([self.right, self.bottom]));
        DRect { left: a[0].min(b[0]), top: a[1].min(b[1]), right: a[0].max(b[0]), bottom: a[1].max(b[1]) }
    }
}

/// An integer rectangle (inclusive), dlib's `rectangle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IRect {
    left: i64,
    top: i64,
    right: i64,
    bottom: i64,
}

impl IRect {
    fn is_empty(&self) -> bool {
        self.top > self.bottom || self.left > self.right
    }
    fn width(&self) -> i64 {
        if self.is_empty() {
            0
        } else {
            self.right - self.left + 1
        }
    }
    fn height(&self) -> i64 {
        if self.is_empty() {
            0
        } else {
            self.bottom - self.top + 1
        }
    }
    /// dlib's `drectangle -> rectangle` conversion rounds each edge with `floor(x + 0.5)`.
    fn from_drect(r: DRect) -> IRect {
        let f = |x: f64| (x + 0.5).floor() as i64;
        IRect { left: f(r.left), top: f(r.top), right: f(r.right), bottom: f(r.bottom) }
    }
}

/// Where and how to cut a chip: dlib's `chip_details`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChipDetails {
    /// The (unrotated) extraction rectangle in image pixels.
    pub rect: DRect,
    /// Rotation of the rectangle about its centre, radians.
    pub angle: f64,
    /// Output rows.
    pub rows: u32,
    /// Output columns.
    pub cols: u32,
}

impl ChipDetails {
    /// dlib's `chip_details(chip_points, img_points, chip_dims(rows, cols))`.
    pub(crate) fn from_points(chip_points: &[Point2], img_points: &[Point2], rows: u32, cols: u32) -> ChipDetails {
        let tform = Similarity::fit(chip_points, img_points);
        let aff = tform.to_affine();
        // dlib reads angle and scale off the image of the unit x vector.
        let p = [aff.m[0][0], aff.m[1][0]];
        let angle = p[1].atan2(p[0]);
        let scale = p[0].hypot(p[1]);
        let c = aff.apply([f64::from(cols) / 2.0, f64::from(rows) / 2.0]);
        // centered_drect(p, w, h) shrinks w and h by one: dlib rectangles are inclusive.
        let (w, h) = (f64::from(cols) * scale - 1.0, f64::from(rows) * scale - 1.0);
        let rect = DRect { left: c[0] - w / 2.0, top: c[1] - h / 2.0, right: c[0] + w / 2.0, bottom: c[1] + h / 2.0 };
        ChipDetails { rect, angle, rows, cols }
    }

    fn size(&self) -> f64 {
        f64::from(self.rows) * f64::from(self.cols)
    }

    /// How many `pyramid_down<2>` levels extraction builds (0: sampled from the image itself);
    /// dlib downsamples until one more halving would make the rectangle smaller than the chip.
    pub fn pyramid_depth(&self) -> usize {
        let mut depth = 0;
        let mut rect = self.rect.pyramid_down();
        while rect.area() > self.size() {
            rect = rect.pyramid_down();
            depth += 1;
        }
        depth
    }
}

/// A read-only window into an RGB image (dlib's `sub_image`), possibly empty.
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [u8],
    stride: usize,
    offset: usize,
    nr: i64,
    nc: i64,
}

impl<'a> View<'a> {
    fn whole(img: &'a RgbImage) -> View<'a> {
        View {
            data: img.as_raw(),
            stride: img.width() as usize * 3,
            offset: 0,
            nr: i64::from(img.height()),
            nc: i64::from(img.width()),
        }
    }
    fn sub(img: &'a RgbImage, r: IRect) -> View<'a> {
        if r.is_empty() {
            return View { data: img.as_raw(), stride: 0, offset: 0, nr: 0, nc: 0 };
        }
        let stride = img.width() as usize * 3;
        View {
            data: img.as_raw(),
            stride,
            offset: r.top as usize * stride + r.left as usize * 3,
            nr: r.height(),
            nc: r.width(),
        }
    }
    #[inline]
    fn px(&self, r: i64, c: i64) -> &'a [u8] {
        let i = self.offset + r as usize * self.stride + c as usize * 3;
        &self.data[i..i + 3]
    }
}

/// dlib's `pyramid_down<2>` on RGB: a separable [1 4 6 4 1] filter, keeping every other
/// row and column, with dlib's exact integer arithmetic (u16 sums, truncating `/256`).
fn pyramid_down_rgb(v: &View<'_>) -> RgbImage {
    if v.nr <= 8 || v.nc <= 8 {
        return RgbImage::new(0, 0);
    }
    let tnc = ((v.nc - 3) / 2) as usize;
    let nr = v.nr as usize;
    let mut temp = vec![[0u16; 3]; nr * tnc];
    for r in 0..nr {
        for c in 0..tnc {
            let oc = 2 * c as i64;
            let mut s = [0u16; 3];
            for (k, w) in [1u16, 4, 6, 4, 1].iter().enumerate() {
                let p = v.px(r as i64, oc + k as i64);
                for ch in 0..3 {
                    s[ch] += u16::from(p[ch]) * w;
                }
            }
            temp[r * tnc + c] = s;
        }
    }
    let out_rows = ((v.nr - 3) / 2) as u32;
    let mut out = RgbImage::new(tnc as u32, out_rows);
    let mut dr = 0u32;
    let mut r = 2usize;
    while r + 2 < nr {
        for c in 0..tnc {
            let px = out.get_pixel_mut(c as u32, dr);
            for ch in 0..3 {
                let t = temp[(r - 2) * tnc + c][ch]
                    + temp[(r - 1) * tnc + c][ch] * 4
                    + temp[r * tnc + c][ch] * 6
                    + temp[(r + 1) * tnc + c][ch] * 4
                    + temp[(r + 2) * tnc + c][ch];
                px[ch] = (t / 256) as u8;
            }
        }
        dr += 1;
        r += 2;
    }
    out
}

/// Fills `out` by mapping each output pixel through `tform` into `v` (dlib's `transform_image`
/// with a black background and `interpolate_bilinear`, truncated to u8).
///
/// This is the hot loop of every detected face; the AVX build of the same code (chosen at run
/// time) turns `floor` into one instruction instead of a libm call. Both builds run the same
/// f64 operations in the same order as dlib, so the output stays bit-identical to dlib's.
fn transform_into(v: &View<'_>, out: &mut RgbImage, tform: &Affine) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU supports AVX (checked just above).
        unsafe { transform_into_avx(v, out, tform) };
        return;
    }
    transform_into_generic(v, out, tform);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transform_into_avx(v: &View<'_>, out: &mut RgbImage, tform: &Affine) {
    transform_into_generic(v, out, tform);
}

#[inline(always)]
fn transform_into_generic(v: &View<'_>, out: &mut RgbImage, tform: &Affine) {
    let w = out.width() as usize;
    let raw: &mut [u8] = out.as_mut();
    if v.nr < 2 || v.nc < 2 {
        return; // no 2x2 neighbourhood anywhere: all black
    }
    let data = &v.data[v.offset..];
    for (r, row) in raw.chunks_exact_mut(w * 3).enumerate() {
        for (c, px) in row.chunks_exact_mut(3).enumerate() {
            // Per-pixel m * p + b (not an incremental sum) keeps dlib's rounding.
            let p = tform.apply([c as f64, r as f64]);
            let (left, top) = (p[0].floor(), p[1].floor());
            let (l, t) = (left as i64, top as i64);
            // dlib's test: all four neighbours inside, else the pixel stays background.
            if !(l >= 0 && t >= 0 && l + 1 < v.nc && t + 1 < v.nr) {
                continue;
            }
            let (lr, tb) = (p[0] - left, p[1] - top);
            let i = t as usize * v.stride + l as usize * 3;
            let (top_row, bot_row) = (&data[i..i + 6], &data[i + v.stride..i + v.stride + 6]);
            for ch in 0..3 {
                let (tl, tr) = (f64::from(top_row[ch]), f64::from(top_row[ch + 3]));
                let (bl, br) = (f64::from(bot_row[ch]), f64::from(bot_row[ch + 3]));
                // Same operation order as dlib, so results are bit-identical.
                let val = (1.0 - tb) * ((1.0 - lr) * tl + lr * tr) + tb * ((1.0 - lr) * bl + lr * br);
                // A convex mix of u8 values lies in [0, 255]: the i32 conversion truncates as
                // dlib's cast does, without the saturating checks of a direct `as u8`.
                px[ch] = val as i32 as u8;
            }
        }
    }
}

/// Cuts the chip described by `d` out of `img`: dlib's `extract_image_chip` with bilinear
/// interpolation (including its image pyramid for large downscales).
pub fn extract_chip(img: &RgbImage, d: &ChipDetails) -> RgbImage {
    // dlib's fast path: an unrotated, unscaled chip is a plain copy with a zero border.
    if d.angle == 0.0 && f64::from(d.rows) == d.rect.height() && f64::from(d.cols) == d.rect.width() {
        let loc = IRect::from_drect(d.rect);
        let mut chip = RgbImage::new(d.cols, d.rows);
        for r in 0..loc.height() {
            for c in 0..loc.width() {
                let (y, x) = (loc.top + r, loc.left + c);
                if x >= 0 && y >= 0 && x < i64::from(img.width()) && y < i64::from(img.height()) {
                    chip.put_pixel(c as u32, r as u32, *img.get_pixel(x as u32, y as u32));
                }
            }
        }
        return chip;
    }

    // How deep a pyramid the chip needs, and the image area it can touch (grown by the
    // filter's reach at that depth).
    let depth = d.pyramid_depth();
    // dlib grows the box by 2 px, then doubles and adds 2 per level.
    let grow = (0..depth).fold(2.0, |g, _| g * 2.0 + 2.0);
    let cent = d.rect.center();
    let rot: Vec<Point2> = d.rect.corners().iter().map(|&p| rotate_point(cent, p, d.angle)).collect();
    let rot_rect = DRect {
        left: rot.iter().map(|p| p[0]).fold(f64::INFINITY, f64::min),
        top: rot.iter().map(|p| p[1]).fold(f64::INFINITY, f64::min),
        right: rot.iter().map(|p| p[0]).fold(f64::NEG_INFINITY, f64::max),
        bottom: rot.iter().map(|p| p[1]).fold(f64::NEG_INFINITY, f64::max),
    };
    let img_rect =
        DRect { left: 0.0, top: 0.0, right: f64::from(img.width()) - 1.0, bottom: f64::from(img.height()) - 1.0 };
    let grown = DRect {
        left: (rot_rect.left - grow).max(img_rect.left),
        top: (rot_rect.top - grow).max(img_rect.top),
        right: (rot_rect.right + grow).min(img_rect.right),
        bottom: (rot_rect.bottom + grow).min(img_rect.bottom),
    };
    let bbox = IRect::from_drect(grown);
    let base = View::sub(img, bbox);
    let mut levels: Vec<RgbImage> = Vec::with_capacity(depth);
    for i in 0..depth {
        let next = if i == 0 { pyramid_down_rgb(&base) } else { pyramid_down_rgb(&View::whole(&levels[i - 1])) };
        levels.push(next);
    }

    let mut chip = RgbImage::new(d.cols, d.rows);
    let (ox, oy) = if bbox.is_empty() { (0.0, 0.0) } else { (bbox.left as f64, bbox.top as f64) };
    let mut rect = d.rect.translate(-ox, -oy);
    let mut level: i64 = -1;
    while rect.pyramid_down().area() > d.size() {
        level += 1;
        rect = rect.pyramid_down();
    }
    let c = rect.center();
    let [tl, tr, bl, _] = rect.corners();
    let from = [[0.0, 0.0], [f64::from(d.cols) - 1.0, 0.0], [0.0, f64::from(d.rows) - 1.0]];
    let to = [rotate_point(c, tl, d.angle), rotate_point(c, tr, d.angle), rotate_point(c, bl, d.angle)];
    let Some(tform) = Affine::from_three_points(from, to) else {
        // A 1-pixel-wide chip has no well-defined mapping; dlib would divide by zero too.
        return chip;
    };
    let src = if level < 0 { base } else { View::whole(&levels[level as usize]) };
    transform_into(&src, &mut chip, &tform);
    chip
}

/// Fractional bits of the blend weights in [`warp_affine`] (1/1024 pixel).
const WARP_BITS: u32 = 10;
/// Fractional bits of the running source coordinates in [`warp_affine`].
const STEP_BITS: u32 = 32;
/// Beyond this many pixels from the origin the 32.32 fixed-point coordinates could overflow;
/// chips reaching that far (never a real face) take the exact f64 path.
const FIXED_LIMIT: f64 = (1u64 << 30) as f64;

/// Bilinear warp of `img` into a `w` x `h` image, `chip_to_img` mapping output pixel centres to
/// input coordinates (no pyramid). Outside the image the source is black, as in OpenCV's
/// `warpAffine(borderValue=0)` that insightface's `norm_crop` calls: a position within one pixel
/// of the image's edge blends the edge pixels with black, one farther out is black.
///
/// This is the whole per-face cost of `pack --landmarks` besides JPEG, so it runs in integers
/// as OpenCV's `warpAffine` does: source coordinates advance along each row in 32.32 fixed point
/// and the blend uses weights quantised to 1/1024 pixel. The quantisation moves a value by at
/// most 255/1024 before rounding, so every pixel is within one grey level of the exact f64
/// bilinear value ([`warp_affine_exact`], which the tests hold it to).
pub(crate) fn warp_affine(img: &RgbImage, chip_to_img: &Affine, w: u32, h: u32) -> RgbImage {
    let corners = [[0.0, 0.0], [f64::from(w), 0.0], [0.0, f64::from(h)], [f64::from(w), f64::from(h)]];
    let reach = corners.iter().flat_map(|&p| chip_to_img.apply(p)).fold(0.0f64, |a, v| {
        if v.is_nan() {
            f64::INFINITY
        } else {
            a.max(v.abs())
        }
    });
    if !(reach < FIXED_LIMIT) {
        return warp_affine_exact(img, chip_to_img, w, h);
    }
    let (iw, ih) = (img.width() as usize, img.height() as usize);
    let src = img.as_raw();
    let mut out = RgbImage::new(w, h);
    let scale = (1u64 << STEP_BITS) as f64;
    // Half a weight step, so that the truncating shifts below round to the nearest 1/1024.
    let half_bin = 1i64 << (STEP_BITS - WARP_BITS - 1);
    let fixed = |v: f64| (v * scale).round() as i64;
    let (m, b) = (&chip_to_img.m, &chip_to_img.b);
    let (dx, dy) = (fixed(m[0][0]), fixed(m[1][0]));
    let raw: &mut [u8] = out.as_mut();
    for (r, row) in raw.chunks_exact_mut(w as usize * 3).enumerate() {
        let mut x = fixed(m[0][1] * r as f64 + b[0]) + half_bin;
        let mut y = fixed(m[1][1] * r as f64 + b[1]) + half_bin;
        let mut next = || {
            let q = (x >> (STEP_BITS - WARP_BITS), y >> (STEP_BITS - WARP_BITS));
            x += dx;
            y += dy;
            q
        };
        for px in row.chunks_exact_mut(3) {
            let (qx, qy) = next();
            blend1(src, iw, ih, qx, qy, px);
        }
    }
    out
}

/// One pixel of [`warp_affine`] from its fixed-point source position (1/1024 pixel).
#[inline(always)]
fn blend1(src: &[u8], iw: usize, ih: usize, qx: i64, qy: i64, px: &mut [u8]) {
    const ONE: u32 = 1 << WARP_BITS;
    const HALF: u32 = 1 << (2 * WARP_BITS - 1);
    let (l, t) = (qx >> WARP_BITS, qy >> WARP_BITS);
    let (fx, fy) = (qx as u32 & (ONE - 1), qy as u32 & (ONE - 1));
    let (gx, gy) = (ONE - fx, ONE - fy);
    // The four weights sum to 2^20; expanding the two-step blend this way is the same integer
    // arithmetic with fewer multiplications.
    let (w_tl, w_tr, w_bl, w_br) = (gx * gy, fx * gy, gx * fy, fx * fy);
    // One unsigned compare per axis also rejects negative positions; the 2x2 neighbourhoods that
    // leave the image (rare: only along its edges) take the per-pixel path with black outside.
    if (l as u64) >= (iw as u64).saturating_sub(1) || (t as u64) >= (ih as u64).saturating_sub(1) {
        if l < -1 || t < -1 || l >= iw as i64 || t >= ih as i64 {
            return;
        }
        let at = |x: i64, y: i64, ch: usize| -> u32 {
            if x < 0 || y < 0 || x >= iw as i64 || y >= ih as i64 {
                0
            } else {
                u32::from(src[(y as usize * iw + x as usize) * 3 + ch])
            }
        };
        for (ch, p) in px.iter_mut().enumerate() {
            let v =
                at(l, t, ch) * w_tl + at(l + 1, t, ch) * w_tr + at(l, t + 1, ch) * w_bl + at(l + 1, t + 1, ch) * w_br;
            *p = ((v + HALF) >> (2 * WARP_BITS)) as u8;
        }
        return;
    }
    let stride = iw * 3;
    let i = t as usize * stride + l as usize * 3;
    // One bounds check for all 12 bytes instead of one per byte.
    let (top, bot) = src[i..i + stride + 6].split_at(stride);
    for ch in 0..3 {
        let v = u32::from(top[ch]) * w_tl
            + u32::from(top[ch + 3]) * w_tr
            + u32::from(bot[ch]) * w_bl
            + u32::from(bot[ch + 3]) * w_br;
        // At most 255 * 2^20 + 2^19: fits u32, and the shifted result fits u8.
        px[ch] = ((v + HALF) >> (2 * WARP_BITS)) as u8;
    }
}

/// [`warp_affine`] computed exactly in f64 per pixel, rounded to nearest: the reference the
/// fast path is tested against, and the path for chips that reach absurdly far.
pub fn warp_affine_exact(img: &RgbImage, t: &Affine, w: u32, h: u32) -> RgbImage {
    let v = View::whole(img);
    RgbImage::from_fn(w, h, |c, r| {
        let p = t.apply([f64::from(c), f64::from(r)]);
        let (left, top) = (p[0].floor(), p[1].floor());
        let (l, tp) = (left as i64, top as i64);
        if !(l >= -1 && tp >= -1 && l < v.nc && tp < v.nr) {
            return image::Rgb([0, 0, 0]);
        }
        let (lr, tb) = (p[0] - left, p[1] - top);
        // Black outside the image, as OpenCV's BORDER_CONSTANT with value 0.
        let black = [0u8; 3];
        let px = |r: i64, c: i64| if r >= 0 && c >= 0 && r < v.nr && c < v.nc { v.px(r, c) } else { &black[..] };
        let (a, b, cc, d) = (px(tp, l), px(tp, l + 1), px(tp + 1, l), px(tp + 1, l + 1));
        image::Rgb(std::array::from_fn(|ch| {
            let f = |x: &[u8]| f64::from(x[ch]);
            let val = (1.0 - tb) * ((1.0 - lr) * f(a) + lr * f(b)) + tb * ((1.0 - lr) * f(cc) + lr * f(d));
            val.round() as u8
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pyramid_down_of_a_flat_image_is_flat_with_dlib_size() {
        let img = RgbImage::from_pixel(21, 13, image::Rgb([100, 50, 200]));
        let down = pyramid_down_rgb(&View::whole(&img));
        // dlib: (nc - 3) / 2 columns, (nr - 3) / 2 rows.
        assert_eq!(down.dimensions(), (9, 5));
        assert!(down.pixels().all(|p| p.0 == [100, 50, 200]));
    }

    #[test]
    fn identity_chip_is_a_plain_copy_with_zero_border() {
        let img = RgbImage::from_fn(10, 10, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let d =
            ChipDetails { rect: DRect { left: -2.0, top: 3.0, right: 5.0, bottom: 6.0 }, angle: 0.0, rows: 4, cols: 8 };
        let chip = extract_chip(&img, &d);
        assert_eq!(chip.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(chip.get_pixel(2, 0).0, [0, 3, 7]);
        assert_eq!(chip.get_pixel(7, 3).0, [5, 6, 7]);
    }

    #[test]
    fn fixed_point_warp_is_within_one_level_of_the_exact_warp() {
        // A busy image (every pixel different) under rotation, scale and a shift that puts part
        // of the chip outside the source.
        let img =
            RgbImage::from_fn(97, 83, |x, y| image::Rgb([(x * 7 + y * 3) as u8, (x * y) as u8, (x ^ y) as u8 * 2]));
        let a = (0.4f64).sin_cos();
        let t = Affine { m: [[0.7 * a.1, -0.7 * a.0], [0.7 * a.0, 0.7 * a.1]], b: [-5.3, 12.7] };
        let fast = warp_affine(&img, &t, 120, 110);
        let exact = warp_affine_exact(&img, &t, 120, 110);
        let (mut differ, mut inside) = (0, 0);
        for (p, q) in fast.pixels().zip(exact.pixels()) {
            for ch in 0..3 {
                let d = (i32::from(p[ch]) - i32::from(q[ch])).abs();
                // Only a point within 1/2048 px of the image edge may flip between inside and
                // outside; none does here, so every channel must be within one level.
                assert!(d <= 1, "fixed point {p:?} vs exact {q:?}");
                differ += usize::from(d == 1);
            }
            inside += usize::from(q.0 != [0, 0, 0]);
        }
        assert!(inside > 5000, "the test must sample mostly inside the image ({inside})");
        assert!(differ < inside, "rounding differences should be rare ({differ} of {inside})");
    }

    #[test]
    fn a_chip_reaching_absurdly_far_takes_the_exact_path() {
        let img = RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8 * 5, y as u8 * 7, 99]));
        // Scale 1e8: only the top-left chip pixel lands in the image.
        let t = Affine { m: [[1e8, 0.0], [0.0, 1e8]], b: [3.25, 4.5] };
        let chip = warp_affine(&img, &t, 4, 4);
        assert_eq!(chip, warp_affine_exact(&img, &t, 4, 4));
        assert_ne!(chip.get_pixel(0, 0).0, [0, 0, 0]);
    }
}
