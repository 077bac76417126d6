//! See `oauth_shim::fuzzing::answer_head`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| oauth_shim::fuzzing::answer_head(data));
