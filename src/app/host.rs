//! The request's host, read once for the whole request path (provider selection, the admin
//! listener's `Host` rule): one `Host` header at most, well formed, required on HTTP/1.1, and
//! equal to the target's authority when the request carries both (RFC 9112 §3.2, RFC 9113
//! §8.3.1). A request that a front proxy routing by `Host` could read differently is refused
//! (`docs/protocol.md#the-requests-host`).

use http::header::HOST;
use http::{Request, Version};

/// The host a request names: the target's authority (HTTP/2's `:authority`, or an absolute-form
/// target's) when it has one, else its `Host` header; `None` when neither is present (HTTP/1.0,
/// or HTTP/2 without `:authority`). `Err` says why the request is malformed.
///
/// A walk to the `Host` header and a byte scan of its value; nothing is allocated, and the
/// value is not turned into a `str` (a well-formed host is ASCII; its readers compare bytes).
pub(crate) fn read<B>(req: &Request<B>) -> Result<Option<&[u8]>, &'static str> {
    let headers = req.headers();
    // Without a repeated header name in the map (the count of values equals the count of
    // names, both kept by the map), one `Host` at most: the first one found. Names are compared
    // in the map's order (an enum compare for a standard header), which is the order they
    // came in; clients send `Host` first, so this is cheaper than a hashed lookup.
    let header = if headers.len() == headers.keys_len() {
        headers.iter().find_map(|(name, value)| (name == HOST).then_some(value))
    } else {
        let mut values = headers.get_all(HOST).iter();
        let first = values.next();
        if values.next().is_some() {
            return Err("more than one Host header");
        }
        first
    };
    let header = match header {
        Some(v) => Some(Some(v.as_bytes()).filter(|h| well_formed(h)).ok_or("invalid Host")?),
        None if req.version() == Version::HTTP_11 => return Err("missing Host header"),
        None => None,
    };
    // An authority-form target (`CONNECT host:port`) names a tunnel's end, not this host; the
    // front door refuses it.
    match req.uri().authority().filter(|_| req.uri().scheme().is_some()).map(|a| a.as_str().as_bytes()) {
        None => Ok(header),
        Some(authority) if !well_formed(authority) => Err("invalid authority in the request target"),
        Some(authority) => match header {
            Some(h) if !h.eq_ignore_ascii_case(authority) => {
                Err("Host does not match the authority of the request target")
            }
            _ => Ok(Some(authority)),
        },
    }
}

/// `host [":" port]` as oauth-shim accepts it: a host name of letters, digits, `-`, `.`, `_`
/// and `~` (possibly empty, as RFC 9112 allows), or an IP literal in brackets (hex digits, `:`
/// and `.`); a port, when its `:` is there, of 1 to 5 digits up to 65535. No user info, no
/// percent-encoding, no spaces, nothing after the port. Stricter than RFC 3986's `reg-name`
/// (which also allows `!$&'()*+,;=` and `%XX`): no client sends those in a host, and a front
/// proxy may read them differently.
pub(crate) fn well_formed(b: &[u8]) -> bool {
    let port_at = if b.first() == Some(&b'[') {
        let Some(end) = b.iter().position(|&c| c == b']') else { return false };
        if end < 3 || !b[1..end].iter().all(|&c| c.is_ascii_hexdigit() || c == b':' || c == b'.') {
            return false;
        }
        end + 1
    } else {
        b.iter().position(|&c| !NAME[usize::from(c)]).unwrap_or(b.len())
    };
    match &b[port_at..] {
        [] => true,
        [b':', port @ ..] => {
            (1..=5).contains(&port.len())
                && port.iter().all(u8::is_ascii_digit)
                && (port.len() < 5 || port <= &b"65535"[..])
        }
        _ => false,
    }
}

/// The bytes of a host name: letters, digits, `-`, `.`, `_`, `~`.
static NAME: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
        c += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Version, uri: &str, hosts: &[&[u8]]) -> Request<()> {
        let mut b = Request::builder().version(version).uri(uri);
        for h in hosts {
            b = b.header("host", http::HeaderValue::from_bytes(h).unwrap());
        }
        b.body(()).unwrap()
    }

    #[test]
    fn one_reading_of_the_host() {
        const HTTP_10: Version = Version::HTTP_10;
        const HTTP_11: Version = Version::HTTP_11;
        const HTTP_2: Version = Version::HTTP_2;
        let ok = |v, uri, hosts: &[&[u8]]| {
            read(&req(v, uri, hosts)).map(|h| h.map(|h| String::from_utf8(h.to_vec()).unwrap()))
        };
        assert_eq!(ok(HTTP_11, "/x", &[b"a.example:8080"]), Ok(Some("a.example:8080".into())));
        assert_eq!(ok(HTTP_11, "/x", &[b""]), Ok(Some(String::new())));
        assert_eq!(ok(HTTP_10, "/x", &[]), Ok(None));
        assert_eq!(ok(HTTP_2, "http://a.example/x", &[]), Ok(Some("a.example".into())));
        assert_eq!(ok(HTTP_2, "http://a.example/x", &[b"A.Example"]), Ok(Some("a.example".into())));
        assert_eq!(ok(HTTP_11, "http://a.example/x", &[b"a.example"]), Ok(Some("a.example".into())));
        assert_eq!(ok(HTTP_11, "/x", &[b"[::1]:9901"]), Ok(Some("[::1]:9901".into())));

        assert_eq!(ok(HTTP_11, "/x", &[]), Err("missing Host header"));
        assert_eq!(ok(HTTP_11, "http://a.example/x", &[]), Err("missing Host header"));
        assert_eq!(ok(HTTP_11, "/x", &[b"a.example", b"b.example"]), Err("more than one Host header"));
        assert_eq!(ok(HTTP_11, "/x", &[b"a.example", b"a.example"]), Err("more than one Host header"));
        assert_eq!(
            ok(HTTP_2, "http://a.example/x", &[b"b.example"]),
            Err("Host does not match the authority of the request target")
        );
        assert_eq!(
            ok(HTTP_11, "http://a.example/x", &[b"a.example:80"]),
            Err("Host does not match the authority of the request target")
        );
        assert_eq!(ok(HTTP_2, "http://u@a.example/x", &[]), Err("invalid authority in the request target"));
        for bad in [
            &b"a.example:80x"[..],
            b"a.example:",
            b"a.example:123456",
            b"a.example:65536",
            b"a.example/evil",
            b"a.example b.example",
            b"a.example,b.example",
            b"user@a.example",
            b"a%2eexample",
            b"[::1",
            b"[]",
            b"[::1]x",
            b"[::1]:",
            b"a.example:80:80",
            "\u{e9}.example".as_bytes(),
        ] {
            assert_eq!(ok(HTTP_11, "/x", &[bad]), Err("invalid Host"), "{}", String::from_utf8_lossy(bad));
        }
    }
}
