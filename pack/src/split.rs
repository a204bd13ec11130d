//! The validation split: which input files go to `<name>.valid` instead of `<name>`.
//!
//! The choice depends only on each file's record path (`source/identity/file.jpg`) through a
//! SHA-256 hash, so it is the same on every run, for any thread count, and a file never moves
//! between the two datasets when others are added or removed:
//! - `--valid-fraction F`: a file is held out when its hash, read as a fraction of 2^64, is below F;
//! - `--valid-per-class N`: in each identity with more than N files, the N files with the smallest
//!   hashes are held out (identities with N or fewer files stay whole in training).
//!
//! With both, a file is held out when either rule picks it. The choice is made on input files,
//! before detection, so an identity may end with fewer than N validation faces when some are
//! rejected.

use sha2::{Digest, Sha256};
use std::collections::BinaryHeap;

/// A file's split hash: the first 8 bytes of the SHA-256 of its record path.
pub fn path_hash(record_path: &str) -> u64 {
    let d = Sha256::digest(record_path.as_bytes());
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

/// The two split rules and, for the per-class rule, each class's cut-off hash.
#[derive(Debug, Clone)]
pub struct SplitRule {
    fraction: f64,
    per_class: usize,
    // Per class: the N smallest hashes seen so far, as a max-heap, and how many files the class has.
    smallest: Vec<(BinaryHeap<u64>, u64)>,
    cutoff: Vec<Option<u64>>,
}

impl SplitRule {
    /// A rule holding out `fraction` of all files and `per_class` files of each of `classes` classes.
    pub fn new(fraction: f64, per_class: usize, classes: u32) -> Self {
        let n = if per_class > 0 { classes as usize } else { 0 };
        SplitRule { fraction, per_class, smallest: vec![(BinaryHeap::new(), 0); n], cutoff: Vec::new() }
    }

    /// True when no file will ever be held out.
    pub fn is_none(&self) -> bool {
        self.fraction <= 0.0 && self.per_class == 0
    }

    /// Notes one input file of `class` (first pass, before [`SplitRule::seal`]).
    pub fn observe(&mut self, class: Option<u32>, hash: u64) {
        let Some(c) = class else { return };
        let Some((heap, count)) = self.smallest.get_mut(c as usize) else { return };
        *count += 1;
        if heap.len() < self.per_class {
            heap.push(hash);
        } else if heap.peek().is_some_and(|&max| hash < max) {
            heap.pop();
            heap.push(hash);
        }
    }

    /// Fixes each class's cut-off once every file has been observed.
    pub(crate) fn seal(&mut self) {
        self.cutoff = self
            .smallest
            .drain(..)
            .map(|(heap, count)| (count > self.per_class as u64).then(|| heap.peek().copied()).flatten())
            .collect();
    }

    /// Whether the file with this class and hash goes to the validation dataset.
    pub fn is_valid(&self, class: Option<u32>, hash: u64) -> bool {
        // 2^64 as f64 is exact; the comparison is on the hash's fraction of the whole range.
        if self.fraction > 0.0 && (hash as f64) < self.fraction * 18_446_744_073_709_551_616.0 {
            return true;
        }
        match class.and_then(|c| self.cutoff.get(c as usize).copied().flatten()) {
            Some(cut) => hash <= cut,
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_class_rule_holds_out_exactly_n_of_larger_classes() {
        let mut rule = SplitRule::new(0.0, 2, 2);
        let class0: Vec<String> = (0..10).map(|i| format!("a/{i}.jpg")).collect();
        let class1: Vec<String> = (0..2).map(|i| format!("b/{i}.jpg")).collect();
        for p in &class0 {
            rule.observe(Some(0), path_hash(p));
        }
        for p in &class1 {
            rule.observe(Some(1), path_hash(p));
        }
        rule.seal();
        let held0 = class0.iter().filter(|p| rule.is_valid(Some(0), path_hash(p))).count();
        let held1 = class1.iter().filter(|p| rule.is_valid(Some(1), path_hash(p))).count();
        assert_eq!((held0, held1), (2, 0));
    }

    #[test]
    fn fraction_rule_holds_out_about_that_fraction() {
        let mut rule = SplitRule::new(0.1, 0, 0);
        rule.seal();
        let held = (0..10_000).filter(|i| rule.is_valid(None, path_hash(&format!("x/{i}.jpg")))).count();
        assert!((800..1200).contains(&held), "{held} of 10000 held out for 10%");
    }
}
