//! The command line's shape: subcommands and their flags (clap).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "oauth-shim",
    version,
    about = "Keeps legacy GoTo OAuth integrations working against the OAuth v2 API"
)]
pub(super) struct Cli {
    #[command(subcommand)]
    pub(super) command: Command,
}

#[derive(Debug, Subcommand)]
pub(super) enum Command {
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
    #[cfg(feature = "devtools")]
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
        /// Admin listener URL, e.g. http://127.0.0.1:9901 (default: from the config's `[admin]`).
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
        /// The window: whole days up to today, such as 30d (default: `[migration] window`).
        #[arg(long)]
        since: Option<String>,
        /// Only this client id.
        #[arg(long)]
        client: Option<String>,
    },
    /// List or revoke token-continuity sessions of a running oauth-shim (never shows a token).
    Sessions {
        #[command(subcommand)]
        action: SessionsAction,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum SessionsAction {
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
