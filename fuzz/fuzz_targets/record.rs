//! One record as the training loader decodes it (zune-jpeg into the batch buffer, resize).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| facekit_fuzz_entry::record(data));
