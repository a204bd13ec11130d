//! LFW-style pairs lists.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| facekit_fuzz_entry::pairs(data));
