//! JPEG payloads through libjpeg-turbo, the decoder Pillow and OpenCV use (so a batch holds the
//! pixels insightface's own loaders see) and the fastest measured here (docs/PERFORMANCE.md,
//! "Data loader"). The rules are `facekit_pack::photo`'s: the record header's size bounds the
//! decode, a corrupt-data warning is a failure (libjpeg-turbo would fill the damaged part with
//! grey and the face would be trained on), and a decompressor that failed is replaced.

use super::error::DecodeError;

/// Most scans a progressive payload may have: each scan is a pass over the whole image, so a
/// small image with thousands of scans costs seconds (`facekit_pack::photo::MAX_JPEG_SCANS`).
const MAX_PROGRESSIVE_SCANS: usize = 500;

/// One libjpeg-turbo decompressor, kept between records (creating one costs more than decoding
/// a small chip).
#[derive(Default)]
pub(crate) struct Jpeg {
    handle: Option<turbojpeg::Decompressor>,
}

impl Jpeg {
    /// Decodes `payload`, which must be a `w` x `h` JPEG, into `out` as RGB rows `pitch` bytes
    /// apart. `Ok(false)` for a colour space libjpeg-turbo cannot turn into RGB (CMYK, YCCK),
    /// which the caller hands to the general codec.
    pub(crate) fn decode_into(
        &mut self,
        payload: &[u8],
        w: u16,
        h: u16,
        out: &mut [u8],
        pitch: usize,
    ) -> Result<bool, DecodeError> {
        let result = self.try_decode(payload, w, h, out, pitch);
        if result.is_err() {
            // libjpeg-turbo's state after a failed call is not to be trusted (see facekit_pack::photo).
            self.handle = None;
        }
        result
    }

    fn try_decode(
        &mut self,
        payload: &[u8],
        w: u16,
        h: u16,
        out: &mut [u8],
        pitch: usize,
    ) -> Result<bool, DecodeError> {
        let (w, h) = (usize::from(w), usize::from(h));
        // tjDecompress2 reads a size of 0 as "the JPEG's own": never pass one.
        if w == 0 || h == 0 || pitch < w * 3 || out.len() < pitch * (h - 1) + w * 3 {
            return Err(DecodeError::new(format!(
                "a {w}x{h} JPEG in rows of {pitch} bytes cannot fill an output of {} bytes",
                out.len()
            )));
        }
        check_scans(payload)?;
        let d = match self.handle.as_mut() {
            Some(d) => d,
            None => self.handle.insert(
                turbojpeg::Decompressor::new()
                    .map_err(|e| DecodeError::new(format!("cannot start libjpeg-turbo: {e}")))?,
            ),
        };
        let header =
            d.read_header(payload).map_err(|e| DecodeError::new(format!("JPEG header does not decode: {e}")))?;
        if (header.width, header.height) != (w, h) {
            return Err(DecodeError::new(format!(
                "JPEG is {}x{} but the record header says {w}x{h}",
                header.width, header.height
            )));
        }
        if matches!(header.colorspace, turbojpeg::Colorspace::CMYK | turbojpeg::Colorspace::YCCK) {
            return Ok(false);
        }
        let image = turbojpeg::Image { pixels: out, width: w, pitch, height: h, format: turbojpeg::PixelFormat::RGB };
        // Corrupt-data warnings ("premature end of data segment") fail the call too.
        d.decompress(payload, image).map_err(|e| DecodeError::new(format!("JPEG does not decode: {e}")))?;
        Ok(true)
    }
}

/// Refuses a progressive payload with more than [`MAX_PROGRESSIVE_SCANS`] scans. Only a
/// progressive JPEG can have many (a sequential one codes each component once), so the common
/// baseline payload costs a walk over its few header segments, not a search of its bytes.
fn check_scans(b: &[u8]) -> Result<(), DecodeError> {
    if !is_progressive(b) {
        return Ok(());
    }
    // Markers are never byte-stuffed, so every FF DA is a start of scan.
    let scans = b.windows(2).filter(|w| w == &[0xFF, 0xDA]).count();
    if scans > MAX_PROGRESSIVE_SCANS {
        return Err(DecodeError::new(format!(
            "a progressive JPEG of {scans} scans (at most {MAX_PROGRESSIVE_SCANS}): decoding it would take too long"
        )));
    }
    Ok(())
}

/// Whether the frame header met before the first scan is a progressive one (SOF2, SOF6, SOF10,
/// SOF14). A payload whose segments cannot be walked counts as progressive, so that its scans
/// are counted.
fn is_progressive(b: &[u8]) -> bool {
    let mut i = 2;
    while i + 4 <= b.len() {
        if b[i] != 0xFF {
            return true;
        }
        let marker = b[i + 1];
        match marker {
            0xFF => i += 1,
            0xC2 | 0xC6 | 0xCA | 0xCE => return true,
            0xC0 | 0xC1 | 0xC3 | 0xC5 | 0xC7 | 0xC9 | 0xCB | 0xCD | 0xCF | 0xDA => return false,
            0xD0..=0xD9 | 0x01 => i += 2,
            _ => i += 2 + usize::from(u16::from_be_bytes([b[i + 2], b[i + 3]])),
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A marker segment: FF, the marker, its big-endian length and `body`.
    fn segment(marker: u8, body: &[u8]) -> Vec<u8> {
        let mut s = vec![0xFF, marker];
        s.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
        s.extend_from_slice(body);
        s
    }

    #[test]
    fn a_progressive_payload_with_too_many_scans_is_refused_and_a_baseline_one_is_not_searched() {
        let mut progressive = vec![0xFF, 0xD8];
        progressive.extend(segment(0xE0, b"JFIF\0"));
        progressive.extend(segment(0xC2, &[8, 0, 8, 0, 8, 1, 1, 0x11, 0]));
        for _ in 0..=MAX_PROGRESSIVE_SCANS {
            progressive.extend(segment(0xDA, &[1, 1, 0, 0, 63, 0]));
        }
        let e = check_scans(&progressive).unwrap_err();
        assert!(e.0.contains("501 scans"), "{e}");
        // The same scans after a baseline frame header are not counted (libjpeg-turbo refuses
        // such a file itself, after reading its first scan).
        let mut baseline = progressive.clone();
        baseline[2 + 9 + 1] = 0xC0;
        assert!(!is_progressive(&baseline[..]) && check_scans(&baseline).is_ok());
    }
}
