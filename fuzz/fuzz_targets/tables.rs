//! `--landmarks` and `--attributes` files.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| facekit_fuzz_entry::tables(data));
