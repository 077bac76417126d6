//! Unit tests of loading, environment overrides and validation, run in `figment::Jail`s.

use super::*;
use std::time::Duration;

use figment::Jail;

fn load_in_jail(jail: &Jail) -> Result<ValidConfig, ConfigError> {
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
        assert_eq!(c.provider.token_url.as_deref(), Some("http://127.0.0.1:9/oauth/v2/token"));
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
            out = load_in_jail(jail).expect("valid").into_inner().warnings;
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

pub(super) fn load_toml(toml: &str) -> Result<ValidConfig, ConfigError> {
    let mut out = None;
    Jail::expect_with(|jail| {
        jail.create_file("shim.toml", toml)?;
        out = Some(load_in_jail(jail));
        Ok(())
    });
    out.expect("the jail ran")
}

pub(super) const CLIENT: &str = "[[clients]]\nid = \"a\"\nsecret = \"x\"\n";

/// The default provider's keys, as `[upstream]` held them and as `[provider]` holds them.
const PROVIDER_KEYS: &str = r#"
token_url = "http://127.0.0.1:9/token"
authorize_url = "http://127.0.0.1:9/authorize"
api_base = "http://127.0.0.1:9"
basic_auth_encoding = "raw"
client_auth = "client_secret_post"
[TABLE.legacy_fields]
url = "http://127.0.0.1:9/me"
email = "/email"
"#;

#[test]
fn the_default_provider_in_upstream_loads_as_in_provider_with_one_deprecation_warning() {
    let old = load_toml(&format!(
        "{CLIENT}[upstream]\nconnect_timeout = \"700ms\"\n{}",
        PROVIDER_KEYS.replace("TABLE", "upstream")
    ))
    .expect("the old shape loads");
    let new = load_toml(&format!(
        "{CLIENT}[upstream]\nconnect_timeout = \"700ms\"\n[provider]\n{}",
        PROVIDER_KEYS.replace("TABLE", "provider")
    ))
    .expect("the new shape loads");
    let print = |c: &ValidConfig| toml::to_string(&c.printable()).unwrap();
    assert_eq!(print(&old), print(&new));
    assert_eq!(old.provider.client_auth, ClientAuth::ClientSecretPost);
    assert_eq!(old.provider.legacy_fields.as_ref().map(|l| l.url.as_str()), Some("http://127.0.0.1:9/me"));
    assert_eq!(old.upstream.connect_timeout, Duration::from_millis(700));
    let deprecated: Vec<_> = old.warnings.iter().filter(|w| w.contains("deprecated")).collect();
    assert_eq!(
        deprecated,
        [
            "[upstream] token_url, authorize_url, api_base, legacy_fields, basic_auth_encoding, client_auth are deprecated: the default provider's keys belong in [provider] (the same keys as a [[providers]] entry); move them there"
        ]
    );
    assert!(!new.warnings.iter().any(|w| w.contains("deprecated")), "{:?}", new.warnings);
    // Validating the loaded config again neither moves nor warns twice.
    let again = old.into_inner().validated().unwrap();
    assert_eq!(again.warnings.iter().filter(|w| w.contains("deprecated")).count(), 1);
    assert_eq!(print(&again), print(&new));
}

#[test]
fn a_default_provider_key_in_both_tables_is_refused() {
    let both = |key: &str, value: &str| {
        load_toml(&format!("{CLIENT}[upstream]\n{key} = {value}\n[provider]\n{key} = {value}\n"))
            .expect_err("set twice")
            .to_string()
    };
    let err = both("token_url", "\"http://127.0.0.1:9/t\"");
    assert!(err.contains("upstream.token_url and provider.token_url are both set"), "{err}");
    // A bad URL under the old name is reported under the name the file uses.
    let err = load_toml("[upstream]\napi_base = \"ftp://x\"\n").expect_err("bad").to_string();
    assert!(err.contains("upstream.api_base"), "{err}");
}

#[test]
fn every_key_of_a_providers_entry_is_accepted_by_the_default_provider_but_name_and_hosts() {
    let full = ProviderConfig {
        name: "other".into(),
        preset: Some(Preset::GotoIdentity),
        hosts: vec!["other.example".into()],
        token_url: Some("http://127.0.0.1:9/token".into()),
        authorize_url: Some("http://127.0.0.1:9/authorize".into()),
        api_base: Some("http://127.0.0.1:9".into()),
        client_auth: ClientAuth::ClientSecretPost,
        basic_auth_encoding: crate::oauth::BasicAuthEncoding::Raw,
        legacy_fields: Some(LegacyFieldsConfig {
            url: "http://127.0.0.1:9/me".into(),
            email: Some("/email".into()),
            ..LegacyFieldsConfig::default()
        }),
        when_unavailable: Some(super::WhenUnavailable::Refuse),
    };
    let toml::Value::Table(mut table) = toml::Value::try_from(&full).unwrap() else { unreachable!() };
    // A document with `table` as `[provider]` or as the one `[[providers]]` entry.
    let doc = |key: &str, table: toml::Table| {
        let value = if key == "providers" { toml::Value::Array(vec![table.into()]) } else { table.into() };
        format!("{CLIENT}{}", toml::to_string(&toml::Table::from_iter([(key.to_owned(), value)])).unwrap())
    };
    load_toml(&doc("providers", table.clone())).expect("a full [[providers]] entry loads");
    // The same keys but the two that say which hosts select a provider.
    let name = table.remove("name").unwrap();
    let hosts = table.remove("hosts").unwrap();
    let keys: Vec<_> = table.keys().cloned().collect();
    assert_eq!(
        keys,
        [
            "api_base",
            "authorize_url",
            "basic_auth_encoding",
            "client_auth",
            "legacy_fields",
            "preset",
            "token_url",
            "when_unavailable"
        ]
    );
    let c = load_toml(&doc("provider", table.clone())).expect("loads as the default");
    assert_eq!(
        toml::Value::try_from(&c.provider).unwrap(),
        toml::Value::try_from(ProviderConfig { name: String::new(), hosts: Vec::new(), ..full }).unwrap()
    );
    // The default provider serves every host no other lists, under the name "default".
    for (key, value, needle) in [("name", name, "provider.name"), ("hosts", hosts, "provider.hosts")] {
        let mut t = table.clone();
        t.insert(key.into(), value);
        let err = load_toml(&doc("provider", t)).expect_err(key).to_string();
        assert!(err.contains(needle), "{err}");
    }
}

#[test]
fn the_default_provider_takes_a_preset_and_defaults_to_gotos_endpoints() {
    let c = load_toml(CLIENT).unwrap();
    assert_eq!(c.provider.urls(), Preset::Goto.urls());
    let c = load_toml(&format!("{CLIENT}[provider]\npreset = \"goto-identity\"\n")).unwrap();
    assert_eq!(c.provider.urls(), Preset::GotoIdentity.urls());
}

#[test]
fn tls_sections_have_defaults_and_refuse_incomplete_or_zero_limits() {
    Jail::expect_with(|jail| {
        let pair = "cert_file = \"tls.crt\"\nkey_file = \"tls.key\"\n";
        jail.create_file("shim.toml", &format!("[server.tls]\n{pair}[admin.tls]\n{pair}"))?;
        let c = load_in_jail(jail).expect("valid: the files are read by the listener, not here");
        let tls = c.server.tls.clone().expect("[server.tls]");
        assert_eq!(tls.handshake_timeout, std::time::Duration::from_secs(10));
        assert_eq!(tls.max_handshakes, 256);
        assert_eq!(tls.client_auth, crate::config::ClientCertPolicy::Required);
        assert!(c.admin.tls.is_some());
        for (section, body, why) in [
            ("server.tls", "key_file = \"k\"\n".to_owned(), "server.tls: set both cert_file and key_file"),
            ("admin.tls", "cert_file = \"c\"\n".to_owned(), "admin.tls: set both cert_file and key_file"),
            (
                "server.tls",
                format!("{pair}max_handshakes = 0\n"),
                "server.tls.max_handshakes must be at least 1",
            ),
            (
                "server.tls",
                format!("{pair}handshake_timeout = \"0s\"\n"),
                "server.tls.handshake_timeout must be more than 0",
            ),
            ("server.tls", format!("{pair}client_auth = \"sometimes\"\n"), "client_auth"),
        ] {
            jail.create_file("shim.toml", &format!("[{section}]\n{body}"))?;
            let err = load_in_jail(jail).expect_err(why).to_string();
            assert!(err.contains(why), "{err}");
        }
        Ok(())
    });
}

#[test]
fn the_outage_policy_is_refuse_unless_a_goto_preset_or_the_config_says_local() {
    use super::WhenUnavailable::{Local, Refuse};
    let policy = |toml: &str| {
        let c = load_toml(&format!("{CLIENT}{toml}")).unwrap();
        let mut out = vec![c.when_unavailable(&c.provider)];
        out.extend(c.providers.iter().map(|p| c.when_unavailable(p)));
        out
    };
    let other = "[[providers]]\nname = \"o\"\nhosts = [\"o.example\"]\ntoken_url = \"http://127.0.0.1:9/t\"\nauthorize_url = \"http://127.0.0.1:9/a\"\napi_base = \"http://127.0.0.1:9\"\n";
    // URLs alone (the default provider's implicit preset included): assumed to rotate.
    assert_eq!(policy(""), [Refuse]);
    assert_eq!(
        policy(&format!("[provider]{}{other}", PROVIDER_KEYS.replace("TABLE", "provider"))),
        [Refuse, Refuse]
    );
    // A GoTo preset: GoTo's refresh tokens do not rotate.
    assert_eq!(policy("[provider]\npreset = \"goto\"\n"), [Local]);
    assert_eq!(policy("[provider]\npreset = \"goto-identity\"\n"), [Local]);
    // [state] sets it for every provider that sets none; a provider's own wins.
    let state = "[state]\nwhen_unavailable = \"refuse\"\n";
    assert_eq!(policy(&format!("{state}[provider]\npreset = \"goto\"\n")), [Refuse]);
    let state = "[state]\nwhen_unavailable = \"local\"\nfailover_wait = \"0s\"\n";
    assert_eq!(policy(&format!("{state}{other}when_unavailable = \"refuse\"\n")), [Local, Refuse]);
    assert!(load_toml(&format!("{CLIENT}[state]\nwhen_unavailable = \"fallback\"\n")).is_err());
}
