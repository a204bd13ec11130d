//! AdamW (Loshchilov & Hutter, arXiv:1711.05101) as `torch.optim.AdamW(fused=True)` computes it
//! (amsgrad off), in one `_fused_adamw_` call per step, with its state exposed for saving.
//!
//! Per parameter with a gradient g, at its own step count t (a parameter skipped because it had
//! no gradient does not count the step, as in PyTorch):
//! `p *= 1 − lr·wd; m = lerp(m, g, 1 − β1); v = β2·v + (1 − β2)·g²;
//!  p −= (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε)`.
//! t lives on the device (an f32 scalar per parameter, as PyTorch's fused path keeps it), so a step
//! skipped on the device (`found_inf`) does not count, and no step reads anything back.

use super::optim::{fused_adamw, restore_like, trainable_by_name, AdamHyper, AdamLists, Optimizer};
use anyhow::{bail, Context, Result};
use std::path::Path;
use tch::{nn::VarStore, Kind, Tensor};

/// Key prefixes of the three state entries of a parameter in `optimizer.safetensors`.
const EXP_AVG: &str = "exp_avg.";
const EXP_AVG_SQ: &str = "exp_avg_sq.";
const STEP: &str = "step.";

/// One trainable parameter and its state (absent until its first gradient): moments and step
/// count (an f32 scalar on the parameter's device).
struct Slot {
    name: String,
    param: Tensor,
    state: Option<Moments>,
}

/// A parameter's AdamW state.
struct Moments {
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    steps: Tensor,
}

impl Moments {
    /// Zero moments shaped and laid out like `param`, at step 0.
    fn zeros(param: &Tensor) -> Self {
        // zeros_like keeps the parameter's memory format, as torch.preserve_format does.
        let p = param.detach();
        Moments {
            exp_avg: p.zeros_like(),
            exp_avg_sq: p.zeros_like(),
            steps: Tensor::zeros([], (Kind::Float, p.device())),
        }
    }
}

/// `torch.optim.AdamW`'s rule over every trainable variable of a [`VarStore`].
pub struct AdamW {
    slots: Vec<Slot>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

impl AdamW {
    /// An optimiser over every trainable variable of `vs`, in name order.
    pub fn new(vs: &VarStore, betas: (f64, f64), eps: f64, weight_decay: f64) -> Self {
        let slots = trainable_by_name(vs).into_iter().map(|(name, param)| Slot { name, param, state: None }).collect();
        AdamW { slots, beta1: betas.0, beta2: betas.1, eps, weight_decay }
    }

    /// (parameter name, steps taken) of every parameter, in name order (reads them from the
    /// device: for tests and tools, not the step).
    pub fn step_counts(&self) -> Vec<(&str, u64)> {
        self.slots
            .iter()
            .map(|s| (s.name.as_str(), s.state.as_ref().map_or(0, |m| m.steps.double_value(&[]) as u64)))
            .collect()
    }
}

impl Optimizer for AdamW {
    fn step_unless(&mut self, lr: f64, found_inf: &Tensor) -> Result<()> {
        let mut l = AdamLists {
            params: Vec::new(),
            grads: Vec::new(),
            exp_avgs: Vec::new(),
            exp_avg_sqs: Vec::new(),
            steps: Vec::new(),
        };
        for s in &mut self.slots {
            let g = s.param.grad();
            if !g.defined() {
                continue;
            }
            let m = s.state.get_or_insert_with(|| Moments::zeros(&s.param));
            l.exp_avgs.push(m.exp_avg.shallow_clone());
            l.exp_avg_sqs.push(m.exp_avg_sq.shallow_clone());
            l.steps.push(m.steps.shallow_clone());
            l.params.push(s.param.shallow_clone());
            l.grads.push(g);
        }
        if l.params.is_empty() {
            return Ok(());
        }
        let h = AdamHyper { lr, beta1: self.beta1, beta2: self.beta2, weight_decay: self.weight_decay, eps: self.eps };
        tch::no_grad(|| fused_adamw(&l, h, found_inf))
    }

    fn params(&self) -> Vec<(&str, &Tensor)> {
        self.slots.iter().map(|s| (s.name.as_str(), &s.param)).collect()
    }

    /// `exp_avg.NAME`, `exp_avg_sq.NAME` and `step.NAME` (a [1] i64) for every parameter
    /// stepped so far (one whose every step was skipped has none, as before its first step).
    fn state(&self) -> Vec<(String, Tensor)> {
        let mut named = Vec::new();
        for s in &self.slots {
            let Some(m) = &s.state else { continue };
            let steps = m.steps.to_kind(Kind::Int64).reshape([1]).to_device(tch::Device::Cpu);
            if steps.int64_value(&[0]) == 0 {
                continue;
            }
            named.push((format!("{EXP_AVG}{}", s.name), m.exp_avg.shallow_clone()));
            named.push((format!("{EXP_AVG_SQ}{}", s.name), m.exp_avg_sq.shallow_clone()));
            named.push((format!("{STEP}{}", s.name), steps));
        }
        named
    }

    fn param_of<'a>(&self, key: &'a str) -> &'a str {
        [EXP_AVG_SQ, EXP_AVG, STEP].iter().find_map(|p| key.strip_prefix(p)).unwrap_or(key)
    }

    fn restore(&mut self, saved: Vec<(String, Tensor)>, path: &Path) -> Result<()> {
        let mut found: Vec<(Option<Tensor>, Option<Tensor>, Option<u64>)> =
            self.slots.iter().map(|_| (None, None, None)).collect();
        for (key, t) in saved {
            let (prefix, name) = [EXP_AVG_SQ, EXP_AVG, STEP]
                .iter()
                .find_map(|p| key.strip_prefix(p).map(|n| (*p, n)))
                .with_context(|| {
                    format!("{}: entry '{key}' is not AdamW state (exp_avg.*, exp_avg_sq.*, step.*): was this run trained with SGD?", path.display())
                })?;
            let Some(i) = self.slots.iter().position(|s| s.name == name) else {
                bail!("{}: AdamW state '{key}' matches no parameter of this network", path.display());
            };
            let slot = &self.slots[i];
            if prefix == STEP {
                if t.size() != [1] || t.kind() != Kind::Int64 || t.int64_value(&[0]) < 1 {
                    bail!(
                        "{}: '{key}' must be one positive i64 step count, got {:?} {:?}",
                        path.display(),
                        t.kind(),
                        t.size()
                    );
                }
                found[i].2 = Some(t.int64_value(&[0]) as u64);
                continue;
            }
            let buf = restore_like(&slot.param, &t, path, &format!("AdamW state '{key}'"))?;
            if prefix == EXP_AVG {
                found[i].0 = Some(buf);
            } else {
                found[i].1 = Some(buf);
            }
        }
        for (slot, entry) in self.slots.iter_mut().zip(found) {
            match entry {
                (Some(exp_avg), Some(exp_avg_sq), Some(steps)) => {
                    let steps = Tensor::scalar_tensor(steps as f64, (Kind::Float, slot.param.device()));
                    slot.state = Some(Moments { exp_avg, exp_avg_sq, steps });
                }
                (None, None, None) => {}
                _ => bail!(
                    "{}: AdamW state of '{}' is incomplete (needs exp_avg, exp_avg_sq and step)",
                    path.display(),
                    slot.name
                ),
            }
        }
        Ok(())
    }
}
