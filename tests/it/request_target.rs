//! What a request names on the proxy port: one reading of its host (a front proxy routing by
//! `Host` never sees a request oauth-shim reads differently), and pass-through paths that cannot
//! climb out of the API base's prefix. Raw HTTP/1 bytes and an HTTP/2 client, over real sockets.

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::passthrough::Echo;
use crate::support::*;

/// A provider selected by `idp.test`, beside the default: both forward to `echo`.
async fn harness(echo: &Echo) -> Harness {
    let toml = format!(
        "{}[[providers]]\nname = \"idp\"\nhosts = [\"idp.test\"]\ntoken_url = \"{b}/oauth/token\"\n\
         authorize_url = \"{b}/oauth/authorize\"\napi_base = \"{b}/idp\"\n",
        echo.toml(),
        b = echo.base()
    );
    Harness::start(standin_config(), &toml).await
}

#[tokio::test]
async fn malformed_or_ambiguous_hosts_get_400_and_reach_no_upstream() {
    let echo = Echo::start().await;
    let h = harness(&echo).await;
    for head in [
        // Two Host lines: a front proxy may route by the first, another reader by the last.
        "GET /api HTTP/1.1\r\nHost: api.test\r\nHost: idp.test\r\n",
        "GET /api HTTP/1.1\r\nHost: idp.test\r\nHost: idp.test\r\n",
        // HTTP/1.1 without Host.
        "GET /api HTTP/1.1\r\n",
        // An invalid port, or something after the host.
        "GET /api HTTP/1.1\r\nHost: idp.test:80x\r\n",
        "GET /api HTTP/1.1\r\nHost: idp.test:99999\r\n",
        "GET /api HTTP/1.1\r\nHost: idp.test:\r\n",
        "GET /api HTTP/1.1\r\nHost: idp.test/evil\r\n",
        "GET /api HTTP/1.1\r\nHost: idp.test,api.test\r\n",
        "GET /api HTTP/1.1\r\nHost: user@idp.test\r\n",
        "GET /api HTTP/1.1\r\nHost: idp.test x\r\n",
        // An absolute-form target whose authority disagrees with Host (or has no Host).
        "GET http://idp.test/api HTTP/1.1\r\nHost: api.test\r\n",
        "GET http://idp.test/api HTTP/1.1\r\n",
    ] {
        let raw = raw_exchange(h.proxy_addr(), format!("{head}Connection: close\r\n\r\n").as_bytes()).await;
        assert_eq!(raw_status(&raw), 400, "{head}\n{raw}");
        assert!(raw.contains("\"error\":\"invalid_request\""), "{raw}");
        assert!(raw.to_ascii_lowercase().contains("connection: close"), "{raw}");
    }
    assert!(echo.seen().is_empty(), "nothing reached the upstream: {:?}", echo.seen());

    // Well-formed ones are served, each by the provider its one host selects.
    for (head, path) in [
        ("GET /api HTTP/1.1\r\nHost: IDP.test:8080\r\n", "/idp/api"),
        ("GET /api HTTP/1.1\r\nHost: idp.test.\r\n", "/idp/api"),
        ("GET /api HTTP/1.1\r\nHost: [::1]:8080\r\n", "/api"),
        ("GET http://idp.test/api HTTP/1.1\r\nHost: idp.test\r\n", "/idp/api"),
        ("GET /api HTTP/1.0\r\n", "/api"),
    ] {
        let raw = raw_exchange(h.proxy_addr(), format!("{head}Connection: close\r\n\r\n").as_bytes()).await;
        assert_eq!(raw_status(&raw.replace("HTTP/1.0", "HTTP/1.1")), 200, "{head}\n{raw}");
        assert_eq!(echo.seen().pop().unwrap().path, path, "{head}");
    }
}

/// HTTP/2: a `host` header beside `:authority` must name the same host (RFC 9113 §8.3.1).
#[tokio::test]
async fn http2_authority_and_host_must_agree() {
    let echo = Echo::start().await;
    let h = harness(&echo).await;
    let tcp = TcpStream::connect(h.proxy_addr()).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let mut call = async |host: Option<&str>| {
        let mut req = Request::get("http://idp.test/api").version(Version::HTTP_2);
        if let Some(host) = host {
            req = req.header("host", host);
        }
        let resp = send.send_request(req.body(Empty::<Bytes>::new()).unwrap()).await.unwrap();
        let status = resp.status().as_u16();
        let _ = resp.into_body().collect().await;
        status
    };
    assert_eq!(call(Some("api.test")).await, 400);
    assert_eq!(call(Some("idp.test:443")).await, 400);
    assert!(echo.seen().is_empty(), "{:?}", echo.seen());
    assert_eq!(call(Some("idp.test")).await, 200);
    assert_eq!(call(None).await, 200);
    assert!(echo.seen().iter().all(|s| s.path == "/idp/api"), "{:?}", echo.seen());
}

/// A pass-through path with a dot segment, in any spelling an upstream might resolve, is
/// refused before the API base's prefix is applied, so it cannot reach a path outside it.
#[tokio::test]
async fn dot_segments_cannot_climb_out_of_the_api_base() {
    let echo = Echo::start().await;
    let toml = format!("[upstream]\napi_base = \"{}/v1\"\n", echo.base());
    let h = Harness::start(standin_config(), &toml).await;
    for path in [
        "/../admin",
        "/G2W/../../admin",
        "/%2e%2e/admin",
        "/%2E%2e/admin",
        "/.%2e/admin",
        "/..%2fadmin",
        "/..\\admin",
        "/..%5Cadmin",
        "/./x",
        "/G2W/..;/admin",
        "/..",
    ] {
        let raw = raw_exchange(
            h.proxy_addr(),
            format!("GET {path}?q=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(raw_status(&raw), 400, "{path}\n{raw}");
        assert!(raw.contains("\"error\":\"invalid_request\""), "{raw}");
    }
    assert!(echo.seen().is_empty(), "nothing reached the upstream: {:?}", echo.seen());
    // Dots that are not a segment of their own pass, under the prefix.
    for path in ["/G2W/file.json", "/a/.../b", "/.well-known/x", "/a/..b"] {
        let resp = http().get(h.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(echo.seen().pop().unwrap().path, format!("/v1{path}"));
    }
}
