//! Hostile input at the front door, in token and authorize parameters and in upstream token
//! answers, slow bodies, and HTTP/2 limits.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::passthrough::Echo;
use crate::support::*;

async fn harness(echo: &Echo, extra: &str) -> Harness {
    Harness::start(standin_config(), &format!("{}{extra}", echo.toml())).await
}

// ---- 1. The front door ----

#[tokio::test]
async fn content_length_with_transfer_encoding_gets_one_answer_then_close() {
    let echo = Echo::start().await;
    let h = harness(&echo, "").await;
    for framing in [
        "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 6\r\n",
    ] {
        let req = format!(
            "POST /api/clte HTTP/1.1\r\nHost: x\r\n{framing}\r\n0\r\n\r\nGET /api/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
        );
        let raw = raw_exchange(h.proxy_addr(), req.as_bytes()).await;
        assert_eq!(raw.matches("HTTP/1.1 ").count(), 1, "one answer: {raw}");
        assert!(raw.to_ascii_lowercase().contains("connection: close"), "announces the close: {raw}");
    }
    let seen = echo.seen();
    assert!(
        seen.iter().all(|s| s.path == "/api/clte" && !s.headers.contains_key("content-length")),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_malformed_chunked_body_is_400_not_502() {
    let echo = Echo::start().await;
    let h = harness(&echo, "").await;
    for path in ["/api/upload-chunks", "/oauth/access_token"] {
        for body in ["zz\r\nhello\r\n0\r\n\r\n", "5\r\nhelloXX0\r\n\r\n", "5;a\rb\r\nhello\r\n0\r\n\r\n"] {
            let req = format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                 Transfer-Encoding: chunked\r\n\r\n{body}"
            );
            let raw = raw_exchange(h.proxy_addr(), req.as_bytes()).await;
            assert_eq!(raw_status(&raw), 400, "{path} {body:?}: {raw}");
            assert!(raw.contains("\"error\":\"invalid_request\""), "{raw}");
        }
    }
    assert_eq!(h.standin.token_calls(), 0);
}

#[tokio::test]
async fn header_names_with_underscores_are_dropped_before_forwarding() {
    let echo = Echo::start().await;
    let h = harness(&echo, "").await;
    let raw = raw_exchange(
        h.proxy_addr(),
        b"GET /api/underscore HTTP/1.1\r\nHost: x\r\nX_Forwarded_For: 6.6.6.6\r\nTransfer_Encoding: chunked\r\n\
          X_Custom: 1\r\nX-Kept: 1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&raw), 200, "{raw}");
    let seen = echo.seen().pop().unwrap();
    let names: Vec<&str> = seen.headers.keys().map(|k| k.as_str()).collect();
    assert!(names.iter().all(|n| !n.contains('_')), "{names:?}");
    assert_eq!(seen.headers["x-kept"], "1");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
}

#[tokio::test]
async fn asterisk_form_is_for_options_and_authority_form_for_connect_only() {
    let echo = Echo::start().await;
    let h = harness(&echo, "").await;
    for (line, want) in [
        ("GET * HTTP/1.1", 400),
        ("POST * HTTP/1.1", 400),
        ("GET example.com:80 HTTP/1.1", 400),
        ("POST example.com:443 HTTP/1.1", 400),
        ("CONNECT example.com:443 HTTP/1.1", 405),
    ] {
        let raw = raw_exchange(
            h.proxy_addr(),
            format!("{line}\r\nHost: x\r\nContent-Length: 0\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(raw_status(&raw), want, "{line}: {raw}");
        assert!(raw.to_ascii_lowercase().contains("connection: close"), "{line}: {raw}");
    }
    assert!(echo.seen().is_empty(), "nothing refused reached the upstream");
    let raw =
        raw_exchange(h.proxy_addr(), b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(raw_status(&raw), 200, "{raw}");
    let seen = echo.seen().pop().unwrap();
    assert_eq!((seen.method, seen.path.as_str()), (http::Method::OPTIONS, "*"));
}

#[tokio::test]
async fn forwarded_headers_can_be_replaced_instead_of_trusted() {
    let echo = Echo::start().await;
    let h = harness(&echo, "[server]\nx_forwarded_for = \"replace\"\n").await;
    let raw = raw_exchange(
        h.proxy_addr(),
        b"GET /api/xff HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n\
          Connection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&raw), 200, "{raw}");
    let seen = echo.seen().pop().unwrap();
    assert_eq!(seen.headers.get_all("x-forwarded-for").iter().collect::<Vec<_>>(), ["127.0.0.1"]);
    assert_eq!(seen.headers.get_all("x-forwarded-proto").iter().collect::<Vec<_>>(), ["http"]);
    // Trusted (the default) but a list: one value is set, never a list appended to.
    let h = harness(&echo, "").await;
    let raw = raw_exchange(
        h.proxy_addr(),
        b"GET /api/xfp HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https, http\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&raw), 200, "{raw}");
    let seen = echo.seen().pop().unwrap();
    assert_eq!(seen.headers.get_all("x-forwarded-proto").iter().collect::<Vec<_>>(), ["http"]);
}

// ---- 2. Bad parameter bytes ----

#[tokio::test]
async fn bad_parameter_bytes_never_reach_the_upstream() {
    let h = Harness::default().await;
    let base = format!("grant_type=password&user_id=u&client_id={ID}&password=");
    let url = h.url("/oauth/access_token");
    for bad in ["%zz", "%", "a%0", "%ff%fe", "%c0%af", "a%00b", "a%0d%0ab", "a%7f"] {
        let resp = http().get(format!("{url}?{base}{bad}")).send().await.unwrap();
        assert_eq!(resp.status(), 400, "query {bad}");
        let resp = http()
            .post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("{base}{bad}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "form {bad}");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["error"], "invalid_request");
    }
    for bad in [r"a\u0000b", r"a\u001bb", r"\ud800"] {
        let body =
            format!(r#"{{"grant_type":"password","user_id":"u","client_id":"{ID}","password":"{bad}"}}"#);
        let resp =
            http().post(&url).header("content-type", "application/json").body(body).send().await.unwrap();
        assert_eq!(resp.status(), 400, "json {bad}");
    }
    let resp = http()
        .post(&url)
        .header("content-type", "application/json")
        .body(
            b"{\"grant_type\":\"password\",\"client_id\":\"legacy-client\",\"password\":\"\xc0\xaf\"}"
                .to_vec(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "json overlong UTF-8");
    assert_eq!(h.standin.token_calls(), 0, "nothing reached the upstream");
    // Authorize: the same rules, no redirect.
    for bad in ["%zz", "%00", "%ff"] {
        let resp =
            http().get(h.url(&format!("/oauth/authorize?client_id={ID}&state={bad}"))).send().await.unwrap();
        assert_eq!(resp.status(), 400, "authorize {bad}");
        assert!(resp.headers().get("location").is_none());
    }
}

// ---- 3. Absurd token answers ----

#[tokio::test]
async fn absurd_expires_in_is_a_502_and_never_saturated() {
    let up = RawUpstream::start(|path| {
        let v = match path.split_once("?x=").map(|(_, v)| v) {
            _ if path.ends_with("/neg") => "-1",
            _ if path.ends_with("/huge") => "1e30",
            _ if path.ends_with("/max") => "18446744073709551615",
            _ if path.ends_with("/decade") => "315360001",
            _ => "3.6e3",
        };
        json_answer(&format!(r#"{{"access_token":"at","refresh_token":"rt","expires_in":{v}}}"#))
    })
    .await;
    for (tail, want) in [("neg", 502), ("huge", 502), ("max", 502), ("decade", 502), ("fraction", 200)] {
        let toml = format!("[upstream]\ntoken_url = \"http://{}/oauth/v2/token/{tail}\"\n", up.addr);
        let h = Harness::start(standin_config(), &toml).await;
        let url =
            h.url(&format!("/oauth/access_token?grant_type=password&user_id=u&password=p&client_id={ID}"));
        let resp = http().get(url).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), want, "{tail}");
        let text = resp.text().await.unwrap();
        assert!(!text.contains("18446744073709551615"), "{text}");
        if want == 502 {
            assert!(text.contains("\"error\":\"server_error\""), "{text}");
        } else {
            assert!(text.contains(r#""expires_in":"3600""#), "{text}");
        }
    }
}

// ---- 4. Slow bodies ----

#[tokio::test]
async fn a_trickled_token_body_gets_408_and_the_connection_closes() {
    let echo = Echo::start().await;
    let h = harness(&echo, "[server]\nbody_read_timeout = \"500ms\"\n").await;
    let mut s = TcpStream::connect(h.proxy_addr()).await.unwrap();
    s.write_all(
        b"POST /oauth/access_token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
          Content-Length: 200\r\n\r\n",
    )
    .await
    .unwrap();
    // One byte every 100 ms would need 20 s for the whole body; the deadline cuts it off while
    // the client is still sending.
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    for _ in 0..100 {
        if s.write_all(b"a").await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if answer.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert_eq!(raw_status(&text.replace("http/1.1", "HTTP/1.1")), 408, "{text}");
    assert!(text.contains("connection: close"), "{text}");
    // Then the connection ends (whatever else of the answer is still to be read).
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection was closed");
    assert_eq!(h.standin.token_calls(), 0);
}

// ---- 5. HTTP/2 limits ----

/// The server's SETTINGS_MAX_CONCURRENT_STREAMS, read from its first SETTINGS frame.
async fn h2_max_concurrent_streams(h: &Harness) -> Option<u32> {
    let mut s = TcpStream::connect(h.proxy_addr()).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    // An empty SETTINGS frame of our own.
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let read = async {
        let mut head = [0u8; 9];
        s.read_exact(&mut head).await.ok()?;
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        assert_eq!(head[3], 4, "the server's first frame is SETTINGS");
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await.ok()?;
        payload
            .chunks(6)
            .find(|p| p.len() == 6 && u16::from_be_bytes([p[0], p[1]]) == 3)
            .map(|p| u32::from_be_bytes([p[2], p[3], p[4], p[5]]))
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.ok().flatten()
}

#[tokio::test]
async fn http2_max_concurrent_streams_defaults_to_100_and_is_configurable() {
    let echo = Echo::start().await;
    assert_eq!(h2_max_concurrent_streams(&harness(&echo, "").await).await, Some(100));
    let h = harness(&echo, "[server]\nhttp2_max_concurrent_streams = 7\n").await;
    assert_eq!(h2_max_concurrent_streams(&h).await, Some(7));
}
