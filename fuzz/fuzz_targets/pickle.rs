//! insightface verification `.bin` pickles.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| facekit_fuzz_entry::pickle(data));
