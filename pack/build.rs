//! Tells the code whether dlib's C++ is compiled with AVX or AVX2 (`.cargo/config.toml`), so that
//! a binary can refuse a CPU without it instead of crashing on an illegal instruction.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(facekit_dlib_avx)");
    println!("cargo::rustc-check-cfg=cfg(facekit_dlib_avx2)");
    let (mut avx, mut avx2) = (false, false);
    for var in ["CXXFLAGS", "CXXFLAGS_x86_64_unknown_linux_gnu", "CXXFLAGS_x86_64-unknown-linux-gnu", "TARGET_CXXFLAGS"]
    {
        println!("cargo:rerun-if-env-changed={var}");
        if let Ok(flags) = std::env::var(var) {
            avx |= flags.split_whitespace().any(|f| f == "-mavx");
            avx2 |= flags.split_whitespace().any(|f| f == "-mavx2");
        }
    }
    if avx {
        println!("cargo:rustc-cfg=facekit_dlib_avx");
    }
    if avx2 {
        println!("cargo:rustc-cfg=facekit_dlib_avx2");
    }
}
