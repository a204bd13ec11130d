//! `World`: joining a run as torchrun's ranks do, the heartbeat, and the diagnosis that names the
//! rank that stopped or failed when a collective fails. Ranks are threads of this process; the
//! launcher's store is hosted by the test on a free port (no port races between parallel tests).

use facekit_io::StopFlag;
use facekit_train::dist::launch::Launch;
use facekit_train::dist::world::{alive_key, key_prefix, MAX_TIMEOUT, STALL_WINDOW};
use facekit_train::dist::{spawn_local, Backend, DistEnv, ReduceOp, Store, World};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tch::Tensor;

const TIMEOUT: Duration = Duration::from_secs(60);

/// A diagnosis with a reachable store takes the stall window plus a few store round trips; this
/// is the slack a loaded machine gets on top.
const SLACK: Duration = Duration::from_secs(5);

/// The variables torchrun gives rank `rank` of `n`, all on this machine.
fn env(rank: usize, n: usize, port: u16, agent: bool) -> DistEnv {
    DistEnv {
        rank,
        world_size: n,
        local_rank: rank,
        local_world_size: n,
        group_rank: Some(0),
        master_addr: "127.0.0.1".into(),
        master_port: port,
        use_agent_store: agent,
        restart_count: 0,
        error_file: None,
    }
}

/// A launcher's store on a free port, as torchrun's agent hosts it, and its port.
fn launcher(n: usize) -> (Store, u16) {
    let store = Store::host("127.0.0.1", 0, n, TIMEOUT, &key_prefix(0)).unwrap();
    let port = store.port().unwrap();
    (store, port)
}

fn join(rank: usize, n: usize, port: u16) -> World {
    World::join(&env(rank, n, port, true), TIMEOUT, &StopFlag::new()).unwrap()
}

/// `error` diagnosed by `world`, as one line, and how long the diagnosis took.
fn diagnosed(world: &World, error: &str) -> (String, Duration) {
    let start = Instant::now();
    let e = world.diagnose(anyhow::anyhow!("{error}"));
    (format!("{e:#}"), start.elapsed())
}

fn assert_bounded(took: Duration) {
    assert!(took >= STALL_WINDOW && took < STALL_WINDOW + SLACK, "the diagnosis took {took:?}");
}

/// Each of `n` ranks joins and makes a Gloo group in a thread of its own (a group's construction
/// waits for every rank), then runs `f`.
fn ranks<T: Send + 'static>(
    n: usize,
    port: u16,
    agent: bool,
    f: impl Fn(World) -> T + Send + Sync + Clone + 'static,
) -> Vec<T> {
    let handles: Vec<_> = (0..n)
        .map(|rank| {
            let f = f.clone();
            std::thread::spawn(move || {
                tch::set_num_threads(1);
                f(World::join(&env(rank, n, port, agent), TIMEOUT, &StopFlag::new()).unwrap())
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("a rank panicked")).collect()
}

fn sum_of_ranks_plus_one(world: &World) -> f32 {
    let group = world.group("g", Backend::Gloo).unwrap();
    let t = Tensor::from_slice(&[world.rank() as f32 + 1.0]);
    group.all_reduce(&[&t], ReduceOp::Sum).unwrap();
    t.double_value(&[0]) as f32
}

#[test]
fn two_ranks_join_the_launchers_store_and_a_group_all_reduces() {
    let (_launcher, port) = launcher(2);
    let out = ranks(2, port, true, |w| {
        (w.rank(), w.world_size(), w.local_rank(), w.local_world_size(), sum_of_ranks_plus_one(&w))
    });
    assert_eq!(out, vec![(0, 2, 0, 2, 3.0), (1, 2, 1, 2, 3.0)]);
}

#[test]
fn a_value_each_rank_would_make_differently_is_rank_0s_on_every_rank() {
    let (_launcher, port) = launcher(3);
    // The later ranks ask first: they wait for rank 0's value instead of using their own.
    let out = ranks(3, port, true, |w| {
        std::thread::sleep(Duration::from_millis(200 * (2 - w.rank() as u64)));
        w.from_rank_0("run_name", || format!("FR-{}", 1000 + w.rank())).unwrap()
    });
    assert_eq!(out, vec!["FR-1000"; 3]);
}

#[test]
fn replicas_with_a_host_group_agree_their_per_step_decisions_over_it() {
    use facekit_train::dist::Ddp;
    use facekit_train::trainer::Replicas;
    let (_launcher, port) = launcher(2);
    let out = ranks(2, port, true, |w| {
        let mut ddp = Ddp::new(w.group("ddp", Backend::Gloo).unwrap(), tch::Device::Cpu)
            .with_host_group(w.group("host", Backend::Gloo).unwrap());
        (ddp.agree_any(w.rank() == 1).unwrap(), ddp.agree_any(false).unwrap())
    });
    assert_eq!(out, vec![(true, false); 2], "one rank's stop is every rank's, and no stop is no one's");
}

#[test]
fn without_the_agent_store_rank_0_hosts_it_and_its_death_is_named() {
    // MASTER_PORT must be given here: a port the system just handed out and released.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut worlds = ranks(2, port, false, |w| {
        assert_eq!(sum_of_ranks_plus_one(&w), 3.0);
        w
    });
    let rank1 = worlds.pop().unwrap();
    drop(worlds); // rank 0, and the store with it
    let start = Instant::now();
    let e = format!("{:#}", rank1.diagnose(anyhow::anyhow!("all-reduce: connection reset")));
    let took = start.elapsed();
    assert!(e.contains("rank 0 of 2, which hosts it, is gone"), "{e}");
    assert!(
        e.contains(&format!("127.0.0.1:{port} (MASTER_ADDR:MASTER_PORT)"))
            && e.contains("all-reduce: connection reset"),
        "{e}"
    );
    assert!(took < STALL_WINDOW + SLACK, "took {took:?}");
}

#[test]
fn the_heartbeat_counts_while_the_rank_lives_and_stops_with_it() {
    let (store, port) = launcher(2);
    let world = join(0, 2, port);
    let before = store.add(&alive_key(0), 0).unwrap();
    assert!(before >= 1, "the first beat is made by join itself");
    // Three periods and a half: two beats at least even when the machine is busy.
    std::thread::sleep(Duration::from_millis(3500));
    let during = store.add(&alive_key(0), 0).unwrap();
    assert!(during >= before + 2, "{before} -> {during} beats in 3.5 s");
    drop(world);
    let after = store.add(&alive_key(0), 0).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(store.add(&alive_key(0), 0).unwrap(), after, "a dropped World beats no more");
}

#[test]
fn diagnose_names_a_rank_that_stopped_heartbeating() {
    let (_launcher, port) = launcher(2);
    let (rank0, rank1) = (join(0, 2, port), join(1, 2, port));
    drop(rank1);
    let (e, took) = diagnosed(&rank0, "all-reduce timed out");
    assert!(
        e.starts_with("rank 1 of 2 stopped (no heartbeat for 3 s): killed, crashed or hung: all-reduce timed out"),
        "{e}"
    );
    assert_bounded(took);
}

#[test]
fn diagnose_names_a_ranks_reported_failure() {
    let (_launcher, port) = launcher(3);
    let worlds: Vec<World> = (0..3).map(|r| join(r, 3, port)).collect();
    worlds[2].report_failure("CUDA out of memory on GPU 2");
    let (e, took) = diagnosed(&worlds[0], "barrier timed out");
    assert!(e.starts_with("rank 2 of 3 failed: CUDA out of memory on GPU 2: barrier timed out"), "{e}");
    assert!(!e.contains("rank 1"), "rank 1 is alive and well: {e}");
    assert_bounded(took);
}

#[test]
fn diagnose_tells_a_finished_rank_from_one_that_never_joined_and_from_a_healthy_world() {
    let (_launcher, port) = launcher(3);
    let (rank0, rank1) = (join(0, 3, port), join(1, 3, port));
    rank1.finish().unwrap();
    let (e, took) = diagnosed(&rank0, "broadcast failed");
    assert!(e.contains("rank 1 of 3 had already finished"), "{e}");
    assert!(e.contains("rank 2 of 3 never joined"), "{e}");
    assert_bounded(took);

    let (_launcher, port) = launcher(2);
    let (rank0, _rank1) = (join(0, 2, port), join(1, 2, port));
    let (e, _) = diagnosed(&rank0, "all-gather failed");
    assert!(e.starts_with("every other rank of 2 is alive and reported no failure"), "{e}");
}

#[test]
fn a_collective_whose_peer_died_is_diagnosed_as_that_peer_stopping() {
    let (_launcher, port) = launcher(2);
    let (gone_tx, gone_rx) = std::sync::mpsc::channel::<()>();
    let gone_rx = std::sync::Arc::new(std::sync::Mutex::new(gone_rx));
    let out = ranks(2, port, true, move |w| {
        let group = w.group("g", Backend::Gloo).unwrap();
        if w.rank() == 1 {
            drop(group);
            drop(w);
            gone_tx.send(()).unwrap();
            return None;
        }
        gone_rx.lock().unwrap().recv().unwrap();
        let t = Tensor::from_slice(&[1.0f32]);
        let error = group.all_reduce(&[&t], ReduceOp::Sum).expect_err("an all-reduce without its peer succeeded");
        Some(format!("{:#}", w.diagnose(error)))
    });
    let e = out[0].as_ref().unwrap();
    assert!(e.starts_with("rank 1 of 2 stopped (no heartbeat for 3 s)"), "{e}");
    assert!(e.contains("all-reduce"), "the collective's own error is kept: {e}");
}

#[test]
fn diagnose_says_the_launcher_is_gone_when_its_store_is_in_bounded_time() {
    let (launcher, port) = launcher(2);
    let rank0 = join(0, 2, port);
    drop(launcher);
    let (e, took) = diagnosed(&rank0, "all-reduce failed");
    assert!(e.contains(&format!("the rendezvous store at 127.0.0.1:{port} (MASTER_ADDR:MASTER_PORT) cannot be reached: the launcher that hosts it")), "{e}");
    assert!(took < STALL_WINDOW + SLACK, "took {took:?}");
    let start = Instant::now();
    rank0.report_failure("best effort, must not fail or hang");
    drop(rank0);
    assert!(start.elapsed() < SLACK, "reporting and leaving took {:?}", start.elapsed());
}

#[test]
fn a_connection_made_under_a_long_timeout_waits_for_a_key_only_as_long_as_it_is_told_later() {
    let (_launcher, port) = launcher(1);
    let store = Store::connect("127.0.0.1", port, TIMEOUT, &key_prefix(0)).unwrap();
    store.set_timeout(Duration::from_secs(1)).unwrap();
    let start = Instant::now();
    let e = store.get("a key nobody sets").expect_err("got a key nobody set");
    let took = start.elapsed();
    assert!(took >= Duration::from_secs(1) && took < Duration::from_secs(1) + SLACK, "the wait took {took:?}: {e:#}");
}

#[cfg(not(feature = "nccl"))]
#[test]
fn an_nccl_group_in_a_build_without_nccl_is_refused_saying_so() {
    let (_launcher, port) = launcher(1);
    let world = join(0, 1, port);
    let e = world.group("g", Backend::Nccl).err().expect("made an NCCL group in a build without NCCL");
    assert!(format!("{e:#}").contains("built without NCCL (cargo feature `nccl`)"), "{e:#}");
}

#[test]
fn a_world_that_cannot_reach_its_store_fails_naming_it() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let e = World::join(&env(1, 2, port, true), Duration::from_secs(1), &StopFlag::new())
        .err()
        .expect("joined a store nobody hosts");
    assert!(format!("{e:#}").contains(&format!("cannot reach the rendezvous store at 127.0.0.1:{port}")), "{e:#}");
    assert!(format!("{e:#}").contains("nothing accepts connections"), "{e:#}");
}

/// A plain TCP server on a free port of 127.0.0.1 that accepts every connection and never says a
/// word (as a program that happens to hold MASTER_PORT would); its port.
fn silent_listener() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        // The connections are kept open, unanswered, for as long as the test binary runs.
        let held: Vec<_> = listener.incoming().map_while(Result::ok).collect();
        drop(held);
    });
    port
}

/// `World::join` on a thread, the test waiting for it at most `limit`: a join that never returns
/// fails the test instead of hanging it.
fn join_within(env: DistEnv, timeout: Duration, stop: StopFlag, limit: Duration) -> (anyhow::Result<World>, Duration) {
    let (tx, rx) = std::sync::mpsc::channel();
    let start = Instant::now();
    std::thread::spawn(move || {
        let _ = tx.send(World::join(&env, timeout, &stop));
    });
    let joined = rx.recv_timeout(limit).unwrap_or_else(|_| panic!("World::join still waits after {limit:?}"));
    (joined, start.elapsed())
}

#[test]
fn a_port_held_by_a_program_that_never_replies_fails_within_the_timeout_naming_it() {
    let port = silent_listener();
    let timeout = Duration::from_secs(2);
    let (joined, took) = join_within(env(1, 2, port, true), timeout, StopFlag::new(), Duration::from_secs(60));
    let e = format!("{:#}", joined.err().expect("joined a program that is no store"));
    assert!(
        e.contains(&format!("127.0.0.1:{port} (MASTER_ADDR:MASTER_PORT)"))
            && e.contains("something else answers there"),
        "{e}"
    );
    assert!(took >= timeout && took < timeout + SLACK, "gave up after {took:?}");
}

#[test]
fn a_stop_request_ends_the_wait_for_a_store_that_never_answers() {
    let port = silent_listener();
    let stop = StopFlag::new();
    let asker = stop.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        asker.request();
    });
    let (joined, took) = join_within(env(1, 2, port, true), TIMEOUT, stop, Duration::from_secs(30));
    let e = format!("{:#}", joined.err().expect("joined a program that is no store"));
    assert!(e.contains("stopped by a stop request while waiting for the store to answer"), "{e}");
    assert!(took < Duration::from_millis(500) + SLACK, "the stop was seen after {took:?}");
}

#[test]
fn a_master_addr_that_does_not_resolve_is_one_line_saying_so() {
    let unknown = DistEnv { master_addr: "no-such-host.invalid".into(), ..env(1, 2, 29500, true) };
    let (joined, took) = join_within(unknown, Duration::from_secs(5), StopFlag::new(), Duration::from_secs(60));
    let e = format!("{:#}", joined.err().expect("joined a host that does not exist"));
    assert!(e.contains("the host name 'no-such-host.invalid' does not resolve"), "{e}");
    assert!(!e.contains('\n') && !e.contains("timed out"), "one line, not a timeout: {e}");
    assert!(took < Duration::from_secs(5), "it is known at once, not after the timeout: {took:?}");
}

#[test]
fn a_deadline_of_zero_or_beyond_c10ds_range_is_refused() {
    let (_launcher, port) = launcher(1);
    for timeout in [Duration::ZERO, MAX_TIMEOUT + Duration::from_secs(1), Duration::from_secs(u64::MAX)] {
        let e = World::join(&env(0, 1, port, true), timeout, &StopFlag::new())
            .err()
            .expect("joined with an impossible deadline");
        assert!(format!("{e:#}").contains("a deadline of"), "{timeout:?}: {e:#}");
    }
    World::join(&env(0, 1, port, true), MAX_TIMEOUT, &StopFlag::new()).expect("the longest deadline c10d holds");
}

#[test]
fn shim_errors_carry_libtorchs_message_without_its_cpp_stack() {
    let (_launcher, port) = launcher(1);
    let store = Store::connect("127.0.0.1", port, TIMEOUT, &key_prefix(0)).unwrap();
    store.set_timeout(Duration::from_secs(1)).unwrap();
    let e = format!("{:#}", store.get("a key nobody sets").expect_err("got a key nobody set"));
    assert!(e.contains("a key nobody sets") && e.contains("timeout"), "libtorch's own message is kept: {e}");
    assert!(!e.contains("Exception raised from") && !e.contains("frame #"), "no C++ stack: {e}");
}

/// Where a launched rank (this test binary, run again) finds its scenario and writes its outcome.
const CHILD_DIR: &str = "FACEKIT_TEST_DIST_CHILD_DIR";

/// This test binary as the program of a launched run: a shell sets [`CHILD_DIR`] (setting it here
/// would race with the threads reading the environment) and runs [`rank_of_a_launched_run`] alone.
fn rank_program(dir: &Path) -> (PathBuf, Vec<OsString>) {
    let script = format!(r#"{CHILD_DIR}="$1" exec "$0" --quiet --exact dist_world::rank_of_a_launched_run --ignored"#);
    let exe = std::env::current_exe().unwrap();
    (PathBuf::from("/bin/sh"), vec!["-c".into(), script.into(), exe.into(), dir.into()])
}

#[test]
#[ignore = "a rank of the launched runs below, which start it"]
fn rank_of_a_launched_run() {
    let dir = PathBuf::from(std::env::var_os(CHILD_DIR).expect("started by a launch test"));
    let scenario = std::fs::read_to_string(dir.join("scenario")).unwrap();
    let env = DistEnv::from_env().unwrap().expect("started with torchrun's variables");
    std::fs::write(dir.join(format!("{}.env", env.rank)), format!("{env:?}")).unwrap();
    let world = World::join(&env, Duration::from_secs(30), &StopFlag::new()).unwrap();
    let group = world.group("g", Backend::Gloo).unwrap();
    if scenario == "rank 1 fails" && world.rank() == 1 {
        world.report_failure("simulated out of memory on rank 1");
        std::process::exit(3);
    }
    let t = Tensor::from_slice(&[world.rank() as f32 + 1.0]);
    let outcome = match group.all_reduce(&[&t], ReduceOp::Sum).and_then(|()| group.barrier()) {
        Ok(()) => format!("sum {}", t.double_value(&[0])),
        Err(e) => format!("{:#}", world.diagnose(e)),
    };
    std::fs::write(dir.join(world.rank().to_string()), &outcome).unwrap();
    if !outcome.starts_with("sum") {
        world.report_failure(&outcome);
        std::process::exit(1);
    }
    drop(group);
    world.finish().unwrap();
}

fn launch_dir(scenario: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("scenario"), scenario).unwrap();
    dir
}

/// Launches the rank program as 2 ranks; its exit code.
fn launch_two(program: &Path, args: &[OsString]) -> i32 {
    let plan = Launch { nproc: 2, program, args, grace: Duration::from_secs(20), signals: None };
    spawn_local(&plan, |_| {}).unwrap().code()
}

fn outcome(dir: &Path, rank: usize) -> String {
    std::fs::read_to_string(dir.join(rank.to_string())).unwrap_or_else(|e| format!("rank {rank} left no outcome: {e}"))
}

#[test]
fn spawn_local_runs_processes_that_join_one_world_and_all_reduce() {
    let dir = launch_dir("all succeed");
    let (program, args) = rank_program(dir.path());
    let code = launch_two(&program, &args);
    assert_eq!(code, 0);
    assert_eq!((outcome(dir.path(), 0), outcome(dir.path(), 1)), ("sum 3".into(), "sum 3".into()));
}

#[test]
fn spawn_local_returns_a_failed_ranks_code_and_the_survivor_names_it() {
    let dir = launch_dir("rank 1 fails");
    let (program, args) = rank_program(dir.path());
    let start = Instant::now();
    let code = launch_two(&program, &args);
    assert_eq!(code, 3, "rank 1's exit code");
    let e = outcome(dir.path(), 0);
    assert!(e.starts_with("rank 1 of 2 failed: simulated out of memory on rank 1"), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "rank 0 ended on its own, within the grace period: {:?}",
        start.elapsed()
    );
}

#[test]
fn torchrun_runs_facekit_ranks_on_its_agent_store() {
    let dir = launch_dir("all succeed");
    let (program, args) = rank_program(dir.path());
    // torchrun comes with the venv whose libtorch these tests link (scripts/setup.sh).
    let status = Command::new("torchrun")
        .args(["--standalone", "--nproc-per-node", "2", "--no-python"])
        .arg(&program)
        .args(&args)
        .status()
        .expect("torchrun (in .venv/bin, on PATH through .facekit.env)");
    assert!(status.success(), "torchrun: {status}");
    assert_eq!((outcome(dir.path(), 0), outcome(dir.path(), 1)), ("sum 3".into(), "sum 3".into()));
    let env0 = std::fs::read_to_string(dir.path().join("0.env")).unwrap();
    assert!(env0.contains("use_agent_store: true"), "torchrun hosts the store: {env0}");
}

#[test]
fn torchruns_summary_names_the_rank_that_failed_first_with_its_message() {
    let dir = launch_dir("rank 1 fails");
    let (program, args) = rank_program(dir.path());
    let out = Command::new("torchrun")
        .args(["--standalone", "--nproc-per-node", "2", "--no-python"])
        .arg(&program)
        .args(&args)
        .output()
        .expect("torchrun (in .venv/bin, on PATH through .facekit.env)");
    assert!(!out.status.success(), "torchrun succeeded with a failed rank");
    let log = String::from_utf8_lossy(&out.stderr);
    let root = log
        .split("Root Cause (first observed failure):")
        .nth(1)
        .unwrap_or_else(|| panic!("no torchrun summary in: {log}"));
    assert!(root.contains("rank      : 1 (local_rank: 1)") && root.contains("exitcode  : 3"), "{root}");
    // torchrun stops the other ranks as soon as one fails (no grace period): the failing rank's
    // own report is all its summary can show.
    assert!(root.contains("simulated out of memory on rank 1"), "{root}");
}
