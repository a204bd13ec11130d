//! AdamW (Loshchilov & Hutter, arXiv:1711.05101) as `torch.optim.AdamW` computes it (amsgrad off,
//! PyTorch's single-tensor path, the one it takes on the CPU), with its state exposed for saving.
//!
//! Per parameter with a gradient g, at its own step count t (a parameter skipped because it had
//! no gradient does not count the step, as in PyTorch):
//! `p *= 1 − lr·wd; m = lerp(m, g, 1 − β1); v = β2·v + (1 − β2)·g²;
//!  p −= (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε)`.
//! The bias corrections are computed on the host from t (an integer the host already knows), so
//! no step reads anything back from the device.

use super::optim::{restore_like, trainable_by_name, Optimizer};
use anyhow::{bail, Context, Result};
use std::path::Path;
use tch::{nn::VarStore, Kind, Tensor};

/// Key prefixes of the three state entries of a parameter in `optimizer.safetensors`.
const EXP_AVG: &str = "exp_avg.";
const EXP_AVG_SQ: &str = "exp_avg_sq.";
const STEP: &str = "step.";

/// One trainable parameter and its moments (absent until its first step).
struct Slot {
    name: String,
    param: Tensor,
    moments: Option<(Tensor, Tensor)>,
    steps: u64,
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
        let slots = trainable_by_name(vs).into_iter().map(|(name, param)| Slot { name, param, moments: None, steps: 0 }).collect();
        AdamW { slots, beta1: betas.0, beta2: betas.1, eps, weight_decay }
    }

    /// (parameter name, steps taken) of every parameter, in name order.
    pub fn step_counts(&self) -> Vec<(&str, u64)> {
        self.slots.iter().map(|s| (s.name.as_str(), s.steps)).collect()
    }
}

impl Optimizer for AdamW {
    fn step(&mut self, lr: f64) {
        let (beta1, beta2, eps, wd) = (self.beta1, self.beta2, self.eps, self.weight_decay);
        tch::no_grad(|| {
            for s in &mut self.slots {
                let g = s.param.grad();
                if !g.defined() {
                    continue;
                }
                s.steps += 1;
                if wd != 0.0 {
                    let _ = s.param.g_mul_scalar_(1.0 - lr * wd);
                }
                // zeros_like keeps the parameter's memory format, as torch.preserve_format does.
                let (m, v) = s.moments.get_or_insert_with(|| (s.param.detach().zeros_like(), s.param.detach().zeros_like()));
                let _ = m.lerp_(&g, 1.0 - beta1);
                // addcmul_(g, g, value=1 − β2) computes value·g·g in this order.
                let _ = v.g_mul_scalar_(beta2).g_add_(&(&g * (1.0 - beta2) * &g));
                let t = s.steps as f64;
                let bias_correction1 = 1.0 - beta1.powf(t);
                let bias_correction2 = 1.0 - beta2.powf(t);
                let step_size = lr / bias_correction1;
                // PyTorch takes `bias_correction2 ** 0.5`, pow rather than sqrt.
                let denom = v.sqrt() / bias_correction2.powf(0.5) + eps;
                // addcdiv_(m, denom, value=−step_size) computes value·m / denom in this order.
                let _ = s.param.g_add_(&((&*m * -step_size) / denom));
            }
        });
    }

    fn params(&self) -> Vec<(&str, &Tensor)> {
        self.slots.iter().map(|s| (s.name.as_str(), &s.param)).collect()
    }

    /// `exp_avg.NAME`, `exp_avg_sq.NAME` and `step.NAME` (a [1] i64) for every parameter
    /// stepped so far.
    fn state(&self) -> Vec<(String, Tensor)> {
        let mut named = Vec::new();
        for s in &self.slots {
            if let Some((m, v)) = &s.moments {
                named.push((format!("{EXP_AVG}{}", s.name), m.shallow_clone()));
                named.push((format!("{EXP_AVG_SQ}{}", s.name), v.shallow_clone()));
                named.push((format!("{STEP}{}", s.name), Tensor::from_slice(&[s.steps as i64])));
            }
        }
        named
    }

    fn param_of<'a>(&self, key: &'a str) -> &'a str {
        [EXP_AVG_SQ, EXP_AVG, STEP].iter().find_map(|p| key.strip_prefix(p)).unwrap_or(key)
    }

    fn restore(&mut self, saved: Vec<(String, Tensor)>, path: &Path) -> Result<()> {
        let mut found: Vec<(Option<Tensor>, Option<Tensor>, Option<u64>)> = self.slots.iter().map(|_| (None, None, None)).collect();
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
                    bail!("{}: '{key}' must be one positive i64 step count, got {:?} {:?}", path.display(), t.kind(), t.size());
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
                (Some(m), Some(v), Some(steps)) => {
                    slot.moments = Some((m, v));
                    slot.steps = steps;
                }
                (None, None, None) => {}
                _ => bail!("{}: AdamW state of '{}' is incomplete (needs exp_avg, exp_avg_sq and step)", path.display(), slot.name),
            }
        }
        Ok(())
    }
}
