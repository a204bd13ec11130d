//! The C entry points of `c10d_shim.cpp`. Every call returns 0, or -1 with the C++ exception's
//! text kept for [`last_error`]; [`check`] turns that into a `Result`.

use std::ffi::{c_char, c_int, c_void, CStr};
use torch_sys::C_tensor;

/// `FkStore` of the shim: a TCPStore connection under a key prefix.
#[repr(C)]
pub(crate) struct FkStore {
    _opaque: [u8; 0],
}

/// `FkGroup` of the shim: a c10d ProcessGroup with its Gloo or NCCL backend.
#[repr(C)]
pub(crate) struct FkGroup {
    _opaque: [u8; 0],
}

/// `FkReducer` of the shim: DDP's Reducer and its Logger.
#[repr(C)]
pub(crate) struct FkReducer {
    _opaque: [u8; 0],
}

extern "C" {
    pub(crate) fn facekit_dist_last_error() -> *const c_char;
    pub(crate) fn facekit_dist_free(p: *mut c_void);
    pub(crate) fn facekit_hide_cpp_stacks();

    pub(crate) fn facekit_store_new(
        host: *const c_char,
        port: c_int,
        is_server: c_int,
        num_workers: c_int,
        timeout_s: f64,
        prefix: *const c_char,
        out: *mut *mut FkStore,
    ) -> c_int;
    pub(crate) fn facekit_store_set_timeout(s: *mut FkStore, timeout_s: f64) -> c_int;
    pub(crate) fn facekit_store_port(s: *mut FkStore, port: *mut c_int) -> c_int;
    pub(crate) fn facekit_store_free(s: *mut FkStore);
    pub(crate) fn facekit_store_set(s: *mut FkStore, key: *const c_char, value: *const u8, len: usize) -> c_int;
    pub(crate) fn facekit_store_get(s: *mut FkStore, key: *const c_char, value: *mut *mut u8, len: *mut usize)
        -> c_int;
    pub(crate) fn facekit_store_check(s: *mut FkStore, key: *const c_char, found: *mut c_int) -> c_int;
    pub(crate) fn facekit_store_add(s: *mut FkStore, key: *const c_char, delta: i64, value: *mut i64) -> c_int;

    pub(crate) fn facekit_cuda_set_device(index: c_int) -> c_int;
    pub(crate) fn facekit_group_new(
        s: *mut FkStore,
        prefix: *const c_char,
        rank: c_int,
        size: c_int,
        backend: c_int,
        timeout_s: f64,
        gloo_host: *const c_char,
        out: *mut *mut FkGroup,
    ) -> c_int;
    pub(crate) fn facekit_group_clone(g: *mut FkGroup, out: *mut *mut FkGroup) -> c_int;
    pub(crate) fn facekit_group_free(g: *mut FkGroup);
    pub(crate) fn facekit_allreduce(g: *mut FkGroup, ts: *const *mut C_tensor, n: usize, op: c_int) -> c_int;
    pub(crate) fn facekit_allreduce_coalesced(g: *mut FkGroup, ts: *const *mut C_tensor, n: usize, op: c_int) -> c_int;
    pub(crate) fn facekit_broadcast_coalesced(
        g: *mut FkGroup,
        ts: *const *mut C_tensor,
        n: usize,
        root: c_int,
    ) -> c_int;
    pub(crate) fn facekit_allgather_base(g: *mut FkGroup, out: *mut C_tensor, input: *const C_tensor) -> c_int;
    pub(crate) fn facekit_reduce_scatter_base(
        g: *mut FkGroup,
        out: *mut C_tensor,
        input: *const C_tensor,
        op: c_int,
    ) -> c_int;
    pub(crate) fn facekit_barrier(g: *mut FkGroup) -> c_int;
    pub(crate) fn facekit_all_gather_autograd(
        g: *mut FkGroup,
        input: *const C_tensor,
        grad_scale: f64,
        out: *mut *mut C_tensor,
    ) -> c_int;
    pub(crate) fn facekit_dist_cross_entropy(
        g: *mut FkGroup,
        logits: *const C_tensor,
        labels: *const C_tensor,
        out: *mut *mut C_tensor,
    ) -> c_int;

    pub(crate) fn facekit_reducer_new(
        g: *mut FkGroup,
        params: *const *mut C_tensor,
        n: usize,
        bucket_bytes: i64,
        find_unused: c_int,
        out: *mut *mut FkReducer,
    ) -> c_int;
    pub(crate) fn facekit_reducer_free(r: *mut FkReducer);
    pub(crate) fn facekit_reducer_prepare_forward(r: *mut FkReducer) -> c_int;
    pub(crate) fn facekit_reducer_prepare_backward(r: *mut FkReducer, outputs: *const *mut C_tensor, n: usize)
        -> c_int;
}

/// The message of the last failed call on this thread.
pub(crate) fn last_error() -> String {
    // SAFETY: the shim returns a pointer into its thread-local string, valid until the next call.
    unsafe { CStr::from_ptr(facekit_dist_last_error()) }.to_string_lossy().into_owned()
}

/// `Ok` for 0, the shim's message (after `what`) otherwise.
pub fn check(code: c_int, what: &str) -> anyhow::Result<()> {
    if code == 0 {
        Ok(())
    } else {
        anyhow::bail!("{what}: {}", last_error())
    }
}

/// The raw pointers of `ts`, for the calls that take a list.
pub(crate) fn ptrs(ts: &[&tch::Tensor]) -> Vec<*mut C_tensor> {
    ts.iter().map(|t| t.as_ptr() as *mut C_tensor).collect()
}
