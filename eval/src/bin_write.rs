//! Writing insightface verification `.bin` files: the pickle [`crate::pickle`] reads, as
//! insightface's `recognition/arcface_mxnet/common/build_eval_pack.py` writes it with
//! `pickle.dump((bins, issame_list), f, protocol=pickle.HIGHEST_PROTOCOL)`: a tuple of a list of
//! encoded images (two per pair) and a list of booleans (one per pair).
//!
//! The opcodes are protocol 4's (`PROTO 4`, `EMPTY_LIST`, `MARK` ... `APPENDS` in batches of 1000
//! as CPython's pickler batches them, `SHORT_BINBYTES` / `BINBYTES` / `BINBYTES8` by length,
//! `NEWTRUE` / `NEWFALSE`, `TUPLE2`, `STOP`). Protocol 4 rather than 5: the file needs nothing of
//! 5 (out-of-band buffers), and protocol 4 loads in every Python from 3.4 on, 5 only from 3.8.
//! FRAME and MEMOIZE are optional for unpicklers and left out: no value is referenced twice.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::Path;

/// Items per `MARK ... APPENDS` batch (CPython's `_BATCHSIZE`).
const BATCH: usize = 1000;

/// Writes `(images, issame)` as a verification `.bin` at `path`, atomically (a reader sees the
/// old file or the complete new one). Image `2k` and `2k + 1` form pair `k`; `images.len()` must
/// be `2 * issame.len()`, and the file must fit what [`crate::pickle::VerificationBin::read`]
/// accepts ([`facekit_io::bounded::VERIFICATION_BIN`]).
pub fn write_verification_bin(path: &Path, images: &[Vec<u8>], issame: &[bool]) -> Result<()> {
    check(images, issame)?;
    let mut file = facekit_io::durable::AtomicFile::create(path)?;
    pickle_verification_bin(&mut file, images, issame).with_context(|| format!("cannot write {}", path.display()))?;
    file.commit()?;
    Ok(())
}

/// The bytes [`write_verification_bin`] writes, written to `out`.
pub fn pickle_verification_bin(out: &mut impl Write, images: &[Vec<u8>], issame: &[bool]) -> Result<()> {
    check(images, issame)?;
    out.write_all(&[0x80, 4])?; // PROTO 4
    out.write_all(b"]")?; // EMPTY_LIST
    for batch in images.chunks(BATCH) {
        out.write_all(b"(")?; // MARK
        for img in batch {
            bytes(out, img)?;
        }
        out.write_all(b"e")?; // APPENDS
    }
    out.write_all(b"]")?;
    for batch in issame.chunks(BATCH) {
        out.write_all(b"(")?;
        let flags: Vec<u8> = batch.iter().map(|&s| if s { 0x88 } else { 0x89 }).collect(); // NEWTRUE / NEWFALSE
        out.write_all(&flags)?;
        out.write_all(b"e")?;
    }
    out.write_all(&[0x86, b'.'])?; // TUPLE2, STOP
    Ok(())
}

/// The size of the file [`pickle_verification_bin`] writes.
pub fn pickled_len(images: &[Vec<u8>], issame: &[bool]) -> u64 {
    let header = |n: usize| {
        if n < 256 {
            2
        } else if n <= u32::MAX as usize {
            5
        } else {
            9
        }
    };
    let imgs: u64 = images.iter().map(|i| (header(i.len()) + i.len()) as u64).sum();
    let batches = |n: usize| 2 * n.div_ceil(BATCH) as u64;
    2 + 1 + batches(images.len()) + imgs + 1 + batches(issame.len()) + issame.len() as u64 + 2
}

fn check(images: &[Vec<u8>], issame: &[bool]) -> Result<()> {
    if issame.is_empty() {
        bail!("a verification file needs at least one pair");
    }
    if Some(images.len()) != issame.len().checked_mul(2) {
        bail!(
            "{} images for {} pairs: a verification file stores exactly two images per pair",
            images.len(),
            issame.len()
        );
    }
    if let Some(i) = images.iter().position(Vec::is_empty) {
        bail!("image {i} is empty");
    }
    let len = pickled_len(images, issame);
    let budget = facekit_io::bounded::VERIFICATION_BIN;
    if len > budget.bytes {
        bail!(
            "the verification file would be {len} bytes, more than the {} bytes a {} may have",
            budget.bytes,
            budget.what
        );
    }
    Ok(())
}

/// One `bytes` value, with the shortest opcode for its length.
fn bytes(out: &mut impl Write, b: &[u8]) -> std::io::Result<()> {
    if b.len() < 256 {
        out.write_all(&[b'C', b.len() as u8])?; // SHORT_BINBYTES
    } else if let Ok(n) = u32::try_from(b.len()) {
        out.write_all(b"B")?; // BINBYTES
        out.write_all(&n.to_le_bytes())?;
    } else {
        out.write_all(&[0x8e])?; // BINBYTES8
        out.write_all(&(b.len() as u64).to_le_bytes())?;
    }
    out.write_all(b)
}
