//! Shared state on a real Redis (docs/deployment.md#shared-service-refresh-state-in-redis):
//! replicas spend a refresh token once between them, survive Redis dying, stalling or refusing and
//! coming back, and leave nothing readable in Redis. Each test starts its own `redis-server` on a
//! free loopback port.

use std::time::Duration;

use oauth_shim::devtools::standin::{Fault, Standin, StandinConfig};
use serde_json::Value;

use crate::support::*;

/// `[state]` TOML for the outage policy of providers whose refresh tokens do not rotate: each
/// replica refreshes on its own while Redis is down (docs/deployment.md#when-redis-fails).
const LOCAL: &str = "when_unavailable = \"local\"\n";

/// One oauth-shim replica on `extra_toml` (its own app, listeners and Redis connection).
async fn start(standin: &Standin, extra_toml: &str) -> Harness {
    Harness::with_config(standin.clone(), shim_config(standin, extra_toml)).await
}

/// The value of the unlabelled sample `name` in `replica`'s `/metrics`.
async fn metric(replica: &Harness, name: &str) -> f64 {
    let text = get_text(replica.admin_url("/metrics")).await;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
}

/// `n` replicas sharing `redis`, with `extra` TOML.
async fn on_redis(standin: &Standin, redis: &RedisServer, n: usize, extra: &str) -> Vec<Harness> {
    replicas(standin, &shim_config(standin, &format!("{}{extra}", redis_state_toml(redis))), n).await
}

/// `n` concurrent refreshes of `rt`, spread round-robin over `replicas`: (status, body) each.
async fn burst(replicas: &[Harness], rt: &str, n: usize) -> Vec<(u16, Value)> {
    let client = http();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (client, url) = (client.clone(), replicas[i % replicas.len()].refresh_url(rt));
            tokio::spawn(async move {
                let resp = client.get(url).send().await.unwrap();
                (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_spend_a_rotating_refresh_token_once() {
    let redis = RedisServer::start().await;
    let standin = start_standin(rotating(300)).await;
    let config = shim_config(&standin, &redis_state_toml_timing_out(&redis, "5s"));
    let replicas = replicas(&standin, &config, 3).await;
    let rt = grant(&replicas[0]).await;
    standin.clear_requests();

    let answers = burst(&replicas, &rt, 300).await;
    assert_eq!(standin.token_calls(), 1, "300 refreshes over 3 replicas reached the upstream once");
    let first = &answers[0].1;
    assert_ne!(first["refresh_token"], rt.as_str(), "the upstream rotated the refresh token");
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["access_token"], first["access_token"]);
        assert_eq!(body["refresh_token"], first["refresh_token"]);
    }
    assert_eq!(standin.revoked_grants(), 0);
    assert!(standin.is_access_token_valid(first["access_token"].as_str().unwrap()));
    // Exactly one replica called upstream; the others waited on it through Redis or found
    // its answer there.
    let misses: u64 = replicas.iter().map(|r| r.app.state().refresh.stats().misses).sum();
    assert_eq!(misses, 1);
    for r in &replicas {
        assert_eq!(metric(r, "oauth_shim_state_fallback_total").await, 0.0);
    }

    // A late worker on any replica with the retired token gets the cached answer.
    let late: Value = get_json(replicas[2].refresh_url(&rt)).await;
    assert_eq!(late["access_token"], first["access_token"]);
    assert_eq!(standin.token_calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_reach_every_replica_as_errors_and_are_not_cached() {
    let redis = RedisServer::start().await;
    let standin =
        start_standin(StandinConfig { token_delay: Duration::from_millis(300), ..standin_config() }).await;
    let replicas = on_redis(&standin, &redis, 3, "").await;
    let rt = grant(&replicas[0]).await;
    standin.clear_requests();

    standin.set_fault(Some(Fault::Status(500, "boom".into())));
    let answers = burst(&replicas, &rt, 30).await;
    assert!(answers.iter().all(|(s, _)| *s == 502), "{answers:?}");
    assert_eq!(standin.token_calls(), 1);

    // Not cached: the next attempt, on any replica, goes upstream and succeeds.
    standin.set_fault(None);
    let ok = http().get(replicas[1].refresh_url(&rt)).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(standin.token_calls(), 2);

    // invalid_grant: one upstream call, every replica's callers get invalid_grant.
    let answers = burst(&replicas, "no-such-refresh-token", 30).await;
    assert_eq!(standin.token_calls(), 3);
    for (status, body) in &answers {
        assert_eq!(*status, 400);
        assert_eq!(body["error"], "invalid_grant");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_leaders_lock_expires_and_a_waiter_takes_over() {
    let redis = RedisServer::start().await;
    let standin = start_standin(standin_config()).await;
    let replicas = on_redis(&standin, &redis, 1, "").await;
    let rt = grant(&replicas[0]).await;
    standin.clear_requests();

    // A leader on some replica took the lock and died: only its lock is left.
    let keys = oauth_shim::crypto::KeySet::parse(STATE_KEY).unwrap();
    let hash = keys.hash("refresh", &[b"default", ID.as_bytes(), rt.as_bytes()]);
    let lock: String = format!(
        "oauth-shim:refresh-lock:{{{}}}",
        hash.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let mut conn = redis.client().get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(&lock)
        .arg("dead-leader")
        .arg("PX")
        .arg(800)
        .query_async(&mut conn)
        .await
        .unwrap();

    let answer = http().get(replicas[0].refresh_url(&rt)).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(standin.token_calls(), 1, "the waiter took over once the lock expired");
    let exists: bool = redis::cmd("EXISTS").arg(&lock).query_async(&mut conn).await.unwrap();
    assert!(!exists, "the new leader released its lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_local_redis_dying_falls_back_and_coming_back_resumes_sharing() {
    let mut redis = RedisServer::start().await;
    let standin = start_standin(rotating(300)).await;
    let replicas = on_redis(&standin, &redis, 2, &format!("{LOCAL}failover_wait = \"0s\"\n")).await;
    let rt = grant(&replicas[0]).await;
    standin.clear_requests();
    let answers = burst(&replicas, &rt, 20).await;
    assert!(answers.iter().all(|(s, _)| *s == 200));
    assert_eq!(standin.token_calls(), 1);

    redis.stop();
    // Requests keep succeeding: new grants and their refreshes, through both replicas.
    for i in 0..6 {
        let via = &replicas[i % 2];
        let rt = grant(via).await;
        let resp = http().get(via.refresh_url(&rt)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "refresh {i} during the outage");
    }
    // Normalised v2 refreshes too, each answered once and then replayed from the fallback cache.
    for via in &replicas {
        let rt = grant(via).await;
        let before = standin.token_calls();
        let first = v2_json_refresh(via, &rt, Some(SECRET)).await;
        let again = v2_json_refresh(via, &rt, Some(SECRET)).await;
        assert_eq!((first.0, again.0), (200, 200), "v2 refresh during the outage: {}", first.1);
        assert_eq!(again.1["access_token"], first.1["access_token"]);
        assert_eq!(standin.token_calls(), before + 1);
    }
    let fallbacks = metric(&replicas[0], "oauth_shim_state_fallback_total").await
        + metric(&replicas[1], "oauth_shim_state_fallback_total").await;
    assert!(fallbacks >= 10.0, "every refresh during the outage fell back: {fallbacks}");
    assert_eq!(metric(&replicas[0], "oauth_shim_state_redis_up").await, 0.0);
    let ready = http().get(replicas[0].admin_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "a Redis outage does not take replicas out of rotation");
    assert!(ready.text().await.unwrap().contains("degraded"));

    redis.restart().await;
    eventually("replicas reconnect on their own", async || replicas.iter().all(Harness::redis_up)).await;
    let ready = get_text(replicas[0].admin_url("/readyz")).await;
    assert!(!ready.contains("degraded"), "{ready}");
    let rt = grant(&replicas[1]).await;
    let before = standin.token_calls();
    let answers = burst(&replicas, &rt, 40).await;
    assert_eq!(standin.token_calls(), before + 1, "shared coalescing resumed");
    assert!(answers.iter().all(|(s, b)| *s == 200 && b["access_token"] == answers[0].1["access_token"]));
    assert_eq!(standin.revoked_grants(), 0);
    assert!(metric(&replicas[0], "oauth_shim_state_outages_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_never_holds_a_token_or_secret_in_the_clear() {
    const CLIENT_SECRET: &str = "canary-state-client-secret-31d9";
    let logs = captured_logs();
    let redis = RedisServer::start().await;
    // Everything sent to Redis, as Redis received it.
    let monitor = redis.client().get_async_monitor().await.unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let recorder = {
        let seen = seen.clone();
        tokio::spawn(async move {
            use futures_util::StreamExt;
            let mut stream = monitor.into_on_message::<String>();
            while let Some(line) = stream.next().await {
                seen.lock().unwrap().push_str(&line);
            }
        })
    };

    let standin = start_standin(StandinConfig {
        clients: vec![oauth_shim::devtools::standin::StandinClient {
            id: ID.into(),
            secret: CLIENT_SECRET.into(),
            allow_password_grant: true,
        }],
        rotate_refresh_tokens: true,
        token_delay: Duration::from_millis(100),
        ..StandinConfig::default()
    })
    .await;
    let extra = format!("{}\n", redis_state_toml(&redis));
    let mut config = shim_config(&standin, &extra);
    config.clients[0].secret = Some(oauth_shim::oauth::Secret::new(CLIENT_SECRET));
    let replica = Harness::with_config(standin.clone(), config).await;
    eventually("connected", async || replica.redis_up()).await;

    let mut canaries = vec![CLIENT_SECRET.to_owned(), STATE_KEY.to_owned()];
    let rt = grant(&replica).await;
    canaries.push(rt.clone());
    // Led, cached, and an error flight.
    let answers = burst(std::slice::from_ref(&replica), &rt, 5).await;
    for (_, body) in &answers {
        canaries.push(body["access_token"].as_str().unwrap().into());
        canaries.push(body["refresh_token"].as_str().unwrap().into());
    }
    let cached: Value = get_json(replica.refresh_url(&rt)).await;
    assert_eq!(cached["access_token"], answers[0].1["access_token"]);
    let dead = "canary-dead-refresh-token-77e0";
    canaries.push(dead.into());
    assert_eq!(http().get(replica.refresh_url(dead)).send().await.unwrap().status(), 400);
    // And normalised v2 refreshes (JSON, the secret inside): one answered, one refused.
    let v2_refresh = |rt: &str| {
        http()
            .post(replica.url("/oauth/v2/token"))
            .header("content-type", "application/json")
            .body(
                serde_json::json!({"client_id": ID, "client_secret": CLIENT_SECRET,
                    "grant_type": "refresh_token", "refresh_token": rt})
                .to_string(),
            )
            .send()
    };
    let v2_rt = answers[0].1["refresh_token"].as_str().unwrap().to_owned();
    let misses = replica.app.state().refresh.stats().misses;
    let v2: Value = v2_refresh(&v2_rt).await.unwrap().json().await.unwrap();
    canaries.push(v2["access_token"].as_str().unwrap().into());
    canaries.push(v2["refresh_token"].as_str().unwrap().into());
    let v2_dead = "canary-dead-v2-refresh-token-4b1a";
    canaries.push(v2_dead.into());
    assert_eq!(v2_refresh(v2_dead).await.unwrap().status(), 400);
    assert_eq!(
        replica.app.state().refresh.stats().misses,
        misses + 2,
        "both v2 refreshes called the upstream"
    );

    let dump = redis.dump_all().await;
    assert!(dump.len() >= 4, "the answers and the error markers are in Redis: {}", dump.len());
    tokio::time::sleep(Duration::from_millis(200)).await;
    recorder.abort();
    let monitored = seen.lock().unwrap().clone();
    assert!(monitored.contains("PUBLISH"), "the monitor saw the traffic");
    for canary in &canaries {
        for (key, value) in &dump {
            assert!(!String::from_utf8_lossy(key).contains(canary.as_str()), "key holds {canary}");
            assert!(!value.windows(canary.len()).any(|w| w == canary.as_bytes()), "value holds {canary}");
        }
        assert!(!monitored.contains(canary.as_str()), "a command sent {canary} to Redis");
        assert!(!logs.text().contains(canary.as_str()), "a log line holds {canary}");
    }
}

#[tokio::test]
async fn readyz_and_metrics_of_the_memory_backend_are_unchanged() {
    let h = Harness::default().await;
    assert_eq!(get_text(h.admin_url("/readyz")).await, "ready\n");
    let metrics = get_text(h.admin_url("/metrics")).await;
    assert!(!metrics.contains("oauth_shim_state_"), "{metrics}");
}

#[tokio::test]
async fn with_local_redis_down_at_start_serves_from_memory_and_says_degraded() {
    let mut redis = RedisServer::start().await;
    redis.stop();
    let standin = start_standin(standin_config()).await;
    let replica =
        start(&standin, &format!("{}{LOCAL}failover_wait = \"0s\"\n", redis_state_toml(&redis))).await;
    let rt = grant(&replica).await;
    let first: Value = get_json(replica.refresh_url(&rt)).await;
    let again: Value = get_json(replica.refresh_url(&rt)).await;
    assert_eq!(first["access_token"], again["access_token"], "the in-process cache answered");
    let ready = get_text(replica.admin_url("/readyz")).await;
    assert!(ready.contains("degraded"), "{ready}");
    assert!(metric(&replica, "oauth_shim_state_fallback_total").await >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_and_a_password_file() {
    // A private CA and a server certificate for `localhost` issued by it.
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server_cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let dir = temp_dir("rediss");
    let (ca_file, cert, key, password) =
        (dir.join("ca.crt"), dir.join("redis.crt"), dir.join("redis.key"), dir.join("password"));
    std::fs::write(&ca_file, ca.pem()).unwrap();
    std::fs::write(&cert, server_cert.pem()).unwrap();
    std::fs::write(&key, server_key.serialize_pem()).unwrap();
    std::fs::write(&password, "canary-redis-password-6e1f\n").unwrap();
    let path = |p: &std::path::Path| p.display().to_string();
    let redis = RedisServer::start_with(
        [
            "--port",
            "0",
            "--tls-port",
            "{port}",
            "--tls-cert-file",
            &path(&cert),
            "--tls-key-file",
            &path(&key),
            "--tls-ca-cert-file",
            &path(&cert),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            "canary-redis-password-6e1f",
        ]
        .into_iter()
        .map(String::from)
        .collect(),
    )
    .await;
    let standin = start_standin(standin_config()).await;
    let toml = format!(
        "[state]\nbackend = \"redis\"\nurl = \"rediss://localhost:{}\"\nca_file = \"{}\"\npassword_file = \"{}\"\nencryption_key_file = \"{}\"\ncommand_timeout = \"3s\"\n",
        redis.port,
        path(&ca_file),
        path(&password),
        state_key_file().display()
    );
    let replica = start(&standin, &toml).await;
    eventually("connected over TLS with the password", async || replica.redis_up()).await;
    let rt = grant(&replica).await;
    standin.clear_requests();
    let first: Value = get_json(replica.refresh_url(&rt)).await;
    let again: Value = get_json(replica.refresh_url(&rt)).await;
    assert_eq!(first["access_token"], again["access_token"]);
    assert_eq!(standin.token_calls(), 1);
    let stats = replica.app.state().refresh.stats();
    assert_eq!((stats.misses, stats.hits), (1, 1), "answered from Redis the second time");
    assert_eq!(metric(&replica, "oauth_shim_state_fallback_total").await, 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_local_and_no_failover_wait_slow_or_erroring_redis_falls_back_at_once() {
    let redis = RedisServer::start_with(vec!["--enable-debug-command".into(), "yes".into()]).await;
    let standin = start_standin(standin_config()).await;
    let replicas = on_redis(&standin, &redis, 1, &format!("{LOCAL}failover_wait = \"0s\"\n")).await;
    let replica = &replicas[0];

    // Slow: Redis stalls for 3 s; the refresh is answered through the in-process flight.
    let mut conn = redis.client().get_multiplexed_async_connection().await.unwrap();
    let stall = tokio::spawn(async move {
        let _: redis::RedisResult<()> = redis::cmd("DEBUG").arg("SLEEP").arg(3).query_async(&mut conn).await;
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rt = grant(replica).await;
    let resp = http().get(replica.refresh_url(&rt)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(metric(replica, "oauth_shim_state_fallback_total").await >= 1.0);
    assert!(!replica.redis_up(), "a command past command_timeout marks Redis down");
    stall.await.unwrap();
    eventually("back after the stall", async || replica.redis_up()).await;

    // Erroring: Redis refuses writes (out of memory); refreshes still succeed.
    let mut conn = redis.client().get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(1).query_async(&mut conn).await.unwrap();
    let before = metric(replica, "oauth_shim_state_fallback_total").await;
    let rt = grant(replica).await;
    let resp = http().get(replica.refresh_url(&rt)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(metric(replica, "oauth_shim_state_fallback_total").await > before);
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(0).query_async(&mut conn).await.unwrap();
}

/// Figures for BENCHMARKS.md ("Shared state on Redis"), not assertions:
/// `cargo test --release --test it measure_shared_state -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run by hand"]
async fn measure_shared_state() {
    const N: usize = 20_000;
    let redis = RedisServer::start().await;
    let standin =
        start_standin(StandinConfig { token_delay: Duration::from_millis(200), ..standin_config() }).await;
    let replicas = on_redis(&standin, &redis, 2, "").await;
    let mut conn = redis.client().get_multiplexed_async_connection().await.unwrap();
    async fn commands(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
        let info: String = redis::cmd("INFO").arg("stats").query_async(conn).await.unwrap();
        let n: u64 = info
            .lines()
            .find_map(|l| l.strip_prefix("total_commands_processed:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        n + 1 // this INFO itself
    }
    // Commands per scenario; the leader's SET, PUBLISH and lock release are one pipeline.
    let rt = grant(&replicas[0]).await;
    let c0 = commands(&mut conn).await;
    let _ = get_json(replicas[0].refresh_url(&rt)).await;
    let c1 = commands(&mut conn).await;
    let _ = get_json(replicas[1].refresh_url(&rt)).await;
    let c2 = commands(&mut conn).await;
    let rt = grant(&replicas[0]).await;
    let c3 = commands(&mut conn).await;
    let _ = burst(&replicas, &rt, 2).await;
    let c4 = commands(&mut conn).await;
    println!(
        "MEASURE redis commands: leader {} (round trips 2), cached {}, leader+waiter pair with a 200 ms upstream {}",
        c1 - c0 - 1,
        c2 - c1 - 1,
        c4 - c3 - 1
    );

    // Redis memory per cached entry: MEMORY USAGE of one, and used_memory over many.
    let keys: Vec<String> =
        redis::cmd("KEYS").arg("oauth-shim:refresh:*").query_async(&mut conn).await.unwrap();
    let usage: u64 = redis::cmd("MEMORY").arg("USAGE").arg(&keys[0]).query_async(&mut conn).await.unwrap();
    let value: Vec<u8> = redis::cmd("GET").arg(&keys[0]).query_async(&mut conn).await.unwrap();
    println!(
        "MEASURE redis MEMORY USAGE of one cached refresh: {usage} bytes (sealed value {} bytes, key {} bytes)",
        value.len(),
        keys[0].len()
    );

    // In-process memory per cached entry (the memory backend), from RSS over N entries of what
    // the token routes cache: the upstream's answer as it came, and the token parsed from it.
    #[derive(Clone)]
    struct Entry(std::sync::Arc<(bytes::Bytes, oauth_shim::oauth::V2Token)>);
    impl oauth_shim::refresh::Refreshed for Entry {
        fn lifetime(&self) -> Option<Duration> {
            self.0.1.lifetime()
        }
    }
    let body = br#"{"access_token":"eyJraWQiOiJiZW5jaCIsImFsZyI6IlJTMjU2In0.bench-access-token","token_type":"Bearer","refresh_token":"bench-refresh-token","expires_in":3600,"account_key":"3792314532151329654","account_type":"","email":"jk@example.com","firstName":"Jon","lastName":"Karmak","organizer_key":"1252383132521359990","version":"3"}"#;
    let cache: oauth_shim::refresh::RefreshCache<Entry, Fail> =
        oauth_shim::refresh::RefreshCache::new(Duration::from_secs(600), 1_000_000);
    let pid = std::process::id();
    let (before, _) = proc_memory_kib(pid);
    for i in 0..N {
        let bytes = bytes::Bytes::copy_from_slice(body);
        let token = Entry(std::sync::Arc::new((bytes, oauth_shim::oauth::V2Token::parse(body).unwrap())));
        cache
            .get_or_refresh(
                "bench-client",
                &format!("bench-refresh-token-{i:08}"),
                || async move { Ok(token) },
            )
            .await
            .unwrap();
    }
    assert_eq!(cache.entry_count().await, N as u64);
    let (after, _) = proc_memory_kib(pid);
    println!(
        "MEASURE memory backend: {} bytes per cached refresh (RSS over {N})",
        (after - before) * 1024 / N as u64
    );

    let used = |info: String| -> u64 {
        info.lines().find_map(|l| l.strip_prefix("used_memory:")).unwrap().trim().parse().unwrap()
    };
    let m0 = used(redis::cmd("INFO").arg("memory").query_async(&mut conn).await.unwrap());
    let keyset = oauth_shim::crypto::KeySet::parse(STATE_KEY).unwrap();
    let mut pipe = redis::pipe();
    for i in 0..N {
        let hash = keyset.hash("refresh", &[b"default", b"bench-client", format!("rt-{i:08}").as_bytes()]);
        let key =
            format!("oauth-shim:refresh:{}", hash.iter().map(|b| format!("{b:02x}")).collect::<String>());
        pipe.cmd("SET").arg(key).arg(&value).arg("PX").arg(600_000).ignore();
    }
    let _: () = pipe.query_async(&mut conn).await.unwrap();
    let m1 = used(redis::cmd("INFO").arg("memory").query_async(&mut conn).await.unwrap());
    println!(
        "MEASURE redis backend: {} bytes of Redis memory per cached refresh (used_memory over {N})",
        (m1 - m0) / N as u64
    );
}

/// A refresh failure for [`measure_shared_state`]'s cache (it never fails).
#[derive(Clone, Debug)]
struct Fail;

impl oauth_shim::refresh::RefreshFailure for Fail {
    fn evicts(&self) -> bool {
        false
    }

    fn internal() -> Self {
        Fail
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_another_key_set_neither_reads_nor_breaks_the_others() {
    let redis = RedisServer::start().await;
    let standin = start_standin(standin_config()).await;
    let replicas = on_redis(&standin, &redis, 1, "").await;
    let other_key = temp_dir("other-key").join("state.key");
    std::fs::write(&other_key, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n").unwrap();
    let toml = format!(
        "[state]\nbackend = \"redis\"\nurl = \"{}\"\nencryption_key_file = \"{}\"\n",
        redis.url(),
        other_key.display()
    );
    let stranger = start(&standin, &toml).await;
    eventually("connected", async || stranger.redis_up()).await;
    let rt = grant(&replicas[0]).await;
    standin.clear_requests();
    let first: Value = get_json(replicas[0].refresh_url(&rt)).await;
    assert!(first["access_token"].is_string());
    // Its keys differ, so it finds nothing of the others' and refreshes on its own.
    let resp = http().get(stranger.refresh_url(&rt)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(standin.token_calls(), 2);
    let _ = std::fs::remove_file(&other_key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_entries_follow_the_cache_ttl_and_count_down_across_replicas() {
    let redis = RedisServer::start().await;
    let standin = start_standin(standin_config()).await;
    let replicas = on_redis(&standin, &redis, 2, "[refresh_cache]\nttl = \"2500ms\"\n").await;
    let rt = grant(&replicas[0]).await;
    standin.clear_requests();
    let first: Value = get_json(replicas[0].refresh_url(&rt)).await;
    assert_eq!(first["expires_in"], "3600");
    let mut conn = redis.client().get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> =
        redis::cmd("KEYS").arg("oauth-shim:refresh:*").query_async(&mut conn).await.unwrap();
    assert_eq!(keys.len(), 1);
    let pttl: i64 = redis::cmd("PTTL").arg(&keys[0]).query_async(&mut conn).await.unwrap();
    assert!(pttl > 0 && pttl <= 2500, "stored for refresh_cache.ttl: {pttl} ms");

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let cached: Value = get_json(replicas[1].refresh_url(&rt)).await;
    assert_eq!(standin.token_calls(), 1, "the other replica answered from Redis");
    assert_eq!(cached["access_token"], first["access_token"]);
    let remaining: u64 = cached["expires_in"].as_str().unwrap().parse().unwrap();
    assert!(remaining < 3600, "the remaining lifetime, not the original: {remaining}");

    tokio::time::sleep(Duration::from_millis(1600)).await;
    let fresh: Value = get_json(replicas[1].refresh_url(&rt)).await;
    assert_eq!(standin.token_calls(), 2, "the entry expired after the ttl");
    assert_ne!(fresh["access_token"], first["access_token"]);
}

/// Providers through Redis: a refresh answered for the default provider on one replica is
/// served from Redis to that provider on another replica, never to another provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_keep_their_refreshes_apart_in_redis() {
    let redis = RedisServer::start().await;
    let standin = start_standin(standin_config()).await;
    let extra = format!(
        "[[providers]]\nname = \"b\"\nhosts = [\"b.example\"]\ntoken_url = \"{}\"\nauthorize_url = \"{}\"\napi_base = \"{}\"\n[[clients]]\nid = \"{ID}\"\nprovider = \"b\"\nsecret = \"{SECRET}\"\n",
        standin.token_url(),
        standin.authorize_url(),
        standin.api_base()
    );
    let replicas = on_redis(&standin, &redis, 2, &extra).await;
    let rt = grant(&replicas[0]).await;
    standin.clear_requests();

    let a: Value = get_json(replicas[0].refresh_url(&rt)).await;
    let a_again: Value = get_json(replicas[1].refresh_url(&rt)).await;
    assert_eq!(a_again["access_token"], a["access_token"], "A's answer, shared through Redis");
    assert_eq!(standin.token_calls(), 1);
    let b: Value = http()
        .get(replicas[1].refresh_url(&rt))
        .header("host", "b.example")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(standin.token_calls(), 2, "B's refresh went upstream, not to A's entry");
    assert_ne!(b["access_token"], a["access_token"]);
}

/// Seed 000's refresh (`POST /oauth/v2/token`, JSON with `client_id` and `client_secret`),
/// normalised by oauth-shim: concurrent identical calls over three replicas spend the rotating
/// refresh token once between them, and every caller gets the same v2 answer as it came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normalised_v2_refreshes_are_shared_by_replicas() {
    const N: usize = 60;
    let redis = RedisServer::start().await;
    let standin = start_standin(rotating(300)).await;
    let replicas = on_redis(&standin, &redis, 3, "").await;
    let rt = grant(&replicas[0]).await;
    standin.clear_requests();

    let call = serde_json::json!({"client_id": ID, "client_secret": SECRET,
        "grant_type": "refresh_token", "refresh_token": rt})
    .to_string();
    let client = http();
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let request = client
                .post(replicas[i % replicas.len()].url("/oauth/v2/token"))
                .header("content-type", "application/json")
                .body(call.clone());
            tokio::spawn(async move {
                let resp = request.send().await.unwrap();
                (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }

    assert_eq!(standin.token_calls(), 1, "{N} v2 refreshes over 3 replicas reached the upstream once");
    let first = &answers[0].1;
    assert_ne!(first["refresh_token"], rt.as_str(), "the upstream rotated the refresh token");
    assert_eq!(first["version"], "3", "the v2 answer: {first}");
    let without_lifetime = |body: &Value| {
        let mut body = body.as_object().unwrap().clone();
        body.remove("expires_in");
        body
    };
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        // The same v2 answer as it came (a replay counts its integer lifetime down).
        assert_eq!(without_lifetime(body), without_lifetime(first));
        assert!(body["expires_in"].as_u64().is_some_and(|s| s > 3500), "{body}");
    }
    assert_eq!(standin.revoked_grants(), 0);
    assert!(standin.is_access_token_valid(first["access_token"].as_str().unwrap()));
    let misses: u64 = replicas.iter().map(|r| r.app.state().refresh.stats().misses).sum();
    assert_eq!(misses, 1, "one replica called upstream; the others were served through Redis");

    // An error is the upstream's v2 error as it came, and never an answer for a later caller.
    let before = standin.token_calls();
    for via in &replicas[..2] {
        let (status, body) = v2_json_refresh(via, "no-such-refresh-token", Some(SECRET)).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    }
    assert_eq!(standin.token_calls(), before + 2);
    for r in &replicas {
        assert_eq!(metric(r, "oauth_shim_state_fallback_total").await, 0.0);
    }
}
