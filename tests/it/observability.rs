//! What an operator follows a request by: request ids (kept or generated, passed upstream on
//! token and pass-through calls, returned), W3C trace context passed through, the access line's
//! fields and JSON types, upstream failures logged once, at warn, naming host and cause, and
//! `/metrics` as Prometheus exposition text.

use std::sync::{Arc, Mutex};

use oauth_shim::config::{LogConfig, LogFormat};
use serde_json::Value;

use crate::support::*;

/// Run `f` with a JSON subscriber at `level` scoped to this (current-thread) test, and return
/// the lines logged, parsed.
async fn json_logs<F: std::future::Future<Output = ()>>(level: &str, f: F) -> Vec<Value> {
    // A global subscriber first keeps every callsite's interest open (see canary.rs).
    let _ = captured_logs();
    let capture = LogCapture::default();
    let writer = capture.clone();
    let cfg = LogConfig { level: level.into(), format: LogFormat::Json };
    let guard = tracing::subscriber::set_default(oauth_shim::ops::telemetry::subscriber(
        &cfg,
        move || writer.clone(),
        false,
    ));
    f.await;
    drop(guard);
    capture
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACESTATE: &str = "vendor=opaque,other=1";

#[tokio::test]
async fn request_ids_and_trace_context_reach_the_upstream_and_come_back() {
    let h = Harness::default().await;
    let c = http();
    let password = h.password_url();
    let send = |url: String, id: Option<&str>| {
        let mut req = c.get(url).header("traceparent", TRACEPARENT).header("tracestate", TRACESTATE);
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        req.send()
    };
    let last = |path: &str| h.standin.requests().into_iter().rev().find(|r| r.path == path).unwrap();

    // A caller's usable id is kept, on the token call and in the answer.
    let resp = send(password.clone(), Some("caller-id-1")).await.unwrap();
    assert_eq!(resp.headers()["x-request-id"], "caller-id-1");
    let v: Value = resp.json().await.unwrap();
    let token = last("/oauth/v2/token");
    assert_eq!(token.headers["x-request-id"], "caller-id-1");
    assert_eq!(token.headers["traceparent"], TRACEPARENT);
    assert_eq!(token.headers["tracestate"], TRACESTATE);

    // A refresh (through the coalescing cache) carries them too.
    let refresh = h.url(&format!(
        "/oauth/access_token?grant_type=refresh_token&refresh_token={}&client_id={ID}",
        v["refresh_token"].as_str().unwrap()
    ));
    let resp = send(refresh, Some("caller-id-2")).await.unwrap();
    assert_eq!(resp.headers()["x-request-id"], "caller-id-2");
    assert_eq!(last("/oauth/v2/token").headers["x-request-id"], "caller-id-2");

    // No id, or an unusable one: a new one, the same upstream and in the answer.
    for sent in [None, Some("has spaces and \"quotes\"")] {
        let resp = send(password.clone(), sent).await.unwrap();
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        assert_eq!(last("/oauth/v2/token").headers["x-request-id"], id.as_str());
    }

    // Pass-through: kept or generated likewise; trace context untouched.
    let api = h.url("/G2W/rest/v2/organizers/1/webinars");
    let resp = send(api.clone(), Some("caller-id-3")).await.unwrap();
    assert_eq!(resp.headers()["x-request-id"], "caller-id-3");
    let seen = last("/G2W/rest/v2/organizers/1/webinars");
    assert_eq!(seen.headers["x-request-id"], "caller-id-3");
    assert_eq!(seen.headers["traceparent"], TRACEPARENT);
    assert_eq!(seen.headers["tracestate"], TRACESTATE);
    let resp = send(api, None).await.unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(last("/G2W/rest/v2/organizers/1/webinars").headers["x-request-id"], id.as_str());

    // Refusals at the front door get one too.
    let resp = c.request(reqwest::Method::CONNECT, h.url("/x")).send().await.unwrap();
    assert_eq!(resp.headers()["x-request-id"].len(), 32);
}

#[tokio::test(flavor = "current_thread")]
async fn access_lines_carry_typed_fields_and_no_query() {
    let mut ids = Vec::new();
    let lines = json_logs("info", async {
        let h = Harness::default().await;
        let resp = http()
            .get(h.url("/G2W/rest/v2/organizers/1/webinars?secret-query=canary-q"))
            .header("user-agent", "legacy-app/1.2")
            .header("x-request-id", "follow-me-1")
            .send()
            .await
            .unwrap();
        ids.push(resp.headers()["x-request-id"].to_str().unwrap().to_owned());
        resp.bytes().await.unwrap();
        let resp = http()
            .post(h.url("/oauth/access_token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("grant_type=password&user_id=demo%40example.com&password=nope&client_id={ID}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        ids.push(resp.headers()["x-request-id"].to_str().unwrap().to_owned());
    })
    .await;
    let access: Vec<&Value> = lines.iter().filter(|l| l["message"] == "request").collect();
    assert_eq!(access.len(), 2, "{lines:?}");
    let pass = access.iter().find(|l| l["route"] == "pass").unwrap();
    assert_eq!(pass["request_id"], "follow-me-1");
    assert_eq!(pass["method"], "GET");
    assert_eq!(pass["path"], "/G2W/rest/v2/organizers/1/webinars");
    assert_eq!(pass["client"], "-");
    // The stand-in's API wants a bearer token: its 401 is passed through.
    assert_eq!(pass["status"], 401);
    assert_eq!(pass["upstream_status"], 401);
    assert!(pass["latency_ms"].is_f64(), "{pass}");
    assert!(pass["bytes_out"].as_u64().is_some_and(|n| n > 0), "{pass}");
    assert!(pass["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{pass}");
    assert_eq!(pass["user_agent"], "legacy-app/1.2");
    let token = access.iter().find(|l| l["route"] == "token").unwrap();
    assert_eq!(token["request_id"], ids[1].as_str());
    assert_eq!(token["path"], "/oauth/access_token");
    assert_eq!(token["client"], ID);
    assert_eq!(token["status"], 400);
    assert_eq!(token["detail"], "invalid_grant");
    assert!(token["bytes_in"].as_u64().is_some_and(|n| n > 0), "{token}");
    let text = serde_json::to_string(&lines).unwrap();
    assert!(!text.contains("canary-q") && !text.contains("secret-query"), "no query in logs");
    assert!(!text.contains("Some("), "{text}");
    // A user's wrong password is the user's business: nothing above info.
    let loud: Vec<_> = lines.iter().filter(|l| l["level"] == "WARN" || l["level"] == "ERROR").collect();
    assert!(loud.is_empty(), "{loud:?}");
}

/// A loopback listener that accepts and never answers; its address.
async fn silent_upstream() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            held.lock().unwrap().push(s);
        }
    });
    addr
}

#[tokio::test(flavor = "current_thread")]
async fn upstream_failures_are_logged_once_with_host_and_cause() {
    let standin = start_standin(standin_config()).await;
    let refused = free_port();
    let silent = silent_upstream().await;
    let tls = standin.addr(); // plain HTTP spoken to by TLS: the handshake fails
    let cases = [
        (format!("http://127.0.0.1:{refused}"), "connection refused", 502),
        (format!("http://{silent}"), "timeout", 504),
        (format!("https://{tls}"), "tls", 502),
        // RFC 6761: `.invalid` never resolves.
        ("https://oauth-shim-test.invalid".to_owned(), "dns", 502),
    ];
    for (base, class, status) in cases {
        let timeout = if class == "timeout" { "300ms" } else { "5s" };
        let host = base.split("://").nth(1).unwrap().to_owned();
        let lines = json_logs("info", async {
            let mut config = shim_config(&standin, &format!("[upstream]\nrequest_timeout = \"{timeout}\"\n"));
            config.upstream.api_base = base.clone();
            config.upstream.token_url = format!("{base}/oauth/v2/token");
            let h = Harness::with_config(standin.clone(), config).await;
            let resp = http().get(h.url("/G2W/rest/v2/x")).send().await.unwrap();
            assert_eq!(resp.status(), status, "{base}");
            let resp = http()
                .get(h.url(&format!(
                    "/oauth/access_token?grant_type=refresh_token&refresh_token=rt-canary&client_id={ID}"
                )))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), status, "{base}");
        })
        .await;
        let failures: Vec<&Value> = lines.iter().filter(|l| l["message"] == "upstream call failed").collect();
        assert_eq!(failures.len(), 2, "one per failed call: {failures:?}");
        for (f, call) in failures.iter().zip(["pass", "token"]) {
            assert_eq!(f["level"], "WARN", "{f}");
            assert_eq!(f["upstream"], host.as_str(), "{f}");
            assert_eq!(f["call"], call, "{f}");
            assert_eq!(f["cause"], class, "{f}");
            assert!(f["error"].as_str().is_some_and(|e| !e.is_empty()), "{f}");
        }
        let text = serde_json::to_string(&lines).unwrap();
        assert!(!text.contains("rt-canary") && !text.contains(SECRET), "{text}");
    }
}

/// Logged values are caller input: C1 controls (U+009B is a one-byte CSI) and bidirectional
/// overrides (U+202E) in a request path are escaped in the JSON line, never written raw for a
/// terminal or log viewer to act on, and a JSON reader still gets the path back as sent.
#[tokio::test]
async fn json_log_lines_escape_c1_controls_and_bidi_overrides() {
    let _ = captured_logs();
    let capture = LogCapture::default();
    let writer = capture.clone();
    let cfg = LogConfig { level: "info".into(), format: LogFormat::Json };
    let guard = tracing::subscriber::set_default(oauth_shim::ops::telemetry::subscriber(
        &cfg,
        move || writer.clone(),
        false,
    ));
    let echo = crate::passthrough::Echo::start().await;
    let h = Harness::start(standin_config(), &echo.toml()).await;
    let raw = raw_exchange(
        h.proxy_addr(),
        b"GET /G2W/\xc2\x9b31mred\xe2\x80\xaetxt.exe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&raw), 200, "{raw}");
    drop(guard);
    let text = capture.text();
    assert!(!text.contains('\u{9b}') && !text.contains('\u{202e}'), "{text}");
    let line = text.lines().find(|l| l.contains("\"message\":\"request\"") && l.contains("/G2W/")).unwrap();
    assert!(line.contains(r#""path":"/G2W/\u009b31mred\u202etxt.exe""#), "{line}");
    let v: Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["path"], "/G2W/\u{9b}31mred\u{202e}txt.exe");
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
    let v: Value = c.get(h.password_url()).send().await.unwrap().json().await.unwrap();
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
