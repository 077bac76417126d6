//! Keeping a session's v2 token fresh: refreshed ahead of its expiry (in the background while
//! the request goes on, or first when it has expired), after an upstream 401, one refresh per
//! session at a time (across replicas with Redis).

use std::sync::Arc;

use super::errors::invalid_token;
use super::service::{Continuity, keys};
use super::session::{DEFAULT_V2_LIFETIME, Session, SessionId, now};
use crate::error::{ErrorCode, ShimError};
use crate::oauth::{Secret, TraceHeaders, token_call};
use crate::snapshot::Snapshot;
use crate::upstream::Upstream;

/// Why a refresh is being made (the metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// The token was still valid: refreshed in the background while the request went on.
    Background,
    /// The token had expired: the request waited for the refresh.
    Inline,
    /// The upstream answered 401 to a token we thought valid.
    Retry,
}

impl Trigger {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Background => "background",
            Self::Inline => "inline",
            Self::Retry => "retry",
        }
    }
}

impl Continuity {
    /// The session with a v2 access token fit to send now. A token past the refresh margin but
    /// still valid is used as it is while a background refresh runs; an expired one is
    /// refreshed first.
    pub async fn ensure_fresh(
        self: &Arc<Self>,
        token_client: &Upstream,
        snapshot: &Arc<Snapshot>,
        session: Session,
        trace: TraceHeaders,
    ) -> Result<Session, ShimError> {
        let remaining = session.v2_remaining(now()).unwrap_or(0);
        if remaining > margin(snapshot, &session) {
            return Ok(session);
        }
        if remaining > 1 {
            // A refresh of this session already under way here: nothing more to start.
            if self.lock(session.id).try_lock().is_err() {
                return Ok(session);
            }
            let (this, token_client, snapshot, id, used) = (
                Arc::clone(self),
                token_client.clone(),
                Arc::clone(snapshot),
                session.id,
                session.v2_access.clone(),
            );
            tokio::spawn(async move {
                let _ = this.refresh(&token_client, &snapshot, id, &used, Trigger::Background, trace).await;
            });
            return Ok(session);
        }
        self.refresh(token_client, snapshot, session.id, &session.v2_access, Trigger::Inline, trace).await
    }

    /// After the upstream refused `session`'s token with 401: refresh once (unless another
    /// request already did) and hand back the session with its new token.
    pub async fn refresh_after_401(
        self: &Arc<Self>,
        token_client: &Upstream,
        snapshot: &Arc<Snapshot>,
        session: &Session,
        trace: TraceHeaders,
    ) -> Result<Session, ShimError> {
        self.refresh(token_client, snapshot, session.id, &session.v2_access, Trigger::Retry, trace).await
    }

    /// Refresh the session's v2 token upstream, one refresh per session at a time (across
    /// replicas with Redis): under the session's lock the record is read again, and if its
    /// token is no longer `used` (someone refreshed it meanwhile) or not yet due, that one is
    /// returned instead.
    pub(super) async fn refresh(
        &self,
        token_client: &Upstream,
        snapshot: &Snapshot,
        id: SessionId,
        used: &Secret,
        trigger: Trigger,
        trace: TraceHeaders,
    ) -> Result<Session, ShimError> {
        let held = self.hold(id).await?;
        let result = self.refresh_held(token_client, snapshot, id, used, trigger, trace).await;
        held.release().await;
        result
    }

    async fn refresh_held(
        &self,
        token_client: &Upstream,
        snapshot: &Snapshot,
        id: SessionId,
        used: &Secret,
        trigger: Trigger,
        trace: TraceHeaders,
    ) -> Result<Session, ShimError> {
        let keys = keys(snapshot)?;
        let mut session = self.reload(keys, id).await?.ok_or_else(invalid_token)?;
        let now = now();
        let still_due =
            trigger == Trigger::Retry || session.v2_remaining(now).unwrap_or(0) <= margin(snapshot, &session);
        if session.v2_access != *used || !still_due {
            return Ok(session);
        }
        let Some((_, auth)) = snapshot.client(&session.client_id) else { return Err(invalid_token()) };
        let Some(v2_refresh) = session.v2_refresh.clone() else {
            // Nothing to refresh with: the session lives as long as its v2 token.
            self.end(keys, &session, "the upstream issued no refresh token").await;
            return Err(invalid_token());
        };
        self.metrics.continuity_refresh(trigger.as_str());
        let mut form = String::from("grant_type=refresh_token&refresh_token=");
        form.extend(form_urlencoded::byte_serialize(v2_refresh.expose().as_bytes()));
        let result = token_call(
            token_client,
            &snapshot.default_provider().token_url,
            Some(auth.clone()),
            &Secret::new(form),
            &snapshot.config.upstream.call_limits(),
            trace,
        )
        .await
        .result;
        let token = match result {
            Ok(t) => t,
            Err(e) if e.code == ErrorCode::InvalidGrant => {
                self.metrics.continuity_refresh_failure("invalid_grant");
                self.end(keys, &session, "the upstream refused the refresh token (invalid_grant)").await;
                return Err(invalid_token());
            }
            Err(e) => {
                self.metrics.continuity_refresh_failure("upstream");
                tracing::warn!(session = ?id, client = %session.client_id, error = %e, "continuity refresh failed");
                return Err(e);
            }
        };
        let v2_lifetime = token.lifetime().map_or(DEFAULT_V2_LIFETIME, |d| d.as_secs());
        session.v2_access = token.access_token().clone();
        if let Some(r) = token.refresh_token() {
            session.v2_refresh = Some(r.clone());
        }
        session.v2_expires_at = Some(now.saturating_add(v2_lifetime));
        session.v2_lifetime = Some(v2_lifetime);
        session.refreshes += 1;
        self.put(keys, &session, Vec::new(), Vec::new()).await?;
        Ok(session)
    }
}

/// When a session's v2 token is due for refresh: `[continuity] refresh_margin` before its
/// expiry, at most half its lifetime.
fn margin(snapshot: &Snapshot, session: &Session) -> u64 {
    let lifetime = session.v2_lifetime.unwrap_or(DEFAULT_V2_LIFETIME);
    snapshot.config.continuity.refresh_margin.as_secs().min(lifetime / 2)
}
