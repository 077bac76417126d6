//! The migration record (docs/operating.md#running-a-migration): it survives restarts in its
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
/// The resident set of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `n` legacy token calls through `proxy`, each naming `id(i)`, 32 at a time.
async fn flood(proxy: std::net::SocketAddr, range: std::ops::Range<usize>, id: fn(usize) -> String) {
    use futures_util::StreamExt;
    let client = http();
    futures_util::stream::iter(range)
        .for_each_concurrent(32, |i| {
            let url = format!(
                "http://{proxy}/oauth/access_token?grant_type=password&user_id=u&password=p&client_id={}",
                id(i)
            );
            let client = client.clone();
            async move {
                let status = client.get(url).send().await.unwrap().status();
                assert_eq!(status, 401);
            }
        })
        .await;
}

fn random_id(i: usize) -> String {
    format!("flood-{i}-{:016x}", rand::random::<u64>())
}

/// 100k random client ids: the record keeps the configured client, `max_unknown_ids` sampled
/// ids and one folded row; `/metrics` gains no series; the file and the resident set stay small.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_random_client_ids_leaves_the_record_and_metrics_bounded() {
    let standin = start_standin(standin_config()).await;
    let record = temp_dir("record-flood");
    let path = temp_dir("record-flood-config").join("shim.toml");
    let extra = "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\nlevel = \"info,oauth_shim::access=warn\"\n";
    write_config(&path, &standin, "rewrite", extra);
    let shim = ShimProcess::serve(&path, &[("OAUTH_SHIM_MIGRATION__DIR", record.to_str().unwrap())]).await;
    let metrics = async || get_text(format!("http://{}/metrics", shim.admin)).await;
    let file = record.join("migration.redb");

    // Warm up: every series a refused unknown id adds exists after the first ones.
    flood(shim.proxy, 0..1_000, random_id).await;
    let (series_before, rss_before) = (metrics().await.lines().count(), rss_kib(shim.pid()));
    flood(shim.proxy, 1_000..100_000, random_id).await;
    eventually("the flood to be flushed", async || std::fs::metadata(&file).is_ok_and(|m| m.len() > 0)).await;
    let r = report_at(shim.admin, "").await;
    let series_after = metrics().await.lines().count();
    let rss_after = rss_kib(shim.pid());
    let size = std::fs::metadata(&file).unwrap().len();
    eprintln!(
        "flood of 100000 random client ids: record file {size} bytes, {} rows; /metrics {series_before} -> {series_after} lines; RSS {rss_before} -> {rss_after} KiB",
        r.clients.len()
    );
    assert_eq!(r.clients.len(), 1 + 100 + 1, "the client, 100 sampled ids, the folded row");
    let folded = r.clients.last().unwrap();
    assert!(folded.id.is_none());
    assert_eq!(r.clients.iter().map(|c| c.calls.count).sum::<u64>(), 100_000);
    assert_eq!(series_after, series_before, "no series per client id");
    assert!(size < 4 << 20, "the record file stays small: {size} bytes");
    assert!(rss_after < rss_before + 64 * 1024, "RSS {rss_before} -> {rss_after} KiB");
}

/// What one client-day costs in each store: 2000 ids, each with one day of legacy calls
/// (calls, legacy calls, GET and password grant counted), in the file and in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_size_per_client_day_is_small_in_both_stores() {
    const IDS: usize = 2_000;
    let id = |i: usize| format!("integration-{i:05}");
    let extra = "[migration]\nmax_unknown_ids = 5000\n";
    let h = Harness::start(standin_config(), extra).await;
    let config = h.app.snapshot().config.clone();
    let file = config.migration.dir.join("migration.redb");
    let m = &h.app.state().ops.migration;
    assert!(m.flush(&config).await);
    let empty = std::fs::metadata(&file).unwrap().len();
    flood(h.proxy_addr(), 0..IDS, id).await;
    assert!(m.flush(&config).await);
    let file_bytes = std::fs::metadata(&file).unwrap().len() - empty;

    let redis = RedisServer::start().await;
    let standin = start_standin(standin_config()).await;
    let on_redis = shim_config(&standin, &format!("{}{extra}", redis_state_toml_timing_out(&redis, "5s")));
    let r = replicas(&standin, &on_redis, 1).await.remove(0);
    flood(r.proxy_addr(), 0..IDS, id).await;
    assert!(r.app.state().ops.migration.flush(&on_redis).await);
    let day = r.app.state().ops.migration.now() / 86_400;
    let usage = |key: String| {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &redis.port.to_string(), "MEMORY", "USAGE", &key, "SAMPLES", "0"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse::<u64>().unwrap_or(0)
    };
    let day_bytes = usage(format!("oauth-shim:mig:day:{day}"));
    let seen_bytes = usage("oauth-shim:mig:seen".into());
    eprintln!(
        "per client-day: file {} bytes ({file_bytes} for {IDS}); redis day hash {} bytes, seen hash {} bytes per client ({day_bytes}, {seen_bytes})",
        file_bytes / IDS as u64,
        day_bytes / IDS as u64,
        seen_bytes / IDS as u64
    );
    assert_eq!(report(&r, "").await.clients.len(), IDS + 1, "every id has its row");
    assert!(file_bytes / (IDS as u64) < 1_000, "{file_bytes}");
    assert!(day_bytes > 0 && day_bytes / (IDS as u64) < 1_000, "{day_bytes}");
}

/// `oauth-shim report --since --client` and `GET /migration` as text: the window, one client's
/// row, its verdict; a bad window is refused before any call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_narrows_to_a_window_and_a_client_in_json_and_text() {
    let h = Harness::start(standin_config(), "[[clients]]\nid = \"idle\"\nsecret = \"idle-secret\"\n").await;
    legacy_calls(h.proxy_addr(), 2).await;
    let admin = h.admin_url("");
    let run = |args: &[&str]| {
        let out = bin().arg("report").args(args).args(["--admin", &admin]).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, json, _) = run(&["--json", "--since", "7d", "--client", ID]);
    assert_eq!(code, Some(0));
    let r: Report = serde_json::from_str(&json).unwrap();
    assert_eq!((r.window_days, r.clients.len()), (7, 1));
    assert_eq!((r.clients[0].daily.len(), r.clients[0].legacy_calls), (7, 2));
    assert_eq!((r.fleet.active, r.fleet.never_seen), (1, 1), "the fleet, before the client filter");
    let (code, table, _) = run(&["--since", "14d"]);
    assert_eq!(code, Some(0));
    assert!(table.starts_with("14 days from "), "{table}");
    let idle = table.lines().find(|l| l.starts_with("idle ")).unwrap();
    assert!(idle.ends_with("never  never seen"), "{table}");
    assert!(table.lines().find(|l| l.starts_with(ID)).unwrap().ends_with(" active"), "{table}");
    let (code, _, err) = run(&["--since", "2w"]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("2w"), "{err}");

    let text =
        http().get(h.admin_url("/migration?since=3d")).header("accept", "text/plain").send().await.unwrap();
    assert!(text.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert!(text.text().await.unwrap().starts_with("3 days from "));
    let bad = http().get(h.admin_url("/migration?since=forever")).send().await.unwrap();
    assert_eq!(bad.status(), 400);
}

/// Redis down: the counts stay in the process (the flush says so), the report shows this
/// replica's counts marked partial, and the next flush once Redis is back writes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_wait_in_the_process_while_redis_is_down() {
    let mut redis = RedisServer::start().await;
    let standin = start_standin(standin_config()).await;
    let config = shim_config(&standin, &redis_state_toml(&redis));
    let h = replicas(&standin, &config, 1).await.remove(0);
    let m = &h.app.state().ops.migration;
    redis.stop();
    legacy_calls(h.proxy_addr(), 2).await;
    assert!(!m.flush(&config).await, "the store did not take them");
    let r = report(&h, "").await;
    assert!(r.partial, "{r:?}");
    assert_eq!(row(&r, ID).calls.count, 2, "this replica's counts, kept");
    redis.restart().await;
    h.wait_for_redis().await;
    assert!(m.flush(&config).await);
    let fresh = replicas(&standin, &config, 1).await.remove(0);
    let r = report(&fresh, "").await;
    assert!(!r.partial);
    assert_eq!(row(&r, ID).calls.count, 2, "written once Redis was back: {r:?}");
}
