//! A provider's upstream base URL (its API base, or its token URL's origin), split once at
//! config load: what a pass-through request's target and `Host` are built from.

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Uri};

use crate::upstream::host_header;

/// The upstream API base split once at config load: scheme, authority, and a path prefix.
#[derive(Debug, Clone)]
pub struct Base {
    scheme: Scheme,
    authority: Authority,
    /// Without a trailing slash; empty for a bare host.
    prefix: String,
    /// The `Host` header for the upstream, computed once (host, and the port unless default). It
    /// replaces the client's `Host`; the pool would add the same value if none were set.
    host: HeaderValue,
}

impl Base {
    pub fn parse(base: &str) -> Option<Self> {
        let uri: Uri = base.parse().ok()?;
        let prefix = uri.path().trim_end_matches('/').to_owned();
        let authority = uri.authority()?.clone();
        let scheme = uri.scheme()?.clone();
        let host = host_header(&scheme, &authority);
        Some(Self { scheme, authority, prefix, host })
    }

    /// The `Host` header for the upstream.
    pub fn host_header(&self) -> &HeaderValue {
        &self.host
    }

    /// The upstream host (and port unless default), as logs name it.
    pub fn host(&self) -> &str {
        self.host.to_str().unwrap_or("-")
    }

    /// The upstream URI for an incoming request target.
    pub fn join(&self, incoming: &Uri) -> Option<Uri> {
        let pq = match incoming.path_and_query() {
            // The common case: no prefix, so the request target is reused as it is (a cheap
            // clone of already-validated bytes, not a re-parse). `OPTIONS *` (the only
            // asterisk-form the front door lets through) stays `*`.
            Some(pq) if self.prefix.is_empty() || pq.as_str() == "*" => pq.clone(),
            Some(pq) => format!("{}{}", self.prefix, pq).parse().ok()?,
            None => PathAndQuery::from_static("/"),
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(pq);
        Uri::from_parts(parts).ok()
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
    fn host_header_drops_only_the_default_port() {
        let host = |base: &str| Base::parse(base).unwrap().host().to_owned();
        assert_eq!(host("https://api.example.com/base/"), "api.example.com");
        assert_eq!(host("https://api.example.com:443"), "api.example.com");
        assert_eq!(host("https://api.example.com:8443"), "api.example.com:8443");
        assert_eq!(host("http://127.0.0.1:80"), "127.0.0.1");
        assert_eq!(host("http://127.0.0.1:18081"), "127.0.0.1:18081");
        assert_eq!(host("http://[::1]:9"), "[::1]:9");
    }
}
