//! The image front door: any bytes as a photo (every format, EXIF, bombs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| facekit_fuzz_entry::image(data));
