//! The two refresh flights every request shares (legacy and v2), built from `[state]`, and
//! what they carry: how a legacy answer ([`V2Token`]), a v2 answer kept as it came
//! ([`RawAnswer`]) and their failures are cached, and written to Redis when replicas share them.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use http::{HeaderValue, StatusCode};

use crate::error::{ErrorCode, ShimError};
use crate::oauth::RawAnswer;
use crate::oauth::V2Token;
use crate::refresh::RefreshCache;
use crate::refresh::shared::{Portable, Refresher, SharedFailure, SharedRefresh};
use crate::state::redis::Redis;

type Refreshers = (Refresher<V2Token, ShimError>, Refresher<RawAnswer, V2Failure>, Option<Redis>);

/// The refresh caches `[state]` asks for, legacy and v2: both in process, or both shared through
/// one Redis connection (each under a key domain of its own). Needs a Tokio runtime for the
/// Redis backend.
pub(super) fn refreshers(config: &Config) -> Refreshers {
    let rc = &config.refresh_cache;
    let memory = || {
        (
            Refresher::Memory(RefreshCache::new(rc.ttl, rc.max_entries)),
            Refresher::Memory(RefreshCache::new(rc.ttl, rc.max_entries)),
            None,
        )
    };
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
            let keys = Arc::new(keys);
            let (ttl, max) = (rc.ttl, rc.max_entries);
            let legacy = SharedRefresh::new(redis.clone(), Arc::clone(&keys), "refresh", ttl, max);
            let v2 = SharedRefresh::new(redis.clone(), keys, "refresh-v2", ttl, max);
            (Refresher::Shared(legacy), Refresher::Shared(v2), Some(redis))
        }
        Err(e) => {
            tracing::error!(error = %e, "state: cannot use redis; refreshes use in-process state");
            memory()
        }
    }
}

/// A v2 refresh that is not served as a cacheable success.
#[derive(Debug, Clone)]
pub enum V2Failure {
    /// The upstream answered, but not with a token (returned to the caller as it came).
    Answer(Arc<RawAnswer>),
    /// No usable answer: oauth-shim's own error.
    Shim(ShimError),
}

impl crate::refresh::Refreshed for RawAnswer {
    fn lifetime(&self) -> Option<Duration> {
        #[derive(serde::Deserialize)]
        struct Expiry {
            expires_in: Option<u64>,
        }
        serde_json::from_slice::<Expiry>(&self.body).ok()?.expires_in.map(Duration::from_secs)
    }
}

impl crate::refresh::RefreshFailure for V2Failure {
    fn evicts(&self) -> bool {
        #[derive(serde::Deserialize)]
        struct RfcError {
            error: String,
        }
        match self {
            V2Failure::Answer(a) => {
                serde_json::from_slice::<RfcError>(&a.body).is_ok_and(|e| e.error == "invalid_grant")
            }
            V2Failure::Shim(_) => false,
        }
    }

    fn internal() -> Self {
        V2Failure::Shim(ShimError::internal())
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

/// The upstream's answer crosses replicas as it came (to the waiters of its flight only); an
/// error of oauth-shim's own as its class (see `ShimError`'s encoding).
impl Portable for V2Failure {
    fn encode(&self) -> Vec<u8> {
        let (tag, rest) = match self {
            V2Failure::Answer(a) => (b'a', a.encode()),
            V2Failure::Shim(e) => (b's', e.encode()),
        };
        let mut out = Vec::with_capacity(1 + rest.len());
        out.push(tag);
        out.extend_from_slice(&rest);
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        match bytes.split_first()? {
            (b'a', rest) => Some(V2Failure::Answer(Arc::new(RawAnswer::decode(rest)?))),
            (b's', rest) => Some(V2Failure::Shim(ShimError::decode(rest)?)),
            _ => None,
        }
    }
}

impl SharedFailure for V2Failure {
    fn timed_out() -> Self {
        V2Failure::Shim(ShimError::upstream_timeout())
    }
}

impl crate::refresh::Refreshed for V2Token {
    fn lifetime(&self) -> Option<std::time::Duration> {
        V2Token::lifetime(self)
    }
}

impl crate::refresh::RefreshFailure for ShimError {
    fn evicts(&self) -> bool {
        self.code == ErrorCode::InvalidGrant
    }

    fn internal() -> Self {
        ShimError::internal()
    }
}

impl Portable for V2Token {
    fn encode(&self) -> Vec<u8> {
        self.to_v2_json()
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        V2Token::parse(bytes).ok()
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

impl SharedFailure for ShimError {
    fn timed_out() -> Self {
        ShimError::upstream_timeout()
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
        let failure = V2Failure::decode(&V2Failure::Answer(Arc::new(answer)).encode()).expect("decodes");
        assert!(failure.evicts(), "invalid_grant still evicts on the waiter's replica");
        let shim = V2Failure::decode(&V2Failure::timed_out().encode()).expect("decodes");
        assert!(matches!(shim, V2Failure::Shim(e) if e.status == http::StatusCode::GATEWAY_TIMEOUT));
        for bad in [&b""[..], b"x", b"a\x00", b"a\x00\xc8\x00\x09ab"] {
            assert!(V2Failure::decode(bad).is_none());
        }
    }
}
