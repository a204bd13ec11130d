//! The `.idx` file beside a `.rec`: text, one `key<TAB>offset` line per record, as MXNet's
//! `MXIndexedRecordIO.write_idx` writes it (`'%s\t%d\n' % (key, pos)`).

use crate::error::Error;
use facekit_io::Budget;
use std::path::Path;

/// The most bytes an `.idx` may have: 4 GiB, some 150 million records (WebFace42M's is about
/// 1 GB).
pub(crate) const IDX_BUDGET: Budget = Budget { what: "RecordIO index", bytes: 4 << 30 };

/// One line of an `.idx`: a record's key and the byte offset of its first header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdxEntry {
    /// The record's key (insightface: 0 for the header record, then 1, 2, ...).
    pub key: u64,
    /// Byte offset of the record in the `.rec`.
    pub offset: u64,
}

/// An `.idx` as MXNet reads it: `MXIndexedRecordIO` keeps a dict from key to offset, so a key
/// listed again replaces the offset of its earlier line, and each key is read once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Index {
    /// Each key once, at the offset of its last line, in the order of those lines.
    pub entries: Vec<IdxEntry>,
    /// Lines that a later line of the same key replaced, which MXNet never reads.
    pub replaced: Vec<Replaced>,
}

/// A line of an `.idx` whose key a later line lists again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replaced {
    /// Its 1-based line number.
    pub line: usize,
    /// What it says.
    pub entry: IdxEntry,
    /// The 1-based number of the last line with the same key, the one MXNet reads.
    pub by_line: usize,
}

impl Index {
    /// Reads an `.idx` (see [`read_idx`]) and keeps each key's last line.
    pub fn read(path: &Path) -> Result<Self, Error> {
        Ok(Self::new(read_idx(path)?))
    }

    /// The index of `lines` (an `.idx`'s entries in file order): each key's last line wins.
    pub fn new(lines: Vec<IdxEntry>) -> Self {
        let mut last = std::collections::HashMap::with_capacity(lines.len());
        for (i, e) in lines.iter().enumerate() {
            last.insert(e.key, i);
        }
        let mut index = Index { entries: Vec::with_capacity(last.len()), replaced: Vec::new() };
        for (i, e) in lines.into_iter().enumerate() {
            match last[&e.key] {
                j if j == i => index.entries.push(e),
                j => index.replaced.push(Replaced { line: i + 1, entry: e, by_line: j + 1 }),
            }
        }
        index
    }
}

/// Reads an `.idx` (a regular file of at most [`IDX_BUDGET`] bytes), every line's entry in file
/// order; [`Index`] keeps each key once, as MXNet does.
///
/// Nothing is checked against the `.rec` here: an offset past its end or into the middle of a
/// record is reported by [`crate::RecReader::read_at`] when the record is read.
pub fn read_idx(path: &Path) -> Result<Vec<IdxEntry>, Error> {
    let text = facekit_io::bounded::read_string(path, IDX_BUDGET)?;
    parse_idx(&text, path)
}

/// Parses the text of an `.idx`; `path` names it in errors.
///
/// Each line is trimmed of surrounding whitespace (MXNet strips it too, so `\r\n` files work);
/// an empty line is an error, as it is for MXNet.
pub fn parse_idx(text: &str, path: &Path) -> Result<Vec<IdxEntry>, Error> {
    text.lines().enumerate().map(|(i, line)| parse_line(line.trim(), path, i + 1)).collect()
}

fn parse_line(line: &str, path: &Path, n: usize) -> Result<IdxEntry, Error> {
    let fields: Vec<&str> = line.split('\t').collect();
    let [key, offset] = fields[..] else {
        return Err(Error::line(
            path,
            n,
            format!("expected `key<TAB>offset`, found {} field(s) in {line:?}", fields.len()),
        ));
    };
    let number = |what: &str, s: &str| {
        let ok = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        ok.then(|| s.parse::<u64>().ok())
            .flatten()
            .ok_or_else(|| Error::line(path, n, format!("{what} {s:?} is not an integer from 0 to 2^64-1")))
    };
    Ok(IdxEntry { key: number("key", key)?, offset: number("offset", offset)? })
}

/// The `.idx` line for an entry, newline included.
pub(crate) fn idx_line(entry: IdxEntry) -> String {
    format!("{}\t{}\n", entry.key, entry.offset)
}
