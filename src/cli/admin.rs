//! The admin client commands (`healthcheck`, `reload`, `report`, `sessions`): each calls a
//! running oauth-shim's admin listener and prints the answer.

use std::path::PathBuf;
use std::process::ExitCode;

use super::args::SessionsAction;
use super::client;
use super::run::EXIT_CONFIG;
use crate::{config, ops};

/// EX_UNAVAILABLE from sysexits.h: the admin listener could not be reached.
const EXIT_UNAVAILABLE: u8 = 69;

pub(super) fn healthcheck(config: Option<PathBuf>, admin: Option<String>, ready: bool) -> ExitCode {
    admin_command(config, admin, move |target| async move {
        let path = if ready { "readyz" } else { "healthz" };
        let url = format!("{}/{path}", target.base);
        match client::call(http::Method::GET, &url, None).await {
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

pub(super) fn reload(config: Option<PathBuf>, admin: Option<String>) -> ExitCode {
    admin_command(config, admin, |target| async move {
        let base = &target.base;
        let token = target.token?;
        let (status, body) =
            client::call(http::Method::POST, &format!("{base}/reload"), token.as_ref()).await?;
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
    })
}

pub(super) fn report(
    config: Option<PathBuf>,
    admin: Option<String>,
    json: bool,
    since: Option<String>,
    client_id: Option<String>,
) -> ExitCode {
    if let Some(Err(e)) = since.as_deref().map(ops::migration::parse_days) {
        eprintln!("oauth-shim: --{e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    admin_command(config, admin, move |target| async move {
        let base = &target.base;
        let token = target.token?;
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(since) = &since {
            query.append_pair("since", since);
        }
        if let Some(id) = &client_id {
            query.append_pair("client", id);
        }
        let query = query.finish();
        let url =
            if query.is_empty() { format!("{base}/migration") } else { format!("{base}/migration?{query}") };
        let (status, body) = client::call(http::Method::GET, &url, token.as_ref()).await?;
        if status != http::StatusCode::OK {
            return Err(format!(
                "GET {base}/migration answered {status}: {}",
                String::from_utf8_lossy(&body).trim_end()
            ));
        }
        if json {
            println!("{}", String::from_utf8_lossy(&body).trim_end());
        } else {
            let report: ops::migration::Report = serde_json::from_slice(&body)
                .map_err(|e| format!("GET {base}/migration: unexpected answer: {e}"))?;
            print!("{}", ops::migration::table(&report));
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub(super) fn sessions(action: SessionsAction) -> ExitCode {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    match action {
        SessionsAction::List { client, config, admin, json } => {
            admin_command(config, admin, move |target| async move {
                let base = &target.base;
                let token = target.token?;
                let query = client.as_deref().map(|c| format!("?client={}", enc(c))).unwrap_or_default();
                let (status, body) =
                    client::call(http::Method::GET, &format!("{base}/sessions{query}"), token.as_ref())
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
                let listing: crate::admin::sessions::Listing = serde_json::from_slice(&body)
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
                let (status, body) = client::call(http::Method::POST, &url, token.as_ref()).await?;
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
    F: FnOnce(client::AdminTarget) -> Fut,
    Fut: std::future::Future<Output = Result<ExitCode, String>>,
{
    let path = config::config_path(config.as_deref());
    let base = match client::admin_target(&path, admin.as_deref()) {
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
