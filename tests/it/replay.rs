//! Old values written back to Redis by someone who can write to it but does not hold the
//! `[state]` key (docs/protocol.md#shared-state-and-old-values-written-back): a revoked continuity session stays revoked, an old
//! session record does not roll its tokens back, and a refresh answer (of either token route) is
//! not served past its expiry. Most tests save values as Redis holds them (`DUMP`), let
//! oauth-shim move on, and write them back with no expiry (`RESTORE … REPLACE`, TTL 0); one
//! revokes a session while its refresh is under way, which must not write it back. Each starts
//! its own `redis-server` on a free loopback port.

use std::time::Duration;

use oauth_shim::devtools::standin::{StandinConfig, TOKEN_PATH};
use serde_json::Value;

use crate::support::*;

/// One oauth-shim whose default client uses continuity, its sessions in `redis`.
async fn continuity_on_redis(redis: &RedisServer, standin: StandinConfig) -> Harness {
    continuity_on_redis_with(redis, standin, "").await
}

/// As [`continuity_on_redis`], with `extra` lines in its `[continuity]` table.
async fn continuity_on_redis_with(redis: &RedisServer, standin: StandinConfig, extra: &str) -> Harness {
    let standin = start_standin(standin).await;
    let toml = format!("{}\n[continuity]\nrefresh_margin = \"1s\"\n{extra}", redis_state_toml(redis));
    let mut config = shim_config(&standin, &toml);
    config.clients[0].continuity = true;
    let h = Harness::with_config(standin, config.validated().unwrap()).await;
    h.wait_for_redis().await;
    h
}

async fn password_grant(h: &Harness) -> (String, String) {
    let body: Value = get_json(h.password_url()).await;
    (body["access_token"].as_str().unwrap().to_owned(), body["refresh_token"].as_str().unwrap().to_owned())
}

async fn api(h: &Harness, token: &str) -> (u16, Value) {
    let resp =
        http().get(h.url("/G2W/rest/v2/organizers/1/webinars")).bearer_auth(token).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn legacy_refresh(h: &Harness, minted_refresh: &str) -> (u16, Value) {
    let url = h.url(&format!(
        "/oauth/access_token?grant_type=refresh_token&refresh_token={minted_refresh}&client_id={ID}"
    ));
    let resp = http().get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// API calls that reached the stand-in.
fn api_calls(h: &Harness) -> usize {
    h.standin.requests().iter().filter(|r| r.path.starts_with("/G2W/")).count()
}

/// The v2 refresh tokens oauth-shim sent to the stand-in.
fn sent_refresh_tokens(h: &Harness) -> Vec<String> {
    h.standin
        .requests()
        .iter()
        .filter(|r| r.path == TOKEN_PATH)
        .flat_map(|r| form_pairs(&r.body))
        .filter(|(k, _)| k == "refresh_token")
        .map(|(_, v)| v)
        .collect()
}

/// The continuity keys as Redis holds them now (`DUMP`), locks left out.
async fn saved_sessions(redis: &RedisServer) -> Vec<(Vec<u8>, Vec<u8>)> {
    let has = |key: &[u8], part: &[u8]| key.windows(part.len()).any(|w| w == part);
    let mut saved: Vec<_> = redis
        .dump_all()
        .await
        .into_iter()
        .filter(|(k, _)| has(k, b"cont:") && !has(k, b"cont:lock"))
        .collect();
    saved.sort();
    saved
}

/// The saved keys whose name contains one of `parts`.
fn only<'a>(saved: &'a [(Vec<u8>, Vec<u8>)], parts: &[&str]) -> Vec<&'a (Vec<u8>, Vec<u8>)> {
    saved
        .iter()
        .filter(|(k, _)| parts.iter().any(|p| k.windows(p.len()).any(|w| w == p.as_bytes())))
        .collect()
}

/// Write saved values back as they were, with no expiry.
async fn write_back(redis: &RedisServer, values: &[&(Vec<u8>, Vec<u8>)]) {
    assert!(!values.is_empty(), "something to write back");
    let mut conn = redis.client().get_multiplexed_async_connection().await.unwrap();
    for (key, dump) in values {
        let _: () = redis::cmd("RESTORE")
            .arg(key)
            .arg(0)
            .arg(dump)
            .arg("REPLACE")
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

async fn listed(h: &Harness) -> usize {
    let listing = get_json(h.admin_url(&format!("/sessions?client={ID}"))).await;
    listing["sessions"].as_array().unwrap().len()
}

#[tokio::test]
async fn a_revoked_session_written_back_stays_revoked() {
    let redis = RedisServer::start().await;
    let h = continuity_on_redis(&redis, standin_config()).await;
    let (access, refresh) = password_grant(&h).await;
    assert_eq!(api(&h, &access).await.0, 200);
    let before = saved_sessions(&redis).await;
    assert_eq!(revoke_all(&h).await, 1);
    assert_eq!(api(&h, &access).await.0, 401);
    h.standin.clear_requests();

    // The record and the token entries come back: the session stays revoked, on the API and on
    // a legacy refresh, and nothing reaches the upstream.
    write_back(&redis, &only(&before, &["cont:ses:", "cont:tok:"])).await;
    let (status, body) = api(&h, &access).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_token")), "{body}");
    let (status, body) = legacy_refresh(&h, &refresh).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    assert_eq!(listed(&h).await, 0);

    // Its index entry too: still revoked, and revoking again finds nothing to revoke.
    write_back(&redis, &only(&before, &["cont:index"])).await;
    assert_eq!(api(&h, &access).await.0, 401);
    assert_eq!(listed(&h).await, 0);
    assert_eq!(revoke_all(&h).await, 0);

    // Without the tombstone revocation left: a record this version wrote needs its anchor.
    let mut conn = redis.client().get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("DEL").arg("oauth-shim:cont:anchors").query_async(&mut conn).await.unwrap();
    assert_eq!(api(&h, &access).await.0, 401);
    assert_eq!(legacy_refresh(&h, &refresh).await.0, 400);
    assert_eq!(api_calls(&h), 0, "a revoked session never reaches the upstream");
    assert_eq!(h.standin.token_calls(), 0);
}

#[tokio::test]
async fn a_tombstone_lasts_as_long_as_its_session_could_and_the_sweep_then_clears_it() {
    let redis = RedisServer::start().await;
    let standin = start_standin(standin_config()).await;
    let toml = format!("{}\n[continuity]\nsweep_interval = \"200ms\"\n", redis_state_toml(&redis));
    let mut config = shim_config(&standin, &toml);
    config.clients[0].continuity = true;
    config.clients[0].continuity_lifetime = Duration::from_secs(2);
    let h = Harness::with_config(standin, config.validated().unwrap()).await;
    h.wait_for_redis().await;
    let (revoked, _) = password_grant(&h).await;
    let listing = get_json(h.admin_url("/sessions")).await;
    let id = listing["sessions"][0]["id"].as_str().unwrap().to_owned();
    let (kept, _) = password_grant(&h).await;
    let resp =
        http().post(h.admin_url(&format!("/sessions/revoke?client={ID}&id={id}"))).send().await.unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap()["revoked"], 1);
    assert_eq!((api(&h, &revoked).await.0, api(&h, &kept).await.0), (401, 200));

    let mut conn = redis.client().get_multiplexed_async_connection().await.unwrap();
    let mut sizes = async || -> (u64, u64, u64) {
        let mut pipe = redis::pipe();
        pipe.cmd("HLEN").arg("oauth-shim:cont:anchors");
        pipe.cmd("ZCARD").arg("oauth-shim:cont:index");
        pipe.cmd("ZCARD").arg("oauth-shim:cont:revoked");
        pipe.query_async(&mut conn).await.unwrap()
    };
    assert_eq!(sizes().await, (2, 1, 1), "one live anchor, one tombstone");
    // Past both sessions' two seconds, the sweep drops the anchors, the tombstone included.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(sizes().await, (0, 0, 0));
    assert_eq!(api(&h, &kept).await.0, 401);
}

#[tokio::test]
async fn an_old_session_record_written_back_does_not_bring_back_a_retired_minted_token() {
    let redis = RedisServer::start().await;
    let h = continuity_on_redis(&redis, standin_config()).await;
    let (first, refresh) = password_grant(&h).await;
    assert_eq!(api(&h, &first).await.0, 200);
    let before = saved_sessions(&redis).await;
    // Two legacy refreshes: the first minted access token is retired.
    for _ in 0..2 {
        assert_eq!(legacy_refresh(&h, &refresh).await.0, 200);
    }
    assert_eq!(api(&h, &first).await.0, 401);
    h.standin.clear_requests();

    write_back(&redis, &only(&before, &["cont:ses:", "cont:tok:", "cont:index"])).await;
    let (status, body) = api(&h, &first).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_token")), "{body}");
    assert_eq!(api_calls(&h), 0, "the retired token never reaches the upstream");
}

#[tokio::test]
async fn an_old_session_record_written_back_never_spends_a_rotated_v2_refresh_token_again() {
    let redis = RedisServer::start().await;
    let standin = StandinConfig { access_token_ttl: 2, rotate_refresh_tokens: true, ..standin_config() };
    let h = continuity_on_redis(&redis, standin).await;
    let (access, _) = password_grant(&h).await;
    assert_eq!(api(&h, &access).await.0, 200);
    let before = saved_sessions(&redis).await;
    // Past the v2 token's two seconds: the session refreshes it, and the v2 refresh token rotates.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(api(&h, &access).await.0, 200);
    assert_eq!(sent_refresh_tokens(&h).len(), 1);

    // The record from before the refresh comes back, with its spent v2 refresh token.
    write_back(&redis, &only(&before, &["cont:ses:", "cont:tok:", "cont:index"])).await;
    let (status, body) = api(&h, &access).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_token")), "{body}");
    let spent = sent_refresh_tokens(&h);
    assert_eq!(spent.len(), 1, "the spent v2 refresh token was not sent again: {spent:?}");
    assert_eq!(h.standin.revoked_grants(), 0, "the upstream saw no refresh token twice");
}

/// A session revoked while its v2 token is being refreshed upstream: the refresh's write, which
/// would also count the session against its client's cap again, is refused as a whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_revoked_during_its_refresh_is_not_written_back_and_its_place_stays_free() {
    let redis = RedisServer::start().await;
    let slow = Duration::from_millis(1500);
    let standin = StandinConfig { access_token_ttl: 2, token_delay: slow, ..standin_config() };
    let h = continuity_on_redis_with(&redis, standin, "max_sessions_per_client = 1\n").await;
    let (access, refresh) = password_grant(&h).await;
    // Past the v2 token's due time (its two seconds less the one-second margin).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    h.standin.clear_requests();

    // A legacy refresh goes upstream; while the upstream answers, an operator revokes the session.
    let revoke_meanwhile = async {
        while sent_refresh_tokens(&h).is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        revoke_all(&h).await
    };
    let ((status, body), revoked) = tokio::join!(legacy_refresh(&h, &refresh), revoke_meanwhile);
    assert_eq!(revoked, 1);
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    assert_eq!(api(&h, &access).await.0, 401);
    assert_eq!(listed(&h).await, 0);
    // The client's one place is free: the refresh did not count the session against it again.
    let resp = http().get(h.password_url()).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
}

/// Two replicas sharing `redis`, with `extra` config, against one stand-in.
async fn shared_refresh(redis: &RedisServer, extra: &str) -> (Harness, Harness) {
    let standin = start_standin(standin_config()).await;
    let toml = format!("{}{extra}", redis_state_toml(redis));
    let mut both = replicas(&standin, &shim_config(&standin, &toml), 2).await;
    let b = both.pop().unwrap();
    (both.pop().unwrap(), b)
}

/// The Redis key of [`ID`]'s refresh answer for `rt` (default provider): an HMAC of the
/// provider's name, the client id and the token, whichever route asks.
fn answer_key(rt: &str) -> String {
    let keys = oauth_shim::crypto::KeySet::parse(STATE_KEY).unwrap();
    let hash = keys.hash("refresh", &[b"default", ID.as_bytes(), rt.as_bytes()]);
    format!("oauth-shim:refresh:{{{}}}", hash.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// A refresh of `rt` by [`ID`] from the oauth-shim at `base`, through the legacy route, or
/// (`v2`) as seed 000's v2 call: JSON to the token path, with the client's secret.
async fn refresh(client: &reqwest::Client, base: &str, rt: &str, v2: bool) -> (u16, Value) {
    let call = if v2 {
        let body = serde_json::json!({
            "grant_type": "refresh_token", "refresh_token": rt, "client_id": ID, "client_secret": SECRET,
        });
        let url = format!("{base}{TOKEN_PATH}");
        client.post(url).header("content-type", "application/json").body(body.to_string())
    } else {
        client.get(format!(
            "{base}/oauth/access_token?grant_type=refresh_token&refresh_token={rt}&client_id={ID}"
        ))
    };
    let resp = call.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_answer_written_back_is_not_served_past_its_expiry() {
    refresh_answer_written_back(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v2_refresh_answer_written_back_is_served_to_neither_route_past_its_expiry() {
    refresh_answer_written_back(true).await;
}

/// The answer to a refresh (through the v2 route with `first_v2`, else the legacy one) is saved
/// from Redis and written back with no expiry after Redis let it go; refreshes of the same token
/// through both routes and both replicas then get one new answer, not the saved one.
async fn refresh_answer_written_back(first_v2: bool) {
    let redis = RedisServer::start().await;
    let (a, b) = shared_refresh(&redis, "[refresh_cache]\nttl = \"1s\"\n").await;
    let code = a.standin.issue_code(ID, None);
    let granted: Value = get_json(
        a.url(&format!("/oauth/access_token?grant_type=authorization_code&code={code}&client_id={ID}")),
    )
    .await;
    let rt = granted["refresh_token"].as_str().unwrap().to_owned();
    let client = http();
    let (status, first) = refresh(&client, &a.url(""), &rt, first_v2).await;
    assert_eq!(status, 200, "{first}");
    let key = answer_key(&rt);
    let mut conn = redis.client().get_multiplexed_async_connection().await.unwrap();
    let stored: Option<Vec<u8>> = redis::cmd("GET").arg(&key).query_async(&mut conn).await.unwrap();
    let stored = stored.expect("the answer is under the key both routes share");

    // Past the answer's second, Redis has let it go; it comes back with no expiry.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let exists: bool = redis::cmd("EXISTS").arg(&key).query_async(&mut conn).await.unwrap();
    assert!(!exists, "Redis expired the answer");
    let _: () = redis::cmd("SET").arg(&key).arg(&stored).query_async(&mut conn).await.unwrap();
    a.standin.clear_requests();

    // Concurrent refreshes through both routes on both replicas: one upstream call, its answer
    // for everyone.
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let (base, v2) = (if i % 2 == 0 { a.url("") } else { b.url("") }, (i / 2) % 2 == 1);
            let (client, rt) = (client.clone(), rt.clone());
            tokio::spawn(async move { refresh(&client, &base, &rt, v2).await })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.unwrap());
    }
    assert_eq!(a.standin.token_calls(), 1, "the stale answer was refused and the token refreshed once");
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_ne!(body["access_token"], first["access_token"], "the stale answer was served");
        assert_eq!(body["access_token"], answers[0].1["access_token"]);
    }
    let now: Option<Vec<u8>> = redis::cmd("GET").arg(&key).query_async(&mut conn).await.unwrap();
    assert_ne!(now, Some(stored), "the refused answer is gone");
}
