//! The decode-and-augment stage: one record into RGB8 pixels at the training size, augmented as
//! asked, written into its place in a batch slot.
//!
//! JPEG (the format nearly every dataset uses) goes through libjpeg-turbo ([`crate::jpeg`]);
//! PNG, raw and raw-zstd through [`crate::codec::decode`]. A record whose size differs from the
//! requested one is resized by `fast_image_resize`'s "bilinear" convolution, an antialiased
//! triangle filter (PIL's `Image.BILINEAR` resize, not 2x2 interpolation); the aspect ratio is
//! not kept, since face chips are square. A random crop is part of that same resize.
//!
//! An image used as stored is decoded (or resized) straight into its place in the batch slot.
//! One that is flipped or recoloured is decoded into a buffer that stays in the core's cache and
//! written into the slot by [`crate::augment::write_view`], which streams each row past the
//! cache: the slot is written once and never read back by this core.

use super::augment::{write_view, View};
use super::codec;
use super::error::DecodeError;
use super::jpeg::Jpeg;
use facekit_shard::reader::RecordView;
use facekit_shard::Encoding;
use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;

/// A reusable decoder: keeps libjpeg-turbo's decompressor, the resizer and its buffers between
/// records, so a decode thread allocates nothing per image once warmed up.
#[derive(Default)]
pub struct RecordDecoder {
    jpeg: Jpeg,
    resizer: Resizer,
    /// A record at its own size, before the resize or the flip.
    decoded: CachedRows,
    /// A record resized, before the flip.
    resized: Vec<u8>,
}

impl RecordDecoder {
    /// A fresh decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes `rec` as `size` x `size` RGB8 into `out` (exactly `size * size * 3` bytes),
    /// augmented as `view` says ([`View::IDENTITY`]: as stored).
    pub fn decode_into(
        &mut self,
        rec: &RecordView<'_>,
        size: u32,
        view: &View,
        out: &mut [u8],
    ) -> Result<(), DecodeError> {
        let (w, h) = (rec.header.width as u32, rec.header.height as u32);
        if w == 0 || h == 0 {
            return Err(DecodeError::new(format!("record header claims an empty {w}x{h} image")));
        }
        if u64::from(w) * u64::from(h) > facekit_shard::format::MAX_RECORD_PIXELS {
            return Err(DecodeError::new(format!(
                "record header claims a {w}x{h} image, larger than a record may hold"
            )));
        }
        if size == 0 || size > 4096 {
            return Err(DecodeError::new(format!("output size {size} is out of range (1..=4096)")));
        }
        let want = size as usize * size as usize * 3;
        if out.len() != want {
            return Err(DecodeError::new(format!(
                "output buffer has {} bytes, {size}x{size} RGB needs {want}",
                out.len()
            )));
        }
        let as_stored = !view.flip && !view.changes_colour();
        let side = size as usize;
        let native = w == size && h == size && view.crop.is_none();
        if native && as_stored {
            return self.decode_native(rec, out, side * 3);
        }
        let mut decoded = std::mem::take(&mut self.decoded);
        let result = self.decode_via(rec, &mut decoded, native, view, out, side);
        self.decoded = decoded;
        result
    }

    /// [`RecordDecoder::decode_into`] through the cached buffer `decoded`, then a resize and/or
    /// [`write_view`].
    fn decode_via(
        &mut self,
        rec: &RecordView<'_>,
        decoded: &mut CachedRows,
        native: bool,
        view: &View,
        out: &mut [u8],
        side: usize,
    ) -> Result<(), DecodeError> {
        let (w, h) = (rec.header.width as usize, rec.header.height as usize);
        // write_view takes any pitch: a multiple of 32 keeps every row off libjpeg-turbo's
        // non-temporal path (see CachedRows). The resizer reads rows back to back.
        let pitch = if native { (w * 3).div_ceil(32) * 32 } else { w * 3 };
        let rows = decoded.rows(pitch, h);
        self.decode_native(rec, rows, pitch)?;
        if native {
            write_view(rows, pitch, out, side, view);
            return Ok(());
        }
        if !view.flip && !view.changes_colour() {
            return self.resize(rows, w as u32, h as u32, view, out, side as u32);
        }
        let mut resized = std::mem::take(&mut self.resized);
        resized.resize(out.len(), 0);
        let result = self.resize(rows, w as u32, h as u32, view, &mut resized, side as u32);
        if result.is_ok() {
            write_view(&resized, side * 3, out, side, view);
        }
        self.resized = resized;
        result
    }

    /// Decodes at the record's own size into `out`, rows `pitch` bytes apart.
    fn decode_native(&mut self, rec: &RecordView<'_>, out: &mut [u8], pitch: usize) -> Result<(), DecodeError> {
        let (w, h) = (rec.header.width, rec.header.height);
        let encoding = Encoding::from_code(rec.header.encoding)
            .ok_or_else(|| DecodeError::new(format!("unknown encoding code {}", rec.header.encoding)))?;
        if encoding == Encoding::Jpeg && self.jpeg.decode_into(rec.payload, w, h, out, pitch)? {
            return Ok(());
        }
        let img = codec::decode(encoding, rec.payload, w, h)?;
        if img.dimensions() != (w as u32, h as u32) {
            return Err(DecodeError::new(format!(
                "image is {}x{} but the record header says {w}x{h}",
                img.width(),
                img.height()
            )));
        }
        let row = w as usize * 3;
        for (r, src) in img.as_raw().chunks_exact(row).enumerate() {
            out[r * pitch..r * pitch + row].copy_from_slice(src);
        }
        Ok(())
    }

    /// Resizes (and crops) `src` to `size` x `size` into `out`.
    fn resize(
        &mut self,
        src: &[u8],
        w: u32,
        h: u32,
        view: &View,
        out: &mut [u8],
        size: u32,
    ) -> Result<(), DecodeError> {
        let src = ImageRef::new(w, h, src, PixelType::U8x3)
            .map_err(|e| DecodeError::new(format!("resize source buffer: {e}")))?;
        let mut dst = Image::from_slice_u8(size, size, out, PixelType::U8x3)
            .map_err(|e| DecodeError::new(format!("resize target buffer: {e}")))?;
        let mut opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
        if let Some(c) = view.crop {
            let (left, top, cw, ch) = c.pixels(w, h);
            opts = opts.crop(left, top, cw, ch);
        }
        self.resizer
            .resize(&src, &mut dst, &opts)
            .map_err(|e| DecodeError::new(format!("cannot resize {w}x{h} to {size}x{size}: {e}")))
    }
}

/// A decode buffer whose rows libjpeg-turbo writes through the cache. Its SIMD colour conversion
/// writes 32-byte aligned rows with non-temporal stores, which bypass the cache: right for the
/// batch slot, wrong for a buffer read back at once. The rows here start 16 bytes past a 32-byte
/// boundary (every row when the pitch is a multiple of 32).
#[derive(Default)]
struct CachedRows(Vec<u8>);

impl CachedRows {
    /// Room for `h` rows `pitch` bytes apart.
    fn rows(&mut self, pitch: usize, h: usize) -> &mut [u8] {
        let len = pitch * h;
        self.0.resize(len + 48, 0);
        let start = (48 - self.0.as_ptr() as usize % 32) % 32;
        &mut self.0[start..start + len]
    }
}

/// Decodes one record to an `size` x `size` RGB image (not augmented): the same pixels the
/// loader puts into a batch, for embedding or inspecting single records.
pub fn decode_record(rec: &RecordView<'_>, size: u32) -> Result<RgbImage, DecodeError> {
    if size == 0 || size > 4096 {
        return Err(DecodeError::new(format!("output size {size} is out of range (1..=4096)")));
    }
    let mut out = vec![0u8; size as usize * size as usize * 3];
    RecordDecoder::new().decode_into(rec, size, &View::IDENTITY, &mut out)?;
    Ok(RgbImage::from_raw(size, size, out).expect("buffer sized for size x size RGB"))
}
