//! A manifest (JSON) and a label map (TSV), and a pack progress file.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| facekit_fuzz_entry::manifest(data));
