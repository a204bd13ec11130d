//! A whole shard file: header, index and footer validation, every record, and (with `--decode`'s
//! path) every payload through the shard codec.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| facekit_fuzz_entry::shard(data));
