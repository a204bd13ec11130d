//! Verification pairs drawn from a dataset's identities, for a `.bin` of faces that have no LFW
//! pairs list (a validation split, a crawl): as many same-identity as different-identity pairs,
//! alternating so that every one of the k folds holds both kinds, reproducible from a seed.

use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashSet};

/// A drawn pair: two record numbers and whether they share an identity.
pub(crate) type DrawnPair = (usize, usize, bool);

/// Draws `per_kind` same-identity and `per_kind` different-identity pairs of distinct records
/// (no pair twice) from records' class ids (`None`: identity unknown, never drawn). Same pairs
/// pick an identity with at least two records uniformly, so a few large identities do not fill
/// the set. Fails when the identities cannot give that many distinct pairs.
pub fn draw_pairs(class_ids: &[Option<u32>], per_kind: usize, seed: u64) -> Result<Vec<DrawnPair>> {
    if per_kind == 0 {
        bail!("asked for no pairs");
    }
    let mut by_class: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, c) in class_ids.iter().enumerate() {
        if let Some(c) = c {
            by_class.entry(*c).or_default().push(i);
        }
    }
    let multi: Vec<&Vec<usize>> = by_class.values().filter(|v| v.len() >= 2).collect();
    let possible_same: u128 = multi.iter().map(|v| (v.len() as u128) * (v.len() as u128 - 1) / 2).sum();
    let labelled: u128 = by_class.values().map(|v| v.len() as u128).sum();
    let possible_diff = (labelled * labelled.saturating_sub(1) / 2).saturating_sub(possible_same);
    if possible_same < per_kind as u128 || possible_diff < per_kind as u128 {
        bail!(
            "the dataset's identities give {possible_same} distinct same-identity and {possible_diff} different-identity pairs; {per_kind} of each were asked for"
        );
    }
    let all: Vec<usize> = by_class.values().flatten().copied().collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut seen = HashSet::new();
    let mut take = |rng: &mut rand_chacha::ChaCha8Rng, same: bool| loop {
        let (a, b) = if same {
            let v = multi[rng.random_range(0..multi.len())];
            (v[rng.random_range(0..v.len())], v[rng.random_range(0..v.len())])
        } else {
            (all[rng.random_range(0..all.len())], all[rng.random_range(0..all.len())])
        };
        if a == b || (class_ids[a] == class_ids[b]) != same {
            continue;
        }
        if seen.insert((a.min(b), a.max(b))) {
            return (a, b, same);
        }
    };
    let mut out = Vec::with_capacity(2 * per_kind);
    for _ in 0..per_kind {
        let s = take(&mut rng, true);
        out.push(s);
        let d = take(&mut rng, false);
        out.push(d);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::draw_pairs;

    #[test]
    fn pairs_alternate_kinds_are_distinct_and_reproducible() {
        let classes: Vec<Option<u32>> = (0..60).map(|i| if i % 13 == 0 { None } else { Some(i % 6) }).collect();
        let p = draw_pairs(&classes, 40, 7).unwrap();
        assert_eq!(p.len(), 80);
        assert_eq!(p, draw_pairs(&classes, 40, 7).unwrap());
        assert_ne!(p, draw_pairs(&classes, 40, 8).unwrap());
        let mut seen = std::collections::HashSet::new();
        for (k, &(a, b, same)) in p.iter().enumerate() {
            assert_eq!(same, k % 2 == 0);
            assert_ne!(a, b);
            assert!(classes[a].is_some() && classes[b].is_some());
            assert_eq!(classes[a] == classes[b], same);
            assert!(seen.insert((a.min(b), a.max(b))));
        }
    }

    #[test]
    fn more_pairs_than_the_identities_hold_is_an_error() {
        let classes = vec![Some(0), Some(0), Some(1)];
        let e = draw_pairs(&classes, 2, 0).unwrap_err().to_string();
        assert!(e.contains("1 distinct same-identity"), "{e}");
        assert!(draw_pairs(&classes, 1, 0).is_ok());
    }
}
