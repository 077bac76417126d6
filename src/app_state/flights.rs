//! The refresh flight both token routes share, built from `[state]`, and what it carries: an
//! answer with a token ([`TokenAnswer`], kept as it came for v2 callers and parsed for legacy
//! ones) or a failure ([`RefreshError`]), each with the [`Proof`] of the call that got it, and
//! how both are written to Redis when replicas share them.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use http::{HeaderValue, StatusCode};

use crate::error::{ErrorCode, ShimError};
use crate::oauth::{RawAnswer, V2Token};
use crate::redis::Redis;
use crate::refresh::redis::{Portable, PortableFailure};
use crate::refresh::{Proof, Refresher};

/// The refresh cache of both token routes.
pub(crate) type TokenRefresher = Refresher<TokenAnswer, RefreshError>;

/// The refresh cache `[state]` asks for: in process, or shared through Redis (with the Redis
/// connection). Needs a Tokio runtime for the Redis backend.
pub(super) fn refresher(config: &Config) -> (TokenRefresher, Option<Redis>) {
    let rc = &config.refresh_cache;
    let memory = || (Refresher::in_memory(rc.ttl, rc.max_entries), None);
    if config.state.backend != crate::config::StateBackend::Redis {
        return memory();
    }
    // Validated at load; failing here (a CA file removed since) keeps the process serving.
    let started = config.state.key_set().and_then(|keys| {
        let keys = keys.ok_or_else(|| crate::config::ConfigError("no state encryption key".into()))?;
        Ok((Redis::start(&config.state)?, keys))
    });
    match started {
        Ok((redis, keys)) => {
            (Refresher::through_redis(redis.clone(), Arc::new(keys), rc.ttl, rc.max_entries), Some(redis))
        }
        Err(e) => {
            tracing::error!(error = %e, "state: cannot use redis; refreshes use in-process state");
            memory()
        }
    }
}

/// A refresh the upstream answered with a token: its answer as it came (what a v2 caller gets),
/// the token parsed from it (what a legacy caller gets), and the proof of the call. Cheap to
/// clone.
#[derive(Clone)]
pub struct TokenAnswer(Arc<Granted>);

struct Granted {
    answer: RawAnswer,
    token: V2Token,
    proof: Proof,
}

impl TokenAnswer {
    pub(crate) fn new(answer: RawAnswer, token: V2Token, proof: Proof) -> Self {
        Self(Arc::new(Granted { answer, token, proof }))
    }

    /// The upstream's answer as it came.
    pub(crate) fn answer(&self) -> &RawAnswer {
        &self.0.answer
    }

    pub(crate) fn token(&self) -> &V2Token {
        &self.0.token
    }

    /// The credentials of the call that got this answer.
    pub(crate) fn proof(&self) -> Proof {
        self.0.proof
    }
}

/// A refresh that is not served as a cacheable success.
#[derive(Debug, Clone)]
pub enum RefreshError {
    /// The upstream answered, but not with a token (a v2 caller gets it as it came), to a call
    /// with `proof`.
    Answer { answer: Arc<RawAnswer>, proof: Proof },
    /// No usable answer: oauth-shim's own error, whoever asked.
    Shim(ShimError),
}

impl crate::refresh::Refreshed for TokenAnswer {
    fn lifetime(&self) -> Option<Duration> {
        self.0.token.lifetime()
    }
}

impl crate::refresh::RefreshFailure for RefreshError {
    fn evicts(&self) -> bool {
        #[derive(serde::Deserialize)]
        struct RfcError {
            error: String,
        }
        match self {
            RefreshError::Answer { answer, .. } => serde_json::from_slice::<RfcError>(&answer.body)
                .is_ok_and(|e| e.error == ErrorCode::InvalidGrant.as_str()),
            RefreshError::Shim(_) => false,
        }
    }

    fn internal() -> Self {
        RefreshError::Shim(ShimError::internal())
    }
}

/// An answer crosses replicas as it came: status, both headers kept, body.
impl Portable for RawAnswer {
    fn encode(&self) -> Vec<u8> {
        let header = |v: &Option<HeaderValue>| v.as_ref().map_or(&b""[..], HeaderValue::as_bytes).to_vec();
        let (content_type, retry_after) = (header(&self.content_type), header(&self.retry_after));
        let mut out = Vec::with_capacity(6 + content_type.len() + retry_after.len() + self.body.len());
        out.extend_from_slice(&self.status.as_u16().to_be_bytes());
        for h in [content_type, retry_after] {
            // Header values this long never come from an upstream oauth-shim accepts.
            let len = u16::try_from(h.len()).unwrap_or(0);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&h[..usize::from(len)]);
        }
        out.extend_from_slice(&self.body);
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        fn header(bytes: &[u8]) -> Option<(Option<HeaderValue>, &[u8])> {
            let (len, rest) = bytes.split_first_chunk::<2>()?;
            let (value, rest) = rest.split_at_checked(usize::from(u16::from_be_bytes(*len)))?;
            let value = if value.is_empty() { None } else { Some(HeaderValue::from_bytes(value).ok()?) };
            Some((value, rest))
        }
        let (status, rest) = bytes.split_first_chunk::<2>()?;
        let status = http::StatusCode::from_u16(u16::from_be_bytes(*status)).ok()?;
        let (content_type, rest) = header(rest)?;
        let (retry_after, body) = header(rest)?;
        Some(RawAnswer { status, content_type, retry_after, body: bytes::Bytes::copy_from_slice(body) })
    }
}

/// An answer crosses replicas as its proof and the upstream's answer as it came; the token is
/// parsed from it again.
impl Portable for TokenAnswer {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(33);
        self.0.proof.encode_into(&mut out);
        out.extend_from_slice(&self.0.answer.encode());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let (proof, rest) = Proof::decode_from(bytes)?;
        let answer = RawAnswer::decode(rest)?;
        let token = V2Token::parse(&answer.body).ok()?;
        Some(Self::new(answer, token, proof))
    }
}

/// The upstream's answer crosses replicas as it came, with its proof (to the waiters of its
/// flight only); an error of oauth-shim's own as its class (see `ShimError`'s encoding).
impl Portable for RefreshError {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            RefreshError::Answer { answer, proof } => {
                out.push(b'a');
                proof.encode_into(&mut out);
                out.extend_from_slice(&answer.encode());
            }
            RefreshError::Shim(e) => {
                out.push(b's');
                out.extend_from_slice(&e.encode());
            }
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        match bytes.split_first()? {
            (b'a', rest) => {
                let (proof, rest) = Proof::decode_from(rest)?;
                Some(RefreshError::Answer { answer: Arc::new(RawAnswer::decode(rest)?), proof })
            }
            (b's', rest) => Some(RefreshError::Shim(ShimError::decode(rest)?)),
            _ => None,
        }
    }
}

impl PortableFailure for RefreshError {
    fn timed_out() -> Self {
        RefreshError::Shim(ShimError::upstream_timeout())
    }

    fn unavailable() -> Self {
        RefreshError::Shim(ShimError::state_unavailable(
            "the shared refresh state is unavailable; no refresh was made, retry shortly",
        ))
    }
}

/// An error crosses replicas as its class: code, status, side and the fixed description (never
/// an upstream body or a secret; see `error.rs`).
impl Portable for ShimError {
    fn encode(&self) -> Vec<u8> {
        serde_json::json!({
            "code": self.code.as_str(),
            "status": self.status.as_u16(),
            "source": self.source.as_str(),
            "description": self.description,
        })
        .to_string()
        .into_bytes()
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        let code = ErrorCode::from_rfc(v["code"].as_str()?)?;
        let status = StatusCode::from_u16(u16::try_from(v["status"].as_u64()?).ok()?).ok()?;
        let source = crate::error::ErrorSource::from_name(v["source"].as_str()?)?;
        Some(ShimError::new(code, status, source, v["description"].as_str()?.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn answers_and_failures_cross_replicas_as_they_came() {
        use crate::refresh::RefreshFailure;
        let answer = RawAnswer {
            status: http::StatusCode::BAD_REQUEST,
            content_type: Some(HeaderValue::from_static("application/json;charset=UTF-8")),
            retry_after: None,
            body: bytes::Bytes::from_static(br#"{"error":"invalid_grant"}"#),
        };
        let back = RawAnswer::decode(&answer.encode()).expect("decodes");
        assert_eq!(
            (back.status, &back.content_type, &back.retry_after),
            (answer.status, &answer.content_type, &None)
        );
        assert_eq!(back.body, answer.body);
        let proof = Proof::Presented([9; 32]);
        let failure = RefreshError::Answer { answer: Arc::new(answer), proof };
        let failure = RefreshError::decode(&failure.encode()).expect("decodes");
        assert!(failure.evicts(), "invalid_grant still evicts on the waiter's replica");
        assert!(matches!(failure, RefreshError::Answer { proof: p, .. } if p == proof));
        let shim = RefreshError::decode(&RefreshError::timed_out().encode()).expect("decodes");
        assert!(matches!(shim, RefreshError::Shim(e) if e.status == http::StatusCode::GATEWAY_TIMEOUT));
        for bad in [&b""[..], b"x", b"a\x00", b"ap\x00\xc8\x00\x09ab", b"ah\x01"] {
            assert!(RefreshError::decode(bad).is_none());
        }

        let ok = RawAnswer {
            status: http::StatusCode::OK,
            content_type: None,
            retry_after: None,
            body: bytes::Bytes::from_static(br#"{"access_token":"at","expires_in":60,"scope":"s"}"#),
        };
        let token = V2Token::parse(&ok.body).expect("a token");
        let back =
            TokenAnswer::decode(&TokenAnswer::new(ok, token, Proof::Configured).encode()).expect("decodes");
        assert_eq!(back.proof(), Proof::Configured);
        assert_eq!(&back.answer().body[..], br#"{"access_token":"at","expires_in":60,"scope":"s"}"#);
        assert_eq!(back.token().lifetime(), Some(Duration::from_secs(60)));
    }
}
