//! Decoding a record payload back into pixels, bounded by what its header claims (the reverse of
//! `facekit_pack::encode`). `verify-shard --decode` checks payloads through [`decoded_size`], with
//! the decoder the loader uses, so a shard that verifies is a shard that loads.

use super::error::DecodeError;
use super::jpeg::Jpeg;
use facekit_shard::format::MAX_RECORD_PIXELS;
use facekit_shard::Encoding;
use image::{ImageFormat, RgbImage};

/// Decodes a record payload that claims to be `width` x `height`; the claim bounds every
/// allocation, so a corrupt payload cannot ask for more memory than the header allows.
pub fn decode(encoding: Encoding, payload: &[u8], width: u16, height: u16) -> Result<RgbImage, DecodeError> {
    let (w, h) = (width as u32, height as u32);
    if u64::from(w) * u64::from(h) > MAX_RECORD_PIXELS {
        return Err(DecodeError::new(format!(
            "a {w}x{h} record image is larger than a record may hold ({MAX_RECORD_PIXELS} pixels)"
        )));
    }
    if encoding == Encoding::Jpeg && w > 0 && h > 0 {
        let mut out = vec![0; w as usize * h as usize * 3];
        if Jpeg::default().decode_into(payload, width, height, &mut out, w as usize * 3)? {
            return Ok(RgbImage::from_raw(w, h, out).expect("sized for w x h RGB"));
        }
    }
    decode_general(encoding, payload, w, h)
}

/// Raw, zstd, PNG, and the JPEGs libjpeg-turbo cannot give as RGB.
fn decode_general(encoding: Encoding, payload: &[u8], w: u32, h: u32) -> Result<RgbImage, DecodeError> {
    let raw_len = w as usize * h as usize * 3;
    let out = match encoding {
        Encoding::Raw => {
            if payload.len() != raw_len {
                return Err(DecodeError::new(format!(
                    "raw payload has {} bytes, {w}x{h} RGB needs {raw_len}",
                    payload.len()
                )));
            }
            payload.to_vec()
        }
        Encoding::RawZstd => {
            let mut out = vec![0; raw_len];
            let n = zstd::bulk::decompress_to_buffer(payload, &mut out[..])
                .map_err(|e| DecodeError::new(format!("zstd payload does not decompress: {e}")))?;
            if n != raw_len {
                return Err(DecodeError::new(format!("zstd payload holds {n} bytes, {w}x{h} RGB needs {raw_len}")));
            }
            out
        }
        Encoding::Jpeg | Encoding::Png => {
            let format = if encoding == Encoding::Jpeg { ImageFormat::Jpeg } else { ImageFormat::Png };
            let mut reader = image::ImageReader::with_format(std::io::Cursor::new(payload), format);
            let mut limits = image::Limits::default();
            limits.max_image_width = Some(w.max(1));
            limits.max_image_height = Some(h.max(1));
            limits.max_alloc = Some((raw_len as u64 + (1 << 20)) * 2);
            reader.limits(limits);
            let img = reader.decode().map_err(|e| DecodeError::new(format!("image does not decode: {e}")))?;
            return Ok(img.into_rgb8());
        }
    };
    Ok(RgbImage::from_raw(w, h, out).expect("sized for w x h RGB"))
}

/// The size a payload really decodes to, for `facekit_shard::verify`'s payload check.
pub fn decoded_size(
    encoding: Encoding,
    payload: &[u8],
    width: u16,
    height: u16,
) -> std::result::Result<(u32, u32), String> {
    decode(encoding, payload, width, height).map(|img| img.dimensions()).map_err(|e| e.to_string())
}
