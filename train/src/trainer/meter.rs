//! The counters of a running trainer: images and data wait over the whole process and over the
//! current logging window, so that the loop carries one small value instead of loose variables.
//! Time spent validating and scoring `--eval-bin` sets is recorded apart ([`Meter::pause`]):
//! throughput counts training alone, while the estimate of time left counts everything.

use std::time::{Duration, Instant};

/// Throughput and data-wait bookkeeping of one process.
#[derive(Debug, Clone)]
pub(crate) struct Meter {
    started: Instant,
    images: u64,
    wait_s: f64,
    steps: u64,
    paused_s: f64,
    window_images: u64,
    window_wait_s: f64,
    window_steps: u64,
    window_paused_s: f64,
    window_start: Instant,
}

/// The figures of one logging window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Window {
    /// Images per second over the window, time spent validating or evaluating left out.
    pub images_per_second: f64,
    /// Mean time a step waited for its batch, in milliseconds.
    pub data_wait_ms: f64,
}

impl Default for Meter {
    fn default() -> Self {
        Self::new()
    }
}

impl Meter {
    /// Starts counting now.
    pub fn new() -> Self {
        let now = Instant::now();
        Meter {
            started: now,
            images: 0,
            wait_s: 0.0,
            steps: 0,
            paused_s: 0.0,
            window_images: 0,
            window_wait_s: 0.0,
            window_steps: 0,
            window_paused_s: 0.0,
            window_start: now,
        }
    }

    /// Counts one step of `images` images whose batch took `wait_s` seconds to arrive.
    pub fn step(&mut self, images: usize, wait_s: f64) {
        self.images += images as u64;
        self.wait_s += wait_s;
        self.steps += 1;
        self.window_images += images as u64;
        self.window_wait_s += wait_s;
        self.window_steps += 1;
    }

    /// Leaves `spent` (validation, `--eval-bin` scoring) out of the throughput: a window with an
    /// evaluation in it would otherwise report a fraction of the training speed.
    pub(crate) fn pause(&mut self, spent: Duration) {
        self.paused_s += spent.as_secs_f64();
        self.window_paused_s += spent.as_secs_f64();
    }

    /// The figures since the last call (or the start), and a new window from now.
    pub(crate) fn take_window(&mut self) -> Window {
        let secs = (self.window_start.elapsed().as_secs_f64() - self.window_paused_s).max(1e-9);
        let w = Window {
            images_per_second: self.window_images as f64 / secs,
            data_wait_ms: if self.window_steps == 0 {
                0.0
            } else {
                1e3 * self.window_wait_s / self.window_steps as f64
            },
        };
        (self.window_images, self.window_wait_s, self.window_steps, self.window_paused_s, self.window_start) =
            (0, 0.0, 0, 0.0, Instant::now());
        w
    }

    /// Seconds since the start.
    pub fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Mean images per second of this process, data wait included, validation and evaluation not.
    pub fn images_per_second(&self) -> f64 {
        self.images as f64 / (self.elapsed_s() - self.paused_s).max(1e-9)
    }

    /// Seconds the `remaining` steps should take at this process's pace so far, validation and
    /// evaluation included (they will recur); `None` before the first step.
    pub(crate) fn eta_s(&self, remaining: u64) -> Option<f64> {
        (self.steps > 0).then(|| self.elapsed_s() / self.steps as f64 * remaining as f64)
    }

    /// Mean time a step waited for its batch, in milliseconds.
    pub fn mean_data_wait_ms(&self) -> f64 {
        if self.steps == 0 {
            0.0
        } else {
            1e3 * self.wait_s / self.steps as f64
        }
    }
}

/// `seconds` as `1h02m03s`, `2m03s` or `3s`, for log lines read by people.
pub fn duration_text(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec:02}s"),
        (h, m, sec) => format!("{h}h{m:02}m{sec:02}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_holds_only_its_own_steps() {
        let mut m = Meter::new();
        m.step(10, 0.5);
        m.step(10, 0.1);
        let w = m.take_window();
        assert!((w.data_wait_ms - 300.0).abs() < 1e-9);
        m.step(4, 0.0);
        let w = m.take_window();
        assert_eq!(w.data_wait_ms, 0.0);
        assert!((m.mean_data_wait_ms() - 200.0).abs() < 1e-9, "the process mean spans every window");
    }

    #[test]
    fn time_spent_evaluating_is_left_out_of_images_per_second() {
        let mut m = Meter::new();
        m.step(1000, 0.0);
        // An evaluation of 300 ms in the window: measured, then declared.
        let t = Instant::now();
        std::thread::sleep(Duration::from_millis(300));
        m.pause(t.elapsed());
        let with_eval = 1000.0 / m.elapsed_s();
        assert!(
            m.images_per_second() > 20.0 * with_eval,
            "{} images/s vs {with_eval} counting the evaluation",
            m.images_per_second()
        );
        assert!(m.take_window().images_per_second > 20.0 * with_eval);
        // The estimate of time left counts it: evaluations recur.
        let eta = m.eta_s(10).unwrap();
        assert!(eta >= 3.0, "10 more steps at >= 0.3 s each: {eta}");
    }

    #[test]
    fn durations_read_as_hours_minutes_seconds() {
        assert_eq!(duration_text(5.4), "5s");
        assert_eq!(duration_text(125.0), "2m05s");
        assert_eq!(duration_text(3723.0), "1h02m03s");
    }
}
