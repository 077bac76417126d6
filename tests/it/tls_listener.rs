//! TLS on the proxy and admin listeners (`[server.tls]`, `[admin.tls]`) with rustls clients:
//! legacy token calls and pass-through over HTTP/1.1 and h2 (ALPN), rotation of the pair by
//! `/reload`, the file watch and SIGHUP with old connections kept, a bad pair refused, client
//! certificates, the handshake timeout and cap, and `check-config`.

use std::time::Duration;

use oauth_shim::config::Config;
use tokio::io::AsyncReadExt;

use crate::support::*;

/// oauth-shim from a config file whose `[server.tls]` is `files` plus `tls_extra`, with `extra`
/// (other TOML) before it; the stand-in behind it.
pub async fn tls_shim(
    name: &str,
    files: &TlsFiles,
    tls_extra: &str,
    extra: &str,
) -> (Harness, std::path::PathBuf) {
    let standin = start_standin(standin_config()).await;
    let tls = format!("{extra}\n[server.tls]\n{}{tls_extra}\n", files.toml());
    let path = config_file(name, &standin, "rewrite", &tls);
    (Harness::from_file(standin, &path).await, path)
}

pub fn https(h: &Harness, path: &str) -> String {
    format!("https://localhost:{}{path}", h.proxy_addr().port())
}

/// A legacy password grant then a pass-through call with its token, over `client`; the HTTP
/// versions both answers came in.
async fn login_and_call(h: &Harness, client: &reqwest::Client) -> (http::Version, http::Version) {
    let resp = client.get(https(h, &h.password_url().replace(&h.base, ""))).send().await.unwrap();
    let version = resp.version();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();
    let resp = client.get(https(h, "/G2M/rest/meetings")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 200, "the stand-in accepted the token passed through");
    (version, resp.version())
}

#[tokio::test]
async fn token_call_and_pass_through_over_http1_and_h2() {
    let ca = Ca::new("test ca");
    let files = TlsFiles::write(&temp_dir("tls-basic"), &ca, &ca.server(1));
    let (h, _) = tls_shim("tls-basic", &files, "", "").await;
    let h2 = tls_http(client_tls(&ca.pem(), &[b"h2", b"http/1.1"], None));
    assert_eq!(login_and_call(&h, &h2).await, (http::Version::HTTP_2, http::Version::HTTP_2));
    let h1 = tls_http(client_tls(&ca.pem(), &[b"http/1.1"], None));
    assert_eq!(login_and_call(&h, &h1).await, (http::Version::HTTP_11, http::Version::HTTP_11));
    // No ALPN at all: HTTP/1.1.
    let none = tls_http(client_tls(&ca.pem(), &[], None));
    assert_eq!(login_and_call(&h, &none).await.0, http::Version::HTTP_11);
    // The upstream is told the client spoke https.
    let passed: Vec<_> =
        h.standin.requests().into_iter().filter(|r| r.path == "/G2M/rest/meetings").collect();
    assert_eq!(passed.len(), 3);
    assert!(passed.iter().all(|r| r.headers["x-forwarded-proto"] == "https"), "{:?}", passed[0].headers);
    // Plaintext on the TLS port gets no HTTP answer.
    assert!(http().get(h.url("/G2M/rest/meetings")).send().await.is_err());
    // The certificate's end of validity is exported.
    let metrics = get_text(h.admin_url("/metrics")).await;
    let line =
        metrics.lines().find(|l| l.starts_with("oauth_shim_tls_cert_not_after_seconds{listener=\"proxy\"}"));
    let value: f64 = line.expect("the metric").rsplit(' ').next().unwrap().parse().unwrap();
    let leaf = oauth_shim::tls::cert_info(&der_of(&std::fs::read_to_string(&files.cert).unwrap())).unwrap();
    assert_eq!(value as i64, leaf.not_after);
}

fn der_of(pem: &str) -> tokio_rustls::rustls::pki_types::CertificateDer<'static> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    tokio_rustls::rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

async fn admin_post(h: &Harness, path: &str) -> (u16, serde_json::Value) {
    let resp = http().post(h.admin_url(path)).send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn reload_rotates_the_pair_for_new_handshakes_and_keeps_old_connections() {
    let ca = Ca::new("rotation ca");
    let files = TlsFiles::write(&temp_dir("tls-rotate"), &ca, &ca.server(0x1111));
    let (h, _) = tls_shim("tls-rotate", &files, "", "").await;
    let client = || client_tls(&ca.pem(), &[b"http/1.1"], None);
    let old = tls_connect(h.proxy_addr(), client()).await.unwrap();
    assert_eq!(peer_serial(&old), [0x11, 0x11]);
    let mut old = h1_over(old).await;
    assert_eq!(h1_get(&mut old, "/G2M/rest/meetings").await, 401, "answered (the stand-in wants a token)");

    files.replace(&ca.server(0x2222));
    let (status, body) = admin_post(&h, "/reload").await;
    assert_eq!(status, 200, "{body}");
    let new = tls_connect(h.proxy_addr(), client()).await.unwrap();
    assert_eq!(peer_serial(&new), [0x22, 0x22], "a new handshake gets the new certificate");
    assert_eq!(h1_get(&mut old, "/G2M/rest/meetings").await, 401, "the old connection still answers");

    // A key that does not match the certificate: refused, the old pair keeps serving.
    let other = ca.server(0x3333);
    files.replace(&Pair { cert_pem: other.cert_pem, key_pem: ca.server(0x4444).key_pem });
    let (status, body) = admin_post(&h, "/reload").await;
    assert_eq!(status, 422, "{body}");
    let why = body["last_attempt"]["error"].as_str().unwrap();
    assert!(why.contains("server.tls: the private key in") && why.contains("does not match"), "{why}");
    let still = tls_connect(h.proxy_addr(), client()).await.unwrap();
    assert_eq!(peer_serial(&still), [0x22, 0x22]);

    // An expired certificate and an unreadable key: refused too.
    files.replace(&ca.expired_server());
    let (status, body) = admin_post(&h, "/reload").await;
    assert_eq!(status, 422);
    assert!(body["last_attempt"]["error"].as_str().unwrap().contains("expired at 2020-01-01"), "{body}");
    files.replace(&ca.server(0x5555));
    std::fs::remove_file(&files.key).unwrap();
    let (status, body) = admin_post(&h, "/reload").await;
    assert_eq!(status, 422);
    let why = body["last_attempt"]["error"].as_str().unwrap();
    assert!(
        why.contains("server.tls.key_file: cannot read a private key from") && why.contains("not found"),
        "{why}"
    );
    let still = tls_connect(h.proxy_addr(), client()).await.unwrap();
    assert_eq!(peer_serial(&still), [0x22, 0x22]);
}

#[tokio::test]
async fn the_file_watch_picks_up_a_rotated_pair() {
    let ca = Ca::new("watch ca");
    let files = TlsFiles::write(&temp_dir("tls-watch"), &ca, &ca.server(0x0a));
    let (h, _) = tls_shim("tls-watch", &files, "", "[reload]\nwatch_interval = \"50ms\"\n").await;
    oauth_shim::admin::reload::spawn_watcher(h.app.clone());
    let client = || client_tls(&ca.pem(), &[b"http/1.1"], None);
    let mut old = h1_over(tls_connect(h.proxy_addr(), client()).await.unwrap()).await;
    files.replace(&ca.server(0x0b));
    eventually("a handshake with the new certificate", async || {
        peer_serial(&tls_connect(h.proxy_addr(), client()).await.unwrap()) == [0x0b]
    })
    .await;
    assert_eq!(h1_get(&mut old, "/G2M/rest/meetings").await, 401);
}

#[tokio::test]
async fn sighup_rotates_the_pair_of_a_running_process() {
    let ca = Ca::new("hup ca");
    let dir = temp_dir("tls-hup");
    let files = TlsFiles::write(&dir, &ca, &ca.server(0x01));
    let config = dir.join("shim.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[server.tls]\n{}[admin]\nlisten = \"127.0.0.1:0\"\n[reload]\nwatch = false\n[log]\nformat = \"json\"\n[upstream]\ntoken_url = \"http://127.0.0.1:9/token\"\nauthorize_url = \"http://127.0.0.1:9/authorize\"\napi_base = \"http://127.0.0.1:9\"\n[[clients]]\nid = \"{ID}\"\nsecret = \"{SECRET}\"\n",
            files.toml()
        ),
    )
    .unwrap();
    let shim = ShimProcess::serve(&config, &[]).await;
    let client = || client_tls(&ca.pem(), &[b"http/1.1"], None);
    let mut old = h1_over(tls_connect(shim.proxy, client()).await.unwrap()).await;
    // A legacy call without a client is answered (401) without an upstream.
    assert_eq!(h1_get(&mut old, "/oauth/access_token").await, 401);
    files.replace(&ca.server(0x02));
    shim.signal("HUP");
    eventually("a handshake with the new certificate", async || {
        peer_serial(&tls_connect(shim.proxy, client()).await.unwrap()) == [0x02]
    })
    .await;
    assert!(shim.log().contains("TLS certificate changed"), "{}", shim.log());
    assert_eq!(h1_get(&mut old, "/oauth/access_token").await, 401, "the old connection still answers");
}

#[tokio::test]
async fn client_certificates_required_and_optional() {
    let ca = Ca::new("server ca");
    let workloads = Ca::new("workload ca");
    let stranger = Ca::new("another ca");
    let dir = temp_dir("tls-mtls");
    let files = TlsFiles::write(&dir, &ca, &ca.server(7));
    let client_ca = dir.join("clients.pem");
    std::fs::write(&client_ca, workloads.pem()).unwrap();
    let logs = captured_logs();
    let mtls =
        format!("client_ca_file = {:?}\nclient_auth = \"required\"\n", client_ca.display().to_string());
    let (h, _) = tls_shim("tls-mtls", &files, &mtls, "").await;
    let url = https(&h, "/G2M/rest/meetings?mtls-required");

    // No client certificate: the handshake fails (TLS 1.3 tells the client on its first read).
    assert!(tls_http(client_tls(&ca.pem(), &[], None)).get(&url).send().await.is_err());
    // A certificate from another CA: refused.
    let wrong = stranger.client("intruder");
    assert!(tls_http(client_tls(&ca.pem(), &[], Some(&wrong))).get(&url).send().await.is_err());
    // A workload certificate: served, and its subject is on the access line.
    let ok = workloads.client("billing-sync");
    let resp = tls_http(client_tls(&ca.pem(), &[b"h2"], Some(&ok))).get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401, "reached the stand-in");
    eventually("the access line", async || logs.text().contains("CN=billing-sync")).await;
    let text = logs.text();
    let line = text.lines().find(|l| l.contains("CN=billing-sync")).unwrap();
    assert!(line.contains("client_cert=") && line.contains("O=workloads"), "{line}");

    // Optional: no certificate is served, a stranger's still refused.
    let mtls =
        format!("client_ca_file = {:?}\nclient_auth = \"optional\"\n", client_ca.display().to_string());
    let (h, _) = tls_shim("tls-mtls-opt", &files, &mtls, "").await;
    let url = https(&h, "/G2M/rest/meetings");
    let resp = tls_http(client_tls(&ca.pem(), &[], None)).get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(tls_http(client_tls(&ca.pem(), &[], Some(&wrong))).get(&url).send().await.is_err());
}

#[tokio::test]
async fn stalled_handshakes_are_closed_and_do_not_starve_others() {
    let ca = Ca::new("slow ca");
    let files = TlsFiles::write(&temp_dir("tls-slow"), &ca, &ca.server(9));
    let (h, _) =
        tls_shim("tls-slow", &files, "handshake_timeout = \"300ms\"\nmax_handshakes = 2\n", "").await;
    // Twice as many connections as handshake slots, none of which ever says hello.
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(tokio::net::TcpStream::connect(h.proxy_addr()).await.unwrap());
    }
    // A real client is served all the same (within a bound, so a starved one fails the test
    // rather than hanging it).
    let client = tls_http(client_tls(&ca.pem(), &[b"http/1.1"], None));
    let served = client.get(https(&h, "/G2M/rest/meetings")).send();
    let resp =
        tokio::time::timeout(Duration::from_secs(10), served).await.expect("served, not starved").unwrap();
    assert_eq!(resp.status(), 401);
    // Each stalled connection was closed by the server (EOF, or a reset).
    for mut s in stalled {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    }
}

#[tokio::test]
async fn the_connection_limit_counts_tls_connections() {
    let ca = Ca::new("limit ca");
    let files = TlsFiles::write(&temp_dir("tls-limit"), &ca, &ca.server(3));
    let (h, _) = tls_shim("tls-limit", &files, "", "[server]\nmax_connections = 1\n").await;
    let pem = ca.pem();
    let client = move || client_tls(&pem, &[b"http/1.1"], None);
    let mut first = h1_over(tls_connect(h.proxy_addr(), client()).await.unwrap()).await;
    assert_eq!(h1_get(&mut first, "/G2M/rest/meetings").await, 401);
    // The second waits in the accept queue while the first holds the only slot.
    let addr = h.proxy_addr();
    let config = client();
    let second = tokio::spawn(async move { tls_connect(addr, config).await.map(|s| peer_serial(&s)) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!second.is_finished(), "no handshake while the limit is reached");
    drop(first);
    let serial = tokio::time::timeout(Duration::from_secs(10), second).await.unwrap().unwrap().unwrap();
    assert_eq!(serial, [3]);
}

#[tokio::test]
async fn check_config_validates_the_pair_and_prints_subject_and_expiry() {
    let ca = Ca::new("check ca");
    let dir = temp_dir("tls-check");
    let files = TlsFiles::write(&dir, &ca, &ca.server(0x42));
    let config = dir.join("shim.toml");
    std::fs::write(&config, format!("[server.tls]\n{}", files.toml())).unwrap();
    let out = bin().args(["check-config", "--config"]).arg(&config).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let line = stdout.lines().find(|l| l.starts_with("# server.tls:")).expect("a certificate line");
    assert!(
        line.contains("subject CN=oauth-shim test")
            && line.contains("serial 42")
            && line.contains("expires "),
        "{line}"
    );

    for (pair, why) in [
        (
            Pair { cert_pem: ca.server(1).cert_pem, key_pem: ca.server(2).key_pem },
            "does not match the certificate",
        ),
        (ca.expired_server(), "expired at 2020-01-01"),
    ] {
        files.replace(&pair);
        let out = bin().args(["check-config", "--config"]).arg(&config).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{stderr}");
        assert!(stderr.contains(why), "{stderr}");
    }
    std::fs::write(&files.cert, "not pem").unwrap();
    let out = bin().args(["check-config", "--config"]).arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr.contains("server.tls.cert_file: cannot read certificates from"), "{stderr}");
    // Incomplete sections are refused at load.
    std::fs::write(&config, "[server.tls]\ncert_file = \"a.pem\"\n").unwrap();
    let err = Config::load(&config).err().unwrap().0;
    assert!(err.contains("server.tls: set both cert_file and key_file"), "{err}");
}

#[tokio::test]
async fn plaintext_beyond_loopback_with_the_password_grant_is_warned_about_once() {
    let dir = temp_dir("tls-warn");
    let config = dir.join("shim.toml");
    let write = |listen: &str, password: bool| {
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"{listen}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n[[clients]]\nid = \"{ID}\"\nsecret = \"{SECRET}\"\nallow_password_grant = {password}\n"
            ),
        )
        .unwrap();
    };
    let warning = "serves plaintext while clients allow the password grant";
    write("0.0.0.0:0", true);
    let shim = ShimProcess::serve(&config, &[]).await;
    assert_eq!(shim.log().matches(warning).count(), 1, "{}", shim.log());
    for (listen, password) in [("127.0.0.1:0", true), ("0.0.0.0:0", false)] {
        write(listen, password);
        let shim = ShimProcess::serve(&config, &[]).await;
        assert!(!shim.log().contains(warning), "{}", shim.log());
    }
}
