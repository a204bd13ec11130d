//! Reading a whole `.rec` in order without its `.idx`, surviving corruption: after a bad record
//! the scan looks for the next record boundary instead of giving up, so one damaged region costs
//! one error and the records after it.

use crate::error::FrameError;
use crate::frame::{
    decode_lrec, padded, Frame, RecReader, CFLAG_END, CFLAG_MIDDLE, CFLAG_START, CFLAG_WHOLE, HEADER_LEN, MAGIC,
};

/// Bytes read at a time while looking for the next record boundary.
const WINDOW: usize = 64 << 10;

/// An iterator over every record of a file: `Ok` frames, and one `Err` per damaged region.
///
/// It always makes progress: after a record it moves to `next` (at least 8 bytes on), after an
/// error to the next plausible boundary strictly after the failed position, or it ends.
#[derive(Debug)]
pub struct Scan<'a> {
    reader: &'a RecReader,
    max_payload: usize,
    pos: u64,
    done: bool,
}

impl<'a> Scan<'a> {
    pub(crate) fn new(reader: &'a RecReader, max_payload: usize) -> Self {
        Scan { reader, max_payload, pos: 0, done: false }
    }

    /// The next plausible record start at or after `from`, 4-byte aligned.
    ///
    /// Only aligned positions are candidates: every record starts at one (each part is padded to
    /// 4 bytes from offset 0), and the writer splits payloads exactly where the magic would sit at
    /// an aligned position, so inside well-formed payloads no aligned magic exists.
    fn resync(&self, from: u64) -> Option<u64> {
        let len = self.reader.len();
        let mut base = from.checked_add(3)? & !3;
        // Never more than the file holds: a tiny hostile file costs a tiny buffer.
        let mut buf = vec![0u8; WINDOW.min(len.saturating_sub(base) as usize)];
        while base.checked_add(HEADER_LEN)? <= len {
            let n = (len - base).min(WINDOW as u64) as usize;
            self.reader.read_exact(base, &mut buf[..n]).ok()?;
            let found = (0..n.saturating_sub(3))
                .step_by(4)
                .map(|i| base + i as u64)
                .find(|&at| buf[(at - base) as usize..][..4] == MAGIC.to_le_bytes() && self.plausible(at));
            if found.is_some() {
                return found;
            }
            base += n as u64;
        }
        None
    }

    /// True when a whole record or a start part sits at `at`, fits the limits and the file, and
    /// is followed by the end of the file or by a header that may follow it. One look ahead, not
    /// a full read: a full read from every candidate would make a hostile file quadratic.
    fn plausible(&self, at: u64) -> bool {
        let Ok((cflag, length)) = self.reader.part_header(at) else { return false };
        if !(cflag == CFLAG_WHOLE || cflag == CFLAG_START) || u64::from(length) > self.max_payload as u64 {
            return false;
        }
        let end = at + HEADER_LEN + padded(length);
        let len = self.reader.len();
        if end > len {
            return false;
        }
        let avail = (len - end).min(HEADER_LEN) as usize;
        let mut head = [0u8; HEADER_LEN as usize];
        if self.reader.read_exact(end, &mut head[..avail]).is_err() {
            return false;
        }
        if head[..avail.min(4)] != MAGIC.to_le_bytes()[..avail.min(4)] {
            return false;
        }
        if avail < HEADER_LEN as usize {
            // A lone start part at the very end, or a header cut short: let the read report it.
            return true;
        }
        let (next, _) = decode_lrec(u32::from_le_bytes(head[4..8].try_into().expect("4 bytes")));
        match cflag {
            CFLAG_START => next == CFLAG_MIDDLE || next == CFLAG_END,
            _ => next == CFLAG_WHOLE || next == CFLAG_START,
        }
    }
}

impl Iterator for Scan<'_> {
    type Item = Result<Frame, FrameError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.pos >= self.reader.len() {
            return None;
        }
        match self.reader.read_at(self.pos, self.max_payload) {
            Ok(frame) => {
                self.pos = frame.next;
                Some(Ok(frame))
            }
            Err(e) => {
                match self.resync(self.pos + 1) {
                    Some(at) => self.pos = at,
                    None => self.done = true,
                }
                Some(Err(e))
            }
        }
    }
}
