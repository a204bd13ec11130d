//! An `.idx` and a `.rec` imported together (the first two bytes: the `.idx` length): the
//! import's plan (each key and each record once, the rest listed) and every planned record.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| facekit_fuzz_entry::rec_import(data));
