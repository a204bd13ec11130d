//! Decoding untrusted files: real photos in every format we meet, and the ways files go bad.

use std::io::Cursor;

use facekit_pack::photo::{decode_image, read_image, ImageError};
use image::{ImageEncoder, RgbImage};

fn lfw_jpeg() -> Vec<u8> {
    std::fs::read(facekit_testkit::shared_data().join("lfw100/Abdullah_Gul/Abdullah_Gul_0001.jpg")).unwrap()
}

fn reason(bytes: &[u8]) -> &'static str {
    decode_image(bytes).map(|_| "ok").unwrap_or_else(|e| e.reason())
}

#[test]
fn zero_bytes_are_reported_as_empty() {
    assert_eq!(reason(&[]), "empty");
}

#[test]
fn text_file_named_jpg_is_not_an_image_and_the_error_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("holiday.jpg");
    std::fs::write(&p, b"<html>404 Not Found</html>\n").unwrap();
    let err = read_image(&p).unwrap_err();
    assert!(format!("{err:#}").contains("holiday.jpg"), "{err:#}");
    assert_eq!(err.downcast_ref::<ImageError>().map(|e| e.reason()), Some("not_an_image"));
}

#[test]
fn cut_off_jpeg_is_truncated_or_corrupt() {
    let full = lfw_jpeg();
    assert_eq!(reason(&full), "ok");
    for cut in [full.len() / 2, full.len() - 300, 400] {
        assert_eq!(reason(&full[..cut]), "truncated_or_corrupt", "cut at {cut} of {}", full.len());
    }
    // Only the signature left.
    assert_eq!(reason(&full[..3]), "truncated_or_corrupt");
}

/// A PNG whose header claims `w` x `h` (with a correct CRC), and no pixel data.
fn png_header_only(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&ihdr);
    out.extend_from_slice(&crc32fast::hash(&ihdr).to_be_bytes());
    out
}

#[test]
fn png_claiming_100000_by_100000_is_rejected_as_too_large_before_decoding() {
    let bomb = png_header_only(100_000, 100_000);
    match decode_image(&bomb) {
        Err(ImageError::TooLarge { width, height }) => assert_eq!((width, height), (100_000, 100_000)),
        other => panic!("expected too_large, got {other:?}"),
    }
    // Within the per-side limit but over the pixel budget.
    assert_eq!(reason(&png_header_only(15_000, 15_000)), "too_large");
    // A sane header with no data is merely truncated.
    assert_eq!(reason(&png_header_only(100, 100)), "truncated_or_corrupt");
}

#[test]
fn yale_gif_without_extension_decodes_to_grey_rgb() {
    let dir = facekit_testkit::shared_data().join("yale");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    // Names like `subject01.happy`: the part after the dot says nothing about the format.
    let f =
        files.iter().find(|p| p.file_name().unwrap().to_string_lossy().starts_with("subject")).expect("a yale file");
    let img = read_image(f).unwrap();
    assert_eq!(img.dimensions(), (320, 243));
    assert!(img.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
    assert!(img.pixels().map(|p| p[0]).max() > Some(100), "a real photo, not a blank frame");
}

#[test]
fn orl_pgm_decodes_to_grey_rgb() {
    let img = read_image(&facekit_testkit::shared_data().join("orl/s1/1.pgm")).unwrap();
    assert_eq!(img.dimensions(), (92, 112));
    assert!(img.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
}

/// Inserts an APP1 Exif segment with the given orientation right after the JPEG's SOI.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"MM\x00\x2a\x00\x00\x00\x08".to_vec(); // big-endian TIFF, IFD at 8
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // count
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let mut payload = b"Exif\x00\x00".to_vec();
    payload.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn exif_orientation_6_rotates_the_photo_upright() {
    // Crop a non-square region so a transposition is visible in the size.
    let photo = decode_image(&lfw_jpeg()).unwrap();
    let crop = image::imageops::crop_imm(&photo, 0, 0, 250, 180).to_image();
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
        .write_image(crop.as_raw(), 250, 180, image::ExtendedColorType::Rgb8)
        .unwrap();
    let plain = decode_image(&jpeg).unwrap();
    assert_eq!(plain.dimensions(), (250, 180));

    let rotated = decode_image(&with_exif_orientation(&jpeg, 6)).unwrap();
    assert_eq!(rotated.dimensions(), (180, 250), "orientation 6 must transpose the size");
    // Orientation 6 means "rotate 90 degrees clockwise to view": the stored top-left pixel
    // ends up top-right.
    assert_eq!(rotated.get_pixel(179, 0), plain.get_pixel(0, 0));
    assert_eq!(rotated.get_pixel(0, 249), plain.get_pixel(249, 179));

    let mirrored = decode_image(&with_exif_orientation(&jpeg, 2)).unwrap();
    assert_eq!(mirrored.get_pixel(0, 0), plain.get_pixel(249, 0));
}

fn encode_png<P: image::PixelWithColorType>(img: &image::ImageBuffer<P, Vec<P::Subpixel>>) -> Vec<u8>
where
    [P::Subpixel]: image::EncodableLayout,
{
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
    out
}

#[test]
fn sixteen_bit_png_is_scaled_to_eight_bits() {
    let photo: RgbImage = decode_image(&lfw_jpeg()).unwrap();
    let wide = image::ImageBuffer::<image::Rgb<u16>, _>::from_fn(photo.width(), photo.height(), |x, y| {
        let p = photo.get_pixel(x, y);
        image::Rgb([u16::from(p[0]) * 257, u16::from(p[1]) * 257, u16::from(p[2]) * 257])
    });
    let back = decode_image(&encode_png(&wide)).unwrap();
    assert_eq!(back, photo);
}

#[test]
fn rgba_png_is_composited_on_black() {
    let photo: RgbImage = decode_image(&lfw_jpeg()).unwrap();
    let half = photo.width() / 2;
    let rgba = image::RgbaImage::from_fn(photo.width(), photo.height(), |x, y| {
        let p = photo.get_pixel(x, y);
        let a = if x < half {
            255
        } else if x == half {
            128
        } else {
            0
        };
        image::Rgba([p[0], p[1], p[2], a])
    });
    let out = decode_image(&encode_png(&rgba)).unwrap();
    for y in 0..photo.height() {
        assert_eq!(out.get_pixel(0, y), photo.get_pixel(0, y));
        assert_eq!(out.get_pixel(photo.width() - 1, y).0, [0, 0, 0]);
        let (o, p) = (out.get_pixel(half, y), photo.get_pixel(half, y));
        assert!((i32::from(o[0]) - i32::from(p[0]) / 2).abs() <= 1, "half alpha halves the value");
    }
}

#[test]
fn every_supported_format_of_a_real_photo_decodes_to_the_same_pixels() {
    let photo: RgbImage = decode_image(&lfw_jpeg()).unwrap();
    for fmt in [image::ImageFormat::Png, image::ImageFormat::Bmp, image::ImageFormat::Tiff, image::ImageFormat::Pnm] {
        let mut bytes = Vec::new();
        photo.write_to(&mut Cursor::new(&mut bytes), fmt).unwrap();
        assert_eq!(decode_image(&bytes).unwrap(), photo, "{fmt:?}");
    }
}

/// Pillow (libjpeg-turbo inside) decodes `jpeg`; its pixels come back as a PNG, and the same
/// photo re-encoded by Pillow as greyscale and as CMYK JPEG come back as files.
fn pillow(dir: &std::path::Path, jpeg: &std::path::Path) {
    let script = r#"
import sys
from PIL import Image
src, out = sys.argv[1], sys.argv[2]
im = Image.open(src)
im.convert("RGB").save(out + "/pillow.png")
im.convert("L").save(out + "/grey.jpg", quality=90)
im.convert("CMYK").save(out + "/cmyk.jpg", quality=90)
"#;
    let status = std::process::Command::new(facekit_testkit::venv_python())
        .args(["-c", script])
        .arg(jpeg)
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success(), "Pillow helper failed");
}

#[test]
fn jpeg_pixels_are_pillows_and_grey_and_cmyk_jpegs_decode() {
    let dir = tempfile::tempdir().unwrap();
    let photo = facekit_testkit::shared_data().join("lfw100/Abdullah_Gul/Abdullah_Gul_0001.jpg");
    pillow(dir.path(), &photo);
    // Same decoder family as Pillow (libjpeg-turbo, accurate integer DCT, smooth chroma
    // upsampling): a pack sees the pixels the original Python tool saw, to within a level.
    let ours = read_image(&photo).unwrap();
    let theirs = read_image(&dir.path().join("pillow.png")).unwrap();
    assert_eq!(ours.dimensions(), theirs.dimensions());
    let max = ours.as_raw().iter().zip(theirs.as_raw()).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
    assert!(max <= 1, "our JPEG decode differs from Pillow's by up to {max} levels");

    let grey = read_image(&dir.path().join("grey.jpg")).unwrap();
    assert_eq!(grey.dimensions(), ours.dimensions());
    assert!(grey.pixels().all(|p| p[0] == p[1] && p[1] == p[2]), "grey JPEG must become grey RGB");
    // CMYK is not libjpeg-turbo's to convert: the general decoder takes it, and the colours
    // must still resemble the photo (not inverted, not black).
    let cmyk = read_image(&dir.path().join("cmyk.jpg")).unwrap();
    assert_eq!(cmyk.dimensions(), ours.dimensions());
    let mad: f64 = cmyk.as_raw().iter().zip(ours.as_raw()).map(|(a, b)| f64::from(a.abs_diff(*b))).sum::<f64>()
        / ours.as_raw().len() as f64;
    assert!(mad < 20.0, "CMYK JPEG decodes {mad:.1} levels away from the photo on average");
}
