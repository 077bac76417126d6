//! The admin listener's guard, applied to every admin request before its route: the `Host` rule
//! (against DNS rebinding), the refusal of cross-site state changes (against a page in a browser on
//! the same machine), and the admin token. `docs/protocol.md#the-admin-listener` is the contract.

use std::net::{IpAddr, SocketAddr};

use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};

use super::routes::json;
use crate::app::App;
use crate::body::Body;
use crate::config::AdminConfig;

/// Where an admin request arrived: the address the listener is bound to, and the local address
/// of the request's connection (the address the client connected to: with a listener on
/// `0.0.0.0`, the pod IP a kubelet probe or a Prometheus scrape named).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arrival {
    pub(crate) bound: SocketAddr,
    pub(crate) local: SocketAddr,
}

/// Why the guard refused a request: the status and a description of ours.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Refused {
    status: StatusCode,
    why: &'static str,
}

impl Refused {
    fn new(status: StatusCode, why: &'static str) -> Self {
        Self { status, why }
    }

    /// The answer: `{"error": why}`, with `WWW-Authenticate: Bearer` on a 401.
    pub(super) fn response(self) -> Response<Body> {
        let mut resp = json(self.status, &serde_json::json!({ "error": self.why }));
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// `Ok` when the request may go on to its route, else why not.
pub(super) fn check<B>(app: &App, req: &Request<B>, at: Arrival) -> Result<(), Refused> {
    let snapshot = app.snapshot();
    let admin = &snapshot.config.admin;
    let path = req.uri().path();
    // Probes are answered whatever their Host: they reveal nothing, and a probe that stops
    // working takes the pod out of service (kubelet, load balancers behind NAT).
    let probe = matches!(path, "/healthz" | "/readyz");
    let host = crate::app::host::read(req).map_err(|why| Refused::new(StatusCode::BAD_REQUEST, why))?;
    if host.is_some_and(|host| !probe && !host_allowed(host, at, admin)) {
        return Err(Refused::new(
            StatusCode::MISDIRECTED_REQUEST,
            "this Host is not the admin listener's address, localhost, or one of admin.allowed_hosts",
        ));
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        cross_site(req)?;
    }
    if probe
        || path == "/metrics"
        || !matches!(path, "/migration" | "/ui" | "/reload" | "/sessions" | "/sessions/revoke")
    {
        return Ok(());
    }
    match &admin.token {
        Some(token) => match bearer(req.headers().get(AUTHORIZATION)) {
            Some(sent) if token.ct_eq(sent) => Ok(()),
            _ => Err(Refused::new(
                StatusCode::UNAUTHORIZED,
                "this admin route needs Authorization: Bearer <admin token>",
            )),
        },
        None if beyond_loopback(at.bound) && !admin.allow_unauthenticated_remote => Err(Refused::new(
            StatusCode::FORBIDDEN,
            "the admin listener is bound beyond loopback: this route needs an admin token (admin.token_env or admin.token_file)",
        )),
        None => Ok(()),
    }
}

/// Whether the listener answers beyond this machine: bound to anything but a loopback address.
fn beyond_loopback(bound: SocketAddr) -> bool {
    !bound.ip().to_canonical().is_loopback()
}

/// The `Host` names this listener (the address the connection came in on, which is the bound
/// one unless that is `0.0.0.0` or `[::]`), `localhost`, or a name in `admin.allowed_hosts`; port ignored (a port-forward or NAT changes
/// it, and DNS rebinding turns on the name).
fn host_allowed(host: &[u8], at: Arrival, admin: &AdminConfig) -> bool {
    let name = crate::provider::host_name(host);
    if name.eq_ignore_ascii_case(b"localhost")
        || admin.allowed_hosts.iter().any(|h| h.as_bytes().eq_ignore_ascii_case(name))
    {
        return true;
    }
    let literal = name.strip_prefix(b"[").and_then(|n| n.strip_suffix(b"]")).unwrap_or(name);
    std::str::from_utf8(literal)
        .ok()
        .and_then(|l| l.parse::<IpAddr>().ok())
        .is_some_and(|ip| ip.to_canonical() == at.local.ip().to_canonical())
}

/// A state-changing call is refused when a browser says it comes from another site or origin
/// (`Sec-Fetch-Site` other than `same-origin` or `none`; an `Origin` other than this listener as
/// the request's `Host` names it), and when it carries a `Content-Type` other than
/// `application/json`: the form and text types are what a page can send without a CORS
/// preflight, which the admin listener never grants.
fn cross_site<B>(req: &Request<B>) -> Result<(), Refused> {
    let h = req.headers();
    if h.get("sec-fetch-site").is_some_and(|site| !(site == "same-origin" || site == "none")) {
        return Err(Refused::new(StatusCode::FORBIDDEN, "cross-site admin requests are refused"));
    }
    if let Some(origin) = h.get(ORIGIN) {
        let same = h.get(HOST).and_then(|host| {
            let origin = origin.as_bytes().strip_prefix(b"http://")?;
            Some(origin.eq_ignore_ascii_case(host.as_bytes()))
        });
        if same != Some(true) {
            return Err(Refused::new(StatusCode::FORBIDDEN, "cross-origin admin requests are refused"));
        }
    }
    if let Some(ct) = h.get(CONTENT_TYPE) {
        let media = ct.as_bytes().split(|&b| b == b';').next().unwrap_or_default();
        if !media.trim_ascii().eq_ignore_ascii_case(b"application/json") {
            return Err(Refused::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "admin requests carry no body, or a JSON one (Content-Type: application/json)",
            ));
        }
    }
    Ok(())
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive
/// (RFC 9110 §11.1).
fn bearer(value: Option<&HeaderValue>) -> Option<&str> {
    let value = value?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(bound: &str, local: &str) -> Arrival {
        Arrival { bound: bound.parse().unwrap(), local: local.parse().unwrap() }
    }

    #[test]
    fn hosts_the_listener_answers_to() {
        let admin = AdminConfig { allowed_hosts: vec!["admin.internal".into()], ..AdminConfig::default() };
        let pod = at("0.0.0.0:9901", "10.1.2.3:9901");
        for ok in [
            "10.1.2.3:9901",
            "10.1.2.3",
            "localhost:9901",
            "LocalHost.",
            "admin.internal:8000",
            "Admin.Internal",
        ] {
            assert!(host_allowed(ok.as_bytes(), pod, &admin), "{ok}");
        }
        for bad in [
            "evil.example:9901",
            "10.1.2.4:9901",
            "0.0.0.0:9901",
            "127.0.0.1:9901",
            "admin.internal.evil",
            "",
        ] {
            assert!(!host_allowed(bad.as_bytes(), pod, &admin), "{bad}");
        }
        let v6 = at("[::1]:9901", "[::1]:9901");
        assert!(host_allowed(b"[::1]:9901", v6, &admin));
        assert!(!host_allowed(b"[::2]:9901", v6, &admin));
        let mapped = at("[::]:9901", "[::ffff:10.1.2.3]:9901");
        assert!(host_allowed(b"10.1.2.3:9901", mapped, &admin));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(bearer(Some(&v("Bearer t0k"))), Some("t0k"));
        assert_eq!(bearer(Some(&v("bearer t0k"))), Some("t0k"));
        assert_eq!(bearer(Some(&v("BEARER   t0k "))), Some("t0k"));
        assert_eq!(bearer(Some(&v("Basic t0k"))), None);
        assert_eq!(bearer(Some(&v("Bearer"))), None);
        assert_eq!(bearer(Some(&v("Bearer "))), None);
        assert_eq!(bearer(None), None);
    }

    #[test]
    fn loopback_is_loopback_in_every_spelling() {
        for addr in ["127.0.0.1:9901", "127.0.0.2:1", "[::1]:9901", "[::ffff:127.0.0.1]:9901"] {
            assert!(!beyond_loopback(addr.parse().unwrap()), "{addr}");
        }
        for addr in ["0.0.0.0:9901", "[::]:9901", "10.0.0.1:9901"] {
            assert!(beyond_loopback(addr.parse().unwrap()), "{addr}");
        }
    }
}
