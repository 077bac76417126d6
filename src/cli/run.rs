//! Running a command that needs the config or a runtime: loading the config (exit 64 on a bad
//! one, before any port is bound), `check-config`, the tokio runtime, and `serve` through boot.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{Config, ConfigError, ValidConfig};

/// EX_USAGE from sysexits.h: the configuration is unusable.
pub(super) const EXIT_CONFIG: u8 = 64;

pub(super) fn check_config(config: Option<PathBuf>) -> ExitCode {
    let path = crate::config::config_path(config.as_deref());
    match load(config) {
        Ok(c) => match toml::to_string_pretty(&c.printable()) {
            Ok(text) => {
                for warning in &c.warnings {
                    eprintln!("oauth-shim: warning: {warning}");
                }
                let certs = match tls_certificates(&c) {
                    Ok(lines) => lines,
                    Err(ConfigError(msg)) => {
                        eprintln!("oauth-shim: {}: {msg}", path.display());
                        return ExitCode::from(EXIT_CONFIG);
                    }
                };
                println!(
                    "# configuration is valid; effective settings (secrets from secret_env/secret_file left out, inline ones shown as [redacted]):"
                );
                for line in certs {
                    println!("# {line}");
                }
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("oauth-shim: cannot print configuration: {e}");
                ExitCode::from(1)
            }
        },
        Err(code) => code,
    }
}

/// Read and check the certificate files of `[server.tls]` and `[admin.tls]` as serving would
/// (readable, the key matches the certificate, not expired); one line per listener with the
/// certificate's subject, serial and expiry.
fn tls_certificates(c: &Config) -> Result<Vec<String>, ConfigError> {
    use crate::tls::{ALPN_ADMIN, ALPN_PROXY, Tls, rfc3339};
    let admin = c.admin.tls.as_ref().filter(|_| c.admin.enabled);
    let mut lines = Vec::new();
    for (section, tls, alpn) in
        [("server.tls", c.server.tls.as_ref(), ALPN_PROXY), ("admin.tls", admin, ALPN_ADMIN)]
    {
        let Some(cfg) = tls else { continue };
        let leaf = Tls::load(cfg, section, alpn)?.leaf;
        lines.push(format!(
            "{section}: {} (subject {}, serial {}, expires {})",
            cfg.cert_file.display(),
            leaf.subject,
            leaf.serial,
            rfc3339(leaf.not_after)
        ));
    }
    Ok(lines)
}

pub(super) fn load(path: Option<PathBuf>) -> Result<ValidConfig, ExitCode> {
    let path = crate::config::config_path(path.as_deref());
    Config::load(&path).map_err(|ConfigError(msg)| {
        eprintln!("oauth-shim: {}: {msg}", path.display());
        ExitCode::from(EXIT_CONFIG)
    })
}

pub(super) fn run(threads: usize, fut: impl std::future::Future<Output = Result<(), String>>) -> ExitCode {
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

pub(super) async fn serve(config: ValidConfig, path: PathBuf) -> Result<(), String> {
    let started = crate::boot::start(config, path).await?;
    crate::boot::run_until_signal(started).await;
    Ok(())
}
