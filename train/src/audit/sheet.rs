//! Contact sheets: the worst cases of a finding as rows of chips side by side (the subject, then
//! its partner), each row's score written under it in a small built-in digit font (the sheet
//! needs no font file).

use super::{record_image, Face, Faces, Row};
use anyhow::Result;
use image::{imageops, Rgb, RgbImage};
use std::path::Path;

/// Side of each chip on a sheet.
pub const CHIP: u32 = 112;
/// Height of the strip under each row that holds the score.
const STRIP: u32 = 24;
/// Pixels per font dot.
const DOT: u32 = 3;

/// 3x5 glyphs of `0-9` and `.`, one row per 3 bits.
fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        _ => [0; 5],
    }
}

/// Writes `text` at (`x`, `y`) in black.
fn draw_text(img: &mut RgbImage, text: &str, x: u32, y: u32) {
    for (n, c) in text.chars().enumerate() {
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..3u32 {
                if bits >> (2 - col) & 1 == 1 {
                    for dy in 0..DOT {
                        for dx in 0..DOT {
                            let (px, py) = (x + (n as u32 * 4 + col) * DOT + dx, y + row as u32 * DOT + dy);
                            if px < img.width() && py < img.height() {
                                img.put_pixel(px, py, Rgb([0, 0, 0]));
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A sheet of `rows` (each: the chips side by side, and the score), white background.
pub fn sheet(rows: &[(Vec<RgbImage>, f32)]) -> RgbImage {
    let cols = rows.iter().map(|r| r.0.len()).max().unwrap_or(1).max(1) as u32;
    let h = (CHIP + STRIP) * rows.len().max(1) as u32;
    let mut out = RgbImage::from_pixel(cols * CHIP, h, Rgb([255, 255, 255]));
    for (r, (chips, score)) in rows.iter().enumerate() {
        let y = r as u32 * (CHIP + STRIP);
        for (c, chip) in chips.iter().enumerate() {
            let small = imageops::resize(chip, CHIP, CHIP, imageops::FilterType::Triangle);
            imageops::replace(&mut out, &small, i64::from(c as u32 * CHIP), i64::from(y));
        }
        draw_text(&mut out, &format!("{score:.3}"), 4, y + CHIP + 4);
    }
    out
}

/// The picture of a face of a finding (an identity's is its first record).
fn picture(face: Face, ds: &facekit_shard::Dataset, faces: &Faces, sets: &[super::EvalSet]) -> Result<RgbImage> {
    match face {
        Face::Record(i) => record_image(ds, i),
        Face::Identity(k) => record_image(ds, super::identities(faces)[k].1),
        Face::Eval { set, image } => sets[set].image(image),
    }
}

/// Writes the sheet of `rows` (subject, then partner) as a PNG at `path`.
pub fn write(
    path: &Path,
    rows: &[Row],
    ds: &facekit_shard::Dataset,
    faces: &Faces,
    sets: &[super::EvalSet],
) -> Result<()> {
    let mut drawn = Vec::with_capacity(rows.len());
    for r in rows {
        let mut chips = vec![picture(r.subject, ds, faces, sets)?];
        if let Some(p) = r.partner {
            chips.push(picture(p, ds, faces, sets)?);
        }
        drawn.push((chips, r.score));
    }
    sheet(&drawn).save(path)?;
    Ok(())
}
