//! The counters of a running trainer: images and data wait over the whole process and over the
//! current logging window, so that the loop carries one small value instead of loose variables.

use std::time::Instant;

/// Throughput and data-wait bookkeeping of one process.
#[derive(Debug, Clone)]
pub struct Meter {
    started: Instant,
    images: u64,
    wait_s: f64,
    steps: u64,
    window_images: u64,
    window_wait_s: f64,
    window_steps: u64,
    window_start: Instant,
}

/// The figures of one logging window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Images per second over the window.
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
        Meter { started: now, images: 0, wait_s: 0.0, steps: 0, window_images: 0, window_wait_s: 0.0, window_steps: 0, window_start: now }
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

    /// The figures since the last call (or the start), and a new window from now.
    pub fn take_window(&mut self) -> Window {
        let secs = self.window_start.elapsed().as_secs_f64().max(1e-9);
        let w = Window {
            images_per_second: self.window_images as f64 / secs,
            data_wait_ms: if self.window_steps == 0 { 0.0 } else { 1e3 * self.window_wait_s / self.window_steps as f64 },
        };
        (self.window_images, self.window_wait_s, self.window_steps, self.window_start) = (0, 0.0, 0, Instant::now());
        w
    }

    /// Seconds since the start.
    pub fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Mean images per second of this process, data wait included.
    pub fn images_per_second(&self) -> f64 {
        self.images as f64 / self.elapsed_s().max(1e-9)
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
}
