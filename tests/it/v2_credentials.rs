//! v2 token calls carry their own credentials (docs/protocol.md#v2-token-calls): oauth-shim moves a
//! caller's `client_id` / `client_secret` (JSON, form or query → the Basic header or the form,
//! as the provider wants), and never adds the secret it holds for a configured client, whatever
//! the grant. Checked for both ways a provider takes credentials, on what reached the upstream.

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use oauth_shim::config::Config;
use oauth_shim::devtools::standin::Recorded;
use serde_json::{Value, json};

use crate::support::*;

/// The path of the stand-in's (and so the default provider's) token URL.
const TOKEN_PATH: &str = "/oauth/v2/token";

/// oauth-shim with [`ID`] configured (its secret [`SECRET`], the password grant not allowed),
/// against a stand-in that takes credentials as `client_secret_post` or Basic says.
async fn start(client_secret_post: bool) -> Harness {
    let mut standin_cfg = standin_config();
    standin_cfg.client_secret_post = client_secret_post;
    let standin = start_standin(standin_cfg).await;
    let auth = if client_secret_post { "client_secret_post" } else { "client_secret_basic" };
    let toml = format!(
        r#"
        [upstream]
        token_url = "{token}"
        authorize_url = "{authz}"
        api_base = "{api}"
        client_auth = "{auth}"
        request_timeout = "2s"
        [[clients]]
        id = "{ID}"
        secret = "{SECRET}"
        allow_password_grant = false
        "#,
        token = standin.token_url(),
        authz = standin.authorize_url(),
        api = standin.api_base(),
    );
    let figment = Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(&toml));
    let config = Config::from_figment(figment).expect("test config is valid");
    Harness::with_config(standin, config).await
}

fn last_token_call(h: &Harness) -> Recorded {
    h.standin.requests().into_iter().rev().find(|r| r.path == TOKEN_PATH).expect("a call upstream")
}

/// Whether the upstream call carried a client secret in any form: an `Authorization` header or a
/// `client_secret` form parameter.
fn carried_secret(r: &Recorded) -> bool {
    r.headers.contains_key("authorization") || form_pairs(&r.body).iter().any(|(k, _)| k == "client_secret")
}

async fn post(h: &Harness, content_type: &str, body: String) -> (u16, Value) {
    let resp =
        http().post(h.url(TOKEN_PATH)).header("content-type", content_type).body(body).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A refresh token of [`ID`], from a code exchange made directly at the stand-in.
async fn refresh_token_of_the_client(h: &Harness, client_secret_post: bool) -> String {
    let code = h.standin.issue_code(ID, None);
    let mut req =
        http().post(h.standin.token_url()).header("content-type", "application/x-www-form-urlencoded");
    let form = if client_secret_post {
        format!("grant_type=authorization_code&code={code}&client_id={ID}&client_secret={SECRET}")
    } else {
        req = req.basic_auth(ID, Some(SECRET));
        format!("grant_type=authorization_code&code={code}")
    };
    let v: Value = req.body(form).send().await.unwrap().json().await.unwrap();
    v["refresh_token"].as_str().expect("a refresh token").to_owned()
}

/// The calls of the issue, per grant, without a secret: none reaches the upstream with the
/// configured one (no Basic, no `client_secret`); the client id travels in the form; the
/// upstream's refusal comes back as it came.
#[tokio::test]
async fn a_v2_call_without_a_secret_never_gets_the_configured_one() {
    for post_auth in [false, true] {
        let h = start(post_auth).await;
        let rt = refresh_token_of_the_client(&h, post_auth).await;
        let calls: Vec<(&str, String)> = vec![
            (
                "application/json",
                json!({"grant_type": "password", "username": "demo@example.com",
                    "password": "demo-password", "client_id": ID})
                .to_string(),
            ),
            (
                "application/x-www-form-urlencoded",
                format!("grant_type=client_credentials&client_id={ID}&scope=admin"),
            ),
            (
                "application/x-www-form-urlencoded",
                format!(
                    "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=st-1&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token&client_id={ID}"
                ),
            ),
            (
                "application/json",
                json!({"grant_type": "refresh_token", "refresh_token": rt, "client_id": ID}).to_string(),
            ),
        ];
        for (content_type, body) in calls {
            let before = h.standin.token_calls();
            let (status, answer) = post(&h, content_type, body.clone()).await;
            assert_eq!(h.standin.token_calls(), before + 1, "{post_auth} {body}: one call upstream");
            let r = last_token_call(&h);
            assert!(!carried_secret(&r), "post={post_auth} {body}: the configured secret was added: {r:?}");
            assert!(form_pairs(&r.body).contains(&("client_id".into(), ID.into())), "{body}: {r:?}");
            assert_eq!(status, 401, "post={post_auth} {body}: the upstream's refusal, as it came: {answer}");
            assert_eq!(answer["error"], "invalid_client", "{answer}");
        }
    }
}

/// Seed 000/001's calls carry their own secret: moved (JSON → form, the secret in Basic or the
/// form), and answered. A code exchange and the refresh after it, for both provider auth methods.
#[tokio::test]
async fn a_v2_call_with_its_own_secret_still_works() {
    for post_auth in [false, true] {
        let h = start(post_auth).await;
        let code = h.standin.issue_code(ID, None);
        let (status, answer) = post(
            &h,
            "application/json",
            json!({"grant_type": "authorization_code", "code": code, "client_id": ID, "client_secret": SECRET})
                .to_string(),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        let r = last_token_call(&h);
        let pairs = form_pairs(&r.body);
        if post_auth {
            assert!(!r.headers.contains_key("authorization"));
            assert!(pairs.contains(&("client_secret".into(), SECRET.into())), "{pairs:?}");
        } else {
            let auth = r.headers["authorization"].to_str().unwrap();
            assert_eq!(decode_basic(auth), (ID.to_owned(), SECRET.to_owned()));
            assert!(!pairs.iter().any(|(k, _)| k == "client_id" || k == "client_secret"));
        }
        let rt = answer["refresh_token"].as_str().unwrap();
        let (status, refreshed) = post(
            &h,
            "application/json",
            json!({"grant_type": "refresh_token", "refresh_token": rt, "client_id": ID, "client_secret": SECRET})
                .to_string(),
        )
        .await;
        assert_eq!(status, 200, "{refreshed}");
        assert!(h.standin.is_access_token_valid(refreshed["access_token"].as_str().unwrap()));
        assert!(carried_secret(&last_token_call(&h)));
    }
}
