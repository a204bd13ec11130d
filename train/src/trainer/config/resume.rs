//! What a resumed run takes from its new command line: the settings that may change in the
//! middle of a run are applied, any other that differs from the run's is refused by name.

use super::settings::{flag_name, of_value, section_of, Setting};
use super::TrainConfig;
use anyhow::{bail, Context, Result};

/// The settings a resumed run takes from its new command line when given: how long it goes on,
/// where and with how many threads it runs, where its data is (its manifests are checked against
/// the saved ones), and how often it logs, validates, evaluates and saves. Nothing the run
/// learns from depends on them.
pub const RESUME_APPLIES: [&str; 14] = [
    "max_steps",
    "epochs",
    "device",
    "workers",
    "threads",
    "data_dir",
    "model_dir",
    "log_every",
    "valid_every",
    "eval_every",
    "eval_batch",
    "checkpoint_every",
    "skip_corrupt",
    "allow_cpu_fp16",
];

/// The run's length, which a resume takes whole from the command line that gives any part of it.
const LENGTH: [&str; 2] = ["max_steps", "epochs"];

/// Settings that say how to find or start a run rather than how it trains: never compared on resume
/// (`--init` with `--resume` is refused on its own, the world size is the launcher's,
/// `--allow-changed-data` is this resume's own).
const RESUME_IGNORES: [&str; 5] = ["resume", "init", "overwrite", "world_size", "allow_changed_data"];

impl TrainConfig {
    /// The configuration a resumed run continues with: `saved` (already on this run's number of
    /// ranks), with the settings of this command line (`self`) that it gave ([`TrainConfig::given`])
    /// and that may change in the middle of a run ([`RESUME_APPLIES`]); with the list of what
    /// changed (`--log-every 5 (was 50)`). A given setting that would change what the run trains
    /// (its data, network, optimiser, schedule, precision ...) and differs from the saved one is
    /// an error naming every such flag: it is never silently ignored. Settings are compared flag
    /// by flag ([`super::settings`]); another optimiser, schedule or margin is named once, by
    /// its kind's flag, not with each of its values.
    pub fn resumed(&self, saved: &TrainConfig) -> Result<(TrainConfig, Vec<String>)> {
        let now_json = serde_json::to_value(self)?;
        let now = of_value(&now_json);
        let defaults = of_value(&serde_json::to_value(TrainConfig::default())?);
        let mut merged = serde_json::to_value(saved)?;
        let then = of_value(&merged);
        let value = |list: &[Setting], flag: &str| {
            list.iter().find(|s| s.flag == flag).map_or_else(|| "none".to_string(), |s| s.value.clone())
        };
        let given = |flag: &str| self.given.iter().any(|g| g == flag) || value(&now, flag) != value(&defaults, flag);
        // The run's length is one decision: given either, the command line sets both.
        let length_given = given("max_steps") || given("epochs");
        let (mut changed, mut refused) = (Vec::new(), Vec::<(String, String)>::new());
        for s in &now {
            let flag = s.flag.as_str();
            let was = value(&then, flag);
            let applies = RESUME_APPLIES.contains(&flag) && (given(flag) || (length_given && LENGTH.contains(&flag)));
            if applies && was != s.value {
                changed.push(format!("{} {} (was {was})", flag_name(flag), s.value));
                // The settings a resume applies are all top-level fields of the tree.
                merged[flag] = now_json[flag].clone();
            } else if given(flag) && !applies && !RESUME_IGNORES.contains(&flag) && was != s.value {
                let line = format!("{} {} (the run's: {was})", flag_name(flag), s.value);
                refused.push((flag.to_string(), line));
            }
        }
        // Another kind of optimiser, schedule or margin is the refusal; its values go with it.
        let kinds: Vec<String> = refused.iter().map(|(f, _)| f.clone()).collect();
        refused.retain(|(f, _)| section_of(f).is_none_or(|kind| !kinds.iter().any(|k| k == kind)));
        if !refused.is_empty() {
            let lines: Vec<String> = refused.into_iter().map(|(_, l)| l).collect();
            bail!(
                "{} cannot change when a run is resumed: it would not continue the same run. Leave {} out to continue with the \
                 run's own settings, or start a new run from its weights (--init RUN)",
                lines.join(", "),
                if lines.len() == 1 { "it" } else { "them" }
            );
        }
        let mut merged: TrainConfig = serde_json::from_value(merged).context("the merged configuration")?;
        merged.resume = self.resume.clone();
        // Accepting changed data is a decision about this resume only, never inherited by the next.
        merged.allow_changed_data = self.allow_changed_data;
        merged.sync_watch_after = self.sync_watch_after;
        Ok((merged, changed))
    }
}
