//! Tokens oauth-shim mints for continuity sessions: 32 bytes from the OS RNG, base64url, behind
//! a fixed prefix (`osh_at_` for access, `osh_rt_` for refresh) so secret scanners can find
//! leaked ones and the request path can tell them from upstream tokens by a prefix test alone.

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

/// The minted token of an `Authorization` header value, if it carries one (`Bearer osh_at_…`,
/// or a minted refresh token misused as a bearer token, which must not reach the upstream
/// either; scheme case-insensitive). A few byte compares and no allocation: this runs on every
/// pass-through request while any client uses continuity.
#[inline]
pub(crate) fn bearer(header: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = header.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    let minted = token.starts_with(ACCESS_PREFIX.as_bytes()) || token.starts_with(REFRESH_PREFIX.as_bytes());
    minted.then_some(token)
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
        assert!(bearer(b"Bearer upstream-token").is_none());
        assert!(bearer(b"Basic osh_at_x").is_none());
        assert!(bearer(b"Bearer osh_rt_x").is_some());
        assert!(bearer(b"Bearer osh_xx_x").is_none());
        assert!(bearer(b"Bear").is_none());
    }
}
