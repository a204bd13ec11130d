//! The decode-and-augment stage: one record into RGB8 pixels at the training size, augmented as
//! asked, written into its place in a batch slot.
//!
//! JPEG (the format nearly every dataset uses) goes through libjpeg-turbo ([`crate::jpeg`]);
//! PNG, raw and raw-zstd through [`crate::codec::decode`]. A record whose size differs from the
//! requested one is resized by `fast_image_resize`'s "bilinear" convolution, an antialiased
//! triangle filter (PIL's `Image.BILINEAR` resize, not 2x2 interpolation); the aspect ratio is
//! not kept, since face chips are square. A random crop is part of that same resize.
//!
//! Every image is decoded (or resized) straight into its place in the batch slot, and flipped and
//! recoloured there by [`crate::augment::apply_view`] while it is still in the core's cache.

use super::augment::{apply_view, View};
use super::codec;
use super::error::DecodeError;
use super::jpeg::Jpeg;
use facekit_shard::reader::RecordView;
use facekit_shard::Encoding;
use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;

/// A reusable decoder: keeps libjpeg-turbo's decompressor, the resizer and a scratch buffer
/// between records, so a decode thread allocates nothing per image once warmed up.
#[derive(Default)]
pub struct RecordDecoder {
    jpeg: Jpeg,
    resizer: Resizer,
    /// A record to be resized, at its own size.
    decoded: Vec<u8>,
}

impl RecordDecoder {
    /// A fresh decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes `rec` as `size` x `size` RGB8 into `out` (exactly `size * size * 3` bytes),
    /// augmented as `view` says ([`View::IDENTITY`]: as stored).
    pub fn decode_into(&mut self, rec: &RecordView<'_>, size: u32, view: &View, out: &mut [u8]) -> Result<(), DecodeError> {
        let (w, h) = (rec.header.width as u32, rec.header.height as u32);
        if w == 0 || h == 0 {
            return Err(DecodeError::new(format!("record header claims an empty {w}x{h} image")));
        }
        if u64::from(w) * u64::from(h) > facekit_shard::format::MAX_RECORD_PIXELS {
            return Err(DecodeError::new(format!("record header claims a {w}x{h} image, larger than a record may hold")));
        }
        if size == 0 || size > 4096 {
            return Err(DecodeError::new(format!("output size {size} is out of range (1..=4096)")));
        }
        let want = size as usize * size as usize * 3;
        if out.len() != want {
            return Err(DecodeError::new(format!("output buffer has {} bytes, {size}x{size} RGB needs {want}", out.len())));
        }
        if w == size && h == size && view.crop.is_none() {
            self.decode_native(rec, out)?;
        } else {
            let mut decoded = std::mem::take(&mut self.decoded);
            decoded.resize(w as usize * h as usize * 3, 0);
            let result = self.decode_native(rec, &mut decoded).and_then(|()| self.resize(&decoded, w, h, view, out, size));
            self.decoded = decoded;
            result?;
        }
        apply_view(out, size as usize, view);
        Ok(())
    }

    /// Decodes at the record's own size into `out` (`width * height * 3` bytes).
    fn decode_native(&mut self, rec: &RecordView<'_>, out: &mut [u8]) -> Result<(), DecodeError> {
        let (w, h) = (rec.header.width, rec.header.height);
        let encoding = Encoding::from_code(rec.header.encoding).ok_or_else(|| DecodeError::new(format!("unknown encoding code {}", rec.header.encoding)))?;
        if encoding == Encoding::Jpeg && self.jpeg.decode_into(rec.payload, w, h, out)? {
            return Ok(());
        }
        let img = codec::decode(encoding, rec.payload, w, h)?;
        if img.dimensions() != (w as u32, h as u32) {
            return Err(DecodeError::new(format!("image is {}x{} but the record header says {w}x{h}", img.width(), img.height())));
        }
        out.copy_from_slice(img.as_raw());
        Ok(())
    }

    /// Resizes (and crops) `src` to `size` x `size` into `out`.
    fn resize(&mut self, src: &[u8], w: u32, h: u32, view: &View, out: &mut [u8], size: u32) -> Result<(), DecodeError> {
        let src = ImageRef::new(w, h, src, PixelType::U8x3).map_err(|e| DecodeError::new(format!("resize source buffer: {e}")))?;
        let mut dst = Image::from_slice_u8(size, size, out, PixelType::U8x3).map_err(|e| DecodeError::new(format!("resize target buffer: {e}")))?;
        let mut opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
        if let Some(c) = view.crop {
            let (left, top, cw, ch) = c.pixels(w, h);
            opts = opts.crop(left, top, cw, ch);
        }
        self.resizer.resize(&src, &mut dst, &opts).map_err(|e| DecodeError::new(format!("cannot resize {w}x{h} to {size}x{size}: {e}")))
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

