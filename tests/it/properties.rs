//! Property tests for the pure translators: parameter collection never panics and round-trips
//! every legacy form; v2 forms never carry client credentials; legacy answers are always valid
//! JSON in legacy order.

use oauth_shim::config::{ClientConfig, LegacyConfig};
use oauth_shim::legacy::collect;
use oauth_shim::legacy::to_v2;
use oauth_shim::oauth::Secret;
use oauth_shim::oauth::V2Token;
use proptest::prelude::*;

fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn collect_never_panics(query in ".{0,200}", ct in prop::option::of("[a-z/+;= -]{0,40}"), body in prop::collection::vec(any::<u8>(), 0..300), auth in prop::option::of(prop::collection::vec(any::<u8>(), 0..80))) {
        let _ = collect(Some(&query), ct.as_deref(), &body, auth.as_deref());
    }

    #[test]
    fn every_form_yields_the_same_parameters(code in "\\PC{1,40}", id in "[!-~]{1,30}", secret in "\\PC{1,30}", redirect in prop::option::of("https://[a-z]{1,10}\\.example/[a-z0-9/?=&]{0,20}")) {
        let mut pairs = vec![("grant_type", "authorization_code"), ("code", code.as_str()), ("client_id", id.as_str()), ("client_secret", secret.as_str())];
        if let Some(r) = &redirect {
            pairs.push(("redirect_uri", r.as_str()));
        }
        let json = serde_json::Value::Object(pairs.iter().map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string()))).collect()).to_string();
        let q = form(&pairs);
        let from_query = collect(Some(&q), None, b"", None).unwrap().0;
        let from_form = collect(None, Some("application/x-www-form-urlencoded"), q.as_bytes(), None).unwrap().0;
        let from_json = collect(None, Some("application/json"), json.as_bytes(), None).unwrap().0;
        prop_assert_eq!(&from_query, &from_form);
        prop_assert_eq!(&from_query, &from_json);
        prop_assert_eq!(from_query.code.as_ref().map(Secret::expose), Some(code.as_str()));
        prop_assert_eq!(from_query.client_id.as_deref(), Some(id.as_str()));
        prop_assert_eq!(from_query.redirect_uri.as_deref(), redirect.as_deref());

        let client = ClientConfig { id: id.clone(), secret: Some(Secret::new(secret.clone())), ..ClientConfig::default() };
        let v2 = to_v2(&from_query, &client).unwrap();
        let sent: Vec<(String, String)> = form_urlencoded::parse(v2.form.expose().as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        prop_assert!(sent.iter().all(|(k, _)| k != "client_id" && k != "client_secret"));
        prop_assert!(sent.contains(&("code".to_string(), code.clone())));
    }

    #[test]
    fn legacy_answer_is_valid_json_in_legacy_order(
        access in "\\PC{1,60}",
        refresh in prop::option::of("\\PC{1,60}"),
        expires in prop::option::of(0u64..100_000_000),
        org in prop::option::of("[0-9]{1,20}"),
        extra in prop::collection::btree_map("[a-z_]{1,12}", "\\PC{0,20}", 0..5),
        keep in any::<bool>(),
        age in 0u64..10_000,
    ) {
        let mut v = serde_json::Map::new();
        v.insert("access_token".into(), access.clone().into());
        if let Some(r) = &refresh { v.insert("refresh_token".into(), r.clone().into()); }
        if let Some(e) = expires { v.insert("expires_in".into(), e.into()); }
        if let Some(o) = &org { v.insert("organizer_key".into(), o.clone().into()); }
        for (k, val) in &extra { v.entry(k.clone()).or_insert(val.clone().into()); }
        let token = V2Token::parse(serde_json::Value::Object(v).to_string().as_bytes()).unwrap();
        let legacy = LegacyConfig { keep_extra_fields: keep, ..LegacyConfig::default() };
        let out = token.render_legacy(std::time::Duration::from_secs(age), None, &legacy);
        let parsed: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&out).unwrap();
        let keys: Vec<&str> = parsed.keys().map(String::as_str).collect();
        prop_assert_eq!(keys[0], "access_token");
        let access_value = parsed["access_token"].as_str();
        prop_assert_eq!(access_value, Some(access.as_str()));
        if let Some(e) = expires {
            let expected = e.saturating_sub(age).to_string();
            prop_assert_eq!(parsed["expires_in"].as_str(), Some(expected.as_str()));
        }
        prop_assert_eq!(parsed["version"].as_str(), Some("2"));
        prop_assert!(keys.iter().position(|k| *k == "version") < keys.iter().position(|k| *k == "token_type").or(Some(usize::MAX)));
    }
}
