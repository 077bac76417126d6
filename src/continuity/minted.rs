//! Tokens oauth-shim mints for continuity sessions: 32 bytes from the OS RNG, base64url, behind
//! a fixed prefix (`osh_at_` for access, `osh_rt_` for refresh) so secret scanners can find
//! leaked ones and the request path can tell them from upstream tokens by a prefix test alone,
//! and where a request carries one (which decides that it never reaches the upstream).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::TryRngCore;

use crate::error::ShimError;
use crate::oauth::Secret;

pub(crate) const ACCESS_PREFIX: &str = "osh_at_";
pub(crate) const REFRESH_PREFIX: &str = "osh_rt_";
/// Random bytes per token (256 bits).
const RANDOM_BYTES: usize = 32;
/// Prefix plus the unpadded base64url of [`RANDOM_BYTES`].
pub(crate) const TOKEN_LEN: usize = 7 + 43;

/// A new token with `prefix`. Fails only if the OS RNG does.
pub(crate) fn mint(prefix: &'static str) -> Result<Secret, ShimError> {
    let mut raw = [0u8; RANDOM_BYTES];
    rand::rngs::OsRng.try_fill_bytes(&mut raw).map_err(|_| {
        tracing::error!("the OS random number generator failed; no token minted");
        ShimError::internal()
    })?;
    let mut token = String::with_capacity(TOKEN_LEN);
    token.push_str(prefix);
    URL_SAFE_NO_PAD.encode_string(raw, &mut token);
    Ok(Secret::new(token))
}

/// Where a request carries a minted token, as the request path tells it before anything is
/// read or looked up (see `docs/protocol.md#minted-tokens-never-leave-oauth-shim`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Carried {
    /// Nowhere: the request goes on as it came.
    Nowhere,
    /// In the one standard spelling the continuity path serves: the request's only
    /// `Authorization` header is `Bearer <minted token>` (see [`bearer`]), and the query holds
    /// none.
    Bearer,
    /// Anywhere else: in another spelling, in several headers, or in the query. Refused.
    Elsewhere,
}

/// Where `headers` and `query` carry a minted token: every `Authorization` header value is
/// searched for a minted prefix anywhere in it ([`contains`]), and every query parameter value
/// is tested for one at its start, percent-decoded ([`in_query`]). A walk over the (few)
/// headers comparing names (an enum compare for a standard header) is cheaper than the map's
/// hashed lookup; nothing is allocated. This runs on every pass-through request.
#[inline]
pub(crate) fn carried(headers: &http::HeaderMap, query: Option<&str>) -> Carried {
    let (mut found, mut others) = (Carried::Nowhere, false);
    for (name, value) in headers {
        if name != http::header::AUTHORIZATION {
            continue;
        }
        if !contains(value.as_bytes()) {
            others = true;
            continue;
        }
        found = match (found, bearer(value.as_bytes())) {
            (Carried::Nowhere, Some(_)) => Carried::Bearer,
            _ => Carried::Elsewhere,
        };
    }
    match query {
        Some(q) if in_query(q.as_bytes()) => Carried::Elsewhere,
        _ if found == Carried::Bearer && others => Carried::Elsewhere,
        _ => found,
    }
}

/// Whether `bytes` holds a minted token's prefix anywhere (an `Authorization` header value:
/// the token behind any scheme, with any separator, or bare). A SIMD search for `_` (absent
/// from most upstream tokens, rare in a JWT), then a look at the bytes around each one.
#[inline]
pub(crate) fn contains(bytes: &[u8]) -> bool {
    memchr::memchr_iter(b'_', bytes).any(|i| {
        i >= 3 && bytes[i - 3..i] == *b"osh" && matches!(bytes.get(i + 1..i + 4), Some(b"at_" | b"rt_"))
    })
}

/// Whether a parameter value starts with a minted token's prefix (surrounding whitespace
/// ignored): a token-path parameter after decoding.
pub(crate) fn starts(value: &[u8]) -> bool {
    let value = value.trim_ascii_start();
    value.starts_with(ACCESS_PREFIX.as_bytes()) || value.starts_with(REFRESH_PREFIX.as_bytes())
}

/// Whether some parameter value of a query string starts with a minted prefix once
/// percent-decoded (`access_token=osh_at_…`, `x=osh%5Fat%5F…`, under any name). Only the first
/// seven decoded bytes after each `=` are looked at.
fn in_query(query: &[u8]) -> bool {
    memchr::memchr_iter(b'=', query).any(|at| {
        let mut head = [0u8; 7];
        let (mut n, mut i) = (0, at + 1);
        while n < head.len() {
            let Some(&b) = query.get(i) else { return false };
            head[n] = match b {
                b'&' => return false,
                b'%' => match query.get(i + 1..i + 3).and_then(hex_byte) {
                    Some(decoded) => {
                        i += 2;
                        decoded
                    }
                    None => b,
                },
                _ => b,
            };
            n += 1;
            i += 1;
        }
        head == *ACCESS_PREFIX.as_bytes() || head == *REFRESH_PREFIX.as_bytes()
    })
}

fn hex_byte(hex: &[u8]) -> Option<u8> {
    let digit = |b: u8| (b as char).to_digit(16);
    Some((digit(hex[0])? * 16 + digit(hex[1])?) as u8)
}

/// The minted token of a standard bearer credential: `Bearer` (any case), one or more spaces
/// or tabs, the token, nothing after it but whitespace. Any other spelling is not served (the
/// request is refused when it carries a minted token at all, see [`carried`]). A minted
/// refresh token is recognised too: it must not reach the upstream either, and the continuity
/// path refuses it.
#[inline]
pub(crate) fn bearer(header: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = header.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !matches!(rest.first(), Some(b' ' | b'\t')) {
        return None;
    }
    let token = rest.trim_ascii();
    let single = !token.iter().any(u8::is_ascii_whitespace);
    let minted = token.starts_with(ACCESS_PREFIX.as_bytes()) || token.starts_with(REFRESH_PREFIX.as_bytes());
    (single && minted).then_some(token)
}

/// Whether `token` has the shape of a minted token with `prefix` (checked before any lookup).
pub(crate) fn well_formed(token: &[u8], prefix: &str) -> bool {
    token.len() == TOKEN_LEN
        && token.starts_with(prefix.as_bytes())
        && token[7..].iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_are_prefixed_long_and_distinct() {
        let a = mint(ACCESS_PREFIX).unwrap();
        let b = mint(ACCESS_PREFIX).unwrap();
        assert_ne!(a, b);
        assert!(well_formed(a.expose().as_bytes(), ACCESS_PREFIX));
        assert!(!well_formed(a.expose().as_bytes(), REFRESH_PREFIX));
        assert!(well_formed(mint(REFRESH_PREFIX).unwrap().expose().as_bytes(), REFRESH_PREFIX));
        assert_eq!(URL_SAFE_NO_PAD.decode(&a.expose()[7..]).unwrap().len(), 32);
    }

    #[test]
    fn bearer_prefix_test() {
        let t = mint(ACCESS_PREFIX).unwrap();
        let h = format!("Bearer {}", t.expose());
        assert_eq!(bearer(h.as_bytes()), Some(t.expose().as_bytes()));
        assert!(bearer(format!("bearer  {} ", t.expose()).as_bytes()).is_some());
        assert!(bearer(format!("BEARER\t{}", t.expose()).as_bytes()).is_some());
        assert!(bearer(b"Bearer upstream-token").is_none());
        assert!(bearer(b"Basic osh_at_x").is_none());
        assert!(bearer(b"Bearer osh_rt_x").is_some());
        assert!(bearer(b"Bearer osh_xx_x").is_none());
        assert!(bearer(b"Bearer osh_at_x extra").is_none());
        assert!(bearer(b"Bearerosh_at_x").is_none());
        assert!(bearer(b"Bear").is_none());
    }

    #[test]
    fn a_minted_prefix_is_found_anywhere_in_a_header_value() {
        for v in [
            &b"Bearer osh_at_x"[..],
            b"osh_rt_x",
            b"OAuth oauth_token=osh_at_x",
            b"OAuth oauth_consumer_key=\"k\", oauth_token=\"osh_at_x\"",
            b"Bearer\tosh_at_x",
            b"Token token=osh_aosh_at_",
        ] {
            assert!(contains(v), "{}", String::from_utf8_lossy(v));
        }
        for v in [&b"Bearer eyJhbGciOi.osh_xt_.sig"[..], b"Basic b3NoX2F0Xw==", b"osh_a", b"OSH_AT_x", b""] {
            assert!(!contains(v), "{}", String::from_utf8_lossy(v));
        }
    }

    #[test]
    fn a_query_value_starting_with_a_minted_prefix_is_found_however_encoded() {
        for q in ["access_token=osh_at_x", "a=1&access_token=osh_rt_x", "t=osh%5fat%5Fx", "t=%6Fsh_at_"] {
            assert!(in_query(q.as_bytes()), "{q}");
        }
        for q in
            ["access_token=upstream", "q=gosh_at_home", "osh_at_x", "a=osh_at", "a=osh_a&b=t_", "a=%zzsh_at_"]
        {
            assert!(!in_query(q.as_bytes()), "{q}");
        }
    }

    #[test]
    fn where_a_request_carries_a_minted_token() {
        let with = |values: &[&str]| {
            let mut h = http::HeaderMap::new();
            for v in values {
                h.append(http::header::AUTHORIZATION, http::HeaderValue::from_str(v).unwrap());
            }
            h
        };
        assert_eq!(carried(&with(&[]), None), Carried::Nowhere);
        assert_eq!(carried(&with(&["Bearer upstream"]), Some("a=b")), Carried::Nowhere);
        assert_eq!(carried(&with(&["Bearer osh_at_x"]), Some("a=b")), Carried::Bearer);
        assert_eq!(carried(&with(&["Bearer osh_at_x", "Basic eA=="]), None), Carried::Elsewhere);
        assert_eq!(carried(&with(&["Bearer osh_at_x"]), Some("access_token=osh_at_x")), Carried::Elsewhere);
        assert_eq!(carried(&with(&["Bearer osh_at_x", "Bearer osh_at_y"]), None), Carried::Elsewhere);
        assert_eq!(carried(&with(&["OAuth oauth_token=osh_at_x"]), None), Carried::Elsewhere);
        assert_eq!(carried(&with(&["osh_at_x"]), None), Carried::Elsewhere);
        assert_eq!(carried(&with(&[]), Some("access_token=osh_at_x")), Carried::Elsewhere);
    }

    #[test]
    fn parameter_values_starting_with_a_minted_prefix() {
        assert!(starts(b"osh_rt_x") && starts(b" osh_at_x"));
        assert!(!starts(b"gosh_at_x") && !starts(b"refresh"));
    }
}
