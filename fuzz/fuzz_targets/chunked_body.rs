//! See `oauth_shim::fuzzing::chunked_body`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| oauth_shim::fuzzing::chunked_body(data));
