//! The optimisers: [`Sgd`] here and [`super::adamw::AdamW`], both PyTorch's update rules, behind
//! the [`Optimizer`] trait that the step, the loss scaler and checkpoints use.
//!
//! tch's `nn::Sgd` keeps its momentum buffers inside the C++ optimizer where they cannot be saved,
//! so a resumed run would restart momentum from zero and diverge from the uninterrupted one. These
//! optimisers own their state as named tensors and save it in `optimizer.safetensors`.

use anyhow::{bail, Context, Result};
use std::path::Path;
use tch::{nn::VarStore, Tensor};

/// What the trainer needs of an optimiser: clear gradients, step, expose the gradients (for
/// unscaling and clipping) and save/restore its state for an exact resume.
pub trait Optimizer: Send {
    /// Applies one update with learning rate `lr` to the parameters that have a gradient.
    fn step(&mut self, lr: f64);
    /// (name, parameter) of every trainable parameter, in name order.
    fn params(&self) -> Vec<(&str, &Tensor)>;
    /// The optimiser's state as named tensors (what `optimizer.safetensors` holds).
    fn state(&self) -> Vec<(String, Tensor)>;
    /// The parameter a state entry `key` of [`Optimizer::state`] belongs to.
    fn param_of<'a>(&self, key: &'a str) -> &'a str;
    /// Restores the state [`Optimizer::state`] gave (read from `path`, named in errors).
    fn restore(&mut self, saved: Vec<(String, Tensor)>, path: &Path) -> Result<()>;

    /// Saves the optimiser's state (by parameter name) in safetensors format, as standard
    /// contiguous tensors whatever their memory format.
    fn save(&self, path: &Path) -> Result<()> {
        super::layout::write_safetensors_contiguous(&self.state(), path)
    }

    /// Restores the state written by [`Optimizer::save`] into this optimiser's parameters.
    fn load(&mut self, path: &Path) -> Result<()> {
        let saved = Tensor::read_safetensors(path).with_context(|| format!("cannot read {}", path.display()))?;
        self.restore(saved, path)
    }

    /// Clears every gradient before the next backward pass.
    fn zero_grad(&mut self) {
        for (_, p) in self.params() {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.detach_().zero_();
            }
        }
    }

    /// The gradients of the parameters that have one (handles: in-place changes stick).
    fn grads(&self) -> Vec<Tensor> {
        self.params().into_iter().map(|(_, p)| p.grad()).filter(Tensor::defined).collect()
    }

    /// The gradients of the parameters whose name does not start with `prefix` (handles).
    fn grads_outside(&self, prefix: &str) -> Vec<Tensor> {
        self.params().into_iter().filter(|(n, _)| !n.starts_with(prefix)).map(|(_, p)| p.grad()).filter(Tensor::defined).collect()
    }
}

/// A saved state tensor copied into a new buffer shaped and laid out like `param` (channels-last
/// weights get channels-last state, as the first step would have made it); `what` names the entry
/// of `path` in the error when the shapes differ.
pub fn restore_like(param: &Tensor, saved: &Tensor, path: &Path, what: &str) -> Result<Tensor> {
    if saved.size() != param.size() {
        bail!("{}: {what} has shape {:?}, the parameter {:?}", path.display(), saved.size(), param.size());
    }
    let mut buf = param.detach().zeros_like();
    tch::no_grad(|| buf.copy_(saved));
    Ok(buf)
}

/// Every trainable variable of `vs` (parameters without `requires_grad`, frozen ones, are left
/// out), in name order.
pub fn trainable_by_name(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

/// One trainable parameter and its momentum buffer.
struct Slot {
    name: String,
    param: Tensor,
    momentum: Option<Tensor>,
}

/// SGD: `g += wd·p; buf = μ·buf + g (buf = g at first); p -= lr·buf` (PyTorch, no dampening).
pub struct Sgd {
    slots: Vec<Slot>,
    momentum: f64,
    weight_decay: f64,
}

impl Sgd {
    /// An optimizer over every trainable variable of `vs`, in name order.
    pub fn new(vs: &VarStore, momentum: f64, weight_decay: f64) -> Self {
        let slots = trainable_by_name(vs).into_iter().map(|(name, param)| Slot { name, param, momentum: None }).collect();
        Sgd { slots, momentum, weight_decay }
    }

    /// Applies one update with learning rate `lr`.
    pub fn step(&mut self, lr: f64) {
        tch::no_grad(|| {
            for s in &mut self.slots {
                let g = s.param.grad();
                if !g.defined() {
                    continue;
                }
                let d = if self.weight_decay != 0.0 { &g + &s.param * self.weight_decay } else { g.shallow_clone() };
                let step = match s.momentum.as_mut() {
                    Some(buf) => {
                        let _ = buf.g_mul_scalar_(self.momentum).g_add_(&d);
                        buf.shallow_clone()
                    }
                    None if self.momentum != 0.0 => {
                        let buf = d.detach().copy();
                        s.momentum = Some(buf.shallow_clone());
                        buf
                    }
                    None => d,
                };
                let _ = s.param.g_sub_(&(step * lr));
            }
        });
    }

    /// (parameter name, momentum buffer) of every parameter stepped so far, in name order.
    pub fn momentum_buffers(&self) -> Vec<(&str, &Tensor)> {
        self.slots.iter().filter_map(|s| s.momentum.as_ref().map(|m| (s.name.as_str(), m))).collect()
    }

    /// Restores the momentum buffers [`Optimizer::state`] gave, read from `path`.
    fn restore_momentum(&mut self, saved: Vec<(String, Tensor)>, path: &Path) -> Result<()> {
        for (name, t) in saved {
            let Some(s) = self.slots.iter_mut().find(|s| s.name == name) else {
                bail!("{}: momentum buffer '{name}' matches no parameter of this network", path.display());
            };
            s.momentum = Some(restore_like(&s.param, &t, path, &format!("momentum buffer '{name}'"))?);
        }
        Ok(())
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, lr: f64) {
        Sgd::step(self, lr)
    }
    fn params(&self) -> Vec<(&str, &Tensor)> {
        self.slots.iter().map(|s| (s.name.as_str(), &s.param)).collect()
    }
    /// The momentum buffers, each under its parameter's name.
    fn state(&self) -> Vec<(String, Tensor)> {
        self.momentum_buffers().into_iter().map(|(n, m)| (n.to_string(), m.shallow_clone())).collect()
    }
    fn param_of<'a>(&self, key: &'a str) -> &'a str {
        key
    }
    fn restore(&mut self, saved: Vec<(String, Tensor)>, path: &Path) -> Result<()> {
        self.restore_momentum(saved, path)
    }
}
