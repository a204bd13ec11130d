//! Decoding untrusted image files into RGB.
//!
//! Every input photo is treated as hostile: the format is recognised from the bytes (never
//! the file extension), the dimensions are read from the header and checked BEFORE any pixel
//! buffer is allocated (decompression bombs), and every failure maps to an [`ImageError`]
//! whose [`ImageError::reason`] is a stable short code that pack reports can count.
//!
//! Conversions, so that every caller sees the same pixels:
//! - greyscale and palette images are expanded to RGB; 16-bit samples are scaled to 8 bits;
//! - alpha is composited on black (a transparent pixel becomes black, not whatever colour
//!   the encoder left under it), then dropped;
//! - the EXIF orientation (1-8) of JPEG, TIFF and WebP files is applied, so a phone photo
//!   stored sideways comes out upright;
//! - animated GIF/WebP: the first frame.

use crate::reason::RejectReason;
use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

/// Largest accepted width or height, in pixels.
pub(crate) const MAX_SIDE: u32 = 20_000;
/// Largest accepted pixel count (100 megapixels: about 300 MB as RGB8).
pub const MAX_PIXELS: u64 = 100_000_000;
/// Most scans a JPEG may have (a progressive camera JPEG has about 10). Decoding time grows with
/// scans times pixels, so a file of thousands of tiny scans could take minutes to decode; this is
/// libjpeg-turbo's own limit under `TJFLAG_LIMITSCANS`.
pub const MAX_JPEG_SCANS: usize = 500;

/// Why an image could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file has no bytes at all.
    #[error("empty file")]
    Empty,
    /// The bytes are not any image format we know (text, HTML error page, ...).
    #[error("not an image (unrecognised file signature)")]
    NotAnImage,
    /// A known format, but the data ends early or is damaged.
    #[error("truncated or corrupt {format} data: {detail}")]
    TruncatedOrCorrupt {
        /// The recognised format, e.g. `Jpeg`.
        format: String,
        /// What the decoder complained about.
        detail: String,
    },
    /// The header announces an image beyond [`MAX_SIDE`] or [`MAX_PIXELS`].
    #[error("image too large: {width}x{height} (limits: {MAX_SIDE} px per side, {MAX_PIXELS} pixels)")]
    TooLarge {
        /// Width announced by the header.
        width: u32,
        /// Height announced by the header.
        height: u32,
    },
    /// A recognised format or variant that we do not decode (e.g. AVIF, CMYK TIFF).
    #[error("unsupported image format or variant: {0}")]
    Unsupported(String),
}

impl ImageError {
    /// Why a pack rejects a photo that gives this error.
    pub(crate) fn reject_reason(&self) -> RejectReason {
        match self {
            ImageError::Empty => RejectReason::Empty,
            ImageError::NotAnImage => RejectReason::NotAnImage,
            ImageError::TruncatedOrCorrupt { .. } => RejectReason::TruncatedOrCorrupt,
            ImageError::TooLarge { .. } => RejectReason::TooLarge,
            ImageError::Unsupported(_) => RejectReason::Unsupported,
        }
    }

    /// Its stable short code for reports: `empty`, `not_an_image`, `truncated_or_corrupt`,
    /// `too_large` or `unsupported`.
    pub fn reason(&self) -> &'static str {
        self.reject_reason().code()
    }
}

/// The format of `bytes`, recognised from its signature (`None` if unknown).
pub(crate) fn sniff_format(bytes: &[u8]) -> Option<ImageFormat> {
    image::guess_format(bytes).ok()
}

/// Decodes an untrusted image file into RGB8, applying EXIF orientation.
pub fn decode_image(bytes: &[u8]) -> Result<RgbImage, ImageError> {
    if bytes.is_empty() {
        return Err(ImageError::Empty);
    }
    let format = sniff_format(bytes).ok_or(ImageError::NotAnImage)?;
    if format == ImageFormat::Jpeg {
        // Markers are never byte-stuffed, so every FF DA is a start of scan.
        let scans = bytes.windows(2).filter(|w| w == &[0xFF, 0xDA]).count();
        if scans > MAX_JPEG_SCANS {
            return Err(ImageError::Unsupported(format!(
                "a JPEG of {scans} scans (at most {MAX_JPEG_SCANS}): decoding it would take too long"
            )));
        }
        if let Some(done) = decode_jpeg_turbo(bytes) {
            return done;
        }
    }
    let fmt_name = format!("{format:?}");
    let corrupt = |e: image::ImageError| classify(e, &fmt_name);

    // Formats whose size sits at a fixed header offset are checked before any decoder runs,
    // so even a file that is nothing but a hostile header is reported as what it is.
    if let Some((width, height)) = fixed_header_dimensions(bytes, format) {
        check_dimensions(width, height)?;
    }
    let mut reader = ImageReader::new(Cursor::new(bytes));
    reader.set_format(format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    // The RGBA16 worst case of a 100 Mpx image, plus headroom for decoder scratch.
    limits.max_alloc = Some(MAX_PIXELS * 8 + (64 << 20));
    reader.limits(limits);

    // Only the header has been parsed when `into_decoder` returns: check the announced size
    // before anything proportional to it is allocated.
    let mut decoder = match reader.into_decoder() {
        Ok(d) => d,
        Err(image::ImageError::Limits(_)) => {
            let (width, height) =
                ImageReader::with_format(Cursor::new(bytes), format).into_dimensions().unwrap_or((u32::MAX, u32::MAX));
            return Err(ImageError::TooLarge { width, height });
        }
        Err(e) => return Err(corrupt(e)),
    };
    let (width, height) = decoder.dimensions();
    check_dimensions(width, height)?;
    if width == 0 || height == 0 {
        return Err(ImageError::TruncatedOrCorrupt { format: fmt_name, detail: "zero width or height".into() });
    }
    // A broken EXIF block must not cost us an otherwise fine photo: fall back to upright.
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    if format == ImageFormat::Jpeg && !jpeg_has_end_marker(bytes) {
        // The JPEG decoder fills a cut-off scan with grey instead of failing; a half-grey face
        // must never reach a training set.
        return Err(ImageError::TruncatedOrCorrupt {
            format: fmt_name,
            detail: "no end-of-image marker after the scan data (file cut short)".into(),
        });
    }
    let mut img = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    img.apply_orientation(orientation);
    Ok(to_rgb_on_black(img))
}

thread_local! {
    // One libjpeg-turbo decompressor per thread: creating one costs more than a small decode.
    // It is dropped after any error: libjpeg-turbo's state after a failed call is not to be
    // trusted (after a failed header read, the next header read "succeeded" with 0x0 and the
    // decode that followed wrote a whole image through an empty buffer).
    static DECOMPRESSOR: std::cell::RefCell<Option<turbojpeg::Decompressor>> = const { std::cell::RefCell::new(None) };
}

/// The common case, a colour or grey JPEG, through libjpeg-turbo: the decoder Pillow and OpenCV
/// use, and about 1.5x faster here than the general path. `None` hands the file to the general
/// path only for colour spaces libjpeg-turbo cannot turn into RGB (CMYK, YCCK). A JPEG that
/// libjpeg-turbo refuses, or decodes with a corrupt-data warning, is a reject: the general
/// decoder would fill the damaged part with garbage and the face would be packed.
fn decode_jpeg_turbo(bytes: &[u8]) -> Option<Result<RgbImage, ImageError>> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let d = match slot.as_mut() {
            Some(d) => d,
            None => match turbojpeg::Decompressor::new() {
                Ok(d) => slot.insert(d),
                Err(_) => return None, // no libjpeg-turbo state at all: the general path decides
            },
        };
        let result = turbo_decode(d, bytes);
        if matches!(result, Some(Err(_))) {
            *slot = None;
        }
        result
    })
}

fn turbo_decode(d: &mut turbojpeg::Decompressor, bytes: &[u8]) -> Option<Result<RgbImage, ImageError>> {
    let corrupt = |detail: String| Some(Err(ImageError::TruncatedOrCorrupt { format: "Jpeg".into(), detail }));
    let header = match d.read_header(bytes) {
        Ok(h) => h,
        Err(e) => return corrupt(format!("libjpeg-turbo cannot read the header: {e}")),
    };
    if matches!(header.colorspace, turbojpeg::Colorspace::CMYK | turbojpeg::Colorspace::YCCK) {
        return None;
    }
    let (Ok(width), Ok(height)) = (u32::try_from(header.width), u32::try_from(header.height)) else {
        return Some(Err(ImageError::TooLarge { width: u32::MAX, height: u32::MAX }));
    };
    if let Err(e) = check_dimensions(width, height) {
        return Some(Err(e));
    }
    // tjDecompress2 reads a width or height of 0 as "the JPEG's own": the buffer below must never
    // be sized from anything but validated, non-zero dimensions.
    if width == 0 || height == 0 {
        return corrupt(format!("the header announces a {width}x{height} image"));
    }
    if !jpeg_has_end_marker(bytes) {
        return corrupt("no end-of-image marker after the scan data (file cut short)".into());
    }
    let (w, h) = (header.width, header.height);
    let mut pixels = vec![0u8; w * h * 3];
    let out = turbojpeg::Image {
        pixels: pixels.as_mut_slice(),
        width: w,
        pitch: w * 3,
        height: h,
        format: turbojpeg::PixelFormat::RGB,
    };
    // libjpeg-turbo reports corrupt-data warnings ("premature end of data segment", "bad Huffman
    // code") as a failed call too.
    if let Err(e) = d.decompress(bytes, out) {
        return corrupt(format!("libjpeg-turbo: {e}"));
    }
    let img = RgbImage::from_raw(width, height, pixels).expect("buffer sized from the same dimensions");
    let orientation = jpeg_exif(bytes)
        .and_then(image::metadata::Orientation::from_exif_chunk)
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    if orientation == image::metadata::Orientation::NoTransforms {
        return Some(Ok(img));
    }
    let mut img = DynamicImage::ImageRgb8(img);
    img.apply_orientation(orientation);
    Some(Ok(img.into_rgb8()))
}

/// The TIFF body of a JPEG's APP1 `Exif` segment, found by walking the marker segments that
/// precede the first scan.
fn jpeg_exif(b: &[u8]) -> Option<&[u8]> {
    let mut i = 2;
    while i + 4 <= b.len() && b[i] == 0xFF {
        let marker = b[i + 1];
        match marker {
            0xFF => i += 1, // fill byte
            0xDA | 0xD9 => return None,
            0x01 | 0xD0..=0xD7 => i += 2, // markers without a length
            _ => {
                let len = usize::from(u16::from_be_bytes([b[i + 2], b[i + 3]]));
                let body = b.get(i + 4..(i + 2 + len).max(i + 4))?;
                if marker == 0xE1 && body.starts_with(b"Exif\0\0") {
                    return Some(&body[6..]);
                }
                i += 2 + len.max(2);
            }
        }
    }
    None
}

/// Rejects sizes beyond [`MAX_SIDE`] / [`MAX_PIXELS`].
fn check_dimensions(width: u32, height: u32) -> Result<(), ImageError> {
    if width > MAX_SIDE || height > MAX_SIDE || u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(ImageError::TooLarge { width, height });
    }
    Ok(())
}

/// Width and height read straight from the header for PNG (IHDR), GIF (logical screen) and
/// BMP (info header); `None` for other formats or too-short files.
fn fixed_header_dimensions(b: &[u8], format: ImageFormat) -> Option<(u32, u32)> {
    let be = |o: usize| b.get(o..o + 4).map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]));
    let le16 = |o: usize| b.get(o..o + 2).map(|s| u32::from(u16::from_le_bytes([s[0], s[1]])));
    let le32 = |o: usize| b.get(o..o + 4).map(|s| i32::from_le_bytes([s[0], s[1], s[2], s[3]]));
    match format {
        ImageFormat::Png if b.get(12..16) == Some(b"IHDR") => Some((be(16)?, be(20)?)),
        ImageFormat::Gif => Some((le16(6)?, le16(8)?)),
        // BITMAPINFOHEADER and later; a negative height means top-down rows.
        ImageFormat::Bmp if le32(14)? >= 40 => Some((le32(18)?.unsigned_abs(), le32(22)?.unsigned_abs())),
        _ => None,
    }
}

/// Converts any decoded image to RGB8, compositing alpha on black.
fn to_rgb_on_black(img: DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return img.into_rgb8();
    }
    let rgba = img.into_rgba8();
    let (w, h) = rgba.dimensions();
    let mut out = RgbImage::new(w, h);
    for (o, p) in out.pixels_mut().zip(rgba.pixels()) {
        let a = u32::from(p[3]);
        for c in 0..3 {
            // Rounded integer premultiplication: exact for a = 0 and a = 255.
            o[c] = ((u32::from(p[c]) * a + 127) / 255) as u8;
        }
    }
    out
}

/// Whether a JPEG has an end-of-image marker (FF D9) somewhere after its first scan header.
fn jpeg_has_end_marker(bytes: &[u8]) -> bool {
    let sos = match bytes.windows(2).position(|w| w == [0xFF, 0xDA]) {
        Some(p) => p,
        None => return false,
    };
    // Search from the end: the marker is normally within the last bytes (some cameras append
    // trailing data after it, which is why we do not insist on it being last).
    bytes[sos..].windows(2).rev().any(|w| w == [0xFF, 0xD9])
}

/// Maps the `image` crate's error to our reason codes.
fn classify(e: image::ImageError, format: &str) -> ImageError {
    match e {
        image::ImageError::Limits(l) => ImageError::Unsupported(format!("{format}: {l}")),
        image::ImageError::Unsupported(u) => ImageError::Unsupported(u.to_string()),
        other => ImageError::TruncatedOrCorrupt { format: format.to_string(), detail: other.to_string() },
    }
}

/// Reads (a regular file within [`facekit_io::bounded::PHOTO`]) and decodes an image file; errors name the file.
pub fn read_image(path: &std::path::Path) -> anyhow::Result<RgbImage> {
    use anyhow::Context;
    let bytes = facekit_io::bounded::read(path, facekit_io::bounded::PHOTO)?;
    decode_image(&bytes).with_context(|| format!("decoding {}", path.display()))
}

/// What [`find_images`] found under a folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FoundImages {
    /// Files whose first bytes are a known image format, sorted by path.
    pub images: Vec<std::path::PathBuf>,
    /// Other files (not images, or not regular files such as FIFOs, which are never opened).
    pub skipped: Vec<std::path::PathBuf>,
}

/// Every file below `root` (symlinks followed, hidden names left out) that is an image by its
/// bytes, and the others, so that a caller can say what it left out.
pub fn find_images(root: &std::path::Path) -> anyhow::Result<FoundImages> {
    use anyhow::Context;
    use std::io::Read;
    let mut found = FoundImages::default();
    for entry in walkdir::WalkDir::new(root).follow_links(true).sort_by_file_name() {
        let entry = entry.with_context(|| format!("cannot list {}", root.display()))?;
        if entry.file_type().is_dir() || entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let mut head = [0u8; 64];
        let n = match facekit_io::bounded::open_regular(entry.path()) {
            Ok(mut f) => f.read(&mut head).with_context(|| format!("cannot read {}", entry.path().display()))?,
            Err(facekit_io::FileError::NotRegular { .. }) => 0,
            Err(e) => return Err(e.into()),
        };
        if sniff_format(&head[..n]).is_some() {
            found.images.push(entry.into_path());
        } else {
            found.skipped.push(entry.into_path());
        }
    }
    Ok(found)
}
