//! `/oauth/authorize`: the browser step. A legacy call (no `response_type`) becomes a `302` to the
//! selected provider's v2 authorize URL with `response_type=code` and the caller's parameters re-encoded.
//! The `Location` host comes only from configuration. Refusals are an error page, never a
//! redirect (RFC 6749 §4.1.2.1).

use std::net::SocketAddr;

use http::header::{CACHE_CONTROL, HeaderValue, LOCATION};
use http::{Method, Request, Response, StatusCode};
use url::Url;

use super::outcome::Outcome;
use crate::body::{self, Body};
use crate::config::ClientMode;
use crate::error::ShimError;
use crate::ops::Ops;
use crate::ops::migration::{Call, Feature};
use crate::provider::Provider;
use crate::routes::forward;
use crate::runtime::Runtime;
use crate::services::Shared;

/// Parameters copied to the upstream authorize URL, in this order, after `response_type` and
/// `client_id`.
const FORWARDED: [&str; 5] = ["redirect_uri", "state", "scope", "code_challenge", "code_challenge_method"];

pub async fn handle(
    shared: &Shared,
    rt: &Runtime,
    provider: usize,
    req: Request<Body>,
    peer: SocketAddr,
    outcome: &mut Outcome,
) -> Result<Response<Body>, ShimError> {
    let provider = rt.provider(provider);
    record(&shared.ops, provider, req.uri().query());
    match plan(provider, &req, outcome)? {
        Plan::Redirect(location) => redirect(&location),
        Plan::PassThrough => forward::forward(provider, rt, req, peer, outcome).await,
    }
}

enum Plan {
    Redirect(String),
    PassThrough,
}

fn plan(provider: &Provider, req: &Request<Body>, outcome: &mut Outcome) -> Result<Plan, ShimError> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(ShimError::method_not_allowed("GET, HEAD"));
    }
    // Bad bytes in any parameter (broken escapes, invalid UTF-8, control characters) are
    // refused before any is read, as on the token call.
    crate::legacy::check_form(req.uri().query().unwrap_or("").as_bytes())?;
    let mut values: [Option<String>; 7] = Default::default();
    let names =
        ["client_id", "response_type", FORWARDED[0], FORWARDED[1], FORWARDED[2], FORWARDED[3], FORWARDED[4]];
    for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        let Some(i) = names.iter().position(|n| *n == k) else { continue };
        if v.is_empty() {
            continue;
        }
        if values[i].replace(v.into_owned()).is_some() {
            return Err(ShimError::invalid_request(format!("parameter {} is repeated", names[i])));
        }
    }
    let [client_id, response_type, mut redirect_uri, rest @ ..] = values;
    if response_type.as_deref().is_some_and(|t| t != "code") {
        return Err(ShimError::invalid_request("response_type must be code"));
    }
    let client_id =
        client_id.ok_or_else(|| ShimError::invalid_request("missing required parameter client_id"))?;
    let Some((client, _)) = provider.client(&client_id) else {
        outcome.client = Some("unknown".into());
        return Err(ShimError::invalid_client("unknown client_id").status(StatusCode::BAD_REQUEST));
    };
    outcome.client = Some(client.id.clone());
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

/// Record a legacy `/oauth/authorize` call from its query string in the migration report.
fn record(ops: &Ops, provider: &Provider, query: Option<&str>) {
    let (mut client_id, mut response_type, mut redirect_uri) = (None, false, false);
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if v.is_empty() {
            continue;
        }
        match &*k {
            "client_id" if client_id.is_none() => client_id = Some(v.into_owned()),
            "response_type" => response_type = true,
            "redirect_uri" => redirect_uri = true,
            _ => {}
        }
    }
    let Some(id) = client_id else { return };
    let call = Call::default()
        .with(Feature::AuthorizeWithoutResponseType, !response_type)
        .with(Feature::MissingRedirectUri, !redirect_uri);
    ops.migration.record(&provider.name, &id, provider.client(&id).is_some(), call);
}
