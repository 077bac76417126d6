//! Redis Cluster (docs/deployment.md#redis-cluster): 3 masters and 3 replicas, real
//! `redis-server` processes on free loopback ports, and 3 oauth-shim replicas against a
//! stand-in that rotates refresh tokens and revokes the grant on reuse. Bursts coalesce, and
//! the master of a flight's slot killed while its leader calls the upstream logs nobody out.

use std::time::Duration;

use crate::sentinel::{collect, joined, one_answer, print_failover_times, spawn_burst};
use crate::support::*;

/// The Redis key of the lock of [`ID`]'s refresh of `rt` (default provider).
fn lock_key(rt: &str) -> String {
    let keys = oauth_shim::crypto::KeySet::parse(STATE_KEY).unwrap();
    let hash = keys.hash("refresh", &[b"default", ID.as_bytes(), rt.as_bytes()]);
    format!("oauth-shim:refresh-lock:{{{}}}", hash.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_master_killed_mid_refresh_fails_over_and_logs_nobody_out() {
    let mut setup = ClusterSetup::start().await;
    let standin = start_standin(rotating(1500)).await;
    let mut config = shim_config(&standin, &setup.state_toml());
    // Room for a failover (failover_wait 8 s) inside the token call's deadline.
    config.upstream.request_timeout = Duration::from_secs(12);

    // A continuity session (its keys share one slot) written through one replica serves another.
    let mut continuity = config.clone();
    continuity.clients[0].continuity = true;
    let sessions = replicas(&standin, &continuity, 2).await;
    let legacy = crate::continuity::password_grant(&sessions[0]).await;
    let access = legacy["access_token"].as_str().unwrap();
    assert_eq!(crate::continuity::api(&sessions[1], access).await.status(), 200);
    drop(sessions);

    let replicas = replicas(&standin, &config, 3).await;
    let ready = get_text(replicas[0].admin_url("/readyz")).await;
    assert!(ready.contains("redis: cluster, masters 127.0.0.1:"), "{ready}");

    // Through the cluster, 300 refreshes reach the upstream once.
    let rt = grant(&replicas[0]).await;
    standin.clear_requests();
    one_answer(&collect(spawn_burst(&replicas, &rt, 300)).await);
    assert_eq!(standin.token_calls(), 1);

    // The master of the flight's slot dies while the leader's upstream call is in flight.
    let rt = grant(&replicas[1]).await;
    let doomed = setup.master_of(&lock_key(&rt)).await;
    standin.clear_requests();
    let burst = spawn_burst(&replicas, &rt, 300);
    eventually("every caller to join the flight", async || joined(&replicas) == 600).await;
    eventually("the leader's call to reach the upstream", async || standin.token_calls() == 1).await;
    setup.node(doomed).stop();
    let answers = collect(burst).await;
    one_answer(&answers);
    assert_eq!(standin.token_calls(), 1, "the burst reached the upstream once");
    assert_eq!(standin.revoked_grants(), 0);
    print_failover_times(&answers);
    let mut waits = 0.0;
    for r in &replicas {
        let metrics = get_text(r.admin_url("/metrics")).await;
        let sample = |name: &str| -> f64 {
            let line = metrics.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        waits += sample("oauth_shim_state_master_waits_total ");
        assert_eq!(
            sample("oauth_shim_state_master_waits_total ") > 0.0,
            sample("oauth_shim_state_master_wait_seconds_total ") > 0.0
        );
    }
    assert!(waits > 0.0, "callers waited for the slot's new master");

    // Its replica took over the slot, and the replicas saw the failover.
    eventually("a replica to take over the slot", async || setup.master_of(&lock_key(&rt)).await != doomed)
        .await;
    for r in &replicas {
        let seen = poll_until(async || {
            let metrics = get_text(r.admin_url("/metrics")).await;
            metrics.contains("oauth_shim_state_failovers_total 1")
        })
        .await;
        let metrics = get_text(r.admin_url("/metrics")).await;
        let state: Vec<&str> = metrics.lines().filter(|l| l.starts_with("oauth_shim_state")).collect();
        assert!(seen, "{state:#?}\n{}", get_text(r.admin_url("/readyz")).await);
        let ready = get_text(r.admin_url("/readyz")).await;
        assert!(!ready.contains(&format!("127.0.0.1:{doomed}")), "{ready}");
    }

    // A new burst coalesces to one call. Its slot's master has a replica: the promoted one has
    // none until the old master rejoins, and with `replicas_ack = 1` its flights are refused.
    let promoted = setup.master_of(&lock_key(&rt)).await;
    let mut rt = grant(&replicas[2]).await;
    while setup.master_of(&lock_key(&rt)).await == promoted {
        rt = grant(&replicas[2]).await;
    }
    standin.clear_requests();
    one_answer(&collect(spawn_burst(&replicas, &rt, 300)).await);
    assert_eq!(standin.token_calls(), 1);
}
