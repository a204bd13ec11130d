//! Decoding one record into RGB8 pixels at the training size, augmented as asked.
//!
//! JPEG (the format nearly every dataset uses) goes through `zune-jpeg`, a SIMD decoder that
//! writes straight into the caller's buffer; PNG, raw and raw-zstd go through
//! [`crate::codec::decode`]. A record whose size differs from the requested one is
//! resized by `fast_image_resize`'s "bilinear" convolution, an antialiased triangle filter (PIL's
//! `Image.BILINEAR` resize, not 2x2 interpolation); the aspect ratio is not kept,
//! since face chips are square. A random crop is part of that same resize (no extra copy); flip
//! and colour changes then work in place on the output.

use super::augment::{apply_colour, View};
use crate::codec;
use facekit_shard::reader::RecordView;
use facekit_shard::Encoding;
use anyhow::{bail, Context, Result};
use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

/// A reusable decoder: keeps the resizer and a scratch buffer between records, so a worker
/// thread allocates nothing per image once warmed up.
pub struct RecordDecoder {
    resizer: Resizer,
    scratch: Vec<u8>,
}

impl Default for RecordDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl RecordDecoder {
    /// A fresh decoder.
    pub fn new() -> Self {
        RecordDecoder { resizer: Resizer::new(), scratch: Vec::new() }
    }

    /// Decodes `rec` as `size` x `size` RGB8 into `out` (exactly `size * size * 3` bytes),
    /// augmented as `view` says ([`View::IDENTITY`]: as stored).
    pub fn decode_into(&mut self, rec: &RecordView<'_>, size: u32, view: &View, out: &mut [u8]) -> Result<()> {
        let (w, h) = (rec.header.width as u32, rec.header.height as u32);
        if w == 0 || h == 0 {
            bail!("record header claims an empty {w}x{h} image");
        }
        if u64::from(w) * u64::from(h) > facekit_shard::format::MAX_RECORD_PIXELS {
            bail!("record header claims a {w}x{h} image, larger than a record may hold");
        }
        if size == 0 || size > 4096 {
            bail!("output size {size} is out of range (1..=4096)");
        }
        let want = size as usize * size as usize * 3;
        if out.len() != want {
            bail!("output buffer has {} bytes, {size}x{size} RGB needs {want}", out.len());
        }
        if w == size && h == size && view.crop.is_none() {
            decode_native(rec, out)?;
        } else {
            let mut scratch = std::mem::take(&mut self.scratch);
            scratch.resize(w as usize * h as usize * 3, 0);
            let result = decode_native(rec, &mut scratch).and_then(|()| self.resize(&scratch, w, h, view, out, size));
            self.scratch = scratch;
            result?;
        }
        if view.flip {
            mirror_rows(out, size as usize);
        }
        apply_colour(out, view);
        Ok(())
    }

    fn resize(&mut self, src: &[u8], w: u32, h: u32, view: &View, out: &mut [u8], size: u32) -> Result<()> {
        let src = ImageRef::new(w, h, src, PixelType::U8x3).context("resize source buffer")?;
        let mut dst = Image::from_slice_u8(size, size, out, PixelType::U8x3).context("resize target buffer")?;
        let mut opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
        if let Some(c) = view.crop {
            let (left, top, cw, ch) = c.pixels(w, h);
            opts = opts.crop(left, top, cw, ch);
        }
        self.resizer
            .resize(&src, &mut dst, &opts)
            .with_context(|| format!("cannot resize {w}x{h} to {size}x{size}"))
    }
}

/// Decodes one record to an `size` x `size` RGB image (not augmented): the same pixels the
/// loader puts into a batch, for embedding or inspecting single records.
pub fn decode_record(rec: &RecordView<'_>, size: u32) -> Result<RgbImage> {
    let mut out = vec![0u8; size as usize * size as usize * 3];
    RecordDecoder::new().decode_into(rec, size, &View::IDENTITY, &mut out)?;
    Ok(RgbImage::from_raw(size, size, out).expect("buffer sized for size x size RGB"))
}

/// Decodes at the record's own size into `out` (`width * height * 3` bytes).
fn decode_native(rec: &RecordView<'_>, out: &mut [u8]) -> Result<()> {
    let (w, h) = (rec.header.width, rec.header.height);
    let encoding = Encoding::from_code(rec.header.encoding).context("unknown encoding code")?;
    if encoding == Encoding::Jpeg && decode_jpeg(rec.payload, w, h, out)? {
        return Ok(());
    }
    let img = codec::decode(encoding, rec.payload, w, h)?;
    if img.dimensions() != (w as u32, h as u32) {
        bail!("image is {}x{} but the record header says {w}x{h}", img.width(), img.height());
    }
    out.copy_from_slice(img.as_raw());
    Ok(())
}

/// Decodes a JPEG straight into `out`. Returns `Ok(false)` for the rare JPEG whose output is not
/// 3-channel (greyscale, CMYK), which the caller hands to the general codec instead.
fn decode_jpeg(payload: &[u8], w: u16, h: u16, out: &mut [u8]) -> Result<bool> {
    // The header's size bounds the decoder, so a corrupt payload cannot make it allocate more.
    let opts = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(w as usize)
        .set_max_height(h as usize);
    let mut dec = JpegDecoder::new_with_options(ZCursor::new(payload), opts);
    dec.decode_headers().map_err(|e| anyhow::anyhow!("JPEG header does not decode: {e:?}"))?;
    let (dw, dh) = dec.dimensions().context("JPEG has no frame header")?;
    if (dw, dh) != (w as usize, h as usize) {
        bail!("JPEG is {dw}x{dh} but the record header says {w}x{h}");
    }
    if dec.output_buffer_size() != Some(out.len()) {
        return Ok(false);
    }
    dec.decode_into(out).map_err(|e| anyhow::anyhow!("JPEG does not decode: {e:?}"))?;
    Ok(true)
}

/// Mirrors an RGB8 `size` x `size` image left-right in place.
pub fn mirror_rows(img: &mut [u8], size: usize) {
    for row in img.chunks_exact_mut(size * 3) {
        let (mut i, mut j) = (0, size - 1);
        while i < j {
            let (a, b) = row.split_at_mut(j * 3);
            a[i * 3..i * 3 + 3].swap_with_slice(&mut b[..3]);
            i += 1;
            j -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_rows_reverses_pixels_not_bytes() {
        // 3x1... as a 3x3 image: each row r,g,b triples 0..9
        let mut img: Vec<u8> = (0..27).collect();
        mirror_rows(&mut img, 3);
        assert_eq!(&img[..9], &[6, 7, 8, 3, 4, 5, 0, 1, 2]);
        mirror_rows(&mut img, 3);
        assert_eq!(img, (0..27).collect::<Vec<u8>>());
    }
}
