//! Encoding a face image into a record payload and decoding it back.

use super::format::Encoding;
use anyhow::{bail, Context, Result};
use image::{ImageFormat, RgbImage};

/// Encodes an RGB image as `encoding` (`quality` applies to JPEG).
pub fn encode(img: &RgbImage, encoding: Encoding, quality: u8) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    match encoding {
        Encoding::Jpeg => {
            // jpeg-encoder's AVX2 path is several times faster than image's scalar encoder, and
            // its output depends only on the pixels and quality (same bytes on any thread count).
            let (w, h) = (u16::try_from(img.width()), u16::try_from(img.height()));
            let (Ok(w), Ok(h)) = (w, h) else { bail!("{}x{} is too large for JPEG", img.width(), img.height()) };
            let enc = jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100));
            enc.encode(img.as_raw(), w, h, jpeg_encoder::ColorType::Rgb).context("JPEG encoding failed")?;
        }
        Encoding::Png => {
            img.write_to(&mut std::io::Cursor::new(&mut out), ImageFormat::Png).context("PNG encoding failed")?;
        }
        Encoding::Raw => out.extend_from_slice(img.as_raw()),
        Encoding::RawZstd => out = zstd::bulk::compress(img.as_raw(), 3).context("zstd compression failed")?,
    }
    Ok(out)
}

/// Decodes a record payload that claims to be `width` x `height`; the claim bounds every
/// allocation, so a corrupt payload cannot ask for more memory than the header allows.
pub fn decode(encoding: Encoding, payload: &[u8], width: u16, height: u16) -> Result<RgbImage> {
    let (w, h) = (width as u32, height as u32);
    let raw_len = w as usize * h as usize * 3;
    match encoding {
        Encoding::Raw => {
            if payload.len() != raw_len {
                bail!("raw payload has {} bytes, {w}x{h} RGB needs {raw_len}", payload.len());
            }
            Ok(RgbImage::from_raw(w, h, payload.to_vec()).expect("length checked"))
        }
        Encoding::RawZstd => {
            let data = zstd::bulk::decompress(payload, raw_len).context("zstd payload does not decompress")?;
            if data.len() != raw_len {
                bail!("zstd payload holds {} bytes, {w}x{h} RGB needs {raw_len}", data.len());
            }
            Ok(RgbImage::from_raw(w, h, data).expect("length checked"))
        }
        Encoding::Jpeg | Encoding::Png => {
            let format = if encoding == Encoding::Jpeg { ImageFormat::Jpeg } else { ImageFormat::Png };
            let mut reader = image::ImageReader::with_format(std::io::Cursor::new(payload), format);
            let mut limits = image::Limits::default();
            limits.max_image_width = Some(w.max(1));
            limits.max_image_height = Some(h.max(1));
            limits.max_alloc = Some((raw_len as u64 + (1 << 20)) * 2);
            reader.limits(limits);
            let img = reader.decode().context("image does not decode")?;
            Ok(img.into_rgb8())
        }
    }
}
