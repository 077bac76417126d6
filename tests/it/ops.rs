//! Operating oauth-shim: hot reload (mode switch with requests in flight, invalid reload, file
//! watch), the migration report after a scripted mix of legacy calls, and `/metrics` as
//! Prometheus exposition text.

use std::path::PathBuf;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use oauth_shim::config::Config;
use oauth_shim::devtools::standin::{Fault, Standin};
use oauth_shim::ops::migration::{Feature, Report, table};
use serde_json::Value;

use crate::support::*;

/// A config file for `standin` with the default client in `mode`, plus `extra` TOML.
pub fn config_file(name: &str, standin: &Standin, mode: &str, extra: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("oauth-shim-ops-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("shim.toml");
    write_config(&path, standin, mode, extra);
    path
}

pub fn write_config(path: &std::path::Path, standin: &Standin, mode: &str, extra: &str) {
    let text = format!(
        r#"
[upstream]
token_url = "{token}"
authorize_url = "{authz}"
api_base = "{api}"
connect_timeout = "1s"
request_timeout = "5s"
{extra}
[[clients]]
id = "{ID}"
secret = "{SECRET}"
allow_password_grant = true
mode = "{mode}"
"#,
        token = standin.token_url(),
        authz = standin.authorize_url(),
        api = standin.api_base(),
    );
    // Write then rename, as config management tools do, so a reader never sees half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A harness whose shim runs on the config file at `path` (so reloads read it).
async fn from_file(standin: Standin, path: &std::path::Path) -> Harness {
    let config = Config::load(path).unwrap();
    let h = Harness::with_config(standin, config).await;
    h.app.state().ops.reload.set_source(path.to_path_buf());
    h
}

fn password_url(h: &Harness) -> String {
    h.url(&format!(
        "/oauth/access_token?grant_type=password&user_id=demo%40example.com&password=demo-password&client_id={ID}"
    ))
}

async fn admin_json(h: &Harness, method: reqwest::Method, path: &str) -> (u16, Value) {
    let resp = http().request(method, h.admin_url(path)).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// Wait (bounded) until `cond` holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn mode_switch_by_reload_with_requests_in_flight() {
    let standin = Standin::start(standin_config(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let path = config_file("inflight", &standin, "rewrite", "");
    let h = from_file(standin, &path).await;

    // One kept-alive HTTP/1.1 connection, used before and after the reload.
    let stream = tokio::net::TcpStream::connect(h.proxy_addr()).await.unwrap();
    let (mut conn, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(driver);
    let get = |uri: &str| {
        http::Request::get(uri)
            .header("host", "shim")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    let target = password_url(&h).trim_start_matches(&h.base).to_owned();
    let before = conn.send_request(get(&target)).await.unwrap();
    assert_eq!(before.status(), 200);
    before.into_body().collect().await.unwrap();

    // Requests in flight across the reload: the upstream holds each one.
    h.standin.set_fault(Some(Fault::Delay(Duration::from_millis(400))));
    let calls_before = h.standin.token_calls();
    const N: usize = 8;
    let url = password_url(&h);
    let client = http();
    let inflight: Vec<_> = (0..N).map(|_| tokio::spawn(client.get(&url).send())).collect();
    eventually("requests to reach the upstream", || h.standin.token_calls() >= calls_before + N).await;
    assert_eq!(h.app.state().ops.metrics.in_flight_now(), N as i64);

    write_config(&path, &h.standin, "deny", "");
    let (status, body) = admin_json(&h, reqwest::Method::POST, "/reload").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["generation"], 2);
    assert_eq!(body["last_attempt"]["mode_changes"][0], format!("{ID}: rewrite -> deny"));

    for task in inflight {
        let resp = task.await.unwrap().expect("no in-flight request fails");
        assert_eq!(resp.status(), 200, "in-flight requests finish on the old config");
        let v: Value = resp.json().await.unwrap();
        assert!(v["access_token"].is_string());
    }
    h.standin.set_fault(None);

    // New requests, on the same connection, see the new mode; nothing goes upstream.
    let calls = h.standin.token_calls();
    let after = conn.send_request(get(&target)).await.expect("the connection survived the reload");
    assert_eq!(after.status(), 400);
    let body = after.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"], "unauthorized_client");
    assert!(v["error_description"].as_str().unwrap().contains("migrate"));
    assert_eq!(h.standin.token_calls(), calls);
}

#[tokio::test]
async fn invalid_reload_keeps_the_old_config_serving_and_says_why() {
    let standin = Standin::start(standin_config(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let path = config_file("invalid", &standin, "rewrite", "");
    let h = from_file(standin, &path).await;
    let cache = &h.app.state().refresh as *const _;

    // A client without a secret: invalid.
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{good}\n[[clients]]\nid = \"no-secret\"\nmode = \"deny\"\n")).unwrap();
    let (status, body) = admin_json(&h, reqwest::Method::POST, "/reload").await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["generation"], 1);
    assert_eq!(body["last_attempt"]["ok"], false);
    assert!(body["last_attempt"]["error"].as_str().unwrap().contains("client \"no-secret\": no secret"));

    // The failure is visible afterwards too: GET /reload, /migration and /metrics.
    let (_, status) = admin_json(&h, reqwest::Method::GET, "/reload").await;
    assert_eq!(status["last_attempt"]["ok"], false);
    let (_, report) = admin_json(&h, reqwest::Method::GET, "/migration").await;
    assert_eq!(report["reload"]["last_attempt"]["ok"], false);
    let metrics = http().get(h.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("oauth_shim_config_reloads_total{result=\"failure\"} 1"), "{metrics}");
    assert!(metrics.contains("oauth_shim_config_last_reload_success 0"), "{metrics}");

    // The old config keeps serving.
    let resp = http().get(password_url(&h)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(std::ptr::eq(cache, &h.app.state().refresh));

    // Fixing the file and reloading again applies it.
    std::fs::write(&path, good.replace("mode = \"rewrite\"", "mode = \"passthrough\"")).unwrap();
    let (status, body) = admin_json(&h, reqwest::Method::POST, "/reload").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h.app.snapshot().config.clients[0].mode.as_str(), "passthrough");

    // A process without a config file has nothing to reload.
    let plain = Harness::default().await;
    let (status, _) = admin_json(&plain, reqwest::Method::POST, "/reload").await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn a_changed_file_is_picked_up_by_the_watcher() {
    let standin = Standin::start(standin_config(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let path = config_file("watch", &standin, "rewrite", "[reload]\nwatch_interval = \"50ms\"\n");
    let h = from_file(standin, &path).await;
    oauth_shim::admin::reload::spawn_watcher(h.app.clone());
    assert_eq!(http().get(password_url(&h)).send().await.unwrap().status(), 200);

    write_config(&path, &h.standin, "deny", "[reload]\nwatch_interval = \"50ms\"\n");
    let app = h.app.clone();
    eventually("the watcher to reload", move || app.state().ops.reload.status().generation == 2).await;
    assert_eq!(h.app.state().ops.reload.status().last_attempt.unwrap().trigger, "file");
    assert_eq!(http().get(password_url(&h)).send().await.unwrap().status(), 400);

    // An invalid edit is refused once, and not retried until the file changes again.
    std::fs::write(&path, "[server]\nlisten_typo = 1\n").unwrap();
    let app = h.app.clone();
    eventually("the watcher to try", move || {
        app.state().ops.reload.status().last_attempt.is_some_and(|a| !a.ok)
    })
    .await;
    assert_eq!(http().get(password_url(&h)).send().await.unwrap().status(), 400, "old config serves");
}

const GHOST: &str = "ghost-client";

#[tokio::test]
async fn migration_report_counts_a_scripted_mix_of_legacy_calls() {
    let h = Harness::start(
        standin_config(),
        r#"
        [[clients]]
        id = "retired"
        secret = "retired-secret"
        mode = "deny"
        [[clients]]
        id = "quiet"
        secret = "quiet-secret"
        "#,
    )
    .await;
    let token = h.url("/oauth/access_token");
    let c = http();
    // 2 x GET password grant.
    let mut refresh = String::new();
    for _ in 0..2 {
        let v: Value = c.get(password_url(&h)).send().await.unwrap().json().await.unwrap();
        refresh = v["refresh_token"].as_str().unwrap().to_owned();
    }
    // 1 x form refresh with a caller-sent client_secret.
    let r = c
        .post(&token)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=refresh_token&refresh_token={refresh}&client_id={ID}&client_secret={SECRET}"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // 1 x JSON code exchange.
    let code = h.standin.issue_code(ID, None);
    let r = c
        .post(&token)
        .header("content-type", "application/json")
        .body(format!(r#"{{"grant_type":"authorization_code","code":"{code}","client_id":"{ID}"}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // 1 x legacy authorize (no response_type, no redirect_uri), 1 x v2 authorize (v2-native).
    assert_eq!(
        c.get(h.url(&format!("/oauth/authorize?client_id={ID}&state=s"))).send().await.unwrap().status(),
        302
    );
    let v2_authz =
        format!("/oauth/authorize?client_id={ID}&response_type=code&redirect_uri=https%3A%2F%2Fapp%2Fcb");
    assert_eq!(c.get(h.url(&v2_authz)).send().await.unwrap().status(), 302);
    // A client in deny mode, and an unknown client (nothing goes upstream for either).
    let calls = h.standin.token_calls();
    let r = c
        .get(format!("{token}?grant_type=refresh_token&refresh_token=x&client_id=retired"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    for _ in 0..3 {
        let r = c
            .get(format!("{token}?grant_type=password&user_id=u&password=p&client_id={GHOST}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    assert_eq!(h.standin.token_calls(), calls);
    // v2-native calls on pass-through: one with a Basic header naming the client, one without.
    let r = c
        .post(h.url("/oauth/v2/token"))
        .basic_auth(ID, Some(SECRET))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=refresh_token&refresh_token=nope")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
    c.get(h.url("/oauth/v2/whatever")).send().await.unwrap();

    let (status, body) = admin_json(&h, reqwest::Method::GET, "/migration").await;
    assert_eq!(status, 200);
    let report: Report = serde_json::from_value(body.clone()).unwrap();
    let row = |id: &str| report.clients.iter().find(|c| c.id.as_deref() == Some(id)).unwrap().clone();

    let main = row(ID);
    assert!(main.configured);
    assert_eq!(main.mode, "rewrite");
    let expect = [
        (Feature::TokenGet, 2),
        (Feature::TokenForm, 1),
        (Feature::TokenJson, 1),
        (Feature::PasswordGrant, 2),
        (Feature::ClientSecretSent, 1),
        (Feature::AuthorizeWithoutResponseType, 1),
        (Feature::MissingRedirectUri, 1),
        (Feature::V2Native, 2),
    ];
    for (f, n) in expect {
        assert_eq!(main.count(f), n, "{} for {ID}: {body}", f.as_str());
    }
    assert_eq!(main.calls.count, 7);
    assert!(main.features["token_get"]["last_seen"].as_str().unwrap().ends_with('Z'));
    assert!(main.features["token_json_body"]["last_seen"].is_string());

    let retired = row("retired");
    assert_eq!((retired.mode.as_str(), retired.count(Feature::TokenGet)), ("deny", 1));
    let quiet = row("quiet");
    assert_eq!((quiet.configured, quiet.calls.count), (true, 0));
    assert!(quiet.calls.last_seen.is_none());
    let ghost = row(GHOST);
    assert_eq!((ghost.configured, ghost.mode.as_str()), (false, "unknown"));
    assert_eq!((ghost.count(Feature::TokenGet), ghost.count(Feature::PasswordGrant)), (3, 3));
    assert_eq!(report.unattributed_v2_native.count, 1);
    // Configured clients first, in config order.
    let ids: Vec<_> = report.clients.iter().map(|c| c.id.clone().unwrap()).collect();
    assert_eq!(ids, [ID, "retired", "quiet", GHOST]);

    // The terminal table shows the same numbers.
    let t = table(&report);
    let line = t.lines().find(|l| l.starts_with(GHOST)).unwrap();
    assert!(line.split_whitespace().take(5).eq([GHOST, "unknown", "3", "3", "0"]), "{t}");
    assert!(t.contains("v2-native calls naming no client: 1"), "{t}");
}

/// Check the exposition text line by line against the grammar of its format (OpenMetrics, or
/// the classic 0.0.4 text format), and return it parsed by `prometheus-parse` with the declared
/// families and their types.
fn parse_exposition(text: &str, openmetrics: bool) -> (prometheus_parse::Scrape, Vec<(String, String)>) {
    let name_ok = |n: &str| {
        let mut chars = n.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut families: Vec<(String, String)> = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    if openmetrics {
        assert_eq!(lines.last(), Some(&"# EOF"), "ends with # EOF");
    } else {
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "0.0.4 text has neither");
    }
    for line in &lines {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, _) = rest.split_once(' ').expect("HELP name text");
            assert!(name_ok(name), "{line}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').expect("TYPE name type");
            assert!(name_ok(name), "{line}");
            assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty), "{line}");
            if ty == "counter" {
                // OpenMetrics names the family without `_total`, the 0.0.4 format with it.
                assert_eq!(name.ends_with("_total"), !openmetrics, "{line}");
            }
            families.push((name.to_owned(), ty.to_owned()));
        } else if line.starts_with("# UNIT ") || *line == "# EOF" {
        } else {
            assert!(!line.starts_with('#'), "unexpected comment {line}");
            let (name, rest) = match line.find(['{', ' ']) {
                Some(i) => line.split_at(i),
                None => panic!("sample without value: {line}"),
            };
            assert!(name_ok(name), "{line}");
            let (family, ty) = families.last().expect("a sample follows its TYPE");
            let suffixes: &[&str] = match (ty.as_str(), openmetrics) {
                ("counter", true) => &["_total", "_created"],
                ("histogram", _) => &["_bucket", "_sum", "_count", "_created"],
                _ => &[""],
            };
            assert!(suffixes.iter().any(|s| name == format!("{family}{s}")), "{name} not in family {family}");
            let value = if let Some(labels) = rest.strip_prefix('{') {
                let (labels, value) = labels.rsplit_once("} ").expect("labels then value");
                for pair in split_labels(labels) {
                    let (k, v) = pair.split_once('=').expect("label k=v");
                    assert!(name_ok(k) && !k.contains(':'), "{line}");
                    assert!(v.len() >= 2 && v.starts_with('"') && v.ends_with('"'), "{line}");
                }
                value
            } else {
                rest.trim_start()
            };
            let value = value.split(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value), "{line}");
        }
    }
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses");
    (scrape, families)
}

/// Split `a="x",b="y"` on the commas between pairs (not inside quoted values).
fn split_labels(s: &str) -> Vec<&str> {
    let (mut out, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_bounded_client_labels() {
    let h = Harness::default().await;
    let c = http();
    let v: Value = c.get(password_url(&h)).send().await.unwrap().json().await.unwrap();
    let refresh = v["refresh_token"].as_str().unwrap();
    for _ in 0..2 {
        let url = h.url(&format!(
            "/oauth/access_token?grant_type=refresh_token&refresh_token={refresh}&client_id={ID}"
        ));
        assert_eq!(c.get(url).send().await.unwrap().status(), 200);
    }
    for i in 0..5 {
        let url = h.url(&format!("/oauth/access_token?grant_type=password&client_id=stranger-{i}"));
        assert_eq!(c.get(url).send().await.unwrap().status(), 401);
    }
    c.get(h.url("/G2W/rest/v2/organizers/1/webinars")).send().await.unwrap();

    let resp = c.get(h.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = resp.text().await.unwrap();
    let (scrape, families) = parse_exposition(&text, false);
    // A classic parser reads every family with its declared type.
    for (family, ty) in &families {
        let samples: Vec<_> = scrape
            .samples
            .iter()
            .filter(|s| {
                &s.metric == family
                    || (ty == "histogram" && s.metric.strip_prefix(family.as_str()) == Some(""))
            })
            .collect();
        assert!(!samples.is_empty(), "{family} ({ty}) has samples: {text}");
        for s in samples {
            let kind = match s.value {
                prometheus_parse::Value::Counter(_) => "counter",
                prometheus_parse::Value::Gauge(_) => "gauge",
                prometheus_parse::Value::Histogram(_) => "histogram",
                prometheus_parse::Value::Summary(_) => "summary",
                prometheus_parse::Value::Untyped(_) => "untyped",
            };
            assert_eq!(kind, ty, "{family}");
        }
    }
    let declared = |name: &str| families.iter().find(|(f, _)| f == name).map(|(_, t)| t.as_str());
    for (name, ty) in [
        ("oauth_shim_requests_total", "counter"),
        ("oauth_shim_request_duration_seconds", "histogram"),
        ("oauth_shim_upstream_duration_seconds", "histogram"),
        ("oauth_shim_build_info", "gauge"),
        ("oauth_shim_config_last_reload_success_timestamp_seconds", "gauge"),
        ("oauth_shim_refresh_cache_hits_total", "counter"),
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ] {
        assert_eq!(declared(name), Some(ty), "{name}: {text}");
    }
    assert!(!text.contains("stranger"), "unknown ids fold into one label: {text}");

    let value = |metric: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    let ok = [("route", "token"), ("client", ID), ("status_class", "2xx")];
    assert_eq!(value("oauth_shim_requests_total", &ok), 3.0, "{text}");
    assert_eq!(
        value("oauth_shim_requests_total", &[("client", "unknown"), ("outcome", "invalid_client")]),
        5.0
    );
    assert_eq!(value("oauth_shim_requests_total", &[("route", "pass")]), 1.0);
    assert_eq!(value("oauth_shim_refresh_cache_misses_total", &[]), 1.0);
    assert_eq!(value("oauth_shim_refresh_cache_hits_total", &[]), 1.0);
    assert_eq!(value("oauth_shim_refresh_cache_coalesced_total", &[]), 0.0);
    assert_eq!(value("oauth_shim_in_flight_requests", &[]), 0.0);
    assert!(value("oauth_shim_open_connections", &[]) >= 1.0, "reqwest keeps its connection open");
    assert_eq!(value("oauth_shim_config_generation", &[]), 1.0);
    let token_hist = scrape
        .samples
        .iter()
        .find(|s| s.metric == "oauth_shim_upstream_duration_seconds" && s.labels.get("call") == Some("token"))
        .expect("token latency histogram");
    match &token_hist.value {
        prometheus_parse::Value::Histogram(buckets) => {
            // Two upstream token calls: the password grant and the one refresh miss.
            assert_eq!(buckets.last().unwrap().count, 2.0);
        }
        other => panic!("not a histogram: {other:?}"),
    }
    assert!(text.contains("oauth_shim_upstream_duration_seconds_count{call=\"pass\"} 1"), "{text}");
    // Request durations by route and status class: three token answers (2xx), five refusals
    // (4xx), one pass-through (the stand-in's 401).
    let count = |route: &str, class: &str| {
        let needle = format!(
            "oauth_shim_request_duration_seconds_count{{route=\"{route}\",status_class=\"{class}\"}} "
        );
        text.lines().find_map(|l| l.strip_prefix(needle.as_str())).map(|v| v.parse::<f64>().unwrap())
    };
    assert_eq!(count("token", "2xx"), Some(3.0), "{text}");
    assert_eq!(count("token", "4xx"), Some(5.0), "{text}");
    assert_eq!(count("pass", "4xx"), Some(1.0), "{text}");
    assert!(
        text.contains(&format!("oauth_shim_build_info{{version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(value("process_resident_memory_bytes", &[]) > 0.0);
    assert!(value("process_open_fds", &[]) > 0.0);
    assert!(value("oauth_shim_config_last_reload_success_timestamp_seconds", &[]) > 1.7e9);

    // OpenMetrics when asked for it: the same families, in its own grammar.
    let resp =
        c.get(h.admin_url("/metrics")).header("accept", "application/openmetrics-text").send().await.unwrap();
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let om = resp.text().await.unwrap();
    let (_, om_families) = parse_exposition(&om, true);
    assert_eq!(om_families.len(), families.len());
    assert_eq!(c.post(h.admin_url("/metrics")).send().await.unwrap().status(), 405);
    assert_eq!(c.get(h.admin_url("/healthz")).send().await.unwrap().status(), 200);
}
