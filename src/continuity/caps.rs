//! Fair limits on sessions: a login that would create a session first takes a place among the
//! sessions, under three caps (`[continuity] max_sessions` for all, `max_sessions_per_client`,
//! and `max_sessions_per_user` when the login names its user), before its upstream call, so a
//! login over a cap is refused without spending its code or password. The session created for
//! the login takes the place over; a login that fails gives it back.

use super::backend::{Admission, Backend};
use super::service::{Continuity, keys};
use super::session::{SessionId, now};
use super::store::{Cap, Over};
use crate::config::ClientConfig;
use crate::error::{ErrorCode, ErrorSource, ShimError};
use crate::snapshot::Snapshot;

/// Domain of the keyed hashes that name whom a session counts against.
const OWNER_HASH_DOMAIN: &str = "continuity-owner";

impl Continuity {
    /// Take a place for a login of `client` (by `user`, when the login names one: the
    /// password grant's `user_id`, compared case-insensitively) that would create a session,
    /// or refuse it. Called before the login's upstream call.
    pub(crate) async fn admit(
        &self,
        snapshot: &Snapshot,
        client: &ClientConfig,
        user: Option<&str>,
    ) -> Result<Admission, ShimError> {
        let keys = keys(snapshot)?;
        let limits = &snapshot.config.continuity;
        let owners = |parts: &[&[u8]]| keys.hashes(OWNER_HASH_DOMAIN, parts).collect::<Vec<_>>();
        let mut caps = vec![Cap {
            owners: owners(&[b"client", client.id.as_bytes()]),
            max: limits.max_sessions_per_client,
            over: Over::Client,
        }];
        if let Some(user) = user {
            let user = user.trim().to_lowercase();
            caps.push(Cap {
                owners: owners(&[b"user", client.id.as_bytes(), user.as_bytes()]),
                max: limits.max_sessions_per_user,
                over: Over::User,
            });
        }
        let id = SessionId::random();
        let now = now();
        let refused = match &self.store {
            Backend::Embedded(e) => e.reserve(id, now, limits.max_sessions, &caps),
            Backend::Redis(r) => {
                // Longer than the login's upstream call (and its wait for another's refresh).
                let until = now.saturating_add(2 * self.lock_hold.as_secs() + 1);
                r.reserve(id, now, until, limits.max_sessions, &caps).await
            }
        };
        if let Some(over) = refused.map_err(|e| self.store_failed(e))? {
            self.metrics.continuity_refused_login(over.as_str());
            tracing::warn!(client = %client.id, cap = over.as_str(), "a continuity session cap is reached; token call refused before the upstream call");
            return Err(refusal(over));
        }
        Ok(Admission::new(id, caps.iter().map(|c| c.owners[0]).collect(), self.store.clone()))
    }
}

/// The answer to a login over a cap: the store full is the service's condition (503, as when
/// it is down); a client or user over its share is the caller's (429).
fn refusal(over: Over) -> ShimError {
    let (status, description) = match over {
        Over::All => (http::StatusCode::SERVICE_UNAVAILABLE, "too many sessions; retry later"),
        Over::Client => (http::StatusCode::TOO_MANY_REQUESTS, "this client holds too many sessions"),
        Over::User => {
            (http::StatusCode::TOO_MANY_REQUESTS, "this user holds too many sessions with this client")
        }
    };
    let source = if over == Over::All { ErrorSource::Internal } else { ErrorSource::Downstream };
    ShimError::new(ErrorCode::TemporarilyUnavailable, status, source, description)
}
