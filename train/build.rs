//! Compiles the autocast shim (`src/trainer/amp_shim.cpp`) and the c10d shim
//! (`src/dist/c10d_shim.cpp`), and sets the libtorch link arguments for this crate's tests (see
//! `build/torch_link.rs`).

include!("build/torch_link.rs");

fn main() {
    torch_link_args();
    amp_shim();
    optim_shim();
    c10d_shim();
    cuda_shim();
}

/// A C++ build against the headers of the libtorch that torch-sys links, found through
/// torch-sys's `cargo:libtorch_lib` (DEP_TCH_LIBTORCH_LIB: torch-sys declares `links = "tch"`).
fn torch_cpp() -> (cc::Build, std::path::PathBuf) {
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo:rerun-if-changed=src/ffi_guard.hpp");
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").expect(
        "torch-sys did not report its libtorch folder (DEP_TCH_LIBTORCH_LIB); is torch-sys a direct dependency?",
    );
    let lib = std::path::PathBuf::from(lib);
    let include = lib.join("../include");
    // PyTorch wheels since 2.7 (and libtorch's cxx11 zips) use the new C++ ABI, as torch-sys
    // assumes; a mismatch fails at link time with std::__cxx11 symbols.
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        // libtorch's headers warn in their own code; ours has nothing to hide.
        .flag_if_supported("-Wno-unused-parameter");
    (build, lib)
}

/// Compiles `src/trainer/amp_shim.cpp` (autocast for any device and dtype, see src/trainer/amp.rs).
fn amp_shim() {
    println!("cargo:rerun-if-changed=src/trainer/amp_shim.cpp");
    torch_cpp().0.file("src/trainer/amp_shim.cpp").compile("facekit_amp");
}

/// Compiles `src/trainer/optim_shim.cpp` (libtorch's fused SGD/AdamW and foreach clipping, see
/// src/trainer/optim.rs).
fn optim_shim() {
    println!("cargo:rerun-if-changed=src/trainer/optim_shim.cpp");
    torch_cpp().0.file("src/trainer/optim_shim.cpp").compile("facekit_optim");
}

/// Compiles `src/dist/c10d_shim.cpp` (PyTorch's process groups and DDP Reducer, see src/dist/)
/// with the defines the wheel's CMake package gives its consumers (Caffe2Targets.cmake). The wheel
/// ships no Gloo headers: Debian's `libgloo-dev` provides them in /usr/include, searched by
/// default (its library is never linked: libtorch_cpu exports the `gloo::` symbols). With the
/// `nccl` feature, NCCL and CUDA headers come from the wheel's pinned PyPI packages (see
/// `nccl_includes`).
fn c10d_shim() {
    println!("cargo:rerun-if-changed=src/dist/c10d_shim.cpp");
    let (mut build, lib) = torch_cpp();
    build.define("USE_DISTRIBUTED", None).define("USE_C10D_GLOO", None).define("GLOG_USE_GLOG_EXPORT", None);
    if std::env::var_os("CARGO_FEATURE_NCCL").is_some() {
        build.define("USE_C10D_NCCL", None).define("FACEKIT_NCCL", None);
        // c10's CUDA headers align by std::hardware_destructive_interference_size and GCC warns
        // that it may vary with -mtune; libtorch's own build made the same choice.
        build.flag_if_supported("-Wno-interference-size");
        for dir in nccl_includes(&lib) {
            build.include(dir);
        }
        // c10::cuda::set_device; libtorch_cuda needs c10_cuda itself, but the linker resolves
        // the shim's own references only against libraries named on its command line.
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
    }
    build.file("src/dist/c10d_shim.cpp").compile("facekit_c10d");
}

/// `nvidia/nccl/include` and `nvidia/cu13/include` (with its `cccl` part) beside the wheel's
/// `torch/` folder: the NCCL and CUDA headers `ProcessGroupNCCL.hpp` includes (nccl.h comes with
/// torch's own nvidia-nccl-cu13; the CUDA runtime's `crt/` and CCCL headers from the
/// nvidia-cuda-crt and nvidia-cuda-cccl wheels `scripts/setup.sh` installs at torch's pins).
fn nccl_includes(torch_lib: &std::path::Path) -> Vec<std::path::PathBuf> {
    let nvidia = torch_lib.join("../../nvidia");
    let dirs: Vec<_> = ["nccl/include", "cu13/include", "cu13/include/cccl"]
        .iter()
        .map(|d| nvidia.join(d))
        .filter(|d| d.is_dir())
        .collect();
    if !nvidia.join("nccl/include/nccl.h").is_file() {
        panic!(
            "the `nccl` feature needs nccl.h in {} (the nvidia-nccl-cu13 wheel torch depends on)",
            nvidia.join("nccl/include").display()
        );
    }
    if !nvidia.join("cu13/include/crt/host_config.h").is_file() {
        panic!(
            "the `nccl` feature needs the CUDA crt headers in {} (scripts/setup.sh installs nvidia-cuda-crt)",
            nvidia.join("cu13/include").display()
        );
    }
    dirs
}

/// Compiles `src/trainer/cuda_shim.cpp` (streams, events and the sync debug mode for the device
/// feed, see src/trainer/feed.rs); with the `nccl` feature, against CUDA's headers for the sync
/// debug mode, which lives in c10_cuda (linked by `c10d_shim` in that build).
fn cuda_shim() {
    println!("cargo:rerun-if-changed=src/trainer/cuda_shim.cpp");
    let (mut build, lib) = torch_cpp();
    if std::env::var_os("CARGO_FEATURE_NCCL").is_some() {
        build.define("FACEKIT_NCCL", None).flag_if_supported("-Wno-interference-size");
        for dir in nccl_includes(&lib) {
            build.include(dir);
        }
    }
    build.file("src/trainer/cuda_shim.cpp").compile("facekit_cuda");
}
