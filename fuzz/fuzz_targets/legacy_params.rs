//! See `oauth_shim::fuzzing::legacy_params`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| oauth_shim::fuzzing::legacy_params(data));
