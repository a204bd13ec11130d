//! Runs a closure as the ranks of one Gloo group over 127.0.0.1, one thread each (as PyTorch's own
//! c10d tests do). The test hosts the store on a free port and hands it to the ranks, so tests
//! running in parallel never race for a port.

use facekit_train::dist::{Backend, ProcessGroup, Store};
use std::time::Duration;

/// Collective timeout of the test groups: long enough for a loaded machine, short enough that a
/// broken test fails instead of hanging.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// `f(group)` on each of `world` ranks; the results in rank order. A panic on any rank fails the test.
pub fn run<T: Send + 'static>(world: usize, f: impl Fn(ProcessGroup) -> T + Send + Sync + 'static) -> Vec<T> {
    let f = std::sync::Arc::new(f);
    let host = Store::host("127.0.0.1", 0, world, TIMEOUT, "test").unwrap();
    let port = host.port().unwrap();
    let handles: Vec<_> = (0..world)
        .map(|rank| {
            let f = f.clone();
            std::thread::spawn(move || {
                tch::set_num_threads(1);
                let store = Store::connect("127.0.0.1", port, TIMEOUT, "test").unwrap();
                let group = ProcessGroup::new(&store, "g", rank, world, Backend::Gloo, TIMEOUT, Some("127.0.0.1")).unwrap();
                f(group)
            })
        })
        .collect();
    let out = handles.into_iter().map(|h| h.join().expect("a rank panicked")).collect();
    drop(host);
    out
}
