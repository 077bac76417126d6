//! Why an upstream call failed, in an operator's words: a class (`connection refused`, `dns`,
//! `tls`, `connect timeout`, `timeout`, `connection closed`, `invalid answer`) and the innermost
//! error's own text (an OS error, a resolver or TLS message). Neither carries a request's
//! content, so both are safe to log.

use std::error::Error;

/// A failed upstream call, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cause {
    pub class: &'static str,
    pub detail: String,
}

impl Cause {
    /// The call got no answer head within `upstream.request_timeout`.
    pub(crate) fn timeout() -> Self {
        Self { class: "timeout", detail: "no answer within upstream.request_timeout".into() }
    }

    /// Classify an error from the pool (connect, TLS, write or read of the answer head).
    pub(crate) fn of(err: &(dyn Error + 'static)) -> Self {
        let mut class = None;
        let mut innermost = err;
        let mut layer = Some(err);
        while let Some(e) = layer {
            innermost = e;
            class = class.or_else(|| classify(e));
            layer = next(e);
        }
        Self { class: class.unwrap_or("other"), detail: innermost.to_string() }
    }
}

/// The error under `e`. An `io::Error` wrapping another error reports that error's source as
/// its own, skipping the wrapped one (the TLS connector wraps rustls' error twice that way), so
/// the wrapped error itself comes next.
fn next<'a>(e: &'a (dyn Error + 'static)) -> Option<&'a (dyn Error + 'static)> {
    match e.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref) {
        Some(inner) => Some(inner),
        None => e.source(),
    }
}

fn classify(e: &(dyn Error + 'static)) -> Option<&'static str> {
    if e.is::<rustls::Error>() {
        return Some("tls");
    }
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        // A wrapper's kind says little (`Other`); what it wraps is classified next.
        if io.get_ref().is_some() && io.kind() == std::io::ErrorKind::Other {
            return None;
        }
        return match io.kind() {
            std::io::ErrorKind::ConnectionRefused => Some("connection refused"),
            std::io::ErrorKind::TimedOut => Some("connect timeout"),
            std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::UnexpectedEof => Some("connection closed"),
            _ => None,
        };
    }
    if let Some(h) = e.downcast_ref::<hyper::Error>() {
        if h.is_timeout() {
            return Some("timeout");
        }
        if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
            return Some("connection closed");
        }
        if h.is_parse() || h.is_parse_too_large() || h.is_parse_status() {
            return Some("invalid answer");
        }
        return None;
    }
    if e.is::<super::h1::Error>() {
        return Some("invalid answer");
    }
    // hyper-util's connector names its failures by message only.
    match e.to_string().as_str() {
        "dns error" => Some("dns"),
        "HTTP connect timeout" | "connect timeout" => Some("connect timeout"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_the_source_chain() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(Cause::of(&refused).class, "connection refused");
        // As hyper-rustls reports a failed handshake: an io::Error in an io::Error.
        let tls = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        ));
        assert_eq!(Cause::of(&tls).class, "tls");
        assert!(Cause::of(&tls).detail.contains("UnknownIssuer"), "{:?}", Cause::of(&tls));
        let other = std::io::Error::other("weird");
        assert_eq!(Cause::of(&other), Cause { class: "other", detail: "weird".into() });
    }
}
