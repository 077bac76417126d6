//! `oauth-shim reload`, `report` and `healthcheck`: small clients of the admin listener. The
//! admin address comes from `--admin`, else from the config file's `[admin] listen` (read
//! without resolving client secrets, so an operator's shell needs none of them); the admin
//! token, when the config names one, from the same `token_env` or `token_file`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::body;
use crate::config::{AdminConfig, Config};
use crate::oauth::Secret;

/// Where the admin listener is, and the bearer token it wants, if any.
pub(crate) struct AdminTarget {
    /// Base URL, e.g. `http://127.0.0.1:9901`.
    pub base: String,
    /// The admin token, or why it could not be read (`healthcheck` needs none; `reload` and
    /// `report` stop on the error).
    pub token: Result<Option<Secret>, String>,
}

/// The admin listener's base URL and token: `explicit` (`--admin`) or the config's `[admin]`.
pub(crate) fn admin_target(config: &Path, explicit: Option<&str>) -> Result<AdminTarget, String> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    if config.exists() {
        figment = figment.merge(Toml::file(config));
    }
    let mut admin: AdminConfig = figment
        .merge(crate::config::env_overrides().0)
        .extract_inner("admin")
        .map_err(|e| format!("{}: cannot read [admin]: {}", config.display(), e))?;
    let token = match admin.resolve_token() {
        Ok(()) => Ok(admin.token.take()),
        Err(e) => Err(format!("{}: {}", config.display(), e.0)),
    };
    if let Some(url) = explicit {
        return Ok(AdminTarget { base: url.trim_end_matches('/').to_owned(), token });
    }
    if !admin.enabled {
        return Err(format!("{}: the admin listener is disabled (admin.enabled = false)", config.display()));
    }
    Ok(AdminTarget { base: format!("http://{}", connectable(admin.listen)), token })
}

/// A listen address of `0.0.0.0` or `[::]` is reached on loopback.
fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    }
}

/// One request to the admin listener, with the admin token if there is one; the status and
/// the body.
pub(crate) async fn call(
    method: Method,
    url: &str,
    token: Option<&Secret>,
) -> Result<(StatusCode, Bytes), String> {
    let client: Client<HttpConnector, body::Body> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder().method(method).uri(url);
    if let Some(token) = token {
        let mut value = http::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| "the admin token is not a valid header value".to_owned())?;
        value.set_sensitive(true);
        req = req.header(http::header::AUTHORIZATION, value);
    }
    let req = req.body(body::empty()).map_err(|e| format!("invalid admin URL {url}: {e}"))?;
    let fut = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("cannot reach the admin listener at {url}: {e}"))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the answer from {url}: {e}"))?
            .to_bytes();
        Ok((status, bytes))
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| format!("the admin listener at {url} did not answer within 10s"))?
}
