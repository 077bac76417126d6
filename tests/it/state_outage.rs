//! What replicas do while no Redis master answers (docs/deployment.md#when-redis-fails): by
//! default they refuse a refresh they cannot coalesce (503 with `Retry-After`) rather than spend
//! a rotating refresh token twice; `when_unavailable = "local"` answers from per-replica flights.
//! Each test starts its own `redis-server` on a free loopback port and 3 in-process replicas,
//! against a stand-in upstream that rotates refresh tokens and revokes the grant on reuse.

use std::time::Duration;

use oauth_shim::devtools::standin::Standin;
use serde_json::Value;

use crate::support::*;

/// One caller's answer: status, `Retry-After`, body.
type Answer = (u16, Option<String>, Value);

/// `n` concurrent refreshes of `rt`, spread round-robin over `replicas`, still running.
fn spawn_burst(replicas: &[Harness], rt: &str, n: usize) -> Vec<tokio::task::JoinHandle<Answer>> {
    let client = http();
    (0..n)
        .map(|i| {
            let (client, url) = (client.clone(), replicas[i % replicas.len()].refresh_url(rt));
            tokio::spawn(async move {
                let resp = client.get(url).send().await.unwrap();
                let retry_after = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
                (resp.status().as_u16(), retry_after, resp.json::<Value>().await.unwrap())
            })
        })
        .collect()
}

async fn collect(tasks: Vec<tokio::task::JoinHandle<Answer>>) -> Vec<Answer> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// Nobody was logged out: every caller got the one new token (200) or a retryable refusal in
/// the legacy error shape (503 with `Retry-After`), and the upstream never saw a reuse.
fn nobody_logged_out(standin: &Standin, answers: &[Answer]) -> usize {
    let first_ok = answers.iter().find(|a| a.0 == 200).map(|a| a.2["access_token"].clone());
    let mut refused = 0;
    for (status, retry_after, body) in answers {
        assert_ne!(body["error"], "invalid_grant", "a caller was logged out: {body}");
        match status {
            200 => assert_eq!(Some(&body["access_token"]), first_ok.as_ref(), "one set of tokens"),
            503 => {
                refused += 1;
                assert!(retry_after.is_some(), "a refusal says when to retry");
                assert_eq!(body["error"], "temporarily_unavailable", "{body}");
                assert_eq!(body["int_err_code"], "temporarily_unavailable", "legacy shape: {body}");
                assert!(body["msg"].is_string(), "legacy shape: {body}");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(standin.revoked_grants(), 0, "the upstream saw a refresh token reused");
    refused
}

/// The sum over `replicas` of the refusals counted for `reason`.
async fn refusals(replicas: &[Harness], reason: &str) -> f64 {
    let mut sum = 0.0;
    for r in replicas {
        let text = get_text(r.admin_url("/metrics")).await;
        let sample = format!("oauth_shim_state_refusals_total{{reason=\"{reason}\"}} ");
        sum += text
            .lines()
            .find_map(|l| l.strip_prefix(&sample).and_then(|v| v.trim().parse::<f64>().ok()))
            .unwrap_or_else(|| panic!("{sample} not in /metrics:\n{text}"));
    }
    sum
}

async fn three_replicas(standin: &Standin, state_toml: &str) -> Vec<Harness> {
    replicas(standin, &shim_config(standin, state_toml), 3).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_redis_refuses_refreshes_and_spends_no_rotating_token() {
    let mut redis = RedisServer::start().await;
    let standin = start_standin(rotating(300)).await;
    let replicas = three_replicas(&standin, &redis_state_toml(&redis)).await;
    let rt = grant(&replicas[0]).await;
    standin.clear_requests();

    redis.stop();
    let answers = collect(spawn_burst(&replicas, &rt, 300)).await;
    let refused = nobody_logged_out(&standin, &answers);
    assert!(standin.token_calls() <= 1, "{} upstream calls", standin.token_calls());
    assert_eq!(refused + answers.iter().filter(|a| a.0 == 200).count(), 300);
    assert!(refused > 0, "with Redis gone and nothing cached, refreshes are refused");
    assert!(refusals(&replicas, "unavailable").await >= 1.0);

    // Redis back: the refresh token was not spent (or its answer is cached), so the retry
    // succeeds, with one upstream call in all.
    redis.restart().await;
    eventually("replicas reconnect", async || replicas.iter().all(Harness::redis_up)).await;
    let answers = collect(spawn_burst(&replicas, &rt, 30)).await;
    assert!(answers.iter().all(|a| a.0 == 200), "{answers:?}");
    assert_eq!(standin.token_calls(), 1);
    assert_eq!(standin.revoked_grants(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarting_while_the_leader_calls_upstream_spends_the_token_once() {
    let mut redis = RedisServer::start().await;
    let standin = start_standin(rotating(1200)).await;
    let replicas = three_replicas(&standin, &redis_state_toml(&redis)).await;
    let rt = grant(&replicas[0]).await;
    standin.clear_requests();

    let burst = spawn_burst(&replicas, &rt, 300);
    // Every caller arrived: one leads, the others joined its flight, here or on another
    // replica. (A caller arriving after Redis restarted empty would find no flight to join.)
    eventually("every caller to join the flight", async || {
        let stats = replicas.iter().map(|r| r.app.state().refresh.stats());
        stats.map(|s| s.misses + s.coalesced).sum::<u64>() == 300
    })
    .await;
    eventually("the leader's call to reach the upstream", async || standin.token_calls() == 1).await;
    // Killed and started again empty (no persistence): the leader's lock is gone, the leader
    // is not.
    redis.stop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    redis.restart().await;
    let answers = collect(burst).await;
    nobody_logged_out(&standin, &answers);
    assert_eq!(standin.token_calls(), 1, "the waiters did not take over from a live leader");

    // The leader's answer is in Redis: a late caller with the spent token gets it.
    eventually("replicas reconnect", async || replicas.iter().all(Harness::redis_up)).await;
    let late: Value = get_json(replicas[2].refresh_url(&rt)).await;
    assert!(late["access_token"].is_string(), "{late}");
    assert_eq!(standin.token_calls(), 1);
    assert_eq!(standin.revoked_grants(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_redis_is_waited_for_not_taken_for_an_outage() {
    let redis = RedisServer::start_with(vec!["--enable-debug-command".into(), "yes".into()]).await;
    let standin = start_standin(rotating(300)).await;
    // The default command_timeout: a 1 s stall is past it.
    let replicas = three_replicas(&standin, &redis_state_toml_timing_out(&redis, "250ms")).await;
    let rt = grant(&replicas[0]).await;
    standin.clear_requests();

    let mut conn = redis.client().get_multiplexed_async_connection().await.unwrap();
    let stall = tokio::spawn(async move {
        let _: redis::RedisResult<()> = redis::cmd("DEBUG").arg("SLEEP").arg(1).query_async(&mut conn).await;
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let answers = collect(spawn_burst(&replicas, &rt, 300)).await;
    stall.await.unwrap();
    nobody_logged_out(&standin, &answers);
    assert!(standin.token_calls() <= 1, "{} upstream calls", standin.token_calls());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_local_a_killed_redis_still_answers_every_refresh() {
    let mut redis = RedisServer::start().await;
    // Refresh tokens that stay the same (as GoTo's do).
    let standin = start_standin(standin_config()).await;
    let state = format!("{}when_unavailable = \"local\"\n", redis_state_toml(&redis));
    let replicas = three_replicas(&standin, &state).await;
    let rt = grant(&replicas[0]).await;
    standin.clear_requests();

    redis.stop();
    let answers = collect(spawn_burst(&replicas, &rt, 300)).await;
    assert!(answers.iter().all(|a| a.0 == 200), "{:?}", answers.iter().find(|a| a.0 != 200));
    assert!(standin.token_calls() <= 3, "one flight per replica at most");
    assert_eq!(refusals(&replicas, "unavailable").await, 0.0);
}
