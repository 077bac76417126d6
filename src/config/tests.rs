//! Unit tests of loading, environment overrides and validation, run in `figment::Jail`s.

use super::*;
use std::time::Duration;

use figment::Jail;

fn load_in_jail(jail: &Jail) -> Result<Config, ConfigError> {
    Config::load(&jail.directory().join("shim.toml"))
}

#[test]
fn file_then_env_override() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "shim.toml",
            r#"
            [upstream]
            token_url = "http://127.0.0.1:9/oauth/v2/token"
            connect_timeout = "500ms"
            [[clients]]
            id = "k1"
            secret_env = "K1_SECRET"
            "#,
        )?;
        jail.set_env("K1_SECRET", "s3cret");
        jail.set_env("OAUTH_SHIM_UPSTREAM__REQUEST_TIMEOUT", "3s");
        jail.set_env("OAUTH_SHIM_CONFIG", "ignored-here");
        let c = load_in_jail(jail).expect("valid");
        assert_eq!(c.upstream.token_url, "http://127.0.0.1:9/oauth/v2/token");
        assert_eq!(c.upstream.connect_timeout, Duration::from_millis(500));
        assert_eq!(c.upstream.request_timeout, Duration::from_secs(3));
        assert_eq!(c.clients[0].secret().expose(), "s3cret");
        assert_eq!(c.clients[0].mode, ClientMode::Rewrite);
        Ok(())
    });
}

fn expect_error(toml: &str, needle: &str) {
    Jail::expect_with(|jail| {
        jail.create_file("shim.toml", toml)?;
        jail.set_env("EMPTY_SECRET", "");
        let err = load_in_jail(jail).expect_err("must be invalid").to_string();
        assert!(err.contains(needle), "{err:?} should contain {needle:?}");
        assert!(!err.contains("hunter2"), "secret leaked: {err}");
        Ok(())
    });
}

#[test]
fn invalid_configs_fail_closed_naming_the_client() {
    expect_error("[[clients]]\nid = \"a\"\n", "client \"a\": no secret");
    expect_error("[[clients]]\nid = \"a\"\nsecret = \"\"\n", "client \"a\": secret is empty");
    expect_error("[[clients]]\nid = \"a\"\nsecret_env = \"EMPTY_SECRET\"\n", "secret is empty");
    expect_error("[[clients]]\nid = \"a\"\nsecret_env = \"NOPE_NOT_SET\"\n", "NOPE_NOT_SET is not set");
    expect_error(
        "[[clients]]\nid = \"a\"\nsecret = \"hunter2\"\n[[clients]]\nid = \"a\"\nsecret = \"hunter2\"\n",
        "client \"a\" is configured twice",
    );
    expect_error("[upstream]\ntoken_url = \"not a url\"\n", "upstream.token_url");
    expect_error("[upstream]\napi_base = \"http://example.com\"\n", "plain http");
    expect_error("[[clients]]\nid = \"a\"\nsecret = 5\n", "invalid");
    expect_error("[[clients]]\nid = \"a\"\nsecret = \"hunter2\"\nmode = \"bogus\"\n", "invalid");
    expect_error("[server]\nlisten_typo = 1\n", "listen_typo");
    expect_error("[legacy]\ndefault_expires_in = \"0s\"\n", "legacy.default_expires_in");
    expect_error("[legacy]\ndefault_expires_in = \"999ms\"\n", "legacy.default_expires_in");
    expect_error("[legacy]\ndefault_expires_in = \"3651days\"\n", "legacy.default_expires_in");
}

#[test]
fn state_backend_redis_is_validated() {
    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    Jail::expect_with(|jail| {
        jail.create_file("state.key", &format!("{KEY}\n"))?;
        jail.set_env("REDIS_PW", "hunter2");
        let base = "[state]\nbackend = \"redis\"\nencryption_key_file = \"state.key\"\n";
        let cases = [
            ("", "state.url is required"),
            ("url = \"http://127.0.0.1\"\n", "redis:// or rediss://"),
            ("url = \"redis://:hunter2@127.0.0.1\"\n", "must not contain a password"),
            ("url = \"redis://127.0.0.1\"\ncommand_timeout = \"0s\"\n", "state.command_timeout"),
            ("url = \"redis://127.0.0.1\"\nca_file = \"state.key\"\n", "needs a rediss:// url"),
            ("url = \"rediss://127.0.0.1\"\nca_file = \"state.key\"\n", "no PEM certificate"),
            ("url = \"redis://127.0.0.1\"\npassword_env = \"NOPE\"\n", "NOPE is not set"),
        ];
        for (extra, needle) in cases {
            jail.create_file("shim.toml", &format!("{base}{extra}"))?;
            let err = load_in_jail(jail).expect_err(needle).to_string();
            assert!(err.contains(needle), "{err:?} should contain {needle:?}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        jail.create_file("shim.toml", "[state]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1\"\n")?;
        let err = load_in_jail(jail).expect_err("no key").to_string();
        assert!(err.contains("encryption_key_env or state.encryption_key_file"), "{err}");
        jail.create_file("bad.key", "hunter2-not-a-key")?;
        jail.create_file("shim.toml", "[state]\nencryption_key_file = \"bad.key\"\n")?;
        let err = load_in_jail(jail).expect_err("bad key").to_string();
        assert!(err.contains("key 1 is not 32 bytes"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");

        jail.create_file(
            "shim.toml",
            &format!("{base}url = \"redis://127.0.0.1:6390/2\"\npassword_env = \"REDIS_PW\"\n"),
        )?;
        jail.set_env("OAUTH_SHIM_STATE__KEY_PREFIX", "team-a:");
        let c = load_in_jail(jail).expect("valid");
        assert_eq!(c.state.backend, StateBackend::Redis);
        assert_eq!(c.state.password.as_ref().unwrap().expose(), "hunter2");
        assert_eq!(c.state.key_prefix, "team-a:");
        assert_eq!(c.state.key_set().unwrap().unwrap().len(), 1);
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{c:?}").contains(KEY));
        Ok(())
    });
}

#[test]
fn secret_file_is_trimmed() {
    Jail::expect_with(|jail| {
        jail.create_file("secret.txt", "from-file\n")?;
        jail.create_file("shim.toml", "[[clients]]\nid = \"f\"\nsecret_file = \"secret.txt\"\n")?;
        let c = load_in_jail(jail).expect("valid");
        assert_eq!(c.clients[0].secret().expose(), "from-file");
        Ok(())
    });
}

#[test]
fn env_vars_naming_no_key_are_ignored_with_one_warning() {
    Jail::expect_with(|jail| {
        jail.create_file("shim.toml", "[[clients]]\nid = \"a\"\nsecret = \"x\"\n")?;
        // What Kubernetes service links inject for a Service named oauth-shim.
        jail.set_env("OAUTH_SHIM_PORT", "tcp://10.96.0.12:8080");
        jail.set_env("OAUTH_SHIM_PORT_8080_TCP_ADDR", "10.96.0.12");
        jail.set_env("OAUTH_SHIM_SERVICE_HOST", "10.96.0.12");
        jail.set_env("OAUTH_SHIM_SERVER__MAX_CONNECTIONS", "7");
        let c = load_in_jail(jail).expect("service-link variables are not fatal");
        assert_eq!(c.server.max_connections, 7, "known keys still apply");
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        let w = &c.warnings[0];
        for name in ["OAUTH_SHIM_PORT", "OAUTH_SHIM_PORT_8080_TCP_ADDR", "OAUTH_SHIM_SERVICE_HOST"] {
            assert!(w.contains(name), "{w}");
        }
        assert!(!w.contains("10.96.0.12"), "values are not repeated: {w}");
        assert!(!w.contains("MAX_CONNECTIONS"), "{w}");
        Ok(())
    });
}

#[test]
fn a_typo_in_the_file_stays_fatal_with_env_noise_around() {
    Jail::expect_with(|jail| {
        jail.create_file("shim.toml", "[server]\nmax_conections = 5\n")?;
        jail.set_env("OAUTH_SHIM_SERVICE_HOST", "10.96.0.12");
        let err = load_in_jail(jail).expect_err("file typo").to_string();
        assert!(err.contains("max_conections"), "{err}");
        Ok(())
    });
}

#[test]
fn lists_can_be_set_from_the_environment() {
    Jail::expect_with(|jail| {
        jail.create_file("shim.toml", "[[clients]]\nid = \"file\"\nsecret = \"x\"\n")?;
        jail.set_env("K_SECRET", "from-env");
        jail.set_env(
            "OAUTH_SHIM_CLIENTS",
            r#"[{id = "env-a", secret_env = "K_SECRET", mode = "deny"}, {id = "env-b", secret_env = "K_SECRET", redirect_uri_allow = ["https://a.example/cb", "https://b.example/cb"]}]"#,
        );
        let c = load_in_jail(jail).expect("valid");
        let ids: Vec<_> = c.clients.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["env-a", "env-b"], "the environment's list replaces the file's");
        assert_eq!(c.clients[0].mode, ClientMode::Deny);
        assert_eq!(c.clients[1].redirect_uri_allow, ["https://a.example/cb", "https://b.example/cb"]);
        assert_eq!(c.clients[1].secret().expose(), "from-env");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        Ok(())
    });
}

#[test]
fn log_level_must_name_a_level() {
    for bad in ["verbose", "", "oauth_shim", "info,hyper", "warn,oauth_shim=loud"] {
        let toml = format!("[log]\nlevel = {bad:?}\n");
        expect_error(&toml, "log.level");
    }
    for good in ["info", "WARN", "off", "info,hyper=warn", "oauth_shim::access=debug,warn"] {
        Jail::expect_with(|jail| {
            jail.create_file("shim.toml", &format!("[log]\nlevel = {good:?}\n"))?;
            load_in_jail(jail).unwrap_or_else(|e| panic!("{good}: {e}"));
            Ok(())
        });
    }
}

#[test]
fn zero_clients_is_a_warning() {
    Jail::expect_with(|jail| {
        jail.create_file("shim.toml", "")?;
        let c = load_in_jail(jail).expect("valid");
        assert!(c.warnings.iter().any(|w| w.contains("no [[clients]]")), "{:?}", c.warnings);
        Ok(())
    });
}

#[test]
fn printed_config_loads_again() {
    Jail::expect_with(|jail| {
        jail.create_file("secret.txt", "file-secret\n")?;
        jail.set_env("E_SECRET", "env-secret");
        jail.create_file(
            "shim.toml",
            "[[clients]]\nid = \"env\"\nsecret_env = \"E_SECRET\"\n\
             [[clients]]\nid = \"file\"\nsecret_file = \"secret.txt\"\n\
             [[clients]]\nid = \"inline\"\nsecret = \"hunter2\"\n",
        )?;
        let c = load_in_jail(jail).expect("valid");
        let printed = toml::to_string_pretty(&c.printable()).unwrap();
        assert!(
            !printed.contains("hunter2")
                && !printed.contains("env-secret")
                && !printed.contains("file-secret")
        );
        jail.create_file("shim.toml", &printed)?;
        let again = load_in_jail(jail).expect("printed config loads");
        assert_eq!(again.clients[0].secret().expose(), "env-secret");
        assert_eq!(again.clients[1].secret().expose(), "file-secret");
        assert_eq!(again.clients.len(), 3);
        Ok(())
    });
}

#[test]
fn session_caps_have_defaults_and_refuse_zero() {
    Jail::expect_with(|jail| {
        jail.create_file("shim.toml", "[[clients]]\nid = \"a\"\nsecret = \"x\"\n")?;
        let c = load_in_jail(jail).expect("valid");
        assert_eq!(c.continuity.max_sessions, 1_000_000);
        assert_eq!(c.continuity.max_sessions_per_client, 250_000);
        assert_eq!(c.continuity.max_sessions_per_user, 1_000);
        for key in ["max_sessions", "max_sessions_per_client", "max_sessions_per_user"] {
            jail.create_file("shim.toml", &format!("[continuity]\n{key} = 0\n"))?;
            let err = load_in_jail(jail).expect_err("a cap of 0").to_string();
            assert!(err.contains(&format!("continuity.{key} must be greater than 0")), "{err}");
        }
        jail.set_env("OAUTH_SHIM_CONTINUITY__MAX_SESSIONS_PER_USER", "3");
        jail.create_file("shim.toml", "")?;
        assert_eq!(load_in_jail(jail).expect("valid").continuity.max_sessions_per_user, 3);
        Ok(())
    });
}
#[test]
fn admin_allowed_hosts_are_names_without_port() {
    for bad in ["https://admin.example", "admin.example:9901", "admin.example/x", "", "a b", "[::1", "[nope]"]
    {
        expect_error(&format!("[admin]\nallowed_hosts = [{bad:?}]\n"), "admin.allowed_hosts");
    }
    Jail::expect_with(|jail| {
        jail.create_file(
            "shim.toml",
            "[admin]\nallowed_hosts = [\"Admin.Example.\", \"10.0.0.7\", \"[::1]\"]\n",
        )?;
        let c = load_in_jail(jail).expect("valid");
        assert_eq!(c.admin.allowed_hosts, ["admin.example", "10.0.0.7", "[::1]"]);
        assert!(!c.admin.allow_unauthenticated_remote, "off by default");
        Ok(())
    });
}

#[test]
fn an_admin_listener_beyond_loopback_without_a_token_is_warned_about() {
    let warnings = |toml: &str| {
        let mut out = Vec::new();
        Jail::expect_with(|jail| {
            jail.create_file("admin-token", "t0ken\n")?;
            jail.create_file("shim.toml", &format!("[[clients]]\nid = \"a\"\nsecret = \"x\"\n{toml}"))?;
            out = load_in_jail(jail).expect("valid").warnings;
            Ok(())
        });
        out
    };
    assert!(warnings("").is_empty(), "loopback by default");
    assert!(warnings("[admin]\nlisten = \"[::1]:9901\"\n").is_empty());
    assert!(warnings("[admin]\nlisten = \"0.0.0.0:9901\"\nenabled = false\n").is_empty());
    assert!(warnings("[admin]\nlisten = \"0.0.0.0:9901\"\ntoken_file = \"admin-token\"\n").is_empty());
    let closed = warnings("[admin]\nlisten = \"0.0.0.0:9901\"\n");
    assert!(closed.len() == 1 && closed[0].contains("answer 403"), "{closed:?}");
    let open = warnings("[admin]\nlisten = \"10.0.0.7:9901\"\nallow_unauthenticated_remote = true\n");
    assert!(open.len() == 1 && open[0].contains("without a token"), "{open:?}");
}
