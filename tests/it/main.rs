//! Integration tests: everything through real sockets on 127.0.0.1:0, one binary so the crate
//! links once.

mod support;

mod admin;
mod authorize;
mod canary;
mod cli;
mod continuity;
mod dev;
mod docs;
mod framing;
mod front_door;
mod hardening;
mod image;
mod layout;
mod legacy_expiry;
mod minted;
mod observability;
mod one_flight;
mod operator;
mod park;
mod passthrough;
mod pool;
mod properties;
mod providers;
mod refresh;
mod replay;
mod request_target;
mod session_caps;
mod shared_state;
mod standin;
mod tls;
mod token;
mod v2_credentials;
