//! An upstream answer's head: parsed off the front of the connection's buffer, interim
//! answers skipped, and its framing (RFC 9112 §6.3) decided from the headers.

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Version, response};

use super::error::err;
use crate::body::BoxError;

/// At most this many headers in an answer's head (hyper's default too).
pub(super) const MAX_HEADERS: usize = 100;
/// At most this many interim (1xx) answers before the final one.
const MAX_INTERIM: usize = 16;

/// How an answer's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    Close,
}

/// What the framing headers of an answer said, noted while its head is parsed (so framing
/// needs no hashed header lookups).
#[derive(Default)]
pub(crate) struct Seen {
    /// `Connection` named `close` / `keep-alive`.
    close: bool,
    keep_alive: bool,
    /// `Transfer-Encoding` appeared; whether its last coding is `chunked`.
    transfer_encoding: Option<bool>,
    /// The length every `Content-Length` value stated, how many values there were, and the
    /// first problem with them.
    length: Option<u64>,
    length_values: usize,
    length_error: Option<&'static str>,
}

impl Seen {
    /// Note one header; false for a hop-by-hop header this client has consumed and does not
    /// hand on: `Transfer-Encoding` (the body is decoded here), and a `Connection` that says
    /// only `close`/`keep-alive` (one naming other headers is kept, so a proxy still strips
    /// those).
    // Inlined into both readers of a head: this runs for every header of every answer.
    #[inline(always)]
    fn note(&mut self, name: &HeaderName, value: &[u8]) -> bool {
        // A value with bytes outside visible ASCII (obs-text) says neither `keep-alive` nor
        // `chunked`, as hyper's client reads it; it may still say `close`. (A header value
        // holds no control byte but tab, so ASCII is visible ASCII.)
        let visible = || value.is_ascii();
        if *name == header::CONNECTION {
            let mut others = false;
            for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                let close = token.eq_ignore_ascii_case(b"close");
                let keep_alive = token.eq_ignore_ascii_case(b"keep-alive");
                self.close |= close;
                self.keep_alive |= keep_alive && visible();
                others |= !close && !keep_alive && !token.is_empty();
            }
            return others;
        } else if *name == header::TRANSFER_ENCODING {
            let last = value.rsplit(|&b| b == b',').next().unwrap_or_default().trim_ascii();
            self.transfer_encoding = Some(last.eq_ignore_ascii_case(b"chunked") && visible());
            return false;
        } else if *name == header::CONTENT_LENGTH {
            for part in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                self.length_values += 1;
                let n = (!part.is_empty() && part.iter().all(u8::is_ascii_digit))
                    .then(|| {
                        part.iter()
                            .try_fold(0u64, |n, &d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
                    })
                    .flatten();
                match (n, self.length) {
                    (None, _) => self.length_error = self.length_error.or(Some("invalid Content-Length")),
                    (Some(n), Some(before)) if n != before => {
                        self.length_error = self.length_error.or(Some("conflicting Content-Length"));
                    }
                    (Some(n), _) => self.length = Some(n),
                }
            }
        }
        true
    }
}

/// The final answer's head at the front of `buf`, with its framing and whether the connection
/// may be reused after it; interim (1xx) answers are skipped (`interim` counts them across
/// calls). `None` while the head is incomplete.
pub(crate) fn final_head(
    buf: &mut BytesMut,
    spans: &mut Spans,
    max_head: usize,
    head_request: bool,
    interim: &mut usize,
) -> Result<Option<(response::Parts, Framing, bool)>, BoxError> {
    while let Some((mut head, seen)) = parse_head_with(buf, spans, max_head)? {
        if head.status.is_informational() {
            refuse_upgrade(head.status)?;
            *interim += 1;
            if *interim > MAX_INTERIM {
                return Err(err("too many interim answers"));
            }
            continue;
        }
        let (framing, reuse) = framing(&mut head, &seen, head_request)?;
        return Ok(Some((head, framing, reuse)));
    }
    Ok(None)
}

/// [`parse_head_with`] with a fresh list of spans.
#[cfg(test)]
fn parse_head(buf: &mut BytesMut, max_head: usize) -> Result<Option<(response::Parts, Seen)>, BoxError> {
    parse_head_with(buf, &mut Vec::new(), max_head)
}

/// Where each header's name and value lie in a head: (name start, name end, value start,
/// value end). Kept per connection, so parsing an answer allocates no list.
pub(crate) type Spans = Vec<(usize, usize, usize, usize)>;

/// Parse a complete answer head off the front of `buf`, or `None` when more is needed.
/// `spans` is scratch space (cleared first).
pub(crate) fn parse_head_with(
    buf: &mut BytesMut,
    spans: &mut Spans,
    max_head: usize,
) -> Result<Option<(response::Parts, Seen)>, BoxError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= max_head => return Err(err("answer head too large")),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(err("too many headers in the answer")),
        Err(_) => return Err(err("malformed answer head")),
    };
    if len > max_head {
        return Err(err("answer head too large"));
    }
    let status = resp.code.and_then(|c| StatusCode::from_u16(c).ok()).ok_or_else(|| err("invalid status"))?;
    let version = if resp.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    // Where each name and value lies in the head, so the values can share its bytes.
    let base = buf.as_ptr() as usize;
    spans.clear();
    spans.extend(resp.headers.iter().map(|h| {
        let name = h.name.as_ptr() as usize - base;
        let value = h.value.as_ptr() as usize - base;
        (name, name + h.name.len(), value, value + h.value.len())
    }));
    let head = buf.split_to(len).freeze();
    let mut map = HeaderMap::with_capacity(spans.len());
    let mut seen = Seen::default();
    for &(ns, ne, vs, ve) in spans.iter() {
        let name = HeaderName::from_bytes(&head[ns..ne]).map_err(|_| err("invalid header name"))?;
        let value =
            HeaderValue::from_maybe_shared(head.slice(vs..ve)).map_err(|_| err("invalid header value"))?;
        if seen.note(&name, value.as_bytes()) {
            map.append(name, value);
        }
    }
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.version = version;
    parts.headers = map;
    Ok(Some((parts, seen)))
}

/// How the body is delimited, and whether the connection may be reused after it. The framing
/// headers are checked on every answer, those without a body (HEAD, 204, 304) included: a
/// connection whose answer framed itself ambiguously is never trusted with another request.
pub(crate) fn framing(
    head: &mut response::Parts,
    seen: &Seen,
    head_request: bool,
) -> Result<(Framing, bool), BoxError> {
    let mut reuse = match head.version {
        // HTTP/1.0 closes unless asked not to; `close` wins over `keep-alive` in either version.
        Version::HTTP_10 => seen.keep_alive && !seen.close,
        _ => !seen.close,
    };
    let bodiless =
        head_request || head.status == StatusCode::NO_CONTENT || head.status == StatusCode::NOT_MODIFIED;
    if let Some(chunked) = seen.transfer_encoding {
        if head.version == Version::HTTP_10 {
            return Err(err("Transfer-Encoding in an HTTP/1.0 answer"));
        }
        if seen.length_values > 0 {
            // Both: the transfer coding wins, the length is never handed on, and a connection
            // that framed an answer both ways is not trusted with another request.
            head.headers.remove(header::CONTENT_LENGTH);
            reuse = false;
        }
        if bodiless {
            return Ok((Framing::Empty, reuse));
        }
        if !chunked {
            return Ok((Framing::Close, false));
        }
        return Ok((Framing::Chunked, reuse));
    }
    if let Some(problem) = seen.length_error {
        return Err(err(problem));
    }
    if let Some(n) = seen.length
        && seen.length_values > 1
    {
        // Repeats of one number are folded into one header.
        head.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    if bodiless {
        return Ok((Framing::Empty, reuse));
    }
    match seen.length {
        Some(0) => Ok((Framing::Empty, reuse)),
        Some(n) => Ok((Framing::Length(n), reuse)),
        None => Ok((Framing::Close, false)),
    }
}

/// No upgrade is ever asked for: a `101` is refused, never handed on.
fn refuse_upgrade(status: StatusCode) -> Result<(), BoxError> {
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(err("101 Switching Protocols without an upgrade request"));
    }
    Ok(())
}

/// [`framing`] for an answer whose head hyper's client read (a request with a streamed body):
/// the framing headers are noted from the map, so both clients judge an answer by one rule and
/// hand on the same framing headers. hyper has framed the body already, as [`framing`] would
/// when it accepts the head (RFC 9112 §6.3); what this adds is the refusal of an unasked-for
/// `101` (which hyper hands back as an upgrade) and of conflicting framing on answers hyper
/// reads without a body, and whether the connection may be reused.
pub(crate) fn framing_of(
    head: &mut response::Parts,
    head_request: bool,
) -> Result<(Framing, bool), BoxError> {
    refuse_upgrade(head.status)?;
    let mut seen = Seen::default();
    for name in [header::CONNECTION, header::TRANSFER_ENCODING, header::CONTENT_LENGTH] {
        for value in head.headers.get_all(&name) {
            seen.note(&name, value.as_bytes());
        }
    }
    if seen.transfer_encoding.is_some() {
        // Consumed: hyper hands the body on decoded.
        head.headers.remove(header::TRANSFER_ENCODING);
    }
    framing(head, &seen, head_request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<(response::Parts, Framing, bool), BoxError> {
        let mut buf = BytesMut::from(raw.as_bytes());
        let (mut parts, seen) = parse_head(&mut buf, 64 * 1024)?.expect("complete head");
        let (framing, reuse) = framing(&mut parts, &seen, false)?;
        Ok((parts, framing, reuse))
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let f = |raw: &str| head(raw).map(|(_, f, r)| (f, r)).map_err(|e| e.to_string());
        assert_eq!(f("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"), Ok((Framing::Length(5), true)));
        assert_eq!(f("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n"), Ok((Framing::Length(5), true)));
        assert_eq!(f("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), Ok((Framing::Empty, true)));
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\n"),
            Ok((Framing::Length(5), false))
        );
        assert_eq!(f("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), Ok((Framing::Chunked, true)));
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n"),
            Ok((Framing::Chunked, true))
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Ok((Framing::Chunked, false))
        );
        assert_eq!(f("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"), Ok((Framing::Close, false)));
        assert_eq!(f("HTTP/1.1 200 OK\r\n\r\n"), Ok((Framing::Close, false)));
        assert_eq!(f("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"), Ok((Framing::Empty, true)));
        assert_eq!(f("HTTP/1.1 304 Not Modified\r\n\r\n"), Ok((Framing::Empty, true)));
        assert_eq!(f("HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n"), Ok((Framing::Length(5), false)));
        assert_eq!(
            f("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 5\r\n\r\n"),
            Ok((Framing::Length(5), true))
        );
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(f(bad).is_err(), "{bad}");
        }
    }

    fn head_of(raw: &str, head_request: bool) -> Result<(response::Parts, Framing, bool), String> {
        let mut buf = BytesMut::from(raw.as_bytes());
        let (mut parts, seen) = parse_head(&mut buf, 64 * 1024).map_err(|e| e.to_string())?.unwrap();
        let (framing, reuse) = framing(&mut parts, &seen, head_request).map_err(|e| e.to_string())?;
        Ok((parts, framing, reuse))
    }

    #[test]
    fn bodiless_answers_get_the_framing_checks_too() {
        let conflicting = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
        assert!(head_of(conflicting, true).is_err(), "HEAD");
        for status in ["204 No Content", "304 Not Modified"] {
            let raw = format!("HTTP/1.1 {status}\r\nContent-Length: 5\r\nContent-Length: x\r\n\r\n");
            assert!(head_of(&raw, false).is_err(), "{status}");
        }
        let (parts, framing, reuse) =
            head_of("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", true)
                .unwrap();
        assert_eq!((framing, reuse), (Framing::Empty, false));
        assert!(parts.headers.get(header::CONTENT_LENGTH).is_none());
        let (parts, framing, reuse) =
            head_of("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", true).unwrap();
        assert_eq!((framing, reuse), (Framing::Empty, true));
        assert_eq!(parts.headers.get_all(header::CONTENT_LENGTH).iter().count(), 1);
    }

    #[test]
    fn content_length_goes_whenever_transfer_encoding_is_there() {
        let (parts, framing, reuse) =
            head_of("HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\nContent-Length: 2\r\n\r\n", false)
                .unwrap();
        assert_eq!((framing, reuse), (Framing::Close, false));
        assert!(parts.headers.get(header::CONTENT_LENGTH).is_none());
    }

    #[test]
    fn http_1_0_close_wins_over_keep_alive() {
        let (_, _, reuse) =
            head_of("HTTP/1.0 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 1\r\n\r\n", false)
                .unwrap();
        assert!(!reuse);
        let (_, _, reuse) = head_of(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(!reuse);
    }

    #[test]
    fn consumed_hop_by_hop_headers_are_not_handed_on() {
        let (parts, _, reuse) =
            head("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n")
                .unwrap();
        assert!(reuse);
        assert_eq!(parts.headers.len(), 1, "{:?}", parts.headers);
        let (parts, _, reuse) =
            head("HTTP/1.1 200 OK\r\nConnection: close, X-A\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert!(!reuse);
        assert_eq!(parts.headers["connection"], "close, X-A", "kept: it names a header to strip");
    }

    #[test]
    fn both_lengths_drop_content_length_and_repeats_fold() {
        let (parts, _, _) =
            head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        assert!(parts.headers.get(header::CONTENT_LENGTH).is_none());
        let (parts, _, _) =
            head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n").unwrap();
        assert_eq!(parts.headers.get_all(header::CONTENT_LENGTH).iter().count(), 1);
    }

    /// A head as hyper's client hands it on: every header kept, in order.
    fn as_hyper_reads(raw: &str) -> response::Parts {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        resp.parse(raw.as_bytes()).unwrap();
        let mut builder = http::Response::builder()
            .status(resp.code.unwrap())
            .version(if resp.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 });
        for h in resp.headers.iter() {
            builder = builder.header(h.name, h.value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn a_head_hyper_read_is_judged_as_the_raw_head_is() {
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 304 Not Modified\r\nContent-Length: x\r\n\r\n",
            "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.0 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        ] {
            for head_request in [false, true] {
                let mut parts = as_hyper_reads(raw);
                let theirs = framing_of(&mut parts, head_request).map_err(|e| e.to_string());
                let ours = head_of(raw, head_request);
                match (ours, theirs) {
                    (Ok((ours, framing, reuse)), Ok(theirs)) => {
                        assert_eq!((framing, reuse), theirs, "{raw}");
                        let length = |p: &response::Parts| {
                            p.headers.get_all(header::CONTENT_LENGTH).iter().cloned().collect::<Vec<_>>()
                        };
                        assert_eq!(length(&ours), length(&parts), "{raw}");
                        assert!(!parts.headers.contains_key(header::TRANSFER_ENCODING), "{raw}");
                    }
                    (Err(ours), Err(theirs)) => assert_eq!(ours, theirs, "{raw}"),
                    (ours, theirs) => panic!("{raw}: {ours:?} vs {theirs:?}"),
                }
            }
        }
        let mut upgrade = as_hyper_reads("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n");
        assert!(framing_of(&mut upgrade, false).is_err(), "no upgrade is asked for");
    }

    #[test]
    fn heads_parse_and_limits_hold() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nX-A: 1\r\nx-b: two\r\n\r\nbody"[..]);
        let (parts, _) = parse_head(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(parts.status, 200);
        assert_eq!(parts.headers["x-a"], "1");
        assert_eq!(parts.headers["x-b"], "two");
        assert_eq!(&buf[..], b"body");
        let mut partial = BytesMut::from(&b"HTTP/1.1 200 OK\r\nX-A: 1\r\n"[..]);
        assert!(parse_head(&mut partial, 1024).unwrap().is_none());
        assert!(parse_head(&mut partial, 16).is_err(), "over the head limit");
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        let mut buf = BytesMut::from(format!("HTTP/1.1 200 OK\r\n{many}\r\n").as_bytes());
        assert!(parse_head(&mut buf, 1 << 20).is_err(), "too many headers");
        let mut buf = BytesMut::from(&b"HTTP/1.1 2000 Huh\r\n\r\n"[..]);
        assert!(parse_head(&mut buf, 1024).is_err());
        let mut buf = BytesMut::from(&b"SSH-2.0-OpenSSH\r\n\r\n"[..]);
        assert!(parse_head(&mut buf, 1024).is_err());
    }
}
