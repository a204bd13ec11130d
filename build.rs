//! Link-time settings of the `facekit` binary (and its tests) when it is built with libtorch
//! (feature `torch`); see `train/build/torch_link.rs`.

include!("train/build/torch_link.rs");

fn main() {
    if std::env::var_os("CARGO_FEATURE_TORCH").is_some() {
        torch_link_args();
    }
}
