//! Tests of the local GoTo OAuth v2 stand-in, through its public API and over real HTTP.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use oauth_shim::devtools::standin::{Fault, Standin, StandinClient, StandinConfig};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::Value;

const ID: &str = "demo-client";
const SECRET: &str = "demo-secret";

async fn start(config: StandinConfig) -> Standin {
    Standin::start(config, "127.0.0.1:0".parse().expect("addr")).await.expect("start standin")
}

fn http() -> reqwest::Client {
    crate::support::reqwest_builder().redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// RFC 6749 §2.3.1 Basic credentials.
fn basic(id: &str, secret: &str) -> String {
    let raw = format!("{}:{}", encode(id), encode(secret));
    format!("Basic {}", STANDARD.encode(raw))
}

fn form(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).expect("json body")
    }

    fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or("<none>").to_owned()
    }

    fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

async fn answer(resp: reqwest::Response) -> Answer {
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    Answer { status, headers, text }
}

async fn post_raw(s: &Standin, auth: Option<&str>, content_type: &str, body: String) -> Answer {
    let mut req = http().post(s.token_url()).header("content-type", content_type).body(body);
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    answer(req.send().await.expect("send")).await
}

async fn token(s: &Standin, pairs: &[(&str, &str)]) -> Answer {
    token_as(s, ID, SECRET, pairs).await
}

async fn token_as(s: &Standin, id: &str, secret: &str, pairs: &[(&str, &str)]) -> Answer {
    let auth = basic(id, secret);
    post_raw(s, Some(&auth), "application/x-www-form-urlencoded", form(pairs)).await
}

fn field(a: &Answer, name: &str) -> String {
    a.json()[name].as_str().expect(name).to_owned()
}

async fn password_grant(s: &Standin) -> Answer {
    let pairs = [("grant_type", "password"), ("username", "demo@example.com"), ("password", "demo-password")];
    token(s, &pairs).await
}

async fn refresh(s: &Standin, rt: &str) -> Answer {
    token(s, &[("grant_type", "refresh_token"), ("refresh_token", rt)]).await
}

#[tokio::test]
async fn code_exchange_returns_exact_v2_shape() {
    let s = start(StandinConfig::default()).await;
    let code = s.issue_code(ID, None);
    let a = token(&s, &[("grant_type", "authorization_code"), ("code", &code)]).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.header("content-type"), "application/json");
    assert_eq!(a.header("cache-control"), "no-store");
    let (at, rt) = (field(&a, "access_token"), field(&a, "refresh_token"));
    assert_ne!(at, rt);
    assert!(at.len() >= 32);
    let expected = format!(
        r#"{{"access_token":"{at}","token_type":"Bearer","refresh_token":"{rt}","expires_in":3600,"account_key":"3792882212321659654","account_type":"","email":"jk@example.com","firstName":"Jon","lastName":"Karmak","organizer_key":"18889842069694200","version":"3"}}"#
    );
    assert_eq!(a.text, expected);
    assert!(a.json()["expires_in"].is_u64());
    assert!(s.is_access_token_valid(&at));
    assert!(!s.is_access_token_valid("nope"));
}

#[tokio::test]
async fn access_token_ttl_is_configurable() {
    let config = StandinConfig { access_token_ttl: 120, ..StandinConfig::default() };
    let s = start(config).await;
    let a = password_grant(&s).await;
    assert_eq!(a.json()["expires_in"], 120);
}

#[tokio::test]
async fn code_is_single_use_and_bound_to_client() {
    let mut config = StandinConfig::default();
    config.clients.push(StandinClient {
        id: "other".into(),
        secret: "other-secret".into(),
        allow_password_grant: false,
    });
    let s = start(config).await;
    let code = s.issue_code(ID, None);
    let pairs = [("grant_type", "authorization_code"), ("code", &code)];
    let other = token_as(&s, "other", "other-secret", &pairs).await;
    assert_eq!(other.status, StatusCode::BAD_REQUEST);
    assert_eq!(other.error(), "invalid_grant");
    assert_eq!(token(&s, &pairs).await.status, StatusCode::OK);
    let again = token(&s, &pairs).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(again.error(), "invalid_grant");
    let unknown = token(&s, &[("grant_type", "authorization_code"), ("code", "x")]).await;
    assert_eq!(unknown.error(), "invalid_grant");
    let missing = token(&s, &[("grant_type", "authorization_code")]).await;
    assert_eq!(missing.error(), "invalid_request");
}

#[tokio::test]
async fn redirect_uri_required_and_identical_when_bound() {
    let s = start(StandinConfig::default()).await;
    let cb = "https://app.example.com/cb";
    let code = s.issue_code(ID, Some(cb));
    let base = [("grant_type", "authorization_code"), ("code", &code)];
    let missing = token(&s, &base).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.error(), "invalid_request");
    let mut wrong = base.to_vec();
    wrong.push(("redirect_uri", "https://app.example.com/cb/"));
    assert_eq!(token(&s, &wrong).await.error(), "invalid_grant");
    let mut right = base.to_vec();
    right.push(("redirect_uri", cb));
    assert_eq!(token(&s, &right).await.status, StatusCode::OK);
}

#[tokio::test]
async fn redirect_uri_ignored_when_not_bound() {
    let s = start(StandinConfig::default()).await;
    let code = s.issue_code(ID, None);
    let pairs = [
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", "https://anything.example/"),
    ];
    assert_eq!(token(&s, &pairs).await.status, StatusCode::OK);
}

#[tokio::test]
async fn basic_auth_is_required_and_checked() {
    let s = start(StandinConfig::default()).await;
    let body = form(&[("grant_type", "authorization_code"), ("code", "c")]);
    let ct = "application/x-www-form-urlencoded";
    for auth in [
        None,
        Some(basic(ID, "wrong")),
        Some(basic("nobody", SECRET)),
        Some("Bearer abc".to_owned()),
        Some("Basic !!!not-base64".to_owned()),
    ] {
        let a = post_raw(&s, auth.as_deref(), ct, body.clone()).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(a.error(), "invalid_client");
        assert!(a.json()["error_description"].is_string());
        assert_eq!(a.header("www-authenticate"), r#"Basic realm="standin""#);
    }
}

#[tokio::test]
async fn urlencoded_basic_credentials_with_special_characters() {
    let config = StandinConfig {
        clients: vec![StandinClient {
            id: "a b".into(),
            secret: "p:ss&=+%é".into(),
            allow_password_grant: true,
        }],
        ..StandinConfig::default()
    };
    let s = start(config).await;
    let pairs = [("grant_type", "password"), ("username", "demo@example.com"), ("password", "demo-password")];
    let ok = token_as(&s, "a b", "p:ss&=+%é", &pairs).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    // Credentials that were not form-urlencoded before base64 are refused.
    let raw = format!("Basic {}", STANDARD.encode("a b:p:ss&=+%é"));
    let ct = "application/x-www-form-urlencoded";
    let bad = post_raw(&s, Some(&raw), ct, form(&pairs)).await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn credentials_in_body_are_rejected() {
    let s = start(StandinConfig::default()).await;
    let code = s.issue_code(ID, None);
    for extra in [("client_id", ID), ("client_secret", SECRET)] {
        let pairs = [("grant_type", "authorization_code"), ("code", &code), extra];
        let a = token(&s, &pairs).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert_eq!(a.error(), "invalid_request");
    }
    // The code was not consumed by the refused requests.
    let pairs = [("grant_type", "authorization_code"), ("code", &code)];
    assert_eq!(token(&s, &pairs).await.status, StatusCode::OK);
}

#[tokio::test]
async fn only_post_with_form_content_type() {
    let s = start(StandinConfig::default()).await;
    let get = answer(
        http().get(s.token_url()).header("authorization", basic(ID, SECRET)).send().await.expect("send"),
    )
    .await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get.error(), "invalid_request");

    let auth = basic(ID, SECRET);
    let json = r#"{"grant_type":"password","username":"demo@example.com","password":"demo-password"}"#;
    let a = post_raw(&s, Some(&auth), "application/json", json.to_owned()).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.error(), "invalid_request");

    let body =
        form(&[("grant_type", "password"), ("username", "demo@example.com"), ("password", "demo-password")]);
    let ct = "application/x-www-form-urlencoded; charset=UTF-8";
    assert_eq!(post_raw(&s, Some(&auth), ct, body.clone()).await.status, StatusCode::OK);
    let missing = answer(
        http().post(s.token_url()).header("authorization", auth).body(body).send().await.expect("send"),
    )
    .await;
    assert_eq!(missing.error(), "invalid_request");
}

#[tokio::test]
async fn repeated_and_unknown_parameters() {
    let s = start(StandinConfig::default()).await;
    let dup = token(&s, &[("grant_type", "password"), ("grant_type", "password")]).await;
    assert_eq!(dup.status, StatusCode::BAD_REQUEST);
    assert_eq!(dup.error(), "invalid_request");
    let unsupported = token(&s, &[("grant_type", "client_credentials")]).await;
    assert_eq!(unsupported.error(), "unsupported_grant_type");
    assert_eq!(token(&s, &[]).await.error(), "invalid_request");
}

#[tokio::test]
async fn password_grant_allowed_and_refused() {
    let mut config = StandinConfig::default();
    config.clients.push(StandinClient {
        id: "nopw".into(),
        secret: "nopw-secret".into(),
        allow_password_grant: false,
    });
    let s = start(config).await;
    let ok = password_grant(&s).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert!(s.is_access_token_valid(&field(&ok, "access_token")));
    let wrong = [("grant_type", "password"), ("username", "demo@example.com"), ("password", "guess")];
    let a = token(&s, &wrong).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.error(), "invalid_grant");
    let right = [("grant_type", "password"), ("username", "demo@example.com"), ("password", "demo-password")];
    let refused = token_as(&s, "nopw", "nopw-secret", &right).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.error(), "unauthorized_client");
    let missing = token(&s, &[("grant_type", "password"), ("username", "x")]).await;
    assert_eq!(missing.error(), "invalid_request");
}

#[tokio::test]
async fn refresh_without_rotation_returns_same_token() {
    let s = start(StandinConfig::default()).await;
    let first = password_grant(&s).await;
    let rt = field(&first, "refresh_token");
    for _ in 0..2 {
        let a = refresh(&s, &rt).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        assert_eq!(field(&a, "refresh_token"), rt);
        assert_ne!(field(&a, "access_token"), field(&first, "access_token"));
        assert!(s.is_access_token_valid(&field(&a, "access_token")));
    }
    assert_eq!(refresh(&s, "unknown").await.error(), "invalid_grant");
    assert_eq!(s.revoked_grants(), 0);
}

#[tokio::test]
async fn refresh_token_of_other_client_is_refused() {
    let mut config = StandinConfig::default();
    config.clients.push(StandinClient {
        id: "other".into(),
        secret: "other-secret".into(),
        allow_password_grant: false,
    });
    let s = start(config).await;
    let rt = field(&password_grant(&s).await, "refresh_token");
    let pairs = [("grant_type", "refresh_token"), ("refresh_token", &rt)];
    let a = token_as(&s, "other", "other-secret", &pairs).await;
    assert_eq!(a.error(), "invalid_grant");
}

#[tokio::test]
async fn rotation_and_reuse_revokes_grant() {
    let config = StandinConfig { rotate_refresh_tokens: true, ..StandinConfig::default() };
    let s = start(config).await;
    let first = password_grant(&s).await;
    let (at1, rt1) = (field(&first, "access_token"), field(&first, "refresh_token"));
    let second = refresh(&s, &rt1).await;
    assert_eq!(second.status, StatusCode::OK);
    let (at2, rt2) = (field(&second, "access_token"), field(&second, "refresh_token"));
    assert_ne!(rt1, rt2);
    assert!(s.is_access_token_valid(&at1) && s.is_access_token_valid(&at2));

    // An unrelated grant must survive the revocation.
    let other_at = field(&password_grant(&s).await, "access_token");

    let reuse = refresh(&s, &rt1).await;
    assert_eq!(reuse.status, StatusCode::BAD_REQUEST);
    assert_eq!(reuse.error(), "invalid_grant");
    assert_eq!(s.revoked_grants(), 1);
    assert!(!s.is_access_token_valid(&at1));
    assert!(!s.is_access_token_valid(&at2));
    assert!(s.is_access_token_valid(&other_at));
    assert_eq!(refresh(&s, &rt2).await.error(), "invalid_grant");
    assert_eq!(refresh(&s, &rt1).await.error(), "invalid_grant");
    assert_eq!(s.revoked_grants(), 1);
}

#[tokio::test]
async fn omit_refresh_token_on_refresh() {
    let config = StandinConfig { omit_refresh_token_on_refresh: true, ..StandinConfig::default() };
    let s = start(config).await;
    let rt = field(&password_grant(&s).await, "refresh_token");
    for _ in 0..2 {
        let a = refresh(&s, &rt).await;
        assert_eq!(a.status, StatusCode::OK);
        assert!(a.json().get("refresh_token").is_none(), "{}", a.text);
        assert!(!a.text.contains("refresh_token"));
        assert_eq!(a.json()["expires_in"], 3600);
    }
}

#[tokio::test]
async fn api_requires_valid_bearer() {
    let s = start(StandinConfig::default()).await;
    let at = field(&password_grant(&s).await, "access_token");
    let url = format!("{}/G2W/rest/v2/organizers/42/webinars", s.api_base());
    let ok = answer(http().get(&url).bearer_auth(&at).send().await.expect("send")).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.json()[0]["webinarKey"], "1235813");
    let g2m = format!("{}/G2M/rest/meetings", s.api_base());
    let ok = http().get(&g2m).bearer_auth(&at).send().await.expect("send");
    assert_eq!(ok.status(), StatusCode::OK);
    for auth in [None, Some("Bearer nope".to_owned()), Some(basic(ID, SECRET))] {
        let mut req = http().get(&url);
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let a = answer(req.send().await.expect("send")).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        assert_eq!(a.json(), serde_json::json!({"int_err_code":"InvalidToken","msg":"Invalid token passed"}));
    }
}

#[tokio::test]
async fn faults_override_token_endpoint() {
    let s = start(StandinConfig::default()).await;
    s.set_fault(Some(Fault::Status(503, "busy".into())));
    let a = password_grant(&s).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.text, "busy");

    s.set_fault(Some(Fault::Garbage));
    let a = password_grant(&s).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.header("content-type").starts_with("text/html"));
    assert!(serde_json::from_str::<Value>(&a.text).is_err());

    s.set_fault(Some(Fault::Delay(Duration::from_millis(300))));
    // The delay itself is exercised by the proxy's upstream-timeout test; here only that a
    // delayed answer is still a normal one.
    let a = password_grant(&s).await;
    assert_eq!(a.status, StatusCode::OK);

    s.set_fault(Some(Fault::Close));
    let body = form(&[("grant_type", "password")]);
    let closed = http()
        .post(s.token_url())
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", basic(ID, SECRET))
        .body(body)
        .send()
        .await;
    assert!(closed.is_err(), "{closed:?}");

    s.set_fault(None);
    assert_eq!(password_grant(&s).await.status, StatusCode::OK);
    assert_eq!(s.token_calls(), 5);
}

#[tokio::test]
async fn token_delay_is_honoured() {
    let config = StandinConfig { token_delay: Duration::from_millis(500), ..StandinConfig::default() };
    let s = start(config).await;
    // Both requests are recorded before either is answered: the delay comes after recording.
    let pending = tokio::spawn({
        let s = s.clone();
        async move { tokio::join!(password_grant(&s), password_grant(&s)) }
    });
    while s.token_calls() < 2 {
        tokio::task::yield_now().await;
    }
    let (a, b) = pending.await.unwrap();
    assert_eq!((a.status, b.status), (StatusCode::OK, StatusCode::OK));
    assert_ne!(field(&a, "access_token"), field(&b, "access_token"));
}

#[tokio::test]
async fn authorize_redirects_with_encoded_state() {
    let s = start(StandinConfig::default()).await;
    let cb = "http://localhost:9/cb?x=1";
    let state = "a b&c=d/é?#";
    let query = form(&[
        ("response_type", "code"),
        ("client_id", ID),
        ("redirect_uri", cb),
        ("state", state),
        ("scope", "collab:"),
    ]);
    let url = format!("{}?{query}", s.authorize_url());
    let a = answer(http().get(&url).send().await.expect("send")).await;
    assert_eq!(a.status, StatusCode::FOUND);
    let location = url::Url::parse(a.header("location")).expect("location");
    assert_eq!(location.path(), "/cb");
    let pairs: Vec<(String, String)> = location.query_pairs().into_owned().collect();
    assert_eq!(pairs.len(), 3, "{pairs:?}");
    assert_eq!(pairs[0], ("x".into(), "1".into()));
    assert_eq!(pairs[1].0, "code");
    assert_eq!(pairs[2], ("state".into(), state.into()));
    let code = pairs[1].1.clone();
    let exchange = [("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", cb)];
    assert_eq!(token(&s, &exchange).await.status, StatusCode::OK);
}

#[tokio::test]
async fn authorize_without_redirect_and_errors() {
    let s = start(StandinConfig::default()).await;
    let url = format!("{}?response_type=code&client_id={ID}&state=xyz", s.authorize_url());
    let a = answer(http().get(&url).send().await.expect("send")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["state"], "xyz");
    let code = a.json()["code"].as_str().expect("code").to_owned();
    let pairs = [("grant_type", "authorization_code"), ("code", &code)];
    assert_eq!(token(&s, &pairs).await.status, StatusCode::OK);

    for query in [
        "response_type=token&client_id=demo-client&redirect_uri=http%3A%2F%2Fx%2F",
        "response_type=code&client_id=nobody&redirect_uri=http%3A%2F%2Fx%2F",
        "response_type=code&redirect_uri=http%3A%2F%2Fx%2F",
        "response_type=code&client_id=demo-client&redirect_uri=not-a-url",
    ] {
        let url = format!("{}?{query}", s.authorize_url());
        let a = answer(http().get(&url).send().await.expect("send")).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{query}");
        assert!(a.headers.get("location").is_none());
    }
}

#[tokio::test]
async fn requests_are_recorded_in_order() {
    let s = start(StandinConfig::default()).await;
    let a = password_grant(&s).await;
    assert_eq!(a.status, StatusCode::OK);
    let missing = http()
        .put(format!("{}/nowhere?a=1", s.api_base()))
        .header("x-probe", HeaderValue::from_static("yes"))
        .body("payload")
        .send()
        .await
        .expect("send");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    let recorded = s.requests();
    assert_eq!(recorded.len(), 2);
    let first = &recorded[0];
    assert_eq!(first.method, http::Method::POST);
    assert_eq!(first.path, "/oauth/v2/token");
    assert_eq!(first.query, None);
    assert_eq!(first.headers.get("authorization").map(|v| v.as_bytes()), Some(basic(ID, SECRET).as_bytes()));
    let body: Vec<(String, String)> = form_urlencoded::parse(&first.body).into_owned().collect();
    assert_eq!(body[0], ("grant_type".into(), "password".into()));
    let second = &recorded[1];
    assert_eq!(second.method, http::Method::PUT);
    assert_eq!(second.path, "/nowhere");
    assert_eq!(second.query.as_deref(), Some("a=1"));
    assert_eq!(second.headers.get("x-probe").map(|v| v.as_bytes()), Some(&b"yes"[..]));
    assert_eq!(&second.body[..], b"payload");
    assert_eq!(s.token_calls(), 1);

    s.clear_requests();
    assert!(s.requests().is_empty());
    assert_eq!(s.token_calls(), 0);
}

#[tokio::test]
async fn oversized_body_gets_413() {
    let s = start(StandinConfig::default()).await;
    let big = "a=".to_owned() + &"x".repeat(2 * 1024 * 1024);
    let a = post_raw(&s, Some(&basic(ID, SECRET)), "application/x-www-form-urlencoded", big).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(s.token_calls(), 1);
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let s = start(StandinConfig::default()).await;
    let addr = s.addr();
    s.shutdown();
    assert!(crate::support::poll_until(async || tokio::net::TcpStream::connect(addr).await.is_err()).await);
}

#[tokio::test]
async fn serves_http2_prior_knowledge() {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let s = start(StandinConfig::default()).await;
    let client = Client::builder(TokioExecutor::new()).http2_only(true).build_http::<Full<bytes::Bytes>>();
    let body =
        form(&[("grant_type", "password"), ("username", "demo@example.com"), ("password", "demo-password")]);
    let req = http::Request::post(s.token_url())
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", basic(ID, SECRET))
        .body(Full::new(bytes::Bytes::from(body)))
        .expect("request");
    let resp = client.request(req).await.expect("h2 request");
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), http::StatusCode::OK);
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let v: Value = serde_json::from_slice(&bytes).expect("json");
    assert!(s.is_access_token_valid(v["access_token"].as_str().expect("at")));
}
