//! Autocast (mixed precision) for any device type and dtype, through the C++ shim `amp_shim.cpp`.
//!
//! [`Autocast`] is the Rust form of `with torch.autocast(device, dtype):`: while it lives, the ops
//! on autocast's lists (convolutions, matmuls, ...) run in the lower precision on that device
//! type, fp32 weights being cast inside each op (the cast is recorded by autograd, so gradients of
//! the fp32 weights come back in fp32); dropping it restores the previous state. tch's own
//! `tch::autocast` cannot do this: it toggles CUDA autocast only, and only in fp16.

use anyhow::{bail, Result};
use std::ffi::CStr;
use std::marker::PhantomData;
use std::os::raw::{c_char, c_int};
use tch::{Device, Kind, Tensor};
use torch_sys::C_tensor;

extern "C" {
    fn facekit_amp_last_error() -> *const c_char;
    fn facekit_autocast_is_enabled(device: c_int, enabled: *mut c_int) -> c_int;
    fn facekit_autocast_set_enabled(device: c_int, enabled: c_int) -> c_int;
    fn facekit_autocast_get_dtype(device: c_int, dtype: *mut c_int) -> c_int;
    fn facekit_autocast_set_dtype(device: c_int, dtype: c_int) -> c_int;
    fn facekit_autocast_increment_nesting(level: *mut c_int) -> c_int;
    fn facekit_autocast_decrement_nesting(level: *mut c_int) -> c_int;
    fn facekit_autocast_clear_cache() -> c_int;
    fn facekit_amp_unscale_(
        grads: *const *mut C_tensor,
        n: usize,
        found_inf: *mut C_tensor,
        inv_scale: *const C_tensor,
    ) -> c_int;
}

/// The lower precision autocast computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmpDtype {
    /// IEEE half: 10-bit mantissa, range to 65504, so gradients need loss scaling.
    Fp16,
    /// bfloat16: fp32's range with a 7-bit mantissa; no loss scaling needed.
    Bf16,
}

impl AmpDtype {
    /// The tensor kind of this precision.
    pub fn kind(self) -> Kind {
        match self {
            AmpDtype::Fp16 => Kind::Half,
            AmpDtype::Bf16 => Kind::BFloat16,
        }
    }
}

/// c10::ScalarType numbers (pinned by static_asserts in the shim).
fn dtype_code(kind: Kind) -> c_int {
    match kind {
        Kind::Half => 5,
        Kind::Float => 6,
        Kind::BFloat16 => 15,
        // Autocast's dtype is only ever one of the three above.
        other => unreachable!("autocast dtype {other:?}"),
    }
}

fn kind_of_code(code: c_int) -> Result<Kind> {
    Ok(match code {
        5 => Kind::Half,
        6 => Kind::Float,
        15 => Kind::BFloat16,
        _ => bail!("libtorch reports autocast dtype code {code}, which facekit does not know"),
    })
}

/// c10::DeviceType numbers: autocast state is per device type, not per device index.
fn device_code(device: Device) -> c_int {
    match device {
        Device::Cpu => 0,
        Device::Cuda(_) => 1,
        // Rejected by `Autocast::new` before any call reaches the shim.
        other => unreachable!("autocast device {other:?}"),
    }
}

fn check(rc: c_int, what: &str) -> Result<()> {
    if rc == 0 {
        return Ok(());
    }
    // SAFETY: the shim returns a pointer to its thread-local NUL-terminated error string.
    let msg = unsafe { CStr::from_ptr(facekit_amp_last_error()) }.to_string_lossy().into_owned();
    bail!("libtorch autocast: {what} failed: {msg}")
}

/// Whether autocast is on for `device`'s type on this thread, and its dtype.
pub fn state(device: Device) -> Result<(bool, Kind)> {
    let d = device_code_checked(device)?;
    let (mut enabled, mut dtype) = (0, 0);
    // SAFETY: plain out-parameters; the shim catches every C++ exception.
    check(unsafe { facekit_autocast_is_enabled(d, &mut enabled) }, "is_autocast_enabled")?;
    check(unsafe { facekit_autocast_get_dtype(d, &mut dtype) }, "get_autocast_dtype")?;
    Ok((enabled != 0, kind_of_code(dtype)?))
}

fn device_code_checked(device: Device) -> Result<c_int> {
    match device {
        Device::Cpu | Device::Cuda(_) => Ok(device_code(device)),
        other => bail!("autocast supports the CPU and CUDA devices, not {other:?}"),
    }
}

fn set(device: c_int, enabled: bool, dtype: Kind) -> Result<()> {
    // SAFETY: integer arguments only; the shim catches every C++ exception.
    check(unsafe { facekit_autocast_set_enabled(device, enabled as c_int) }, "set_autocast_enabled")?;
    check(unsafe { facekit_autocast_set_dtype(device, dtype_code(dtype)) }, "set_autocast_dtype")
}

/// Autocast on (with a dtype) or off for one device type while this guard lives, like
/// `torch.autocast.__enter__`/`__exit__`: the previous state comes back on [`Autocast::end`] (or
/// drop) and autocast's
/// cache of cast weights is freed when the outermost guard ends. Autocast state is per thread in
/// libtorch, so the guard cannot move to another thread.
#[must_use = "autocast is only on while the guard lives"]
#[derive(Debug)]
pub struct Autocast {
    device: c_int,
    prev_enabled: bool,
    prev_dtype: Kind,
    /// Restored by [`Autocast::end`]: nothing left for the drop to do.
    ended: bool,
    _per_thread: PhantomData<*const ()>,
}

impl Autocast {
    /// Autocast for `device`'s type in `dtype`, or off (`None`, as `torch.autocast(enabled=False)`,
    /// which is how fp32 heads run inside an autocast region).
    pub fn new(device: Device, dtype: Option<AmpDtype>) -> Result<Self> {
        let d = device_code_checked(device)?;
        let (prev_enabled, prev_dtype) = state(device)?;
        let mut level = 0;
        // SAFETY: out-parameter only; the shim catches every C++ exception.
        check(unsafe { facekit_autocast_increment_nesting(&mut level) }, "increment_nesting")?;
        let guard = Autocast { device: d, prev_enabled, prev_dtype, ended: false, _per_thread: PhantomData };
        // The dtype stays as it was when disabling, as torch.autocast(enabled=False) leaves it.
        set(d, dtype.is_some(), dtype.map_or(prev_dtype, AmpDtype::kind))?;
        Ok(guard)
    }
}

impl Autocast {
    /// Ends the guard, restoring the previous state, and says whether libtorch could: the way to
    /// end it on every path that is not an unwind, since a drop cannot return the error.
    pub fn end(mut self) -> Result<()> {
        self.ended = true;
        self.restore()
    }

    fn restore(&self) -> Result<()> {
        let mut level = 0;
        // SAFETY: out-parameter only; the shim catches every C++ exception.
        check(unsafe { facekit_autocast_decrement_nesting(&mut level) }, "decrement_nesting")?;
        if level == 0 {
            check(unsafe { facekit_autocast_clear_cache() }, "clear_cache")?;
        }
        set(self.device, self.prev_enabled, self.prev_dtype)
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        // These calls only fail on a broken libtorch. During an unwind the panic already says
        // what went wrong; otherwise a thread left computing in the wrong precision must not go
        // on unnoticed, and a library has no one to tell but its caller ([`Autocast::end`]
        // returns the error instead).
        if let Err(e) = self.restore() {
            if !std::thread::panicking() {
                panic!("could not restore the autocast state: {e:#}");
            }
        }
    }
}

/// Multiplies every gradient by `inv_scale` in place and sets `found_inf` (a 1-element f32 tensor
/// on the gradients' device) to 1 when any element of any gradient is inf or NaN, in one fused
/// libtorch call (`_amp_foreach_non_finite_check_and_unscale_`).
pub fn unscale_(grads: &mut [Tensor], found_inf: &mut Tensor, inv_scale: &Tensor) -> Result<()> {
    if grads.is_empty() {
        return Ok(());
    }
    let ptrs: Vec<*mut C_tensor> = grads.iter_mut().map(|g| g.as_mut_ptr()).collect();
    // SAFETY: every pointer is a live at::Tensor owned by `grads`, `found_inf` or `inv_scale`,
    // all borrowed for the duration of the call; the shim catches every C++ exception.
    let rc = unsafe { facekit_amp_unscale_(ptrs.as_ptr(), ptrs.len(), found_inf.as_mut_ptr(), inv_scale.as_ptr()) };
    check(rc, "_amp_foreach_non_finite_check_and_unscale_")
}
