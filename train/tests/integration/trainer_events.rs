//! The trainer prints nothing: what a user should see reaches the caller's observer as events, in
//! the order it happens (setup notes, the loop's start, every step, the progress at each
//! `--log-every` point, the end), and a resumed run says where it continues.

use super::step_host_reads::config;
use facekit_testkit::sets::SMALL_RAW_LFW;
use facekit_train::events::{Event, Observer};
use facekit_train::trainer::{Outcome, SingleProcess, TrainConfig, Trainer};
use std::sync::{Arc, Mutex};

/// An observer that keeps a short description of every event, and the events it kept.
fn recorder() -> (Observer, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let keep = seen.clone();
    let observer = Observer::new(move |e| {
        let line = match *e {
            Event::Threads { workers, threads } => format!("threads {workers} {threads}"),
            Event::Device { device, .. } => format!("device {device}"),
            Event::Batch { per_rank, ranks, accumulate, global } => {
                format!("batch {per_rank} {ranks} {accumulate} {global}")
            }
            Event::Resuming { step, .. } => format!("resuming {step}"),
            Event::ResumingWith { changed } => format!("resuming with {}", changed.join(", ")),
            Event::Begin { step, max_steps } => format!("begin {step} {max_steps:?}"),
            Event::Stepped { step } => format!("stepped {step}"),
            Event::Progress { step, max_steps, loss, eta_seconds, .. } => {
                assert!(loss.is_finite() && eta_seconds.is_some_and(|s| s >= 0.0), "{e:?}");
                format!("progress {step} {max_steps:?}")
            }
            Event::Ended => "ended".into(),
            other => format!("other {other:?}"),
        };
        keep.lock().unwrap().push(line);
    });
    (observer, seen)
}

#[test]
fn a_run_tells_its_observer_each_step_its_progress_and_its_end_and_a_resume_where_it_continues() {
    let _turn = facekit_testkit::rng_turn();
    let t = tempfile::tempdir().unwrap();
    SMALL_RAW_LFW.write(t.path());
    let (observer, seen) = recorder();
    let cfg = config(t.path(), "events", 4, 2);
    let outcome = Trainer::new(cfg.clone(), vec![], Default::default(), Box::new(SingleProcess), observer)
        .unwrap()
        .run()
        .unwrap();
    assert!(matches!(outcome, Outcome::Finished(_)), "{outcome:?}");
    let got = std::mem::take(&mut *seen.lock().unwrap());
    let want = [
        "threads 1 1",
        "device cpu",
        "batch 8 1 1 8",
        "begin 0 Some(4)",
        "stepped 1",
        "stepped 2",
        "progress 2 Some(4)",
        "stepped 3",
        "stepped 4",
        "progress 4 Some(4)",
        "ended",
    ];
    assert_eq!(got, want);

    let (observer, seen) = recorder();
    let resumed =
        TrainConfig { resume: Some("events".into()), max_steps: Some(6), given: vec!["max_steps".into()], ..cfg };
    let outcome =
        Trainer::new(resumed, vec![], Default::default(), Box::new(SingleProcess), observer).unwrap().run().unwrap();
    assert!(matches!(outcome, Outcome::Finished(ref s) if s.steps == 6), "{outcome:?}");
    let got = seen.lock().unwrap().clone();
    assert!(got.iter().any(|l| l.starts_with("resuming with ") && l.contains("--max-steps 6 (was 4)")), "{got:?}");
    let from = got.iter().position(|l| l == "resuming 4").expect("the resume says where it continues");
    let begin = got.iter().position(|l| l == "begin 4 Some(6)").expect("the loop starts at step 4 of 6");
    assert!(from < begin, "{got:?}");
    assert_eq!(got[begin + 1..], ["stepped 5", "stepped 6", "progress 6 Some(6)", "ended"]);
}
