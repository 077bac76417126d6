//! Integration tests: everything through real sockets on 127.0.0.1:0, one binary so the crate
//! links once.

mod support;

mod canary;
mod cli;
mod dev;
mod ops;
mod refresh;
mod standin;
mod token;
