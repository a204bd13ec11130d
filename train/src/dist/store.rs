//! The rendezvous: PyTorch's TCPStore, the key-value server every rank meets at (hosted by rank 0,
//! by torchrun's agent, or by `facekit train --nproc-per-node`'s launcher).

use super::ffi::{self, FkStore};
use anyhow::{Context, Result};
use std::ffi::CString;
use std::time::Duration;

/// A connection to a TCPStore, every key under a prefix.
pub struct Store {
    raw: *mut FkStore,
    addr: String,
}

// SAFETY: c10d's TCPStore client serialises its operations with its own lock.
unsafe impl Send for Store {}
unsafe impl Sync for Store {}

impl Store {
    /// Hosts a store on `host:port` (0: a free port, see [`Store::port`]) for `workers` clients.
    pub fn host(host: &str, port: u16, workers: usize, timeout: Duration, prefix: &str) -> Result<Store> {
        Self::open(host, port, true, workers, timeout, prefix).with_context(|| format!("cannot host the rendezvous store on {host}:{port}"))
    }

    /// Connects to the store at `host:port`, waiting up to `timeout` for it to come up.
    pub fn connect(host: &str, port: u16, timeout: Duration, prefix: &str) -> Result<Store> {
        Self::open(host, port, false, 0, timeout, prefix).with_context(|| format!("cannot reach the rendezvous store at {host}:{port} (MASTER_ADDR:MASTER_PORT)"))
    }

    fn open(host: &str, port: u16, server: bool, workers: usize, timeout: Duration, prefix: &str) -> Result<Store> {
        let (h, p) = (CString::new(host)?, CString::new(prefix)?);
        let mut raw = std::ptr::null_mut();
        // SAFETY: valid C strings; the shim writes `raw` only on success.
        let code = unsafe { ffi::facekit_store_new(h.as_ptr(), port.into(), server.into(), workers as i32, timeout.as_secs_f64(), p.as_ptr(), &mut raw) };
        ffi::check(code, "TCPStore")?;
        Ok(Store { raw, addr: format!("{host}:{port}") })
    }

    /// Sets how long later waits for a key ([`Store::get`]) may take; the connection itself was
    /// made under the timeout it was opened with.
    pub fn set_timeout(&self, timeout: Duration) -> Result<()> {
        // SAFETY: `raw` is a live store.
        ffi::check(unsafe { ffi::facekit_store_set_timeout(self.raw, timeout.as_secs_f64()) }, "TCPStore timeout")
    }

    /// The port the store listens on (the one chosen when hosted on port 0).
    pub fn port(&self) -> Result<u16> {
        let mut port = 0;
        // SAFETY: `raw` is a live store.
        ffi::check(unsafe { ffi::facekit_store_port(self.raw, &mut port) }, "TCPStore port")?;
        Ok(port as u16)
    }

    /// Sets `key` to `value`.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        let k = CString::new(key)?;
        // SAFETY: `value` is valid for its length.
        let code = unsafe { ffi::facekit_store_set(self.raw, k.as_ptr(), value.as_ptr(), value.len()) };
        ffi::check(code, &format!("store {}: set {key}", self.addr))
    }

    /// The value of `key`, waiting up to the store's timeout for some rank to set it.
    pub fn get(&self, key: &str) -> Result<Vec<u8>> {
        let k = CString::new(key)?;
        let (mut p, mut len) = (std::ptr::null_mut(), 0usize);
        // SAFETY: on success the shim hands over a malloc'd buffer of `len` bytes, freed below.
        let code = unsafe { ffi::facekit_store_get(self.raw, k.as_ptr(), &mut p, &mut len) };
        ffi::check(code, &format!("store {}: get {key}", self.addr))?;
        let v = unsafe { std::slice::from_raw_parts(p, len) }.to_vec();
        unsafe { ffi::facekit_dist_free(p.cast()) };
        Ok(v)
    }

    /// Whether `key` is set (does not wait).
    pub fn check(&self, key: &str) -> Result<bool> {
        let k = CString::new(key)?;
        let mut found = 0;
        // SAFETY: `raw` is a live store.
        ffi::check(unsafe { ffi::facekit_store_check(self.raw, k.as_ptr(), &mut found) }, &format!("store {}: check {key}", self.addr))?;
        Ok(found != 0)
    }

    /// Adds `delta` to the counter `key` and returns its new value.
    pub fn add(&self, key: &str, delta: i64) -> Result<i64> {
        let k = CString::new(key)?;
        let mut v = 0;
        // SAFETY: `raw` is a live store.
        ffi::check(unsafe { ffi::facekit_store_add(self.raw, k.as_ptr(), delta, &mut v) }, &format!("store {}: add {key}", self.addr))?;
        Ok(v)
    }

    /// `host:port`, for messages.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub(super) fn raw(&self) -> *mut FkStore {
        self.raw
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: created by facekit_store_new, freed once.
        unsafe { ffi::facekit_store_free(self.raw) }
    }
}
