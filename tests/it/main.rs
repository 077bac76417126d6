//! Integration tests: everything through real sockets on 127.0.0.1:0, one binary so the crate
//! links once.

mod support;

mod authorize;
mod canary;
mod cli;
mod continuity;
mod dev;
mod framing;
mod front_door;
mod fuzz_corpus;
mod hardening;
mod image;
mod layout;
mod observability;
mod operator;
mod ops;
mod passthrough;
mod pool;
mod properties;
mod providers;
mod refresh;
mod replay;
mod shared_state;
mod standin;
mod tls;
mod token;
