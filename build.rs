//! Link-time settings for the libtorch half.
//!
//! On Linux the linker drops `libtorch_cuda.so` when no symbol of it is referenced directly, and
//! then `tch::Cuda::is_available()` says false on a CUDA machine: keep it with `--no-as-needed`.
//! The rpath lets the binary find libtorch without LD_LIBRARY_PATH on the machine that built it.

fn main() {
    dlib_avx_cfg();
    println!("cargo:rerun-if-env-changed=FACEKIT_TORCH_LIB");
    if std::env::var_os("CARGO_FEATURE_TRAIN").is_none() {
        return;
    }
    amp_shim();
    let Some(lib) = std::env::var_os("FACEKIT_TORCH_LIB") else { return };
    let lib = std::path::PathBuf::from(lib);
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}

/// Compiles `src/train/amp_shim.cpp` (autocast for any device and dtype, see src/train/amp.rs)
/// against the headers of the libtorch that torch-sys links, found through torch-sys's
/// `cargo:libtorch_lib` (DEP_TCH_LIBTORCH_LIB: torch-sys declares `links = "tch"`).
fn amp_shim() {
    println!("cargo:rerun-if-changed=src/train/amp_shim.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .expect("torch-sys did not report its libtorch folder (DEP_TCH_LIBTORCH_LIB); is torch-sys a direct dependency?");
    let include = std::path::Path::new(&lib).join("../include");
    // PyTorch wheels since 2.7 (and libtorch's cxx11 zips) use the new C++ ABI, as torch-sys
    // assumes; a mismatch fails at link time with std::__cxx11 symbols.
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        // libtorch's headers warn in their own code; ours has nothing to hide.
        .flag_if_supported("-Wno-unused-parameter")
        .file("src/train/amp_shim.cpp")
        .compile("facekit_amp");
}

/// Tells the code whether dlib's C++ is compiled with AVX or AVX2 (`.cargo/config.toml`), so that
/// a binary can refuse a CPU without it instead of crashing on an illegal instruction.
fn dlib_avx_cfg() {
    println!("cargo::rustc-check-cfg=cfg(facekit_dlib_avx)");
    println!("cargo::rustc-check-cfg=cfg(facekit_dlib_avx2)");
    let (mut avx, mut avx2) = (false, false);
    for var in ["CXXFLAGS", "CXXFLAGS_x86_64_unknown_linux_gnu", "CXXFLAGS_x86_64-unknown-linux-gnu", "TARGET_CXXFLAGS"] {
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
