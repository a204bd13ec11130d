//! The launcher behind `facekit train --nproc-per-node N`: torchrun's single-machine job for users
//! without Python.
//!
//! It plays torchrun's agent: it hosts the rendezvous store itself, so that rank 0 dying does not
//! take the store (and every other rank's means of naming it) down too, and gives each child the
//! variables torchrun gives ([`DistEnv::vars`], with `TORCHELASTIC_USE_AGENT_STORE=True`). Each
//! child runs in a process group of its own, as torchrun's do, so a terminal's Ctrl-C reaches the
//! launcher alone and is forwarded exactly once (facekit reads a second signal as "stop at once").
//! When one rank fails the others get `grace` to notice through their collectives and fail with a
//! message of their own; a rank still running after that is stuck where no signal but SIGKILL
//! helps, and is killed.
//!
//! The launcher prints nothing and installs no signal handler: it tells its caller what happens
//! through [`Event`]s, returns a [`Report`], and forwards the signals the caller hands it
//! ([`Launch::signals`]); the command line turns SIGINT, SIGTERM and SIGHUP into those and prints
//! the events and the report.

use super::env::DistEnv;
use super::store::Store;
use super::world::{failed_key, key_prefix};
use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// How often the launcher looks at its children and at the signals to forward.
const POLL: Duration = Duration::from_millis(20);

/// Timeout of the launcher's own connection to the store it hosts. Its reads (failure messages)
/// never wait, so this bounds only the connect, which a loaded machine can make slow.
const STORE_TIMEOUT: Duration = Duration::from_secs(60);

/// What to launch, and how.
#[derive(Debug, Clone, Copy)]
pub struct Launch<'a> {
    /// Ranks to start on this machine (at least 1).
    pub nproc: usize,
    /// The program each rank runs.
    pub program: &'a Path,
    /// The arguments every rank gets (the same for all: each rank learns its rank from torchrun's
    /// variables, which the launcher sets).
    pub args: &'a [OsString],
    /// How long the other ranks get to end on their own once one failed, before they are killed.
    pub grace: Duration,
    /// Signals (SIGINT, SIGTERM, SIGHUP) to forward to every running rank, one message per
    /// arrival. The caller decides where they come from (the command line: the launcher process's
    /// own signals; a test: its own sends); `None`, or a channel closed or silent, forwards none.
    pub signals: Option<&'a Receiver<i32>>,
}

/// What a launch tells its caller as it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A rank's process started.
    Started {
        /// Its global rank.
        rank: usize,
        /// Ranks launched in all.
        nproc: usize,
        /// Its process id.
        pid: u32,
    },
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Started { rank, nproc, pid } => write!(f, "rank {rank} of {nproc}: pid {pid}"),
        }
    }
}

/// Runs `launch.program` as `launch.nproc` ranks on this machine, hosting their store on a free
/// port of 127.0.0.1, and waits for all of them; `on_event` hears of each rank as it starts.
/// Signals that arrive on [`Launch::signals`] are forwarded to every rank still running. The
/// [`Report`] gives the exit code and the lines that explain it. The ranks' stdin is empty; on
/// Linux they are killed if the calling thread ends first.
pub fn spawn_local(launch: &Launch, mut on_event: impl FnMut(Event)) -> Result<Report> {
    let Launch { nproc, program, args, grace, signals } = *launch;
    if nproc == 0 {
        bail!("--nproc-per-node must be at least 1");
    }
    let prefix = key_prefix(0);
    let store = Store::host("127.0.0.1", 0, nproc, STORE_TIMEOUT, &prefix)?;
    let port = store.port()?;
    let mut ranks = Ranks(Vec::with_capacity(nproc));
    for rank in 0..nproc {
        let child = spawn(rank, nproc, port, program, args)?;
        on_event(Event::Started { rank, nproc, pid: child.id() });
        ranks.0.push(Rank { rank, child, status: None, killed: false });
    }
    let (first_failure, forwarded) = supervise(&mut ranks.0, signals, grace)?;
    let ends = ranks.0.iter().map(|r| end(r, &store)).collect();
    Ok(Report { ends, first_failure, forwarded, grace })
}

/// How one rank ended.
#[derive(Debug)]
struct End {
    rank: usize,
    pid: u32,
    status: ExitStatus,
    /// Killed by the launcher after the grace period.
    killed: bool,
    /// What the rank wrote to `failed/{rank}` in the store, if it did.
    message: Option<String>,
}

/// What a launch came to.
#[derive(Debug)]
pub struct Report {
    ends: Vec<End>,
    /// Index into `ends` of the first rank seen to fail.
    first_failure: Option<usize>,
    /// The signals forwarded to the ranks, in order.
    forwarded: Vec<i32>,
    grace: Duration,
}

impl Report {
    /// The first failure's exit code (128 + the signal for a rank a signal ended); else, for a run
    /// that was stopped, 128 + the signal that stopped it; else 0.
    pub fn code(&self) -> i32 {
        match (self.first_failure, self.forwarded.first()) {
            (Some(i), _) => exit_code(self.ends[i].status),
            (None, Some(&sig)) => 128 + sig,
            (None, None) => self.stop_code().unwrap_or(0),
        }
    }

    /// For ranks stopped by a signal sent to them rather than to the launcher: the code of one that
    /// received it. The others stopped because it asked, and say 130 for a stop they did not see.
    fn stop_code(&self) -> Option<i32> {
        let codes: Vec<i32> = self.ends.iter().map(|e| exit_code(e.status)).filter(|&c| is_stop_code(c)).collect();
        codes.iter().copied().find(|&c| c != STOP_NOT_SEEN).or(codes.first().copied())
    }

    /// The signals forwarded, then how the launch ended: the first failure and every other rank's
    /// end, or that all finished or stopped as asked. One line each, for the user.
    pub fn summary(&self) -> Vec<String> {
        let n = self.ends.len();
        let mut lines: Vec<String> =
            self.forwarded.iter().map(|&s| format!("{} forwarded to every rank", signal_name(s))).collect();
        let Some(first) = self.first_failure else {
            lines.push(match (self.forwarded.first(), self.stop_code()) {
                (Some(&sig), _) => {
                    format!("all {n} ranks stopped as asked by {} (exit code {})", signal_name(sig), 128 + sig)
                }
                (None, Some(code)) => {
                    format!("the ranks stopped as a signal sent to one of them asked (exit code {code})")
                }
                (None, None) => format!("all {n} ranks finished"),
            });
            return lines;
        };
        let culprit = &self.ends[first];
        lines.push(format!("rank {} of {n} (pid {}) failed first: {}", culprit.rank, culprit.pid, self.how(culprit)));
        for end in self.ends.iter().filter(|e| e.rank != culprit.rank) {
            lines.push(format!("rank {} of {n} (pid {}): {}", end.rank, end.pid, self.how(end)));
        }
        lines
    }

    fn how(&self, end: &End) -> String {
        let how = if end.killed {
            format!("still running {} s after the first failure: killed", self.grace.as_secs_f64())
        } else {
            describe_status(end.status)
        };
        match &end.message {
            Some(m) => format!("{how}; its message: {m}"),
            None => how,
        }
    }
}

/// A child as the launcher tracks it; unreaped children are killed if the launch is abandoned
/// (an error, a panic), so that none outlives it.
struct Rank {
    rank: usize,
    child: Child,
    status: Option<ExitStatus>,
    killed: bool,
}

struct Ranks(Vec<Rank>);

impl Drop for Ranks {
    fn drop(&mut self) {
        for r in self.0.iter_mut().filter(|r| r.status.is_none()) {
            signal_group(&r.child, libc::SIGKILL);
            let _ = r.child.wait();
        }
    }
}

/// Waits for every rank, forwarding signals; once one fails, gives the rest `grace` and then
/// kills them. Returns the first failure's index and the forwarded signals.
fn supervise(
    ranks: &mut [Rank],
    signals: Option<&Receiver<i32>>,
    grace: Duration,
) -> Result<(Option<usize>, Vec<i32>)> {
    let mut first_failure: Option<(usize, Instant)> = None;
    let mut forwarded = Vec::new();
    loop {
        for sig in signals.into_iter().flat_map(Receiver::try_iter) {
            forwarded.push(sig);
            ranks.iter().filter(|r| r.status.is_none()).for_each(|r| signal_group(&r.child, sig));
        }
        // Ranks that fail within one poll are told apart by rank: 20 ms is finer than anything a
        // human reads in the order of two failures.
        for (i, r) in ranks.iter_mut().enumerate().filter(|(_, r)| r.status.is_none()) {
            if let Some(status) = r.child.try_wait().with_context(|| format!("cannot wait for rank {}", r.rank))? {
                r.status = Some(status);
                if !status.success() && !is_stop_code(exit_code(status)) && first_failure.is_none() {
                    first_failure = Some((i, Instant::now()));
                }
            }
        }
        if ranks.iter().all(|r| r.status.is_some()) {
            return Ok((first_failure.map(|(i, _)| i), forwarded));
        }
        if first_failure.is_some_and(|(_, at)| at.elapsed() >= grace) {
            kill_the_rest(ranks)?;
        }
        std::thread::sleep(POLL);
    }
}

/// The code of a facekit rank that stopped because another rank was asked to (it saw no signal).
const STOP_NOT_SEEN: i32 = 130;

/// Whether a rank's exit code says it was stopped, not that it failed: facekit stops at its next
/// safe point on SIGINT, SIGTERM or SIGHUP and exits with 128 + the signal (a program without a
/// handler is ended by it, which reads the same), whether the signal came through the launcher,
/// straight from a scheduler, or through another rank.
fn is_stop_code(code: i32) -> bool {
    STOP_SIGNALS.iter().any(|&s| code == 128 + s)
}

/// Refuses more local ranks than the CPU can run side by side (on CUDA, [`DistEnv::device`]
/// refuses more ranks than GPUs): a Gloo rank computes on cores of its own, and ranks beyond the
/// cores only take turns on them while every step waits for the slowest.
pub fn check_cpu_room(nproc: usize, cores: usize) -> Result<()> {
    if nproc > cores {
        bail!(
            "--nproc-per-node {nproc} on the CPU, which gives this process {cores} core(s): each rank computes on cores of its own, \
             and more ranks than cores only take turns on them (every step waits for the slowest); use at most {cores}"
        );
    }
    Ok(())
}

fn kill_the_rest(ranks: &mut [Rank]) -> Result<()> {
    for r in ranks.iter_mut().filter(|r| r.status.is_none()) {
        signal_group(&r.child, libc::SIGKILL);
        r.status = Some(r.child.wait().with_context(|| format!("cannot wait for rank {} after killing it", r.rank))?);
        r.killed = true;
    }
    Ok(())
}

/// The rank's end, with the failure message it left in the store (read without waiting).
fn end(r: &Rank, store: &Store) -> End {
    let status = r.status.expect("every rank was reaped");
    let key = failed_key(r.rank);
    let message = if status.success() {
        None
    } else {
        store.check(&key).ok().filter(|&found| found).and_then(|_| store.get(&key).ok())
    };
    End {
        rank: r.rank,
        pid: r.child.id(),
        status,
        killed: r.killed,
        message: message.map(|m| String::from_utf8_lossy(&m).into_owned()),
    }
}

/// Starts rank `rank` with torchrun's variables, in a process group of its own, set to die with
/// the launcher: if the launcher itself is killed its store is gone and the ranks can only hang.
fn spawn(rank: usize, nproc: usize, port: u16, program: &Path, args: &[OsString]) -> Result<Child> {
    let env = DistEnv::local(rank, nproc, port);
    let mut cmd = Command::new(program);
    // An error file inherited from a torchrun above this launcher is not this rank's. Outside the
    // terminal's foreground group a read of the terminal would stop the rank silently (SIGTTIN),
    // so stdin is empty instead.
    cmd.args(args).env_remove("TORCHELASTIC_ERROR_FILE").envs(env.vars()).process_group(0).stdin(Stdio::null());
    let launcher = std::process::id();
    // SAFETY: prctl and getppid are async-signal-safe; nothing here allocates.
    unsafe {
        cmd.pre_exec(move || die_with_parent(launcher));
    }
    cmd.spawn().with_context(|| format!("cannot start rank {rank} of {nproc}: {}", program.display()))
}

/// In the child before exec: SIGKILL when the launcher's thread ends, and no exec at all when the
/// launcher is already gone (the signal would then never come).
fn die_with_parent(launcher: u32) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain syscalls.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if unsafe { libc::getppid() } as u32 != launcher {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
    }
    let _ = launcher;
    Ok(())
}

/// Sends `sig` to the rank's process group: the rank and whatever it started (a shell wrapper's
/// program, a data loader's workers). Only called for unreaped children, whose pid cannot have
/// been reused.
fn signal_group(child: &Child, sig: i32) {
    // SAFETY: plain syscall; the group exists while its leader is unreaped.
    unsafe {
        libc::killpg(child.id() as libc::pid_t, sig);
    }
}

/// The exit code a shell would report: the code, or 128 + the signal that ended the process.
fn exit_code(status: ExitStatus) -> i32 {
    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(1)
}

fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(0), _) => "finished".to_string(),
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) if [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE, libc::SIGABRT].contains(&s) => {
            format!("crashed ({})", signal_name(s))
        }
        (None, Some(libc::SIGKILL)) => {
            "killed by SIGKILL (which the kernel's out-of-memory killer sends too)".to_string()
        }
        (None, Some(s)) => format!("killed by {}", signal_name(s)),
        (None, None) => format!("ended as {status}"),
    }
}

fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}

/// The signals that ask facekit to stop at its next safe point, which the command line forwards
/// to the ranks it launched (through [`Launch::signals`]).
pub const STOP_SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::mpsc;

    /// `/bin/sh -c script sh args...`: in the script `$1`... are `args`.
    fn sh(nproc: usize, script: &str, args: &[&Path], grace: Duration) -> Result<Report> {
        sh_signalled(nproc, script, args, grace, None)
    }

    /// [`sh`], forwarding what arrives on `signals`.
    fn sh_signalled(
        nproc: usize,
        script: &str,
        args: &[&Path],
        grace: Duration,
        signals: Option<&mpsc::Receiver<i32>>,
    ) -> Result<Report> {
        let mut a: Vec<OsString> = vec!["-c".into(), script.into(), "sh".into()];
        a.extend(args.iter().map(|p| p.as_os_str().to_owned()));
        launch(&Launch { nproc, program: Path::new("/bin/sh"), args: &a, grace, signals })
    }

    fn launch(launch: &Launch) -> Result<Report> {
        spawn_local(launch, |_| {})
    }

    fn summary(r: &Report) -> String {
        r.summary().join("\n")
    }

    fn wait_for(path: &Path, what: &str) {
        let start = Instant::now();
        while !path.exists() {
            assert!(start.elapsed() < Duration::from_secs(30), "{what}: {} never appeared", path.display());
            std::thread::sleep(POLL);
        }
    }

    #[test]
    fn every_child_gets_torchruns_variables_for_its_rank() {
        let dir = tempfile::tempdir().unwrap();
        let a: Vec<OsString> = vec!["-c".into(), r#"env > "$1/$RANK""#.into(), "sh".into(), dir.path().into()];
        let mut events = Vec::new();
        let plan =
            Launch { nproc: 3, program: Path::new("/bin/sh"), args: &a, grace: Duration::from_secs(5), signals: None };
        let report = spawn_local(&plan, |e| events.push(e)).unwrap();
        assert_eq!(report.code(), 0, "{}", summary(&report));
        let started: Vec<Event> =
            report.ends.iter().map(|e| Event::Started { rank: e.rank, nproc: 3, pid: e.pid }).collect();
        assert_eq!(events, started, "one event per rank as it starts, in rank order");
        assert_eq!(events[1].to_string(), format!("rank 1 of 3: pid {}", report.ends[1].pid));
        let mut ports = Vec::new();
        for rank in 0..3 {
            let text = std::fs::read_to_string(dir.path().join(rank.to_string())).unwrap();
            let vars: std::collections::HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
            let env = DistEnv::from_lookup(|k| vars.get(k).map(OsString::from)).unwrap().expect("a distributed run");
            assert_eq!(
                (env.rank, env.local_rank, env.world_size, env.local_world_size, env.group_rank),
                (rank, rank, 3, 3, Some(0))
            );
            assert_eq!((env.master_addr.as_str(), env.use_agent_store, env.restart_count), ("127.0.0.1", true, 0));
            assert_eq!(vars.get("TORCHELASTIC_USE_AGENT_STORE"), Some(&"True"), "torch reads exactly str(True)");
            ports.push(env.master_port);
        }
        assert!(ports.iter().all(|&p| p == ports[0]), "one store for all: {ports:?}");
        assert_eq!(summary(&report), "all 3 ranks finished");
    }

    #[test]
    fn the_first_failure_gives_the_exit_code_and_is_named() {
        let report = sh(3, r#"[ "$RANK" = 2 ] && sleep 1; exit "$RANK""#, &[], Duration::from_secs(10)).unwrap();
        assert_eq!(report.code(), 1, "{}", summary(&report));
        let s = summary(&report);
        assert!(s.contains(&format!("rank 1 of 3 (pid {}) failed first: exit code 1", report.ends[1].pid)), "{s}");
        assert!(s.contains("rank 2 of 3") && s.contains("exit code 2"), "{s}");
        assert!(s.contains("rank 0 of 3") && s.contains("finished"), "{s}");
        assert!(!report.ends.iter().any(|e| e.killed), "rank 2 ended on its own within the grace period");
    }

    #[test]
    fn a_rank_still_running_after_the_grace_period_is_killed_with_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        // Rank 1's shell waits on a sleep it started: the kill must reach both.
        let script = r#"if [ "$RANK" = 0 ]; then sleep 0.2; exit 3; fi; sleep 1000 & echo $! > "$1/sleep"; wait"#;
        let start = Instant::now();
        let report = sh(2, script, &[dir.path()], Duration::from_millis(700)).unwrap();
        let took = start.elapsed();
        assert_eq!(report.code(), 3, "{}", summary(&report));
        assert!(report.ends[1].killed && report.ends[1].status.signal() == Some(libc::SIGKILL), "{report:?}");
        assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(20), "took {took:?}");
        let s = summary(&report);
        assert!(s.contains("rank 0 of 2") && s.contains("failed first: exit code 3"), "{s}");
        assert!(s.contains("rank 1 of 2") && s.contains("still running 0.7 s after the first failure: killed"), "{s}");
        let pid = std::fs::read_to_string(dir.path().join("sleep")).unwrap().trim().to_string();
        assert!(gone(&pid), "rank 1's sleep {pid} outlived the launch");
    }

    /// Whether the process `pid` has ended (gone, or a zombie waiting for its new parent).
    fn gone(pid: &str) -> bool {
        let start = Instant::now();
        loop {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => return true,
                Ok(stat) if stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')) => return true,
                Ok(_) if start.elapsed() > Duration::from_secs(5) => return false,
                Ok(_) => std::thread::sleep(POLL),
            }
        }
    }

    /// A launch forwarding what the test sends on the returned channel.
    fn signalled(
        nproc: usize,
        script: &'static str,
        dir: &Path,
    ) -> (mpsc::Sender<i32>, std::thread::JoinHandle<Result<Report>>) {
        let (tx, rx) = mpsc::channel();
        let d = dir.to_path_buf();
        let launch = std::thread::spawn(move || sh_signalled(nproc, script, &[&d], Duration::from_secs(10), Some(&rx)));
        (tx, launch)
    }

    /// The command line passes the launcher process's SIGTERM on (the end-to-end test is
    /// `tests/cli/train_distributed.rs`'s `sigterm_to_the_launcher_stops_every_rank_...`).
    #[test]
    fn a_sigterm_passed_on_by_the_caller_is_forwarded_once_to_every_rank() {
        let dir = tempfile::tempdir().unwrap();
        // Each rank counts the SIGTERMs it gets and leaves on the first with its own code; one
        // that gets none gives up after about 20 s with another, so the test fails, not hangs.
        let script = r#"trap 'echo term >> "$1/$RANK.signals"; exit 7' TERM; touch "$1/$RANK.ready"; i=0; while [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; exit 9"#;
        let (signals, launch) = signalled(2, script, dir.path());
        for rank in 0..2 {
            wait_for(&dir.path().join(format!("{rank}.ready")), "a rank");
        }
        signals.send(libc::SIGTERM).unwrap();
        let report = launch.join().unwrap().unwrap();
        assert_eq!(report.code(), 7, "{}", summary(&report));
        assert_eq!(report.forwarded, vec![libc::SIGTERM]);
        for rank in 0..2 {
            let got = std::fs::read_to_string(dir.path().join(format!("{rank}.signals"))).unwrap();
            assert_eq!(got, "term\n", "rank {rank}");
        }
        assert!(summary(&report).starts_with("SIGTERM forwarded to every rank"), "{}", summary(&report));
    }

    #[test]
    fn ranks_that_stop_as_a_forwarded_signal_asks_are_no_failure() {
        let dir = tempfile::tempdir().unwrap();
        // Rank 0 stops as facekit does (exit 128 + 15); rank 1 has no handler and the signal ends it.
        let script = r#"if [ "$RANK" = 0 ]; then trap 'exit 143' TERM; fi; touch "$1/$RANK.ready"; i=0; while [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; exit 9"#;
        let (signals, launch) = signalled(2, script, dir.path());
        for rank in 0..2 {
            wait_for(&dir.path().join(format!("{rank}.ready")), "a rank");
        }
        signals.send(libc::SIGTERM).unwrap();
        let report = launch.join().unwrap().unwrap();
        assert_eq!(report.code(), 143, "{}", summary(&report));
        assert!(report.first_failure.is_none(), "{report:?}");
        assert_eq!(
            summary(&report),
            "SIGTERM forwarded to every rank\nall 2 ranks stopped as asked by SIGTERM (exit code 143)"
        );
    }

    #[test]
    fn ranks_stopped_by_a_signal_sent_to_one_of_them_are_no_failure_and_give_its_code() {
        // Rank 1 is sent SIGTERM itself and stops with 143; rank 0 then stops because rank 1
        // asked, without a signal of its own (130).
        let script = r#"if [ "$RANK" = 1 ]; then exit 143; fi; sleep 0.3; exit 130"#;
        let report = sh(2, script, &[], Duration::from_secs(10)).unwrap();
        assert_eq!(report.code(), 143, "{}", summary(&report));
        assert!(report.first_failure.is_none(), "{report:?}");
        assert_eq!(summary(&report), "the ranks stopped as a signal sent to one of them asked (exit code 143)");
    }

    #[test]
    fn more_ranks_than_cores_are_refused_on_the_cpu_saying_why() {
        assert!(check_cpu_room(2, 2).is_ok());
        let e = format!("{:#}", check_cpu_room(1024, 2).expect_err("1024 ranks on 2 cores"));
        assert!(
            e.contains("--nproc-per-node 1024 on the CPU, which gives this process 2 core(s)")
                && e.contains("use at most 2"),
            "{e}"
        );
    }

    #[test]
    fn a_failed_ranks_message_in_the_store_is_in_the_summary() {
        let dir = tempfile::tempdir().unwrap();
        // Rank 1 publishes its port, then fails once the test has written its message, as a
        // World's report_failure would have.
        let script = r#"if [ "$RANK" = 1 ]; then echo "$MASTER_PORT" > "$1/port.tmp"; mv "$1/port.tmp" "$1/port"; while [ ! -e "$1/go" ]; do sleep 0.05; done; exit 4; fi"#;
        let d = dir.path().to_path_buf();
        let launch = std::thread::spawn(move || sh(2, script, &[&d], Duration::from_secs(10)));
        wait_for(&dir.path().join("port"), "rank 1's port");
        let port: u16 = std::fs::read_to_string(dir.path().join("port")).unwrap().trim().parse().unwrap();
        let store = Store::connect("127.0.0.1", port, Duration::from_secs(10), &key_prefix(0)).unwrap();
        store.set(&failed_key(1), b"CUDA out of memory").unwrap();
        std::fs::write(dir.path().join("go"), "").unwrap();
        let report = launch.join().unwrap().unwrap();
        assert_eq!(report.code(), 4);
        let s = summary(&report);
        assert!(s.contains("failed first: exit code 4; its message: CUDA out of memory"), "{s}");
    }

    #[test]
    fn a_rank_ended_by_a_signal_is_named_so() {
        let report = sh(1, "ulimit -c 0; kill -SEGV $$", &[], Duration::from_secs(1)).unwrap();
        assert_eq!(report.code(), 128 + libc::SIGSEGV);
        assert!(summary(&report).contains("failed first: crashed (SIGSEGV)"), "{}", summary(&report));
    }

    #[test]
    fn a_program_that_cannot_start_is_an_error_naming_it() {
        let missing = PathBuf::from("/nonexistent/facekit");
        let plan = |nproc, program| Launch { nproc, program, args: &[], grace: Duration::from_secs(1), signals: None };
        let e = launch(&plan(2, missing.as_path())).expect_err("started");
        assert!(format!("{e:#}").contains("cannot start rank 0 of 2: /nonexistent/facekit"), "{e:#}");
        assert!(launch(&plan(0, Path::new("/bin/true"))).is_err(), "no ranks");
    }

    #[test]
    fn exit_codes_follow_the_shells_convention() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 128 + 9);
        assert_eq!(describe_status(ExitStatus::from_raw(libc::SIGTERM)), "killed by SIGTERM");
    }
}
