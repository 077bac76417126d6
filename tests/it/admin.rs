//! The admin listener against a browser on the same machine, over real sockets with the exact
//! bytes a browser sends: cross-site state changes, DNS-rebinding reads (a foreign `Host`), and
//! the admin token, required once the listener is bound beyond loopback.

use std::net::SocketAddr;

use oauth_shim::app::App;
use oauth_shim::config::Config;
use oauth_shim::server;
use oauth_shim::snapshot::Snapshot;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::support::*;

/// A shim whose admin listener is bound to `bind`, on a config file (so `POST /reload`
/// reloads); the address to connect to, on loopback.
async fn shim(name: &str, bind: &str, extra: &str) -> (Harness, SocketAddr) {
    let standin = start_standin(standin_config()).await;
    let path = config_file(&format!("admin-{name}"), &standin, "rewrite", extra);
    let app = App::new(Snapshot::new(Config::load(&path).unwrap()).unwrap());
    app.state().ops.reload.set_source(path);
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind(bind).await.unwrap();
    let port = admin.local_addr().unwrap().port();
    let shim = server::start_on(app.clone(), proxy, Some(admin)).unwrap();
    let base = format!("http://{}", shim.proxy_addr);
    (Harness { standin, shim, app, base }, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// One raw request to the admin listener: its status and its body.
async fn send(addr: SocketAddr, request: &str) -> (u16, String) {
    let raw = raw_exchange(addr, request.as_bytes()).await;
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (raw_status(&raw), body)
}

/// The config generation in force, by a plain `GET /reload` from loopback.
async fn generation(addr: SocketAddr) -> u64 {
    let (status, body) =
        send(addr, &format!("GET /reload HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["generation"].as_u64().unwrap()
}

/// What a page on another site makes a browser send with `fetch(url, {method: "POST", mode:
/// "no-cors", body: "x"})` or a form: a "simple" request, no preflight. Each is refused, and
/// nothing is reloaded or revoked; the CLI's request (no body, no `Content-Type`, no `Origin`)
/// and a JSON one still work.
#[tokio::test]
async fn cross_site_state_changes_are_refused() {
    let (_h, addr) = shim("cross-site", "127.0.0.1:0", "").await;
    assert_eq!(generation(addr).await, 1);
    let browser = |path: &str, headers: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Length: 1\r\nConnection: close\r\n\r\nx"
        )
    };
    for (request, status) in [
        (
            browser(
                "/reload",
                "Origin: https://evil.example\r\nSec-Fetch-Site: cross-site\r\nContent-Type: text/plain;charset=UTF-8\r\n",
            ),
            403,
        ),
        (
            browser(
                &format!("/sessions/revoke?client={ID}"),
                "Origin: http://evil.example\r\nSec-Fetch-Site: cross-site\r\n",
            ),
            403,
        ),
        (browser(&format!("/sessions/revoke?client={ID}"), "Origin: null\r\n"), 403),
        (browser("/reload", "Sec-Fetch-Site: cross-site\r\n"), 403),
        (browser("/reload", "Sec-Fetch-Site: same-site\r\nOrigin: http://localhost:3000\r\n"), 403),
        (browser("/reload", "Content-Type: application/x-www-form-urlencoded\r\n"), 415),
        (browser("/reload", "Content-Type: multipart/form-data; boundary=x\r\n"), 415),
        (browser("/reload", "Content-Type: text/plain\r\n"), 415),
    ] {
        let (got, body) = send(addr, &request).await;
        assert_eq!(got, status, "{request}\n{body}");
        assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].is_string(), "{body}");
    }
    assert_eq!(generation(addr).await, 1, "no refused request reloaded");

    // What `oauth-shim reload` and `curl -X POST` send: no body, no Content-Type, no Origin.
    let cli =
        format!("POST /reload HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    assert_eq!(send(addr, &cli).await.0, 200);
    let cli =
        format!("POST /sessions/revoke?client={ID} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let (status, body) = send(addr, &cli).await;
    assert_eq!((status, serde_json::from_str::<Value>(&body).unwrap()["revoked"].as_u64()), (200, Some(0)));
    // JSON (a browser would need a CORS preflight for it, which the admin listener never
    // grants), and a same-origin request, are fine.
    let json = browser("/reload", "Content-Type: Application/JSON; charset=utf-8\r\n");
    assert_eq!(send(addr, &json).await.0, 200);
    let same = browser("/reload", &format!("Origin: http://{addr}\r\nSec-Fetch-Site: same-origin\r\n"));
    assert_eq!(send(addr, &same).await.0, 200);
    assert_eq!(generation(addr).await, 4);
    // A cross-origin preflight is never granted.
    let preflight = format!(
        "OPTIONS /reload HTTP/1.1\r\nHost: {addr}\r\nOrigin: https://evil.example\r\n\
         Access-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\nConnection: close\r\n\r\n"
    );
    let raw = raw_exchange(addr, preflight.as_bytes()).await;
    assert!(raw_status(&raw) >= 400 && !raw.to_ascii_lowercase().contains("access-control-allow"), "{raw}");
}

/// A DNS-rebinding page reads with its own name in `Host`: refused (421) on every route but
/// the probes; the listener's own address, `localhost` (any port: a port-forward) and the
/// configured names are answered.
#[tokio::test]
async fn a_foreign_host_is_refused() {
    let (_h, addr) =
        shim("rebinding", "127.0.0.1:0", "[admin]\nallowed_hosts = [\"oauth-shim-admin.internal\"]\n").await;
    let get =
        |path: &str, host: &str| format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let rebinding = format!("rebind.evil.example:{}", addr.port());
    for path in ["/migration", "/sessions", "/reload", "/metrics", "/nope"] {
        let (status, body) = send(addr, &get(path, &rebinding)).await;
        assert_eq!(status, 421, "{path}: {body}");
        assert!(!body.contains(ID), "{path}: nothing of the report: {body}");
    }
    let post = format!(
        "POST /reload HTTP/1.1\r\nHost: {rebinding}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(send(addr, &post).await.0, 421);
    for path in ["/healthz", "/readyz"] {
        assert_eq!(send(addr, &get(path, &rebinding)).await.0, 200, "{path}: probes are exempt");
    }
    let port = addr.port();
    for host in [
        addr.to_string(),
        "127.0.0.1".into(),
        format!("localhost:{port}"),
        "localhost:18000".into(),
        "oauth-shim-admin.internal:9901".into(),
    ] {
        let (status, body) = send(addr, &get("/migration", &host)).await;
        assert_eq!(status, 200, "{host}: {body}");
    }
    // One reading of the host here too: malformed is 400.
    for request in [
        format!(
            "GET /migration HTTP/1.1\r\nHost: {addr}\r\nHost: rebind.evil.example\r\nConnection: close\r\n\r\n"
        ),
        format!("GET /migration HTTP/1.1\r\nHost: {addr}@rebind.evil.example\r\nConnection: close\r\n\r\n"),
        "GET /migration HTTP/1.1\r\nConnection: close\r\n\r\n".into(),
    ] {
        assert_eq!(send(addr, &request).await.0, 400, "{request}");
    }
}

/// Bound beyond loopback, the operator routes need the admin token; without one they answer 403
/// (probes and metrics stay open), unless the operator opts out. The `Bearer` scheme is
/// case-insensitive.
#[tokio::test]
async fn beyond_loopback_the_operator_routes_need_the_token() {
    let get = |path: &str, addr: SocketAddr, auth: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n")
    };
    let (_h, addr) = shim("remote", "0.0.0.0:0", "").await;
    for path in ["/migration", "/reload", "/sessions"] {
        let (status, body) = send(addr, &get(path, addr, "")).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains("admin token"), "{body}");
    }
    let post =
        format!("POST /reload HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    assert_eq!(send(addr, &post).await.0, 403);
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(send(addr, &get(path, addr, "")).await.0, 200, "{path}");
    }

    let (_h, addr) = shim("remote-open", "0.0.0.0:0", "[admin]\nallow_unauthenticated_remote = true\n").await;
    assert_eq!(send(addr, &get("/migration", addr, "")).await.0, 200, "the operator opted out");

    let token = temp_dir("admin").join("admin-token");
    std::fs::write(&token, "canary-admin-token-21\n").unwrap();
    let extra = format!("[admin]\ntoken_file = {:?}\n", token.display().to_string());
    let (_h, addr) = shim("remote-token", "0.0.0.0:0", &extra).await;
    assert_eq!(send(addr, &get("/migration", addr, "")).await.0, 401);
    assert_eq!(send(addr, &get("/migration", addr, "Authorization: Bearer wrong\r\n")).await.0, 401);
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let auth = format!("Authorization: {scheme} canary-admin-token-21\r\n");
        assert_eq!(send(addr, &get("/migration", addr, &auth)).await.0, 200, "{scheme}");
    }
}

/// On loopback, with a token configured, the scheme is case-insensitive too.
#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let standin = start_standin(standin_config()).await;
    let mut config = shim_config(&standin, "");
    config.admin.token = Some(oauth_shim::oauth::Secret::new("canary-admin-token-22"));
    let h = Harness::with_config(standin, config).await;
    let addr = h.shim.admin_addr.unwrap();
    let get =
        |auth: &str| format!("GET /migration HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    assert_eq!(send(addr, &get("")).await.0, 401);
    assert_eq!(send(addr, &get("Authorization: bearer canary-admin-token-22\r\n")).await.0, 200);
    assert_eq!(send(addr, &get("Authorization: BeArEr canary-admin-token-22\r\n")).await.0, 200);
}
