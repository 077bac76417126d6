//! The v2 token answer (RFC 6749 §5.1), parsed once: tokens stay inside [`Secret`]s, and the
//! legacy fields and `token_type` are kept as JSON so every render only copies them.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::ShimError;
use crate::json;

use super::secret::Secret;

/// A successful v2 token answer, parsed. Tokens stay inside [`Secret`]s. Cheap to clone: a
/// refresh answer is cloned for every caller it is served to (cache replays included).
#[derive(Clone)]
pub struct V2Token(Arc<Fields>);

/// A byte range of [`Fields::json`].
pub(crate) type Span = std::ops::Range<usize>;

pub(crate) struct Fields {
    pub(crate) access_token: Secret,
    pub(crate) refresh_token: Option<Secret>,
    pub(crate) expires_in: Option<u64>,
    /// The values of `token_type` and the legacy fields, written as JSON once at parse time (they
    /// are not secrets) so that rendering, for every caller and cache replay, only copies them.
    pub(crate) json: Vec<u8>,
    pub(crate) token_type: Option<Span>,
    /// The fields the legacy answer carries, in fixed slots ([`LEGACY_FIELDS`] order).
    pub(crate) legacy: [Option<Span>; LEGACY_FIELDS.len()],
    /// Every other field, in the upstream's order, except `version` and `platform` (the legacy
    /// answer always writes its own).
    pub(crate) rest: Map<String, Value>,
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
pub(crate) const MAX_EXPIRES_IN: u64 = 10 * 365 * 24 * 60 * 60;

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
pub(crate) const LEGACY_FIELDS: [&str; 6] =
    ["organizer_key", "account_key", "account_type", "firstName", "lastName", "email"];

impl V2Token {
    /// The parsed fields, for the renderers.
    pub(crate) fn fields(&self) -> &Fields {
        &self.0
    }

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
    pub(crate) fn missing_legacy_fields(&self) -> [bool; LEGACY_FIELDS.len()] {
        self.0.legacy.clone().map(|span| span.is_none())
    }

    /// This answer with the missing legacy fields given in `values` (legacy field order) filled
    /// in as JSON strings; fields the upstream sent are kept as they were.
    pub(crate) fn with_legacy_fields(&self, values: &[Option<String>; LEGACY_FIELDS.len()]) -> V2Token {
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
    pub(crate) fn legacy_profile(&self) -> String {
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
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A GoTo-shaped v2 answer with every legacy field (the renderers' tests use it too).
    pub(crate) const V2: &str = r#"{"access_token":"at","token_type":"Bearer","refresh_token":"rt","expires_in":3600,"account_key":"ak","account_type":"","email":"jk@example.com","firstName":"Jon","lastName":"Karmak","organizer_key":"ok","version":"3","scope":"s"}"#;

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
    fn debug_hides_tokens() {
        let t = V2Token::parse(V2.as_bytes()).unwrap();
        let s = format!("{t:?}");
        assert!(!s.contains("at\"") && !s.contains("rt"), "{s}");
    }
}
