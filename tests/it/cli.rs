//! The binary: config errors exit 64 with one line that names the client and never the secret;
//! `check-config` prints the effective config with secrets redacted; the shipped config loads.

use crate::support::{ShimProcess, bin, client, fetch_url, free_port, poll_until, temp_dir};

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let path = temp_dir(&format!("cli-{name}")).join("shim.toml");
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
    assert!(text.contains("secret_env = \"ACME_SECRET\""), "{text}");
    assert!(!text.contains("canary-env-secret"));
    // The output is a config: fed back in, it loads (the secret comes from its source again).
    let again = write("ok-again", &text);
    let out = bin().args(["check-config", "--config"]).arg(&again).env("ACME_SECRET", "x").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn check_config_warns_about_zero_clients_and_service_link_variables() {
    let path = write("empty", "[server]\nlisten = \"0.0.0.0:8080\"\n");
    let out = bin()
        .args(["check-config", "--config"])
        .arg(&path)
        .env("OAUTH_SHIM_PORT", "tcp://10.96.0.12:8080")
        .env("OAUTH_SHIM_SERVICE_HOST", "10.96.0.12")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("warning: no [[clients]] configured"), "{err}");
    assert!(err.contains("OAUTH_SHIM_PORT, OAUTH_SHIM_SERVICE_HOST"), "{err}");
    assert_eq!(err.lines().count(), 2, "one line per warning: {err}");
}

#[test]
fn a_mistyped_log_level_fails_check_config() {
    let path = write("verbose", "[log]\nlevel = \"verbose\"\n");
    let out = bin().args(["check-config", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("log.level \"verbose\""));
}

/// A port taken by someone else: the error names the listener, its key, the address and the
/// OS error, and the process exits without serving.
#[test]
fn bind_errors_name_the_listener_and_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    for (key, toml) in [
        ("server.listen", format!("[server]\nlisten = \"{addr}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n")),
        ("admin.listen", format!("[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"{addr}\"\n")),
    ] {
        let path = write(&format!("bind-{key}"), &toml);
        let out = bin().args(["serve", "--config"]).arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8(out.stderr).unwrap();
        let which = if key == "server.listen" { "proxy" } else { "admin" };
        assert!(err.contains(&format!("cannot bind the {which} listener ({key}) on {addr}")), "{err}");
        assert!(err.contains("in use"), "the OS error: {err}");
    }
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
    use oauth_shim::devtools::standin::{StandinClient, StandinConfig};
    let standin = crate::support::start_standin(StandinConfig {
        clients: vec![StandinClient {
            id: "acme".into(),
            secret: "acme-secret".into(),
            allow_password_grant: true,
        }],
        ..StandinConfig::default()
    })
    .await;
    let port = free_port();
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
    let client = client();
    let ready = poll_until(async || client.get(&base).send().await.is_ok()).await;
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

/// The operator's loop against a real process: `serve` from a file, legacy calls, `report`,
/// a mode flip by editing the file and sending SIGHUP, a refused `reload`, an unreachable admin.
#[tokio::test]
async fn serve_report_sighup_and_reload_as_an_operator_runs_them() {
    let standin = crate::support::start_standin(crate::support::standin_config()).await;
    let file = |mode: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n\
             [reload]\nwatch = false\n[upstream]\ntoken_url = \"{}\"\nauthorize_url = \"{}\"\napi_base = \"{}\"\n\
             [[clients]]\nid = \"{}\"\nsecret_env = \"OPS_CLI_SECRET\"\nallow_password_grant = true\nmode = \"{mode}\"\n",
            standin.token_url(),
            standin.authorize_url(),
            standin.api_base(),
            crate::support::ID,
        )
    };
    let path = write("serve-ops", &file("rewrite"));
    let mut shim =
        ShimProcess::serve(&path, &[("OPS_CLI_SECRET", crate::support::SECRET), ("RUST_LOG", "info")]).await;
    let (proxy, admin) = (shim.proxy.to_string(), format!("http://{}", shim.admin));
    let call = format!(
        "http://{proxy}/oauth/access_token?grant_type=password&user_id=demo%40example.com&password=demo-password&client_id={}",
        crate::support::ID
    );
    for _ in 0..2 {
        assert_eq!(fetch_url(&call).await.unwrap().status(), 200);
    }

    let run = |args: &[&str]| {
        let out = bin().args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, table, _) = run(&["report", "--admin", &admin]);
    assert_eq!(code, Some(0));
    let row = table.lines().find(|l| l.starts_with(crate::support::ID)).expect("a row per client");
    // CLIENT MODE CALLS GET JSON FORM PASSWD
    assert!(
        row.split_whitespace().take(7).eq([crate::support::ID, "rewrite", "2", "2", "0", "0", "2"]),
        "{table}"
    );
    let (code, json, _) = run(&["report", "--json", "--admin", &admin]);
    assert_eq!(code, Some(0));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["clients"][0]["features"]["token_get"]["count"], 2);

    // Flip the client to deny by editing the file; SIGHUP applies it.
    std::fs::write(&path, file("deny")).unwrap();
    shim.signal("HUP");
    let denied = poll_until(async || fetch_url(&call).await.unwrap().status() == 400).await;
    assert!(denied, "SIGHUP reloaded the edited file");

    // An invalid file is refused by `oauth-shim reload` (exit 1) and the old config stays.
    std::fs::write(&path, file("bogus")).unwrap();
    let (code, _, err) = run(&["reload", "--admin", &admin]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("reload refused") && err.contains("mode"), "{err}");
    assert_eq!(fetch_url(&call).await.unwrap().status(), 400);
    std::fs::write(&path, file("rewrite")).unwrap();
    let (code, out, err) = run(&["reload", "--admin", &admin]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("\"generation\": 3"), "{out}");
    assert_eq!(fetch_url(&call).await.unwrap().status(), 200);

    // No admin listener there: 69.
    let (code, _, _) = run(&["report", "--admin", "http://127.0.0.1:1"]);
    assert_eq!(code, Some(69));

    shim.kill().await;
    let logs = shim.log();
    assert!(logs.contains("config reload failed"), "{logs}");
    assert!(!logs.contains(crate::support::SECRET) && !logs.contains("demo-password"));
}

/// The TOML embedded in a manifest's ConfigMap: the block under `oauth-shim.toml: |`, de-indented.
pub fn embedded_toml(manifest: &str) -> String {
    manifest
        .lines()
        .skip_while(|l| !l.contains("oauth-shim.toml: |"))
        .skip(1)
        .take_while(|l| !l.starts_with("---"))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect()
}

/// The deployment examples' configs are valid as shipped (secrets supplied as they would be):
/// the plain-file shared service, the ConfigMaps of both Kubernetes examples, and several
/// providers (GoTo on both hosts, WebinarGeek and VideoAsk).
#[test]
fn example_configs_are_valid() {
    let root = env!("CARGO_MANIFEST_DIR");
    let secret = write("example-secret", "crm-secret\n");
    let shared = std::fs::read_to_string(format!("{root}/config/examples/shared-service.toml"))
        .unwrap()
        .replace("/run/secrets/goto-crm-bridge", secret.to_str().unwrap());
    let sidecar = embedded_toml(&std::fs::read_to_string(format!("{root}/deploy/sidecar.yaml")).unwrap());
    // The shared service's secrets are files of a mounted Secret.
    let secrets = secret.parent().unwrap().join("mounted");
    std::fs::create_dir_all(&secrets).unwrap();
    for name in ["admin-token", "webinar-sync", "crm-bridge", "reporting", "redis-password"] {
        std::fs::write(secrets.join(name), format!("{name}-value\n")).unwrap();
    }
    let state_key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    std::fs::write(secrets.join("state-keys"), format!("{state_key}\n")).unwrap();
    let k8s_shared = embedded_toml(
        &std::fs::read_to_string(format!("{root}/deploy/shared-service/configmap.yaml")).unwrap(),
    )
    .replace("/run/secrets/oauth-shim", secrets.to_str().unwrap())
    .replace("/run/tls/oauth-shim", crate::support::mounted_tls_secret(1).0.to_str().unwrap());
    // Its commented-out Redis Cluster alternative, taken instead of the url.
    let k8s_cluster = k8s_shared
        .replace("url = \"redis://oauth-shim-redis:6379/0\"\n", "")
        .replace("# cluster_nodes = ", "cluster_nodes = ");
    assert!(k8s_cluster.contains("\ncluster_nodes = ") && !k8s_cluster.contains("\nurl = "));
    let providers = std::fs::read_to_string(format!("{root}/config/examples/providers.toml")).unwrap();
    for (name, text) in [
        ("shared", shared),
        ("sidecar", sidecar),
        ("k8s-shared", k8s_shared),
        ("k8s-shared-cluster", k8s_cluster),
        ("providers", providers),
    ] {
        assert!(text.contains("[[clients]]"), "{name}");
        let path = write(&format!("example-{name}"), &text);
        let out = bin()
            .args(["check-config", "--config"])
            .arg(&path)
            .env("GOTO_SECRET_WEBINAR_SYNC", "a")
            .env("GOTO_SECRET_REPORTING", "b")
            .env("GOTO_CLIENT_SECRET", "c")
            .env("ADMIN_TOKEN", "f")
            .env("GOTO_SECRET_MEETING_BRIDGE", "d")
            .env("VIDEOASK_RETIRED_SECRET", "e")
            .env("REDIS_PASSWORD", "d")
            .env("STATE_ENCRYPTION_KEYS", state_key)
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(
            out.stderr.is_empty(),
            "{name} loads without warnings: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if name == "providers" {
            // GoTo on both hosts, WebinarGeek and VideoAsk by URL; the preset filled its URLs.
            let effective = String::from_utf8_lossy(&out.stdout);
            for needle in [
                "token_url = \"https://api.getgo.com/oauth/v2/token\"",
                "token_url = \"https://authentication.logmeininc.com/oauth/token\"",
                "token_url = \"https://app.webinargeek.com/oauth/token\"",
                "token_url = \"https://app.videoask.com/oauth/token\"",
                "api_base = \"https://api.videoask.com\"",
            ] {
                assert!(effective.contains(needle), "{needle}: {effective}");
            }
        }
    }
}

/// Provider mistakes stop `check-config` (and `serve`) with exit 64 and one line naming them.
#[test]
fn provider_mistakes_fail_closed() {
    let base = "[[providers]]\nname = \"p\"\npreset = \"goto-identity\"\nhosts = [\"p.example\"]\n";
    for (toml, needle) in [
        (
            format!("{base}[[clients]]\nid = \"k\"\nsecret = \"s\"\nprovider = \"nope\"\n"),
            "provider \"nope\" is not configured",
        ),
        (format!("{base}{base}"), "provider \"p\" is configured twice"),
        (
            format!("{base}[[providers]]\nname = \"q\"\npreset = \"goto\"\nhosts = [\"P.example\"]\n"),
            "host \"p.example\" is listed by more than one provider",
        ),
        (
            format!(
                "{base}[[clients]]\nid = \"k\"\nsecret = \"s\"\nprovider = \"p\"\n[[clients]]\nid = \"k\"\nsecret = \"s\"\nprovider = \"p\"\n"
            ),
            "client \"k\" is configured twice for provider \"p\"",
        ),
        ("[[providers]]\nname = \"x\"\nhosts = [\"x\"]\n".into(), "token_url is required"),
        ("[[providers]]\nname = \"default\"\npreset = \"goto\"\nhosts = [\"x\"]\n".into(), "reserved"),
        (format!("{base}[providers.legacy_fields]\nurl = \"https://x/me\"\nemail = \"email\"\n"), "RFC 6901"),
    ] {
        let path = write("provider-mistake", &toml);
        let out = bin().args(["check-config", "--config"]).arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{toml}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle) && err.lines().count() == 1, "{needle}: {err}");
    }
    // The same id in two providers is fine.
    let ok = format!(
        "{base}[[clients]]\nid = \"k\"\nsecret = \"s\"\nprovider = \"p\"\n[[clients]]\nid = \"k\"\nsecret = \"s\"\n"
    );
    let out = bin().args(["check-config", "--config"]).arg(write("provider-ok", &ok)).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
