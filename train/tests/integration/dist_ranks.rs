//! Runs a closure as the ranks of one Gloo group over 127.0.0.1, one thread each (as PyTorch's own
//! c10d tests do). The test hosts the store on a free port and hands it to the ranks, so tests
//! running in parallel never race for a port.

use facekit_train::dist::{Backend, ProcessGroup, Store};
use std::time::Duration;

/// Collective timeout of the test groups: long enough for a loaded machine, short enough that a
/// broken test fails instead of hanging.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Tries at forming a test's group. On this 2-core machine under a load of 8, Gloo's
/// connectFullMesh failed with "connection closed by peer" about once in 300 groups formed by
/// thread ranks (in Gloo's own connection code, not in a collective: forming groups one test at a
/// time did not change it), which is not what these tests are about.
const TRIES: usize = 3;

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
                f(form(&store, rank, world))
            })
        })
        .collect();
    let out = handles.into_iter().map(|h| h.join().expect("a rank panicked")).collect();
    drop(host);
    out
}

/// This rank's membership of the group, formed again under a new name by every rank together
/// when any rank failed to form it ([`TRIES`]); the last failure otherwise.
fn form(store: &Store, rank: usize, world: usize) -> ProcessGroup {
    for attempt in 0..TRIES {
        let made =
            ProcessGroup::new(store, &format!("g{attempt}"), rank, world, Backend::Gloo, TIMEOUT, Some("127.0.0.1"));
        store.set(&format!("formed/{attempt}/{rank}"), if made.is_ok() { b"1" } else { b"0" }).unwrap();
        let everyone = (0..world).all(|r| store.get(&format!("formed/{attempt}/{r}")).unwrap() == b"1");
        match made {
            Ok(group) if everyone => return group,
            Err(e) if attempt + 1 == TRIES => panic!("rank {rank} could not form the group in {TRIES} tries: {e:#}"),
            _ => {}
        }
    }
    panic!("rank {rank}: another rank could not form the group in {TRIES} tries")
}
