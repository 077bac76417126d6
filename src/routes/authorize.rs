//! `/oauth/authorize`: the browser step. A call with `response_type` is a v2 call: a `302` to the
//! selected provider's v2 authorize URL with the caller's query as sent, whoever the client.
//! A legacy call (no `response_type`) from a configured client becomes a `302` to the same URL
//! with `response_type=code` and the caller's parameters re-encoded. The `Location` host comes
//! only from configuration. Refusals are an error page, never a redirect (RFC 6749 §4.1.2.1).

use std::net::SocketAddr;

use http::header::{CACHE_CONTROL, HeaderValue, LOCATION};
use http::{Method, Request, Response, StatusCode};
use url::Url;

use super::summary::Summary;
use crate::app_state::State;
use crate::body::{self, Body};
use crate::config::ClientMode;
use crate::error::ShimError;
use crate::ops::Ops;
use crate::ops::migration::{Call, Feature};
use crate::provider::Provider;
use crate::routes::forward;
use crate::snapshot::Snapshot;

/// Parameters of a legacy call copied to the upstream authorize URL, in this order, after
/// `response_type` and `client_id`.
const FORWARDED: [&str; 5] = ["redirect_uri", "state", "scope", "code_challenge", "code_challenge_method"];

pub(crate) async fn handle(
    state: &State,
    snapshot: &Snapshot,
    provider: usize,
    req: Request<Body>,
    peer: SocketAddr,
    summary: &mut Summary,
) -> Result<Response<Body>, ShimError> {
    let provider = snapshot.provider(provider);
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(ShimError::method_not_allowed("GET, HEAD"));
    }
    if let Some(location) = v2_call(&state.ops, provider, req.uri().query(), summary) {
        return redirect(&location);
    }
    match plan(&state.ops, provider, &req, summary)? {
        Plan::Redirect(location) => redirect(&location),
        Plan::PassThrough => forward::forward(provider, snapshot, req, peer, summary).await,
    }
}

/// A call with a (non-empty) `response_type` is a v2 call, as the v2 write-ups make it: the
/// provider's authorize URL with the caller's query appended as it came (bytes outside ASCII
/// percent-encoded, so the `Location` stays ASCII), unknown client or not, every parameter
/// kept. Recorded as a v2-native call of the client it names when that is a configured client,
/// else as an unattributed one (caller input never adds a row to the report). `None` for a
/// legacy call.
fn v2_call(ops: &Ops, provider: &Provider, query: Option<&str>, summary: &mut Summary) -> Option<String> {
    let query = query.unwrap_or("");
    let (mut v2, mut client_id, mut clients) = (false, None, 0);
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "response_type" if !v.is_empty() => v2 = true,
            "client_id" if client_id.as_deref() != Some(&*v) => {
                clients += 1;
                client_id = Some(v);
            }
            _ => {}
        }
    }
    if !v2 {
        return None;
    }
    let configured = client_id.filter(|_| clients == 1).and_then(|id| provider.client(&id));
    match configured {
        Some((client, _)) => {
            let call = Call::default().with(Feature::V2Native, true);
            ops.migration.record(&provider.name, &client.id, true, call);
            summary.client = Some(client.id.clone());
        }
        None => ops.migration.record_unattributed_v2(),
    }
    let url = &provider.authorize_url;
    let (base, fragment) = url.split_at(url.find('#').unwrap_or(url.len()));
    let mut location = String::with_capacity(url.len() + query.len() + 1);
    location.push_str(base);
    if !query.is_empty() {
        location.push(if base.contains('?') { '&' } else { '?' });
        for part in percent_encoding::percent_encode(query.as_bytes(), NON_ASCII) {
            location.push_str(part);
        }
    }
    location.push_str(fragment);
    Some(location)
}

/// Only bytes outside ASCII are encoded; the query's ASCII bytes (already valid in a URI) stay.
const NON_ASCII: &percent_encoding::AsciiSet = &percent_encoding::AsciiSet::EMPTY;

enum Plan {
    Redirect(String),
    PassThrough,
}

/// A legacy call: the client must be configured; only then is the call recorded.
fn plan(
    ops: &Ops,
    provider: &Provider,
    req: &Request<Body>,
    summary: &mut Summary,
) -> Result<Plan, ShimError> {
    // Bad bytes in any parameter (broken escapes, invalid UTF-8, control characters) are
    // refused before any is read, as on the token call.
    crate::legacy::check_form(req.uri().query().unwrap_or("").as_bytes())?;
    let mut values: [Option<String>; 6] = Default::default();
    let names = ["client_id", FORWARDED[0], FORWARDED[1], FORWARDED[2], FORWARDED[3], FORWARDED[4]];
    for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        let Some(i) = names.iter().position(|n| *n == k) else { continue };
        if v.is_empty() {
            continue;
        }
        if values[i].replace(v.into_owned()).is_some() {
            return Err(ShimError::invalid_request(format!("parameter {} is repeated", names[i])));
        }
    }
    let [client_id, mut redirect_uri, rest @ ..] = values;
    let client_id =
        client_id.ok_or_else(|| ShimError::invalid_request("missing required parameter client_id"))?;
    let Some((client, _)) = provider.client(&client_id) else {
        summary.client = Some("unknown".into());
        return Err(ShimError::invalid_client("unknown client_id").status(StatusCode::BAD_REQUEST));
    };
    summary.client = Some(client.id.clone());
    let call = Call::default()
        .with(Feature::AuthorizeWithoutResponseType, true)
        .with(Feature::MissingRedirectUri, redirect_uri.is_none());
    ops.migration.record(&provider.name, &client.id, true, call);
    match client.mode {
        ClientMode::Rewrite => {}
        ClientMode::Passthrough => return Ok(Plan::PassThrough),
        ClientMode::Deny => {
            return Err(ShimError::unauthorized_client(
                "this client must migrate to the OAuth v2 API: legacy authorize calls are no longer accepted",
            ));
        }
    }
    if let Some(uri) = &redirect_uri {
        if !client.redirect_uri_allow.is_empty() && !client.redirect_uri_allow.iter().any(|a| a == uri) {
            return Err(ShimError::invalid_request("redirect_uri is not allowed for this client"));
        }
        if Url::parse(uri).is_err() {
            return Err(ShimError::invalid_request("redirect_uri is not an absolute URL"));
        }
    } else {
        redirect_uri = client.redirect_uri.clone();
    }

    let mut location = Url::parse(&provider.authorize_url).map_err(|_| ShimError::internal())?;
    {
        let mut q = location.query_pairs_mut();
        q.append_pair("response_type", "code");
        q.append_pair("client_id", &client.id);
        for (name, value) in FORWARDED.iter().zip(std::iter::once(&redirect_uri).chain(rest.iter())) {
            if let Some(v) = value {
                q.append_pair(name, v);
            }
        }
    }
    Ok(Plan::Redirect(location.into()))
}

fn redirect(location: &str) -> Result<Response<Body>, ShimError> {
    let location = HeaderValue::from_str(location).map_err(|_| ShimError::internal())?;
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::FOUND;
    let h = resp.headers_mut();
    h.insert(LOCATION, location);
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}
