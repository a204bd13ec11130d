//! Progress bars for long work: items done, rate and ETA, on stderr (hidden when it is not a terminal).

pub use indicatif::ProgressBar;
use indicatif::{ProgressDrawTarget, ProgressStyle};

/// Stops `bar` from drawing (quiet runs, or work too small to be worth a bar).
pub fn hide(bar: &ProgressBar) {
    bar.set_draw_target(ProgressDrawTarget::hidden());
}

/// A bar counting `len` items called `unit` (for example "images").
pub fn items(len: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} [{{wide_bar}}] {{human_pos}}/{{human_len}} {unit} ({{per_sec}}, ETA {{eta}}) {{msg}}"
        ))
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}

/// A bar counting `len` bytes.
pub fn bytes(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {bytes}/{total_bytes} ({bytes_per_sec}, ETA {eta}) {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar
}
