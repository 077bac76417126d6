//! HTTP Basic client authentication (RFC 6749 §2.3.1): the header oauth-shim sends upstream.

use base64::Engine;
use http::HeaderValue;
use serde::{Deserialize, Serialize};

use super::secret::Secret;

/// RFC 6749 §2.3.1 form-urlencodes id and secret before base64; GoTo's migration guide shows
/// plain `base64(id:secret)`. The two agree unless a credential holds reserved characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum BasicAuthEncoding {
    #[default]
    FormUrlencoded,
    Raw,
}

/// `Basic base64(urlenc(id) ":" urlenc(secret))` per RFC 6749 §2.3.1: each part is
/// form-urlencoded before base64.
pub fn basic_auth_header(id: &str, secret: &Secret) -> HeaderValue {
    basic_auth_header_with(id, secret, BasicAuthEncoding::FormUrlencoded)
}

/// The Basic header with the chosen encoding of the credentials before base64.
pub fn basic_auth_header_with(id: &str, secret: &Secret, encoding: BasicAuthEncoding) -> HeaderValue {
    let mut raw = String::with_capacity(id.len() + secret.expose().len() + 1);
    match encoding {
        BasicAuthEncoding::FormUrlencoded => {
            raw.extend(form_urlencoded::byte_serialize(id.as_bytes()));
            raw.push(':');
            raw.extend(form_urlencoded::byte_serialize(secret.expose().as_bytes()));
        }
        BasicAuthEncoding::Raw => {
            raw.push_str(id);
            raw.push(':');
            raw.push_str(secret.expose());
        }
    }
    let mut value = String::from("Basic ");
    base64::engine::general_purpose::STANDARD.encode_string(raw, &mut value);
    // Base64 output is always a valid header value.
    let mut header = HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    header.set_sensitive(true);
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_header_urlencodes_before_base64() {
        let h = basic_auth_header("a b", &Secret::new("p:ss&="));
        let b64 = h.to_str().unwrap().strip_prefix("Basic ").unwrap();
        let raw = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
        assert_eq!(raw, b"a+b:p%3Ass%26%3D");
        assert!(h.is_sensitive());
        let h = basic_auth_header_with("a b", &Secret::new("p:ss&="), BasicAuthEncoding::Raw);
        let b64 = h.to_str().unwrap().strip_prefix("Basic ").unwrap();
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(b64).unwrap(), b"a b:p:ss&=");
    }
}
