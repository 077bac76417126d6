//! A legacy answer always has `expires_in` (docs/protocol.md#the-legacy-answer): an upstream answer
//! that omits it, or sends `null` (RFC 6749 allows both), gets `legacy.default_expires_in`, and
//! each such answer is counted in `/metrics`.

use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::support::*;

/// A token endpoint that answers every request with 200 and the body set last.
struct Fake {
    token_url: String,
    body: Arc<Mutex<String>>,
}

impl Fake {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let token_url = format!("http://{}/oauth/v2/token", listener.local_addr().unwrap());
        let body = Arc::new(Mutex::new(String::new()));
        let answer = Arc::clone(&body);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let answer = Arc::clone(&answer);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    while read_request(&mut stream, &mut buf).await.is_some() {
                        let body = answer.lock().unwrap().clone();
                        let out = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if stream.write_all(out.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { token_url, body }
    }

    fn answer(&self, body: &str) {
        *self.body.lock().unwrap() = body.to_owned();
    }
}

async fn shim(fake: &Fake, extra: &str) -> Harness {
    let standin = start_standin(standin_config()).await;
    let toml = format!("[upstream]\ntoken_url = \"{}\"\n{extra}", fake.token_url);
    let config = shim_config(&standin, &toml);
    Harness::with_config(standin, config).await
}

async fn legacy(h: &Harness, query: &str) -> Value {
    let resp =
        http().get(h.url(&format!("/oauth/access_token?{query}&client_id={ID}"))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

async fn defaulted(h: &Harness) -> String {
    let metrics = get_text(h.admin_url("/metrics")).await;
    metrics
        .lines()
        .find(|l| l.starts_with("oauth_shim_legacy_expires_in_defaulted_total{"))
        .unwrap_or_else(|| panic!("no counter in /metrics:\n{metrics}"))
        .to_owned()
}

const LOGIN: &str = "grant_type=password&user_id=u&password=p";

#[tokio::test]
async fn a_legacy_answer_without_expires_in_gets_the_configured_default() {
    let fake = Fake::start().await;
    let h = shim(&fake, "").await;

    fake.answer(r#"{"access_token":"at-1","token_type":"Bearer","refresh_token":"rt-1"}"#);
    let v = legacy(&h, LOGIN).await;
    assert_eq!((v["access_token"].as_str(), v["expires_in"].as_str()), (Some("at-1"), Some("3600")), "{v}");
    fake.answer(r#"{"access_token":"at-2","expires_in":null,"refresh_token":"rt-2"}"#);
    let v = legacy(&h, LOGIN).await;
    assert_eq!(v["expires_in"], "3600", "{v}");
    // A refresh (then its replay from the cache) too.
    let v = legacy(&h, "grant_type=refresh_token&refresh_token=rt-2").await;
    assert_eq!(v["expires_in"], "3600", "{v}");
    let again = legacy(&h, "grant_type=refresh_token&refresh_token=rt-2").await;
    assert_eq!(again["access_token"], v["access_token"]);
    assert!(again["expires_in"].as_str().is_some_and(|s| s.parse::<u64>().unwrap() <= 3600), "{again}");
    assert_eq!(defaulted(&h).await, r#"oauth_shim_legacy_expires_in_defaulted_total{provider="default"} 4"#);

    // The upstream's own lifetime is never replaced, nor counted.
    fake.answer(r#"{"access_token":"at-3","expires_in":60}"#);
    assert_eq!(legacy(&h, LOGIN).await["expires_in"], "60");
    assert_eq!(defaulted(&h).await, r#"oauth_shim_legacy_expires_in_defaulted_total{provider="default"} 4"#);
}

#[tokio::test]
async fn the_default_is_configurable() {
    let fake = Fake::start().await;
    let h = shim(&fake, "[legacy]\ndefault_expires_in = \"2h\"\n").await;
    fake.answer(r#"{"access_token":"at-1"}"#);
    assert_eq!(legacy(&h, LOGIN).await["expires_in"], "7200");
}
