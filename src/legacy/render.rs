//! What legacy clients get back (docs/protocol.md#the-legacy-answer): a v2 token answer, or a
//! continuity session's minted tokens, in the legacy JSON shape (`expires_in` as a string, the
//! legacy fields, `platform` and `version`). Written directly as bytes, no intermediate `Value`
//! tree.

use std::time::Duration;

use crate::config::LegacyConfig;
use crate::json;
use crate::oauth::{LEGACY_FIELDS, Secret, V2Token};

impl V2Token {
    /// Render the legacy JSON answer.
    ///
    /// `age` is how long ago the upstream answered (non-zero for cached answers): the served
    /// `expires_in` is the remaining lifetime (of `legacy.default_expires_in` when the upstream
    /// stated none). `sent_refresh_token` is echoed when the upstream omitted `refresh_token`.
    pub fn render_legacy(
        &self,
        age: Duration,
        sent_refresh_token: Option<&Secret>,
        legacy: &LegacyConfig,
    ) -> Vec<u8> {
        let f = self.fields();
        let mut out = Vec::with_capacity(512);
        // `access_token` always comes first; every later field starts with a comma.
        out.extend_from_slice(b"{\"access_token\":");
        json::write_str(&mut out, f.access_token.expose());
        // Every legacy answer carried `expires_in`: the configured default when the upstream
        // stated none.
        let expires = f.expires_in.unwrap_or(legacy.default_expires_in.as_secs());
        json::key(&mut out, "expires_in");
        out.push(b'"');
        json::write_u64(&mut out, expires.saturating_sub(age.as_secs()));
        out.push(b'"');
        if let Some(refresh) = f.refresh_token.as_ref().or(sent_refresh_token) {
            json::key(&mut out, "refresh_token");
            json::write_str(&mut out, refresh.expose());
        }
        for (name, span) in LEGACY_FIELDS.iter().zip(&f.legacy) {
            if let Some(span) = span {
                json::key(&mut out, name);
                out.extend_from_slice(&f.json[span.clone()]);
            }
        }
        json::key(&mut out, "platform");
        json::write_str(&mut out, &legacy.platform);
        json::key(&mut out, "version");
        json::write_str(&mut out, &legacy.version);
        if legacy.keep_extra_fields {
            if let Some(span) = &f.token_type {
                json::key(&mut out, "token_type");
                out.extend_from_slice(&f.json[span.clone()]);
            }
            for (name, v) in &f.rest {
                json::name(&mut out, name);
                // Writing a Value into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut out, v);
            }
        }
        out.push(b'}');
        out
    }
}

/// The legacy answer of a continuity session: minted tokens, the configured lifetime as the
/// legacy `expires_in` string, and the session's stored legacy fields (`profile`, as
/// [`V2Token::legacy_profile`] wrote it).
pub(crate) fn render_minted(
    access: &Secret,
    expires_in: u64,
    refresh: &Secret,
    profile: &str,
    legacy: &LegacyConfig,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + profile.len());
    out.extend_from_slice(b"{\"access_token\":");
    json::write_str(&mut out, access.expose());
    json::key(&mut out, "expires_in");
    out.push(b'"');
    json::write_u64(&mut out, expires_in);
    out.push(b'"');
    json::key(&mut out, "refresh_token");
    json::write_str(&mut out, refresh.expose());
    out.extend_from_slice(profile.as_bytes());
    json::key(&mut out, "platform");
    json::write_str(&mut out, &legacy.platform);
    json::key(&mut out, "version");
    json::write_str(&mut out, &legacy.version);
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::MAX_EXPIRES_IN;
    use crate::oauth::token_tests::V2;

    #[test]
    fn renders_legacy_order_and_string_expiry() {
        let t = V2Token::parse(V2.as_bytes()).unwrap();
        let out = t.render_legacy(Duration::ZERO, None, &LegacyConfig::default());
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"access_token":"at","expires_in":"3600","refresh_token":"rt","organizer_key":"ok","account_key":"ak","account_type":"","firstName":"Jon","lastName":"Karmak","email":"jk@example.com","platform":"GLOBAL","version":"2"}"#
        );
    }

    #[test]
    fn keeps_extras_when_configured_and_echoes_refresh() {
        let t = V2Token::parse(br#"{"access_token":"at","expires_in":"60","scope":"s","principal":"p"}"#)
            .unwrap();
        let legacy = LegacyConfig { keep_extra_fields: true, ..Default::default() };
        let out = t.render_legacy(Duration::from_secs(10), Some(&Secret::new("sent")), &legacy);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"access_token":"at","expires_in":"50","refresh_token":"sent","platform":"GLOBAL","version":"2","scope":"s","principal":"p"}"#
        );
    }

    #[test]
    fn minted_answer_keeps_the_legacy_fields() {
        let t = V2Token::parse(V2.as_bytes()).unwrap();
        let out = render_minted(
            &Secret::new("osh_at_x"),
            31536000,
            &Secret::new("osh_rt_y"),
            &t.legacy_profile(),
            &LegacyConfig::default(),
        );
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"access_token":"osh_at_x","expires_in":"31536000","refresh_token":"osh_rt_y","organizer_key":"ok","account_key":"ak","account_type":"","firstName":"Jon","lastName":"Karmak","email":"jk@example.com","platform":"GLOBAL","version":"2"}"#
        );
    }

    #[test]
    fn nulls_count_as_absent_and_escaped_names_match() {
        let t = V2Token::parse(br#"{"access_\u0074oken":"at","refresh_token":null,"token_type":null,"expires_in":null,"email":"e"}"#)
            .unwrap();
        let legacy = LegacyConfig { keep_extra_fields: true, ..Default::default() };
        let out = t.render_legacy(Duration::ZERO, None, &legacy);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"access_token":"at","expires_in":"3600","email":"e","platform":"GLOBAL","version":"2"}"#
        );
        let legacy = LegacyConfig { default_expires_in: Duration::from_secs(60), ..Default::default() };
        let out = t.render_legacy(Duration::from_secs(10), None, &legacy);
        assert!(String::from_utf8(out).unwrap().contains(r#""expires_in":"50""#));
    }

    #[test]
    fn absurd_lifetimes_are_refused_and_fractions_mapped() {
        let parse =
            |v: &str| V2Token::parse(format!(r#"{{"access_token":"a","expires_in":{v}}}"#).as_bytes());
        for bad in [
            "-1",
            "-0.5",
            "1e30",
            "18446744073709551615",
            "315360001",
            "\"-5\"",
            "\"inf\"",
            "\"NaN\"",
            "\"1e400\"",
            "\"18446744073709551616\"",
        ] {
            let e = parse(bad).map(|t| t.lifetime()).unwrap_err();
            assert_eq!((e.status, e.code.as_str()), (http::StatusCode::BAD_GATEWAY, "server_error"), "{bad}");
        }
        for (good, secs) in
            [("3.6e3", 3600), ("3599.9", 3599), ("\"3.6e3\"", 3600), ("315360000", MAX_EXPIRES_IN), ("0", 0)]
        {
            assert_eq!(parse(good).unwrap().lifetime(), Some(Duration::from_secs(secs)), "{good}");
        }
        let out = parse("3.6e3").unwrap().render_legacy(Duration::ZERO, None, &LegacyConfig::default());
        assert!(String::from_utf8(out).unwrap().contains(r#""expires_in":"3600""#));
    }
}
