//! Integration tests: everything through real sockets on 127.0.0.1:0, one binary so the crate
//! links once.

mod support;

mod admin;
mod authorize;
mod canary;
mod cli;
mod cluster;
mod continuity;
mod dev;
mod docs;
mod framing;
mod front_door;
mod hardening;
mod image;
mod layout;
mod legacy_expiry;
mod migration;
mod migration_page;
mod minted;
mod monitoring;
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
mod sentinel;
mod session_caps;
mod shared_state;
mod standin;
mod state_outage;
mod tls;
mod tls_clients;
mod tls_listener;
mod token;
mod v2_credentials;
