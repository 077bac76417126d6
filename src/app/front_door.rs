//! The front door: checks made on every request head before any body is read, and the choice
//! of route. A refusal here is answered by the rescue and closes an HTTP/1 connection.

use http::{Method, Request, StatusCode, Uri};

use crate::error::ShimError;
use crate::snapshot::Snapshot;

/// Which route a request took: the one label of a request in the access line, the metrics
/// and the rescue. The front door chooses it from the head; a request it refuses is
/// [`Route::Rejected`], and a pass-through request carrying a minted token becomes
/// [`Route::Continuity`] in the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/oauth/access_token`: the legacy token route.
    LegacyToken,
    /// `/oauth/authorize`. `page`: the caller asked for HTML (a browser), so its errors are a
    /// page, never a redirect.
    Authorize { page: bool },
    /// A `POST` to the selected provider's token path: a v2 token call.
    V2Token,
    /// Everything else: streamed to the API base.
    PassThrough,
    /// A pass-through call with a minted token (token continuity); counted as pass-through.
    Continuity,
    /// Refused by the front door, before any route.
    Rejected,
}

impl Route {
    /// Its label in the metrics and the access line (`ops::metrics::ROUTES`).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::LegacyToken => "token",
            Self::Authorize { .. } => "authorize",
            Self::V2Token => "v2_token",
            Self::PassThrough | Self::Continuity => "pass",
            Self::Rejected => "rejected",
        }
    }

    /// Its label's index in `ops::metrics::ROUTES`.
    pub(crate) fn index(self) -> usize {
        match self {
            Self::LegacyToken => 0,
            Self::Authorize { .. } => 1,
            Self::PassThrough | Self::Continuity => 2,
            Self::Rejected => 3,
            Self::V2Token => 4,
        }
    }
}

/// Checks made on the request head before any body is read, beyond what hyper already refuses
/// (malformed heads, oversized heads (431), targets over 64 KiB (414), differing duplicate
/// `Content-Length`, a `Transfer-Encoding` whose last coding is not `chunked`). hyper resolves
/// `Content-Length` + `Transfer-Encoding` itself (RFC 9112 §6.3: the length is dropped, the body
/// read as chunked, the connection closed after the answer), so that pair never reaches here:
/// hyper keeps no public trace of the dropped length (its header-case and header-order
/// extensions are crate-private), so it cannot be refused with a 400 here.
pub(super) fn front_door<B>(
    req: &Request<B>,
    snapshot: &Snapshot,
    provider: usize,
) -> Result<Route, ShimError> {
    let server = &snapshot.config.server;
    let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_len > server.max_uri_bytes {
        return Err(ShimError::invalid_request("request URI too long").status(StatusCode::URI_TOO_LONG));
    }
    let path = req.uri().path();
    check_target(req.method(), req.uri(), path)?;
    check_transfer_coding(req.headers())?;
    Ok(match path {
        "/oauth/access_token" => Route::LegacyToken,
        "/oauth/authorize" => Route::Authorize { page: wants_html(req) },
        path if req.method() == Method::POST && path == snapshot.provider(provider).token_path => {
            Route::V2Token
        }
        path if has_dot_segment(path) => {
            return Err(ShimError::invalid_request("the path has a dot segment (. or ..)"));
        }
        _ => Route::PassThrough,
    })
}

/// Whether a request asks for HTML (a browser on the authorize step).
fn wants_html<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// Whether a path has a `.` or `..` segment, so that it could climb out of the API base's
/// prefix (or past a front proxy's path rule) once an upstream resolves it. Segments end at
/// `/` and `\` (some servers read a backslash as a slash), also percent-encoded (`%2F`,
/// `%5C`), or at a `;` (a path parameter); a dot may be encoded too (`%2E`): `/../x`,
/// `/%2e%2E/x`, `/..%2fx`, `/.\x` and `/..;p/x` all count. Nothing is allocated.
fn has_dot_segment(path: &str) -> bool {
    let b = path.as_bytes();
    // Nearly every API path has none of these; a vectorised search rules them out.
    if memchr::memchr3(b'.', b'%', b'\\', b).is_none() {
        return false;
    }
    // Dots in the current segment, or `None` once it holds anything else.
    let mut dots = Some(0u8);
    let mut i = 0;
    while i <= b.len() {
        let (c, width) = match b.get(i) {
            None => (b'/', 1),
            Some(b'%') if i + 2 < b.len() => match (b[i + 1], b[i + 2].to_ascii_uppercase()) {
                (b'2', b'E') => (b'.', 3),
                (b'2', b'F') => (b'/', 3),
                (b'5', b'C') => (b'\\', 3),
                _ => (b'%', 1),
            },
            Some(&c) => (c, 1),
        };
        match c {
            b'/' | b'\\' => {
                if matches!(dots, Some(1 | 2)) {
                    return true;
                }
                dots = Some(0);
            }
            // A path parameter (`/..;x/`) ends the segment's name for servlet containers.
            b';' if matches!(dots, Some(1 | 2)) => return true,
            b'.' => dots = dots.map(|n| n.saturating_add(1)),
            _ => dots = None,
        }
        i += width;
    }
    false
}

/// The request-target forms of RFC 9112 §3.2: origin-form (`/path`) and absolute-form for any
/// method; asterisk-form (`*`) only for `OPTIONS`; authority-form (`host:port`) only for
/// `CONNECT`, which is a forward proxy's tunnel, never opened to the API host (405).
fn check_target(method: &http::Method, uri: &Uri, path: &str) -> Result<(), ShimError> {
    const ALLOW: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
    if *method == http::Method::CONNECT {
        return Err(ShimError::method_not_allowed(ALLOW));
    }
    if uri.scheme().is_none() && uri.authority().is_some() {
        return Err(ShimError::invalid_request("an authority-form target is only valid for CONNECT"));
    }
    if path == "*" && *method != http::Method::OPTIONS {
        return Err(ShimError::invalid_request("an asterisk-form target is only valid for OPTIONS"));
    }
    Ok(())
}

/// `chunked`, once, is the only transfer coding we accept (RFC 9112 §6.1: a coding the server
/// does not understand gets 501). Anything else would reach the upstream still encoded, since
/// `Transfer-Encoding` is hop-by-hop and stripped when forwarding.
fn check_transfer_coding(h: &http::HeaderMap) -> Result<(), ShimError> {
    let mut chunked = 0;
    for value in h.get_all(http::header::TRANSFER_ENCODING) {
        let Ok(value) = value.to_str() else {
            return Err(ShimError::invalid_request("invalid Transfer-Encoding"));
        };
        for coding in value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            if !coding.eq_ignore_ascii_case("chunked") {
                return Err(ShimError::invalid_request("unsupported transfer coding")
                    .status(StatusCode::NOT_IMPLEMENTED));
            }
            chunked += 1;
        }
    }
    if chunked > 1 {
        return Err(ShimError::invalid_request("chunked applied more than once"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_found_in_every_spelling() {
        for path in [
            "/..",
            "/../admin",
            "/a/./b",
            "/a/.",
            "/%2e%2e/admin",
            "/%2E%2e/admin",
            "/.%2e/x",
            "/..%2fadmin",
            "/..%2Fadmin",
            "/..\\admin",
            "/a\\..\\b",
            "/..%5cadmin",
            "/%2e/x",
            "/a/..",
            "/..;/admin",
            "/a/..;x=1/b",
        ] {
            assert!(has_dot_segment(path), "{path}");
        }
        for path in [
            "/",
            "/G2W/rest/v2/organizers/1/webinars",
            "/a/.../b",
            "/a/..b/c",
            "/a/b..",
            "/.well-known/x",
            "/file.json",
            "/%2e%2e%2e",
            "/a%2",
            "/a%",
            "/%zz",
            "//x",
            "*",
            "/a;b/c",
            "/...;x",
        ] {
            assert!(!has_dot_segment(path), "{path}");
        }
    }

    #[test]
    fn every_route_indexes_its_metric_label() {
        let all = [
            Route::LegacyToken,
            Route::Authorize { page: false },
            Route::Authorize { page: true },
            Route::V2Token,
            Route::PassThrough,
            Route::Continuity,
            Route::Rejected,
        ];
        for route in all {
            assert_eq!(crate::ops::metrics::ROUTES[route.index()], route.as_str(), "{route:?}");
        }
        let labels: std::collections::BTreeSet<_> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), crate::ops::metrics::ROUTES.len(), "every label has a route");
    }

    #[test]
    fn the_front_door_chooses_each_route_or_refuses() {
        let mut config = crate::config::Config::default();
        config.provider.api_base = Some("http://127.0.0.1:9".into());
        config.provider.token_url = Some("http://127.0.0.1:9/oauth/v2/token".into());
        config.provider.authorize_url = Some("http://127.0.0.1:9/oauth/v2/authorize".into());
        let snapshot = Snapshot::new(config.validated().expect("a valid config")).expect("a valid config");
        let route = |method: &str, uri: &str, accept: &str| {
            let req = Request::builder()
                .method(method)
                .uri(uri)
                .header(http::header::ACCEPT, accept)
                .body(())
                .unwrap();
            front_door(&req, &snapshot, 0)
        };
        assert_eq!(route("GET", "/oauth/access_token?x=1", "*/*").ok(), Some(Route::LegacyToken));
        assert_eq!(route("GET", "/oauth/authorize", "*/*").ok(), Some(Route::Authorize { page: false }));
        assert_eq!(route("GET", "/oauth/authorize", "text/html").ok(), Some(Route::Authorize { page: true }));
        assert_eq!(route("POST", "/oauth/v2/token", "*/*").ok(), Some(Route::V2Token));
        assert_eq!(route("GET", "/oauth/v2/token", "*/*").ok(), Some(Route::PassThrough));
        assert_eq!(route("GET", "/G2W/rest/v2/organizers", "*/*").ok(), Some(Route::PassThrough));
        for (method, uri) in [("GET", "/a/../admin"), ("CONNECT", "/")] {
            assert!(route(method, uri, "*/*").is_err(), "{method} {uri} is refused");
        }
    }
}
