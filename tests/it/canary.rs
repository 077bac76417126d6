//! Canaries: unique secrets, codes, tokens and passwords go through every path, and none of them
//! may appear in any log line (at TRACE) or in any error answer.

use oauth_shim::devtools::standin::{Fault, Standin, StandinClient, StandinConfig};
use serde_json::Value;

use crate::support::*;

const CLIENT_SECRET: &str = "canary-client-secret-9f1c";
const PASSWORD: &str = "canary-password-77ab";
const USER: &str = "canary-user@example.com";
const BAD_PASSWORD: &str = "canary-wrong-password-4410";
const CALLER_SECRET: &str = "canary-caller-secret-0d2e";
const FAKE_REFRESH: &str = "canary-refresh-token-5b6a";
const FAKE_CODE: &str = "canary-code-c0de";
const BEARER: &str = "canary-bearer-token-aa11";

/// The stand-in both canary tests use: client `canary` with the canary secret and user.
async fn canary_standin() -> Standin {
    start_standin(StandinConfig {
        clients: vec![StandinClient {
            id: "canary".into(),
            secret: CLIENT_SECRET.into(),
            allow_password_grant: true,
        }],
        users: vec![(USER.into(), PASSWORD.into())],
        ..StandinConfig::default()
    })
    .await
}

#[tokio::test]
async fn no_secret_token_code_or_password_in_logs_or_errors() {
    let logs = captured_logs();
    let standin = canary_standin().await;
    let mut config = shim_config(&standin, "");
    config.clients[0].id = "canary".into();
    config.clients[0].secret = Some(oauth_shim::oauth::Secret::new(CLIENT_SECRET));
    let h = Harness::with_config(standin, config).await;
    let token_url = h.url("/oauth/access_token");
    let user = USER.replace('@', "%40");

    let mut seen: Vec<String> = Vec::new();
    let mut answers = String::new();

    // Success paths: password, code, refresh (tokens issued by the upstream are canaries too).
    let ok: Value = get_json(format!(
        "{token_url}?grant_type=password&user_id={user}&password={PASSWORD}&client_id=canary"
    ))
    .await;
    seen.push(ok["access_token"].as_str().unwrap().into());
    let rt = ok["refresh_token"].as_str().unwrap().to_owned();
    seen.push(rt.clone());
    let code = h.standin.issue_code("canary", None);
    seen.push(code.clone());
    let ok: Value = http()
        .post(&token_url)
        .header("content-type", "application/json")
        .body(format!(r#"{{"grant_type":"authorization_code","code":"{code}","client_id":"canary"}}"#))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    seen.push(ok["access_token"].as_str().unwrap().into());
    let ok: Value = http()
        .post(&token_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("grant_type=refresh_token&refresh_token={rt}&client_id=canary"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    seen.push(ok["access_token"].as_str().unwrap().into());

    // Error paths: wrong password, wrong caller secret, unknown refresh token and code, upstream
    // faults echoing the secret back, an API call with a bearer token and a query token.
    for url in [
        format!("{token_url}?grant_type=password&user_id={user}&password={BAD_PASSWORD}&client_id=canary"),
        format!(
            "{token_url}?grant_type=password&user_id={user}&password={PASSWORD}&client_id=canary&client_secret={CALLER_SECRET}"
        ),
        format!("{token_url}?grant_type=refresh_token&refresh_token={FAKE_REFRESH}&client_id=canary"),
        format!("{token_url}?grant_type=authorization_code&code={FAKE_CODE}&client_id=canary"),
        format!(
            "{token_url}?grant_type=refresh_token&refresh_token={FAKE_REFRESH}&client_id=unknown&client_secret={CALLER_SECRET}"
        ),
        h.url(&format!("/G2W/rest/v2/organizers/1/webinars?access_token={BEARER}")),
    ] {
        answers.push_str(&http().get(url).bearer_auth(BEARER).send().await.unwrap().text().await.unwrap());
    }
    // v2 calls that oauth-shim normalises: JSON with the secret inside (code, then refresh),
    // and one the upstream refuses.
    let code = h.standin.issue_code("canary", None);
    seen.push(code.clone());
    let v2 = |body: String| {
        http().post(h.url("/oauth/v2/token")).header("content-type", "application/json").body(body).send()
    };
    let ok: Value = v2(format!(
        r#"{{"grant_type":"authorization_code","code":"{code}","client_id":"canary","client_secret":"{CLIENT_SECRET}"}}"#
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    seen.push(ok["access_token"].as_str().unwrap().into());
    let rt2 = ok["refresh_token"].as_str().unwrap().to_owned();
    seen.push(rt2.clone());
    let ok: Value = v2(format!(
        r#"{{"grant_type":"refresh_token","refresh_token":"{rt2}","client_id":"canary","client_secret":"{CLIENT_SECRET}"}}"#
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    seen.push(ok["access_token"].as_str().unwrap().into());
    let refused = v2(format!(
        r#"{{"grant_type":"refresh_token","refresh_token":"{FAKE_REFRESH}","client_id":"canary","client_secret":"{CALLER_SECRET}"}}"#
    ))
    .await
    .unwrap();
    assert_eq!(refused.status(), 401);
    answers.push_str(&refused.text().await.unwrap());
    h.standin.set_fault(Some(Fault::Status(
        400,
        format!(r#"{{"error":"invalid_grant","error_description":"{PASSWORD} {CLIENT_SECRET}"}}"#),
    )));
    answers.push_str(
        &get_text(format!(
            "{token_url}?grant_type=password&user_id={user}&password={PASSWORD}&client_id=canary"
        ))
        .await,
    );

    let text = logs.text();
    assert!(
        text.contains("route=\"token\"") || text.contains("route=token"),
        "the capture must see our log lines: {text}"
    );
    for canary in [CLIENT_SECRET, PASSWORD, BAD_PASSWORD, CALLER_SECRET, FAKE_REFRESH, FAKE_CODE, BEARER]
        .into_iter()
        .map(String::from)
        .chain(seen)
    {
        assert!(!text.contains(&canary), "log leaked {canary}");
        assert!(!answers.contains(&canary), "an error answer leaked {canary}: {answers}");
    }
    // The user name and the Basic header's base64 are not logged either.
    assert!(!text.contains("canary-user"));
    let basic =
        oauth_shim::oauth::basic_auth_header("canary", &oauth_shim::oauth::Secret::new(CLIENT_SECRET));
    assert!(!text.contains(basic.to_str().unwrap().trim_start_matches("Basic ")));
}

/// The JSON log format at TRACE, across the token, authorize, pass-through, v2-native and admin
/// (reload, migration, metrics) paths: every line is JSON, the access lines carry their fields,
/// and no canary appears anywhere, nor in the admin answers.
#[tokio::test(flavor = "current_thread")]
async fn json_logs_at_trace_hold_no_secret_across_ops_paths() {
    use oauth_shim::config::{LogConfig, LogFormat};
    // tracing caches per-callsite interest process-wide: a callsite first hit by another test
    // while no subscriber existed is cached as "never" and a later scoped subscriber misses it.
    // The global TRACE capture keeps every callsite enabled, so this scoped one sees them all.
    let _ = captured_logs();
    let capture = LogCapture::default();
    let writer = capture.clone();
    let cfg = LogConfig { level: "trace".into(), format: LogFormat::Json };
    // Current-thread runtime: the shim's tasks run on this thread, under this subscriber.
    let _guard = tracing::subscriber::set_default(oauth_shim::ops::telemetry::subscriber(
        &cfg,
        move || writer.clone(),
        false,
    ));

    let standin = canary_standin().await;
    let dir = temp_dir("canary-json");
    let path = dir.join("shim.toml");
    let file = |mode: &str, extra: &str| {
        format!(
            "[upstream]\ntoken_url = \"{}\"\nauthorize_url = \"{}\"\napi_base = \"{}\"\n\
             [[clients]]\nid = \"canary\"\nsecret = \"{CLIENT_SECRET}\"\nallow_password_grant = true\nmode = \"{mode}\"\n{extra}",
            standin.token_url(),
            standin.authorize_url(),
            standin.api_base()
        )
    };
    std::fs::write(&path, file("rewrite", "")).unwrap();
    let h = Harness::from_file(standin.clone(), &path).await;
    let token_url = h.url("/oauth/access_token");
    let user = USER.replace('@', "%40");
    let mut seen: Vec<String> = Vec::new();
    let mut answers = String::new();

    let ok: Value = get_json(format!(
        "{token_url}?grant_type=password&user_id={user}&password={PASSWORD}&client_id=canary"
    ))
    .await;
    let at = ok["access_token"].as_str().unwrap().to_owned();
    let rt = ok["refresh_token"].as_str().unwrap().to_owned();
    seen.extend([at.clone(), rt.clone()]);
    let ok: Value = http()
        .post(&token_url)
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"grant_type":"refresh_token","refresh_token":"{rt}","client_id":"canary","client_secret":"{CLIENT_SECRET}"}}"#
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    seen.push(ok["access_token"].as_str().unwrap().into());
    for url in [
        format!("{token_url}?grant_type=authorization_code&code={FAKE_CODE}&client_id=canary"),
        format!("{token_url}?grant_type=password&user_id={user}&password={BAD_PASSWORD}&client_id=canary"),
        format!(
            "{token_url}?grant_type=refresh_token&refresh_token={FAKE_REFRESH}&client_id=nobody&client_secret={CALLER_SECRET}"
        ),
        h.url(&format!("/oauth/authorize?client_id=canary&state={FAKE_CODE}&code_challenge={FAKE_REFRESH}")),
        h.url(&format!("/G2W/rest/v2/organizers/1/webinars?access_token={BEARER}")),
    ] {
        answers.push_str(&http().get(url).bearer_auth(BEARER).send().await.unwrap().text().await.unwrap());
    }
    // A v2-native call with the client's own Basic header.
    answers.push_str(
        &http()
            .post(h.url("/oauth/v2/token"))
            .basic_auth("canary", Some(CLIENT_SECRET))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("grant_type=refresh_token&refresh_token={FAKE_REFRESH}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    // Admin paths: an invalid reload (the file holds the secret), a valid one, the report, metrics.
    std::fs::write(&path, file("bogus", &format!("secrett = \"{CALLER_SECRET}\"\n"))).unwrap();
    let admin = |p: &str| h.admin_url(p);
    answers.push_str(&http().post(admin("/reload")).send().await.unwrap().text().await.unwrap());
    std::fs::write(&path, file("deny", "")).unwrap();
    answers.push_str(&http().post(admin("/reload")).send().await.unwrap().text().await.unwrap());
    answers.push_str(&get_text(admin("/migration")).await);
    answers.push_str(&get_text(admin("/metrics")).await);
    answers.push_str(
        &get_text(format!(
            "{token_url}?grant_type=password&user_id={user}&password={PASSWORD}&client_id=canary"
        ))
        .await,
    );

    let text = capture.text();
    let mut access = 0;
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["message"] == "request" {
            access += 1;
            for field in ["method", "route", "client", "status", "latency_ms"] {
                assert!(!v[field].is_null(), "{field} missing: {line}");
            }
        }
    }
    assert!(access >= 9, "access lines: {access}\n{text}");
    assert!(text.contains("config reload failed"), "{text}");
    assert!(text.contains("client mode changed"), "{text}");
    for canary in [CLIENT_SECRET, PASSWORD, BAD_PASSWORD, CALLER_SECRET, FAKE_REFRESH, FAKE_CODE, BEARER]
        .into_iter()
        .map(String::from)
        .chain(seen)
    {
        assert!(!text.contains(&canary), "log leaked {canary}");
        assert!(!answers.contains(&canary), "an answer leaked {canary}");
    }
    assert!(!text.contains("canary-user"));
    assert!(!text.contains("access_token="), "no /oauth query string or API query in logs");
}
