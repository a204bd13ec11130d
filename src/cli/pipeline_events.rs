//! What `facekit pack` and `facekit import rec` print of their pipeline's events
//! (`facekit_pack::pipeline::Event`), and the tests' faults, which only the binary reads from the
//! environment: a stop after some checkpoints and a crash (exit 137, as `kill -9`) after a
//! finishing step.

use facekit_pack::pipeline::{Event, Flow, Observer};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Test-only: ends the process with exit 137, as `kill -9` would, right after this step of a
/// finishing pack or import: `checkpoint`, `manifests` or `rejects`; or, of one replacing a
/// finished dataset, `replacing` (the old dataset hidden, the new one not all in place).
const CRASH_AFTER_ENV: &str = "FACEKIT_TEST_PACK_CRASH_AFTER";

/// The command whose events are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Pack,
    Import,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Pack => "pack",
            Tool::Import => "import",
        }
    }

    /// Test-only: stops the run after this many checkpoints, as a crash would (tests of `--resume`).
    fn stop_after_env(self) -> &'static str {
        match self {
            Tool::Pack => "FACEKIT_PACK_STOP_AFTER_SHARDS",
            Tool::Import => "FACEKIT_IMPORT_STOP_AFTER_SHARDS",
        }
    }
}

/// The observer `tool` runs with: notices on stderr, and the tests' faults when asked for.
pub fn observer(tool: Tool) -> Observer {
    let stop_after: Option<usize> = std::env::var(tool.stop_after_env()).ok().and_then(|v| v.parse().ok());
    let crash_after = std::env::var(CRASH_AFTER_ENV).ok();
    let checkpoints = AtomicUsize::new(0);
    Observer::new(move |event| {
        show(tool, event);
        match *event {
            Event::Checkpoint { .. } => {
                let n = checkpoints.fetch_add(1, Ordering::Relaxed) + 1;
                if stop_after.is_some_and(|most| n >= most) {
                    return Flow::Stop;
                }
            }
            Event::Finished(step) if crash_after.as_deref() == Some(step.name()) => std::process::exit(137),
            _ => {}
        }
        Flow::Continue
    })
}

/// Prints the events a user should see.
fn show(tool: Tool, event: &Event) {
    let name = tool.name();
    match *event {
        Event::RemovedTemps { count, dir } => match tool {
            Tool::Pack => errln!(
                "facekit pack: removed {count} temporary file(s) left in {} by an interrupted run",
                dir.display()
            ),
            Tool::Import => errln!("facekit import: removed {count} temporary file(s) left by an interrupted run"),
        },
        Event::NothingToResume { progress } => {
            let doing = if tool == Tool::Pack { "packing" } else { "importing" };
            errln!("facekit {name}: nothing to resume ({} does not exist); {doing} from the start", progress.display())
        }
        Event::Resuming { consumed, total, shards } => {
            let items = if tool == Tool::Pack { "files" } else { "records" };
            errln!("facekit {name}: resuming after {consumed} of {total} {items} ({shards} shard(s) done)")
        }
        Event::Completing { dataset } => {
            errln!("facekit {name}: {dataset} is complete; finishing the report the earlier run did not write")
        }
        Event::Checkpoint { .. } | Event::Finished(_) | Event::Reading { .. } => {}
    }
}

/// The observer of `facekit merge` and `facekit filter` (`command`): their notices on stderr.
pub fn notices(command: &'static str) -> Observer {
    Observer::new(move |event| {
        match *event {
            Event::RemovedTemps { count, dir } => errln!(
                "facekit {command}: removed {count} temporary file(s) left in {} by an interrupted run",
                dir.display()
            ),
            Event::Reading { dataset, records } => errln!("facekit {command}: copying {dataset} ({records} records)"),
            _ => {}
        }
        Flow::Continue
    })
}
