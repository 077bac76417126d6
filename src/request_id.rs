//! Request ids: every request gets one, the caller's `X-Request-Id` when it is usable, else a
//! new one. The app sets it on the request (so pass-through and token calls carry it upstream)
//! and on the answer, and the access line records it.
//!
//! A new id is this process's random 64-bit prefix and a counter, as 32 hex digits: unique
//! across replicas without a random draw per request.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};

pub(crate) static X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// Longest caller id kept; longer ones are replaced.
pub(crate) const MAX_LEN: usize = 128;

/// Whether a caller's id is usable: 1 to [`MAX_LEN`] characters from
/// `A-Z a-z 0-9 - _ . : + / = @`.
fn usable(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_LEN
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=@".contains(b))
}

/// A new id. Its bytes are allocated once, shared by the request's and the answer's header
/// (a clone is a reference count, not a copy); the prefix's hex digits are formatted once.
pub(crate) fn generate() -> HeaderValue {
    static PREFIX: OnceLock<[u8; 16]> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let mut digits = [0u8; 16];
        hex(rand::random::<u64>(), &mut digits);
        digits
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut buf = [0u8; 32];
    buf[..16].copy_from_slice(prefix);
    hex(n, &mut buf[16..]);
    // Hex digits are always a valid header value.
    HeaderValue::from_maybe_shared(Bytes::from_owner(buf)).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// `v` as 16 lowercase hex digits, a byte (two digits) at a time.
fn hex(v: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(v.to_be_bytes()) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

/// The request's id: the caller's if usable (exactly one `X-Request-Id`), else a new one
/// written into `headers` (replacing any unusable ones), so everything sent upstream carries it.
/// One lookup of the header either way.
pub(crate) fn ensure(headers: &mut HeaderMap) -> HeaderValue {
    match headers.entry(&X_REQUEST_ID) {
        http::header::Entry::Occupied(mut e) => {
            let mut values = e.iter();
            if let (Some(v), None) = (values.next(), values.next())
                && usable(v)
            {
                return v.clone();
            }
            let id = generate();
            e.insert(id.clone());
            id
        }
        http::header::Entry::Vacant(e) => {
            let id = generate();
            e.insert(id.clone());
            id
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_usable_ids_and_replaces_others() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID.clone(), HeaderValue::from_static("abc-123_x.y:z"));
        assert_eq!(ensure(&mut h), "abc-123_x.y:z");
        for bad in ["", "has space", "quote\"", &"x".repeat(MAX_LEN + 1)] {
            let mut h = HeaderMap::new();
            h.insert(X_REQUEST_ID.clone(), HeaderValue::from_str(bad).unwrap());
            let id = ensure(&mut h);
            assert_eq!(id.len(), 32, "{bad:?}");
            assert_eq!(h.get_all(&X_REQUEST_ID).iter().count(), 1);
            assert_eq!(h[&X_REQUEST_ID], id);
        }
        let mut h = HeaderMap::new();
        h.append(X_REQUEST_ID.clone(), HeaderValue::from_static("a"));
        h.append(X_REQUEST_ID.clone(), HeaderValue::from_static("b"));
        assert_eq!(ensure(&mut h).len(), 32, "two ids are ambiguous");
        assert_ne!(generate(), generate());
    }
}
