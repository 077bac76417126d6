//! Pure legacy <-> v2 mapping, no I/O: a legacy token call becomes a v2 form body (SPEC §2 point
//! 4), and a v2 token answer becomes the legacy JSON shape (point 5).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::{ClientConfig, LegacyConfig};
use crate::error::ShimError;
use crate::legacy::LegacyParams;
use crate::oauth::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    AuthorizationCode,
    RefreshToken,
    Password,
}

impl Grant {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthorizationCode => "authorization_code",
            Self::RefreshToken => "refresh_token",
            Self::Password => "password",
        }
    }
}

/// The v2 token request built from a legacy call. `Debug` shows only the grant (fields are secrets).
#[derive(Debug)]
pub struct V2Request {
    pub grant: Grant,
    /// `application/x-www-form-urlencoded` body; holds codes, tokens or passwords.
    pub form: Secret,
    /// The refresh token the caller sent (refresh grant only), echoed back when the upstream
    /// omits one.
    pub refresh_token: Option<Secret>,
}

fn required<'a>(value: &'a Option<Secret>, name: &'static str) -> Result<&'a str, ShimError> {
    value
        .as_ref()
        .map(Secret::expose)
        .ok_or_else(|| ShimError::invalid_request(format!("missing required parameter {name}")))
}

/// Build the v2 form for `params` on behalf of `client`. Only v2 parameters are written: never
/// `client_id`/`client_secret` (they travel in the Basic header), never unknown parameters.
pub fn to_v2(params: &LegacyParams, client: &ClientConfig) -> Result<V2Request, ShimError> {
    let grant = match params.grant_type.as_deref() {
        None => return Err(ShimError::invalid_request("missing required parameter grant_type")),
        Some("authorization_code") => Grant::AuthorizationCode,
        Some("refresh_token") => Grant::RefreshToken,
        Some("password") => Grant::Password,
        Some(_) => return Err(ShimError::unsupported_grant_type("grant_type is not supported")),
    };
    let mut form = Form(String::with_capacity(128));
    form.append_pair("grant_type", grant.as_str());
    match grant {
        Grant::AuthorizationCode => {
            form.append_pair("code", required(&params.code, "code")?);
            if let Some(uri) = params.redirect_uri.as_deref().or(client.redirect_uri.as_deref()) {
                form.append_pair("redirect_uri", uri);
            }
            if let Some(verifier) = &params.code_verifier {
                form.append_pair("code_verifier", verifier.expose());
            }
        }
        Grant::RefreshToken => {
            form.append_pair("refresh_token", required(&params.refresh_token, "refresh_token")?);
        }
        Grant::Password => {
            if !client.allow_password_grant {
                return Err(ShimError::unauthorized_client(
                    "the password grant (direct login) is not allowed for this client",
                ));
            }
            form.append_pair("username", required(&params.username, "user_id")?);
            form.append_pair("password", required(&params.password, "password")?);
        }
    }
    if let Some(scope) = &params.scope {
        form.append_pair("scope", scope);
    }
    Ok(V2Request {
        grant,
        form: Secret::new(form.0),
        refresh_token: if grant == Grant::RefreshToken { params.refresh_token.clone() } else { None },
    })
}

/// `form` with `client_id` and `client_secret` appended, for upstreams that take the client's
/// credentials in the form (`client_secret_post`, RFC 6749 §2.3.1).
pub fn with_client_credentials(form: &Secret, id: &str, secret: &Secret) -> Secret {
    let mut out = Form(String::with_capacity(form.expose().len() + id.len() + secret.expose().len() + 32));
    out.0.push_str(form.expose());
    out.append_pair("client_id", id);
    out.append_pair("client_secret", secret.expose());
    Secret::new(out.0)
}

/// An `application/x-www-form-urlencoded` body, written as `form_urlencoded::Serializer` writes
/// it; the names are this module's own and need no encoding, so only values go through the encoder.
struct Form(String);

impl Form {
    fn append_pair(&mut self, name: &'static str, value: &str) {
        debug_assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        if !self.0.is_empty() {
            self.0.push('&');
        }
        self.0.push_str(name);
        self.0.push('=');
        self.0.extend(form_urlencoded::byte_serialize(value.as_bytes()));
    }
}

/// A successful v2 token answer, parsed. Tokens stay inside [`Secret`]s. Cheap to clone: a
/// refresh answer is cloned for every caller it is served to (cache replays included).
#[derive(Clone)]
pub struct V2Token(Arc<Fields>);

/// A byte range of [`Fields::json`].
type Span = std::ops::Range<usize>;

struct Fields {
    access_token: Secret,
    refresh_token: Option<Secret>,
    expires_in: Option<u64>,
    /// The values of `token_type` and the legacy fields, written as JSON once at parse time (they
    /// are not secrets) so that rendering, for every caller and cache replay, only copies them.
    json: Vec<u8>,
    token_type: Option<Span>,
    /// The fields the legacy answer carries, in fixed slots ([`LEGACY_FIELDS`] order).
    legacy: [Option<Span>; LEGACY_FIELDS.len()],
    /// Every other field, in the upstream's order, except `version` and `platform` (the legacy
    /// answer always writes its own).
    rest: Map<String, Value>,
}

/// Deserialized by hand rather than derived with `#[serde(flatten)]` for `rest`: flatten
/// buffers the whole object into serde's intermediate `Content` and deserializes it twice,
/// which made parsing the largest pure cost of a token call (benches/hot_path.rs).
impl<'de> Deserialize<'de> for V2Token {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, MapAccess, Visitor};

        enum Key {
            AccessToken,
            RefreshToken,
            ExpiresIn,
            TokenType,
            Legacy(usize),
            /// `version` or `platform`: never rendered from the upstream's answer.
            Shadowed,
            Other(String),
        }
        impl<'de> Deserialize<'de> for Key {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct KeyVisitor;
                impl Visitor<'_> for KeyVisitor {
                    type Value = Key;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("a field name")
                    }
                    fn visit_str<E: Error>(self, v: &str) -> Result<Key, E> {
                        Ok(match v {
                            "access_token" => Key::AccessToken,
                            "refresh_token" => Key::RefreshToken,
                            "expires_in" => Key::ExpiresIn,
                            "token_type" => Key::TokenType,
                            "version" | "platform" => Key::Shadowed,
                            other => match LEGACY_FIELDS.iter().position(|f| *f == other) {
                                Some(i) => Key::Legacy(i),
                                None => Key::Other(other.to_owned()),
                            },
                        })
                    }
                }
                d.deserialize_identifier(KeyVisitor)
            }
        }
        struct ExpiresIn(Option<u64>);
        impl<'de> Deserialize<'de> for ExpiresIn {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                expires_in(d).map(ExpiresIn)
            }
        }

        struct TokenVisitor;
        impl<'de> Visitor<'de> for TokenVisitor {
            type Value = V2Token;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a token object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<V2Token, A::Error> {
                let (mut access_token, mut refresh_token, mut expires_in, mut token_type) =
                    (None, None, None, None);
                let mut json = Vec::with_capacity(128);
                let mut legacy: [Option<Span>; LEGACY_FIELDS.len()] = Default::default();
                let mut rest = Map::new();
                let mut seen = [false; 4];
                let mut once = |i: usize, name: &'static str| {
                    if std::mem::replace(&mut seen[i], true) {
                        Err(A::Error::duplicate_field(name))
                    } else {
                        Ok(())
                    }
                };
                while let Some(key) = map.next_key::<Key>()? {
                    let start = json.len();
                    match key {
                        Key::AccessToken => {
                            once(0, "access_token")?;
                            access_token = Some(map.next_value::<Secret>()?);
                        }
                        Key::RefreshToken => {
                            once(1, "refresh_token")?;
                            refresh_token = map.next_value::<Option<Secret>>()?;
                        }
                        Key::ExpiresIn => {
                            once(2, "expires_in")?;
                            expires_in = map.next_value::<ExpiresIn>()?.0;
                        }
                        Key::TokenType => {
                            once(3, "token_type")?;
                            if map.next_value_seed(json::RenderOption(&mut json))? {
                                token_type = Some(start..json.len());
                            }
                        }
                        // A repeated name keeps its last value, as a map insert would.
                        Key::Legacy(i) => {
                            map.next_value_seed(json::Render(&mut json))?;
                            legacy[i] = Some(start..json.len());
                        }
                        // Read as strictly as any other value, then dropped.
                        Key::Shadowed => {
                            map.next_value_seed(json::Render(&mut json))?;
                            json.truncate(start);
                        }
                        Key::Other(name) => {
                            rest.insert(name, map.next_value::<Value>()?);
                        }
                    }
                }
                let access_token = access_token.ok_or_else(|| A::Error::missing_field("access_token"))?;
                Ok(V2Token(Arc::new(Fields {
                    access_token,
                    refresh_token,
                    expires_in,
                    json,
                    token_type,
                    legacy,
                    rest,
                })))
            }
        }
        d.deserialize_map(TokenVisitor)
    }
}

impl std::fmt::Debug for V2Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V2Token").field("expires_in", &self.0.expires_in).finish_non_exhaustive()
    }
}

/// The longest token lifetime accepted from an upstream: ten years. Anything longer is not a
/// lifetime but a bug (or a saturated number) and must never reach a client or the cache.
pub const MAX_EXPIRES_IN: u64 = 10 * 365 * 24 * 60 * 60;

/// `expires_in` as an integer (RFC 6749), a decimal string (legacy), or a number with a
/// fraction or exponent (`3.6e3`), truncated to whole seconds. Negative, non-finite or over
/// [`MAX_EXPIRES_IN`] is refused.
fn expires_in<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    let seconds = match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) => v as f64,
            None => n.as_f64().unwrap_or(f64::NAN),
        },
        Some(Value::String(s)) => {
            let s = s.trim();
            match s.parse::<u64>() {
                Ok(v) => v as f64,
                // Rust's float syntax is wider than JSON's ("inf", "NaN"): those are refused
                // below as non-finite.
                Err(_) => s.parse::<f64>().map_err(|_| D::Error::custom("expires_in not a number"))?,
            }
        }
        Some(_) => return Err(D::Error::custom("expires_in has the wrong type")),
    };
    if !seconds.is_finite() || seconds < 0.0 || seconds > MAX_EXPIRES_IN as f64 {
        return Err(D::Error::custom("expires_in out of range"));
    }
    Ok(Some(seconds as u64))
}

/// Fields of the legacy answer after `access_token`, `expires_in`, `refresh_token`, in legacy order.
pub const LEGACY_FIELDS: [&str; 6] =
    ["organizer_key", "account_key", "account_type", "firstName", "lastName", "email"];

impl V2Token {
    /// Parse an upstream 2xx body; anything without a non-empty string `access_token` is garbage.
    pub fn parse(body: &[u8]) -> Result<Self, ShimError> {
        // One UTF-8 check of the whole body instead of one per string: every string in it is
        // parsed (none skipped), so `from_slice` accepted exactly the bodies that pass this.
        let body = std::str::from_utf8(body).map_err(|_| ShimError::upstream_garbage())?;
        let token: Self = serde_json::from_str(body).map_err(|_| ShimError::upstream_garbage())?;
        if token.0.access_token.is_empty() {
            return Err(ShimError::upstream_garbage());
        }
        Ok(token)
    }

    /// The token's own lifetime, if the upstream stated one.
    pub fn lifetime(&self) -> Option<Duration> {
        self.0.expires_in.map(Duration::from_secs)
    }

    pub fn access_token(&self) -> &Secret {
        &self.0.access_token
    }

    /// Which legacy fields (in [`LEGACY_FIELDS`] order) the upstream's answer lacks.
    pub fn missing_legacy_fields(&self) -> [bool; LEGACY_FIELDS.len()] {
        self.0.legacy.clone().map(|span| span.is_none())
    }

    /// This answer with the missing legacy fields given in `values` (legacy field order) filled
    /// in as JSON strings; fields the upstream sent are kept as they were.
    pub fn with_legacy_fields(&self, values: &[Option<String>; LEGACY_FIELDS.len()]) -> V2Token {
        let f = &*self.0;
        let mut json = f.json.clone();
        let mut legacy = f.legacy.clone();
        for (slot, value) in legacy.iter_mut().zip(values) {
            if let (None, Some(value)) = (&slot, value) {
                let start = json.len();
                json::write_str(&mut json, value);
                *slot = Some(start..json.len());
            }
        }
        V2Token(Arc::new(Fields {
            access_token: f.access_token.clone(),
            refresh_token: f.refresh_token.clone(),
            expires_in: f.expires_in,
            json,
            token_type: f.token_type.clone(),
            legacy,
            rest: f.rest.clone(),
        }))
    }

    pub fn refresh_token(&self) -> Option<&Secret> {
        self.0.refresh_token.as_ref()
    }

    /// The legacy fields the upstream sent (`organizer_key` … `email`, legacy order), as the
    /// JSON fragment `,"name":value` each: what a continuity session keeps to answer later
    /// legacy refreshes in full.
    pub fn legacy_profile(&self) -> String {
        let f = &*self.0;
        let mut out = Vec::new();
        for (name, span) in LEGACY_FIELDS.iter().zip(&f.legacy) {
            if let Some(span) = span {
                json::key(&mut out, name);
                out.extend_from_slice(&f.json[span.clone()]);
            }
        }
        // Built from parsed JSON strings and our own names: always UTF-8.
        String::from_utf8(out).unwrap_or_default()
    }

    /// The answer as a v2 JSON object again, every field kept (order: tokens, `expires_in`,
    /// `token_type`, the legacy fields, the rest), so that [`V2Token::parse`] reads back an
    /// equal token. What the shared refresh cache stores (sealed).
    pub fn to_v2_json(&self) -> Vec<u8> {
        let f = &*self.0;
        let mut out = Vec::with_capacity(256 + f.json.len());
        out.extend_from_slice(b"{\"access_token\":");
        json::write_str(&mut out, f.access_token.expose());
        if let Some(refresh) = &f.refresh_token {
            json::key(&mut out, "refresh_token");
            json::write_str(&mut out, refresh.expose());
        }
        if let Some(expires) = f.expires_in {
            json::key(&mut out, "expires_in");
            json::write_u64(&mut out, expires);
        }
        if let Some(span) = &f.token_type {
            json::key(&mut out, "token_type");
            out.extend_from_slice(&f.json[span.clone()]);
        }
        for (name, span) in LEGACY_FIELDS.iter().zip(&f.legacy) {
            if let Some(span) = span {
                json::key(&mut out, name);
                out.extend_from_slice(&f.json[span.clone()]);
            }
        }
        for (name, v) in &f.rest {
            json::name(&mut out, name);
            let _ = serde_json::to_writer(&mut out, v);
        }
        out.push(b'}');
        out
    }

    /// Render the legacy JSON answer.
    ///
    /// `age` is how long ago the upstream answered (non-zero for cached answers): the served
    /// `expires_in` is the remaining lifetime. `sent_refresh_token` is echoed when the upstream
    /// omitted `refresh_token`.
    pub fn render_legacy(
        &self,
        age: Duration,
        sent_refresh_token: Option<&Secret>,
        legacy: &LegacyConfig,
    ) -> Vec<u8> {
        let f = &*self.0;
        let mut out = Vec::with_capacity(512);
        // `access_token` always comes first; every later field starts with a comma.
        out.extend_from_slice(b"{\"access_token\":");
        json::write_str(&mut out, f.access_token.expose());
        if let Some(expires) = f.expires_in {
            json::key(&mut out, "expires_in");
            out.push(b'"');
            json::write_u64(&mut out, expires.saturating_sub(age.as_secs()));
            out.push(b'"');
        }
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
pub fn render_minted(
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

/// Small JSON writer so rendering needs no intermediate `Value` tree. It writes exactly what
/// `serde_json` writes for the same values.
pub(crate) mod json {
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde_json::Value;

    /// `,"name":` for a name that needs no escaping (the names this module writes itself).
    pub fn key(out: &mut Vec<u8>, name: &'static str) {
        debug_assert!(!needs_escape(name));
        out.reserve(name.len() + 4);
        out.extend_from_slice(b",\"");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
    }

    /// `,"name":` for any name.
    pub fn name(out: &mut Vec<u8>, name: &str) {
        out.push(b',');
        write_str(out, name);
        out.push(b':');
    }

    /// Whether `serde_json` escapes anything in `s`. Checks every byte without stopping early,
    /// which the compiler turns into a few wide compares for typical lengths.
    fn needs_escape(s: &str) -> bool {
        s.bytes().fold(false, |any, b| any | (b < 0x20) | (b == b'"') | (b == b'\\'))
    }

    pub fn write_str(out: &mut Vec<u8>, s: &str) {
        // Most strings need no escaping; copy those without going through serde_json's writer.
        if !needs_escape(s) {
            out.reserve(s.len() + 2);
            out.push(b'"');
            out.extend_from_slice(s.as_bytes());
            out.push(b'"');
        } else {
            let _ = serde_json::to_writer(out, s);
        }
    }

    /// Decimal digits of `n`, without `core::fmt` (also used for the upstream client's
    /// `Content-Length`).
    pub fn write_u64(out: &mut impl bytes::BufMut, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        out.put_slice(&digits[i..]);
    }

    /// Deserializes any JSON value by writing it to the buffer, as `serde_json` would write the
    /// `Value` it deserializes to, without building one for scalars.
    pub struct Render<'a>(pub &'a mut Vec<u8>);

    impl<'de> DeserializeSeed<'de> for Render<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Render<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E>(self, v: bool) -> Result<(), E> {
            self.0.extend_from_slice(if v { b"true" } else { b"false" });
            Ok(())
        }
        fn visit_i64<E>(self, v: i64) -> Result<(), E> {
            let _ = serde_json::to_writer(self.0, &Value::from(v));
            Ok(())
        }
        fn visit_u64<E>(self, v: u64) -> Result<(), E> {
            write_u64(self.0, v);
            Ok(())
        }
        fn visit_f64<E>(self, v: f64) -> Result<(), E> {
            // `Value::from(f64)` is `null` for non-finite numbers.
            let _ = serde_json::to_writer(self.0, &Value::from(v));
            Ok(())
        }
        fn visit_str<E>(self, v: &str) -> Result<(), E> {
            write_str(self.0, v);
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            self.0.extend_from_slice(b"null");
            Ok(())
        }
        // Arrays and objects are rare here: build the `Value` (an object's repeated keys keep
        // their first place and last value) and write that.
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
            let v: Value =
                serde::Deserialize::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
            let _ = serde_json::to_writer(self.0, &v);
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
            let v: Value =
                serde::Deserialize::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
            let _ = serde_json::to_writer(self.0, &v);
            Ok(())
        }
    }

    /// As [`Render`], for a value where `null` means absent: true if a value was written.
    pub struct RenderOption<'a>(pub &'a mut Vec<u8>);

    impl<'de> DeserializeSeed<'de> for RenderOption<'_> {
        type Value = bool;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
            d.deserialize_option(self)
        }
    }

    impl<'de> Visitor<'de> for RenderOption<'_> {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_none<E>(self) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_unit<E>(self) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
            Render(self.0).deserialize(d).map(|()| true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClientConfig;

    fn client(password: bool, redirect: Option<&str>) -> ClientConfig {
        ClientConfig {
            id: "K".into(),
            secret: Some(Secret::new("S")),
            allow_password_grant: password,
            redirect_uri: redirect.map(Into::into),
            ..Default::default()
        }
    }

    fn params(q: &str) -> LegacyParams {
        crate::legacy::collect(Some(q), None, b"", None).unwrap().0
    }

    #[test]
    fn code_grant_uses_configured_redirect_when_caller_sends_none() {
        let r = to_v2(
            &params("grant_type=authorization_code&code=c1&client_id=K"),
            &client(false, Some("https://app/cb")),
        )
        .unwrap();
        assert_eq!(
            r.form.expose(),
            "grant_type=authorization_code&code=c1&redirect_uri=https%3A%2F%2Fapp%2Fcb"
        );
        let r = to_v2(
            &params("grant_type=authorization_code&code=c1&client_id=K&redirect_uri=https://x/y&junk=1"),
            &client(false, Some("https://app/cb")),
        )
        .unwrap();
        assert_eq!(r.form.expose(), "grant_type=authorization_code&code=c1&redirect_uri=https%3A%2F%2Fx%2Fy");
    }

    #[test]
    fn password_grant_needs_permission_and_renames_user_id() {
        let p = params("grant_type=password&user_id=u&password=p&client_id=K");
        assert_eq!(to_v2(&p, &client(false, None)).unwrap_err().code.as_str(), "unauthorized_client");
        assert_eq!(
            to_v2(&p, &client(true, None)).unwrap().form.expose(),
            "grant_type=password&username=u&password=p"
        );
    }

    #[test]
    fn refresh_keeps_token_for_echo() {
        let r = to_v2(&params("grant_type=refresh_token&refresh_token=r1&scope=a+b"), &client(false, None))
            .unwrap();
        assert_eq!(r.form.expose(), "grant_type=refresh_token&refresh_token=r1&scope=a+b");
        assert_eq!(r.refresh_token.unwrap().expose(), "r1");
    }

    #[test]
    fn missing_and_unknown_grants() {
        assert_eq!(
            to_v2(&params("client_id=K"), &client(false, None)).unwrap_err().code.as_str(),
            "invalid_request"
        );
        assert_eq!(
            to_v2(&params("grant_type=client_credentials"), &client(false, None)).unwrap_err().code.as_str(),
            "unsupported_grant_type"
        );
        let e = to_v2(&params("grant_type=refresh_token"), &client(false, None)).unwrap_err();
        assert!(e.description.contains("refresh_token"));
    }

    const V2: &str = r#"{"access_token":"at","token_type":"Bearer","refresh_token":"rt","expires_in":3600,"account_key":"ak","account_type":"","email":"jk@example.com","firstName":"Jon","lastName":"Karmak","organizer_key":"ok","version":"3","scope":"s"}"#;

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
    fn v2_json_round_trips_every_field() {
        let legacy = LegacyConfig { keep_extra_fields: true, ..Default::default() };
        for body in [
            V2,
            r#"{"access_token":"a\"t","expires_in":"60","principal":{"x":[1,null]},"email":null}"#,
            r#"{"access_token":"at"}"#,
        ] {
            let t = V2Token::parse(body.as_bytes()).unwrap();
            let again = V2Token::parse(&t.to_v2_json()).unwrap();
            for age in [Duration::ZERO, Duration::from_secs(7)] {
                assert_eq!(
                    again.render_legacy(age, None, &legacy),
                    t.render_legacy(age, None, &legacy),
                    "{body}"
                );
            }
            assert_eq!(again.lifetime(), t.lifetime());
        }
    }

    #[test]
    fn nulls_count_as_absent_and_escaped_names_match() {
        let t = V2Token::parse(br#"{"access_\u0074oken":"at","refresh_token":null,"token_type":null,"expires_in":null,"email":"e"}"#)
            .unwrap();
        let legacy = LegacyConfig { keep_extra_fields: true, ..Default::default() };
        let out = t.render_legacy(Duration::ZERO, None, &legacy);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"access_token":"at","email":"e","platform":"GLOBAL","version":"2"}"#
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
    fn garbage_is_refused() {
        for body in [
            &b"<html>"[..],
            b"{}",
            br#"{"access_token":"a","access_token":"b"}"#,
            br#"{"access_token":null}"#,
            br#"{"access_token":"a","refresh_token":5}"#,
            br#"{"access_token":""}"#,
            br#"{"access_token":"a","expires_in":true}"#,
            b"{\"access_token\":\"a\",\"email\":\"\xff\"}",
            b"[]",
        ] {
            assert_eq!(V2Token::parse(body).unwrap_err().status, http::StatusCode::BAD_GATEWAY);
        }
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

    #[test]
    fn debug_hides_tokens() {
        let t = V2Token::parse(V2.as_bytes()).unwrap();
        let s = format!("{t:?}");
        assert!(!s.contains("at\"") && !s.contains("rt"), "{s}");
    }
}
