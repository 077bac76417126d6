//! The encodings legacy calls arrive in, checked strictly: form-urlencoded pairs (query strings
//! and form bodies) and the `Authorization: Basic` header (RFC 6749 §2.3.1). Bad bytes are
//! refused with fixed text; they are never echoed.

use base64::Engine;

use crate::error::ShimError;

/// What is wrong with a parameter's bytes (fixed text: the bytes are never echoed).
pub(super) type Bad = &'static str;

pub(super) const NOT_ENCODED: Bad = "a parameter is not validly percent-encoded";
pub(super) const NOT_UTF8: Bad = "a parameter is not valid UTF-8";
pub(super) const CONTROL: Bad = "a parameter contains a control character";

/// Check a whole `application/x-www-form-urlencoded` string (a query) as
/// [`super::params::collect`] reads one: every name and value validly percent-encoded, UTF-8
/// once decoded, and free of control characters. `/oauth/authorize` checks its query with it before reading any parameter.
pub(crate) fn check_form(input: &[u8]) -> Result<(), ShimError> {
    let check = || -> Result<(), Bad> {
        for pair in raw_pairs(input) {
            let pair = pair?;
            decode(pair.name, pair.plain[0], pair.ascii)?;
            decode(pair.value, pair.plain[1], pair.ascii)?;
        }
        Ok(())
    };
    check().map_err(ShimError::invalid_request)
}

/// One `name=value` pair of a form as sent, and whether each part is plain (no `+` or `%`, so
/// decoding leaves it as it is).
pub(super) struct RawPair<'a> {
    pub(super) name: &'a [u8],
    pub(super) value: &'a [u8],
    pub(super) plain: [bool; 2],
    /// The whole form is printable ASCII (the usual case): a plain part is valid as it is.
    pub(super) ascii: bool,
}

/// The pairs of a form, split on `&` and the first `=`. A raw control byte anywhere, or a `%`
/// not followed by two hex digits, ends the iteration with an error.
pub(super) fn raw_pairs(input: &[u8]) -> impl Iterator<Item = Result<RawPair<'_>, Bad>> {
    // One branch-free pass over the whole form first (it vectorises): printable ASCII only?
    let ascii = input.iter().fold(true, |ok, &b| ok & (0x20..0x7f).contains(&b));
    let refused = !ascii && input.iter().any(u8::is_ascii_control);
    let mut rest = if refused { &[][..] } else { input };
    let first = refused.then_some(Err(CONTROL));
    first.into_iter().chain(std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        // One pass over the pair: where it ends, its first `=`, whether its name and its value
        // need decoding, and whether every escape is complete.
        let (mut end, mut eq, mut plain) = (rest.len(), None, [true; 2]);
        for (i, &b) in rest.iter().enumerate() {
            match b {
                b'&' => {
                    end = i;
                    break;
                }
                b'=' if eq.is_none() => eq = Some(i),
                b'+' => plain[usize::from(eq.is_some())] = false,
                b'%' => {
                    plain[usize::from(eq.is_some())] = false;
                    let hex = |j: usize| rest.get(j).is_some_and(u8::is_ascii_hexdigit);
                    if !hex(i + 1) || !hex(i + 2) {
                        rest = &[];
                        return Some(Err(NOT_ENCODED));
                    }
                }
                _ => {}
            }
        }
        let pair = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or_default();
        let (name, value) = match eq {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        Some(Ok(RawPair { name, value, plain, ascii }))
    }))
}

/// Form-decode one part already scanned by [`raw_pairs`] (so its escapes are complete and it
/// holds no raw control byte): `+` is a space, then percent-decoding; the result must be UTF-8
/// (overlong forms and lone surrogates are not) without control characters. Borrowed for a
/// plain part. `ascii`: the whole form is printable ASCII, so a plain part is valid as it is.
pub(super) fn decode(part: &[u8], plain: bool, ascii: bool) -> Result<std::borrow::Cow<'_, str>, Bad> {
    if plain {
        let text = std::str::from_utf8(part).map_err(|_| NOT_UTF8)?;
        // Raw control bytes were refused already; C1 controls are two bytes of UTF-8.
        if !ascii && has_control(text) {
            return Err(CONTROL);
        }
        return Ok(text.into());
    }
    let plus: Vec<u8> = part.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect();
    let bytes: Vec<u8> = percent_encoding::percent_decode(&plus).collect();
    let text = String::from_utf8(bytes).map_err(|_| NOT_UTF8)?;
    if has_control(&text) {
        return Err(CONTROL);
    }
    Ok(text.into())
}

/// Whether a decoded value holds a control character (C0, DEL or C1).
pub(super) fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// Decode `Authorization: Basic base64(urlenc(id) ":" urlenc(secret))` (RFC 6749 §2.3.1).
/// Other schemes are not client authentication here and are ignored.
pub(crate) fn parse_basic(header: &[u8]) -> Result<Option<(String, String)>, ShimError> {
    let header = header.trim_ascii();
    let Some(scheme_end) = header.iter().position(|b| *b == b' ') else { return Ok(None) };
    if !header[..scheme_end].eq_ignore_ascii_case(b"basic") {
        return Ok(None);
    }
    let bad = || ShimError::invalid_client("malformed Basic authorization header");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(header[scheme_end..].trim_ascii())
        .map_err(|_| bad())?;
    let colon = decoded.iter().position(|b| *b == b':').ok_or_else(bad)?;
    // Each part is form-encoded (RFC 6749 §2.3.1) and held to the parameters' rules.
    let part = |raw: &[u8]| -> Result<String, ShimError> {
        let escapes_ok = raw.iter().enumerate().all(|(i, &b)| {
            b != b'%' || raw.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
        });
        if !escapes_ok || raw.iter().any(u8::is_ascii_control) {
            return Err(bad());
        }
        let plain = !raw.iter().any(|&b| b == b'+' || b == b'%');
        Ok(decode(raw, plain, false).map_err(|_| bad())?.into_owned())
    };
    Ok(Some((part(&decoded[..colon])?, part(&decoded[colon + 1..])?)))
}
