//! Compiles the autocast shim (`src/trainer/amp_shim.cpp`) and sets the libtorch link arguments
//! for this crate's tests (see `build/torch_link.rs`).

include!("build/torch_link.rs");

fn main() {
    torch_link_args();
    amp_shim();
}

/// Compiles `src/trainer/amp_shim.cpp` (autocast for any device and dtype, see src/trainer/amp.rs)
/// against the headers of the libtorch that torch-sys links, found through torch-sys's
/// `cargo:libtorch_lib` (DEP_TCH_LIBTORCH_LIB: torch-sys declares `links = "tch"`).
fn amp_shim() {
    println!("cargo:rerun-if-changed=src/trainer/amp_shim.cpp");
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
        .file("src/trainer/amp_shim.cpp")
        .compile("facekit_amp");
}
