//! The upstream connection pool (`src/upstream/pool.rs`, `client.rs`): connections are reused,
//! returned after a streamed body, closed when idle too long, never kept beyond
//! `pool_max_idle_per_host`, a connection the upstream closed while idle costs the caller
//! nothing, and token calls keep connections of their own.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// How the raw upstream treats a connection.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    KeepAlive,
    /// Close each connection right after its first answer without announcing it (no
    /// `Connection: close`), as an upstream that drops idle connections does.
    CloseAfterAnswer,
    /// Answer the first request, read the second, and close without answering it.
    DropSecondRequest,
}

/// A raw HTTP/1.1 upstream on 127.0.0.1:0 that counts connections and requests. Answers every
/// request (read up to the end of its head; the tests send no bodies) with `200 ok`, or with
/// `/download/N` a body of N bytes.
struct CountingUpstream {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl CountingUpstream {
    async fn start(mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, open, requests): (Arc<AtomicUsize>, Arc<AtomicUsize>, Arc<AtomicUsize>) =
            Default::default();
        let (acc, op, reqs) = (Arc::clone(&accepted), Arc::clone(&open), requests.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                acc.fetch_add(1, Ordering::SeqCst);
                op.fetch_add(1, Ordering::SeqCst);
                let (op, reqs) = (op.clone(), reqs.clone());
                tokio::spawn(async move {
                    serve(stream, mode, &reqs).await;
                    op.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self { addr, accepted, open, requests }
    }

    fn toml(&self, extra: &str) -> String {
        format!("[upstream]\napi_base = \"http://{}\"\n{extra}", self.addr)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Wait (bounded; not a timing assertion) until no connection is open.
    async fn wait_all_closed(&self) {
        poll_until(async || self.open() == 0).await;
    }
}

/// Serve one connection until the peer closes it, or as `mode` says.
async fn serve(mut stream: TcpStream, mode: Mode, requests: &AtomicUsize) {
    let mut buf = Vec::new();
    for n in 1.. {
        let Some(head) = read_request_head(&mut stream, &mut buf).await else { return };
        requests.fetch_add(1, Ordering::SeqCst);
        if mode == Mode::DropSecondRequest && n == 2 {
            return;
        }
        let path = head.split_whitespace().nth(1).unwrap_or("/");
        let body = match path.strip_prefix("/download/") {
            Some(n) => vec![b'x'; n.parse().unwrap()],
            None => b"ok".to_vec(),
        };
        let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
        if stream.write_all(answer.as_bytes()).await.is_err() || stream.write_all(&body).await.is_err() {
            return;
        }
        if mode == Mode::CloseAfterAnswer {
            return;
        }
    }
}

async fn get_ok(client: &reqwest::Client, url: &str) -> usize {
    let resp = client.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    resp.bytes().await.unwrap().len()
}

#[tokio::test]
async fn connections_are_reused_including_after_a_streamed_body() {
    let up = CountingUpstream::start(Mode::KeepAlive).await;
    let shim = Harness::start(standin_config(), &up.toml("")).await;
    let client = http();
    for _ in 0..30 {
        assert_eq!(get_ok(&client, &shim.url("/G2W/rest/ping")).await, 2);
    }
    assert_eq!(up.accepted(), 1, "30 sequential requests share one upstream connection");

    // A body too large to arrive with the head: the connection goes back once it is read.
    let len = 4 * 1024 * 1024;
    assert_eq!(get_ok(&client, &shim.url(&format!("/download/{len}"))).await, len);
    for _ in 0..10 {
        get_ok(&client, &shim.url("/G2W/rest/ping")).await;
    }
    // The next request may race the connection's return by a moment; it must not leak one
    // connection per request.
    assert!(up.accepted() <= 2, "{} upstream connections for 41 sequential requests", up.accepted());
}

#[tokio::test]
async fn an_upstream_closing_idle_connections_costs_the_caller_nothing() {
    let up = CountingUpstream::start(Mode::CloseAfterAnswer).await;
    let shim = Harness::start(standin_config(), &up.toml("")).await;
    let client = http();
    for i in 0..20 {
        assert_eq!(get_ok(&client, &shim.url(&format!("/G2W/rest/{i}"))).await, 2);
    }
    assert_eq!(up.accepted(), 20, "each answer closed its connection");
}

#[tokio::test]
async fn a_request_that_may_have_reached_the_upstream_is_not_retried() {
    let up = CountingUpstream::start(Mode::DropSecondRequest).await;
    let shim = Harness::start(standin_config(), &up.toml("")).await;
    let client = http();
    get_ok(&client, &shim.url("/G2W/rest/first")).await;
    // Sent on the pooled connection, read by the upstream, never answered: 502, and not sent
    // again on a new connection (it might not be idempotent).
    let resp = client.post(shim.url("/G2W/rest/second")).body("once").send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!((up.accepted(), up.requests()), (1, 2));
}

#[tokio::test]
async fn idle_connections_close_after_the_idle_timeout() {
    let up = CountingUpstream::start(Mode::KeepAlive).await;
    let shim = Harness::start(standin_config(), &up.toml("pool_idle_timeout = \"200ms\"\n")).await;
    let client = http();
    get_ok(&client, &shim.url("/G2W/rest/ping")).await;
    assert_eq!(up.accepted(), 1);
    // The sweeper closes it some time after 200 ms.
    up.wait_all_closed().await;
    assert_eq!(up.open(), 0, "the idle connection was closed");
    get_ok(&client, &shim.url("/G2W/rest/ping")).await;
    assert_eq!(up.accepted(), 2, "a new connection after the idle one closed");
}

#[tokio::test]
async fn max_idle_zero_keeps_no_connection() {
    let up = CountingUpstream::start(Mode::KeepAlive).await;
    let shim = Harness::start(standin_config(), &up.toml("pool_max_idle_per_host = 0\n")).await;
    let client = http();
    for _ in 0..5 {
        get_ok(&client, &shim.url("/G2W/rest/ping")).await;
    }
    assert_eq!(up.accepted(), 5);
}

#[tokio::test]
async fn token_calls_reuse_their_connection_too() {
    let up = CountingUpstream::start(Mode::KeepAlive).await;
    let toml = format!("[upstream]\ntoken_url = \"http://{}/oauth/v2/token\"\n", up.addr);
    let shim = Harness::start(standin_config(), &toml).await;
    let client = http();
    for _ in 0..10 {
        let url =
            shim.url(&format!("/oauth/access_token?grant_type=password&user_id=u&password=p&client_id={ID}"));
        // `ok` is no v2 token answer: 502, but the exchange itself completed.
        assert_eq!(client.get(url).send().await.unwrap().status(), 502);
    }
    assert_eq!(up.accepted(), 1, "10 token calls share one upstream connection");
}

#[tokio::test]
async fn a_reload_applies_the_pool_limits() {
    let up = CountingUpstream::start(Mode::KeepAlive).await;
    let standin = start_standin(standin_config()).await;
    let path = temp_dir("pool").join("shim.toml");
    let (token_url, authorize_url) = (standin.token_url(), standin.authorize_url());
    let write = |max_idle: usize| {
        let text = format!(
            "[upstream]\ntoken_url = \"{token_url}\"\nauthorize_url = \"{authorize_url}\"\n\
             api_base = \"http://{}\"\npool_max_idle_per_host = {max_idle}\n\
             [[clients]]\nid = \"{ID}\"\nsecret = \"{SECRET}\"\n",
            up.addr,
        );
        std::fs::write(&path, text).unwrap();
    };
    write(8);
    let shim = Harness::from_file(standin, &path).await;
    let client = http();
    for _ in 0..5 {
        get_ok(&client, &shim.url("/G2W/rest/ping")).await;
    }
    assert_eq!(up.accepted(), 1);

    // Keep no idle connection: the pooled one is closed, and every request connects anew.
    write(0);
    let status = oauth_shim::admin::reload::reload(&shim.app, "test").unwrap();
    assert!(status.last_attempt.unwrap().restart_required.is_empty(), "applied, no restart needed");
    for _ in 0..3 {
        get_ok(&client, &shim.url("/G2W/rest/ping")).await;
    }
    assert_eq!(up.accepted(), 4);
    up.wait_all_closed().await;
    assert_eq!(up.open(), 0, "no upstream connection is kept open");
}

#[tokio::test]
async fn token_calls_never_share_a_connection_with_pass_through() {
    let up = RawUpstream::start(|path| {
        if path.starts_with("/oauth/v2/token") {
            json_answer(r#"{"access_token":"at","refresh_token":"rt","expires_in":3600}"#)
        } else {
            json_answer("{}")
        }
    })
    .await;
    // The default shape: token URL and API base on one host.
    let toml = format!(
        "[upstream]\ntoken_url = \"http://{0}/oauth/v2/token\"\napi_base = \"http://{0}\"\n\
         [refresh_cache]\nttl = \"0s\"\n",
        up.addr
    );
    let h = Harness::start(standin_config(), &toml).await;
    let client = http();
    let token =
        h.url(&format!("/oauth/access_token?grant_type=refresh_token&refresh_token=r&client_id={ID}"));
    for i in 0..3 {
        let resp = client.get(h.url(&format!("/G2W/rest/{i}"))).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let resp = client.get(&token).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let resp =
            client
                .get(h.url(&format!(
                    "/oauth/access_token?grant_type=password&user_id=u&password=p&client_id={ID}"
                )))
                .send()
                .await
                .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let seen = up.seen();
    let conns = |token: bool| -> std::collections::BTreeSet<usize> {
        seen.iter().filter(|(_, line)| line.contains("/oauth/v2/token") == token).map(|(c, _)| *c).collect()
    };
    let (tokens, passes) = (conns(true), conns(false));
    assert!(
        tokens.is_disjoint(&passes),
        "token calls {tokens:?} and pass-through {passes:?} shared: {seen:?}"
    );
    assert_eq!((tokens.len(), passes.len()), (1, 1), "each pool still reuses its connection: {seen:?}");
}
