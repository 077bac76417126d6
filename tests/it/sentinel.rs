//! Redis under Sentinel (docs/deployment.md#redis-under-sentinel): 1 master, 2 replicas and 3
//! sentinels, real `redis-server` processes on free loopback ports, and 3 oauth-shim replicas
//! against a stand-in that rotates refresh tokens and revokes the grant on reuse. Replicas find
//! the master through the sentinels and follow a failover, and a master killed while a leader
//! calls the upstream logs nobody out.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

/// `n` concurrent refreshes of `rt` over `replicas`: (status, body, how long the caller waited).
pub(crate) fn spawn_burst(
    replicas: &[Harness],
    rt: &str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<(u16, Value, Duration)>> {
    let client = http();
    (0..n)
        .map(|i| {
            let (client, url) = (client.clone(), replicas[i % replicas.len()].refresh_url(rt));
            tokio::spawn(async move {
                let started = Instant::now();
                let resp = client.get(url).send().await.unwrap();
                let status = resp.status().as_u16();
                (status, resp.json::<Value>().await.unwrap(), started.elapsed())
            })
        })
        .collect()
}

pub(crate) async fn collect(
    tasks: Vec<tokio::task::JoinHandle<(u16, Value, Duration)>>,
) -> Vec<(u16, Value, Duration)> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// Print how long the callers of a burst waited (p50, p99, max), for BENCHMARKS.md.
pub(crate) fn print_failover_times(answers: &[(u16, Value, Duration)]) {
    let mut waited: Vec<Duration> = answers.iter().map(|a| a.2).collect();
    waited.sort();
    eprintln!(
        "failover seen by callers: p50 {:?}, p99 {:?}, max {:?}",
        waited[waited.len() / 2],
        waited[waited.len() * 99 / 100],
        waited[waited.len() - 1]
    );
}

/// Every caller got 200 and the same tokens.
pub(crate) fn one_answer(answers: &[(u16, Value, Duration)]) {
    let first = &answers[0].1;
    for (status, body, _) in answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["access_token"], first["access_token"]);
        assert_eq!(body["refresh_token"], first["refresh_token"]);
    }
}

pub(crate) fn joined(replicas: &[Harness]) -> u64 {
    replicas.iter().map(|r| r.app.state().refresh.stats()).map(|s| s.misses + s.coalesced + s.hits).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_refresh_fails_over_and_logs_nobody_out() {
    let mut setup = SentinelSetup::start().await;
    let first_master = setup.nodes[0].port;
    let standin = start_standin(rotating(1500)).await;
    let mut config = shim_config(&standin, &setup.state_toml());
    // Room for a failover (failover_wait 8 s) inside the token call's deadline.
    config.upstream.request_timeout = Duration::from_secs(12);
    let replicas = replicas(&standin, &config, 3).await;
    let ready = get_text(replicas[0].admin_url("/readyz")).await;
    assert!(ready.contains(&format!("redis: sentinel, master 127.0.0.1:{first_master}")), "{ready}");

    // Through Sentinel, 300 refreshes reach the upstream once.
    let rt = grant(&replicas[0]).await;
    standin.clear_requests();
    one_answer(&collect(spawn_burst(&replicas, &rt, 300)).await);
    assert_eq!(standin.token_calls(), 1);

    // The master dies while the leader's upstream call is in flight.
    let rt = grant(&replicas[1]).await;
    standin.clear_requests();
    let burst = spawn_burst(&replicas, &rt, 300);
    eventually("every caller to join the flight", async || joined(&replicas) == 600).await;
    eventually("the leader's call to reach the upstream", async || standin.token_calls() == 1).await;
    setup.node(first_master).stop();
    let answers = collect(burst).await;
    one_answer(&answers);
    assert_eq!(standin.token_calls(), 1, "the burst reached the upstream once");
    assert_eq!(standin.revoked_grants(), 0);
    print_failover_times(&answers);

    // The sentinels promoted a replica, and every oauth-shim replica uses it.
    let new_master = setup.master_port().await.expect("a master");
    assert_ne!(new_master, first_master);
    for r in &replicas {
        let wanted = format!("master 127.0.0.1:{new_master}");
        eventually("the replica to follow the failover", async || {
            get_text(r.admin_url("/readyz")).await.contains(&wanted)
        })
        .await;
    }
    let metrics = get_text(replicas[0].admin_url("/metrics")).await;
    assert!(metrics.contains("oauth_shim_state_failovers_total 1"), "{metrics}");

    // After the failover, a new burst coalesces to one call again.
    let rt = grant(&replicas[2]).await;
    standin.clear_requests();
    one_answer(&collect(spawn_burst(&replicas, &rt, 300)).await);
    assert_eq!(standin.token_calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_no_replica_acknowledges_is_not_led() {
    let master = RedisServer::start().await;
    let replica_of = vec!["--replicaof".to_owned(), "127.0.0.1".to_owned(), master.port.to_string()];
    let mut replica = RedisServer::start_with(replica_of).await;
    let standin = start_standin(rotating(100)).await;
    // A starved machine's replica may take longer than `WAIT`'s share (half of
    // `command_timeout`) to acknowledge: 2 s, so only a missing replica fails to.
    let state = format!(
        "{}replicas_ack = 1\nfailover_wait = \"300ms\"\n",
        redis_state_toml_timing_out(&master, "2s")
    );
    let replicas = replicas(&standin, &shim_config(&standin, &state), 3).await;
    let rt = grant(&replicas[0]).await;
    standin.clear_requests();
    eventually("the replica to sync", async || {
        let mut conn = master.client().get_multiplexed_async_connection().await.unwrap();
        let info: String = redis::cmd("INFO").arg("replication").query_async(&mut conn).await.unwrap();
        // Connected is not enough: WAIT counts a replica once its first sync is done.
        info.contains("connected_slaves:1") && info.contains("state=online")
    })
    .await;
    one_answer(&collect(spawn_burst(&replicas, &rt, 30)).await);
    assert_eq!(standin.token_calls(), 1, "acknowledged: led once");

    // The replica gone, no lock is acknowledged: nothing reaches the upstream.
    replica.stop();
    let rt = grant(&replicas[1]).await;
    standin.clear_requests();
    let answers = collect(spawn_burst(&replicas, &rt, 30)).await;
    assert_eq!(standin.token_calls(), 0);
    for (status, body, _) in &answers {
        assert_eq!(*status, 503, "{body}");
        assert_eq!(body["error"], "temporarily_unavailable");
    }
    let metrics = get_text(replicas[0].admin_url("/metrics")).await;
    assert!(!metrics.contains("oauth_shim_state_refusals_total{reason=\"no_replica_ack\"} 0"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuity_session_written_before_a_failover_works_after_it() {
    use crate::continuity::{api, password_grant};
    let mut setup = SentinelSetup::start().await;
    let first_master = setup.nodes[0].port;
    let standin = start_standin(standin_config()).await;
    // 2 s for a starved machine's replicas to acknowledge the session (see above).
    let state = setup.state_toml().replace("command_timeout = \"500ms\"", "command_timeout = \"2s\"");
    let mut config = shim_config(&standin, &state);
    config.clients[0].continuity = true;
    let replicas = replicas(&standin, &config, 2).await;
    let legacy = password_grant(&replicas[0]).await;
    let access = legacy["access_token"].as_str().unwrap().to_owned();
    assert_eq!(api(&replicas[1], &access).await.status(), 200);
    // The replicas have the session (acknowledged by one, `replicas_ack`, before the answer).
    let keys = async |node: &RedisServer| -> i64 {
        let mut conn = node.client().get_multiplexed_async_connection().await.unwrap();
        redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap()
    };
    let on_master = keys(&setup.nodes[0]).await;
    eventually("the session to replicate", async || keys(&setup.nodes[1]).await == on_master).await;

    setup.node(first_master).stop();
    for r in &replicas {
        eventually("the session to be served through the new master", async || {
            api(r, &access).await.status() == 200
        })
        .await;
    }
    assert_ne!(setup.master_port().await, Some(first_master));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuity_session_no_replica_acknowledges_is_refused_not_kept_quietly() {
    let master = RedisServer::start().await;
    let standin = start_standin(standin_config()).await;
    // As above: 2 s for a starved machine's replica to acknowledge.
    let state = format!("{}replicas_ack = 1\n", redis_state_toml_timing_out(&master, "2s"));
    let mut config = shim_config(&standin, &state);
    config.clients[0].continuity = true;
    let replicas = replicas(&standin, &config, 1).await;

    // No replica: the session a login writes is not acknowledged, so the login gets a
    // retryable error (its tokens could be lost with the master), and the failure is counted.
    let resp = http().get(replicas[0].password_url()).send().await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");
    let metrics = get_text(replicas[0].admin_url("/metrics")).await;
    assert!(!metrics.contains("oauth_shim_state_ack_failures_total 0"), "{metrics}");

    // A replica acknowledges: the login works, and so does its minted token.
    let replica_of = vec!["--replicaof".to_owned(), "127.0.0.1".to_owned(), master.port.to_string()];
    let _replica = RedisServer::start_with(replica_of).await;
    eventually("the replica to sync", async || {
        let mut conn = master.client().get_multiplexed_async_connection().await.unwrap();
        let info: String = redis::cmd("INFO").arg("replication").query_async(&mut conn).await.unwrap();
        // Connected is not enough: WAIT counts a replica once its first sync is done.
        info.contains("connected_slaves:1") && info.contains("state=online")
    })
    .await;
    let legacy = crate::continuity::password_grant(&replicas[0]).await;
    let access = legacy["access_token"].as_str().unwrap();
    assert_eq!(crate::continuity::api(&replicas[0], access).await.status(), 200);
}
