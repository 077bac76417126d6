//! Pass-through: every path that is not a legacy OAuth call goes to `upstream.api_base`
//! unchanged (method, path, query, headers, body streamed both ways), minus hop-by-hop headers,
//! with `Host` set to the upstream and `X-Forwarded-For`/`-Proto` appended.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, Uri, Version};
use http_body_util::BodyExt;

use crate::app::{Outcome, Runtime};
use crate::body::{Body, BoxError};
use crate::error::ShimError;
use crate::oauth::HttpClient;

/// The upstream API base split once at config load: scheme, authority, and a path prefix.
#[derive(Debug, Clone)]
pub struct Base {
    scheme: Scheme,
    authority: Authority,
    /// Without a trailing slash; empty for a bare host.
    prefix: String,
}

impl Base {
    pub fn parse(base: &str) -> Option<Self> {
        let uri: Uri = base.parse().ok()?;
        let prefix = uri.path().trim_end_matches('/').to_owned();
        Some(Self { scheme: uri.scheme()?.clone(), authority: uri.authority()?.clone(), prefix })
    }

    /// The upstream URI for an incoming request target.
    pub fn join(&self, incoming: &Uri) -> Option<Uri> {
        let pq = incoming.path_and_query().map_or("/", PathAndQuery::as_str);
        let pq: PathAndQuery = if self.prefix.is_empty() {
            pq.parse().ok()?
        } else {
            format!("{}{}", self.prefix, pq).parse().ok()?
        };
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
            .ok()
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded in either direction.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Remove hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// Forward `req` to the API base and stream the answer back.
pub async fn forward(
    client: &HttpClient,
    rt: &Runtime,
    req: Request<Body>,
    peer: SocketAddr,
    outcome: &mut Outcome,
) -> Response<Body> {
    match send(client, rt, req, peer, outcome).await {
        Ok(resp) => resp,
        Err(e) => {
            outcome.detail = Some(e.code.as_str());
            e.into_response()
        }
    }
}

async fn send(
    client: &HttpClient,
    rt: &Runtime,
    req: Request<Body>,
    peer: SocketAddr,
    outcome: &mut Outcome,
) -> Result<Response<Body>, ShimError> {
    if req.method() == Method::CONNECT {
        // A forward proxy's tunnel, not an API call: never opened to the API host.
        return Err(ShimError::method_not_allowed("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"));
    }
    let (mut parts, body) = req.into_parts();
    parts.uri =
        rt.api_base.join(&parts.uri).ok_or_else(|| ShimError::invalid_request("invalid request target"))?;
    parts.version = Version::HTTP_11;
    let h = &mut parts.headers;
    strip_hop_by_hop(h);
    // hyper's client sets Host from the URI (HTTP/1) or :authority (HTTP/2).
    h.remove(header::HOST);
    append_forwarded(h, peer);

    let upstream = client.request(Request::from_parts(parts, body));
    let resp = match tokio::time::timeout(rt.config.upstream.request_timeout, upstream).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "pass-through upstream request failed");
            return Err(ShimError::upstream_unreachable());
        }
        Err(_) => return Err(ShimError::upstream_timeout()),
    };
    outcome.upstream_status = Some(resp.status());
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, body.map_err(|e| -> BoxError { e.into() }).boxed()))
}

fn append_forwarded(h: &mut HeaderMap, peer: SocketAddr) {
    let ip = peer.ip().to_string();
    let xff = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => format!("{prev}, {ip}"),
        _ => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        h.insert("x-forwarded-for", v);
    }
    let proto = match h.get("x-forwarded-proto").and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => HeaderValue::from_str(&format!("{prev}, http")).ok(),
        _ => Some(HeaderValue::from_static("http")),
    };
    if let Some(v) = proto {
        h.insert("x-forwarded-proto", v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_keeps_path_and_query() {
        let b = Base::parse("https://api.example.com/base/").unwrap();
        let u = b.join(&"/G2W/rest/v2/x?a=1&b=%20".parse().unwrap()).unwrap();
        assert_eq!(u.to_string(), "https://api.example.com/base/G2W/rest/v2/x?a=1&b=%20");
        let b = Base::parse("http://127.0.0.1:9").unwrap();
        assert_eq!(b.join(&"/x".parse().unwrap()).unwrap().to_string(), "http://127.0.0.1:9/x");
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close, x-secret-hop"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::AUTHORIZATION));
    }

    #[test]
    fn appends_forwarded_for() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        append_forwarded(&mut h, "127.0.0.2:5".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.2");
        assert_eq!(h["x-forwarded-proto"], "http");
    }
}
