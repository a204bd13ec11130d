//! Whether a network's weights can give finite embeddings at all: what loading a network
//! (inference, `--init`) checks before using it, and what the trainer names when its embeddings
//! turn NaN.

use tch::nn::VarStore;
use tch::Kind;

/// Variables that do not feed the embedding: the task heads (their state cannot spoil an
/// embedding, so [`weights_problem`] does not blame them).
const NOT_EMBEDDING: [&str; 3] = ["gender_head.", "age_head.", "arcface."];

/// The first variable of `vs` that the embedding uses and that cannot give finite embeddings (a NaN
/// or infinite value, or a negative batch-norm running variance, whose square root is NaN),
/// described for an error message; `None` when every one is sound.
pub fn weights_problem(vs: &VarStore) -> Option<String> {
    let mut vars =
        vs.variables().into_iter().filter(|(n, _)| !NOT_EMBEDDING.iter().any(|p| n.starts_with(p))).collect::<Vec<_>>();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars.into_iter().find_map(|(name, t)| {
        let t = t.to_kind(Kind::Double);
        let bad = t.isfinite().logical_not().sum(Kind::Int64).int64_value(&[]);
        if bad > 0 {
            return Some(format!("`{name}` holds {bad} NaN or infinite value(s)"));
        }
        let negative = if name.ends_with("running_var") { t.lt(0.0).sum(Kind::Int64).int64_value(&[]) } else { 0 };
        (negative > 0).then(|| format!("`{name}` holds {negative} negative variance(s)"))
    })
}
