//! `/oauth/access_token`: every grant in every legacy form, checked at both ends (what reached
//! the upstream, what the caller got), and every error case of docs/protocol.md#errors.

use std::time::Duration;

use oauth_shim::devtools::standin::{Fault, Recorded, StandinConfig};
use serde_json::Value;

use crate::support::*;

/// How a legacy client sends its parameters.
#[derive(Debug, Clone, Copy)]
enum Via {
    Get,
    Form,
    Json,
}

const FORMS: [Via; 3] = [Via::Get, Via::Form, Via::Json];

fn encode(params: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        s.append_pair(k, v);
    }
    s.finish()
}

async fn send(h: &Harness, form: Via, params: &[(&str, &str)]) -> reqwest::Response {
    let url = h.url("/oauth/access_token");
    let req = match form {
        Via::Get => http().get(format!("{url}?{}", encode(params))),
        Via::Form => {
            http().post(url).header("content-type", "application/x-www-form-urlencoded").body(encode(params))
        }
        Via::Json => {
            let obj: serde_json::Map<String, Value> =
                params.iter().map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect();
            http().post(url).header("content-type", "application/json").body(Value::Object(obj).to_string())
        }
    };
    req.send().await.unwrap()
}

/// The last request the upstream saw on its token path.
fn last_token_request(h: &Harness) -> Recorded {
    h.standin
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path == "/oauth/v2/token")
        .expect("a token call upstream")
}

/// What every rewritten call must look like at the upstream.
fn assert_v2_request(r: &Recorded, expected_body: &[(&str, &str)]) {
    assert_eq!(r.method, http::Method::POST);
    assert_eq!(r.headers["content-type"], "application/x-www-form-urlencoded");
    assert_eq!(r.headers["accept"], "application/json");
    assert_eq!(
        decode_basic(r.headers["authorization"].to_str().unwrap()),
        (ID.to_string(), SECRET.to_string())
    );
    let got = form_pairs(&r.body);
    let want: Vec<(String, String)> =
        expected_body.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert_eq!(got, want);
    assert!(got.iter().all(|(k, _)| k != "client_id" && k != "client_secret"));
}

const LEGACY_ORDER: [&str; 11] = [
    "access_token",
    "expires_in",
    "refresh_token",
    "organizer_key",
    "account_key",
    "account_type",
    "firstName",
    "lastName",
    "email",
    "platform",
    "version",
];

/// The legacy shape, field for field, in legacy order; returns the body.
async fn assert_legacy_success(h: &Harness, resp: reqwest::Response) -> serde_json::Map<String, Value> {
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert_eq!(resp.headers()["pragma"], "no-cache");
    let body: serde_json::Map<String, Value> = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    let keys: Vec<&str> = body.keys().map(String::as_str).collect();
    assert_eq!(keys, LEGACY_ORDER);
    assert_eq!(body["expires_in"], "3600");
    assert_eq!(body["organizer_key"], "18889842069694200");
    assert_eq!(body["account_key"], "3792882212321659654");
    assert_eq!(body["account_type"], "");
    assert_eq!(body["firstName"], "Jon");
    assert_eq!(body["lastName"], "Karmak");
    assert_eq!(body["email"], "jk@example.com");
    assert_eq!(body["platform"], "GLOBAL");
    assert_eq!(body["version"], "2");
    assert!(h.standin.is_access_token_valid(body["access_token"].as_str().unwrap()));
    body
}

async fn assert_error(resp: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(resp.status(), status);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(body["error"], code, "{body}");
    assert_eq!(body["int_err_code"], code);
    assert_eq!(body["msg"], body["error_description"]);
    assert!(body["error_description"].as_str().is_some_and(|d| !d.is_empty()));
    body
}

#[tokio::test]
async fn authorization_code_in_every_form() {
    let h = Harness::default().await;
    for form in FORMS {
        let code = h.standin.issue_code(ID, None);
        let resp =
            send(&h, form, &[("grant_type", "authorization_code"), ("code", &code), ("client_id", ID)]).await;
        assert_legacy_success(&h, resp).await;
        assert_v2_request(&last_token_request(&h), &[("grant_type", "authorization_code"), ("code", &code)]);
    }
}

#[tokio::test]
async fn password_grant_in_every_form_renames_user_id() {
    let h = Harness::default().await;
    for form in FORMS {
        let resp = send(
            &h,
            form,
            &[
                ("grant_type", "password"),
                ("user_id", "demo@example.com"),
                ("password", "demo-password"),
                ("client_id", ID),
            ],
        )
        .await;
        assert_legacy_success(&h, resp).await;
        assert_v2_request(
            &last_token_request(&h),
            &[("grant_type", "password"), ("username", "demo@example.com"), ("password", "demo-password")],
        );
    }
}

#[tokio::test]
async fn refresh_in_every_form() {
    let h = Harness::start(standin_config(), "[refresh_cache]\nttl = \"0s\"\n").await;
    for form in FORMS {
        let code = h.standin.issue_code(ID, None);
        let first =
            send(&h, Via::Get, &[("grant_type", "authorization_code"), ("code", &code), ("client_id", ID)])
                .await
                .json::<Value>()
                .await
                .unwrap();
        let rt = first["refresh_token"].as_str().unwrap().to_owned();
        let resp =
            send(&h, form, &[("grant_type", "refresh_token"), ("refresh_token", &rt), ("client_id", ID)])
                .await;
        let body = assert_legacy_success(&h, resp).await;
        assert_eq!(body["refresh_token"], rt.as_str());
        assert_v2_request(
            &last_token_request(&h),
            &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
        );
    }
}

#[tokio::test]
async fn refresh_answer_without_refresh_token_echoes_the_sent_one() {
    let standin = StandinConfig { omit_refresh_token_on_refresh: true, ..standin_config() };
    let h = Harness::start(standin, "").await;
    let code = h.standin.issue_code(ID, None);
    let first: Value =
        send(&h, Via::Get, &[("grant_type", "authorization_code"), ("code", &code), ("client_id", ID)])
            .await
            .json()
            .await
            .unwrap();
    let rt = first["refresh_token"].as_str().unwrap();
    let resp =
        send(&h, Via::Form, &[("grant_type", "refresh_token"), ("refresh_token", rt), ("client_id", ID)])
            .await;
    let body = assert_legacy_success(&h, resp).await;
    assert_eq!(body["refresh_token"], rt);
}

#[tokio::test]
async fn redirect_uri_caller_then_configured_and_extras_forwarded() {
    let standin = start_standin(standin_config()).await;
    let mut config = shim_config(&standin, "");
    config.clients[0].redirect_uri = Some("https://app.example/cb".into());
    let h = Harness::with_config(standin, config).await;

    let code = h.standin.issue_code(ID, Some("https://app.example/cb"));
    let resp = send(
        &h,
        Via::Get,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", ID),
            ("junk", "x"),
            ("client_secret", ""),
        ],
    )
    .await;
    assert_legacy_success(&h, resp).await;
    assert_v2_request(
        &last_token_request(&h),
        &[("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", "https://app.example/cb")],
    );

    let code = h.standin.issue_code(ID, Some("https://other.example/cb"));
    let resp = send(
        &h,
        Via::Json,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", ID),
            ("redirect_uri", "https://other.example/cb"),
            ("code_verifier", "verifier-123"),
            ("scope", "collab"),
        ],
    )
    .await;
    assert_legacy_success(&h, resp).await;
    assert_v2_request(
        &last_token_request(&h),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "https://other.example/cb"),
            ("code_verifier", "verifier-123"),
            ("scope", "collab"),
        ],
    );
}

#[tokio::test]
async fn caller_credentials_secret_param_and_basic_header() {
    let h = Harness::default().await;
    let pw = [("grant_type", "password"), ("user_id", "demo@example.com"), ("password", "demo-password")];

    // Right secret as a parameter: accepted.
    let mut p = pw.to_vec();
    p.extend([("client_id", ID), ("client_secret", SECRET)]);
    assert_legacy_success(&h, send(&h, Via::Form, &p).await).await;

    // Wrong secret: invalid_client, no upstream call.
    let calls = h.standin.token_calls();
    let mut p = pw.to_vec();
    p.extend([("client_id", ID), ("client_secret", "wrong")]);
    assert_error(send(&h, Via::Form, &p).await, 401, "invalid_client").await;
    assert_eq!(h.standin.token_calls(), calls);

    // Caller's own Basic header (form-urlencoded before base64) instead of parameters.
    let resp = http()
        .post(h.url("/oauth/access_token"))
        .header(
            "authorization",
            oauth_shim::oauth::basic_auth_header(ID, &oauth_shim::oauth::Secret::new(SECRET)),
        )
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&pw))
        .send()
        .await
        .unwrap();
    assert_legacy_success(&h, resp).await;

    // Basic header with a wrong secret: 401 with a Basic challenge.
    let resp = http()
        .post(h.url("/oauth/access_token"))
        .header(
            "authorization",
            oauth_shim::oauth::basic_auth_header(ID, &oauth_shim::oauth::Secret::new("nope")),
        )
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&pw))
        .send()
        .await
        .unwrap();
    assert!(resp.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    assert_error(resp, 401, "invalid_client").await;
}

#[tokio::test]
async fn unknown_or_missing_client_never_reaches_upstream() {
    let h = Harness::default().await;
    for params in [
        vec![("grant_type", "refresh_token"), ("refresh_token", "r"), ("client_id", "nobody")],
        vec![("grant_type", "refresh_token"), ("refresh_token", "r")],
        // Byte for byte: a case variant is a different client.
        vec![("grant_type", "refresh_token"), ("refresh_token", "r"), ("client_id", "LEGACY-CLIENT")],
    ] {
        assert_error(send(&h, Via::Get, &params).await, 401, "invalid_client").await;
    }
    assert_eq!(h.standin.token_calls(), 0);
}

#[tokio::test]
async fn request_errors() {
    let h = Harness::default().await;
    type Case<'a> = (Vec<(&'a str, &'a str)>, u16, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (vec![("client_id", ID)], 400, "invalid_request", "grant_type"),
        (vec![("grant_type", "authorization_code"), ("client_id", ID)], 400, "invalid_request", "code"),
        (vec![("grant_type", "refresh_token"), ("client_id", ID)], 400, "invalid_request", "refresh_token"),
        (
            vec![("grant_type", "password"), ("client_id", ID), ("password", "x")],
            400,
            "invalid_request",
            "user_id",
        ),
        (
            vec![("grant_type", "client_credentials"), ("client_id", ID)],
            400,
            "unsupported_grant_type",
            "grant_type",
        ),
        (
            vec![
                ("grant_type", "password"),
                ("client_id", ID),
                ("user_id", "a"),
                ("username", "b"),
                ("password", "x"),
            ],
            400,
            "invalid_request",
            "conflicting",
        ),
    ];
    for (params, status, code, needle) in cases {
        for form in FORMS {
            let body = assert_error(send(&h, form, &params).await, status, code).await;
            assert!(body["error_description"].as_str().unwrap().contains(needle), "{form:?} {body}");
        }
    }
    assert_eq!(h.standin.token_calls(), 0);
}

#[tokio::test]
async fn duplicates_conflicts_json_types_content_types_methods_and_sizes() {
    let h = Harness::default().await;
    let url = h.url("/oauth/access_token");
    let q = format!("?grant_type=refresh_token&refresh_token=r&client_id={ID}");

    // Same name twice in one source.
    let resp = http().get(format!("{url}{q}&refresh_token=r")).send().await.unwrap();
    assert!(assert_error(resp, 400, "invalid_request").await.to_string().contains("repeated"));
    // Different values across sources.
    let resp = http()
        .post(format!("{url}{q}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("refresh_token=other")
        .send()
        .await
        .unwrap();
    assert!(assert_error(resp, 400, "invalid_request").await.to_string().contains("conflicting"));
    // JSON values must be strings.
    let resp = http()
        .post(&url)
        .header("content-type", "application/json")
        .body(format!(r#"{{"grant_type":"refresh_token","refresh_token":7,"client_id":"{ID}"}}"#))
        .send()
        .await
        .unwrap();
    assert!(assert_error(resp, 400, "invalid_request").await.to_string().contains("strings"));
    // Malformed JSON.
    let resp =
        http().post(&url).header("content-type", "application/json").body("{\"a\":").send().await.unwrap();
    assert_error(resp, 400, "invalid_request").await;
    // Wrong content type.
    let resp =
        http().post(&url).header("content-type", "text/plain").body("grant_type=x").send().await.unwrap();
    assert_error(resp, 415, "invalid_request").await;
    // Wrong method.
    let resp = http().put(format!("{url}{q}")).send().await.unwrap();
    assert_eq!(resp.headers()["allow"], "GET, POST");
    assert_error(resp, 405, "invalid_request").await;
    // Body over server.max_body_bytes (64 KiB by default).
    let big = format!("grant_type=refresh_token&client_id={ID}&refresh_token={}", "a".repeat(70 * 1024));
    let resp = http()
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_error(resp, 413, "invalid_request").await;
    assert_eq!(h.standin.token_calls(), 0);
}

#[tokio::test]
async fn get_with_content_length_zero_and_empty_or_bare_secret() {
    let h = Harness::default().await;
    let q = format!(
        "/oauth/access_token?grant_type=password&user_id=demo%40example.com&password=demo-password&client_id={ID}&client_secret"
    );
    let resp = http().get(h.url(&q)).header("content-length", "0").send().await.unwrap();
    assert_legacy_success(&h, resp).await;
    let resp = http().get(h.url(&format!("{q}="))).send().await.unwrap();
    assert_legacy_success(&h, resp).await;
}

#[tokio::test]
async fn password_grant_refused_unless_allowed() {
    let standin = start_standin(standin_config()).await;
    let mut config = shim_config(&standin, "");
    config.clients[0].allow_password_grant = false;
    let h = Harness::with_config(standin, config).await;
    let resp = send(
        &h,
        Via::Get,
        &[
            ("grant_type", "password"),
            ("user_id", "demo@example.com"),
            ("password", "demo-password"),
            ("client_id", ID),
        ],
    )
    .await;
    assert_error(resp, 400, "unauthorized_client").await;
    assert_eq!(h.standin.token_calls(), 0);
}

#[tokio::test]
async fn deny_and_passthrough_modes() {
    let extra = "[[clients]]\nid = \"retired\"\nsecret = \"x\"\nmode = \"deny\"\n\
                 [[clients]]\nid = \"old-school\"\nsecret = \"y\"\nmode = \"passthrough\"\n";
    let h = Harness::start(standin_config(), extra).await;

    let resp = send(
        &h,
        Via::Get,
        &[("grant_type", "refresh_token"), ("refresh_token", "r"), ("client_id", "retired")],
    )
    .await;
    let body = assert_error(resp, 400, "unauthorized_client").await;
    assert!(body["msg"].as_str().unwrap().contains("must migrate"));
    assert_eq!(h.standin.requests().len(), 0);

    // Pass-through: the call goes to the API base unchanged (the stand-in has no legacy endpoint
    // and answers 404, which is passed back as is).
    let resp = http()
        .post(h.url("/oauth/access_token?client_id=old-school"))
        .header("content-type", "application/json")
        .body(r#"{"grant_type":"refresh_token","refresh_token":"r"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let r = h.standin.requests().pop().unwrap();
    assert_eq!(
        (r.method.as_str(), r.path.as_str(), r.query.as_deref()),
        ("POST", "/oauth/access_token", Some("client_id=old-school"))
    );
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(&r.body[..], br#"{"grant_type":"refresh_token","refresh_token":"r"}"#);
}

#[tokio::test]
async fn upstream_errors_are_mapped_and_never_echoed() {
    let h = Harness::default().await;
    let pw = [
        ("grant_type", "password"),
        ("user_id", "demo@example.com"),
        ("password", "demo-password"),
        ("client_id", ID),
    ];

    // Upstream invalid_grant (wrong password) -> 400 invalid_grant.
    let bad = [
        ("grant_type", "password"),
        ("user_id", "demo@example.com"),
        ("password", "nope"),
        ("client_id", ID),
    ];
    assert_error(send(&h, Via::Get, &bad).await, 400, "invalid_grant").await;
    // A used code -> invalid_grant.
    let code = h.standin.issue_code(ID, None);
    let p = [("grant_type", "authorization_code"), ("code", code.as_str()), ("client_id", ID)];
    assert_eq!(send(&h, Via::Get, &p).await.status(), 200);
    assert_error(send(&h, Via::Get, &p).await, 400, "invalid_grant").await;

    let cases = [
        (
            Fault::Status(400, r#"{"error":"invalid_scope","error_description":"UPSTREAM-LEAK"}"#.into()),
            400,
            "invalid_scope",
        ),
        (
            Fault::Status(401, r#"{"error":"invalid_client","error_description":"UPSTREAM-LEAK"}"#.into()),
            401,
            "invalid_client",
        ),
        (Fault::Status(500, "UPSTREAM-LEAK stack trace".into()), 502, "server_error"),
        (Fault::Status(503, "UPSTREAM-LEAK".into()), 502, "temporarily_unavailable"),
        (Fault::Status(429, "UPSTREAM-LEAK".into()), 429, "temporarily_unavailable"),
        (Fault::Status(400, "<html>UPSTREAM-LEAK</html>".into()), 502, "server_error"),
        (Fault::Garbage, 502, "server_error"),
        (Fault::Close, 502, "temporarily_unavailable"),
        (Fault::Delay(Duration::from_secs(5)), 504, "temporarily_unavailable"),
    ];
    for (fault, status, code) in cases {
        h.standin.set_fault(Some(fault.clone()));
        let body = assert_error(send(&h, Via::Get, &pw).await, status, code).await;
        assert!(!body.to_string().contains("UPSTREAM-LEAK"), "{fault:?}: {body}");
    }
}

#[tokio::test]
async fn upstream_unreachable_is_502() {
    // A port with nothing listening: bind, note the address, drop the listener.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let standin = start_standin(standin_config()).await;
    let mut config = shim_config(&standin, "");
    config.upstream.token_url = format!("http://{addr}/oauth/v2/token");
    let h = Harness::with_config(standin, config).await;
    let resp =
        send(&h, Via::Get, &[("grant_type", "refresh_token"), ("refresh_token", "r"), ("client_id", ID)])
            .await;
    assert_error(resp, 502, "temporarily_unavailable").await;
}

#[tokio::test]
async fn upstream_answer_over_the_size_cap_is_garbage_and_nothing_is_retried() {
    let h = Harness::start(standin_config(), "[upstream]\nmax_response_bytes = 1024\n").await;
    let pw = [
        ("grant_type", "password"),
        ("user_id", "demo@example.com"),
        ("password", "demo-password"),
        ("client_id", ID),
    ];
    let big = format!(r#"{{"access_token":"{}","expires_in":3600}}"#, "a".repeat(4096));
    h.standin.set_fault(Some(Fault::Status(200, big)));
    assert_error(send(&h, Via::Get, &pw).await, 502, "server_error").await;
    // An upstream that drops the connection after receiving the request is not asked again:
    // the request may have reached it.
    h.standin.clear_requests();
    h.standin.set_fault(Some(Fault::Close));
    assert_error(send(&h, Via::Get, &pw).await, 502, "temporarily_unavailable").await;
    assert_eq!(h.standin.token_calls(), 1);
}
