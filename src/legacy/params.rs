//! Collects the parameters of a legacy `/oauth/access_token` call from the query string, a form or
//! JSON body, and a caller's `Authorization: Basic` header, applying docs/protocol.md#parameters.
//!
//! Pure: no I/O, no config. The token handler calls [`collect`] after the body has been read
//! through a size limit.

use crate::error::ShimError;

use super::form::{Bad, decode, has_control, parse_basic, raw_pairs};
use crate::oauth::Secret;

/// How the caller sent its parameters (for the migration report and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body: GET with a query string, or an empty POST.
    None,
    Form,
    Json,
}

/// The parameters oauth-shim understands; anything else is ignored (RFC 6749 §3.2).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LegacyParams {
    pub grant_type: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub code: Option<Secret>,
    pub refresh_token: Option<Secret>,
    /// `user_id` (GoTo legacy) or `username` (generic OAuth libraries).
    pub username: Option<Secret>,
    pub password: Option<Secret>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub code_verifier: Option<Secret>,
    /// The caller authenticated with its own Basic header.
    pub basic_auth: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    GrantType,
    ClientId,
    ClientSecret,
    Code,
    RefreshToken,
    UserId,
    Username,
    Password,
    RedirectUri,
    Scope,
    CodeVerifier,
}

const SLOTS: usize = 11;

impl Slot {
    fn of(name: &str) -> Option<Self> {
        Self::of_bytes(name.as_bytes())
    }

    fn of_bytes(name: &[u8]) -> Option<Self> {
        Some(match name {
            b"grant_type" => Self::GrantType,
            b"client_id" => Self::ClientId,
            b"client_secret" => Self::ClientSecret,
            b"code" => Self::Code,
            b"refresh_token" => Self::RefreshToken,
            b"user_id" => Self::UserId,
            b"username" => Self::Username,
            b"password" => Self::Password,
            b"redirect_uri" => Self::RedirectUri,
            b"scope" => Self::Scope,
            b"code_verifier" => Self::CodeVerifier,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::GrantType => "grant_type",
            Self::ClientId => "client_id",
            Self::ClientSecret => "client_secret",
            Self::Code => "code",
            Self::RefreshToken => "refresh_token",
            Self::UserId => "user_id",
            Self::Username => "username",
            Self::Password => "password",
            Self::RedirectUri => "redirect_uri",
            Self::Scope => "scope",
            Self::CodeVerifier => "code_verifier",
        }
    }
}

/// Values gathered so far, with the duplicate/conflict rules applied as each source is added.
#[derive(Default)]
struct Collector {
    values: [Option<String>; SLOTS],
}

impl Collector {
    /// Add one source's pairs. Within a source a name may appear once; across sources the
    /// values must agree. Empty values count as absent.
    fn add_source(
        &mut self,
        pairs: impl Iterator<Item = Result<(Slot, Option<String>), Bad>>,
    ) -> Result<(), ShimError> {
        let mut seen = [false; SLOTS];
        for pair in pairs {
            let (slot, value) = pair.map_err(ShimError::invalid_request)?;
            let Some(value) = value.filter(|v| !v.is_empty()) else { continue };
            let i = slot as usize;
            if std::mem::replace(&mut seen[i], true) {
                return Err(ShimError::invalid_request(format!("parameter {} is repeated", slot.name())));
            }
            self.put(slot, value)?;
        }
        Ok(())
    }

    fn put(&mut self, slot: Slot, value: String) -> Result<(), ShimError> {
        let current = &mut self.values[slot as usize];
        match current {
            Some(existing) if *existing != value => {
                Err(ShimError::invalid_request(format!("parameter {} has conflicting values", slot.name())))
            }
            Some(_) => Ok(()),
            None => {
                *current = Some(value);
                Ok(())
            }
        }
    }

    fn take(&mut self, slot: Slot) -> Option<String> {
        self.values[slot as usize].take()
    }
}

/// Collect the parameters of one token call.
///
/// `content_type` is the request's `Content-Type` (absent for GET); `authorization` the raw
/// `Authorization` header if any. Inlined into its two callers (legacy and v2 token calls): on
/// the legacy path it runs on every request.
#[inline(always)]
pub fn collect(
    query: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
    authorization: Option<&[u8]>,
) -> Result<(LegacyParams, BodyKind), ShimError> {
    let mut c = Collector::default();
    if let Some(q) = query {
        c.add_source(form_pairs(q.as_bytes()))?;
    }
    let kind = body_kind(content_type, body)?;
    match kind {
        BodyKind::None => {}
        BodyKind::Form => c.add_source(form_pairs(body))?,
        BodyKind::Json => {
            let pairs = json_pairs(body)?;
            c.add_source(pairs.into_iter().filter_map(|(k, v)| Some(Ok((Slot::of(&k)?, v)))))?;
        }
    }
    let mut basic_auth = false;
    if let Some(header) = authorization
        && let Some((id, secret)) = parse_basic(header)?
    {
        basic_auth = true;
        let creds: [Result<_, Bad>; 2] =
            [Ok((Slot::ClientId, Some(id))), Ok((Slot::ClientSecret, Some(secret)))];
        c.add_source(creds.into_iter()).map_err(|_| {
            ShimError::invalid_client("client credentials in the Authorization header and parameters differ")
        })?;
    }

    let user_id = c.take(Slot::UserId);
    let username = c.take(Slot::Username);
    let username = match (user_id, username) {
        (Some(a), Some(b)) if a != b => {
            return Err(ShimError::invalid_request(
                "parameters user_id and username have conflicting values",
            ));
        }
        (a, b) => a.or(b),
    };
    let params = LegacyParams {
        grant_type: c.take(Slot::GrantType),
        client_id: c.take(Slot::ClientId),
        client_secret: c.take(Slot::ClientSecret).map(Secret::new),
        code: c.take(Slot::Code).map(Secret::new),
        refresh_token: c.take(Slot::RefreshToken).map(Secret::new),
        username: username.map(Secret::new),
        password: c.take(Slot::Password).map(Secret::new),
        redirect_uri: c.take(Slot::RedirectUri),
        scope: c.take(Slot::Scope),
        code_verifier: c.take(Slot::CodeVerifier).map(Secret::new),
        basic_auth,
    };
    Ok((params, kind))
}

/// Every parameter of a token call, for a v2 call that is forwarded with all its parameters
/// (docs/protocol.md#v2-token-calls): the body's in order, then the query's that the body does not
/// repeat. Empty values count as absent, as in [`collect`] (run it first: it applies the duplicate,
/// conflict and credential rules). JSON values must be strings (`null` counts as absent).
pub(crate) fn all_pairs(
    query: Option<&str>,
    kind: BodyKind,
    body: &[u8],
) -> Result<Vec<(String, String)>, ShimError> {
    let mut out: Vec<(String, String)> = Vec::new();
    match kind {
        BodyKind::None => {}
        BodyKind::Form => {
            out.extend(
                form_urlencoded::parse(body)
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(k, v)| (k.into_owned(), v.into_owned())),
            );
        }
        BodyKind::Json => {
            let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
                .map_err(|_| ShimError::invalid_request("the body is not a JSON object"))?;
            for (k, v) in map {
                match v {
                    serde_json::Value::String(s) if !s.is_empty() => out.push((k, s)),
                    serde_json::Value::String(_) | serde_json::Value::Null => {}
                    _ => return Err(ShimError::invalid_request("JSON parameter values must be strings")),
                }
            }
        }
    }
    let from_body = out.len();
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if !v.is_empty() && !out[..from_body].iter().any(|(bk, bv)| *bk == k && *bv == v) {
            out.push((k.into_owned(), v.into_owned()));
        }
    }
    Ok(out)
}
/// The known parameters of an `application/x-www-form-urlencoded` string, split and decoded as
/// `form_urlencoded::parse` does, but strictly: every pair, known or not, must be validly
/// percent-encoded and decode to UTF-8 without control characters (see [`decode`]). An empty
/// value is `None` (absent), without allocating.
fn form_pairs(input: &[u8]) -> impl Iterator<Item = Result<(Slot, Option<String>), Bad>> + '_ {
    raw_pairs(input).filter_map(|pair| {
        let pair = match pair {
            Ok(pair) => pair,
            Err(e) => return Some(Err(e)),
        };
        // A plain name in a printable-ASCII form needs no decoding: it is the bytes as sent.
        let slot = if pair.plain[0] && pair.ascii {
            Slot::of_bytes(pair.name)
        } else {
            match decode(pair.name, pair.plain[0], pair.ascii) {
                Ok(name) => Slot::of(&name),
                Err(e) => return Some(Err(e)),
            }
        };
        match (slot, decode(pair.value, pair.plain[1], pair.ascii)) {
            (_, Err(e)) => Some(Err(e)),
            (None, Ok(_)) => None,
            (Some(slot), Ok(value)) => Some(Ok((slot, (!value.is_empty()).then(|| value.into_owned())))),
        }
    })
}

/// Decide how to read the body from its `Content-Type` (sniffing only when the header is absent).
fn body_kind(content_type: Option<&str>, body: &[u8]) -> Result<BodyKind, ShimError> {
    let Some(ct) = content_type else {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(BodyKind::None);
        }
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        return Ok(if first == Some(&b'{') { BodyKind::Json } else { BodyKind::Form });
    };
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        Ok(BodyKind::Form)
    } else if essence.eq_ignore_ascii_case("application/json")
        || essence.to_ascii_lowercase().ends_with("+json")
    {
        if body.iter().all(u8::is_ascii_whitespace) { Ok(BodyKind::None) } else { Ok(BodyKind::Json) }
    } else if body.is_empty() {
        Ok(BodyKind::None)
    } else {
        Err(ShimError::invalid_request(
            "unsupported Content-Type: send application/x-www-form-urlencoded or application/json",
        )
        .status(http::StatusCode::UNSUPPORTED_MEDIA_TYPE))
    }
}

/// A JSON object whose values are strings (null counts as absent); keys in order, duplicates kept
/// so the collector can refuse them.
fn json_pairs(body: &[u8]) -> Result<Vec<(String, Option<String>)>, ShimError> {
    use serde::de::{Deserializer, MapAccess, Visitor};

    struct PairsVisitor;
    impl<'de> Visitor<'de> for PairsVisitor {
        type Value = Result<Vec<(String, Option<String>)>, &'static str>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            let (mut bad, mut bad_text) = (false, false);
            while let Some(key) = map.next_key::<String>()? {
                bad_text |= has_control(&key);
                match map.next_value::<serde_json::Value>()? {
                    serde_json::Value::String(s) => {
                        // serde_json refuses raw control characters and invalid UTF-8, but an
                        // escape such as \u0000 decodes to one.
                        bad_text |= has_control(&s);
                        out.push((key, Some(s)));
                    }
                    serde_json::Value::Null => out.push((key, None)),
                    _ if Slot::of(&key).is_none() => {}
                    _ => bad = true,
                }
            }
            Ok(if bad_text {
                Err("a parameter contains a control character")
            } else if bad {
                Err("JSON parameter values must be strings")
            } else {
                Ok(out)
            })
        }
    }

    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = de
        .deserialize_map(PairsVisitor)
        .and_then(|r| de.end().map(|()| r))
        .map_err(|_| ShimError::invalid_request("the body is not a JSON object"))?;
    parsed.map_err(ShimError::invalid_request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    use crate::legacy::form::check_form;

    fn get(q: &str) -> Result<LegacyParams, ShimError> {
        collect(Some(q), None, b"", None).map(|(p, _)| p)
    }

    #[test]
    fn query_parameters() {
        let p = get("grant_type=password&user_id=u%40x.com&password=p+w&client_id=K&junk=1").unwrap();
        assert_eq!(p.grant_type.as_deref(), Some("password"));
        assert_eq!(p.username.as_ref().map(Secret::expose), Some("u@x.com"));
        assert_eq!(p.password.as_ref().map(Secret::expose), Some("p w"));
        assert_eq!(p.client_id.as_deref(), Some("K"));
    }

    #[test]
    fn empty_and_bare_values_are_absent() {
        let p = get("client_id=K&client_secret=&code").unwrap();
        assert_eq!(p.client_secret, None);
        assert_eq!(p.code, None);
    }

    #[test]
    fn repeated_in_one_source_is_refused() {
        let e = get("client_id=K&client_id=K").unwrap_err();
        assert!(e.description.contains("client_id is repeated"));
    }

    #[test]
    fn conflicting_across_sources_is_refused_but_equal_is_fine() {
        let form = Some("application/x-www-form-urlencoded");
        assert!(collect(Some("client_id=K"), form, b"client_id=K&code=c", None).is_ok());
        let e = collect(Some("client_id=K"), form, b"client_id=L", None).unwrap_err();
        assert!(e.description.contains("conflicting"));
    }

    #[test]
    fn json_body() {
        let (p, kind) = collect(
            None,
            Some("application/json; charset=utf-8"),
            br#"{"grant_type":"refresh_token","refresh_token":"r","client_id":"K","client_secret":null,"n":1}"#,
            None,
        )
        .unwrap();
        assert_eq!(kind, BodyKind::Json);
        assert_eq!(p.refresh_token.as_ref().map(Secret::expose), Some("r"));
        assert_eq!(p.client_secret, None);
    }

    #[test]
    fn json_rejects_non_strings_duplicates_and_garbage() {
        let json = Some("application/json");
        let e = collect(None, json, br#"{"client_id":5}"#, None).unwrap_err();
        assert!(e.description.contains("must be strings"));
        let e = collect(None, json, br#"{"client_id":"a","client_id":"a"}"#, None).unwrap_err();
        assert!(e.description.contains("repeated"));
        assert!(collect(None, json, br#"["client_id"]"#, None).is_err());
        assert!(collect(None, json, br#"{"client_id":"a"} trailing"#, None).is_err());
    }

    #[test]
    fn unsupported_content_type() {
        let e = collect(None, Some("text/plain"), b"client_id=K", None).unwrap_err();
        assert_eq!(e.status, http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[test]
    fn basic_header_counts_as_credentials() {
        let creds = base64::engine::general_purpose::STANDARD.encode("my+id:p%3Ass");
        let header = format!("Basic {creds}");
        let (p, _) = collect(Some("client_id=my id"), None, b"", Some(header.as_bytes())).unwrap();
        assert_eq!(p.client_id.as_deref(), Some("my id"));
        assert_eq!(p.client_secret.as_ref().map(Secret::expose), Some("p:ss"));
        assert!(p.basic_auth);
        let e = collect(Some("client_id=other"), None, b"", Some(header.as_bytes())).unwrap_err();
        assert_eq!(e.status, http::StatusCode::UNAUTHORIZED);
        assert!(collect(None, None, b"", Some(b"Basic !!!")).is_err());
        let (p, _) = collect(None, None, b"", Some(b"Bearer abc")).unwrap();
        assert!(!p.basic_auth);
    }

    #[test]
    fn all_pairs_keeps_every_parameter_in_order() {
        let json =
            br#"{"grant_type":"authorization_code","code":"c","resource":"r","client_secret":null,"x":""}"#;
        let pairs = all_pairs(Some("code=c&audience=a"), BodyKind::Json, json).unwrap();
        let want =
            [("grant_type", "authorization_code"), ("code", "c"), ("resource", "r"), ("audience", "a")];
        assert_eq!(pairs, want.map(|(k, v)| (k.to_owned(), v.to_owned())));
        assert!(all_pairs(None, BodyKind::Json, br#"{"n":1}"#).is_err());
        let pairs = all_pairs(None, BodyKind::Form, b"a=1&a=2&b=").unwrap();
        assert_eq!(pairs, [("a".to_owned(), "1".to_owned()), ("a".to_owned(), "2".to_owned())]);
    }

    #[test]
    fn bad_parameter_bytes_are_refused_in_every_source() {
        let form = Some("application/x-www-form-urlencoded");
        let json = Some("application/json");
        for bad in [
            "client_id=K&code=%zz",
            "client_id=K&code=%",
            "client_id=K&code=ab%4",
            "client_id=K&code=%ff",
            "client_id=K&code=%c0%af",
            "client_id=K&code=%ed%a0%80",
            "client_id=K&code=a%00b",
            "client_id=K&code=a%0Ab",
            "client_id=K&code=a%7Fb",
            "client_id=K&code=a%C2%85b",
            "client_id=K&junk=%zz",
            "client_id=K&%zz=1",
        ] {
            let e = collect(Some(bad), None, b"", None).unwrap_err();
            assert_eq!(
                (e.status, e.code.as_str()),
                (http::StatusCode::BAD_REQUEST, "invalid_request"),
                "{bad}"
            );
            assert!(!e.description.contains('%'), "{}", e.description);
            assert!(collect(None, form, bad.as_bytes(), None).is_err(), "form {bad}");
        }
        for raw in [
            &b"client_id=K&code=a\x00b"[..],
            b"client_id=K&code=a\tb",
            b"client_id=K&code=\xff",
            b"client_id=K&code=\xc0\xaf",
        ] {
            assert!(collect(None, form, raw, None).is_err(), "raw form {raw:?}");
        }
        for bad in [
            &br#"{"client_id":"K","code":"a\u0000b"}"#[..],
            br#"{"client_id":"K","code":"a\u001fb"}"#,
            br#"{"client_id":"K","code":"a\u0085b"}"#,
            br#"{"client_id":"K","code":"\ud800"}"#,
            b"{\"client_id\":\"K\",\"code\":\"\xff\"}",
            b"{\"client_id\":\"K\",\"code\":\"a\x01b\"}",
        ] {
            let e = collect(None, json, bad, None).unwrap_err();
            assert_eq!(e.status, http::StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(bad));
        }
        for creds in ["K:a%zz", "K:a%00", "K%ff:s"] {
            let header = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(creds));
            assert!(collect(None, None, b"", Some(header.as_bytes())).is_err(), "{creds}");
        }
        // Valid encodings still pass, including non-ASCII text.
        let (p, _) = collect(Some("client_id=K&code=caf%C3%A9+au+lait&x=%41"), None, b"", None).unwrap();
        assert_eq!(p.code.as_ref().map(Secret::expose), Some("café au lait"));
        assert!(check_form(b"a=%41&b=c+d").is_ok());
        assert!(check_form(b"a=%4").is_err());
    }

    #[test]
    fn user_id_and_username_must_agree() {
        assert!(get("user_id=a&username=a").is_ok());
        assert!(get("user_id=a&username=b").is_err());
    }
}
