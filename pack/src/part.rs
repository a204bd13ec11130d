//! `facekit pack --part K/N`: one machine's share of a pack split across machines.
//!
//! The input stream ([`crate::inputs`]) is cut into `N` contiguous runs at identity boundaries,
//! each about `1/N` of the files: an identity's files are consecutive in the stream, so an
//! identity never spans two parts, and because the parts are runs of the one stream in order,
//! joining them in part order (`facekit merge`) gives the records, label map and rejects list of
//! a one-machine pack of the same input, in the same order. Every part keeps the whole input's
//! label map and class ids; it only packs its own files.

use std::fmt;
use std::str::FromStr;

/// Part `index` (from 1) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// The part's number, 1 to `count`.
    pub index: u32,
    /// How many parts.
    pub count: u32,
}

impl FromStr for Part {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (k, n) = s.split_once('/').ok_or_else(|| format!("'{s}' is not K/N (as in 2/3)"))?;
        let index: u32 = k.trim().parse().map_err(|_| format!("'{k}' in '{s}' is not a part number"))?;
        let count: u32 = n.trim().parse().map_err(|_| format!("'{n}' in '{s}' is not a number of parts"))?;
        if count == 0 || index == 0 || index > count {
            return Err(format!("part {index} of {count} does not exist (K/N needs 1 <= K <= N)"));
        }
        Ok(Part { index, count })
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Where the input stream may be cut: before the first file of every identity, and before
/// every file that has no identity (a flat root's photo, a misplaced file), each its own unit:
/// one number per identity (per file of a flat root) is kept from the first pass over names.
#[derive(Debug, Default)]
pub struct Boundaries {
    starts: Vec<u64>,
    last: Option<u32>,
    files: u64,
}

impl Boundaries {
    /// Notes the next file of the stream, of identity `class`.
    pub fn observe(&mut self, class: Option<u32>) {
        if class.is_none() || class != self.last {
            self.starts.push(self.files);
        }
        self.last = class;
        self.files += 1;
    }

    /// The files of `part`, as a range of stream positions: cut `k` is the first unit start at
    /// or after `k * files / count`, so parts are balanced by files as far as whole identities
    /// allow (a part may be empty when identities are fewer than parts or very unequal).
    pub fn range(&self, part: Part) -> (u64, u64) {
        let cut = |k: u32| -> u64 {
            if k == 0 {
                return 0;
            }
            if k == part.count {
                return self.files;
            }
            let target = (u128::from(self.files) * u128::from(k)).div_ceil(u128::from(part.count)) as u64;
            let i = self.starts.partition_point(|&s| s < target);
            self.starts.get(i).copied().unwrap_or(self.files)
        };
        (cut(part.index - 1), cut(part.index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(classes: &[Option<u32>]) -> Boundaries {
        let mut b = Boundaries::default();
        classes.iter().for_each(|&c| b.observe(c));
        b
    }

    #[test]
    fn parts_tile_the_stream_and_never_split_an_identity() {
        let classes: Vec<Option<u32>> =
            [0, 0, 0, 1, 2, 2, 3, 3, 3, 3, 4].iter().map(|&c| Some(c)).chain([None, None]).collect();
        let b = bounds(&classes);
        for n in 1..=6 {
            let mut next = 0;
            for k in 1..=n {
                let (s, e) = b.range(Part { index: k, count: n });
                assert_eq!(s, next, "part {k}/{n} starts where the previous ended");
                assert!(s <= e);
                if s > 0 && (s as usize) < classes.len() {
                    let (before, at) = (classes[s as usize - 1], classes[s as usize]);
                    assert!(at.is_none() || before != at, "part {k}/{n} cuts identity {at:?}");
                }
                next = e;
            }
            assert_eq!(next, classes.len() as u64);
        }
        assert_eq!(b.range(Part { index: 1, count: 2 }), (0, 10));
        assert_eq!(b.range(Part { index: 2, count: 2 }), (10, 13));
    }

    #[test]
    fn part_syntax() {
        assert_eq!("2/3".parse::<Part>(), Ok(Part { index: 2, count: 3 }));
        for bad in ["0/3", "4/3", "1/0", "3", "a/b"] {
            assert!(bad.parse::<Part>().is_err(), "{bad}");
        }
    }
}
