//! Step, cosine and warm-up schedules follow their closed forms, and serialise with their state.

use facekit_train::trainer::schedule::{Cosine, DlibPlateau, Schedule, StepSchedule};

fn rates(mut s: Schedule, steps: usize) -> Vec<f64> {
    let mut out = vec![s.lr()];
    for _ in 0..steps {
        out.push(s.observe(1.0).lr);
    }
    out
}

#[test]
fn step_schedule_multiplies_at_each_milestone() {
    let s = Schedule::Step(StepSchedule { base_lr: 0.1, gamma: 0.5, milestones: vec![3, 5], step: 0 });
    let r = rates(s, 7);
    assert_eq!(&r[..3], &[0.1, 0.1, 0.1]);
    assert_eq!(&r[3..5], &[0.05, 0.05]);
    assert_eq!(&r[5..], &[0.025, 0.025, 0.025]);
}

#[test]
fn cosine_goes_from_base_through_midpoint_to_floor_and_stays() {
    let s = Schedule::Cosine(Cosine { base_lr: 1.0, floor: 0.2, steps: 10, step: 0 });
    let r = rates(s, 15);
    assert_eq!(r[0], 1.0);
    // Halfway the cosine term is 0: the mean of base and floor.
    assert!((r[5] - 0.6).abs() < 1e-12, "{}", r[5]);
    assert!(r.windows(2).take(10).all(|w| w[1] < w[0]), "not strictly decreasing: {r:?}");
    assert!(r[10..].iter().all(|&x| (x - 0.2).abs() < 1e-12), "{r:?}");
}

#[test]
fn warmup_ramps_linearly_then_hands_over_unshifted() {
    let inner = Schedule::Cosine(Cosine { base_lr: 0.4, floor: 0.0, steps: 8, step: 0 });
    let r = rates(inner.clone().with_warmup(4), 12);
    for (k, &x) in r[..4].iter().enumerate() {
        assert!((x - 0.4 * (k + 1) as f64 / 4.0).abs() < 1e-15, "step {k}: {x}");
    }
    // After the ramp the cosine starts from its own step 0.
    assert_eq!(&r[4..], &rates(inner, 8)[..]);
}

#[test]
fn warmup_does_not_feed_losses_to_the_plateau_rule() {
    let mut p = DlibPlateau::new(0.1);
    p.threshold = 10;
    let mut s = Schedule::Plateau(p).with_warmup(5);
    for _ in 0..5 {
        s.observe(1.0);
    }
    let Schedule::Warmup(w) = &s else { panic!("not a warm-up") };
    let Schedule::Plateau(p) = w.inner.as_ref() else { panic!("inner not plateau") };
    assert!(p.history.is_empty());
    s.observe(2.0);
    let Schedule::Warmup(w) = &s else { unreachable!() };
    let Schedule::Plateau(p) = w.inner.as_ref() else { unreachable!() };
    assert_eq!(p.history, [2.0]);
}

#[test]
fn schedule_state_round_trips_through_json() {
    let mut s = Schedule::Step(StepSchedule { base_lr: 0.1, gamma: 0.1, milestones: vec![2], step: 0 }).with_warmup(2);
    for _ in 0..3 {
        s.observe(0.5);
    }
    let json = serde_json::to_string(&s).unwrap();
    let mut back: Schedule = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.observe(0.5), s.observe(0.5));
}

#[test]
fn a_resumed_schedule_with_a_horizon_follows_the_new_length_and_a_plateau_keeps_its_history() {
    use facekit_train::trainer::schedule::Poly;
    // As setup builds it: the decay spans the run's length less the warm-up.
    let planned =
        |total: u64| Schedule::Poly(Poly { base_lr: 0.1, power: 1.0, steps: total - 2, step: 0 }).with_warmup(2);
    // A run of 10 steps (2 of warm-up), finished: its rate is 0.
    let mut finished = planned(10);
    for _ in 0..10 {
        finished.observe(1.0);
    }
    assert_eq!(finished.lr(), 0.0);
    // Resumed for 20 steps: the rates of a run planned for 20 from the start, from step 10 on.
    let mut resumed = planned(20).resumed_from(finished);
    let mut reference = planned(20);
    for _ in 0..10 {
        reference.observe(1.0);
    }
    for step in 10..20 {
        assert_eq!(resumed.lr(), reference.lr(), "step {step}");
        assert!(resumed.lr() > 0.0);
        resumed.observe(1.0);
        reference.observe(1.0);
    }
    // The plateau rule has no horizon: the saved state, loss history and all, continues.
    let mut plateau = Schedule::Plateau(DlibPlateau::new(0.1));
    plateau.observe(2.0);
    let resumed = Schedule::Plateau(DlibPlateau::new(0.1)).resumed_from(plateau.clone());
    assert_eq!(resumed, plateau);
    assert!(!resumed.stopped());
    let ended = Schedule::Plateau(DlibPlateau { lr: 1e-6, ..DlibPlateau::new(0.1) });
    assert!(ended.stopped(), "a plateau rate below its minimum has ended the run");
}
