//! Thin entry point: parse the command line and run it. A bad config prints one line and exits
//! 64 (EX_USAGE) before any port is bound.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    oauth_shim::cli::main()
}
