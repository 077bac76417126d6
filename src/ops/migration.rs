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

/// At most this many distinct unknown client ids are tracked; further ones fold into one row.
pub(crate) const MAX_UNKNOWN_IDS: usize = 100;
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

impl Ledger {
    fn ids(&self, provider: &str) -> Option<&HashMap<String, Usage>> {
        self.by_id.iter().find(|(p, _)| p == provider).map(|(_, ids)| ids)
    }
}

#[derive(Default)]
struct Ledger {
    /// By provider (a short list, scanned), then client id.
    by_id: Vec<(String, HashMap<String, Usage>)>,
    unknown_ids: usize,
    folded: Usage,
    unattributed_v2: Tally,
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
}

/// Usage counters since start. Survive config reloads.
#[derive(Default)]
pub struct Migration {
    ledger: Mutex<Ledger>,
}

impl Migration {
    /// Record one call by `client_id` of `provider`; `configured` says whether the id is a
    /// configured client of that provider.
    pub(crate) fn record(&self, provider: &str, client_id: &str, configured: bool, call: Call) {
        let now = SystemTime::now();
        let mut ledger = self.ledger.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Ledger { by_id, unknown_ids, folded, .. } = &mut *ledger;
        let at = match by_id.iter().position(|(p, _)| p == provider) {
            Some(at) => at,
            None => {
                by_id.push((provider.to_owned(), HashMap::new()));
                by_id.len() - 1
            }
        };
        let ids = &mut by_id[at].1;
        let long = !configured && client_id.chars().count() > MAX_ID_CHARS;
        let cut_id = long.then(|| cut(client_id));
        let id = cut_id.as_deref().unwrap_or(client_id);
        let usage = if let Some(u) = ids.get_mut(id) {
            Some(u)
        } else if configured || *unknown_ids < MAX_UNKNOWN_IDS {
            if !configured {
                *unknown_ids += 1;
            }
            Some(ids.entry(id.to_owned()).or_default())
        } else {
            None
        };
        let usage = match usage {
            Some(u) => u,
            None => folded,
        };
        usage.calls.hit(now);
        for (tally, used) in usage.features.iter_mut().zip(call.features) {
            if used {
                tally.hit(now);
            }
        }
    }

    /// A v2-native call that named no configured client.
    pub(crate) fn record_unattributed_v2(&self) {
        let mut ledger = self.ledger.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        ledger.unattributed_v2.hit(SystemTime::now());
    }

    /// The report against the config in force: every configured client (in config order), then
    /// every other id seen (sorted).
    pub(crate) fn report(&self, config: &Config) -> Report {
        let ledger = self.ledger.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut clients: Vec<ClientReport> = config
            .clients
            .iter()
            .map(|c| {
                let usage =
                    ledger.ids(c.provider_name()).and_then(|ids| ids.get(&c.id)).copied().unwrap_or_default();
                let mut row =
                    ClientReport::new(c.provider_name(), Some(c.id.clone()), true, c.mode.as_str(), usage);
                row.continuity = c.continuity;
                row
            })
            .collect();
        let mut others: Vec<_> = ledger
            .by_id
            .iter()
            .flat_map(|(p, ids)| ids.iter().map(move |(id, usage)| ((p, id), usage)))
            .filter(|((p, id), _)| config.client_in(p, id).is_none())
            .collect();
        others.sort_by(|a, b| a.0.cmp(&b.0));
        for ((provider, id), usage) in others {
            clients.push(ClientReport::new(provider, Some(id.clone()), false, "unknown", *usage));
        }
        if ledger.folded.calls.count > 0 {
            clients.push(ClientReport::new("", None, false, "unknown", ledger.folded));
        }
        Report {
            generated_at: rfc3339(SystemTime::now()),
            features: Feature::ALL
                .iter()
                .map(|f| (f.as_str().to_owned(), serde_json::Value::String(f.describe().to_owned())))
                .collect(),
            clients,
            unattributed_v2_native: ledger.unattributed_v2.report(),
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

pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// `GET /migration`, as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub(crate) generated_at: String,
    /// Feature key → what it means, in report order.
    pub features: serde_json::Map<String, serde_json::Value>,
    pub clients: Vec<ClientReport>,
    /// v2-native calls naming no configured client: pass-through without a Basic header, v2
    /// authorize calls whose `client_id` is not configured.
    pub unattributed_v2_native: Seen,
    /// The config reload status (filled in by the admin route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientReport {
    /// The provider the id was seen on (or is configured for); empty on the folded row.
    #[serde(default)]
    pub provider: String,
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
    fn new(provider: &str, id: Option<String>, configured: bool, mode: &str, usage: Usage) -> Self {
        let features = Feature::ALL
            .iter()
            .zip(usage.features)
            .map(|(f, t)| (f.as_str().to_owned(), serde_json::to_value(t.report()).unwrap_or_default()))
            .collect();
        Self {
            provider: provider.to_owned(),
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
    // The provider column only when some client belongs to another provider than the default.
    let providers = report.clients.iter().any(|c| !c.provider.is_empty() && c.provider != "default");
    let mut header: Vec<String> = vec!["CLIENT".into()];
    if providers {
        header.push("PROVIDER".into());
    }
    header.extend(["MODE".into(), "CALLS".into()]);
    header.extend(Feature::ALL.iter().map(|f| f.short().to_owned()));
    header.push("CONTINUITY".into());
    header.push("LAST SEEN".into());
    let left = if providers { 3 } else { 2 };
    let mut rows = vec![header];
    for c in &report.clients {
        let id = c.id.as_deref().map_or_else(|| "(other unknown ids)".to_owned(), printable);
        let mut row = vec![id];
        if providers {
            row.push(printable(&c.provider));
        }
        row.extend([c.mode.clone(), c.calls.count.to_string()]);
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
            .map(|(i, (cell, w))| if i < left { format!("{cell:<w$}") } else { format!("{cell:>w$}") })
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
            m.record("default", &format!("u{i}"), false, Call::default().with(Feature::TokenGet, true));
        }
        m.record("default", &"x".repeat(500), false, Call::default());
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
        m.record("default", "evil\u{1b}[2J", false, Call::default());
        let t = table(&m.report(&Config::default()));
        assert!(!t.contains('\u{1b}'));
        assert!(t.contains("evil?[2J"));
    }
}
