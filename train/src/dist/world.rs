//! This rank's membership of a distributed run: the rendezvous store (reached as torchrun's env://
//! rendezvous reaches it), the process groups made over it, and the means to name a rank that
//! failed, died or hangs.
//!
//! A collective whose peer is gone fails with Gloo's or NCCL's own words ("Connection reset by
//! peer", a timeout after thirty minutes), which say nothing of which rank is to blame. So every
//! rank keeps a heartbeat counter in the store, from a thread of its own, and writes a failure
//! message there before it gives up; a rank whose collective failed reads both to name the
//! culprit. Liveness is judged by whether a counter moves, never by timestamps, so clocks that
//! disagree across machines do not matter.

use super::ddp::Ddp;
use super::env::DistEnv;
use super::group::{set_cuda_device, Backend, ProcessGroup};
use super::store::Store;
use anyhow::{bail, Context, Result};
use facekit_io::StopFlag;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often a rank bumps its heartbeat counter.
pub(crate) const HEARTBEAT_PERIOD: Duration = Duration::from_secs(1);

/// How long [`World::diagnose`] watches the counters: three missed beats mean the rank is gone,
/// not merely slow to be scheduled.
pub const STALL_WINDOW: Duration = Duration::from_secs(3);

/// Timeout of the waits on the heartbeat's and diagnosis's own store connections: short, so that
/// diagnosing a run whose store is gone ends in seconds rather than after the collective timeout.
/// Connecting them takes the join's timeout: on a loaded machine a connect can take longer than
/// this (seen in CI), and a rank that fails to join over it would take its peers down.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest deadline a rank may wait for the others: c10d and Gloo wait in poll(2), whose
/// timeout is a 32-bit count of milliseconds (about 24.8 days).
pub const MAX_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// Refuses a deadline that c10d cannot keep: 0 (which c10d reads as "wait forever") and anything
/// past [`MAX_TIMEOUT`] (which would wrap to a negative wait).
pub fn check_timeout(timeout: Duration) -> Result<()> {
    if timeout < Duration::from_secs(1) {
        bail!(
            "a deadline of {} s for the ranks' waits is too short: c10d reads 0 as \"wait forever\"; give at least 1 s",
            timeout.as_secs_f64()
        );
    }
    if timeout > MAX_TIMEOUT {
        bail!("a deadline of {} s for the ranks' waits is longer than the {} s (about 24 days) that c10d's millisecond waits can hold", timeout.as_secs(), MAX_TIMEOUT.as_secs());
    }
    Ok(())
}

/// The key prefix of facekit's keys in attempt `restart_count` of a run. Older torch's env://
/// rendezvous put every key under `/worker/attempt_{n}`; keeping that layout (and a `facekit`
/// level below it) means a store that outlives a restart never mixes two attempts' keys.
pub fn key_prefix(restart_count: u32) -> String {
    format!("/worker/attempt_{restart_count}/facekit")
}

/// The key rank `rank`'s heartbeat counter lives at.
pub fn alive_key(rank: usize) -> String {
    format!("alive/{rank}")
}

/// The key rank `rank`'s failure message is written to.
pub(crate) fn failed_key(rank: usize) -> String {
    format!("failed/{rank}")
}

/// The key rank `rank` sets when it has finished cleanly.
pub(crate) fn finished_key(rank: usize) -> String {
    format!("finished/{rank}")
}

/// This rank's place in the run and its connections to the rendezvous store.
pub struct World {
    // Fields drop in order: the heartbeat stops before the store it beats on can go away.
    heartbeat: Heartbeat,
    control: Store,
    store: Store,
    env: DistEnv,
    timeout: Duration,
}

impl World {
    /// Joins the run `env` describes: connects to the rendezvous store (rank 0 hosts it unless
    /// the launcher does) and starts the heartbeat. `timeout` bounds the wait for the store and,
    /// later, every collective of the groups made by [`World::group`] (see [`check_timeout`]);
    /// `stop` set while the store does not answer ends the wait.
    pub fn join(env: &DistEnv, timeout: Duration, stop: &StopFlag) -> Result<World> {
        check_timeout(timeout)?;
        let prefix = key_prefix(env.restart_count);
        let store = open_store(env, timeout, &prefix, stop)?;
        let control = control_connection(env, timeout, &prefix, stop).context("the diagnosis connection")?;
        let heartbeat = Heartbeat::start(
            control_connection(env, timeout, &prefix, stop).context("the heartbeat connection")?,
            env.rank,
        )?;
        Ok(World { heartbeat, control, store, env: env.clone(), timeout })
    }

    /// A process group of every rank, its keys under `name` (each group needs its own name).
    /// Gloo stays on 127.0.0.1 when the store is on this machine; otherwise it takes Gloo's
    /// default interface (`GLOO_SOCKET_IFNAME`, else the hostname's address).
    /// An NCCL group first makes `cuda:LOCAL_RANK` the current device (see [`set_cuda_device`]).
    pub fn group(&self, name: &str, backend: Backend) -> Result<ProcessGroup> {
        if backend == Backend::Nccl {
            set_cuda_device(self.env.local_rank)?;
        }
        let gloo_host = self.env.master_is_loopback().then_some("127.0.0.1");
        ProcessGroup::new(&self.store, name, self.env.rank, self.env.world_size, backend, self.timeout, gloo_host)
    }

    /// This rank's data-parallel replicas on `device`: the group `ddp` of `backend`; under NCCL
    /// also a Gloo group `host` for the per-step host decisions (see [`Ddp::with_host_group`]).
    /// Every rank makes the same groups in the same order.
    pub fn ddp(&self, backend: Backend, device: tch::Device) -> Result<Ddp> {
        let ddp = Ddp::new(self.group("ddp", backend)?, device);
        Ok(match backend {
            Backend::Nccl => ddp.with_host_group(self.group("host", Backend::Gloo)?),
            Backend::Gloo => ddp,
        })
    }

    /// This process's global rank.
    pub fn rank(&self) -> usize {
        self.env.rank
    }

    /// Number of ranks in the run.
    pub fn world_size(&self) -> usize {
        self.env.world_size
    }

    /// This process's rank on its machine (its GPU).
    pub fn local_rank(&self) -> usize {
        self.env.local_rank
    }

    /// Number of ranks on this machine.
    pub fn local_world_size(&self) -> usize {
        self.env.local_world_size
    }

    /// The variables this world was joined with.
    pub fn env(&self) -> &DistEnv {
        &self.env
    }

    /// The rendezvous store (keys under [`key_prefix`]), for exchanges outside a process group.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Rank 0's `make()`, the same on every rank: what each rank would otherwise work out for
    /// itself and could get differently (a run folder named from its own clock) is decided once,
    /// under `key`. The other ranks wait for it as long as the store's timeout.
    pub fn from_rank_0(&self, key: &str, make: impl FnOnce() -> String) -> Result<String> {
        let key = format!("decided/{key}");
        if self.env.rank == 0 {
            let value = make();
            self.store
                .set(&key, value.as_bytes())
                .with_context(|| format!("cannot share {key} with the other ranks"))?;
            return Ok(value);
        }
        let bytes = self.store.get(&key).with_context(|| format!("rank 0 never shared {key}"))?;
        String::from_utf8(bytes).with_context(|| format!("rank 0's {key} is not UTF-8"))
    }

    /// Tells the other ranks why this one is giving up, so that their [`World::diagnose`] can
    /// name it, and torchrun too (its error file, whose earliest failure its summary calls the
    /// root cause). Best effort: a store that cannot be reached is not worth a second error.
    pub fn report_failure(&self, message: &str) {
        let _ = self.control.set(&failed_key(self.env.rank), message.as_bytes());
        if let Some(path) = &self.env.error_file {
            let _ = std::fs::write(path, error_file_json(message, std::time::SystemTime::now()));
        }
    }

    /// `error` (a collective that failed or timed out) with what the store says of the other
    /// ranks: which reported a failure and with what message, which stopped heartbeating, or that
    /// the store itself is gone. Takes about [`STALL_WINDOW`], at most a few seconds more.
    pub fn diagnose(&self, error: anyhow::Error) -> anyhow::Error {
        match self.survey() {
            Ok(findings) => error.context(findings),
            Err(e) => error.context(format!("{}: {e:#}", self.store_gone())),
        }
    }

    /// Marks this rank as finished and stops its heartbeat, so that a peer still waiting reads
    /// "finished" rather than "stopped". Call it after the run's last barrier: when rank 0 hosts
    /// the store, the others lose it once rank 0 is done.
    pub fn finish(mut self) -> Result<()> {
        let marked = self.control.set(&finished_key(self.env.rank), b"1");
        self.heartbeat.stop();
        marked.context("cannot mark this rank as finished in the store")
    }

    /// What the store says of every other rank, read twice [`STALL_WINDOW`] apart; an error when
    /// the store does not answer.
    fn survey(&self) -> Result<String> {
        let others: Vec<usize> = (0..self.env.world_size).filter(|&r| r != self.env.rank).collect();
        if others.is_empty() {
            return Ok("there is no other rank to blame".to_string());
        }
        let before = self.beats(&others)?;
        std::thread::sleep(STALL_WINDOW);
        let after = self.beats(&others)?;
        let mut states = Vec::with_capacity(others.len());
        for (i, &rank) in others.iter().enumerate() {
            states.push((rank, self.peer_state(rank, before[i], after[i])?));
        }
        Ok(describe(&states, self.env.world_size))
    }

    /// The heartbeat counters of `ranks`, without waiting for any (adding 0 reads a counter).
    fn beats(&self, ranks: &[usize]) -> Result<Vec<i64>> {
        ranks.iter().map(|&r| self.control.add(&alive_key(r), 0)).collect()
    }

    fn peer_state(&self, rank: usize, before: i64, after: i64) -> Result<Peer> {
        // `check` first: `get` would wait for a key that may never come.
        if self.control.check(&failed_key(rank))? {
            let message = self.control.get(&failed_key(rank))?;
            return Ok(Peer::Failed(String::from_utf8_lossy(&message).into_owned()));
        }
        if self.control.check(&finished_key(rank))? {
            return Ok(Peer::Finished);
        }
        Ok(match (before, after) {
            (0, 0) => Peer::NeverJoined,
            (b, a) if a == b => Peer::Stopped,
            _ => Peer::Alive,
        })
    }

    /// Who hosts the store, for the message that it cannot be reached.
    fn store_gone(&self) -> String {
        let addr = format!("{}:{} (MASTER_ADDR:MASTER_PORT)", self.env.master_addr, self.env.master_port);
        if self.env.use_agent_store {
            format!("the rendezvous store at {addr} cannot be reached: the launcher that hosts it (torchrun's agent or `facekit train --nproc-per-node`) is gone")
        } else if self.env.rank == 0 {
            format!("the rendezvous store this rank hosts at {addr} does not answer")
        } else {
            format!("the rendezvous store at {addr} cannot be reached: rank 0 of {}, which hosts it, is gone (killed, crashed, or its machine is unreachable)", self.env.world_size)
        }
    }
}

/// What the store says of one other rank.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Peer {
    /// It reported this failure.
    Failed(String),
    /// Its heartbeat did not move during the window.
    Stopped,
    /// It never beat at all.
    NeverJoined,
    /// It finished cleanly while this rank still waited for it.
    Finished,
    /// It beats and reported nothing.
    Alive,
}

/// One sentence for the ranks' states, the most telling first.
fn describe(states: &[(usize, Peer)], world_size: usize) -> String {
    let mut parts: Vec<String> = states
        .iter()
        .filter_map(|(r, p)| match p {
            Peer::Failed(m) => Some(format!("rank {r} of {world_size} failed: {m}")),
            _ => None,
        })
        .collect();
    let of = |kind: &Peer| -> Vec<usize> { states.iter().filter(|(_, p)| p == kind).map(|(r, _)| *r).collect() };
    let secs = STALL_WINDOW.as_secs();
    let groups = [
        (Peer::Stopped, format!("stopped (no heartbeat for {secs} s): killed, crashed or hung")),
        (Peer::NeverJoined, "never joined (no heartbeat at all): not started, or cannot reach the store".to_string()),
        (Peer::Finished, "had already finished: the ranks disagree on when the run ends".to_string()),
    ];
    for (kind, what) in groups {
        let ranks = of(&kind);
        if !ranks.is_empty() {
            parts.push(format!("{} of {world_size} {what}", rank_list(&ranks)));
        }
    }
    if parts.is_empty() {
        return format!(
            "every other rank of {world_size} is alive and reported no failure: the ranks may have issued different collectives, or the network between them is broken"
        );
    }
    parts.join("; ")
}

/// The error file torch's `record` decorator writes (`{"message": {"message", "extraInfo":
/// {"py_callstack", "timestamp"}}}`): torchrun shows `py_callstack` as the traceback and orders
/// the ranks' failures by `timestamp`, in whole seconds.
fn error_file_json(message: &str, now: std::time::SystemTime) -> String {
    let secs = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    serde_json::json!({
        "message": {
            "message": message,
            "extraInfo": { "py_callstack": message, "timestamp": secs.to_string() },
        }
    })
    .to_string()
}

/// "rank 3" or "ranks 1, 2, 5".
fn rank_list(ranks: &[usize]) -> String {
    let list: Vec<String> = ranks.iter().map(|r| r.to_string()).collect();
    match list.len() {
        1 => format!("rank {}", list[0]),
        _ => format!("ranks {}", list.join(", ")),
    }
}

/// The store connection of every rank but the host's: the launcher's agent store, or rank 0's.
fn open_store(env: &DistEnv, timeout: Duration, prefix: &str, stop: &StopFlag) -> Result<Store> {
    if !env.use_agent_store && env.rank == 0 {
        Store::host(&env.master_addr, env.master_port, env.world_size, timeout, prefix)
            .context("rank 0 hosts the rendezvous store (TORCHELASTIC_USE_AGENT_STORE is not True)")
    } else {
        connect(env, timeout, prefix, stop)
    }
}

fn connect(env: &DistEnv, timeout: Duration, prefix: &str, stop: &StopFlag) -> Result<Store> {
    Store::connect_or_stop(&env.master_addr, env.master_port, timeout, prefix, stop)
}

/// A connection made under the join's `timeout` whose later waits take [`CONTROL_TIMEOUT`].
fn control_connection(env: &DistEnv, timeout: Duration, prefix: &str, stop: &StopFlag) -> Result<Store> {
    let store = connect(env, timeout, prefix, stop)?;
    store.set_timeout(CONTROL_TIMEOUT)?;
    Ok(store)
}

/// A thread bumping this rank's counter every [`HEARTBEAT_PERIOD`] on a connection of its own, so
/// that a main thread busy in a long collective still reads as alive.
struct Heartbeat {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Heartbeat {
    fn start(store: Store, rank: usize) -> Result<Heartbeat> {
        let key = alive_key(rank);
        // The first beat is synchronous: a peer that diagnoses right after this rank joined must
        // not read it as never joined.
        store.add(&key, 1).context("cannot start this rank's heartbeat in the store")?;
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("facekit-heartbeat-{rank}"))
            .spawn(move || beat(&store, &key, &stopped))
            .context("cannot start the heartbeat thread")?;
        Ok(Heartbeat { stop: Some(stop), thread: Some(thread) })
    }

    fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Beats until the sender is dropped, or until a beat fails: a TCPStore client does not reconnect,
/// so every later beat would fail too (each with a c10d warning on stderr), and a missing beat is
/// exactly what the other ranks look for.
fn beat(store: &Store, key: &str, stopped: &mpsc::Receiver<()>) {
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(HEARTBEAT_PERIOD) {
        if store.add(key, 1).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sit_under_torchs_attempt_prefix() {
        assert_eq!(key_prefix(0), "/worker/attempt_0/facekit");
        assert_eq!(key_prefix(3), "/worker/attempt_3/facekit");
        assert_eq!(
            (alive_key(2), failed_key(2), finished_key(2)),
            ("alive/2".into(), "failed/2".into(), "finished/2".into())
        );
    }

    #[test]
    fn describe_names_failures_first_then_stopped_ranks() {
        let states =
            [(1, Peer::Stopped), (2, Peer::Failed("CUDA out of memory".into())), (3, Peer::Stopped), (4, Peer::Alive)];
        assert_eq!(describe(&states, 5), "rank 2 of 5 failed: CUDA out of memory; ranks 1, 3 of 5 stopped (no heartbeat for 3 s): killed, crashed or hung");
    }

    #[test]
    fn describe_names_ranks_that_never_joined_or_finished() {
        let d = describe(&[(0, Peer::NeverJoined), (2, Peer::Finished)], 3);
        assert_eq!(d, "rank 0 of 3 never joined (no heartbeat at all): not started, or cannot reach the store; rank 2 of 3 had already finished: the ranks disagree on when the run ends");
    }

    #[test]
    fn the_error_file_is_torchs_layout() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let v: serde_json::Value = serde_json::from_str(&error_file_json("rank 1 of 2 failed: \"x\"", now)).unwrap();
        assert_eq!(v["message"]["message"], "rank 1 of 2 failed: \"x\"");
        assert_eq!(v["message"]["extraInfo"]["py_callstack"], "rank 1 of 2 failed: \"x\"");
        assert_eq!(v["message"]["extraInfo"]["timestamp"], "1700000000", "torch reads int(timestamp)");
    }

    #[test]
    fn describe_says_when_nobody_is_to_blame() {
        let d = describe(&[(1, Peer::Alive)], 2);
        assert!(d.starts_with("every other rank of 2 is alive and reported no failure"), "{d}");
    }
}
