//! One flight per refresh token (docs/protocol.md#refreshes): a refresh token of one client of one
//! provider is spent upstream once, whether it comes through the legacy route or as a v2 call,
//! with or without a secret; a shared answer reaches only a caller with the same proof. For both
//! backends: in process (one instance), and through a real Redis (two replicas).

use std::time::Duration;

use oauth_shim::devtools::standin::{Standin, StandinClient};
use serde_json::{Value, json};

use crate::support::*;

/// One oauth-shim per entry; with `redis`, two replicas sharing it (calls alternate between
/// them), else one.
async fn instances(standin: &Standin, redis: Option<&RedisServer>, extra: &str) -> Vec<Harness> {
    let (n, state) = match redis {
        Some(redis) => (2, redis_state_toml(redis)),
        None => (1, String::new()),
    };
    replicas(standin, &shim_config(standin, &format!("{state}{extra}")), n).await
}

/// A legacy refresh of `rt` by [`ID`]: (status, body).
async fn legacy(via: &Harness, rt: &str) -> (u16, Value) {
    let url = via.refresh_url(rt);
    let resp = http().get(url).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

async fn every_route_and_proof_spend_a_token_once(redis: Option<&RedisServer>) {
    let standin = start_standin(rotating(0)).await;
    let at = instances(&standin, redis, "").await;
    let other = &at[at.len() - 1];

    // A v2 caller with the client's secret first, then the legacy route and more v2 callers.
    let rt = grant(&at[0]).await;
    let calls = standin.token_calls();
    let (status, first) = v2_json_refresh(&at[0], &rt, Some(SECRET)).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!((first["version"].as_str(), first["expires_in"].as_u64().is_some()), (Some("3"), true));
    let (status, old) = legacy(other, &rt).await;
    assert_eq!(status, 200, "{old}");
    assert_eq!(
        (&old["access_token"], &old["refresh_token"]),
        (&first["access_token"], &first["refresh_token"])
    );
    assert_eq!(old["version"], "2", "the legacy shape: {old}");
    // Without a secret, or with a wrong one: never the answer, and nothing spent upstream.
    for (via, secret) in [(other, None), (&at[0], Some("not-the-secret"))] {
        let (status, body) = v2_json_refresh(via, &rt, secret).await;
        assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{secret:?}: {body}");
        assert!(body.get("access_token").is_none());
    }
    let (status, again) = v2_json_refresh(other, &rt, Some(SECRET)).await;
    assert_eq!((status, &again["access_token"]), (200, &first["access_token"]));
    assert_eq!(standin.token_calls(), calls + 1, "one upstream call for five refreshes of one token");

    // The legacy route first: a v2 caller with the secret gets that answer, as v2.
    let rt = grant(&at[0]).await;
    let calls = standin.token_calls();
    let (status, old) = legacy(&at[0], &rt).await;
    assert_eq!(status, 200, "{old}");
    let (status, new) = v2_json_refresh(other, &rt, Some(SECRET)).await;
    assert_eq!((status, &new["access_token"]), (200, &old["access_token"]), "{new}");
    assert_eq!((new["token_type"].as_str(), new["version"].as_str()), (Some("Bearer"), Some("3")));
    assert_eq!(standin.token_calls(), calls + 1);
    assert_eq!(standin.revoked_grants(), 0, "no refresh token was used twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_and_proof_spend_a_token_once_in_process() {
    every_route_and_proof_spend_a_token_once(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_and_proof_spend_a_token_once_through_redis() {
    let redis = RedisServer::start().await;
    every_route_and_proof_spend_a_token_once(Some(&redis)).await;
}

/// Legacy and v2 callers at the same moment, on a rotating upstream: one call upstream, one
/// answer for all, no grant revoked.
async fn concurrent_routes_share_one_flight(redis: Option<&RedisServer>) {
    let standin = start_standin(rotating(300)).await;
    let at = instances(&standin, redis, "").await;
    let rt = grant(&at[0]).await;
    let calls = standin.token_calls();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let (base, rt) = (at[i % at.len()].base.clone(), rt.clone());
        tasks.push(tokio::spawn(async move {
            let client = http();
            let resp = if i % 2 == 0 {
                let url = format!(
                    "{base}/oauth/access_token?grant_type=refresh_token&refresh_token={rt}&client_id={ID}"
                );
                client.get(url).send().await.unwrap()
            } else {
                let call = json!({"grant_type": "refresh_token", "refresh_token": rt, "client_id": ID,
                    "client_secret": SECRET});
                client
                    .post(format!("{base}/oauth/v2/token"))
                    .header("content-type", "application/json")
                    .body(call.to_string())
                    .send()
                    .await
                    .unwrap()
            };
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    assert_eq!(standin.token_calls(), calls + 1, "{answers:?}");
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["access_token"], answers[0].1["access_token"]);
    }
    assert_eq!(standin.revoked_grants(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_routes_share_one_flight_in_process() {
    concurrent_routes_share_one_flight(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_routes_share_one_flight_through_redis() {
    let redis = RedisServer::start().await;
    concurrent_routes_share_one_flight(Some(&redis)).await;
}

/// A refresh flight led by a caller with a wrong secret: the upstream refuses it, and a legacy
/// caller that joined that flight is not handed that refusal; it makes its own call.
async fn another_callers_refusal_is_not_shared(redis: Option<&RedisServer>) {
    let standin = start_standin(rotating(300)).await;
    let at = instances(&standin, redis, "").await;
    let rt = grant(&at[0]).await;
    let wrong = {
        let (base, rt) = (at[0].base.clone(), rt.clone());
        tokio::spawn(async move {
            let call = json!({"grant_type": "refresh_token", "refresh_token": rt, "client_id": ID,
                "client_secret": "not-the-secret"});
            let resp = http()
                .post(format!("{base}/oauth/v2/token"))
                .header("content-type", "application/json")
                .body(call.to_string())
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        })
    };
    // The wrong caller's flight holds the token (in Redis: its lock) before the legacy call.
    for _ in 0..1000 {
        let led = match redis {
            None => at[0].app.state().refresh.in_flight() == 1,
            Some(redis) => {
                let mut conn = redis.client().get_multiplexed_async_connection().await.unwrap();
                let locks: Vec<String> =
                    redis::cmd("KEYS").arg("oauth-shim:refresh-lock:*").query_async(&mut conn).await.unwrap();
                !locks.is_empty()
            }
        };
        if led {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, body) = legacy(&at[at.len() - 1], &rt).await;
    assert_eq!(status, 200, "the legacy caller's own call: {body}");
    assert!(standin.is_access_token_valid(body["access_token"].as_str().unwrap()));
    let (status, refused) = wrong.await.unwrap();
    assert_eq!((status, refused["error"].as_str()), (401, Some("invalid_client")), "{refused}");
    assert_eq!(standin.revoked_grants(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_callers_refusal_is_not_shared_in_process() {
    another_callers_refusal_is_not_shared(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_callers_refusal_is_not_shared_through_redis() {
    let redis = RedisServer::start().await;
    another_callers_refusal_is_not_shared(Some(&redis)).await;
}

/// The default provider's clients are scoped like any other provider's: its client
/// `5:bprov:alpha` and provider `bprov`'s client `alpha` never share a cached refresh.
async fn default_provider_clients_are_scoped(redis: Option<&RedisServer>) {
    const DEFAULT_ID: &str = "5:bprov:alpha";
    let mut config = standin_config();
    for id in [DEFAULT_ID, "alpha"] {
        config.clients.push(StandinClient {
            id: id.into(),
            secret: SECRET.into(),
            allow_password_grant: true,
        });
    }
    let standin = start_standin(config).await;
    let extra = format!(
        r#"
        [[providers]]
        name = "bprov"
        hosts = ["b.example"]
        token_url = "{}"
        authorize_url = "{}"
        api_base = "{}"
        [[clients]]
        id = "{DEFAULT_ID}"
        secret = "{SECRET}"
        allow_password_grant = true
        [[clients]]
        id = "alpha"
        provider = "bprov"
        secret = "{SECRET}"
        allow_password_grant = true
        "#,
        standin.token_url(),
        standin.authorize_url(),
        standin.api_base()
    );
    let at = instances(&standin, redis, &extra).await;
    let refresh = |id: &str, rt: &str| {
        format!(
            "/oauth/access_token?grant_type=refresh_token&refresh_token={rt}&client_id={}",
            form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
        )
    };
    let login = format!(
        "/oauth/access_token?grant_type=password&user_id=demo%40example.com&password=demo-password&client_id={}",
        form_urlencoded::byte_serialize(DEFAULT_ID.as_bytes()).collect::<String>()
    );
    let rt = get_json(at[0].url(&login)).await["refresh_token"].as_str().unwrap().to_owned();
    let calls = standin.token_calls();
    let mine = get_json(at[0].url(&refresh(DEFAULT_ID, &rt))).await;
    assert!(mine["access_token"].is_string(), "{mine}");
    let resp = http()
        .get(at[at.len() - 1].url(&refresh("alpha", &rt)))
        .header("host", "b.example")
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let theirs: Value = resp.json().await.unwrap();
    assert_eq!(standin.token_calls(), calls + 2, "bprov's alpha went upstream, not to the default's entry");
    assert_eq!((status, theirs["error"].as_str()), (400, Some("invalid_grant")), "{theirs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_provider_clients_are_scoped_in_process() {
    default_provider_clients_are_scoped(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_provider_clients_are_scoped_through_redis() {
    let redis = RedisServer::start().await;
    default_provider_clients_are_scoped(Some(&redis)).await;
}
