//! The migration report: per client id, how often and how recently each legacy feature was used,
//! so operators can see who still speaks legacy and how. Fed from the token and authorize
//! handlers and from pass-through; read at the admin listener's `GET /migration` and by
//! `oauth-shim report`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::config::Config;

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
    Continuity,
}

impl Feature {
    pub const ALL: [Feature; 9] = [
        Self::TokenGet,
        Self::TokenJson,
        Self::TokenForm,
        Self::PasswordGrant,
        Self::AuthorizeWithoutResponseType,
        Self::MissingRedirectUri,
        Self::ClientSecretSent,
        Self::V2Native,
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
            Self::Continuity => "CONTIN",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::TokenGet => "token call by GET",
            Self::TokenJson => "token call with a JSON body",
            Self::TokenForm => "token call with a form body",
            Self::PasswordGrant => "password grant (direct login)",
            Self::AuthorizeWithoutResponseType => "legacy authorize without response_type",
            Self::MissingRedirectUri => "authorize without redirect_uri",
            Self::ClientSecretSent => "caller sent client_secret (parameter or Basic header)",
            Self::V2Native => "v2-native call (/oauth/v2/*) seen on pass-through",
            Self::Continuity => {
                "API call with an oauth-shim-minted token (token continuity: breaks on a direct v2 switch)"
            }
        }
    }
}

/// At most this many distinct unknown client ids are tracked; further ones fold into one row.
pub const MAX_UNKNOWN_IDS: usize = 100;
/// Longer unknown ids are cut (they are caller input).
const MAX_ID_CHARS: usize = 64;

#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    count: u64,
    last_seen: Option<SystemTime>,
}

impl Tally {
    fn hit(&mut self, now: SystemTime) {
        self.count += 1;
        self.last_seen = Some(now);
    }

    fn report(self) -> Seen {
        Seen { count: self.count, last_seen: self.last_seen.map(rfc3339) }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    calls: Tally,
    features: [Tally; Feature::ALL.len()],
}

#[derive(Default)]
struct State {
    by_id: HashMap<String, Usage>,
    unknown_ids: usize,
    folded: Usage,
    unattributed_v2: Tally,
}

/// What happened in one call, as recorded.
#[derive(Debug, Default, Clone, Copy)]
pub struct Call {
    pub features: [bool; Feature::ALL.len()],
}

impl Call {
    pub fn with(mut self, feature: Feature, yes: bool) -> Self {
        if yes {
            self.features[feature as usize] = true;
        }
        self
    }
}

/// Usage counters since start. Survive config reloads.
#[derive(Default)]
pub struct Migration {
    state: Mutex<State>,
}

impl Migration {
    /// Record one call by `client_id`; `configured` says whether the id is a configured client.
    pub fn record(&self, client_id: &str, configured: bool, call: Call) {
        let now = SystemTime::now();
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let state = &mut *state;
        let usage = if let Some(u) = state.by_id.get_mut(client_id) {
            u
        } else if configured || state.unknown_ids < MAX_UNKNOWN_IDS {
            if !configured {
                state.unknown_ids += 1;
            }
            let id: String = if configured { client_id.to_owned() } else { cut(client_id) };
            state.by_id.entry(id).or_default()
        } else {
            &mut state.folded
        };
        usage.calls.hit(now);
        for (tally, used) in usage.features.iter_mut().zip(call.features) {
            if used {
                tally.hit(now);
            }
        }
    }

    /// A v2-native pass-through call that named no client.
    pub fn record_unattributed_v2(&self) {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.unattributed_v2.hit(SystemTime::now());
    }

    /// The report against the config in force: every configured client (in config order), then
    /// every other id seen (sorted).
    pub fn report(&self, config: &Config) -> Report {
        let state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut clients: Vec<ClientReport> = config
            .clients
            .iter()
            .map(|c| {
                let usage = state.by_id.get(&c.id).copied().unwrap_or_default();
                let mut row = ClientReport::new(Some(c.id.clone()), true, c.mode.as_str(), usage);
                row.continuity = c.continuity;
                row
            })
            .collect();
        let mut others: Vec<_> = state.by_id.iter().filter(|(id, _)| config.client(id).is_none()).collect();
        others.sort_by(|a, b| a.0.cmp(b.0));
        for (id, usage) in others {
            clients.push(ClientReport::new(Some(id.clone()), false, "unknown", *usage));
        }
        if state.folded.calls.count > 0 {
            clients.push(ClientReport::new(None, false, "unknown", state.folded));
        }
        Report {
            generated_at: rfc3339(SystemTime::now()),
            features: Feature::ALL
                .iter()
                .map(|f| (f.as_str().to_owned(), serde_json::Value::String(f.describe().to_owned())))
                .collect(),
            clients,
            unattributed_v2_native: state.unattributed_v2.report(),
            reload: None,
        }
    }
}

fn cut(id: &str) -> String {
    if id.chars().count() <= MAX_ID_CHARS {
        id.to_owned()
    } else {
        let mut s: String = id.chars().take(MAX_ID_CHARS).collect();
        s.push('…');
        s
    }
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `GET /migration`, as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub generated_at: String,
    /// Feature key → what it means, in report order.
    pub features: serde_json::Map<String, serde_json::Value>,
    pub clients: Vec<ClientReport>,
    /// v2-native pass-through calls without a Basic header naming a client.
    pub unattributed_v2_native: Seen,
    /// The config reload status (filled in by the admin route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientReport {
    /// `null` for the row that folds unknown ids beyond the tracking limit.
    pub id: Option<String>,
    pub configured: bool,
    /// `rewrite`, `passthrough`, `deny`, or `unknown` (answered `invalid_client`).
    pub mode: String,
    /// Token continuity is on: its integrations hold oauth-shim-minted tokens and will break on
    /// a direct switch to v2 (the `continuity_token` count shows how much they rely on it).
    #[serde(default)]
    pub continuity: bool,
    pub calls: Seen,
    /// Feature key → count and last-seen time, every feature listed.
    pub features: serde_json::Map<String, serde_json::Value>,
}

impl ClientReport {
    fn new(id: Option<String>, configured: bool, mode: &str, usage: Usage) -> Self {
        let features = Feature::ALL
            .iter()
            .zip(usage.features)
            .map(|(f, t)| (f.as_str().to_owned(), serde_json::to_value(t.report()).unwrap_or_default()))
            .collect();
        Self {
            id,
            configured,
            mode: mode.to_owned(),
            continuity: false,
            calls: usage.calls.report(),
            features,
        }
    }

    /// Count of `feature` in this row (0 when absent).
    pub fn count(&self, feature: Feature) -> u64 {
        self.features.get(feature.as_str()).and_then(|v| v.get("count")).and_then(|c| c.as_u64()).unwrap_or(0)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Seen {
    pub count: u64,
    /// RFC 3339, UTC, seconds.
    pub last_seen: Option<String>,
}

/// Render the report as a table for a terminal. Client ids are caller input: control
/// characters are replaced so a crafted id cannot drive the terminal.
pub fn table(report: &Report) -> String {
    let mut header: Vec<String> = vec!["CLIENT".into(), "MODE".into(), "CALLS".into()];
    header.extend(Feature::ALL.iter().map(|f| f.short().to_owned()));
    header.push("CONTINUITY".into());
    header.push("LAST SEEN".into());
    let mut rows = vec![header];
    for c in &report.clients {
        let id = c.id.as_deref().map_or_else(|| "(other unknown ids)".to_owned(), printable);
        let mut row = vec![id, c.mode.clone(), c.calls.count.to_string()];
        row.extend(Feature::ALL.iter().map(|f| c.count(*f).to_string()));
        row.push(if c.continuity { "on" } else { "off" }.into());
        row.push(c.calls.last_seen.clone().unwrap_or_else(|| "never".into()));
        rows.push(row);
    }
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, w))| if i < 2 { format!("{cell:<w$}") } else { format!("{cell:>w$}") })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    let v2 = &report.unattributed_v2_native;
    if v2.count > 0 {
        out.push_str(&format!(
            "v2-native calls naming no client: {} (last {})\n",
            v2.count,
            v2.last_seen.as_deref().unwrap_or("never")
        ));
    }
    out.push('\n');
    for f in Feature::ALL {
        out.push_str(&format!("{:<9} {}\n", f.short(), f.describe()));
    }
    out
}

fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_ids_are_bounded_and_cut() {
        let m = Migration::default();
        for i in 0..MAX_UNKNOWN_IDS + 5 {
            m.record(&format!("u{i}"), false, Call::default().with(Feature::TokenGet, true));
        }
        m.record(&"x".repeat(500), false, Call::default());
        let r = m.report(&Config::default());
        assert_eq!(r.clients.len(), MAX_UNKNOWN_IDS + 1);
        let folded = r.clients.last().unwrap();
        assert!(folded.id.is_none());
        assert_eq!(folded.calls.count, 6);
        assert_eq!(folded.count(Feature::TokenGet), 5);
        assert!(r.clients.iter().all(|c| c.id.as_ref().is_none_or(|id| id.chars().count() <= 65)));
    }

    #[test]
    fn table_neutralises_control_characters() {
        let m = Migration::default();
        m.record("evil\u{1b}[2J", false, Call::default());
        let t = table(&m.report(&Config::default()));
        assert!(!t.contains('\u{1b}'));
        assert!(t.contains("evil?[2J"));
    }
}
