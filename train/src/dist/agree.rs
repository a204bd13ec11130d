//! Proof, at the start of a run, that every rank trains the same model on the same data.
//!
//! Ranks started with different flags (a hand-made launch, nodes whose scripts differ), on
//! different data or from different builds would otherwise train to the end, each with its own
//! settings, and only rank 0's would be recorded; ranks whose parameters differ in size abort
//! inside Gloo (`gloo::EnforceNotMet`, SIGABRT) when the initial weights are broadcast.
//!
//! Each rank describes what must agree as named values (an [`Identity`]). The ranks all-gather the
//! SHA-256 of their description (32 bytes on every rank, so the collective cannot mismatch); only
//! when the hashes differ do they all-gather the descriptions themselves, so that every rank stops
//! with the same message, naming each difference with rank 0's value and the other rank's.

use super::group::ProcessGroup;
use crate::trainer::config::{DatasetIdentity, TrainConfig};
use crate::trainer::Replicas;
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use tch::{Device, Tensor};

/// Settings that may differ from rank to rank: the device (`cuda:LOCAL_RANK`), the machine's own
/// threads, where each node keeps the data (its content is compared instead), and how often
/// rank 0 alone prints.
pub(crate) const PER_RANK: [&str; 5] = ["device", "workers", "threads", "data_dir", "log_every"];

/// At most this many differences are named per rank.
const SHOWN: usize = 6;

/// What a rank must share with every other: named values, in a fixed order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    entries: Vec<(String, String)>,
}

impl Identity {
    /// The resolved configuration (every setting, named by its flag, but those in [`PER_RANK`], plus the kind of
    /// device) and the content of every dataset (its manifest's SHA-256 and record count).
    pub fn of_run(cfg: &TrainConfig, datasets: &[DatasetIdentity]) -> Result<Identity> {
        let mut entries: Vec<(String, String)> = crate::trainer::config::settings::settings(cfg)?
            .into_iter()
            .filter(|s| !PER_RANK.contains(&s.flag.as_str()))
            .map(|s| (setting_name(&s.flag), s.value))
            .collect();
        let kind = cfg.device.split(':').next().unwrap_or_default();
        entries.push(("the device type".into(), kind.into()));
        entries.push(("the facekit version".into(), env!("CARGO_PKG_VERSION").into()));
        for (i, d) in datasets.iter().enumerate() {
            // 64 bits of the manifest's hash tell repacked data apart, and keep the message short.
            let sha = d.manifest_sha256.get(..16).unwrap_or(&d.manifest_sha256);
            entries.push((
                format!("{} set {}", d.role, i + 1),
                format!("{} records, manifest SHA-256 {sha}...", d.records),
            ));
        }
        Ok(Identity { entries })
    }

    /// The variables' names, shapes and element types (parameters and buffers: everything the
    /// initial broadcast sends).
    pub(crate) fn of_variables<'a>(variables: impl IntoIterator<Item = (&'a str, &'a Tensor)>) -> Identity {
        let entries = variables
            .into_iter()
            .map(|(name, t)| (format!("variable {name}"), format!("{:?} {:?}", t.size(), t.kind())))
            .collect();
        Identity { entries }
    }

    /// The description as text: one `name\tvalue` line per entry.
    fn text(&self) -> String {
        self.entries.iter().map(|(k, v)| format!("{k}\t{v}\n")).collect()
    }

    fn parse(text: &str) -> Identity {
        let entries =
            text.lines().filter_map(|l| l.split_once('\t')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Identity { entries }
    }

    /// How `other` (rank `r`) differs from `self` (rank 0), one item per differing entry.
    fn differences(&self, other: &Identity, r: usize) -> Vec<String> {
        let value = |id: &Identity, name: &str| id.entries.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let mut names: Vec<&String> = self.entries.iter().map(|(k, _)| k).collect();
        names.extend(other.entries.iter().map(|(k, _)| k).filter(|k| value(self, k).is_none()));
        names
            .into_iter()
            .filter_map(|name| match (value(self, name), value(other, name)) {
                (Some(a), Some(b)) if a == b => None,
                (Some(a), Some(b)) => Some(format!("{name} ({a} on rank 0, {b} on rank {r})")),
                (Some(a), None) => Some(format!("{name} ({a} on rank 0, absent on rank {r})")),
                (None, Some(b)) => Some(format!("{name} (absent on rank 0, {b} on rank {r})")),
                (None, None) => None,
            })
            .collect()
    }
}

/// Ranks that do not agree: every rank finds the same differences and stops with the same
/// message, so nothing is left to learn from the others (no [`super::World::diagnose`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disagreement(pub String);

impl std::fmt::Display for Disagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Disagreement {}

/// Stops unless every rank of `replicas` runs the same resolved configuration `cfg` on the same
/// `datasets` (see [`Identity::of_run`]); `device` is the training device.
pub(crate) fn same_run(
    replicas: &dyn Replicas,
    cfg: &TrainConfig,
    datasets: &[DatasetIdentity],
    device: Device,
) -> Result<()> {
    if replicas.world_size() == 1 {
        return Ok(());
    }
    agree(&replicas.group()?, &Identity::of_run(cfg, datasets)?, "configuration and data", device)
}

/// Stops unless every rank of `group` has the same `identity`; `what` says what it describes
/// ("configuration and data"). Every rank gets the same answer (the same error on every rank), so
/// none is left waiting. `device` is the training device (NCCL reduces CUDA tensors only).
pub fn agree(group: &ProcessGroup, identity: &Identity, what: &str, device: Device) -> Result<()> {
    if group.size() == 1 {
        return Ok(());
    }
    let device = group.tensor_device(device);
    let text = identity.text();
    let hashes = gather_bytes(group, &Sha256::digest(text.as_bytes()), device)
        .with_context(|| format!("comparing the ranks' {what}"))?;
    let differing: Vec<usize> = (1..group.size()).filter(|&r| hashes[r] != hashes[0]).collect();
    if differing.is_empty() {
        return Ok(());
    }
    let texts = gather_text(group, &text, device).with_context(|| format!("comparing the ranks' {what}"))?;
    let found = describe_differences(&texts, &differing);
    Err(Disagreement(format!("the ranks do not train with the same {what}: {found}; start every rank with the same flags, data and facekit build")).into())
}

/// How each of the `differing` ranks' descriptions differs from rank 0's (`texts`, in rank
/// order): the first few ranks, the first few differences of each.
fn describe_differences(texts: &[String], differing: &[usize]) -> String {
    let reference = Identity::parse(&texts[0]);
    let mut parts = Vec::new();
    for &r in differing.iter().take(3) {
        let diffs = reference.differences(&Identity::parse(&texts[r]), r);
        let mut line = format!(
            "rank {r} of {} differs from rank 0 in {}",
            texts.len(),
            diffs.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ")
        );
        if diffs.len() > SHOWN {
            line += &format!(" and {} more", diffs.len() - SHOWN);
        }
        parts.push(line);
    }
    if differing.len() > 3 {
        parts.push(format!("{} more rank(s) differ too", differing.len() - 3));
    }
    parts.join("; ")
}

/// Every rank's `bytes` (the same length on every rank), in rank order.
fn gather_bytes(group: &ProcessGroup, bytes: &[u8], device: Device) -> Result<Vec<Vec<u8>>> {
    let mine = Tensor::from_slice(bytes).to_device(device).reshape([1, bytes.len() as i64]);
    let all = group.all_gather(&mine)?.to_device(Device::Cpu);
    (0..group.size()).map(|r| Ok(Vec::<u8>::try_from(all.get(r as i64))?)).collect()
}

/// Every rank's `text`, in rank order: the lengths first, then the texts padded to the longest.
fn gather_text(group: &ProcessGroup, text: &str, device: Device) -> Result<Vec<String>> {
    let len = Tensor::from_slice(&[text.len() as i64]).to_device(device).reshape([1, 1]);
    let lens = Vec::<i64>::try_from(group.all_gather(&len)?.to_device(Device::Cpu).flatten(0, -1))?;
    let longest = lens.iter().copied().max().unwrap_or(0).max(1) as usize;
    let mut padded = text.as_bytes().to_vec();
    padded.resize(longest, 0);
    let all = gather_bytes(group, &padded, device)?;
    Ok(all.into_iter().zip(lens).map(|(b, n)| String::from_utf8_lossy(&b[..n as usize]).into_owned()).collect())
}

/// A setting's name as the user gave it: its flag, or what the positional argument is.
fn setting_name(key: &str) -> String {
    match key {
        "task" => "the task".into(),
        "world_size" => "the number of ranks".into(),
        k => format!("--{}", k.replace('_', "-")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    fn cfg() -> TrainConfig {
        TrainConfig { train_sets: vec!["lfw".into()], device: "cuda:0".into(), ..TrainConfig::default() }
    }

    #[test]
    fn settings_that_differ_are_named_with_both_values() {
        let a = Identity::of_run(&cfg(), &[]).unwrap();
        let mut other = TrainConfig { lr: 0.05, ..cfg() };
        other.head.margin = crate::loss::Margin::Combined { m1: 1.0, m2: 0.3, m3: 0.2 };
        other.optimizer = crate::trainer::config::OptimizerConfig::Sgd { momentum: 0.8, weight_decay: 5e-4 };
        let b = Identity::of_run(&other, &[]).unwrap();
        assert_eq!(
            a.differences(&b, 1),
            vec![
                "--margin (arcface on rank 0, combined on rank 1)",
                "--arcface-margin (0.5 on rank 0, absent on rank 1)",
                "--lr (0.1 on rank 0, 0.05 on rank 1)",
                "--momentum (0.9 on rank 0, 0.8 on rank 1)",
                "--margin-values (absent on rank 0, 1.0,0.3,0.2 on rank 1)"
            ]
        );
    }

    #[test]
    fn per_rank_settings_are_left_out_but_the_device_type_is_not() {
        let a = Identity::of_run(&cfg(), &[]).unwrap();
        let b = Identity::of_run(
            &TrainConfig {
                device: "cuda:3".into(),
                workers: 7,
                threads: 3,
                data_dir: "/elsewhere".into(),
                log_every: 1,
                ..cfg()
            },
            &[],
        )
        .unwrap();
        assert_eq!(a, b);
        let c = Identity::of_run(&TrainConfig { device: "cpu".into(), ..cfg() }, &[]).unwrap();
        assert_eq!(a.differences(&c, 1), vec!["the device type (cuda on rank 0, cpu on rank 1)"]);
    }

    #[test]
    fn a_description_reads_back_from_its_text() {
        let id = Identity::of_run(&cfg(), &[]).unwrap();
        assert_eq!(Identity::parse(&id.text()), id);
    }

    #[test]
    fn variables_present_on_one_rank_only_are_named() {
        let (w, b) =
            (Tensor::zeros([4, 3], (Kind::Float, Device::Cpu)), Tensor::zeros([4], (Kind::Float, Device::Cpu)));
        let a = Identity::of_variables([("fc.weight", &w), ("fc.bias", &b)]);
        let c = Identity::of_variables([("fc.weight", &b)]);
        assert_eq!(
            a.differences(&c, 2),
            vec![
                "variable fc.weight ([4, 3] Float on rank 0, [4] Float on rank 2)",
                "variable fc.bias ([4] Float on rank 0, absent on rank 2)"
            ]
        );
    }
}
