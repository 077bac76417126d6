//! Fair limits on continuity sessions: `[continuity] max_sessions`, `max_sessions_per_client`
//! and `max_sessions_per_user`, each checked before the login's upstream call (a refused login
//! has not spent its code or password), on the embedded store and on Redis shared by replicas.

use std::time::Duration;

use oauth_shim::devtools::standin::{Standin, StandinConfig};
use serde_json::Value;

use crate::continuity::{continuity_toml, scratch};
use crate::support::*;

const OTHER: (&str, &str) = ("other@example.com", "other-password");

/// The stand-in most tests use: the demo user and [`OTHER`], tokens answered after `delay`.
async fn standin(delay: Duration) -> Standin {
    let mut config = StandinConfig { token_delay: delay, ..standin_config() };
    config.users.push((OTHER.0.into(), OTHER.1.into()));
    start_standin(config).await
}

/// oauth-shim with a continuity client on the embedded store, with `caps` (TOML lines of the
/// `[continuity]` table).
async fn embedded(name: &str, caps: &str) -> Harness {
    let (store, key) = scratch(name);
    let standin = standin(Duration::ZERO).await;
    let mut config = shim_config(&standin, &format!("{}\n{caps}\n", continuity_toml(&store, &key, "5m")));
    config.clients[0].continuity = true;
    Harness::with_config(standin, config.validated().unwrap()).await
}

/// Two replicas sharing `redis` and one stand-in, with `caps` as in [`embedded`].
async fn replicas_on_redis(redis: &RedisServer, caps: &str) -> (Harness, Harness) {
    let standin = standin(Duration::from_millis(300)).await;
    let toml = format!("{}\n[continuity]\n{caps}\n", redis_state_toml(redis));
    let mut config = shim_config(&standin, &toml);
    config.clients[0].continuity = true;
    let mut both = replicas(&standin, &config.validated().unwrap(), 2).await;
    let b = both.pop().unwrap();
    (both.pop().unwrap(), b)
}

async fn login(h: &Harness, user: &str, password: &str) -> reqwest::Response {
    let url =
        format!("/oauth/access_token?grant_type=password&user_id={user}&password={password}&client_id={ID}");
    http().get(h.url(&url.replace('@', "%40"))).send().await.unwrap()
}

/// Assert `resp` is a cap's refusal with `status`, and return its body.
async fn assert_capped(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status(), status);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    assert_eq!(body["int_err_code"], "temporarily_unavailable", "{body}");
    body
}

async fn metrics(h: &Harness) -> String {
    get_text(h.admin_url("/metrics")).await
}

#[tokio::test]
async fn the_store_wide_cap_refuses_a_login_before_its_upstream_call() {
    let h = embedded("all", "max_sessions = 1").await;
    // A failed login gives its place back.
    assert_eq!(login(&h, "demo@example.com", "wrong").await.status(), 400);
    assert_eq!(login(&h, "demo@example.com", "demo-password").await.status(), 200);
    let calls = h.standin.token_calls();
    let body = assert_capped(login(&h, OTHER.0, OTHER.1).await, 503).await;
    assert_eq!(body["error_description"], "too many sessions; retry later");
    assert_eq!(h.standin.token_calls(), calls, "the refused login made no upstream call");
    assert!(metrics(&h).await.contains("oauth_shim_continuity_refused_logins_total{cap=\"all\"} 1"));
}

#[tokio::test]
async fn the_per_client_cap_refuses_a_login_without_spending_its_code() {
    let h = embedded("client", "max_sessions_per_client = 2").await;
    let first: Value = login(&h, "demo@example.com", "demo-password").await.json().await.unwrap();
    assert_eq!(login(&h, OTHER.0, OTHER.1).await.status(), 200);
    let calls = h.standin.token_calls();
    let body = assert_capped(login(&h, OTHER.0, OTHER.1).await, 429).await;
    assert_eq!(body["error_description"], "this client holds too many sessions");
    // A code grant is refused the same way, and its code is not spent.
    let code = h.standin.issue_code(ID, None);
    let by_code = format!("/oauth/access_token?grant_type=authorization_code&code={code}&client_id={ID}");
    assert_capped(http().get(h.url(&by_code)).send().await.unwrap(), 429).await;
    assert_eq!(h.standin.token_calls(), calls, "the refused logins made no upstream call");
    // A legacy refresh with a minted refresh token creates no session: not capped.
    let refresh = first["refresh_token"].as_str().unwrap();
    let renew =
        format!("/oauth/access_token?grant_type=refresh_token&refresh_token={refresh}&client_id={ID}");
    assert_eq!(http().get(h.url(&renew)).send().await.unwrap().status(), 200);
    // Revoking the client's sessions frees their places at once; the code still works.
    assert_eq!(revoke_all(&h).await, 2);
    let resp = http().get(h.url(&by_code)).send().await.unwrap();
    assert_eq!(resp.status(), 200, "the code was not spent by the refused call");
    assert!(metrics(&h).await.contains("oauth_shim_continuity_refused_logins_total{cap=\"client\"} 2"));
}

#[tokio::test]
async fn the_per_user_cap_counts_one_users_sessions_case_insensitively() {
    let h = embedded("user", "max_sessions_per_user = 1").await;
    let first: Value = login(&h, "demo@example.com", "demo-password").await.json().await.unwrap();
    let calls = h.standin.token_calls();
    let body = assert_capped(login(&h, " DEMO@Example.com", "demo-password").await, 429).await;
    assert_eq!(body["error_description"], "this user holds too many sessions with this client");
    assert_eq!(h.standin.token_calls(), calls, "no upstream call");
    // Another user of the client is not affected, nor is the legacy refresh of the session.
    assert_eq!(login(&h, OTHER.0, OTHER.1).await.status(), 200);
    let refresh = first["refresh_token"].as_str().unwrap();
    let renew =
        format!("/oauth/access_token?grant_type=refresh_token&refresh_token={refresh}&client_id={ID}");
    assert_eq!(http().get(h.url(&renew)).send().await.unwrap().status(), 200);
    assert!(metrics(&h).await.contains("oauth_shim_continuity_refused_logins_total{cap=\"user\"} 1"));
}

#[tokio::test]
async fn caps_hold_across_replicas_sharing_redis_even_for_concurrent_logins() {
    let redis = RedisServer::start().await;
    let (a, b) = replicas_on_redis(&redis, "max_sessions_per_client = 3\nmax_sessions_per_user = 2").await;
    // Five logins of one user at once, on both replicas: the upstream is slow, so all of them
    // are under way together. Exactly two get a session; the others never reach the upstream.
    let mut calls = Vec::new();
    for i in 0..5 {
        let h = if i % 2 == 0 { a.url("") } else { b.url("") };
        calls.push(tokio::spawn(async move {
            let url = format!(
                "{h}/oauth/access_token?grant_type=password&user_id=demo%40example.com&password=demo-password&client_id={ID}"
            );
            http().get(url).send().await.unwrap().status().as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for call in calls {
        statuses.push(call.await.unwrap());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 429, 429, 429]);
    assert_eq!(a.standin.token_calls(), 2, "refused logins made no upstream call");

    // The client's third session, on the other replica; a fourth is over the client's cap.
    assert_eq!(login(&b, OTHER.0, OTHER.1).await.status(), 200);
    let body = assert_capped(login(&a, OTHER.0, OTHER.1).await, 429).await;
    assert_eq!(body["error_description"], "this client holds too many sessions");
    assert_eq!(a.standin.token_calls(), 3);
    // A failed login gives back its place at once, here too.
    assert_eq!(revoke_all(&b).await, 3);
    assert_eq!(login(&a, OTHER.0, "wrong").await.status(), 400);
    assert_eq!(login(&b, OTHER.0, "wrong").await.status(), 400);
    assert_eq!(login(&a, OTHER.0, "wrong").await.status(), 400);
    for (h, (user, password)) in [(&a, OTHER), (&b, OTHER), (&a, ("demo@example.com", "demo-password"))] {
        assert_eq!(login(h, user, password).await.status(), 200, "places freed by revocation and failures");
    }

    // Redis holds no user name and no client id in the clear.
    for (k, v) in redis.dump_all().await {
        for canary in ["example.com", ID] {
            assert!(!k.windows(canary.len()).any(|w| w == canary.as_bytes()), "a key names {canary}");
            assert!(!v.windows(canary.len()).any(|w| w == canary.as_bytes()), "a value holds {canary}");
        }
    }
}

#[tokio::test]
async fn the_store_wide_cap_holds_across_replicas_sharing_redis() {
    let redis = RedisServer::start().await;
    let (a, b) = replicas_on_redis(&redis, "max_sessions = 1").await;
    assert_eq!(login(&a, "demo@example.com", "wrong").await.status(), 400);
    assert_eq!(login(&a, "demo@example.com", "demo-password").await.status(), 200);
    let calls = a.standin.token_calls();
    assert_capped(login(&b, OTHER.0, OTHER.1).await, 503).await;
    assert_eq!(a.standin.token_calls(), calls, "the refused login made no upstream call");
    assert!(metrics(&b).await.contains("oauth_shim_continuity_refused_logins_total{cap=\"all\"} 1"));
}
