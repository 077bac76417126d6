//! A token oauth-shim minted never reaches the upstream: wherever a request carries one (an
//! `Authorization` header in any spelling, the query, a token call's parameters), whatever the
//! config, and also after continuity has been turned off, the request is served by the
//! continuity path or refused with `401 invalid_token` before anything is sent upstream.
//!
//! Each probe prints what it got and what reached the upstream (`--nocapture`).

use oauth_shim::config::ClientMode;
use oauth_shim::devtools::standin::{Recorded, TOKEN_PATH};
use serde_json::Value;

use crate::continuity::{api_bearers, password_grant, start};
use crate::support::*;

/// What one request got, and what the upstream received meanwhile.
struct Seen {
    status: u16,
    body: String,
    challenge: String,
    /// Requests the stand-in (token endpoint and API) received.
    upstream: usize,
    /// Whether any of them carried a minted token.
    leaked: bool,
}

/// Whether a request the stand-in received carries a minted token anywhere.
fn carries_minted(r: &Recorded) -> bool {
    let minted = |text: &str| {
        let text = text.to_ascii_lowercase();
        ["osh_at_", "osh_rt_", "osh%5fat%5f", "osh%5frt%5f"].iter().any(|p| text.contains(p))
    };
    minted(&r.path)
        || r.query.as_deref().is_some_and(minted)
        || r.headers.values().any(|v| minted(&String::from_utf8_lossy(v.as_bytes())))
        || minted(&String::from_utf8_lossy(&r.body))
}

async fn probe(h: &Harness, label: &str, req: reqwest::RequestBuilder) -> Seen {
    let before = h.standin.requests().len();
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let challenge =
        resp.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let body = resp.text().await.unwrap();
    let sent = h.standin.requests().split_off(before);
    let leaked = sent.iter().any(carries_minted);
    println!("{label}: {status} {body} | upstream requests: {}, minted token upstream: {leaked}", sent.len());
    Seen { status, body, challenge, upstream: sent.len(), leaked }
}

/// The refusal of the contract: 401, the RFC 6750 challenge, the legacy error shape, and
/// nothing sent upstream.
fn assert_refused(label: &str, seen: &Seen) {
    assert_eq!(seen.status, 401, "{label}: {}", seen.body);
    assert_eq!(seen.challenge, r#"Bearer realm="oauth-shim", error="invalid_token""#, "{label}");
    let body: Value = serde_json::from_str(&seen.body).unwrap();
    assert_eq!(body["error"], "invalid_token", "{label}");
    assert_eq!(body["int_err_code"], "InvalidToken", "{label}");
    assert!(body["msg"].as_str().is_some_and(|m| !m.is_empty()), "{label}");
    assert_eq!(seen.upstream, 0, "{label}: nothing reaches the upstream");
    assert!(!seen.leaked, "{label}");
}

/// A continuity harness and a minted (access, refresh) pair from it.
async fn minted(name: &str) -> (Harness, String, String) {
    let (h, _store) = start(name, 3600, "5m").await;
    let legacy = password_grant(&h).await;
    let access = legacy["access_token"].as_str().unwrap().to_owned();
    let refresh = legacy["refresh_token"].as_str().unwrap().to_owned();
    (h, access, refresh)
}

/// Turn continuity off for the default client (and so for every client), optionally changing
/// its mode: the minted tokens are still out there.
fn continuity_off(h: &Harness, mode: ClientMode) {
    let mut config = h.app.snapshot().config.clone();
    config.clients[0].continuity = false;
    config.clients[0].mode = mode;
    h.app.swap_snapshot(oauth_shim::snapshot::Snapshot::new(config.validated().unwrap()).unwrap());
    assert!(!h.app.snapshot().continuity);
}

#[tokio::test]
async fn a_minted_bearer_token_on_the_v2_token_path_is_refused() {
    let (h, access, _) = minted("v2-bearer").await;
    // A v2 call without body credentials would be forwarded as it came, header included.
    let form = "grant_type=client_credentials";
    let url = h.url(TOKEN_PATH);
    for (label, req) in [
        ("v2 token path, Bearer", http().post(&url).bearer_auth(&access)),
        ("v2 token path, query", http().post(format!("{url}?access_token={access}"))),
    ] {
        let req = req.header("content-type", "application/x-www-form-urlencoded").body(form);
        assert_refused(label, &probe(&h, label, req).await);
    }
}

#[tokio::test]
async fn a_minted_refresh_token_in_a_v2_refresh_is_refused() {
    let (h, _, refresh) = minted("v2-refresh").await;
    let url = h.url(TOKEN_PATH);
    let json = serde_json::json!({
        "grant_type": "refresh_token", "refresh_token": refresh, "client_id": ID, "client_secret": SECRET,
    });
    let label = "v2 JSON refresh";
    assert_refused(label, &probe(&h, label, http().post(&url).json(&json)).await);
    let form = format!("grant_type=refresh_token&refresh_token={refresh}&client_id={ID}");
    let req = http().post(&url).header("content-type", "application/x-www-form-urlencoded").body(form);
    let label = "v2 form refresh";
    assert_refused(label, &probe(&h, label, req).await);
}

#[tokio::test]
async fn a_passthrough_clients_legacy_call_with_a_minted_token_is_refused() {
    let (h, access, refresh) = minted("passthrough").await;
    // The client leaves continuity for passthrough: its integration still holds minted tokens.
    continuity_off(&h, ClientMode::Passthrough);
    let legacy = "/oauth/access_token?grant_type=refresh_token";
    let label = "passthrough client, legacy refresh";
    let req = http().get(h.url(&format!("{legacy}&refresh_token={refresh}&client_id={ID}")));
    assert_refused(label, &probe(&h, label, req).await);
    let label = "passthrough client, JSON body";
    let req = http()
        .post(h.url("/oauth/access_token"))
        .json(&serde_json::json!({"grant_type": "refresh_token", "refresh_token": refresh, "client_id": ID}));
    assert_refused(label, &probe(&h, label, req).await);
    let label = "passthrough client, Bearer";
    let req =
        http().get(h.url(&format!("{legacy}&refresh_token=upstream-rt&client_id={ID}"))).bearer_auth(&access);
    assert_refused(label, &probe(&h, label, req).await);
    // Without a minted token the client's calls are forwarded as before.
    let seen = probe(
        &h,
        "passthrough client, no minted token",
        http().get(h.url(&format!("{legacy}&refresh_token=upstream-rt&client_id={ID}"))),
    )
    .await;
    assert_eq!(seen.upstream, 1);
}

#[tokio::test]
async fn a_rewrite_clients_legacy_call_never_sends_a_minted_token_upstream() {
    let (h, access, refresh) = minted("rewrite").await;
    for (label, query) in [
        (
            "legacy refresh, minted access token as refresh token",
            format!("grant_type=refresh_token&refresh_token={access}"),
        ),
        ("legacy code grant, minted code", format!("grant_type=authorization_code&code={access}")),
        (
            "legacy password grant, minted user_id",
            format!("grant_type=password&user_id={refresh}&password=p"),
        ),
    ] {
        let req = http().get(h.url(&format!("/oauth/access_token?{query}&client_id={ID}")));
        assert_refused(label, &probe(&h, label, req).await);
    }
    // With continuity off, the minted refresh token is refused too, not looked up.
    continuity_off(&h, ClientMode::Rewrite);
    let label = "legacy refresh, continuity off";
    let req = http().get(h.url(&format!(
        "/oauth/access_token?grant_type=refresh_token&refresh_token={refresh}&client_id={ID}"
    )));
    assert_refused(label, &probe(&h, label, req).await);
}

#[tokio::test]
async fn a_minted_bearer_token_is_refused_once_continuity_is_off_everywhere() {
    let (h, access, refresh) = minted("off").await;
    assert_eq!(api(&h, &access).await, 200);
    continuity_off(&h, ClientMode::Rewrite);
    let url = h.url("/G2W/rest/v2/organizers/1/webinars");
    for (label, req) in [
        ("pass-through, Bearer, continuity off", http().get(&url).bearer_auth(&access)),
        ("pass-through, Bearer refresh token, continuity off", http().get(&url).bearer_auth(&refresh)),
        (
            "pass-through, OAuth oauth_token=, continuity off",
            http().get(&url).header("authorization", format!("OAuth oauth_token={access}")),
        ),
        ("pass-through, query, continuity off", http().get(format!("{url}?access_token={access}"))),
    ] {
        assert_refused(label, &probe(&h, label, req).await);
    }
    // Other bearer tokens still pass through.
    assert_eq!(api_bearers(&h).len(), 1);
    assert_eq!(api(&h, "upstream-issued-token").await, 401, "the stand-in's verdict");
    assert_eq!(api_bearers(&h).last().unwrap(), "upstream-issued-token");
}

async fn api(h: &Harness, token: &str) -> u16 {
    crate::continuity::api(h, token).await.status().as_u16()
}

#[tokio::test]
async fn other_spellings_are_refused_and_the_standard_one_served_never_forwarded() {
    let (h, access, _) = minted("spellings").await;
    let url = h.url("/G2W/rest/v2/organizers/1/webinars");
    let auth = |v: String| http().get(&url).header("authorization", v);
    for (label, req) in [
        ("Authorization: OAuth oauth_token=", auth(format!("OAuth oauth_token={access}"))),
        (
            "Authorization: OAuth oauth_token=\"\"",
            auth(format!("OAuth oauth_consumer_key=\"k\", oauth_token=\"{access}\"")),
        ),
        ("Authorization: bare token", auth(access.clone())),
        ("Authorization: Bearer, then more", auth(format!("Bearer {access} x"))),
        ("Authorization: Token", auth(format!("Token {access}"))),
        ("query access_token=", http().get(format!("{url}?access_token={access}"))),
        ("query, percent-encoded", http().get(format!("{url}?t={}", access.replace('_', "%5F")))),
        ("Bearer and query", http().get(format!("{url}?access_token={access}")).bearer_auth(&access)),
        ("two Authorization headers", auth(format!("Bearer {access}")).header("authorization", "Basic eDp5")),
    ] {
        assert_refused(label, &probe(&h, label, req).await);
    }
    // The standard spelling, in any case and with tabs, is served: the upstream sees the v2
    // token only.
    for (label, value) in [
        ("Authorization: Bearer<TAB>", format!("Bearer\t{access}")),
        ("Authorization: bearer, two spaces", format!("bearer  {access}")),
    ] {
        let seen = probe(&h, label, auth(value)).await;
        assert_eq!(seen.status, 200, "{label}: {}", seen.body);
        assert_eq!(seen.upstream, 1);
        assert!(!seen.leaked, "{label}");
    }
    assert!(api_bearers(&h).iter().all(|t| !t.contains("osh_")));
}
