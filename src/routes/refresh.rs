//! Refresh grants of both token routes: one flight per refresh token of one client of one provider,
//! whichever route asks (docs/protocol.md#refreshes), and an answer served only to a caller whose
//! proof it matches.
//!
//! The flight's answer (or failure) carries the [`Proof`] of the call that got it. A caller is
//! served it when
//! - it is a success and the caller is a legacy caller (the configured client, its secret, if it
//!   sent one, already checked: oauth-shim would lend it the configured secret anyway), or the
//!   proofs are equal (a v2 caller presenting the same secret, or none for a public client);
//! - it is a failure of oauth-shim's own (no answer, a timeout: not about credentials), or the
//!   upstream's answer to a call with an equal proof.
//!
//! A v2 caller whose proof differs from a success's is refused (`invalid_client`): the refresh
//! token has been spent, and sending it upstream again would spend it twice. A caller whose
//! proof differs from the upstream's refusal of another call makes its own call, outside the
//! flight.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

use crate::app_state::{RefreshError, State, TokenAnswer};
use crate::error::ShimError;
use crate::oauth::{Secret, TraceHeaders, note_trouble, parse_answer, raw_token_call};
use crate::refresh::{Proof, Served, Source};
use crate::snapshot::Snapshot;

/// One refresh grant, as a token route hands it over: whose, which token, and the upstream call
/// that spends it.
pub(crate) struct Refresh<'a> {
    pub(crate) provider_index: usize,
    pub(crate) client_id: &'a str,
    pub(crate) refresh_token: &'a Secret,
    /// The v2 form and the `Authorization` header of the upstream call, and the trace headers
    /// it carries (borrowed: the leader's call clones them).
    pub(crate) form: &'a Secret,
    pub(crate) auth: &'a Option<HeaderValue>,
    pub(crate) trace: &'a TraceHeaders,
    /// The credentials the call carries.
    pub(crate) proof: Proof,
    /// A legacy caller (served any success of its client's token).
    pub(crate) legacy: bool,
}

/// Serve `call` through the refresh flight, as the module says.
pub(crate) async fn serve(
    state: &State,
    snapshot: &Arc<Snapshot>,
    call: Refresh<'_>,
) -> Result<Served<TokenAnswer>, RefreshError> {
    let provider = snapshot.provider(call.provider_index);
    // Only the caller that starts the upstream call runs this, so cache hits and joined callers
    // clone nothing for it.
    let fetch = || {
        let (snapshot, form, auth, trace) =
            (Arc::clone(snapshot), call.form.clone(), call.auth.clone(), call.trace.clone());
        let latency = state.ops.metrics.upstream_histogram("token");
        let (index, proof) = (call.provider_index, call.proof);
        // Boxed: the upstream call's future is large, and the spawned task (and every move of
        // it on the way into the runtime) would otherwise carry all of it inline.
        Box::pin(async move {
            let started = std::time::Instant::now();
            let result = upstream(&snapshot, index, auth, &form, trace, proof).await;
            latency.observe(started.elapsed().as_secs_f64());
            result
        })
    };
    let scope = provider.refresh_scope(call.client_id);
    let deadline = snapshot.config.upstream.request_timeout;
    let served = state.refresh.get_or_refresh(&scope, call.refresh_token.expose(), deadline, fetch).await;
    let for_caller = match &served {
        Ok(served) => call.legacy || served.value.proof() == call.proof,
        Err(RefreshError::Answer { proof, .. }) => *proof == call.proof,
        Err(RefreshError::Shim(_)) => true,
    };
    if for_caller {
        return served;
    }
    if served.is_ok() {
        return Err(RefreshError::Shim(ShimError::invalid_client("client authentication failed")));
    }
    drop(served);
    let (auth, trace) = (call.auth.clone(), call.trace.clone());
    let answer =
        Box::pin(upstream(snapshot, call.provider_index, auth, call.form, trace, call.proof)).await?;
    Ok(Served { value: answer, age: Duration::ZERO, source: Source::Upstream })
}

/// The upstream call of a refresh: a token (with the answer as it came), or why not.
async fn upstream(
    snapshot: &Snapshot,
    provider_index: usize,
    auth: Option<HeaderValue>,
    form: &Secret,
    trace: TraceHeaders,
    proof: Proof,
) -> Result<TokenAnswer, RefreshError> {
    let provider = snapshot.provider(provider_index);
    let cfg = snapshot.config.upstream.call_limits();
    let answer = raw_token_call(&provider.token_client, &provider.token_url, auth, form, &cfg, trace)
        .await
        .map_err(RefreshError::Shim)?;
    let parsed = parse_answer(answer.status, &answer.body, answer.retry_after.clone());
    note_trouble(&provider.token_url, answer.status, &parsed);
    match parsed {
        Ok(token) => Ok(TokenAnswer::new(answer, token, proof)),
        Err(_) => Err(RefreshError::Answer { answer: Arc::new(answer), proof }),
    }
}

/// What a legacy caller makes of a failed refresh: oauth-shim's own error, or the error the
/// upstream's answer maps to.
pub(crate) fn legacy_error(error: RefreshError) -> ShimError {
    match error {
        RefreshError::Shim(e) => e,
        RefreshError::Answer { answer, .. } => {
            parse_answer(answer.status, &answer.body, answer.retry_after.clone())
                .err()
                .unwrap_or_else(ShimError::upstream_garbage)
        }
    }
}
