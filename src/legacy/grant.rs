//! A legacy token call as the v2 call it becomes (docs/protocol.md#the-v2-request): the grant, and
//! the form body the upstream takes. Pure mapping, no I/O.

use crate::config::ClientConfig;
use crate::error::ShimError;
use crate::oauth::Secret;

use super::params::LegacyParams;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    AuthorizationCode,
    RefreshToken,
    Password,
}

impl Grant {
    pub(crate) fn as_str(self) -> &'static str {
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
pub(crate) fn with_client_credentials(form: &Secret, id: &str, secret: &Secret) -> Secret {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        super::super::params::collect(Some(q), None, b"", None).unwrap().0
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
}
