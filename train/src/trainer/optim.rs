//! The optimisers: [`Sgd`] here and [`super::adamw::AdamW`], both PyTorch's update rules, behind
//! the [`Optimizer`] trait that the step, the loss scaler and checkpoints use.
//!
//! tch's `nn::Sgd` keeps its momentum buffers inside the C++ optimizer where they cannot be saved,
//! so a resumed run would restart momentum from zero and diverge from the uninterrupted one. These
//! optimisers own their state as named tensors and save it in `optimizer.safetensors`.
//!
//! Both update every parameter in one call of libtorch's fused multi-tensor kernels
//! (`_fused_sgd_`, `_fused_adamw_`, through `optim_shim.cpp`), which take a device flag
//! (`found_inf`) that makes them apply nothing: a step with non-finite gradients is skipped on the
//! device, without the host reading anything.

use anyhow::{bail, Context, Result};
use std::ffi::CStr;
use std::os::raw::{c_char, c_int};
use std::path::Path;
use tch::{nn::VarStore, Tensor};
use torch_sys::C_tensor;

extern "C" {
    fn facekit_optim_last_error() -> *const c_char;
    fn facekit_fused_sgd_(
        params: *const *mut C_tensor,
        grads: *const *mut C_tensor,
        bufs: *const *mut C_tensor,
        n: usize,
        weight_decay: f64,
        momentum: f64,
        lr: f64,
        nesterov: c_int,
        found_inf: *const C_tensor,
    ) -> c_int;
    fn facekit_fused_adamw_(
        params: *const *mut C_tensor,
        grads: *const *mut C_tensor,
        exp_avgs: *const *mut C_tensor,
        exp_avg_sqs: *const *mut C_tensor,
        steps: *const *mut C_tensor,
        n: usize,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        found_inf: *const C_tensor,
    ) -> c_int;
    fn facekit_clip_grad_norm_(
        grads: *const *mut C_tensor,
        n: usize,
        max_norm: f64,
        total: *mut *mut C_tensor,
    ) -> c_int;
}

/// Raw pointers of `ts` for one shim call (the shim only reads them; the tensors outlive it).
pub(super) fn ptrs(ts: &[Tensor]) -> Vec<*mut C_tensor> {
    ts.iter().map(|t| t.as_ptr() as *mut C_tensor).collect()
}

/// `Err` with the shim's message when `rc` is not 0.
pub(super) fn shim_result(rc: c_int, what: &str) -> Result<()> {
    if rc == 0 {
        return Ok(());
    }
    // SAFETY: the shim returns a pointer to its thread-local NUL-terminated error string.
    let msg = unsafe { CStr::from_ptr(facekit_optim_last_error()) }.to_string_lossy().into_owned();
    bail!("libtorch {what} failed: {msg}")
}

/// A [1] f32 zero on `like`'s device: the `found_inf` of a step that may apply everything.
pub(crate) fn no_inf(like: &Tensor) -> Tensor {
    Tensor::zeros([1], (tch::Kind::Float, like.device()))
}

/// Per-parameter lists of one fused SGD step.
pub(super) struct SgdLists<'a> {
    pub params: &'a [Tensor],
    pub grads: &'a [Tensor],
    pub bufs: &'a [Tensor],
}

/// One `_fused_sgd_` call (no dampening, no nesterov) over `l`, skipped on the device when
/// `found_inf` holds 1.
pub(super) fn fused_sgd(l: &SgdLists, weight_decay: f64, momentum: f64, lr: f64, found_inf: &Tensor) -> Result<()> {
    let (p, g, b) = (ptrs(l.params), ptrs(l.grads), ptrs(l.bufs));
    // SAFETY: every pointer is a live at::Tensor borrowed for the call; the shim catches exceptions.
    let rc = unsafe {
        facekit_fused_sgd_(
            p.as_ptr(),
            g.as_ptr(),
            b.as_ptr(),
            p.len(),
            weight_decay,
            momentum,
            lr,
            0,
            found_inf.as_ptr(),
        )
    };
    shim_result(rc, "_fused_sgd_")
}

/// Per-parameter lists of one fused AdamW step.
pub(super) struct AdamLists {
    pub params: Vec<Tensor>,
    pub grads: Vec<Tensor>,
    pub exp_avgs: Vec<Tensor>,
    pub exp_avg_sqs: Vec<Tensor>,
    pub steps: Vec<Tensor>,
}

/// AdamW's constants for one step.
#[derive(Debug, Clone, Copy)]
pub(super) struct AdamHyper {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    pub eps: f64,
}

/// One `_fused_adamw_` call over `l` (steps counted on the device), skipped on the device when
/// `found_inf` holds 1.
pub(super) fn fused_adamw(l: &AdamLists, h: AdamHyper, found_inf: &Tensor) -> Result<()> {
    let (p, g, m, v, s) = (ptrs(&l.params), ptrs(&l.grads), ptrs(&l.exp_avgs), ptrs(&l.exp_avg_sqs), ptrs(&l.steps));
    // SAFETY: as in fused_sgd.
    let rc = unsafe {
        facekit_fused_adamw_(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            s.as_ptr(),
            p.len(),
            h.lr,
            h.beta1,
            h.beta2,
            h.weight_decay,
            h.eps,
            found_inf.as_ptr(),
        )
    };
    shim_result(rc, "_fused_adamw_")
}

/// `torch.nn.utils.clip_grad_norm_(foreach=True)` over `grads` in one `_foreach_norm` and one
/// `_foreach_mul_`; returns the total norm before clipping (a device scalar).
pub(super) fn foreach_clip(grads: &[Tensor], max_norm: f64) -> Result<Tensor> {
    let g = ptrs(grads);
    let mut total: *mut C_tensor = std::ptr::null_mut();
    // SAFETY: as in fused_sgd; on success the shim hands over a new at::Tensor in `total`.
    let rc = unsafe { facekit_clip_grad_norm_(g.as_ptr(), g.len(), max_norm, &mut total) };
    shim_result(rc, "clip_grad_norm_")?;
    // SAFETY: `total` was allocated by the shim for us to own.
    Ok(unsafe { Tensor::from_ptr(total) })
}

/// What the trainer needs of an optimiser: clear gradients, step, expose the gradients (for
/// unscaling and clipping) and save/restore its state for an exact resume.
pub trait Optimizer: Send {
    /// Applies one update with learning rate `lr` to the parameters that have a gradient, unless
    /// `found_inf` (a [1] f32 on their device) holds 1: then nothing changes, state included.
    fn step_unless(&mut self, lr: f64, found_inf: &Tensor) -> Result<()>;

    /// Applies one update with learning rate `lr` to the parameters that have a gradient.
    fn step(&mut self, lr: f64) -> Result<()> {
        let Some((_, p)) = self.params().first().map(|(n, p)| (*n, p.shallow_clone())) else { return Ok(()) };
        self.step_unless(lr, &no_inf(&p))
    }
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
        self.params()
            .into_iter()
            .filter(|(n, _)| !n.starts_with(prefix))
            .map(|(_, p)| p.grad())
            .filter(Tensor::defined)
            .collect()
    }
}

/// A saved state tensor copied into a new buffer shaped and laid out like `param` (channels-last
/// weights get channels-last state, as the first step would have made it); `what` names the entry
/// of `path` in the error when the shapes differ.
pub(crate) fn restore_like(param: &Tensor, saved: &Tensor, path: &Path, what: &str) -> Result<Tensor> {
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

/// One trainable parameter and its momentum buffer (zeros from its first gradient on).
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
        let slots =
            trainable_by_name(vs).into_iter().map(|(name, param)| Slot { name, param, momentum: None }).collect();
        Sgd { slots, momentum, weight_decay }
    }

    /// (parameter name, momentum buffer) of every parameter that has had a gradient, in name
    /// order (a buffer is zero until a step is applied).
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
    fn step_unless(&mut self, lr: f64, found_inf: &Tensor) -> Result<()> {
        let (mut params, mut grads, mut bufs) = (Vec::new(), Vec::new(), Vec::new());
        let with_momentum = self.momentum != 0.0;
        for s in &mut self.slots {
            let g = s.param.grad();
            if !g.defined() {
                continue;
            }
            if with_momentum {
                // zeros_like keeps the parameter's memory format, as torch.preserve_format does.
                bufs.push(s.momentum.get_or_insert_with(|| s.param.detach().zeros_like()).shallow_clone());
            }
            params.push(s.param.shallow_clone());
            grads.push(g);
        }
        if params.is_empty() {
            return Ok(());
        }
        tch::no_grad(|| {
            fused_sgd(
                &SgdLists { params: &params, grads: &grads, bufs: &bufs },
                self.weight_decay,
                self.momentum,
                lr,
                found_inf,
            )
        })
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
