//! Refresh results through real sockets (docs/protocol.md#refreshes): coalesced, cached, never
//! spent twice.

use std::time::Duration;

use oauth_shim::devtools::standin::{Fault, StandinClient, StandinConfig};
use serde_json::Value;

use crate::support::*;

fn refresh_url(h: &Harness, client: &str, rt: &str) -> String {
    h.url(&format!("/oauth/access_token?grant_type=refresh_token&refresh_token={rt}&client_id={client}"))
}

fn slow(delay_ms: u64) -> StandinConfig {
    StandinConfig { token_delay: Duration::from_millis(delay_ms), ..standin_config() }
}

async fn wait_for_token_calls(h: &Harness, n: usize) {
    eventually(&format!("{n} token calls upstream"), async || h.standin.token_calls() >= n).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_refreshes_reach_upstream_once() {
    let h = Harness::start(slow(300), "").await;
    let rt = grant(&h).await;
    h.standin.clear_requests();
    let url = refresh_url(&h, ID, &rt);
    let client = http();
    let answers = futures_join_all((0..200).map(|_| {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            let resp = client.get(url).send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        })
    }))
    .await;
    assert_eq!(h.standin.token_calls(), 1);
    let first = &answers[0];
    assert_eq!(first.0, 200, "{}", first.1);
    assert!(answers.iter().all(|a| a == first), "all 200 answers identical");
    let body: Value = serde_json::from_str(&first.1).unwrap();
    assert!(h.standin.is_access_token_valid(body["access_token"].as_str().unwrap()));
    let stats = h.app.state().refresh.stats();
    assert_eq!(stats.misses, 1);
    assert_eq!(stats.hits + stats.coalesced, 199);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_caller_hanging_up_cancels_nothing() {
    let h = Harness::start(slow(400), "").await;
    let rt = grant(&h).await;
    h.standin.clear_requests();
    let url = refresh_url(&h, ID, &rt);
    let first = tokio::spawn({
        let url = url.clone();
        async move { http().get(url).send().await }
    });
    wait_for_token_calls(&h, 1).await;
    let others: Vec<_> = (0..5)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get_json(url).await })
        })
        .collect();
    first.abort(); // the first caller hangs up mid-flight
    let mut tokens = Vec::new();
    for o in others {
        tokens.push(o.await.unwrap()["access_token"].as_str().unwrap().to_owned());
    }
    assert_eq!(h.standin.token_calls(), 1);
    assert!(tokens.iter().all(|t| t == &tokens[0]));
    assert!(h.standin.is_access_token_valid(&tokens[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_reach_every_waiter_and_are_not_cached() {
    let h = Harness::start(slow(300), "").await;
    let rt = grant(&h).await;
    h.standin.clear_requests();
    h.standin.set_fault(Some(Fault::Status(500, "boom".into())));
    let url = refresh_url(&h, ID, &rt);
    let answers = futures_join_all((0..20).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { http().get(url).send().await.unwrap().status().as_u16() })
    }))
    .await;
    assert!(answers.iter().all(|s| *s == 502), "{answers:?}");
    assert_eq!(h.standin.token_calls(), 1);
    h.standin.set_fault(None);
    let ok = http().get(&url).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(h.standin.token_calls(), 2, "the error was not cached: the next attempt went upstream");
    assert_eq!(h.app.state().refresh.stats().upstream_errors, 1);
}

#[tokio::test]
async fn another_client_never_gets_a_cached_answer_for_the_same_token() {
    let standin = StandinConfig {
        clients: vec![
            StandinClient { id: ID.into(), secret: SECRET.into(), allow_password_grant: true },
            StandinClient { id: "client-b".into(), secret: "secret-b".into(), allow_password_grant: false },
        ],
        ..standin_config()
    };
    let h = Harness::start(standin, "[[clients]]\nid = \"client-b\"\nsecret = \"secret-b\"\n").await;
    let rt = grant(&h).await;
    let a: Value = get_json(refresh_url(&h, ID, &rt)).await;
    assert!(a["access_token"].is_string());
    h.standin.clear_requests();

    // B presents A's refresh token: it goes upstream with B's own credentials and the upstream
    // refuses it; nothing of A's comes back.
    let resp = http().get(refresh_url(&h, "client-b", &rt)).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let text = resp.text().await.unwrap();
    assert!(text.contains("invalid_grant"));
    assert!(!text.contains(a["access_token"].as_str().unwrap()));
    let upstream = h.standin.requests();
    assert_eq!(upstream.len(), 1);
    let (id, secret) = decode_basic(upstream[0].headers["authorization"].to_str().unwrap());
    assert_eq!((id.as_str(), secret.as_str()), ("client-b", "secret-b"));
}

#[tokio::test]
async fn cached_expires_in_counts_down_and_the_entry_expires() {
    let h = Harness::start(standin_config(), "[refresh_cache]\nttl = \"2500ms\"\n").await;
    let rt = grant(&h).await;
    h.standin.clear_requests();
    let first: Value = get_json(refresh_url(&h, ID, &rt)).await;
    assert_eq!(first["expires_in"], "3600");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let cached: Value = get_json(refresh_url(&h, ID, &rt)).await;
    assert_eq!(h.standin.token_calls(), 1, "served from the cache");
    assert_eq!(cached["access_token"], first["access_token"]);
    let remaining: u64 = cached["expires_in"].as_str().unwrap().parse().unwrap();
    assert!(remaining < 3600, "remaining lifetime, not the original: {remaining}");
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let fresh: Value = get_json(refresh_url(&h, ID, &rt)).await;
    assert_eq!(h.standin.token_calls(), 2, "the entry expired after the ttl");
    assert_ne!(fresh["access_token"], first["access_token"]);
    assert_eq!(fresh["expires_in"], "3600");
}

#[tokio::test]
async fn failing_refresh_tokens_leave_nothing_behind() {
    let h = Harness::default().await;
    let client = http();
    for i in 0..300 {
        let resp = client.get(refresh_url(&h, ID, &format!("no-such-token-{i}"))).send().await.unwrap();
        assert_eq!(resp.status(), 400);
    }
    let cache = &h.app.state().refresh;
    assert_eq!(cache.entry_count().await, 0);
    assert_eq!(cache.in_flight(), 0);
    // (The million-token version runs against the cache directly in src/refresh/flight.rs.)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_upstream_two_workers_same_token_grant_survives() {
    let standin = StandinConfig {
        rotate_refresh_tokens: true,
        token_delay: Duration::from_millis(200),
        ..standin_config()
    };
    let h = Harness::start(standin, "").await;
    let rt = grant(&h).await;
    let url = refresh_url(&h, ID, &rt);
    let (a, b) = tokio::join!(async { get_json(&url).await }, async { get_json(&url).await },);
    assert_eq!(a, b);
    assert_ne!(a["refresh_token"], rt.as_str(), "the upstream rotated the refresh token");
    // A third worker a moment later with the same (now retired) token is answered from the cache.
    let c: Value = get_json(&url).await;
    assert_eq!(c["access_token"], a["access_token"]);
    assert_eq!(h.standin.revoked_grants(), 0);
    assert!(h.standin.is_access_token_valid(a["access_token"].as_str().unwrap()));
    // The rotated token keeps working.
    let next = http().get(refresh_url(&h, ID, a["refresh_token"].as_str().unwrap())).send().await.unwrap();
    assert_eq!(next.status(), 200);
    assert_eq!(h.standin.revoked_grants(), 0);
}

async fn futures_join_all<T: Send + 'static>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles.collect::<Vec<_>>() {
        out.push(h.await.unwrap());
    }
    out
}
