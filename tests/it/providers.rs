//! Providers and v2 calls that are not quite v2 (docs/protocol.md#providers,
//! docs/protocol.md#v2-token-calls): the seed write-ups' token calls through oauth-shim against the
//! stand-in and a strict raw fake (what reached the upstream, byte for byte), Host selection, the
//! legacy-fields lookup, and providers kept apart.

use std::sync::{Arc, Mutex};

use base64::Engine;
use oauth_shim::devtools::standin::{Fault, Recorded, Standin, StandinClient, StandinConfig};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::support::*;

/// A v2 integration the shim does not know: it sends its own secret.
const APP: &str = "v2-app";
const APP_SECRET: &str = "v2-app-secret:&=";
const IDENTITY_HOST: &str = "authentication.logmeininc.com";
const REDIRECT: &str = "https://app.example.com/callback";

fn standin_clients() -> StandinConfig {
    let mut config = standin_config();
    config.clients.push(StandinClient {
        id: APP.into(),
        secret: APP_SECRET.into(),
        allow_password_grant: true,
    });
    config
}

/// The identity host as a second provider, on the stand-in's identity paths, with the lookup on
/// its user endpoint; [`ID`] is configured for it too.
fn identity_toml(standin: &Standin, extra: &str) -> String {
    format!(
        r#"
        [[providers]]
        name = "identity"
        hosts = ["Authentication.LogMeInInc.com"]
        token_url = "{token}"
        authorize_url = "{authz}"
        api_base = "{api}"
        [providers.legacy_fields]
        url = "{me}"
        organizer_key = "/key"
        account_key = "/accountKey"
        firstName = "/firstName"
        lastName = "/lastName"
        email = "/email"
        [[clients]]
        id = "{ID}"
        provider = "identity"
        secret = "{SECRET}"
        allow_password_grant = true
        {extra}
        "#,
        token = standin.identity_token_url(),
        authz = standin.identity_authorize_url(),
        api = standin.api_base(),
        me = standin.me_url(),
    )
}

async fn start(extra: impl Fn(&Standin) -> String) -> Harness {
    let standin = start_standin(standin_clients()).await;
    let config = shim_config(&standin, &extra(&standin));
    Harness::with_config(standin, config).await
}

/// `Basic base64(urlenc(id):urlenc(secret))`, as RFC 6749 §2.3.1 has it.
fn basic(id: &str, secret: &str) -> String {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", enc(id), enc(secret)))
    )
}

async fn post_json(h: &Harness, path: &str, host: Option<&str>, body: Value) -> reqwest::Response {
    let mut req = http().post(h.url(path)).header("content-type", "application/json").body(body.to_string());
    if let Some(host) = host {
        req = req.header("host", host);
    }
    req.send().await.unwrap()
}

fn last(h: &Harness, path: &str) -> Recorded {
    h.standin.requests().into_iter().rev().find(|r| r.path == path).expect("a call upstream")
}

/// What a v2 token endpoint must get: POST, a form, Basic with the caller's credentials, exactly
/// this body.
fn assert_upstream(r: &Recorded, path: &str, auth: &str, body: &str) {
    assert_eq!((r.method.as_str(), r.path.as_str(), r.query.as_deref()), ("POST", path, None));
    assert_eq!(r.headers["content-type"], "application/x-www-form-urlencoded");
    assert_eq!(r.headers["authorization"], auth);
    assert_eq!(std::str::from_utf8(&r.body).unwrap(), body);
}

async fn v2_answer(resp: reqwest::Response) -> serde_json::Map<String, Value> {
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert_eq!(resp.headers()["content-type"], "application/json");
    serde_json::from_str(&resp.text().await.unwrap()).unwrap()
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Seed 000 (GoToWebinar): `axios.post('…/oauth/v2/token', {grant_type, code, client_id,
/// client_secret, redirect_uri})`, then the refresh the same way. The stand-in, strict as a v2
/// server, refuses it sent directly; through oauth-shim it works, with the caller's own secret.
#[tokio::test]
async fn seed_000_json_with_client_secret_to_v2_token() {
    let h = start(|_| String::new()).await;
    let code = h.standin.issue_code(APP, Some(REDIRECT));
    let call = json!({"grant_type": "authorization_code", "code": code, "client_id": APP,
        "client_secret": APP_SECRET, "redirect_uri": REDIRECT});
    let direct = http()
        .post(h.standin.token_url())
        .header("content-type", "application/json")
        .body(call.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 400, "a v2 server refuses the write-up's call");
    assert!(direct.text().await.unwrap().contains("Content-Type must be application/x-www-form-urlencoded"));

    let answer = v2_answer(post_json(&h, "/oauth/v2/token", None, call).await).await;
    assert_upstream(
        &last(&h, "/oauth/v2/token"),
        "/oauth/v2/token",
        &basic(APP, APP_SECRET),
        &format!("grant_type=authorization_code&code={code}&redirect_uri={}", enc(REDIRECT)),
    );
    // The v2 answer as it came: integer expires_in, token_type, version 3, field order kept.
    let keys: Vec<&str> = answer.keys().map(String::as_str).collect();
    assert_eq!(keys[..4], ["access_token", "token_type", "refresh_token", "expires_in"]);
    assert_eq!((answer["expires_in"].clone(), answer["version"].clone()), (json!(3600), json!("3")));
    assert!(h.standin.is_access_token_valid(answer["access_token"].as_str().unwrap()));

    let rt = answer["refresh_token"].as_str().unwrap().to_owned();
    let refresh = json!({"grant_type": "refresh_token", "refresh_token": rt, "client_id": APP,
        "client_secret": APP_SECRET});
    let calls = h.standin.token_calls();
    let refreshed = v2_answer(post_json(&h, "/oauth/v2/token", None, refresh.clone()).await).await;
    assert_upstream(
        &last(&h, "/oauth/v2/token"),
        "/oauth/v2/token",
        &basic(APP, APP_SECRET),
        &format!("grant_type=refresh_token&refresh_token={rt}"),
    );
    assert!(h.standin.is_access_token_valid(refreshed["access_token"].as_str().unwrap()));
    // Through the single flight: a second refresh of that token is served from the cache.
    let again = v2_answer(post_json(&h, "/oauth/v2/token", None, refresh).await).await;
    assert_eq!(again["access_token"], refreshed["access_token"]);
    assert_eq!(h.standin.token_calls(), calls + 1);
    // A different presented secret never gets the cached answer, and the token it spent is not
    // sent upstream again.
    let wrong = json!({"grant_type": "refresh_token", "refresh_token": rt, "client_id": APP,
        "client_secret": "not-the-secret"});
    let resp = post_json(&h, "/oauth/v2/token", None, wrong).await;
    assert_eq!(resp.status(), 401);
    let refused = resp.json::<Value>().await.unwrap();
    assert_eq!(refused["error"], "invalid_client");
    assert!(refused.get("access_token").is_none());
    assert_eq!(h.standin.token_calls(), calls + 1);

    // The migration report lists who still sends JSON.
    let report = get_json(h.admin_url("/migration")).await;
    let row = report["clients"].as_array().unwrap().iter().find(|c| c["id"] == APP).unwrap().clone();
    assert_eq!(row["features"]["v2_normalised"]["count"], 4, "{row}");
    assert_eq!(row["mode"], "unknown");
}

/// Seed 001 (GoToMeeting): JSON to `/oauth/token` on the identity host, selected by `Host`
/// (any case, any port). Without that `Host` the same call is the default provider's plain
/// pass-through, and the strict v2 server refuses it.
#[tokio::test]
async fn seed_001_json_to_identity_host_selected_by_host() {
    let h = start(|s| identity_toml(s, "")).await;
    let code = h.standin.issue_code(APP, Some(REDIRECT));
    let call = json!({"grant_type": "authorization_code", "code": code, "client_id": APP,
        "client_secret": APP_SECRET, "redirect_uri": REDIRECT});
    let resp = post_json(&h, "/oauth/token", None, call.clone()).await;
    assert_eq!(resp.status(), 400, "the default provider passes /oauth/token through as it came");

    let answer =
        v2_answer(post_json(&h, "/oauth/token", Some("AUTHENTICATION.logmeininc.com:443"), call).await).await;
    assert_upstream(
        &last(&h, "/oauth/token"),
        "/oauth/token",
        &basic(APP, APP_SECRET),
        &format!("grant_type=authorization_code&code={code}&redirect_uri={}", enc(REDIRECT)),
    );
    // The identity host's answer, unmapped: no legacy fields, scope and principal kept.
    assert!(answer.get("organizer_key").is_none());
    assert!(answer.contains_key("scope") && answer.contains_key("principal"));
    assert_eq!(h.standin.me_calls(), 0, "v2 answers are not filled");

    let rt = answer["refresh_token"].as_str().unwrap();
    let refresh = json!({"grant_type": "refresh_token", "refresh_token": rt, "client_id": APP,
        "client_secret": APP_SECRET});
    let refreshed = v2_answer(post_json(&h, "/oauth/token", Some(IDENTITY_HOST), refresh).await).await;
    assert_upstream(
        &last(&h, "/oauth/token"),
        "/oauth/token",
        &basic(APP, APP_SECRET),
        &format!("grant_type=refresh_token&refresh_token={rt}"),
    );
    assert!(h.standin.is_access_token_valid(refreshed["access_token"].as_str().unwrap()));
}

/// A form body with the credentials inside (no Basic): normalised to Basic, every other
/// parameter kept in order. A configured client sending no secret gets none added.
#[tokio::test]
async fn form_with_body_credentials_is_normalised() {
    let h = start(|_| String::new()).await;
    let code = h.standin.issue_code(APP, None);
    let form = format!(
        "grant_type=authorization_code&client_id={APP}&code={code}&client_secret={}&code_verifier=v-1&resource=r",
        enc(APP_SECRET)
    );
    let resp = http()
        .post(h.url("/oauth/v2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    let answer = v2_answer(resp).await;
    assert_upstream(
        &last(&h, "/oauth/v2/token"),
        "/oauth/v2/token",
        &basic(APP, APP_SECRET),
        &format!("grant_type=authorization_code&code={code}&code_verifier=v-1&resource=r"),
    );
    let rt = answer["refresh_token"].as_str().unwrap();
    // The configured client, no secret sent: oauth-shim lends none (a v2 call carries its own
    // credentials), so the call goes as a public client's and the upstream refuses it.
    let code = h.standin.issue_code(ID, None);
    let resp = http()
        .post(h.url("/oauth/v2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("grant_type=authorization_code&code={code}&client_id={ID}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let r = last(&h, "/oauth/v2/token");
    assert!(!r.headers.contains_key("authorization"));
    assert_eq!(
        std::str::from_utf8(&r.body).unwrap(),
        format!("grant_type=authorization_code&code={code}&client_id={ID}")
    );

    let resp = http()
        .post(h.url("/oauth/v2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=refresh_token&refresh_token={rt}&client_id={APP}&client_secret={}",
            enc(APP_SECRET)
        ))
        .send()
        .await
        .unwrap();
    let refreshed = v2_answer(resp).await;
    assert_upstream(
        &last(&h, "/oauth/v2/token"),
        "/oauth/v2/token",
        &basic(APP, APP_SECRET),
        &format!("grant_type=refresh_token&refresh_token={rt}"),
    );
    assert!(h.standin.is_access_token_valid(refreshed["access_token"].as_str().unwrap()));

    // A form call with Basic, already correct, reaches the token URL unchanged.
    let code = h.standin.issue_code(APP, None);
    let body = format!("grant_type=authorization_code&code={code}");
    let resp = http()
        .post(h.url("/oauth/v2/token?x=1"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", basic(APP, APP_SECRET))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r = last(&h, "/oauth/v2/token");
    assert_eq!(r.query.as_deref(), Some("x=1"));
    assert_eq!(r.headers["authorization"], basic(APP, APP_SECRET).as_str());
    assert_eq!(r.body, body.as_bytes());
}

/// A provider that wants `client_secret_post`: a JSON call becomes a form with the credentials
/// in it and no Basic header.
#[tokio::test]
async fn client_secret_post_provider_gets_credentials_in_the_form() {
    let mut cfg = standin_clients();
    cfg.client_secret_post = true;
    let standin = start_standin(cfg).await;
    let toml = format!(
        "[[providers]]\nname = \"geek\"\nhosts = [\"geek.test\"]\ntoken_url = \"{}\"\nauthorize_url = \"{}\"\napi_base = \"{}\"\nclient_auth = \"client_secret_post\"\n",
        standin.token_url(),
        standin.authorize_url(),
        standin.api_base()
    );
    let config = shim_config(&standin, &toml);
    let h = Harness::with_config(standin, config).await;
    let code = h.standin.issue_code(APP, None);
    let call = json!({"grant_type": "authorization_code", "client_id": APP, "client_secret": APP_SECRET, "code": code});
    let answer = v2_answer(post_json(&h, "/oauth/v2/token", Some("geek.test"), call).await).await;
    let r = last(&h, "/oauth/v2/token");
    assert!(!r.headers.contains_key("authorization"));
    assert_eq!(
        std::str::from_utf8(&r.body).unwrap(),
        format!(
            "grant_type=authorization_code&code={code}&client_id={APP}&client_secret={}",
            enc(APP_SECRET)
        )
    );
    assert!(h.standin.is_access_token_valid(answer["access_token"].as_str().unwrap()));
}

/// A strict raw upstream: records every request's exact bytes (and its connection), refuses
/// anything that is not a form POST with Basic, and answers a token otherwise.
struct Strict {
    addr: std::net::SocketAddr,
    seen: Seen,
}

/// Each request's connection index and exact bytes.
type Seen = Arc<Mutex<Vec<(usize, Vec<u8>)>>>;

const STRICT_TOKEN: &str = r#"{"access_token":"at-strict","token_type":"Bearer","refresh_token":"rt-strict","expires_in":3600,"scope":"collab:"}"#;

impl Strict {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Seen = Arc::default();
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            for conn in 0.. {
                let Ok((mut stream, _)) = listener.accept().await else { return };
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    while let Some((head, body)) = read_request(&mut stream, &mut buf).await {
                        let mut raw = head.clone().into_bytes();
                        raw.extend(body);
                        log.lock().unwrap().push((conn, raw));
                        let lower = head.to_ascii_lowercase();
                        let ok = lower.starts_with("post ")
                            && lower.contains("\r\ncontent-type: application/x-www-form-urlencoded\r\n")
                            && lower.contains("\r\nauthorization: basic ");
                        let (status, body) = if ok {
                            ("200 OK", STRICT_TOKEN)
                        } else {
                            ("400 Bad Request", r#"{"error":"invalid_request"}"#)
                        };
                        let answer = format!(
                            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if stream.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, seen }
    }

    fn seen(&self) -> Vec<(usize, Vec<u8>)> {
        self.seen.lock().unwrap().clone()
    }
}

/// The exact bytes of the normalised calls (code exchange and refresh, for the seed 000 JSON,
/// the seed 001 JSON on the identity path, and a form with body credentials), as a strict v2
/// server receives them.
#[tokio::test]
async fn strict_fake_gets_the_normalised_calls_byte_for_byte() {
    let up = Strict::start().await;
    let toml = format!(
        r#"
        [upstream]
        token_url = "http://{a}/oauth/v2/token"
        [refresh_cache]
        ttl = "0s"
        [[providers]]
        name = "identity"
        hosts = ["{IDENTITY_HOST}"]
        token_url = "http://{a}/oauth/token"
        authorize_url = "http://{a}/oauth/authorize"
        api_base = "http://{a}"
        "#,
        a = up.addr
    );
    let h = Harness::start(standin_config(), &toml).await;
    let auth = basic(APP, APP_SECRET);
    // The caller's request id goes upstream with the call
    // (docs/protocol.md#request-ids-and-trace-context).
    let head = |path: &str, body: &str, id: usize| {
        format!(
            "POST {path} HTTP/1.1\r\nhost: {}\r\nauthorization: {auth}\r\ncontent-type: application/x-www-form-urlencoded\r\naccept: application/json\r\nx-request-id: call-{id}\r\ncontent-length: {}\r\n\r\n{body}",
            up.addr,
            body.len()
        )
    };
    let code_form = format!("grant_type=authorization_code&code=c-1&redirect_uri={}", enc(REDIRECT));
    let refresh_form = "grant_type=refresh_token&refresh_token=rt-1".to_owned();
    let code_json = json!({"grant_type": "authorization_code", "code": "c-1", "client_id": APP,
        "client_secret": APP_SECRET, "redirect_uri": REDIRECT});
    let refresh_json = json!({"grant_type": "refresh_token", "refresh_token": "rt-1", "client_id": APP, "client_secret": APP_SECRET});
    let mut expected = Vec::new();
    for (path, host) in [("/oauth/v2/token", None), ("/oauth/token", Some(IDENTITY_HOST))] {
        for (call, form) in [(&code_json, &code_form), (&refresh_json, &refresh_form)] {
            let id = expected.len();
            let mut req = http()
                .post(h.url(path))
                .header("content-type", "application/json")
                .header("x-request-id", format!("call-{id}"))
                .body(call.to_string());
            if let Some(host) = host {
                req = req.header("host", host);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.headers()["cache-control"], "no-store");
            assert_eq!(resp.text().await.unwrap(), STRICT_TOKEN, "the answer as it came");
            expected.push(head(path, form, id));
        }
    }
    for form in [&code_form, &refresh_form] {
        let mut body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form_urlencoded::parse(form.as_bytes()))
            .finish();
        body.push_str(&format!("&client_id={APP}&client_secret={}", enc(APP_SECRET)));
        let id = expected.len();
        let resp = http()
            .post(h.url("/oauth/v2/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-request-id", format!("call-{id}"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.text().await.unwrap(), STRICT_TOKEN);
        expected.push(head("/oauth/v2/token", form, id));
    }
    let seen: Vec<String> = up.seen().into_iter().map(|(_, raw)| String::from_utf8(raw).unwrap()).collect();
    assert_eq!(seen, expected);
}

/// A legacy call on the identity-host provider: the token answer lacks the legacy fields, the
/// lookup fills them (once per access token: a cache replay does not look up again).
#[tokio::test]
async fn legacy_call_on_identity_host_gets_fields_from_the_lookup() {
    let h = start(|s| identity_toml(s, "")).await;
    let url = h.url(&format!(
        "/oauth/access_token?grant_type=password&user_id=demo%40example.com&password=demo-password&client_id={ID}"
    ));
    let resp = http().get(&url).header("host", IDENTITY_HOST).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Map<String, Value> = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    let keys: Vec<&str> = body.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "access_token",
            "expires_in",
            "refresh_token",
            "organizer_key",
            "account_key",
            "firstName",
            "lastName",
            "email",
            "platform",
            "version"
        ]
    );
    assert_eq!(body["organizer_key"], "18889842069694200");
    assert_eq!(body["account_key"], "3792882212321659654");
    assert_eq!((body["firstName"].as_str(), body["lastName"].as_str()), (Some("Jon"), Some("Karmak")));
    assert_eq!(body["email"], "jk@example.com");
    let me = last(&h, "/admin/rest/v1/me");
    assert_eq!(me.method, "GET");
    assert_eq!(
        me.headers["authorization"],
        format!("Bearer {}", body["access_token"].as_str().unwrap()).as_str()
    );
    assert_eq!(h.standin.me_calls(), 1);
    let r = last(&h, "/oauth/token");
    assert_eq!(r.headers["authorization"], basic(ID, SECRET).as_str());

    // Refresh: one lookup for the new access token, none for the cache's replay.
    let rt = body["refresh_token"].as_str().unwrap();
    let refresh =
        h.url(&format!("/oauth/access_token?grant_type=refresh_token&refresh_token={rt}&client_id={ID}"));
    for _ in 0..2 {
        let v: Value =
            http().get(&refresh).header("host", IDENTITY_HOST).send().await.unwrap().json().await.unwrap();
        assert_eq!(v["organizer_key"], "18889842069694200", "{v}");
        assert_eq!(v["firstName"], "Jon");
    }
    assert_eq!(h.standin.me_calls(), 2);

    // The default provider's answers carry the fields already: no lookup is configured there.
    let v: Value = http().get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["organizer_key"], "18889842069694200");
    assert_eq!(h.standin.me_calls(), 2);
}

/// A failing lookup (an error status, garbage, a dropped connection, no answer within the
/// token call's deadline) leaves the fields out but still serves the token; failures are
/// counted and logged.
#[tokio::test]
async fn failing_lookup_still_returns_the_token() {
    let logs = captured_logs();
    let h = start(|s| identity_toml(s, "")).await;
    let url = h.url(&format!(
        "/oauth/access_token?grant_type=password&user_id=demo%40example.com&password=demo-password&client_id={ID}"
    ));
    let faults = [
        Fault::Status(500, "oops".into()),
        Fault::Garbage,
        Fault::Close,
        Fault::Delay(std::time::Duration::from_secs(5)),
    ];
    for fault in faults.clone() {
        h.standin.set_me_fault(Some(fault.clone()));
        let resp = http().get(&url).header("host", IDENTITY_HOST).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{fault:?}");
        let v: Value = resp.json().await.unwrap();
        assert!(h.standin.is_access_token_valid(v["access_token"].as_str().unwrap()), "{fault:?}");
        assert!(v.get("organizer_key").is_none() && v.get("firstName").is_none(), "{fault:?}: {v}");
        assert_eq!(v["expires_in"], "3600");
    }
    let metrics = get_text(h.admin_url("/metrics")).await;
    assert!(
        metrics.contains(r#"oauth_shim_legacy_fields_lookups_total{provider="identity",result="failed"} 4"#),
        "{metrics}"
    );
    assert!(logs.text().contains("legacy fields lookup failed"));
    // Once the endpoint answers again, the fields are back.
    h.standin.set_me_fault(None);
    let v: Value = http().get(&url).header("host", IDENTITY_HOST).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["organizer_key"], "18889842069694200");
}

/// Two providers at once: clients are looked up within the provider the Host selected, a
/// refresh token answered for provider A is never served from A's cache to provider B, and
/// each provider has its own upstream connections.
#[tokio::test]
async fn two_providers_keep_clients_caches_and_pools_apart() {
    let h = start(|s| {
        format!(
            r#"
            [[providers]]
            name = "b"
            hosts = ["b.example"]
            token_url = "{}"
            authorize_url = "{}"
            api_base = "{}"
            [[clients]]
            id = "{ID}"
            provider = "b"
            secret = "{SECRET}"
            [[clients]]
            id = "only-a"
            secret = "x"
            "#,
            s.token_url(),
            s.authorize_url(),
            s.api_base()
        )
    })
    .await;
    // Clients: "only-a" is A's; through B it is unknown and nothing goes upstream.
    let calls = h.standin.token_calls();
    let r = http()
        .get(h.url("/oauth/access_token?grant_type=refresh_token&refresh_token=x&client_id=only-a"))
        .header("host", "b.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(h.standin.token_calls(), calls);

    // Caches: a refresh through A is cached for A only.
    let login = format!(
        "/oauth/access_token?grant_type=password&user_id=demo%40example.com&password=demo-password&client_id={ID}"
    );
    let v = get_json(h.url(&login)).await;
    let rt = v["refresh_token"].as_str().unwrap();
    let refresh =
        h.url(&format!("/oauth/access_token?grant_type=refresh_token&refresh_token={rt}&client_id={ID}"));
    let a1 = get_json(&refresh).await;
    let a2 = get_json(&refresh).await;
    assert_eq!(a1["access_token"], a2["access_token"], "A's second refresh is A's cached answer");
    let calls = h.standin.token_calls();
    let b: Value =
        http().get(&refresh).header("host", "b.example").send().await.unwrap().json().await.unwrap();
    assert_eq!(h.standin.token_calls(), calls + 1, "B's refresh went upstream, not to A's cache");
    assert_ne!(b["access_token"], a1["access_token"]);
    let b2: Value =
        http().get(&refresh).header("host", "b.example").send().await.unwrap().json().await.unwrap();
    assert_eq!(b2["access_token"], b["access_token"], "B has its own cached answer");
    assert_eq!(h.standin.token_calls(), calls + 1);

    // Metrics: the provider is a label.
    let metrics = get_text(h.admin_url("/metrics")).await;
    assert!(
        metrics.contains(r#"route="token",provider="b",client="legacy-client",outcome="cache""#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"route="token",provider="default",client="legacy-client",outcome="cache""#));
    // The report has a row per provider for the same id.
    let report = get_json(h.admin_url("/migration")).await;
    let rows: Vec<(String, u64)> = report["clients"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["id"] == ID)
        .map(|c| (c["provider"].as_str().unwrap().to_owned(), c["calls"]["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(rows, [("default".to_owned(), 3), ("b".to_owned(), 2)]);
}

/// Pools: each provider opens its own upstream connections, even to the same host.
#[tokio::test]
async fn each_provider_has_its_own_pool() {
    let up = Strict::start().await;
    let toml = format!(
        "[upstream]\ntoken_url = \"http://{a}/oauth/v2/token\"\n[refresh_cache]\nttl = \"0s\"\n[[providers]]\nname = \"b\"\nhosts = [\"b.example\"]\ntoken_url = \"http://{a}/oauth/v2/token\"\nauthorize_url = \"http://{a}/a\"\napi_base = \"http://{a}\"\n",
        a = up.addr
    );
    let h = Harness::start(standin_config(), &toml).await;
    let call = json!({"grant_type": "refresh_token", "refresh_token": "rt", "client_id": APP, "client_secret": APP_SECRET});
    for host in [None, None, Some("b.example"), Some("b.example"), None] {
        assert_eq!(post_json(&h, "/oauth/v2/token", host, call.clone()).await.status(), 200);
    }
    let conns: Vec<usize> = up.seen().into_iter().map(|(c, _)| c).collect();
    assert_eq!(conns, [0, 0, 1, 1, 0], "A reuses its connection, B opens and reuses its own");
}

/// A configured client's mode applies to its v2 calls; a reload applies to providers.
#[tokio::test]
async fn modes_apply_and_reload_changes_providers() {
    let standin = start_standin(standin_clients()).await;
    let path = temp_dir("providers").join("shim.toml");
    let s = standin.clone();
    let file = move |mode: &str, hosts: &str| {
        format!(
            "[upstream]\ntoken_url = \"{t}\"\nauthorize_url = \"{a}\"\napi_base = \"{b}\"\n[[providers]]\nname = \"identity\"\nhosts = [{hosts}]\ntoken_url = \"{it}\"\nauthorize_url = \"{ia}\"\napi_base = \"{b}\"\n[[clients]]\nid = \"{APP}\"\nprovider = \"identity\"\nsecret = \"{APP_SECRET}\"\nmode = \"{mode}\"\n",
            t = s.token_url(),
            a = s.authorize_url(),
            b = s.api_base(),
            it = s.identity_token_url(),
            ia = s.identity_authorize_url(),
        )
    };
    std::fs::write(&path, file("deny", "\"old.example\"")).unwrap();
    let h = Harness::from_file(standin, &path).await;
    let call = |code: &str| json!({"grant_type": "authorization_code", "code": code, "client_id": APP, "client_secret": APP_SECRET});
    let resp = post_json(&h, "/oauth/token", Some("old.example"), call("c")).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"], "unauthorized_client");

    std::fs::write(&path, file("rewrite", "\"new.example\"")).unwrap();
    oauth_shim::admin::reload::reload(&h.app, "admin").unwrap();
    let code = h.standin.issue_code(APP, None);
    let answer = v2_answer(post_json(&h, "/oauth/token", Some("new.example"), call(&code)).await).await;
    assert!(answer.contains_key("principal"), "the identity provider answered");
    assert_upstream(
        &last(&h, "/oauth/token"),
        "/oauth/token",
        &basic(APP, APP_SECRET),
        &format!("grant_type=authorization_code&code={code}"),
    );
    let resp = post_json(&h, "/oauth/token", Some("old.example"), call("c")).await;
    assert_eq!(resp.status(), 400, "old.example now selects the default provider: passed through");
    let _ = std::fs::remove_file(&path);
}
