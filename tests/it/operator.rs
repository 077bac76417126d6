//! Operating oauth-shim: hot reload (a mode switch with requests in flight, an invalid reload,
//! the file watch, a rotated `secret_file` reported by client name only), the migration report
//! after a scripted mix of legacy calls, and running it as a platform runs it: a pod's
//! service-link variables do not stop it, the `healthcheck` subcommand probes it, the admin token
//! guards `/reload` and `/migration`, and the Kubernetes examples' admin ports answer probes,
//! scrapes and operators under the admin rules.

use std::process::{Command, Stdio};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use oauth_shim::devtools::standin::{Fault, Standin};
use oauth_shim::ops::migration::{Feature, Report, table};
use serde_json::Value;

use crate::support::*;

fn dir(name: &str) -> std::path::PathBuf {
    temp_dir(&format!("operator-{name}"))
}

async fn admin_json(h: &Harness, method: reqwest::Method, path: &str) -> (u16, Value) {
    let resp = http().request(method, h.admin_url(path)).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn mode_switch_by_reload_with_requests_in_flight() {
    let standin = start_standin(standin_config()).await;
    let path = config_file("inflight", &standin, "rewrite", "");
    let h = Harness::from_file(standin, &path).await;

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
    let target = h.password_url().trim_start_matches(&h.base).to_owned();
    let before = conn.send_request(get(&target)).await.unwrap();
    assert_eq!(before.status(), 200);
    before.into_body().collect().await.unwrap();

    // Requests in flight across the reload: the upstream holds each one.
    h.standin.set_fault(Some(Fault::Delay(Duration::from_millis(400))));
    let calls_before = h.standin.token_calls();
    const N: usize = 8;
    let url = h.password_url();
    let client = http();
    let inflight: Vec<_> = (0..N).map(|_| tokio::spawn(client.get(&url).send())).collect();
    eventually("requests to reach the upstream", async || h.standin.token_calls() >= calls_before + N).await;
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
    let standin = start_standin(standin_config()).await;
    let path = config_file("invalid", &standin, "rewrite", "");
    let h = Harness::from_file(standin, &path).await;
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
    let resp = http().get(h.password_url()).send().await.unwrap();
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
    let standin = start_standin(standin_config()).await;
    let path = config_file("watch", &standin, "rewrite", "[reload]\nwatch_interval = \"50ms\"\n");
    let h = Harness::from_file(standin, &path).await;
    oauth_shim::admin::reload::spawn_watcher(h.app.clone());
    assert_eq!(http().get(h.password_url()).send().await.unwrap().status(), 200);

    write_config(&path, &h.standin, "deny", "[reload]\nwatch_interval = \"50ms\"\n");
    eventually("the watcher to reload", async || h.app.state().ops.reload.status().generation == 2).await;
    assert_eq!(h.app.state().ops.reload.status().last_attempt.unwrap().trigger, "file");
    assert_eq!(http().get(h.password_url()).send().await.unwrap().status(), 400);

    // An invalid edit is refused once, and not retried until the file changes again.
    std::fs::write(&path, "[server]\nlisten_typo = 1\n").unwrap();
    eventually("the watcher to try", async || {
        h.app.state().ops.reload.status().last_attempt.is_some_and(|a| !a.ok)
    })
    .await;
    assert_eq!(http().get(h.password_url()).send().await.unwrap().status(), 400, "old config serves");
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
        let v: Value = c.get(h.password_url()).send().await.unwrap().json().await.unwrap();
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

#[tokio::test]
async fn serves_with_service_link_variables_and_answers_healthcheck() {
    let (port, admin) = (free_port(), free_port());
    let d = dir("links");
    let path = d.join("shim.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
             [[clients]]\nid = \"acme\"\nsecret = \"x\"\n"
        ),
    )
    .unwrap();
    let probe = |ready: bool| {
        let mut c = bin();
        c.args(["healthcheck", "--config"]).arg(&path);
        if ready {
            c.arg("--ready");
        }
        c.output().unwrap()
    };
    let down = probe(false);
    assert_eq!(down.status.code(), Some(1), "nothing listens yet");
    assert!(String::from_utf8_lossy(&down.stderr).contains(&format!("127.0.0.1:{admin}")));

    let log = d.join("out.log");
    let child = ChildGuard(
        bin()
            .args(["serve", "--config"])
            .arg(&path)
            // What Kubernetes injects for a Service named oauth-shim.
            .env("OAUTH_SHIM_PORT", "tcp://10.96.0.12:8080")
            .env("OAUTH_SHIM_PORT_8080_TCP", "tcp://10.96.0.12:8080")
            .env("OAUTH_SHIM_SERVICE_HOST", "10.96.0.12")
            .env("OAUTH_SHIM_SERVICE_PORT", "8080")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let up = poll_until(async || probe(true).status.success()).await;
    assert!(up, "serve did not become ready: {}", std::fs::read_to_string(&log).unwrap_or_default());
    assert!(probe(false).status.success());
    drop(child);
    let out = std::fs::read_to_string(&log).unwrap();
    let warnings: Vec<_> = out.lines().filter(|l| l.contains("ignored environment variables")).collect();
    assert_eq!(warnings.len(), 1, "{out}");
    assert!(warnings[0].contains("OAUTH_SHIM_SERVICE_HOST") && !warnings[0].contains("10.96.0.12"));
}

fn config_text(standin: &Standin, secret_file: &std::path::Path, extra: &str) -> String {
    format!(
        "[upstream]\ntoken_url = \"{}\"\nauthorize_url = \"{}\"\napi_base = \"{}\"\n{extra}\n\
         [[clients]]\nid = \"{ID}\"\nsecret_file = \"{}\"\nallow_password_grant = true\n\
         [[clients]]\nid = \"other\"\nsecret = \"other-secret\"\n",
        standin.token_url(),
        standin.authorize_url(),
        standin.api_base(),
        secret_file.display()
    )
}

// Multi-threaded: the admin client commands below block a thread while the server answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_guards_reload_and_migration_only() {
    let standin = start_standin(standin_config()).await;
    let d = dir("token");
    let (secret, token) = (d.join("secret"), d.join("admin-token"));
    std::fs::write(&secret, SECRET).unwrap();
    std::fs::write(&token, "admin-canary-token\n").unwrap();
    let path = d.join("shim.toml");
    let extra = format!("[admin]\ntoken_file = \"{}\"", token.display());
    std::fs::write(&path, config_text(&standin, &secret, &extra)).unwrap();
    let h = Harness::from_file(standin, &path).await;
    let c = http();
    for open in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(c.get(h.admin_url(open)).send().await.unwrap().status(), 200, "{open}");
    }
    for (method, guarded) in [
        (reqwest::Method::GET, "/migration"),
        (reqwest::Method::GET, "/reload"),
        (reqwest::Method::POST, "/reload"),
    ] {
        let none = c.request(method.clone(), h.admin_url(guarded)).send().await.unwrap();
        assert_eq!(none.status(), 401, "{method} {guarded}");
        assert_eq!(none.headers()["www-authenticate"], "Bearer");
        let wrong = c.request(method.clone(), h.admin_url(guarded)).bearer_auth("nope").send().await.unwrap();
        assert_eq!(wrong.status(), 401);
        let right = c
            .request(method.clone(), h.admin_url(guarded))
            .bearer_auth("admin-canary-token")
            .send()
            .await
            .unwrap();
        assert_eq!(right.status(), 200, "{method} {guarded}");
    }
    // `oauth-shim reload` and `report` read the token from the same config.
    let admin = h.admin_url("");
    let out = bin().args(["reload", "--config"]).arg(&path).args(["--admin", &admin]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out =
        bin().args(["report", "--json", "--config"]).arg(&path).args(["--admin", &admin]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = bin().args(["healthcheck", "--admin", &admin]).output().unwrap();
    assert!(out.status.success(), "healthcheck needs no token");
}

#[tokio::test]
async fn a_rotated_secret_file_is_picked_up_and_reported_by_name() {
    let standin = start_standin(standin_config()).await;
    let d = dir("rotate");
    let secret = d.join("secret");
    std::fs::write(&secret, "old-canary-secret\n").unwrap();
    let path = d.join("shim.toml");
    std::fs::write(&path, config_text(&standin, &secret, "[reload]\nwatch_interval = \"50ms\"")).unwrap();
    let h = Harness::from_file(standin, &path).await;
    oauth_shim::admin::reload::spawn_watcher(h.app.clone());
    let password = h.password_url();
    assert_eq!(
        http().get(&password).send().await.unwrap().status(),
        401,
        "the stand-in wants the new secret"
    );

    // Rotate as a Secret volume does: the file's content changes, the config file does not.
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let reloads = &h.app.state().ops.reload;
    eventually("the watcher to reload on a changed secret file", async || reloads.status().generation == 2)
        .await;
    let status = reloads.status();
    let attempt = status.last_attempt.unwrap();
    assert_eq!(attempt.trigger, "file");
    assert_eq!(attempt.secret_changes, [ID], "names only, and only the changed client");
    let v: Value = serde_json::to_value(&attempt).unwrap();
    let text = v.to_string();
    assert!(!text.contains("old-canary-secret") && !text.contains(SECRET), "{text}");
    assert_eq!(http().get(&password).send().await.unwrap().status(), 200);
}

/// The Kubernetes examples' configs as shipped, with the admin listener on all interfaces as in
/// a pod: the kubelet's probes and Prometheus (both naming the pod IP, here 127.0.0.2, in
/// `Host`) are answered, a rebinding `Host` is not, and the operator commands (`kubectl exec`:
/// the container's environment) work with the token from the Secret, as nothing does without it.
// Multi-threaded: the admin client commands below block a thread while the server answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_examples_admin_ports_work_under_the_admin_rules() {
    let root = env!("CARGO_MANIFEST_DIR");
    let secrets = dir("k8s-secrets");
    for name in ["admin-token", "webinar-sync", "crm-bridge", "reporting", "redis-password"] {
        std::fs::write(secrets.join(name), format!("{name}-value\n")).unwrap();
    }
    let state_key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    std::fs::write(secrets.join("state-keys"), format!("{state_key}\n")).unwrap();
    let sidecar =
        crate::cli::embedded_toml(&std::fs::read_to_string(format!("{root}/deploy/sidecar.yaml")).unwrap());
    // The proxy port serves the certificate cert-manager's Secret holds.
    let (tls_secret, tls_ca) = mounted_tls_secret(0x5e);
    let shared = crate::cli::embedded_toml(
        &std::fs::read_to_string(format!("{root}/deploy/shared-service/configmap.yaml")).unwrap(),
    )
    .replace("/run/secrets/oauth-shim", secrets.to_str().unwrap())
    // No Redis here: the replica serves degraded, as it would during an outage.
    .replace("redis://oauth-shim-redis:6379/0", "redis://127.0.0.1:1/0")
    .replace("/run/tls/oauth-shim", tls_secret.to_str().unwrap());
    for (name, config, token) in
        [("sidecar", sidecar, "sidecar-admin-token"), ("shared", shared, "admin-token-value")]
    {
        let (port, admin) = (free_port(), free_port());
        let path = dir(&format!("k8s-{name}")).join("oauth-shim.toml");
        std::fs::write(&path, config).unwrap();
        let pod = |c: &mut Command| {
            c.env("OAUTH_SHIM_SERVER__LISTEN", format!("127.0.0.1:{port}"))
                .env("OAUTH_SHIM_ADMIN__LISTEN", format!("0.0.0.0:{admin}"))
                .env("GOTO_CLIENT_SECRET", "client-secret")
                .env("ADMIN_TOKEN", "sidecar-admin-token");
        };
        let mut serve = bin();
        serve.args(["serve", "--config"]).arg(&path).stdout(Stdio::null()).stderr(Stdio::null());
        pod(&mut serve);
        let _child = ChildGuard(serve.spawn().unwrap());
        let exec = |args: &[&str]| {
            let mut c = bin();
            c.args(args).arg("--config").arg(&path);
            pod(&mut c);
            c.output().unwrap()
        };
        let up = poll_until(async || exec(&["healthcheck", "--ready"]).status.success()).await;
        assert!(up, "{name}: the liveness exec probe passes");
        let pod_ip = std::net::SocketAddr::from(([127, 0, 0, 2], admin));
        let get = |path: &str, host: &str, auth: &str| {
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n")
        };
        let status = async |request: String| raw_status(&raw_exchange(pod_ip, request.as_bytes()).await);
        let by_ip = pod_ip.to_string();
        assert_eq!(status(get("/readyz", &by_ip, "")).await, 200, "{name}: kubelet readiness probe");
        assert_eq!(status(get("/metrics", &by_ip, "")).await, 200, "{name}: Prometheus scrape");
        assert_eq!(status(get("/metrics", "rebind.evil.example", "")).await, 421, "{name}");
        assert_eq!(status(get("/migration", &by_ip, "")).await, 401, "{name}: the token is required");
        let auth = format!("Authorization: Bearer {token}\r\n");
        assert_eq!(status(get("/migration", &by_ip, &auth)).await, 200, "{name}");
        for command in [&["report"][..], &["reload"]] {
            let out = exec(command);
            assert!(out.status.success(), "{name}: {command:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        if name == "shared" {
            let proxy = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let tls = tls_connect(proxy, client_tls(&tls_ca.pem(), &[b"h2"], None)).await.unwrap();
            assert_eq!(peer_serial(&tls), [0x5e], "the proxy port serves the mounted certificate");
        }
    }
}
