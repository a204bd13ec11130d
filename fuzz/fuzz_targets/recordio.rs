//! An MXNet RecordIO `.rec` (insightface's training sets): framing, split records, resync after
//! damage, IRHeader payloads; and the same bytes as an `.idx` and a `property` file.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| facekit_fuzz_entry::recordio(data));
