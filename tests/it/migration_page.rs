//! The migration page (docs/operating.md#migration-report): served by the admin listener at
//! `/ui` and to `Accept: text/html` on `/migration`, behind the admin token, under a strict
//! Content-Security-Policy, with a hostile client id escaped.

use crate::support::*;

const HOSTILE: &str = "<script>alert(1)</script>";

/// A shim with the default client (made active), an idle client, a client in deny mode that
/// still calls, and one legacy call from a hostile unknown id.
async fn fleet(extra: &str) -> Harness {
    let clients = "[[clients]]\nid = \"idle-app\"\nsecret = \"idle-secret\"\n\
                   [[clients]]\nid = \"retired-app\"\nsecret = \"retired-secret\"\nmode = \"deny\"\n";
    let h = Harness::start(standin_config(), &format!("{extra}{clients}")).await;
    assert_eq!(http().get(h.password_url()).send().await.unwrap().status(), 200);
    let call = |id: &str| {
        let q: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "password")
            .append_pair("user_id", "u")
            .append_pair("password", "p")
            .append_pair("client_id", id)
            .finish();
        h.url(&format!("/oauth/access_token?{q}"))
    };
    assert_eq!(http().get(call(HOSTILE)).send().await.unwrap().status(), 401);
    assert_eq!(http().get(call("retired-app")).send().await.unwrap().status(), 400);
    h
}

#[tokio::test]
async fn the_page_is_escaped_under_a_strict_policy_and_behind_the_token() {
    let h = fleet("").await;
    for (path, accept) in [("/ui", "*/*"), ("/migration", "text/html,application/xhtml+xml,*/*;q=0.8")] {
        let resp = http().get(h.admin_url(path)).header("accept", accept).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let csp = resp.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(csp.starts_with("default-src 'none'; style-src 'sha256-"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
        let html = resp.text().await.unwrap();
        assert!(!html.contains(HOSTILE) && !html.contains("<script"), "nothing unescaped: {html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{html}");
        assert!(!html.contains(" style=\""), "no style attribute: the policy would refuse it");
        for part in [
            "<table>",
            "<caption>",
            "<th scope=\"col\">Client</th>",
            "<th scope=\"row\">idle-app</th>",
            "role=\"img\"",
            "<title>",
        ] {
            assert!(html.contains(part), "{part} in {html}");
        }
        assert!(html.contains("<form method=\"get\" action=\"/ui\""), "{html}");
    }
    let json = http().get(h.admin_url("/migration")).send().await.unwrap();
    assert_eq!(json.headers()["content-type"], "application/json");

    let key = temp_dir("page-token").join("token");
    std::fs::write(&key, "page-admin-token").unwrap();
    let guarded = fleet(&format!("[admin]\ntoken_file = {key:?}\n")).await;
    assert_eq!(http().get(guarded.admin_url("/ui")).send().await.unwrap().status(), 401);
    let ok = http().get(guarded.admin_url("/ui")).bearer_auth("page-admin-token").send().await.unwrap();
    assert_eq!(ok.status(), 200);
}
