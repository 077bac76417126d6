//! Command line: `serve`, `check-config`, `dev`, and the admin clients `reload`, `report` and
//! `sessions`.
//! Config errors print one line and exit 64 before any port is bound.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::App;
use crate::config::{self, Config, ConfigError};
use crate::runtime::Runtime;
use crate::{ops, server, telemetry};

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
        /// Where dev writes the config it runs on (edit it: changes are picked up live).
        #[arg(long)]
        config_file: Option<PathBuf>,
    },
    /// Ask a running oauth-shim to reload its config file (like SIGHUP). Exit 0 when the new
    /// config is in force, 1 when it was refused (the old one keeps serving), 69 when the admin
    /// listener cannot be reached.
    Reload {
        /// Config file, used to find the admin listener (default as for `serve`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Admin listener URL, e.g. http://127.0.0.1:9901 (default: from the config's [admin]).
        #[arg(long)]
        admin: Option<String>,
    },
    /// Probe a running oauth-shim's admin listener (`GET /healthz`, or `/readyz` with
    /// `--ready`): exit 0 when it answers 200, 1 otherwise. For a Docker `HEALTHCHECK` or a
    /// Kubernetes exec probe in an image without a shell or curl.
    Healthcheck {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        admin: Option<String>,
        /// Ask `/readyz` (ready to take traffic) instead of `/healthz` (process up).
        #[arg(long)]
        ready: bool,
    },
    /// Print the migration report of a running oauth-shim: per client, which legacy features it
    /// still uses, how often, and when last.
    Report {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        admin: Option<String>,
        /// Print the JSON from GET /migration instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List or revoke token-continuity sessions of a running oauth-shim (never shows a token).
    Sessions {
        #[command(subcommand)]
        action: SessionsAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionsAction {
    /// List live sessions: id, client, created, expiry, v2 token expiry.
    List {
        /// Only this client's sessions.
        #[arg(long)]
        client: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        admin: Option<String>,
        /// Print the JSON from GET /sessions instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a client's sessions (all, or one with --id); their minted tokens stop working at
    /// once.
    Revoke {
        #[arg(long)]
        client: String,
        /// One session id, as `sessions list` shows it.
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        admin: Option<String>,
    },
}

/// EX_UNAVAILABLE from sysexits.h: the admin listener could not be reached.
pub const EXIT_UNAVAILABLE: u8 = 69;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let path = config::config_path(config.as_deref());
            let config = match load(Some(path.clone())) {
                Ok(c) => c,
                Err(code) => return code,
            };
            run(config.server.resolved_worker_threads(), serve(config, path))
        }
        Command::CheckConfig { config } => match load(config) {
            Ok(c) => match toml::to_string_pretty(&c.printable()) {
                Ok(text) => {
                    for warning in &c.warnings {
                        eprintln!("oauth-shim: warning: {warning}");
                    }
                    println!(
                        "# configuration is valid; effective settings (secrets from secret_env/secret_file left out, inline ones shown as [redacted]):\n{text}"
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("oauth-shim: cannot print configuration: {e}");
                    ExitCode::from(1)
                }
            },
            Err(code) => code,
        },
        Command::Dev { listen, admin_listen, standin_listen, config_file } => run(
            std::thread::available_parallelism().map_or(1, usize::from),
            crate::dev::run(listen, admin_listen, standin_listen, config_file),
        ),
        Command::Healthcheck { config, admin, ready } => {
            admin_command(config, admin, move |target| async move {
                let path = if ready { "readyz" } else { "healthz" };
                let url = format!("{}/{path}", target.base);
                match ops::cli::call(http::Method::GET, &url, None).await {
                    Ok((http::StatusCode::OK, _)) => Ok(ExitCode::SUCCESS),
                    Ok((status, _)) => {
                        eprintln!("oauth-shim: GET {url} answered {status}");
                        Ok(ExitCode::from(1))
                    }
                    Err(msg) => {
                        eprintln!("oauth-shim: {msg}");
                        Ok(ExitCode::from(1))
                    }
                }
            })
        }
        Command::Reload { config, admin } => admin_command(config, admin, |target| async move {
            let base = &target.base;
            let token = target.token?;
            let (status, body) =
                ops::cli::call(http::Method::POST, &format!("{base}/reload"), token.as_ref()).await?;
            let text = String::from_utf8_lossy(&body);
            match status {
                http::StatusCode::OK => {
                    println!("{}", text.trim_end());
                    Ok(ExitCode::SUCCESS)
                }
                _ => {
                    eprintln!("oauth-shim: reload refused ({status}); the previous config stays in force");
                    eprintln!("{}", text.trim_end());
                    Ok(ExitCode::from(1))
                }
            }
        }),
        Command::Report { config, admin, json } => admin_command(config, admin, move |target| async move {
            let base = &target.base;
            let token = target.token?;
            let (status, body) =
                ops::cli::call(http::Method::GET, &format!("{base}/migration"), token.as_ref()).await?;
            if status != http::StatusCode::OK {
                return Err(format!("GET {base}/migration answered {status}"));
            }
            if json {
                println!("{}", String::from_utf8_lossy(&body).trim_end());
            } else {
                let report: ops::migration::Report = serde_json::from_slice(&body)
                    .map_err(|e| format!("GET {base}/migration: unexpected answer: {e}"))?;
                print!("{}", ops::migration::table(&report));
            }
            Ok(ExitCode::SUCCESS)
        }),
        Command::Sessions { action } => sessions(action),
    }
}

fn sessions(action: SessionsAction) -> ExitCode {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    match action {
        SessionsAction::List { client, config, admin, json } => {
            admin_command(config, admin, move |target| async move {
                let base = &target.base;
                let token = target.token?;
                let query = client.as_deref().map(|c| format!("?client={}", enc(c))).unwrap_or_default();
                let (status, body) =
                    ops::cli::call(http::Method::GET, &format!("{base}/sessions{query}"), token.as_ref())
                        .await?;
                if status != http::StatusCode::OK {
                    eprintln!("oauth-shim: GET {base}/sessions answered {status}");
                    eprintln!("{}", String::from_utf8_lossy(&body).trim_end());
                    return Ok(ExitCode::from(1));
                }
                if json {
                    println!("{}", String::from_utf8_lossy(&body).trim_end());
                    return Ok(ExitCode::SUCCESS);
                }
                let listing: ops::sessions::Listing = serde_json::from_slice(&body)
                    .map_err(|e| format!("GET {base}/sessions: unexpected answer: {e}"))?;
                println!(
                    "{:<32}  {:<20}  {:<20}  {:<20}  V2 TOKEN EXPIRES",
                    "SESSION", "CLIENT", "CREATED", "EXPIRES"
                );
                for s in &listing.sessions {
                    let client: String =
                        s.client.chars().map(|c| if c.is_control() { '?' } else { c }).collect();
                    println!(
                        "{:<32}  {:<20}  {:<20}  {:<20}  {}",
                        s.id,
                        client,
                        s.created_at,
                        s.expires_at,
                        s.v2_expires_at.as_deref().unwrap_or("-")
                    );
                }
                Ok(ExitCode::SUCCESS)
            })
        }
        SessionsAction::Revoke { client, id, config, admin } => {
            admin_command(config, admin, move |target| async move {
                let base = &target.base;
                let token = target.token?;
                let mut url = format!("{base}/sessions/revoke?client={}", enc(&client));
                if let Some(id) = &id {
                    url.push_str(&format!("&id={}", enc(id)));
                }
                let (status, body) = ops::cli::call(http::Method::POST, &url, token.as_ref()).await?;
                let text = String::from_utf8_lossy(&body);
                if status != http::StatusCode::OK {
                    eprintln!("oauth-shim: revoke refused ({status})");
                    eprintln!("{}", text.trim_end());
                    return Ok(ExitCode::from(1));
                }
                println!("{}", text.trim_end());
                Ok(ExitCode::SUCCESS)
            })
        }
    }
}

/// Run an admin client command against the admin listener named by `--admin` or the config.
fn admin_command<F, Fut>(config: Option<PathBuf>, admin: Option<String>, f: F) -> ExitCode
where
    F: FnOnce(ops::cli::AdminTarget) -> Fut,
    Fut: std::future::Future<Output = Result<ExitCode, String>>,
{
    let path = config::config_path(config.as_deref());
    let base = match ops::cli::admin_target(&path, admin.as_deref()) {
        Ok(b) => b,
        Err(msg) => {
            eprintln!("oauth-shim: {msg}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("oauth-shim: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(f(base)) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("oauth-shim: {msg}");
            ExitCode::from(EXIT_UNAVAILABLE)
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

async fn serve(config: Config, path: PathBuf) -> Result<(), String> {
    telemetry::init(&config.log);
    for warning in &config.warnings {
        tracing::warn!(config = %path.display(), "{warning}");
    }
    let runtime = Runtime::new(config).map_err(|e| e.0)?;
    let app = App::new(runtime);
    app.shared().ops.reload.set_source(path);
    ops::reload::spawn_sighup(app.clone());
    ops::reload::spawn_watcher(app.clone());
    let running = server::start(app.clone()).await.map_err(|e| e.to_string())?;
    let admin = running.admin_addr.map_or_else(|| "disabled".to_owned(), |a| a.to_string());
    tracing::info!(
        proxy = %running.proxy_addr,
        admin = %admin,
        clients = app.runtime().config.clients.len(),
        version = env!("CARGO_PKG_VERSION"),
        "oauth-shim listening"
    );
    server::run_until(running, server::shutdown_signal()).await;
    Ok(())
}
