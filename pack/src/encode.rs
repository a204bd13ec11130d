//! Encoding a face chip into a record payload (the reverse is `facekit_data::codec`).

use anyhow::{bail, Context, Result};
use facekit_shard::Encoding;
use image::{ImageFormat, RgbImage};

/// Chroma subsampling of JPEG records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Chroma {
    /// 4:2:0: colour at half resolution both ways, as Pillow, OpenCV and so insightface's `.rec`
    /// files write at quality 95; a third smaller and faster to encode and decode.
    #[default]
    #[cfg_attr(feature = "clap", value(name = "420"))]
    S420,
    /// 4:4:4: colour at full resolution.
    #[cfg_attr(feature = "clap", value(name = "444"))]
    S444,
}

impl Chroma {
    /// The name stored in manifests and used on the command line (`420`, `444`).
    pub fn name(self) -> &'static str {
        match self {
            Chroma::S420 => "420",
            Chroma::S444 => "444",
        }
    }
}

/// Encodes an RGB image as `encoding` (`quality` applies to JPEG, with 4:2:0 chroma).
pub fn encode(img: &RgbImage, encoding: Encoding, quality: u8) -> Result<Vec<u8>> {
    encode_with(img, encoding, quality, Chroma::default())
}

/// [`encode`] with a choice of JPEG chroma subsampling.
pub fn encode_with(img: &RgbImage, encoding: Encoding, quality: u8, chroma: Chroma) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    match encoding {
        Encoding::Jpeg => out = encode_jpeg(img, quality, chroma)?,
        Encoding::Png => {
            img.write_to(&mut std::io::Cursor::new(&mut out), ImageFormat::Png).context("PNG encoding failed")?;
        }
        Encoding::Raw => out.extend_from_slice(img.as_raw()),
        Encoding::RawZstd => out = zstd::bulk::compress(img.as_raw(), 3).context("zstd compression failed")?,
    }
    Ok(out)
}

thread_local! {
    // A libjpeg-turbo compressor holds about 100 KB of tables and buffers: one per thread, not
    // one per chip.
    static COMPRESSOR: std::cell::RefCell<Option<turbojpeg::Compressor>> = const { std::cell::RefCell::new(None) };
}

/// JPEG through libjpeg-turbo (SIMD Huffman coding and DCT: about 4x jpeg-encoder's speed on a
/// 224 chip). Its output depends only on pixels and settings, so packs stay byte-identical for
/// any thread count.
fn encode_jpeg(img: &RgbImage, quality: u8, chroma: Chroma) -> Result<Vec<u8>> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 || w > 65_500 || h > 65_500 {
        bail!("{w}x{h} cannot be stored as JPEG");
    }
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(turbojpeg::Compressor::new().context("cannot start libjpeg-turbo")?);
        }
        let c = slot.as_mut().expect("set just above");
        c.set_quality(i32::from(quality.clamp(1, 100)));
        c.set_subsamp(match chroma {
            Chroma::S420 => turbojpeg::Subsamp::Sub2x2,
            Chroma::S444 => turbojpeg::Subsamp::None,
        });
        let image = turbojpeg::Image {
            pixels: img.as_raw().as_slice(),
            width: w,
            pitch: w * 3,
            height: h,
            format: turbojpeg::PixelFormat::RGB,
        };
        let encoded = c.compress_to_vec(image);
        if encoded.is_err() {
            // As with the decompressor: libjpeg-turbo's state after a failed call is not reused.
            *slot = None;
        }
        encoded.context("JPEG encoding failed")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fine colour detail (1-pixel red/blue columns) over a smooth grey ramp.
    fn colour_stripes() -> RgbImage {
        RgbImage::from_fn(64, 48, |x, y| {
            let g = (y * 4) as u8;
            if x % 2 == 0 {
                image::Rgb([220, g / 2, 40])
            } else {
                image::Rgb([40, g / 2, 220])
            }
        })
    }

    fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f64 {
        let s: u64 = a.as_raw().iter().zip(b.as_raw()).map(|(&p, &q)| u64::from(p.abs_diff(q))).sum();
        s as f64 / a.as_raw().len() as f64
    }

    #[test]
    fn chroma_444_keeps_colour_detail_that_420_halves() {
        let img = colour_stripes();
        let s420 = encode_with(&img, Encoding::Jpeg, 95, Chroma::S420).unwrap();
        let s444 = encode_with(&img, Encoding::Jpeg, 95, Chroma::S444).unwrap();
        let decode = |b: &[u8]| image::load_from_memory(b).unwrap().into_rgb8();
        let (d420, d444) = (decode(&s420), decode(&s444));
        let (e420, e444) = (mean_abs_diff(&img, &d420), mean_abs_diff(&img, &d444));
        // 4:2:0 averages each red/blue pair into purple; 4:4:4 keeps them apart.
        assert!(e444 < 6.0 && e420 > 3.0 * e444, "error 4:4:4 {e444:.2}, 4:2:0 {e420:.2}");
        assert!(s420.len() < s444.len());
        // JPEG's SOF0 header lists each component's sampling factors: 0x22 is 2x2 (subsampled luma
        // grid), 0x11 is 1x1.
        let sof = |b: &[u8]| b.windows(2).position(|w| w == [0xFF, 0xC0]).map(|i| b[i + 11]).unwrap();
        assert_eq!((sof(&s420), sof(&s444)), (0x22, 0x11));
    }

    #[test]
    fn jpeg_output_depends_only_on_the_pixels() {
        let img = colour_stripes();
        let a = encode(&img, Encoding::Jpeg, 90).unwrap();
        let b = std::thread::spawn(move || encode(&img, Encoding::Jpeg, 90).unwrap()).join().unwrap();
        assert_eq!(a, b, "a fresh compressor on another thread must write the same bytes");
    }
}
