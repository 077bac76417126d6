//! Pass-through: every path that is not a legacy OAuth call goes to the selected provider's API
//! base (`upstream.api_base` for the default) unchanged (method, path, query, headers, body
//! streamed both ways), minus hop-by-hop headers and header names with `_`, with `Host` set to
//! the upstream, `X-Forwarded-For` appended (or replaced) and `X-Forwarded-Proto` set. v2 token
//! calls that need no normalisation go the same way to the provider's token URL.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Version};
use http_body::Body as _;
use http_body_util::BodyExt;

use super::Outcome;
use super::future::Forwarding;
use crate::body::{Body, StallGuard};
use crate::config::ForwardedFor;
use crate::error::ShimError;
use crate::oauth::HttpClient;
use crate::provider::{Base, Provider};
use crate::runtime::Runtime;
use crate::upstream::Cause;

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded in either direction.
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Where `name` is in [`HOP_BY_HOP`] (`Upgrade` last), by one string match rather than nine
/// `HeaderName` comparisons.
fn hop_index(name: &HeaderName) -> Option<usize> {
    Some(match name.as_str() {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "proxy-authenticate" => 3,
        "proxy-authorization" => 4,
        "te" => 5,
        "trailer" => 6,
        "transfer-encoding" => 7,
        "upgrade" => 8,
        _ => return None,
    })
}

/// Remove hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip(headers, false);
}

/// [`strip_hop_by_hop`] for a request, which also loses every header whose name has an `_`
/// (as nginx does by default, `underscores_in_headers off`): `X_Forwarded_For` or
/// `Transfer_Encoding` may mean their dashed namesakes to a server that folds `_` into `-`.
fn strip_request_headers(headers: &mut HeaderMap) {
    strip(headers, true);
}

fn strip(headers: &mut HeaderMap, underscores: bool) {
    // One pass over the headers finds which fixed ones are present, whether `Connection`
    // names anything beyond `keep-alive`/`close` (it rarely does: most responses carry only
    // `Connection: keep-alive`), and whether a name has an `_`. Only what is present is then
    // removed (hashed).
    let mut present = [false; HOP_BY_HOP.len() + 1];
    let mut any = false;
    let mut names_others = false;
    let mut underscored = false;
    for (name, value) in headers.iter() {
        if let Some(i) = hop_index(name) {
            present[i] = true;
            any = true;
            if i == 0 {
                names_others |= connection_options(value)
                    .any(|o| !o.eq_ignore_ascii_case("keep-alive") && !o.eq_ignore_ascii_case("close"));
            }
        } else if underscores {
            underscored |= name.as_str().as_bytes().contains(&b'_');
        }
    }
    if underscored {
        let named: Vec<HeaderName> = headers.keys().filter(|k| k.as_str().contains('_')).cloned().collect();
        for name in &named {
            headers.remove(name);
        }
    }
    if !any {
        return;
    }
    // Headers the `Connection` options name (RFC 9110 §7.6.1), matched against the names
    // present (stored lowercase) instead of parsing each option into a `HeaderName`.
    let mut named: Vec<HeaderName> = Vec::new();
    if names_others {
        for option in headers.get_all(header::CONNECTION).iter().flat_map(connection_options) {
            named.extend(headers.keys().filter(|k| k.as_str().eq_ignore_ascii_case(option)).cloned());
        }
    }
    for (name, _) in HOP_BY_HOP.iter().chain([&header::UPGRADE]).zip(present).filter(|(_, p)| *p) {
        headers.remove(name);
    }
    for name in &named {
        headers.remove(name);
    }
}

/// The comma-separated options of one `Connection` value, trimmed, empty ones skipped.
fn connection_options(value: &HeaderValue) -> impl Iterator<Item = &str> {
    value.to_str().unwrap_or_default().split(',').map(str::trim).filter(|o| !o.is_empty())
}

/// Forward `req` to the provider's API base and stream the answer back.
pub async fn forward(
    provider: &Provider,
    rt: &Runtime,
    req: Request<Body>,
    peer: SocketAddr,
    outcome: &mut Outcome,
) -> Result<Response<Body>, ShimError> {
    let forwarded = start(provider, rt, req, peer).await;
    Ok(forwarded.map_err(|r| r.at(&provider.api_base))?.record(outcome))
}

/// Forward `req` unchanged to the host of the provider's token URL (same path and query) and
/// stream the answer back.
pub async fn forward_to_token_url(
    provider: &Provider,
    rt: &Runtime,
    req: Request<Body>,
    peer: SocketAddr,
    outcome: &mut Outcome,
) -> Result<Response<Body>, ShimError> {
    let forwarded = start_on(&provider.token_pool, &provider.token_base, rt, req, peer).await;
    Ok(forwarded.map_err(|r| r.at(&provider.token_base))?.record(outcome))
}

/// A pass-through answer, and what the request log and metrics note of it.
pub struct Forwarded {
    pub resp: Response<Body>,
    pub upstream_status: Option<http::StatusCode>,
}

impl Forwarded {
    /// Note the outcome and hand on the answer.
    pub fn record(self, outcome: &mut Outcome) -> Response<Body> {
        outcome.upstream_status = self.upstream_status;
        self.resp
    }
}

/// A pass-through that got no answer: the error for the caller, and why the upstream gave none
/// when it was the upstream's doing (boxed: the rare case).
pub struct Refused {
    pub(super) error: ShimError,
    pub(super) cause: Option<Box<Cause>>,
}

impl Refused {
    /// The error, with the failed call to `base` as its cause (which upstream, and why).
    pub fn at(self, base: &Base) -> ShimError {
        match self.cause {
            Some(cause) => {
                self.error.caused_by(UpstreamFailure { upstream: base.host().to_owned(), cause: *cause })
            }
            None => self.error,
        }
    }
}

/// A pass-through call to an upstream that failed: the upstream host (and port unless default)
/// and the classified cause. Safe to log: it carries no request content.
#[derive(Debug)]
pub struct UpstreamFailure {
    pub upstream: String,
    pub cause: Cause,
}

impl std::fmt::Display for UpstreamFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.upstream, self.cause.class, self.cause.detail)
    }
}

impl std::error::Error for UpstreamFailure {}

/// [`forward`], started now: the request is prepared and handed to the pool (which, on a
/// pooled HTTP/1 connection, encodes it) before this returns. The future owns what it needs
/// and holds the upstream call and its timer, not the request.
pub fn start(
    provider: &Provider,
    rt: &Runtime,
    req: Request<Body>,
    peer: SocketAddr,
) -> impl Future<Output = Result<Forwarded, Refused>> + Send + 'static {
    start_on(&provider.pool, &provider.api_base, rt, req, peer)
}

/// [`start`] towards `base` through `client`. Always inlined: pass-through's `start` is the
/// hot caller.
#[inline(always)]
fn start_on(
    client: &HttpClient,
    base: &Base,
    rt: &Runtime,
    req: Request<Body>,
    peer: SocketAddr,
) -> impl Future<Output = Result<Forwarded, Refused>> + Send + 'static {
    let upstream = &rt.config.upstream;
    match prepare(rt, base, req, peer) {
        Ok(req) => Forwarding::Sending {
            sent: tokio::time::timeout(upstream.request_timeout, client.request(req)),
            stall: upstream.body_stall_timeout,
        },
        Err(e) => Forwarding::Failed { error: Some(e) },
    }
}

/// The upstream request for `req`: the base's URI and `Host`, hop-by-hop and underscored
/// headers removed, `X-Forwarded-For`/`-Proto` written. (`CONNECT` never gets here: the front
/// door refuses it.)
fn prepare(
    rt: &Runtime,
    base: &Base,
    req: Request<Body>,
    peer: SocketAddr,
) -> Result<Request<Body>, ShimError> {
    let (mut parts, body) = req.into_parts();
    parts.uri = base.join(&parts.uri).ok_or_else(|| ShimError::invalid_request("invalid request target"))?;
    parts.version = Version::HTTP_11;
    let h = &mut parts.headers;
    strip_request_headers(h);
    // The upstream's Host (HTTP/2 also sends :authority, from the URI: the same host).
    h.insert(header::HOST, base.host_header().clone());
    append_forwarded(h, peer, rt.config.server.x_forwarded_for);
    // A bodiless request (most API calls) skips the guard and its allocation.
    let body = if body.is_end_stream() {
        body
    } else {
        StallGuard::new(body, rt.config.upstream.body_stall_timeout).boxed()
    };
    Ok(Request::from_parts(parts, body))
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// `X-Forwarded-For`: the client's address, appended to what the client sent when the hop in
/// front is trusted ([`ForwardedFor::Append`]), else alone. `X-Forwarded-Proto` is one value:
/// `http` (what oauth-shim was spoken to in), or a trusted hop's single `http`/`https`.
fn append_forwarded(h: &mut HeaderMap, peer: SocketAddr, mode: ForwardedFor) {
    let mut ip = IpText::default();
    let ip = ip.format(peer.ip());
    let trusted = mode == ForwardedFor::Append;
    // One walk over the (few) request headers finds both, usually absent, instead of two
    // hashed lookups.
    let (mut prev_for, mut prev_proto) = (None, None);
    let (mut fors, mut protos) = (0, 0);
    for (name, value) in h.iter() {
        if *name == X_FORWARDED_FOR {
            prev_for = prev_for.or(Some(value));
            fors += 1;
        } else if *name == X_FORWARDED_PROTO {
            prev_proto = prev_proto.or(Some(value));
            protos += 1;
        }
    }
    let xff = match prev_for.and_then(|v| v.to_str().ok()) {
        Some(_) if trusted && fors > 1 => {
            // Several lines are one list (RFC 9110 §5.3).
            let all: Vec<&str> = h.get_all(&X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()).collect();
            HeaderValue::from_str(&format!("{}, {ip}", all.join(", "))).ok()
        }
        Some(prev) if trusted && !prev.trim().is_empty() => {
            HeaderValue::from_str(&format!("{prev}, {ip}")).ok()
        }
        _ => HeaderValue::from_str(ip).ok(),
    };
    let keep_proto = trusted
        && protos == 1
        && prev_proto.is_some_and(|v| {
            let v = v.as_bytes().trim_ascii();
            v.eq_ignore_ascii_case(b"http") || v.eq_ignore_ascii_case(b"https")
        });
    match xff {
        Some(v) => h.insert(X_FORWARDED_FOR.clone(), v),
        None => h.remove(&X_FORWARDED_FOR),
    };
    if !keep_proto {
        h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    }
}

/// An IP address as text without `core::fmt` (IPv4, every pass-through request's case, is
/// written by hand; IPv6 falls back to `Display`).
#[derive(Default)]
struct IpText {
    buf: [u8; 15],
    other: String,
}

impl IpText {
    fn format(&mut self, ip: std::net::IpAddr) -> &str {
        let std::net::IpAddr::V4(v4) = ip else {
            self.other = ip.to_string();
            return &self.other;
        };
        let mut n = 0;
        for (i, octet) in v4.octets().into_iter().enumerate() {
            if i > 0 {
                self.buf[n] = b'.';
                n += 1;
            }
            if octet >= 100 {
                self.buf[n] = b'0' + octet / 100;
                n += 1;
            }
            if octet >= 10 {
                self.buf[n] = b'0' + octet / 10 % 10;
                n += 1;
            }
            self.buf[n] = b'0' + octet % 10;
            n += 1;
        }
        std::str::from_utf8(&self.buf[..n]).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_index_matches_the_list() {
        for (i, name) in HOP_BY_HOP.iter().chain([&header::UPGRADE]).enumerate() {
            assert_eq!(hop_index(name), Some(i), "{name}");
        }
        assert_eq!(hop_index(&header::HOST), None);
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
        append_forwarded(&mut h, "127.0.0.2:5".parse().unwrap(), ForwardedFor::Append);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.2");
        assert_eq!(h["x-forwarded-proto"], "http");
        let mut h = HeaderMap::new();
        append_forwarded(&mut h, "[2001:db8::1]:5".parse().unwrap(), ForwardedFor::Append);
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        append_forwarded(&mut h, "127.0.0.2:5".parse().unwrap(), ForwardedFor::Append);
        assert_eq!(
            h.get_all("x-forwarded-for").iter().collect::<Vec<_>>(),
            ["10.0.0.1, 10.0.0.2, 127.0.0.2"]
        );
    }

    #[test]
    fn forwarded_proto_is_one_value_and_replace_trusts_no_one() {
        let with = |pairs: &[(&'static str, &'static str)], mode| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, HeaderValue::from_static(v));
            }
            append_forwarded(&mut h, "127.0.0.2:5".parse().unwrap(), mode);
            let all =
                |n: &str| h.get_all(n).iter().map(|v| v.to_str().unwrap().to_owned()).collect::<Vec<_>>();
            (all("x-forwarded-for"), all("x-forwarded-proto"))
        };
        let append = ForwardedFor::Append;
        assert_eq!(with(&[("x-forwarded-proto", "https")], append).1, ["https"]);
        assert_eq!(with(&[("x-forwarded-proto", "https, http")], append).1, ["http"]);
        assert_eq!(with(&[("x-forwarded-proto", "gopher")], append).1, ["http"]);
        assert_eq!(
            with(&[("x-forwarded-proto", "https"), ("x-forwarded-proto", "https")], append).1,
            ["http"]
        );
        let replace = ForwardedFor::Replace;
        let (xff, xfp) = with(&[("x-forwarded-for", "10.9.9.9"), ("x-forwarded-proto", "https")], replace);
        assert_eq!((xff, xfp), (vec!["127.0.0.2".to_owned()], vec!["http".to_owned()]));
    }

    #[test]
    fn request_header_names_with_underscores_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert("x_forwarded_for", HeaderValue::from_static("1.2.3.4"));
        h.insert("transfer_encoding", HeaderValue::from_static("chunked"));
        h.insert("x-ok", HeaderValue::from_static("1"));
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        strip_request_headers(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-ok"]);
        // Answers keep theirs.
        let mut h = HeaderMap::new();
        h.insert("x_up", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert!(h.contains_key("x_up"));
    }

    #[test]
    fn formats_ipv4_like_display() {
        for ip in ["0.0.0.0", "1.2.3.4", "10.20.30.40", "100.199.200.255", "255.255.255.255", "127.0.0.1"] {
            assert_eq!(IpText::default().format(ip.parse().unwrap()), ip);
        }
    }
}
