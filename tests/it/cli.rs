//! The binary: config errors exit 64 with one line that names the client and never the secret;
//! `check-config` prints the effective config with secrets redacted; the shipped config loads.

use std::process::Command;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_oauth-shim"));
    c.env_remove("OAUTH_SHIM_CONFIG");
    c
}

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("oauth-shim-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("shim.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn bad_config_exits_64_with_one_line_and_no_secret() {
    for (name, toml, needle) in [
        ("nosecret", "[[clients]]\nid = \"acme\"\n", "client \"acme\": no secret"),
        (
            "dup",
            "[[clients]]\nid = \"acme\"\nsecret = \"canary-dup-secret\"\n[[clients]]\nid = \"acme\"\nsecret = \"canary-dup-secret\"\n",
            "configured twice",
        ),
        (
            "http",
            "[upstream]\ntoken_url = \"http://example.com/token\"\n[[clients]]\nid = \"a\"\nsecret = \"canary-dup-secret\"\n",
            "plain http",
        ),
        ("badurl", "[upstream]\napi_base = \"::nope\"\n", "api_base"),
        (
            "env",
            "[[clients]]\nid = \"acme\"\nsecret_env = \"OAUTH_SHIM_TEST_UNSET_VAR\"\n",
            "OAUTH_SHIM_TEST_UNSET_VAR",
        ),
    ] {
        let path = write(name, toml);
        for sub in ["serve", "check-config"] {
            let out = bin().args([sub, "--config"]).arg(&path).output().unwrap();
            assert_eq!(out.status.code(), Some(64), "{name} {sub}");
            let err = String::from_utf8(out.stderr).unwrap();
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(err.contains(needle), "{err}");
            assert!(!err.contains("canary-dup-secret"));
        }
    }
    let out = bin().args(["serve", "--config", "/nonexistent/oauth-shim.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn check_config_redacts_and_applies_env() {
    let path = write("ok", "[[clients]]\nid = \"acme\"\nsecret_env = \"ACME_SECRET\"\n");
    let out = bin()
        .args(["check-config", "--config"])
        .arg(&path)
        .env("ACME_SECRET", "canary-env-secret")
        .env("OAUTH_SHIM_UPSTREAM__REQUEST_TIMEOUT", "3s")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("request_timeout = \"3s\""), "{text}");
    assert!(text.contains("secret = \"[redacted]\""), "{text}");
    assert!(!text.contains("canary-env-secret"));
}

#[test]
fn shipped_config_is_valid_and_config_path_comes_from_env() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config/oauth-shim.toml");
    let out = bin().arg("check-config").env("OAUTH_SHIM_CONFIG", shipped).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `oauth-shim serve` as an operator runs it, against an RFC 6749 server that accepts
/// client_secret_basic (the stand-in): the three legacy grants come back in the legacy shape.
#[tokio::test]
async fn serve_binary_answers_legacy_grants() {
    use oauth_shim::standin::{Standin, StandinClient, StandinConfig};
    let standin = Standin::start(
        StandinConfig {
            clients: vec![StandinClient {
                id: "acme".into(),
                secret: "acme-secret".into(),
                allow_password_grant: true,
            }],
            ..StandinConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let path = write(
        "serve",
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[admin]\nenabled = false\n[upstream]\ntoken_url = \"{}\"\n\
             authorize_url = \"{}\"\napi_base = \"{}\"\n[[clients]]\nid = \"acme\"\nsecret_env = \"ACME_SECRET\"\n\
             allow_password_grant = true\n",
            standin.token_url(),
            standin.authorize_url(),
            standin.api_base()
        ),
    );
    let mut child = bin()
        .args(["serve", "--config"])
        .arg(&path)
        .env("ACME_SECRET", "acme-secret")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}/oauth/access_token");
    let client = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..200 {
        if client.get(&base).send().await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(ready, "oauth-shim serve did not start listening");

    let get = |q: String| {
        let client = client.clone();
        let url = format!("{base}?{q}");
        async move { client.get(url).send().await.unwrap().json::<serde_json::Value>().await.unwrap() }
    };
    let pw =
        get("grant_type=password&user_id=demo%40example.com&password=demo-password&client_id=acme".into())
            .await;
    let code = standin.issue_code("acme", None);
    let cg = get(format!("grant_type=authorization_code&code={code}&client_id=acme")).await;
    let rt = cg["refresh_token"].as_str().unwrap().to_owned();
    let rf = get(format!("grant_type=refresh_token&refresh_token={rt}&client_id=acme")).await;
    let _ = child.kill();
    let _ = child.wait();
    for body in [pw, cg, rf] {
        assert!(body["expires_in"].is_string(), "{body}");
        assert_eq!(body["platform"], "GLOBAL");
        assert_eq!(body["version"], "2");
        assert!(standin.is_access_token_valid(body["access_token"].as_str().unwrap()));
    }
}
