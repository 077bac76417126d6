//! What an operator follows a request by: request ids (kept or generated, passed upstream on
//! token and pass-through calls, returned), W3C trace context passed through, the access line's
//! fields and JSON types, and upstream failures logged once, at warn, naming host and cause.

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
    let password = h.url(&format!(
        "/oauth/access_token?grant_type=password&user_id=demo%40example.com&password=demo-password&client_id={ID}"
    ));
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

/// A free loopback port nothing listens on.
async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
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
    let standin =
        oauth_shim::devtools::standin::Standin::start(standin_config(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
    let refused = closed_port().await;
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
            config.provider.api_base = Some(base.clone());
            config.provider.token_url = Some(format!("{base}/oauth/v2/token"));
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
