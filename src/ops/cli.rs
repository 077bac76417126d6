//! `oauth-shim reload` and `oauth-shim report`: small clients of the admin listener. The admin
//! address comes from `--admin`, else from the config file's `[admin] listen` (read without
//! resolving secrets, so an operator's shell needs none of them).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::body;
use crate::config::{AdminConfig, Config};

/// The admin listener's base URL, e.g. `http://127.0.0.1:9901`.
pub fn admin_base(config: &Path, explicit: Option<&str>) -> Result<String, String> {
    if let Some(url) = explicit {
        return Ok(url.trim_end_matches('/').to_owned());
    }
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    if config.exists() {
        figment = figment.merge(Toml::file(config));
    }
    let admin: AdminConfig = figment
        .merge(Env::prefixed("OAUTH_SHIM_").ignore(&["config"]).split("__"))
        .extract_inner("admin")
        .map_err(|e| format!("{}: cannot read [admin]: {}", config.display(), e))?;
    if !admin.enabled {
        return Err(format!("{}: the admin listener is disabled (admin.enabled = false)", config.display()));
    }
    Ok(format!("http://{}", connectable(admin.listen)))
}

/// A listen address of `0.0.0.0` or `[::]` is reached on loopback.
fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port()),
        _ => addr,
    }
}

/// One request to the admin listener; the status and the body.
pub async fn call(method: Method, url: &str) -> Result<(StatusCode, Bytes), String> {
    let client: Client<HttpConnector, body::Body> = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::builder()
        .method(method)
        .uri(url)
        .body(body::empty())
        .map_err(|e| format!("invalid admin URL {url}: {e}"))?;
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
