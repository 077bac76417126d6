//! Token continuity: a continuity client's legacy token calls get minted long-lived tokens; API
//! calls with them reach the upstream with the session's current v2 token; the store file
//! holds no token; revocation, invalid_grant and unknown tokens end access at once.

use std::path::PathBuf;
use std::time::Duration;

use oauth_shim::devtools::standin::{Fault, StandinConfig};
use serde_json::Value;

use crate::support::*;

/// 32 bytes as hex: the `[state]` key of these tests.
const KEY: &str = "5f0e6a1c2b3d4e5f60718293a4b5c6d7e8f90112233445566778899aabbccddee";

/// A fresh directory for a store, and a key file in it.
pub(crate) fn scratch(name: &str) -> (PathBuf, PathBuf) {
    let dir = temp_dir(&format!("continuity-{name}"));
    let key = dir.join("state.key");
    std::fs::write(&key, format!("{}\n", &KEY[..64])).unwrap();
    (dir.join("store"), key)
}

pub(crate) fn continuity_toml(store: &std::path::Path, key: &std::path::Path, margin: &str) -> String {
    format!(
        r#"
        [state]
        encryption_key_file = "{key}"
        [continuity]
        dir = "{store}"
        refresh_margin = "{margin}"
        "#,
        key = key.display(),
        store = store.display(),
    )
}

/// A harness whose default client uses continuity, against a stand-in issuing v2 tokens that
/// live `ttl` seconds.
pub(crate) async fn start(name: &str, ttl: u64, margin: &str) -> (Harness, PathBuf) {
    let (store, key) = scratch(name);
    let standin = StandinConfig { access_token_ttl: ttl, ..standin_config() };
    let standin = start_standin(standin).await;
    let mut config = shim_config(&standin, &continuity_toml(&store, &key, margin));
    config.clients[0].continuity = true;
    let config = config.validated().unwrap();
    (Harness::with_config(standin, config).await, store)
}

pub(crate) async fn password_grant(h: &Harness) -> Value {
    let resp = http().get(h.password_url()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

pub(crate) async fn api(h: &Harness, token: &str) -> reqwest::Response {
    http().get(h.url("/G2W/rest/v2/organizers/1/webinars")).bearer_auth(token).send().await.unwrap()
}

/// The bearer tokens the stand-in's API saw.
pub(crate) fn api_bearers(h: &Harness) -> Vec<String> {
    h.standin
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/G2W/"))
        .map(|r| r.headers["authorization"].to_str().unwrap().trim_start_matches("Bearer ").to_owned())
        .collect()
}

/// The v2 refresh tokens oauth-shim sent to the stand-in.
fn sent_refresh_tokens(h: &Harness) -> Vec<String> {
    h.standin
        .requests()
        .iter()
        .filter(|r| r.path == oauth_shim::devtools::standin::TOKEN_PATH)
        .flat_map(|r| form_pairs(&r.body))
        .filter(|(k, _)| k == "refresh_token")
        .map(|(_, v)| v)
        .collect()
}

#[tokio::test]
async fn minted_token_outlives_a_short_v2_token_and_upstream_sees_only_v2_tokens() {
    let logs = captured_logs();
    let (h, store) = start("outlive", 2, "1s").await;
    let legacy = password_grant(&h).await;
    let access = legacy["access_token"].as_str().unwrap().to_owned();
    let refresh = legacy["refresh_token"].as_str().unwrap().to_owned();
    assert!(access.starts_with("osh_at_") && access.len() >= 7 + 43, "{legacy}");
    assert!(refresh.starts_with("osh_rt_"), "{legacy}");
    assert_eq!(legacy["expires_in"], "31536000");
    assert!(legacy["organizer_key"].as_str().is_some(), "legacy fields kept: {legacy}");
    assert_eq!(legacy["version"], "2");

    assert_eq!(api(&h, &access).await.status(), 200);
    // Past the v2 token's two seconds.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let resp = http()
        .get(h.url("/G2W/rest/v2/organizers/1/webinars"))
        .bearer_auth(&access)
        .header("x-request-id", "continuity-req-7")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let refresh_call = h.standin.requests().into_iter().find(|r| {
        r.path == oauth_shim::devtools::standin::TOKEN_PATH
            && form_pairs(&r.body).iter().any(|(_, v)| v == "refresh_token")
    });
    assert_eq!(
        refresh_call.expect("an upstream refresh").headers["x-request-id"],
        "continuity-req-7",
        "the refresh carries the id of the call that waited for it"
    );

    let seen = api_bearers(&h);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|t| !t.starts_with("osh_")), "a minted token reached the upstream: {seen:?}");
    assert_ne!(seen[0], seen[1], "the second call used a refreshed v2 token");
    assert!(h.standin.is_access_token_valid(&seen[1]));
    // One password grant, one refresh.
    assert_eq!(h.standin.token_calls(), 2);
    let v2_refresh = sent_refresh_tokens(&h);
    assert_eq!(v2_refresh.len(), 1);

    // Metrics count the refresh and the live session.
    let metrics = get_text(h.admin_url("/metrics")).await;
    assert!(metrics.contains("oauth_shim_continuity_sessions 1"), "{metrics}");
    assert!(metrics.contains("oauth_shim_continuity_refreshes_total{trigger=\"inline\"} 1"), "{metrics}");

    // No token, minted or v2, in the store file, the metrics or the logs.
    let raw = std::fs::read(store.join("sessions.redb")).unwrap();
    let logs = logs.text();
    for canary in [&access, &refresh, &seen[0], &seen[1], &v2_refresh[0], &SECRET.to_owned()] {
        assert!(!raw.windows(canary.len()).any(|w| w == canary.as_bytes()), "store file holds a token");
        assert!(!metrics.contains(canary.as_str()));
        assert!(!logs.contains(canary.as_str()), "a token was logged");
    }
    // The profile fields are sealed too.
    assert!(!raw.windows(16).any(|w| w == b"demo@example.com"));
}

#[tokio::test]
async fn unknown_forged_and_misused_minted_tokens_get_401_without_reaching_upstream() {
    let (h, _store) = start("unknown", 3600, "5m").await;
    let legacy = password_grant(&h).await;
    let access = legacy["access_token"].as_str().unwrap();
    let forged = format!("osh_at_{}", "A".repeat(43));
    for token in [forged.as_str(), "osh_at_short", &access[..access.len() - 1]] {
        let resp = api(&h, token).await;
        assert_eq!(resp.status(), 401);
        assert!(resp.headers()["www-authenticate"].to_str().unwrap().contains("invalid_token"));
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["int_err_code"], "InvalidToken");
        assert_eq!(body["error"], "invalid_token");
    }
    // A minted refresh token is not an access token.
    assert_eq!(api(&h, legacy["refresh_token"].as_str().unwrap()).await.status(), 401);
    assert!(api_bearers(&h).is_empty(), "refused tokens never reach the upstream");
    // Bearer tokens that are not minted pass through untouched.
    let resp = api(&h, "upstream-issued-token").await;
    assert_eq!(resp.status(), 401, "the stand-in refuses it, not oauth-shim");
    assert_eq!(api_bearers(&h), vec!["upstream-issued-token".to_owned()]);
    assert_eq!(api(&h, access).await.status(), 200);
}

#[tokio::test]
async fn revocation_takes_effect_at_once() {
    let (h, _store) = start("revoke", 3600, "5m").await;
    let first = password_grant(&h).await;
    let second = password_grant(&h).await;
    let a1 = first["access_token"].as_str().unwrap();
    assert_eq!(api(&h, a1).await.status(), 200);

    let listing = get_json(h.admin_url(&format!("/sessions?client={ID}"))).await;
    let sessions = listing["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{listing}");
    let text = listing.to_string();
    assert!(!text.contains(a1) && !text.contains("osh_"), "a listing shows no token: {text}");

    // Revoke one session by id: find which one is `first`'s by revoking and probing.
    let id = sessions[0]["id"].as_str().unwrap();
    let resp =
        http().post(h.admin_url(&format!("/sessions/revoke?client={ID}&id={id}"))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["revoked"], 1);
    let a2 = second["access_token"].as_str().unwrap();
    let live = [api(&h, a1).await.status(), api(&h, a2).await.status()];
    assert!(live.contains(&reqwest::StatusCode::OK) && live.contains(&reqwest::StatusCode::UNAUTHORIZED));

    // Revoke the rest of the client's sessions: every minted token stops at once, refresh too.
    assert_eq!(revoke_all(&h).await, 1);
    assert_eq!(api(&h, a1).await.status(), 401);
    assert_eq!(api(&h, a2).await.status(), 401);
    let refresh = http()
        .get(h.url(&format!(
            "/oauth/access_token?grant_type=refresh_token&refresh_token={}&client_id={ID}",
            second["refresh_token"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(refresh.status(), 400);
    assert_eq!(refresh.json::<Value>().await.unwrap()["error"], "invalid_grant");
    let listing = get_json(h.admin_url("/sessions")).await;
    assert_eq!(listing["sessions"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn legacy_refresh_with_the_minted_refresh_token_answers_from_the_session() {
    let (h, _store) = start("legacy-refresh", 3600, "5m").await;
    let legacy = password_grant(&h).await;
    let (a1, rt) = (legacy["access_token"].as_str().unwrap(), legacy["refresh_token"].as_str().unwrap());
    let calls = h.standin.token_calls();
    let refresh_url = |client: &str| {
        h.url(&format!("/oauth/access_token?grant_type=refresh_token&refresh_token={rt}&client_id={client}"))
    };
    let resp = http().get(refresh_url(ID)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let renewed: Value = resp.json().await.unwrap();
    let a2 = renewed["access_token"].as_str().unwrap();
    assert!(a2.starts_with("osh_at_") && a2 != a1);
    assert_eq!(renewed["refresh_token"], rt);
    assert_eq!(renewed["expires_in"], "31536000");
    assert_eq!(renewed["email"], legacy["email"]);
    assert_eq!(h.standin.token_calls(), calls, "the v2 token was not due: no upstream call");
    // The new token works, and so does the previous one (calls already under way with it).
    assert_eq!(api(&h, a2).await.status(), 200);
    assert_eq!(api(&h, a1).await.status(), 200);
    // A third mint retires the first.
    let renewed: Value = http().get(refresh_url(ID)).send().await.unwrap().json().await.unwrap();
    assert_eq!(api(&h, renewed["access_token"].as_str().unwrap()).await.status(), 200);
    assert_eq!(api(&h, a1).await.status(), 401);
    assert_eq!(api(&h, a2).await.status(), 200);

    // The minted refresh token never went upstream.
    assert!(sent_refresh_tokens(&h).iter().all(|t| !t.starts_with("osh_")));
}

#[tokio::test]
async fn upstream_invalid_grant_ends_the_session() {
    let (h, _store) = start("invalid-grant", 2, "1s").await;
    let legacy = password_grant(&h).await;
    let access = legacy["access_token"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    h.standin.set_fault(Some(Fault::Status(400, r#"{"error":"invalid_grant"}"#.into())));
    assert_eq!(api(&h, access).await.status(), 401);
    h.standin.set_fault(None);
    assert_eq!(get_json(h.admin_url("/sessions")).await["sessions"].as_array().unwrap().len(), 0);
    let calls = h.standin.token_calls();
    assert_eq!(api(&h, access).await.status(), 401);
    assert_eq!(h.standin.token_calls(), calls, "an ended session makes no further upstream call");
    let metrics = get_text(h.admin_url("/metrics")).await;
    assert!(metrics.contains("oauth_shim_continuity_refresh_failures_total{reason=\"invalid_grant\"} 1"));
}

/// A fake API that refuses the first bearer token it sees with 401 and accepts any other,
/// recording every `Authorization` header.
async fn picky_api() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some(head) = read_request_head(&mut s, &mut buf).await {
                    let auth = head
                        .lines()
                        .find_map(|l| {
                            l.strip_prefix("authorization: ").or_else(|| l.strip_prefix("Authorization: "))
                        })
                        .unwrap_or("")
                        .to_owned();
                    let first = {
                        let mut seen = log.lock().unwrap();
                        seen.push(auth.clone());
                        seen[0] == auth
                    };
                    let status = if first { "401 Unauthorized" } else { "200 OK" };
                    let resp = format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\n\r\nok");
                    if s.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn a_401_to_a_fresh_looking_token_refreshes_once_and_retries_a_bodiless_request() {
    let (store, key) = scratch("retry");
    let standin = start_standin(standin_config()).await;
    let (api_base, seen) = picky_api().await;
    let mut config = shim_config(&standin, &continuity_toml(&store, &key, "5m"));
    config.clients[0].continuity = true;
    config.provider.api_base = Some(api_base);
    let h = Harness::with_config(standin, config.validated().unwrap()).await;
    let legacy = password_grant(&h).await;
    let access = legacy["access_token"].as_str().unwrap();
    let resp = api(&h, access).await;
    assert_eq!(resp.status(), 200);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "one retry: {seen:?}");
    assert_ne!(seen[0], seen[1]);
    assert!(seen.iter().all(|a| a.starts_with("Bearer ") && !a.contains("osh_")));
    assert_eq!(h.standin.token_calls(), 2, "password grant, then one refresh");
    let metrics = get_text(h.admin_url("/metrics")).await;
    assert!(metrics.contains("oauth_shim_continuity_refreshes_total{trigger=\"retry\"} 1"), "{metrics}");
}

#[tokio::test]
async fn a_streamed_request_is_not_retried_after_a_401() {
    let (store, key) = scratch("no-retry");
    let standin = start_standin(standin_config()).await;
    let (api_base, seen) = picky_api().await;
    let mut config = shim_config(&standin, &continuity_toml(&store, &key, "5m"));
    config.clients[0].continuity = true;
    config.provider.api_base = Some(api_base);
    let h = Harness::with_config(standin, config.validated().unwrap()).await;
    let legacy = password_grant(&h).await;
    let access = legacy["access_token"].as_str().unwrap();
    let resp = http()
        .post(h.url("/G2W/rest/v2/organizers/1/webinars"))
        .bearer_auth(access)
        .body("{\"subject\":\"x\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(h.standin.token_calls(), 1);
}

#[tokio::test]
async fn migration_report_shows_who_relies_on_continuity() {
    let (h, _store) = start("report", 3600, "5m").await;
    let legacy = password_grant(&h).await;
    assert_eq!(api(&h, legacy["access_token"].as_str().unwrap()).await.status(), 200);
    let report = get_json(h.admin_url("/migration")).await;
    let row = report["clients"].as_array().unwrap().iter().find(|c| c["id"] == ID).unwrap().clone();
    assert_eq!(row["continuity"], true);
    assert_eq!(row["features"]["continuity_token"]["count"], 1);
}

#[tokio::test]
async fn expired_minted_tokens_are_refused_and_swept() {
    let (store, key) = scratch("expired");
    let standin = start_standin(standin_config()).await;
    let extra = format!("{}\nsweep_interval = \"300ms\"\n", continuity_toml(&store, &key, "5m"));
    let mut config = shim_config(&standin, &extra);
    config.clients[0].continuity = true;
    config.clients[0].continuity_lifetime = Duration::from_secs(2);
    let h = Harness::with_config(standin, config.validated().unwrap()).await;
    let legacy = password_grant(&h).await;
    assert_eq!(legacy["expires_in"], "2");
    let access = legacy["access_token"].as_str().unwrap();
    assert_eq!(api(&h, access).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(api(&h, access).await.status(), 401);
    assert_eq!(api_bearers(&h).len(), 1, "the expired token never reached the upstream");
    let refresh = http()
        .get(h.url(&format!(
            "/oauth/access_token?grant_type=refresh_token&refresh_token={}&client_id={ID}",
            legacy["refresh_token"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(refresh.status(), 400);
    // The sweep deleted it from the store.
    let swept = poll_until(async || {
        get_text(h.admin_url("/metrics")).await.contains("oauth_shim_continuity_sessions 0")
    })
    .await;
    assert!(swept, "the sweep removed the expired session");
}

#[tokio::test]
async fn a_minted_token_survives_a_restart_and_operators_revoke_it_from_the_command_line() {
    let (store, key) = scratch("restart");
    let standin = start_standin(standin_config()).await;
    let config = store.parent().unwrap().join("shim.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nshutdown_grace = \"1s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [log]\nformat = \"json\"\n[reload]\nwatch = false\n\
             [upstream]\ntoken_url = \"{}\"\nauthorize_url = \"{}\"\napi_base = \"{}\"\n\
             [state]\nencryption_key_file = \"{}\"\n[continuity]\ndir = \"{}\"\n\
             [[clients]]\nid = \"{ID}\"\nsecret = \"{SECRET}\"\nallow_password_grant = true\ncontinuity = true\n",
            standin.token_url(),
            standin.authorize_url(),
            standin.api_base(),
            key.display(),
            store.display(),
        ),
    )
    .unwrap();

    let shim = ShimProcess::serve(&config, &[("RUST_LOG", "info")]).await;
    let proxy = format!("http://{}", shim.proxy);
    let legacy: Value = get_json(format!(
        "{proxy}/oauth/access_token?grant_type=password&user_id=demo%40example.com&password=demo-password&client_id={ID}"
    ))
    .await;
    let access = legacy["access_token"].as_str().unwrap().to_owned();
    let call = |proxy: String| {
        let access = access.clone();
        async move {
            http().get(format!("{proxy}/G2W/rest/v2/x")).bearer_auth(access).send().await.unwrap().status()
        }
    };
    assert_eq!(call(proxy.clone()).await, 200);
    shim.terminate_and_wait().await;

    let shim = ShimProcess::serve(&config, &[("RUST_LOG", "info")]).await;
    let (proxy, admin) = (format!("http://{}", shim.proxy), format!("http://{}", shim.admin));
    assert_eq!(call(proxy.clone()).await, 200, "the minted token works after a restart");

    let run = |args: &[&str]| {
        let out = bin().args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, table) = run(&["sessions", "list", "--client", ID, "--admin", &admin]);
    assert_eq!(code, Some(0));
    assert_eq!(table.lines().filter(|l| l.contains(ID)).count(), 1, "{table}");
    assert!(!table.contains("osh_"));
    let (code, out) = run(&["sessions", "revoke", "--client", ID, "--admin", &admin]);
    assert_eq!(code, Some(0));
    assert!(out.contains("\"revoked\": 1"), "{out}");
    assert_eq!(call(proxy).await, 401, "revoked at once");
    let mut shim = shim;
    shim.signal("TERM");
    shim.wait().await;
    let logs = shim.log();
    assert!(!logs.contains(&access) && !logs.contains("osh_at_"), "{logs}");
}

#[test]
fn a_continuity_client_without_a_state_key_is_a_config_error() {
    let dir = temp_dir("continuity-nokey");
    let path = dir.join("shim.toml");
    std::fs::write(
        &path,
        "[[clients]]\nid = \"acme\"\nsecret = \"canary-nokey-secret\"\ncontinuity = true\n",
    )
    .unwrap();
    let out = bin().args(["check-config", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("client \"acme\": continuity needs [state] encryption_key_env"), "{err}");
    assert!(!err.contains("canary-nokey-secret"));
    // A malformed key is refused without being echoed.
    std::fs::write(dir.join("bad.key"), "canary-not-a-key\n").unwrap();
    std::fs::write(
        &path,
        format!(
            "[state]\nencryption_key_file = \"{}\"\n[[clients]]\nid = \"acme\"\nsecret = \"x\"\ncontinuity = true\n",
            dir.join("bad.key").display()
        ),
    )
    .unwrap();
    let out = bin().args(["check-config", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not 32 bytes") && !err.contains("canary-not-a-key"), "{err}");
    // Continuity on a passthrough client is refused.
    std::fs::write(dir.join("good.key"), format!("{}\n", &KEY[..64])).unwrap();
    std::fs::write(
        &path,
        format!(
            "[state]\nencryption_key_file = \"{}\"\n[[clients]]\nid = \"acme\"\nsecret = \"x\"\ncontinuity = true\nmode = \"passthrough\"\n",
            dir.join("good.key").display()
        ),
    )
    .unwrap();
    let out = bin().args(["check-config", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("continuity needs mode = \"rewrite\""));
}

/// Two replicas sharing one Redis and one key set, against one stand-in issuing v2 tokens that
/// live `ttl` seconds.
async fn two_replicas_on_redis(redis: &RedisServer, ttl: u64) -> (Harness, Harness) {
    // A slow token endpoint: a refresh is still under way when the other replica's calls come.
    let standin =
        StandinConfig { access_token_ttl: ttl, token_delay: Duration::from_millis(300), ..standin_config() };
    let standin = start_standin(standin).await;
    let toml = format!("{}\n[continuity]\nrefresh_margin = \"1s\"\n", redis_state_toml(redis));
    let mut config = shim_config(&standin, &toml);
    config.clients[0].continuity = true;
    let mut both = replicas(&standin, &config.validated().unwrap(), 2).await;
    let b = both.pop().unwrap();
    (both.pop().unwrap(), b)
}

#[tokio::test]
async fn two_replicas_on_redis_refresh_a_session_once_at_the_expiry_edge() {
    let redis = RedisServer::start().await;
    let (a, b) = two_replicas_on_redis(&redis, 2).await;
    let legacy = password_grant(&a).await;
    let access = legacy["access_token"].as_str().unwrap().to_owned();
    // The session is shared: the other replica serves the token minted by the first.
    assert_eq!(api(&b, &access).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    a.standin.clear_requests();

    // Both replicas meet the expired v2 token at once.
    let mut calls = Vec::new();
    for i in 0..16 {
        let h = if i % 2 == 0 { a.url("/G2W/rest/v2/x") } else { b.url("/G2W/rest/v2/x") };
        let access = access.clone();
        calls.push(tokio::spawn(
            async move { http().get(h).bearer_auth(access).send().await.unwrap().status() },
        ));
    }
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
    assert_eq!(a.standin.token_calls(), 1, "exactly one upstream refresh across both replicas");
    let seen = api_bearers(&a);
    assert_eq!(seen.len(), 16);
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "every call used the one refreshed token");
    assert!(!seen[0].starts_with("osh_"));

    // Nothing in Redis is a token: not the minted ones, not the v2 ones.
    let v2_refresh = sent_refresh_tokens(&a);
    let dump = redis.dump_all().await;
    assert!(dump.iter().any(|(k, _)| k.windows(8).any(|w| w == b"cont:ses")), "sessions are in redis");
    for canary in
        [&access, legacy["refresh_token"].as_str().unwrap(), &seen[0], &v2_refresh[0], "demo@example.com"]
    {
        for (k, v) in &dump {
            assert!(!k.windows(canary.len()).any(|w| w == canary.as_bytes()), "a key holds a token");
            assert!(!v.windows(canary.len()).any(|w| w == canary.as_bytes()), "a value holds a token");
        }
    }

    // Revoking on one replica ends the session on both, at once.
    assert_eq!(revoke_all(&b).await, 1);
    assert_eq!(api(&a, &access).await.status(), 401);
    assert_eq!(api(&b, &access).await.status(), 401);
}

#[tokio::test]
async fn a_token_inside_the_refresh_margin_is_refreshed_in_the_background() {
    let (h, _store) = start("background", 6, "3s").await;
    let legacy = password_grant(&h).await;
    let access = legacy["access_token"].as_str().unwrap();
    assert_eq!(api(&h, access).await.status(), 200);
    // 2-3 s left of the v2 token's 6: inside the margin, still valid.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(api(&h, access).await.status(), 200);
    let seen = api_bearers(&h);
    assert_eq!(seen[0], seen[1], "the call went on with the still-valid token");
    let refreshed = poll_until(async || h.standin.token_calls() == 2).await;
    assert!(refreshed, "a background refresh was made");
    let used_new = poll_until(async || {
        assert_eq!(api(&h, access).await.status(), 200);
        api_bearers(&h).last() != Some(&seen[0])
    })
    .await;
    assert!(used_new, "later calls use the refreshed token");
    assert_eq!(h.standin.token_calls(), 2, "one refresh");
    let metrics = get_text(h.admin_url("/metrics")).await;
    assert!(metrics.contains("oauth_shim_continuity_refreshes_total{trigger=\"background\"} 1"), "{metrics}");
}

#[tokio::test]
async fn flipping_a_continuity_client_to_deny_refuses_its_minted_tokens() {
    let (h, _store) = start("deny", 3600, "5m").await;
    let legacy = password_grant(&h).await;
    let access = legacy["access_token"].as_str().unwrap();
    assert_eq!(api(&h, access).await.status(), 200);
    let mut config = h.app.snapshot().config.clone();
    config.clients[0].mode = oauth_shim::config::ClientMode::Deny;
    h.app.swap_snapshot(oauth_shim::snapshot::Snapshot::new(config.clone().validated().unwrap()).unwrap());
    assert_eq!(api(&h, access).await.status(), 401);
    config.clients[0].mode = oauth_shim::config::ClientMode::Rewrite;
    h.app.swap_snapshot(oauth_shim::snapshot::Snapshot::new(config.validated().unwrap()).unwrap());
    assert_eq!(api(&h, access).await.status(), 200, "the session was kept");
    assert_eq!(api_bearers(&h).len(), 2);
}

#[tokio::test]
async fn redis_down_fails_only_continuity_calls_and_they_recover_with_it() {
    let mut redis = RedisServer::start().await;
    let (a, _b) = two_replicas_on_redis(&redis, 3600).await;
    let legacy = password_grant(&a).await;
    let access = legacy["access_token"].as_str().unwrap().to_owned();
    assert_eq!(api(&a, &access).await.status(), 200);
    redis.stop();
    let resp = api(&a, &access).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"), "a retryable refusal, never a local refresh");
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "temporarily_unavailable");
    // Other traffic is not affected.
    assert_eq!(api(&a, "upstream-issued-token").await.status(), 401, "passed through to the stand-in");
    let metrics = get_text(a.admin_url("/metrics")).await;
    assert!(metrics.contains("oauth_shim_continuity_store_errors_total"), "{metrics}");
    // Redis back (empty: it keeps nothing on disk here): the replica uses it again by itself.
    redis.restart().await;
    let recovered = poll_until(async || api(&a, &access).await.status() == 401).await;
    assert!(recovered, "the store answers again (the session died with Redis's memory)");
}

#[tokio::test]
async fn sessions_outlive_a_key_rotation_while_the_old_key_stays_listed() {
    let (h, store) = start("rotation", 3600, "5m").await;
    let legacy = password_grant(&h).await;
    let access = legacy["access_token"].as_str().unwrap();
    let new_key = "a".repeat(64);
    let config = h.app.snapshot().config.clone();
    // Rotated as an operator does it: the key file changes, and the config is loaded again.
    let key_file = config.state.encryption_key_file.clone().unwrap();
    std::fs::write(&key_file, format!("{new_key} {}\n", &KEY[..64])).unwrap();
    h.app.swap_snapshot(oauth_shim::snapshot::Snapshot::new(config.clone().validated().unwrap()).unwrap());
    assert_eq!(api(&h, access).await.status(), 200, "found under the old key's hash");
    let renewed: Value = http()
        .get(h.url(&format!(
            "/oauth/access_token?grant_type=refresh_token&refresh_token={}&client_id={ID}",
            legacy["refresh_token"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let renewed_access = renewed["access_token"].as_str().unwrap();
    assert_eq!(api(&h, renewed_access).await.status(), 200, "re-sealed and indexed under the new key");
    // The old key dropped: the session, sealed now under the new key, still opens, but the
    // tokens indexed under the old key's hash are no longer found.
    std::fs::write(&key_file, format!("{new_key}\n")).unwrap();
    h.app.swap_snapshot(oauth_shim::snapshot::Snapshot::new(config.validated().unwrap()).unwrap());
    assert_eq!(api(&h, renewed_access).await.status(), 200);
    assert_eq!(api(&h, access).await.status(), 401);
    drop(store);
}

#[tokio::test]
async fn session_routes_need_the_admin_token_when_one_is_set() {
    let (store, key) = scratch("admin-token");
    let standin = start_standin(standin_config()).await;
    let mut config = shim_config(&standin, &continuity_toml(&store, &key, "5m"));
    config.clients[0].continuity = true;
    config.admin.token = Some(oauth_shim::oauth::Secret::new("canary-admin-token-31"));
    let h = Harness::with_config(standin, config.validated().unwrap()).await;
    password_grant(&h).await;
    let list = h.admin_url("/sessions");
    let revoke = h.admin_url(&format!("/sessions/revoke?client={ID}"));
    assert_eq!(http().get(&list).send().await.unwrap().status(), 401);
    assert_eq!(http().post(&revoke).send().await.unwrap().status(), 401);
    assert_eq!(http().get(&list).bearer_auth("wrong").send().await.unwrap().status(), 401);
    let listed: Value =
        http().get(&list).bearer_auth("canary-admin-token-31").send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 1);
    let revoked: Value =
        http().post(&revoke).bearer_auth("canary-admin-token-31").send().await.unwrap().json().await.unwrap();
    assert_eq!(revoked["revoked"], 1);
}
