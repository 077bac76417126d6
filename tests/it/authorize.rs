//! `/oauth/authorize`: the exact `Location` for each variant, and every refusal without one.

use http::StatusCode;

use crate::passthrough::Echo;
use crate::support::*;

/// Appended to the harness's default client.
const CLIENTS: &str = r#"
[[clients]]
id = "with-default"
secret = "x"
redirect_uri = "https://app.example/default-cb"
[[clients]]
id = "allow-listed"
secret = "x"
redirect_uri_allow = ["https://app.example/cb", "https://app.example/other"]
[[clients]]
id = "odd id+&"
secret = "x"
[[clients]]
id = "moved-on"
secret = "x"
mode = "deny"
"#;

async fn harness() -> Harness {
    Harness::start(standin_config(), CLIENTS).await
}

async fn get(h: &Harness, query: &str) -> reqwest::Response {
    http().get(h.url(&format!("/oauth/authorize?{query}"))).send().await.unwrap()
}

async fn location(h: &Harness, query: &str) -> String {
    let resp = get(h, query).await;
    assert_eq!(resp.status(), StatusCode::FOUND, "{query}");
    assert_eq!(resp.headers()["cache-control"], "no-store");
    resp.headers()["location"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn redirects_with_exact_location() {
    let h = harness().await;
    let up = h.standin.authorize_url();
    // Minimal legacy call: no response_type needed.
    assert_eq!(
        location(&h, &format!("client_id={ID}")).await,
        format!("{up}?response_type=code&client_id={ID}")
    );
    // Every forwarded parameter, in a fixed order, re-encoded; unknown ones dropped; empty ones
    // (an empty response_type too: a legacy call) count as absent.
    let q = "foo=bar&code_challenge_method=S256&scope=collab%3A+webinar&state=a%20b%26c%3Dd%2F%C3%A9%3F%23\
             &redirect_uri=https%3A%2F%2Fapp.example%2Fcb%3Fx%3D1&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM\
             &client_id=legacy-client&response_type=&prompt=&access_type=offline";
    assert_eq!(
        location(&h, q).await,
        format!(
            "{up}?response_type=code&client_id={ID}&redirect_uri=https%3A%2F%2Fapp.example%2Fcb%3Fx%3D1\
             &state=a+b%26c%3Dd%2F%C3%A9%3F%23&scope=collab%3A+webinar\
             &code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256"
        )
    );
    // CR/LF (or any control character) in a parameter: refused, no redirect at all.
    let resp =
        get(&h, &format!("client_id={ID}&state=x%0D%0ALocation%3A%20https%3A%2F%2Fevil.example")).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.headers().get("location").is_none());
    // The client's configured redirect_uri when the caller sends none.
    assert_eq!(
        location(&h, "client_id=with-default&state=s").await,
        format!(
            "{up}?response_type=code&client_id=with-default&redirect_uri=https%3A%2F%2Fapp.example%2Fdefault-cb&state=s"
        )
    );
    // The caller's wins over the configured one.
    assert_eq!(
        location(&h, "client_id=with-default&redirect_uri=https%3A%2F%2Fapp.example%2Fmine").await,
        format!(
            "{up}?response_type=code&client_id=with-default&redirect_uri=https%3A%2F%2Fapp.example%2Fmine"
        )
    );
    // A client id with reserved characters is re-encoded.
    assert_eq!(
        location(&h, "client_id=odd+id%2B%26").await,
        format!("{up}?response_type=code&client_id=odd+id%2B%26")
    );
    // Allow-listed redirect_uri.
    assert_eq!(
        location(&h, "client_id=allow-listed&redirect_uri=https%3A%2F%2Fapp.example%2Fother").await,
        format!(
            "{up}?response_type=code&client_id=allow-listed&redirect_uri=https%3A%2F%2Fapp.example%2Fother"
        )
    );
    assert!(h.standin.requests().is_empty(), "a redirect needs no upstream call");
}

#[tokio::test]
async fn location_comes_from_configuration_only() {
    let h = harness().await;
    let up = h.standin.authorize_url();
    let raw = raw_exchange(
        h.proxy_addr(),
        format!(
            "GET /oauth/authorize?client_id={ID}&state=s HTTP/1.1\r\nHost: evil.example\r\n\
             X-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: https\r\nForwarded: host=evil.example\r\n\
             X-Original-URL: /evil\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(raw_status(&raw), 302, "{raw}");
    let want = format!("location: {up}?response_type=code&client_id={ID}&state=s\r\n");
    assert!(raw.to_ascii_lowercase().contains(&want.to_ascii_lowercase()), "{raw}");
    assert!(!raw.contains("evil"), "{raw}");

    // A configured authorize URL with its own query keeps it, ours appended.
    let h = Harness::start(
        standin_config(),
        "[upstream]\nauthorize_url = \"https://login.example/oauth/authorize?tenant=t1\"\n",
    )
    .await;
    assert_eq!(
        location(&h, &format!("client_id={ID}&state=s")).await,
        format!("https://login.example/oauth/authorize?tenant=t1&response_type=code&client_id={ID}&state=s")
    );
}

#[tokio::test]
async fn refusals_are_an_error_and_never_a_redirect() {
    let h = harness().await;
    let cases: [(&str, u16, &str); 8] = [
        ("client_id=nobody&redirect_uri=https%3A%2F%2Fevil.example%2F", 400, "invalid_client"),
        ("redirect_uri=https%3A%2F%2Fapp.example%2Fcb", 400, "invalid_request"),
        ("client_id=allow-listed&redirect_uri=https%3A%2F%2Fevil.example%2Fcb", 400, "invalid_request"),
        // Allow-list matches whole strings only.
        ("client_id=allow-listed&redirect_uri=https%3A%2F%2Fapp.example%2Fcb%2F..", 400, "invalid_request"),
        (&format!("client_id={ID}&client_id=other"), 400, "invalid_request"),
        (&format!("client_id={ID}&state=a&state=b"), 400, "invalid_request"),
        (
            &format!("client_id={ID}&redirect_uri=https%3A%2F%2Fa%2F&redirect_uri=https%3A%2F%2Fb%2F"),
            400,
            "invalid_request",
        ),
        ("client_id=moved-on", 400, "unauthorized_client"),
    ];
    for (query, status, error) in cases {
        let resp = get(&h, query).await;
        assert_eq!(resp.status().as_u16(), status, "{query}");
        assert!(resp.headers().get("location").is_none(), "{query}");
        assert_eq!(resp.headers()["content-type"], "application/json", "{query}");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["error"], error, "{query}");
    }
    let resp = http().post(h.url(&format!("/oauth/authorize?client_id={ID}"))).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(resp.headers().get("location").is_none());

    // Browsers get a small HTML page that does not reflect the caller's input.
    let resp = http()
        .get(h.url("/oauth/authorize?client_id=%3Cscript%3Ealert(1)%3C%2Fscript%3E"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.headers().get("location").is_none());
    assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
    let page = resp.text().await.unwrap();
    assert!(page.contains("invalid_client"), "{page}");
    assert!(!page.contains("script"), "{page}");
    assert!(h.standin.requests().is_empty(), "no upstream call for a refusal");
}

#[tokio::test]
async fn passthrough_client_is_forwarded_unchanged() {
    let echo = Echo::start().await;
    let toml =
        format!("{}[[clients]]\nid = \"v2-ready\"\nsecret = \"x\"\nmode = \"passthrough\"\n", echo.toml());
    let h = Harness::start(standin_config(), &toml).await;
    let q = "client_id=v2-ready&state=a%20b&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&extra=1";
    let resp = get(&h, q).await;
    assert_eq!(resp.status(), 200, "the upstream's answer");
    assert!(resp.headers().get("location").is_none());
    let seen = echo.seen().pop().unwrap();
    assert_eq!((seen.path.as_str(), seen.query.as_deref()), ("/oauth/authorize", Some(q)));
}

/// The whole browser flow: shim redirect → v2 authorize (the stand-in approves) → code →
/// legacy code exchange through the shim.
#[tokio::test]
async fn redirect_leads_to_a_code_the_token_path_exchanges() {
    let h = harness().await;
    let cb = "http://127.0.0.1:9/cb";
    let loc =
        location(&h, &format!("client_id={ID}&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb&state=st")).await;
    let resp = http().get(&loc).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    let back = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    let pairs: std::collections::HashMap<_, _> = back.query_pairs().into_owned().collect();
    assert_eq!(pairs["state"], "st");
    let token_url = format!(
        "/oauth/access_token?grant_type=authorization_code&code={}&client_id={ID}&redirect_uri={}",
        pairs["code"],
        form_urlencoded::byte_serialize(cb.as_bytes()).collect::<String>()
    );
    let resp = http().get(h.url(&token_url)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert!(h.standin.is_access_token_valid(v["access_token"].as_str().unwrap()));
}

/// The write-ups' browser step, `{provider}/oauth/authorize?client_id=…&response_type=code&…`,
/// through oauth-shim on each provider's real authorize path (stand-ins on 127.0.0.1): GoTo
/// (`/oauth/v2/authorize`, the default), GoTo identity (`/oauth/authorize`, the preset),
/// WebinarGeek and VideoAsk (`/oauth/authorize`). A v2 app has no `[[clients]]` block: the call
/// is redirected with its query as sent, every parameter kept, and the provider approves it.
#[tokio::test]
async fn v2_authorize_calls_go_to_each_providers_authorize_url_as_sent() {
    let app = oauth_shim::devtools::standin::StandinClient {
        id: "v2-app".into(),
        secret: "v2-secret".into(),
        allow_password_grant: false,
    };
    let mut cfg = standin_config();
    cfg.clients.push(app);
    let start = || oauth_shim::devtools::standin::Standin::start(cfg.clone(), "127.0.0.1:0".parse().unwrap());
    let (goto, geek, videoask) = (start().await.unwrap(), start().await.unwrap(), start().await.unwrap());
    let provider = |name: &str, preset: &str, authorize: String| {
        format!(
            "[[providers]]\nname = \"{name}\"\n{preset}hosts = [\"{name}.shim.test\"]\ntoken_url = \"{t}\"\n\
             authorize_url = \"{authorize}\"\napi_base = \"{a}\"\n",
            t = goto.identity_token_url(),
            a = goto.api_base()
        )
    };
    let toml = [
        provider("goto-identity", "preset = \"goto-identity\"\n", goto.identity_authorize_url()),
        provider("webinargeek", "", geek.identity_authorize_url()),
        provider("videoask", "", videoask.identity_authorize_url()),
        format!("{CLIENTS}[[clients]]\nid = \"v2-app\"\nsecret = \"x\"\nprovider = \"videoask\"\nmode = \"deny\"\n"),
    ]
    .concat();
    let config = shim_config(&goto, &toml);
    let h = Harness::with_config(goto.clone(), config).await;
    let query = "client_id=v2-app&response_type=code&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb\
                 &state=s%20t&prompt=login&login_hint=a%40b.example&nonce=n-1&foo=bar+baz";
    for (host, authorize_url) in [
        ("shim.test", goto.authorize_url()),
        ("goto-identity.shim.test", goto.identity_authorize_url()),
        ("webinargeek.shim.test", geek.identity_authorize_url()),
        // A deny-mode client: only its legacy calls are refused.
        ("videoask.shim.test", videoask.identity_authorize_url()),
    ] {
        let resp = http()
            .get(h.url(&format!("/oauth/authorize?{query}")))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FOUND, "{host}");
        assert_eq!(resp.headers()["cache-control"], "no-store");
        let location = resp.headers()["location"].to_str().unwrap().to_owned();
        assert_eq!(location, format!("{authorize_url}?{query}"), "{host}");
        // The provider approves it and sends the browser back with a code and the state.
        let back = http().get(&location).send().await.unwrap();
        assert_eq!(back.status(), StatusCode::FOUND, "{host}");
        let back = url::Url::parse(back.headers()["location"].to_str().unwrap()).unwrap();
        let pairs: std::collections::HashMap<_, _> = back.query_pairs().into_owned().collect();
        assert_eq!(pairs["state"], "s t", "{host}");
        assert!(!pairs["code"].is_empty(), "{host}: a code");
    }

    // A configured client's v2 call keeps every parameter too; a configured authorize URL with
    // a query of its own keeps it.
    let q = format!("response_type=code&client_id={ID}&prompt=consent&login_hint=x&nonce=n&code_challenge=c");
    assert_eq!(location(&h, &q).await, format!("{}?{q}", goto.authorize_url()));

    // The report: a v2-native call of the configured client; the unknown app's calls are
    // unattributed, and no row is added for it.
    let report: oauth_shim::ops::migration::Report =
        http().get(h.admin_url("/migration")).send().await.unwrap().json().await.unwrap();
    let row = |id: &str, provider: &str| {
        report.clients.iter().find(|c| c.id.as_deref() == Some(id) && c.provider == provider).cloned()
    };
    let main = row(ID, "default").unwrap();
    assert_eq!(main.count(oauth_shim::ops::migration::Feature::V2Native), 1);
    assert_eq!(main.count(oauth_shim::ops::migration::Feature::AuthorizeWithoutResponseType), 0);
    let videoask_app = row("v2-app", "videoask").unwrap();
    assert_eq!(
        videoask_app.count(oauth_shim::ops::migration::Feature::V2Native),
        1,
        "configured for videoask"
    );
    assert!(row("v2-app", "default").is_none() && row("v2-app", "webinargeek").is_none());
    assert_eq!(report.unattributed_v2_native.count, 3);
}

/// A v2 call's query goes out byte for byte, however odd; the `Location` stays ASCII.
#[tokio::test]
async fn v2_authorize_query_is_kept_as_sent() {
    let h = harness().await;
    let up = h.standin.authorize_url();
    for q in [
        "response_type=token&client_id=anyone",
        "client_id=a&client_id=b&response_type=code&response_type=id_token",
        "response_type=code&scope=openid%20profile&redirect_uri=https://app.example/cb?x=1",
        "response_type=code&state=%0D%0ALocation:%20https://evil.example",
    ] {
        assert_eq!(location(&h, q).await, format!("{up}?{q}"), "{q}");
    }
    let raw = raw_exchange(
        h.proxy_addr(),
        b"GET /oauth/authorize?response_type=code&state=caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(raw.contains(&format!("location: {up}?response_type=code&state=caf%C3%A9\r\n")), "{raw}");
    // Still GET or HEAD only.
    let resp = http().post(h.url("/oauth/authorize?response_type=code&client_id=x")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
}

/// A legacy authorize call from an id oauth-shim does not know is refused and, being caller
/// input any web page can make a browser send, adds no row to the migration report.
#[tokio::test]
async fn legacy_authorize_by_an_unknown_client_adds_no_report_row() {
    let h = harness().await;
    for i in 0..3 {
        let resp = get(&h, &format!("client_id=arbitrary-{i}&state=s")).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    }
    assert_eq!(location(&h, &format!("client_id={ID}")).await.split('?').count(), 2);
    let report: oauth_shim::ops::migration::Report =
        http().get(h.admin_url("/migration")).send().await.unwrap().json().await.unwrap();
    assert!(
        !report.clients.iter().any(|c| c.id.as_deref().is_some_and(|id| id.starts_with("arbitrary-"))),
        "{:?}",
        report.clients
    );
    let main = report.clients.iter().find(|c| c.id.as_deref() == Some(ID)).unwrap();
    assert_eq!(main.count(oauth_shim::ops::migration::Feature::AuthorizeWithoutResponseType), 1);
    assert_eq!(main.count(oauth_shim::ops::migration::Feature::MissingRedirectUri), 1);
}
