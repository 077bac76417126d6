//! Running it as a platform runs it: a pod's service-link variables do not stop it, the
//! `healthcheck` subcommand probes it, the admin token guards `/reload` and `/migration`, and a
//! rotated `secret_file` is picked up by the file watch and reported by client name only.

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
    h.app.shared().ops.reload.set_source(path.to_path_buf());
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
        let status = h.app.shared().ops.reload.status();
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
