// Link-time settings for binaries that use libtorch, shared by the build scripts of the
// facekit-train crate (its tests) and of the facekit binary (`include!`d by both).
//
// On Linux the linker drops `libtorch_cuda.so` when no symbol of it is referenced directly, and
// then `tch::Cuda::is_available()` says false on a CUDA machine: keep it with `--no-as-needed`.
// The rpath lets the binary find libtorch without LD_LIBRARY_PATH on the machine that built it.
// Link arguments of a build script apply only to its own package's binaries and tests, which is
// why both packages emit them.

fn torch_link_args() {
    println!("cargo:rerun-if-env-changed=FACEKIT_TORCH_LIB");
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
