//! NumPy `.npy` files (format version 1.0) for float32 matrices: written so that Python reads
//! embeddings with a bare `numpy.load`, and read back for `facekit eval` on saved embeddings.
//!
//! Layout: the magic `\x93NUMPY`, version `1 0`, a little-endian u16 header length, a Python dict
//! literal padded with spaces and a newline so that the data starts on a 64-byte boundary, then
//! the row-major little-endian float32 data.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";

/// A row-major float32 matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// `rows * cols` values, row after row.
    pub data: Vec<f32>,
}

impl Matrix {
    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
}

/// The bytes of an `.npy` v1.0 file holding `data` as float32 `[rows, cols]`.
pub(crate) fn encode_f32(rows: usize, cols: usize, data: &[f32]) -> Result<Vec<u8>> {
    encode("<f4", rows, cols, data.len(), data.iter().flat_map(|v| v.to_le_bytes()))
}

/// The bytes of an `.npy` v1.0 file of `descr` values `[rows, cols]` given as little-endian bytes.
fn encode(descr: &str, rows: usize, cols: usize, len: usize, bytes: impl Iterator<Item = u8>) -> Result<Vec<u8>> {
    if len != rows * cols {
        bail!("{len} values do not make a {rows}x{cols} matrix");
    }
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let header_len = u16::try_from(header.len()).context("npy header too long")?;
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + header.len() + len * 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&header_len.to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend(bytes);
    Ok(out)
}

/// Writes `data` as a float64 `[rows, cols]` `.npy` file, atomically (scores kept at the precision
/// they were computed in).
pub fn write_f64(path: &Path, rows: usize, cols: usize, data: &[f64]) -> Result<()> {
    let bytes = encode("<f8", rows, cols, data.len(), data.iter().flat_map(|v| v.to_le_bytes()))?;
    let mut f = facekit_io::durable::AtomicFile::create(path)?;
    f.write_all(&bytes).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(f.commit()?)
}

/// Writes `data` as a float32 `[rows, cols]` `.npy` file, atomically.
pub fn write_f32(path: &Path, rows: usize, cols: usize, data: &[f32]) -> Result<()> {
    let bytes = encode_f32(rows, cols, data)?;
    let mut f = facekit_io::durable::AtomicFile::create(path)?;
    f.write_all(&bytes).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(f.commit()?)
}

/// Reads a 2-D little-endian float32, C-order `.npy` file (versions 1 to 3).
pub fn read_f32(path: &Path) -> Result<Matrix> {
    let bytes = facekit_io::bounded::read(path, facekit_io::bounded::EMBEDDINGS)?;
    decode_f32(&bytes).with_context(|| format!("{} is not a float32 matrix .npy file", path.display()))
}

/// Parses the bytes of a 2-D float32 `.npy` file.
pub fn decode_f32(b: &[u8]) -> Result<Matrix> {
    if b.len() < 10 || &b[..6] != MAGIC {
        bail!("missing the \\x93NUMPY magic");
    }
    let (header_len, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10usize),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => bail!("unsupported npy version {v}"),
    };
    let header = b.get(start..start.saturating_add(header_len)).context("header runs past the end of the file")?;
    let header = std::str::from_utf8(header).context("header is not text")?;
    let compact: String = header.chars().filter(|c| !c.is_whitespace()).collect();
    if !compact.contains("'descr':'<f4'") {
        bail!("dtype is not little-endian float32 ('<f4'): {header}");
    }
    if !compact.contains("'fortran_order':False") {
        bail!("Fortran-order arrays are not supported");
    }
    let shape = compact
        .split("'shape':(")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .with_context(|| format!("no shape in header {header}"))?;
    let dims = shape
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().with_context(|| format!("bad shape {shape:?}")))
        .collect::<Result<Vec<_>>>()?;
    let [rows, cols] = dims[..] else { bail!("shape ({shape}) is not 2-D") };
    let body = &b[start + header_len..];
    let expected = rows.checked_mul(cols).and_then(|n| n.checked_mul(4)).context("shape overflows")?;
    if body.len() != expected {
        bail!("shape ({rows}, {cols}) needs {expected} data bytes, the file has {}", body.len());
    }
    let data = body.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect();
    Ok(Matrix { rows, cols, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_matrix_decodes_to_itself_with_aligned_data() {
        let data: Vec<f32> = (0..6).map(|i| i as f32 * 0.5).collect();
        let bytes = encode_f32(2, 3, &data).unwrap();
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        assert_eq!(decode_f32(&bytes).unwrap(), Matrix { rows: 2, cols: 3, data });
    }
}
