//! Decoding a record payload back into pixels, bounded by what its header claims (the reverse of
//! `facekit_pack::encode`). `verify-shard --decode` checks payloads through [`decoded_size`].

use anyhow::{bail, Context, Result};
use facekit_shard::format::MAX_RECORD_PIXELS;
use facekit_shard::Encoding;
use image::{ImageFormat, RgbImage};

/// Decodes a record payload that claims to be `width` x `height`; the claim bounds every
/// allocation, so a corrupt payload cannot ask for more memory than the header allows.
pub fn decode(encoding: Encoding, payload: &[u8], width: u16, height: u16) -> Result<RgbImage> {
    let (w, h) = (width as u32, height as u32);
    if u64::from(w) * u64::from(h) > MAX_RECORD_PIXELS {
        bail!("a {w}x{h} record image is larger than a record may hold ({} pixels)", MAX_RECORD_PIXELS);
    }
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

/// The size a payload really decodes to, for `facekit_shard::verify`'s payload check.
pub fn decoded_size(encoding: Encoding, payload: &[u8], width: u16, height: u16) -> std::result::Result<(u32, u32), String> {
    decode(encoding, payload, width, height).map(|img| img.dimensions()).map_err(|e| format!("{e:#}"))
}
