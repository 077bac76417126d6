//! A `POST` to the selected provider's token path (e.g. `/oauth/v2/token`, `/oauth/token`): a
//! client that already speaks v2 (docs/protocol.md#v2-token-calls). A call with a JSON body or with
//! `client_id` / `client_secret` among its parameters is normalised into the call the provider
//! accepts: a form body with every parameter as sent, the caller's credentials moved into the Basic
//! header or the form as the provider wants. A v2 call carries its own credentials: oauth-shim
//! never adds the secret it holds for a configured client (only the legacy route lends it).
//! The upstream's answer goes back as it came (status, body, plus `Cache-Control: no-store`).
//! Refreshes go through the flight both token routes share (`routes::refresh`), keyed by
//! provider, client id and refresh token, and served only to a caller presenting the proof (the
//! same secret, or none) of the call that got the answer. A call already correct is forwarded
//! unchanged to the token URL.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Request, Response};

use super::summary::Summary;
use super::{forward, legacy_token};
use crate::app_state::{RefreshError, State};
use crate::body::{self, Body};
use crate::config::{ClientAuth, ClientMode};
use crate::continuity::minted::{self, Carried};
use crate::error::ShimError;
use crate::legacy::{self, BodyKind};
use crate::oauth::{RawAnswer, Secret, basic_auth_header_with, raw_token_call};
use crate::ops::Ops;
use crate::ops::migration::{Call, Feature};
use crate::provider::Provider;
use crate::refresh::Proof;
use crate::routes::refresh::{self, Refresh};
use crate::snapshot::Snapshot;

/// Serve a v2 token call.
pub(crate) async fn handle(
    state: &State,
    snapshot: &Arc<Snapshot>,
    provider_index: usize,
    req: Request<Body>,
    peer: SocketAddr,
    summary: &mut Summary,
) -> Result<Response<Body>, ShimError> {
    let provider = snapshot.provider(provider_index);
    let (parts, body) = req.into_parts();
    // A minted token is never sent upstream: not in the headers or query, checked before the
    // body is read, nor among the body's parameters, checked once they are parsed.
    if minted::carried(&parts.headers, parts.uri.query()) != Carried::Nowhere {
        let e = crate::continuity::invalid_token();
        let unread = parts.version < http::Version::HTTP_2 && !http_body::Body::is_end_stream(&body);
        return Err(if unread { e.closing() } else { e });
    }
    let content_type = parts.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if !readable(content_type) {
        // Not a body oauth-shim can read (nor one a v2 token endpoint takes): as it came.
        let req = Request::from_parts(parts, body);
        return Box::pin(forward::forward_to_token_url(provider, snapshot, req, peer, summary)).await;
    }
    let server = &snapshot.config.server;
    let bytes =
        legacy_token::read_body(&parts, body, server.max_body_bytes, server.body_read_timeout).await?;
    let trace = crate::oauth::TraceHeaders::from_headers(&parts.headers);
    let auth_header = parts.headers.get(AUTHORIZATION).map(HeaderValue::as_bytes);
    let (params, kind) = legacy::collect(parts.uri.query(), content_type, &bytes, auth_header)?;
    let pairs = legacy::all_pairs(parts.uri.query(), kind, &bytes)?;
    if pairs.iter().any(|(_, v)| minted::starts(v.as_bytes())) {
        return Err(crate::continuity::invalid_token());
    }
    let is_credential = |k: &str| k == "client_id" || k == "client_secret";
    if kind != BodyKind::Json && !pairs.iter().any(|(k, _)| is_credential(k)) {
        summary.client = record_v2_native(&state.ops, provider, &parts.headers);
        let req = Request::from_parts(parts, body::full(bytes));
        return Box::pin(forward::forward_to_token_url(provider, snapshot, req, peer, summary)).await;
    }

    let client_id = params.client_id.as_deref();
    let configured = client_id.and_then(|id| provider.client(id));
    if let Some(id) = client_id {
        let call = Call::default()
            .with(Feature::V2Normalised, true)
            .with(Feature::ClientSecretSent, params.client_secret.is_some());
        state.ops.migration.record(&provider.name, id, configured.is_some(), call);
        summary.client = Some(configured.map_or_else(|| "unknown".into(), |(c, _)| c.id.clone()));
    }
    if let Some((client, _)) = configured {
        match client.mode {
            ClientMode::Rewrite => {}
            ClientMode::Passthrough => {
                let req = Request::from_parts(parts, body::full(bytes));
                return Box::pin(forward::forward_to_token_url(provider, snapshot, req, peer, summary)).await;
            }
            ClientMode::Deny => {
                return Err(ShimError::unauthorized_client(
                    "this client is refused by oauth-shim's configuration (mode deny)",
                ));
            }
        }
    }
    let presented = params.client_secret.as_ref();
    if client_id.is_none() && presented.is_some() {
        return Err(ShimError::invalid_client("client_secret sent without client_id"));
    }

    let (form, auth) = upstream_form(provider, &pairs, client_id, presented);
    drop((parts, bytes));
    let cfg = &snapshot.config.upstream.call_limits();

    if params.grant_type.as_deref() == Some("refresh_token")
        && let Some(refresh_token) = &params.refresh_token
    {
        let proof = match (presented, configured) {
            (None, _) => Proof::Public,
            (Some(sent), Some((client, _))) if client.secret().ct_eq(sent.expose()) => Proof::Configured,
            (Some(sent), _) => state.refresh.proof(sent.expose()),
        };
        let call = Refresh {
            provider_index,
            client_id: client_id.unwrap_or_default(),
            refresh_token,
            form: &form,
            auth: &auth,
            trace: &trace,
            proof,
            legacy: false,
        };
        return match Box::pin(refresh::serve(state, snapshot, call)).await {
            Ok(served) => {
                summary.detail = Some(served.source.as_str());
                summary.upstream_status = Some(served.value.answer().status);
                Ok(respond(served.value.answer(), served.age))
            }
            Err(RefreshError::Answer { answer, .. }) => {
                summary.upstream_status = Some(answer.status);
                Ok(respond(&answer, Duration::ZERO))
            }
            Err(RefreshError::Shim(e)) => Err(e),
        };
    }

    let started = std::time::Instant::now();
    let answer =
        Box::pin(raw_token_call(&provider.token_client, &provider.token_url, auth, &form, cfg, trace)).await;
    summary.upstream_latency = Some(started.elapsed());
    let answer = answer?;
    summary.upstream_status = Some(answer.status);
    Ok(respond(&answer, Duration::ZERO))
}

/// The form the provider gets: every parameter as sent but the credentials, which go in the
/// Basic header or the form as the provider wants. `secret` is the one the caller presented, if
/// any; without one the call is a public client's (its id in the form, no secret anywhere).
fn upstream_form(
    provider: &Provider,
    pairs: &[(String, String)],
    client_id: Option<&str>,
    secret: Option<&Secret>,
) -> (Secret, Option<HeaderValue>) {
    let mut form = form_urlencoded::Serializer::new(String::with_capacity(256));
    for (k, v) in pairs.iter().filter(|(k, _)| k != "client_id" && k != "client_secret") {
        form.append_pair(k, v);
    }
    let auth = match (client_id, secret, provider.client_auth) {
        (Some(id), Some(secret), ClientAuth::ClientSecretBasic) => {
            Some(basic_auth_header_with(id, secret, provider.encoding))
        }
        (Some(id), Some(secret), ClientAuth::ClientSecretPost) => {
            form.append_pair("client_id", id);
            form.append_pair("client_secret", secret.expose());
            None
        }
        (Some(id), None, _) => {
            form.append_pair("client_id", id);
            None
        }
        (None, _, _) => None,
    };
    (Secret::new(form.finish()), auth)
}

/// Bodies oauth-shim reads on the token path: none, a form, or JSON.
fn readable(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return true };
    let essence = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/x-www-form-urlencoded"
        || essence == "application/json"
        || essence.ends_with("+json")
}

/// The upstream's answer as it came, plus `Cache-Control: no-store`. An answer replayed from the
/// refresh cache states its remaining lifetime in `expires_in`.
fn respond(answer: &RawAnswer, age: Duration) -> Response<Body> {
    let body =
        if age.as_secs() > 0 { with_remaining_lifetime(&answer.body, age) } else { answer.body.clone() };
    let mut resp = Response::new(body::full(body));
    *resp.status_mut() = answer.status;
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        answer.content_type.clone().unwrap_or_else(|| HeaderValue::from_static("application/json")),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(v) = &answer.retry_after {
        h.insert(RETRY_AFTER, v.clone());
    }
    resp
}

/// `body` with its integer `expires_in` lowered by `age` (field order kept).
fn with_remaining_lifetime(body: &bytes::Bytes, age: Duration) -> bytes::Bytes {
    let Ok(serde_json::Value::Object(mut map)) = serde_json::from_slice::<serde_json::Value>(body) else {
        return body.clone();
    };
    let Some(expires) = map.get("expires_in").and_then(serde_json::Value::as_u64) else {
        return body.clone();
    };
    map.insert("expires_in".into(), expires.saturating_sub(age.as_secs()).into());
    serde_json::to_vec(&map).map_or_else(|_| body.clone(), bytes::Bytes::from)
}

/// Record a v2 call (a pass-through request to `/oauth/v2/*`, or a v2 token call forwarded as
/// it came), attributed to the client its `Authorization: Basic` header names. Returns the
/// client id for the access log: the configured id, `unknown`, or `None` when no client was
/// named (or the header is not valid Basic credentials).
pub(crate) fn record_v2_native(ops: &Ops, provider: &Provider, headers: &http::HeaderMap) -> Option<String> {
    let call = Call::default().with(Feature::V2Native, true);
    let named = headers.get(AUTHORIZATION).and_then(|h| legacy::parse_basic(h.as_bytes()).ok().flatten());
    match named {
        Some((id, _)) if !id.is_empty() => {
            let configured = provider.client(&id).is_some();
            ops.migration.record(&provider.name, &id, configured, call);
            Some(if configured { id } else { "unknown".into() })
        }
        _ => {
            ops.migration.record_unattributed_v2();
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_states_remaining_lifetime_in_place() {
        let body = bytes::Bytes::from_static(br#"{"access_token":"a","expires_in":3600,"scope":"s"}"#);
        let out = with_remaining_lifetime(&body, Duration::from_secs(10));
        assert_eq!(&out[..], br#"{"access_token":"a","expires_in":3590,"scope":"s"}"#);
        assert_eq!(
            with_remaining_lifetime(&bytes::Bytes::from_static(b"nope"), Duration::from_secs(1)),
            "nope"
        );
    }

    #[test]
    fn reads_only_form_json_or_nothing() {
        assert!(readable(None));
        assert!(readable(Some("application/json; charset=utf-8")));
        assert!(readable(Some("Application/X-WWW-Form-Urlencoded")));
        assert!(!readable(Some("multipart/form-data; boundary=x")));
    }
}
