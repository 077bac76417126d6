//! Command line: `serve`, `check-config`, `dev`. Config errors print one line and exit 64
//! before any port is bound.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::{App, Runtime};
use crate::config::{self, Config, ConfigError};
use crate::{server, telemetry};

/// EX_USAGE from sysexits.h: the configuration is unusable.
pub const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "oauth-shim",
    version,
    about = "Keeps legacy GoTo OAuth integrations working against the OAuth v2 API"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Serve {
        /// Config file (default: $OAUTH_SHIM_CONFIG, else config/oauth-shim.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate the config and print the effective settings, secrets redacted.
    CheckConfig {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Start a local v2 stand-in and oauth-shim configured against it, and print curl commands
    /// to try it. Needs no account.
    Dev {
        /// Proxy address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Admin address.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin_listen: std::net::SocketAddr,
        /// Address of the v2 stand-in.
        #[arg(long, default_value = "127.0.0.1:9090")]
        standin_listen: std::net::SocketAddr,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let config = match load(config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            run(config.server.resolved_worker_threads(), serve(config))
        }
        Command::CheckConfig { config } => match load(config) {
            Ok(c) => match toml::to_string_pretty(&c) {
                Ok(text) => {
                    println!("# configuration is valid; effective settings (secrets redacted):\n{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("oauth-shim: cannot print configuration: {e}");
                    ExitCode::from(1)
                }
            },
            Err(code) => code,
        },
        Command::Dev { listen, admin_listen, standin_listen } => {
            let threads = std::thread::available_parallelism().map_or(1, usize::from);
            run(threads, crate::dev::run(listen, admin_listen, standin_listen))
        }
    }
}

fn load(path: Option<PathBuf>) -> Result<Config, ExitCode> {
    let path = config::config_path(path.as_deref());
    Config::load(&path).map_err(|ConfigError(msg)| {
        eprintln!("oauth-shim: {}: {msg}", path.display());
        ExitCode::from(EXIT_CONFIG)
    })
}

fn run(threads: usize, fut: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
    let rt = match runtime(threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("oauth-shim: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("oauth-shim: {msg}");
            ExitCode::from(1)
        }
    }
}

/// One thread: tokio's single-threaded scheduler (no work-stealing bookkeeping, no cross-thread
/// wake-ups; the accept loop and the connections share the thread). More: the multi-threaded one.
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()
    }
}

async fn serve(config: Config) -> Result<(), String> {
    telemetry::init(&config.log);
    let runtime = Runtime::new(config).map_err(|e| e.0)?;
    let app = App::new(runtime);
    let running = server::start(app.clone()).await.map_err(|e| format!("cannot bind: {e}"))?;
    tracing::info!(
        proxy = %running.proxy_addr,
        admin = ?running.admin_addr,
        clients = app.runtime().config.clients.len(),
        "oauth-shim listening"
    );
    server::run_until(running, server::shutdown_signal()).await;
    Ok(())
}
