//! Running it as a platform runs it: a pod's service-link variables do not stop it, the
//! `healthcheck` subcommand probes it, the admin token guards `/reload` and `/migration`, the
//! Kubernetes examples' admin ports answer probes, scrapes and operators under the admin rules,
//! and a rotated `secret_file` is picked up by the file watch and reported by client name only.

use std::process::{Command, Stdio};
use std::time::Duration;

use oauth_shim::config::Config;
use oauth_shim::devtools::standin::Standin;
use serde_json::Value;

use crate::support::*;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_oauth-shim"));
    c.env_remove("OAUTH_SHIM_CONFIG");
    c
}

fn dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("oauth-shim-operator-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Kills the child when dropped, so a failing assertion leaves no process behind.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
    let child = Child(
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
    let mut up = false;
    for _ in 0..200 {
        if probe(true).status.success() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "serve did not become ready: {}", std::fs::read_to_string(&log).unwrap_or_default());
    assert!(probe(false).status.success());
    drop(child);
    let out = std::fs::read_to_string(&log).unwrap();
    let warnings: Vec<_> = out.lines().filter(|l| l.contains("ignored environment variables")).collect();
    assert_eq!(warnings.len(), 1, "{out}");
    assert!(warnings[0].contains("OAUTH_SHIM_SERVICE_HOST") && !warnings[0].contains("10.96.0.12"));
}

/// A harness running on the config file at `path`, reloads reading it.
async fn from_file(standin: Standin, path: &std::path::Path) -> Harness {
    let h = Harness::with_config(standin, Config::load(path).unwrap()).await;
    h.app.state().ops.reload.set_source(path.to_path_buf());
    h
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
    let standin = Standin::start(standin_config(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let d = dir("token");
    let (secret, token) = (d.join("secret"), d.join("admin-token"));
    std::fs::write(&secret, SECRET).unwrap();
    std::fs::write(&token, "admin-canary-token\n").unwrap();
    let path = d.join("shim.toml");
    let extra = format!("[admin]\ntoken_file = \"{}\"", token.display());
    std::fs::write(&path, config_text(&standin, &secret, &extra)).unwrap();
    let h = from_file(standin, &path).await;
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
    let standin = Standin::start(standin_config(), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let d = dir("rotate");
    let secret = d.join("secret");
    std::fs::write(&secret, "old-canary-secret\n").unwrap();
    let path = d.join("shim.toml");
    std::fs::write(&path, config_text(&standin, &secret, "[reload]\nwatch_interval = \"50ms\"")).unwrap();
    let h = from_file(standin, &path).await;
    oauth_shim::admin::reload::spawn_watcher(h.app.clone());
    let password = h.url(&format!(
        "/oauth/access_token?grant_type=password&user_id=demo%40example.com&password=demo-password&client_id={ID}"
    ));
    assert_eq!(
        http().get(&password).send().await.unwrap().status(),
        401,
        "the stand-in wants the new secret"
    );

    // Rotate as a Secret volume does: the file's content changes, the config file does not.
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let mut reloaded = None;
    for _ in 0..500 {
        let status = h.app.state().ops.reload.status();
        if status.generation == 2 {
            reloaded = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = reloaded.expect("the watcher reloads on a changed secret file");
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
    let shared = crate::cli::embedded_toml(
        &std::fs::read_to_string(format!("{root}/deploy/shared-service/configmap.yaml")).unwrap(),
    )
    .replace("/run/secrets/oauth-shim", secrets.to_str().unwrap())
    // No Redis here: the replica serves degraded, as it would during an outage.
    .replace("redis://oauth-shim-redis:6379/0", "redis://127.0.0.1:1/0");
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
        let _child = Child(serve.spawn().unwrap());
        let exec = |args: &[&str]| {
            let mut c = bin();
            c.args(args).arg("--config").arg(&path);
            pod(&mut c);
            c.output().unwrap()
        };
        let mut up = false;
        for _ in 0..400 {
            if exec(&["healthcheck", "--ready"]).status.success() {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
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
    }
}
