//! What the record counts: the legacy (and v2) features of a call, and one call's features.

/// A legacy (or v2) behaviour the report counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    TokenGet,
    TokenJson,
    TokenForm,
    PasswordGrant,
    AuthorizeWithoutResponseType,
    MissingRedirectUri,
    ClientSecretSent,
    V2Native,
    V2Normalised,
    Continuity,
}

impl Feature {
    pub(crate) const ALL: [Feature; 10] = [
        Self::TokenGet,
        Self::TokenJson,
        Self::TokenForm,
        Self::PasswordGrant,
        Self::AuthorizeWithoutResponseType,
        Self::MissingRedirectUri,
        Self::ClientSecretSent,
        Self::V2Native,
        Self::V2Normalised,
        Self::Continuity,
    ];

    /// The key in the JSON report.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TokenGet => "token_get",
            Self::TokenJson => "token_json_body",
            Self::TokenForm => "token_form_body",
            Self::PasswordGrant => "password_grant",
            Self::AuthorizeWithoutResponseType => "authorize_without_response_type",
            Self::MissingRedirectUri => "authorize_missing_redirect_uri",
            Self::ClientSecretSent => "client_secret_sent",
            Self::V2Native => "v2_native",
            Self::V2Normalised => "v2_normalised",
            Self::Continuity => "continuity_token",
        }
    }

    /// A column header for the terminal table.
    pub fn short(self) -> &'static str {
        match self {
            Self::TokenGet => "GET",
            Self::TokenJson => "JSON",
            Self::TokenForm => "FORM",
            Self::PasswordGrant => "PASSWD",
            Self::AuthorizeWithoutResponseType => "NO-RT",
            Self::MissingRedirectUri => "NO-REDIR",
            Self::ClientSecretSent => "SECRET",
            Self::V2Native => "V2",
            Self::V2Normalised => "V2-NORM",
            Self::Continuity => "CONTIN",
        }
    }

    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::TokenGet => "token call by GET",
            Self::TokenJson => "token call with a JSON body",
            Self::TokenForm => "token call with a form body",
            Self::PasswordGrant => "password grant (direct login)",
            Self::AuthorizeWithoutResponseType => "legacy authorize without response_type",
            Self::MissingRedirectUri => "authorize without redirect_uri",
            Self::ClientSecretSent => "caller sent client_secret (parameter or Basic header)",
            Self::V2Native => "v2-native call: /oauth/v2/* on pass-through, or authorize with response_type",
            Self::V2Normalised => {
                "v2, needed normalisation: a v2 token call with a JSON body or body credentials"
            }
            Self::Continuity => {
                "API call with an oauth-shim-minted token (token continuity: breaks on a direct v2 switch)"
            }
        }
    }
}

/// What happened in one call, as recorded.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Call {
    pub features: [bool; Feature::ALL.len()],
}

impl Call {
    pub(crate) fn with(mut self, feature: Feature, yes: bool) -> Self {
        if yes {
            self.features[feature as usize] = true;
        }
        self
    }

    pub(crate) fn is_legacy(&self) -> bool {
        !(self.features[Feature::V2Native as usize] || self.features[Feature::V2Normalised as usize])
    }
}
