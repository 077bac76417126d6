//! See `oauth_shim::fuzzing::h1_vs_hyper`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| oauth_shim::fuzzing::h1_vs_hyper(data));
