//! Thin entry point: parse the command line and run it. A bad config prints one line and exits
//! 64 (EX_USAGE) before any port is bound.
#![forbid(unsafe_code)]

/// The allocator (feature `jemalloc`, on by default): BENCHMARKS.md has the figures it won on.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    oauth_shim::cli::main()
}
