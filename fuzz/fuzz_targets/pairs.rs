//! LFW-style pairs lists.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| facekit::fuzz_entry::pairs(data));
