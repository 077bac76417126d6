//! See `oauth_shim::fuzzing::token_answer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| oauth_shim::fuzzing::token_answer(data));
