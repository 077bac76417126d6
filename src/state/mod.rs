//! State that outlives a request and may leave the process: the `[state]` key set that seals
//! it ([`crypto`]).

pub mod crypto;
