//! The rendezvous: PyTorch's TCPStore, the key-value server every rank meets at (hosted by rank 0,
//! by torchrun's agent, or by `facekit train --nproc-per-node`'s launcher).

use super::ffi::{self, FkStore};
use anyhow::{anyhow, bail, Context, Result};
use facekit_io::StopFlag;
use std::ffi::CString;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How often a connection being made looks at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// How long the diagnosis of a store that did not answer waits for a plain TCP connection.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

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
        Self::open(host, port, true, workers, timeout, prefix, &StopFlag::new())
            .with_context(|| format!("cannot host the rendezvous store on {host}:{port}"))
    }

    /// Connects to the store at `host:port`, waiting up to `timeout` for it to come up.
    pub fn connect(host: &str, port: u16, timeout: Duration, prefix: &str) -> Result<Store> {
        Self::connect_or_stop(host, port, timeout, prefix, &StopFlag::new())
    }

    /// [`Store::connect`], given up as soon as `stop` is set.
    pub(crate) fn connect_or_stop(
        host: &str,
        port: u16,
        timeout: Duration,
        prefix: &str,
        stop: &StopFlag,
    ) -> Result<Store> {
        Self::open(host, port, false, 0, timeout, prefix, stop)
            .with_context(|| format!("cannot reach the rendezvous store at {host}:{port} (MASTER_ADDR:MASTER_PORT)"))
    }

    /// Makes the connection within `timeout`, or gives up. c10d's TCPStore constructor waits for
    /// its handshake's reply with no deadline and retries reads interrupted by signals: a program
    /// that accepts connections on the port and never replies would hold it forever, deaf to
    /// SIGTERM. So it runs on a thread of its own that is abandoned when the time is up or `stop`
    /// is set (a store it makes after that is freed there).
    fn open(
        host: &str,
        port: u16,
        server: bool,
        workers: usize,
        timeout: Duration,
        prefix: &str,
        stop: &StopFlag,
    ) -> Result<Store> {
        let addr = resolve(host, port)?;
        let (h, p) = (CString::new(host)?, CString::new(prefix)?);
        let label = format!("{host}:{port}");
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("facekit-store-connect".into())
            .spawn(move || {
                let mut raw = std::ptr::null_mut();
                // SAFETY: valid C strings; the shim writes `raw` only on success.
                let code = unsafe {
                    ffi::facekit_store_new(
                        h.as_ptr(),
                        port.into(),
                        server.into(),
                        workers as i32,
                        timeout.as_secs_f64(),
                        p.as_ptr(),
                        &mut raw,
                    )
                };
                let _ = tx.send(ffi::check(code, "TCPStore").map(|()| Store { raw, addr: label }));
            })
            .context("cannot start the thread that connects to the store")?;
        let start = Instant::now();
        loop {
            match rx.recv_timeout(POLL) {
                Ok(store) => return store,
                Err(RecvTimeoutError::Disconnected) => bail!("the connection to the store ended without a result"),
                Err(RecvTimeoutError::Timeout) => {}
            }
            if stop.is_set() {
                bail!("stopped by {} while waiting for the store to answer", stop.describe());
            }
            if start.elapsed() >= timeout {
                return Err(unanswered(addr, timeout));
            }
        }
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
        ffi::check(
            unsafe { ffi::facekit_store_check(self.raw, k.as_ptr(), &mut found) },
            &format!("store {}: check {key}", self.addr),
        )?;
        Ok(found != 0)
    }

    /// Adds `delta` to the counter `key` and returns its new value.
    pub fn add(&self, key: &str, delta: i64) -> Result<i64> {
        let k = CString::new(key)?;
        let mut v = 0;
        // SAFETY: `raw` is a live store.
        ffi::check(
            unsafe { ffi::facekit_store_add(self.raw, k.as_ptr(), delta, &mut v) },
            &format!("store {}: add {key}", self.addr),
        )?;
        Ok(v)
    }

    pub(super) fn raw(&self) -> *mut FkStore {
        self.raw
    }
}

/// The first address `host` resolves to: a name that does not resolve is said to be one at once,
/// rather than retried by c10d (with a warning each time) until it is reported as a timeout.
fn resolve(host: &str, port: u16) -> Result<SocketAddr> {
    let name = host.trim_start_matches('[').trim_end_matches(']');
    let mut addrs =
        (name, port).to_socket_addrs().map_err(|e| anyhow!("the host name '{name}' does not resolve ({e})"))?;
    addrs.next().with_context(|| format!("the host name '{name}' resolves to no address"))
}

/// Why no store answered at `addr` within `timeout`: a plain connection tells a port where
/// something else listens (it accepts, but does not speak the store's protocol) from one where
/// nothing does.
fn unanswered(addr: SocketAddr, timeout: Duration) -> anyhow::Error {
    let secs = timeout.as_secs_f64();
    match TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) {
        Ok(_) => anyhow!(
            "no store answered within {secs} s, yet something else answers there: a program accepts connections on {addr} but does not reply as a PyTorch TCPStore (another program holds that port: choose another MASTER_PORT)"
        ),
        Err(e) => anyhow!("no store answered within {secs} s: nothing accepts connections at {addr} ({e}); is the rank or launcher that hosts it running?"),
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: created by facekit_store_new, freed once.
        unsafe { ffi::facekit_store_free(self.raw) }
    }
}
