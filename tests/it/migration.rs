//! The migration record (docs/operating.md#where-the-record-lives): it survives restarts in its
//! file and in Redis, replicas on one Redis report the sum, day buckets roll over at midnight
//! UTC and retention drops old days, and a flood of random client ids leaves it bounded.

use oauth_shim::ops::migration::{Feature, Report, Verdict};

use crate::support::*;

/// The report as `h`'s admin listener gives it, with `query`.
async fn report(h: &Harness, query: &str) -> Report {
    http().get(h.admin_url(&format!("/migration{query}"))).send().await.unwrap().json().await.unwrap()
}

async fn report_at(admin: std::net::SocketAddr, query: &str) -> Report {
    http().get(format!("http://{admin}/migration{query}")).send().await.unwrap().json().await.unwrap()
}

fn row<'a>(r: &'a Report, id: &str) -> &'a oauth_shim::ops::migration::ClientReport {
    r.clients.iter().find(|c| c.id.as_deref() == Some(id)).unwrap_or_else(|| panic!("no row {id}: {r:?}"))
}

/// `n` legacy password grants (GET) of [`ID`] through `proxy`.
async fn legacy_calls(proxy: std::net::SocketAddr, n: usize) {
    for _ in 0..n {
        let url = format!(
            "http://{proxy}/oauth/access_token?grant_type=password&user_id=demo%40example.com&password=demo-password&client_id={ID}"
        );
        assert_eq!(http().get(url).send().await.unwrap().status(), 200);
    }
}

#[tokio::test]
async fn the_record_survives_a_restart_in_its_file() {
    let standin = start_standin(standin_config()).await;
    let record = temp_dir("record-restart");
    let path = temp_dir("record-restart-config").join("shim.toml");
    let extra =
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n";
    write_config(&path, &standin, "rewrite", extra);
    let dir = record.to_str().unwrap();
    let shim = ShimProcess::serve(&path, &[("OAUTH_SHIM_MIGRATION__DIR", dir)]).await;
    legacy_calls(shim.proxy, 3).await;
    assert_eq!(report_at(shim.admin, "").await.store, "embedded");
    assert!(shim.terminate_and_wait().await.success(), "SIGTERM drains and flushes");
    assert!(record.join("migration.redb").is_file());

    let shim = ShimProcess::serve(&path, &[("OAUTH_SHIM_MIGRATION__DIR", dir)]).await;
    legacy_calls(shim.proxy, 1).await;
    let r = report_at(shim.admin, "").await;
    let main = row(&r, ID);
    assert_eq!((main.calls.count, main.count(Feature::TokenGet), main.legacy_calls), (4, 4, 4), "{r:?}");
    assert_eq!(main.verdict, Verdict::Active);
    assert!(main.first_seen.is_some() && main.last_legacy_call.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_survives_a_restart_in_redis() {
    let redis = RedisServer::start().await;
    let standin = start_standin(standin_config()).await;
    let config = shim_config(&standin, &redis_state_toml_timing_out(&redis, "5s"));
    let first = replicas(&standin, &config, 1).await.remove(0);
    legacy_calls(first.proxy_addr(), 2).await;
    assert_eq!(report(&first, "").await.store, "redis");
    first.shim.shutdown();
    first.shim.wait().await;

    let second = replicas(&standin, &config, 1).await.remove(0);
    let r = report(&second, "").await;
    assert_eq!((row(&r, ID).calls.count, row(&r, ID).count(Feature::PasswordGrant)), (2, 2), "{r:?}");
    assert!(!r.partial);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_on_one_redis_each_report_the_sum() {
    let redis = RedisServer::start().await;
    let standin = start_standin(standin_config()).await;
    let extra =
        format!("{}[migration]\nflush_interval = \"100ms\"\n", redis_state_toml_timing_out(&redis, "5s"));
    let replicas = replicas(&standin, &shim_config(&standin, &extra), 3).await;
    for (i, r) in replicas.iter().enumerate() {
        legacy_calls(r.proxy_addr(), i + 1).await;
    }
    for r in &replicas {
        eventually("every replica's report to show the 6 calls of all three", async || {
            row(&report(r, "").await, ID).calls.count == 6
        })
        .await;
    }
    let r = report(&replicas[2], &format!("?client={ID}")).await;
    assert_eq!(r.clients.len(), 1);
    assert_eq!(r.clients[0].daily.last(), Some(&6), "today's legacy calls");
}

/// 2024-10-04T00:00:00Z, a day number times a day.
const DAY_20000: u64 = 20_000 * 86_400;

#[tokio::test]
async fn days_roll_over_at_midnight_utc_and_retention_drops_old_days() {
    let record = temp_dir("record-days");
    let extra = format!(
        "[migration]\ndir = {:?}\nretention = \"10days\"\nwindow = \"10days\"\nquiet_after = \"3days\"\n",
        record
    );
    let h = Harness::start(standin_config(), &extra).await;
    let m = &h.app.state().ops.migration;
    let config = h.app.snapshot().config.clone();
    m.pin_clock(Some(DAY_20000 - 10));
    legacy_calls(h.proxy_addr(), 1).await;
    m.pin_clock(Some(DAY_20000 + 10));
    legacy_calls(h.proxy_addr(), 2).await;
    assert!(m.flush(&config).await);
    let r = report(&h, "?since=3d").await;
    assert_eq!(r.since, "2024-10-02");
    assert_eq!(row(&r, ID).daily, [0, 1, 2], "the day before, then today");
    assert_eq!(row(&r, ID).verdict, Verdict::Active);

    // Five days on: quiet for 5 days, both days still in the record.
    m.pin_clock(Some(DAY_20000 + 5 * 86_400 + 10));
    let r = report(&h, "").await;
    assert_eq!((row(&r, ID).verdict_text(), row(&r, ID).legacy_calls), ("quiet for 5 days".into(), 3));
    assert_eq!((r.fleet.quiet, r.fleet.active), (1, 0));

    // On the tenth day the first day leaves the window and the retention; on the eleventh, both.
    m.pin_clock(Some(DAY_20000 + 9 * 86_400 + 10));
    assert!(m.flush(&config).await);
    assert_eq!(row(&report(&h, "").await, ID).legacy_calls, 2);
    m.pin_clock(Some(DAY_20000 + 10 * 86_400 + 10));
    assert!(m.flush(&config).await);
    let r = report(&h, "").await;
    assert_eq!((row(&r, ID).verdict, row(&r, ID).calls.count), (Verdict::NeverSeen, 0), "{r:?}");
    assert!(row(&r, ID).last_legacy_call.is_none());
}
