//! The headers of a pass-through call: hop-by-hop headers (and those `Connection` names) never
//! cross in either direction, request header names with `_` are dropped, and
//! `X-Forwarded-For`/`-Proto` are written for the upstream.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::ForwardedFor;

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
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip(headers, false);
}

/// [`strip_hop_by_hop`] for a request, which also loses every header whose name has an `_`
/// (as nginx does by default, `underscores_in_headers off`): `X_Forwarded_For` or
/// `Transfer_Encoding` may mean their dashed namesakes to a server that folds `_` into `-`.
pub(super) fn strip_request_headers(headers: &mut HeaderMap) {
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

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// `X-Forwarded-For`: the client's address, appended to what the client sent when the hop in
/// front is trusted ([`ForwardedFor::Append`]), else alone. `X-Forwarded-Proto` is one value:
/// `proto` (what oauth-shim was spoken to in: `https` with `[server.tls]`, else `http`), or a
/// trusted hop's single `http`/`https`.
pub(super) fn append_forwarded(h: &mut HeaderMap, peer: SocketAddr, mode: ForwardedFor, proto: &'static str) {
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
        h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
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
        append_forwarded(&mut h, "127.0.0.2:5".parse().unwrap(), ForwardedFor::Append, "http");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.2");
        assert_eq!(h["x-forwarded-proto"], "http");
        let mut h = HeaderMap::new();
        append_forwarded(&mut h, "[2001:db8::1]:5".parse().unwrap(), ForwardedFor::Append, "http");
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        append_forwarded(&mut h, "127.0.0.2:5".parse().unwrap(), ForwardedFor::Append, "http");
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
            append_forwarded(&mut h, "127.0.0.2:5".parse().unwrap(), mode, "http");
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
