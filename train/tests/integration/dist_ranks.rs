//! Runs a closure as the ranks of one Gloo group over 127.0.0.1, one thread each (as PyTorch's own
//! c10d tests do). The test hosts the store on a free port and hands it to the ranks, so tests
//! running in parallel never race for a port.

use facekit_train::dist::{Backend, ProcessGroup, Store};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

/// Collective timeout of the test groups: long enough for a loaded machine, short enough that a
/// broken test fails instead of hanging.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// One test's ranks form their group at a time. Two groups forming at once in one process failed
/// now and then in Gloo's connectFullMesh ("connection closed by peer", about one run in twelve of
/// these tests on a loaded 2-core machine); real ranks are processes of their own, and once formed
/// the groups of parallel tests run side by side.
static FORMING: Mutex<()> = Mutex::new(());

/// `f(group)` on each of `world` ranks; the results in rank order. A panic on any rank fails the test.
pub fn run<T: Send + 'static>(world: usize, f: impl Fn(ProcessGroup) -> T + Send + Sync + 'static) -> Vec<T> {
    let f = std::sync::Arc::new(f);
    let forming = FORMING.lock().unwrap_or_else(|e| e.into_inner());
    let host = Store::host("127.0.0.1", 0, world, TIMEOUT, "test").unwrap();
    let port = host.port().unwrap();
    let (formed, joined) = mpsc::channel();
    let handles: Vec<_> = (0..world)
        .map(|rank| {
            let f = f.clone();
            let formed = formed.clone();
            std::thread::spawn(move || {
                tch::set_num_threads(1);
                let store = Store::connect("127.0.0.1", port, TIMEOUT, "test").unwrap();
                let group = ProcessGroup::new(&store, "g", rank, world, Backend::Gloo, TIMEOUT, Some("127.0.0.1")).unwrap();
                let _ = formed.send(());
                f(group)
            })
        })
        .collect();
    // A rank that failed to join never sends: the wait ends at the timeout and its join reports it.
    for _ in 0..world {
        if joined.recv_timeout(TIMEOUT).is_err() {
            break;
        }
    }
    drop(forming);
    let out = handles.into_iter().map(|h| h.join().expect("a rank panicked")).collect();
    drop(host);
    out
}
