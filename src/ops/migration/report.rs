//! What a read of the record shows: the report (`GET /migration` as JSON, the text table of
//! `oauth-shim report`, and the page's data): per client, its mode, each feature's calls in the
//! window, a daily series of legacy calls, its last legacy call, and a verdict: quiet for N days
//! (ready to switch), active, or never seen.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::feature::Feature;
use super::record::{CALLS, Counts, DAY, FEATURES, LEGACY, Row, RowView, SLOTS, View};
use crate::config::Config;

/// What a reader asks for: the window, and optional filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Query {
    /// Whole days, today included; `None`: `[migration] window`.
    pub(crate) since_days: Option<u32>,
    pub(crate) client: Option<String>,
    pub(crate) provider: Option<String>,
    pub(crate) verdict: Option<Verdict>,
}

impl Query {
    /// From a URL query: `since=30d`, `client=ID`, `provider=NAME`, `verdict=quiet|active|never_seen`
    /// (empty values are no filter). An error names the bad parameter.
    pub(crate) fn parse(query: Option<&str>) -> Result<Self, String> {
        let mut q = Query::default();
        for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            if v.is_empty() {
                continue;
            }
            match &*k {
                "since" => q.since_days = Some(parse_days(&v)?),
                "client" => q.client = Some(v.into_owned()),
                "provider" => q.provider = Some(v.into_owned()),
                "verdict" => {
                    q.verdict = Some(match &*v {
                        "quiet" => Verdict::Quiet,
                        "active" => Verdict::Active,
                        "never_seen" => Verdict::NeverSeen,
                        _ => return Err("verdict must be quiet, active or never_seen".into()),
                    });
                }
                _ => {}
            }
        }
        Ok(q)
    }
}

/// `30d`, `30days` or `30` (whole days, 1 to 3650).
pub fn parse_days(s: &str) -> Result<u32, String> {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &s[digits.len()..];
    let n: u32 = digits.parse().map_err(|_| format!("since: {s:?} is not a number of days, such as 30d"))?;
    if !matches!(unit, "" | "d" | "day" | "days") || !(1..=3650).contains(&n) {
        return Err(format!("since: {s:?} is not a number of days between 1d and 3650d"));
    }
    Ok(n)
}

/// Whether a client is ready to switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No legacy call for at least `[migration] quiet_after`: ready to switch.
    Quiet,
    /// A legacy call more recent than that.
    Active,
    /// No call at all within the retention.
    NeverSeen,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Quiet => "quiet",
            Self::Active => "active",
            Self::NeverSeen => "never_seen",
        }
    }
}

/// `GET /migration`, as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub(crate) generated_at: String,
    /// The window's length in days (today included) and its first day (`YYYY-MM-DD`, UTC).
    pub window_days: u32,
    pub since: String,
    /// Where the record is kept: `embedded`, `redis` or `memory`.
    pub store: String,
    /// The store could not be read: only this process's counts since its last flush are shown.
    #[serde(default)]
    pub partial: bool,
    /// How many rows have each verdict (before the `client` and `verdict` filters).
    pub fleet: Fleet,
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

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Fleet {
    pub quiet: u64,
    pub active: u64,
    pub never_seen: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientReport {
    /// The provider the id was seen on (or is configured for); empty on the folded row.
    #[serde(default)]
    pub provider: String,
    /// `null` for the row that folds unknown ids beyond the record's bound.
    pub id: Option<String>,
    pub configured: bool,
    /// `rewrite`, `passthrough`, `deny`, or `unknown` (answered `invalid_client`).
    pub mode: String,
    /// Token continuity is on: its integrations hold oauth-shim-minted tokens and will break on
    /// a direct switch to v2 (the `continuity_token` count shows how much they rely on it).
    #[serde(default)]
    pub continuity: bool,
    /// Calls in the window, and the last call.
    pub calls: Seen,
    /// Legacy calls in the window (calls neither v2-native nor v2 needing normalisation).
    pub legacy_calls: u64,
    /// The last legacy call (RFC 3339), within the retention.
    pub last_legacy_call: Option<String>,
    pub first_seen: Option<String>,
    pub verdict: Verdict,
    /// With `quiet`: whole days since the last legacy call (or since first seen, with none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_days: Option<u64>,
    /// Legacy calls per day over the window, oldest first, today last.
    pub daily: Vec<u64>,
    /// Feature key → calls in the window and last-seen time, every feature listed.
    pub features: serde_json::Map<String, serde_json::Value>,
}

impl ClientReport {
    /// Count of `feature` in this row (0 when absent).
    pub fn count(&self, feature: Feature) -> u64 {
        self.features.get(feature.as_str()).and_then(|v| v.get("count")).and_then(|c| c.as_u64()).unwrap_or(0)
    }

    /// "quiet for N days", "active" or "never seen".
    pub fn verdict_text(&self) -> String {
        match (self.verdict, self.quiet_days) {
            (Verdict::Quiet, Some(1)) => "quiet for 1 day".into(),
            (Verdict::Quiet, n) => format!("quiet for {} days", n.unwrap_or(0)),
            (Verdict::Active, _) => "active".into(),
            (Verdict::NeverSeen, _) => "never seen".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Seen {
    pub count: u64,
    /// RFC 3339, UTC, seconds.
    pub last_seen: Option<String>,
}

pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn at(unix_secs: u64) -> Option<String> {
    (unix_secs != 0).then(|| rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(unix_secs)))
}

/// The window a query asks for, as (first day, days), at `today`.
pub(crate) fn window(config: &Config, query: &Query, today: u32) -> (u32, u32) {
    let days =
        query.since_days.unwrap_or(config.migration.window_days()).min(config.migration.retention_days());
    (today.saturating_sub(days - 1), days)
}

/// What a read shows.
pub(crate) struct Read {
    pub(crate) view: View,
    /// The store could not be read.
    pub(crate) partial: bool,
    pub(crate) store: &'static str,
    /// Unix seconds on the record's clock.
    pub(crate) now: u64,
}

/// The report against the config in force: every configured client (in config order), then
/// every other id seen (sorted), then the folded row.
pub(crate) fn build(config: &Config, query: &Query, read: Read) -> Report {
    let Read { mut view, partial, store, now } = read;
    let today = super::record::day_of(now);
    let (since, window) = window(config, query, today);
    let quiet_after = u64::from(config.migration.quiet_days()) * DAY;
    let build = |provider: &str, id: Option<String>, configured: bool, mode: &str, r: &RowView| {
        row_report(provider, id, configured, mode, r, (since, today, now, quiet_after))
    };
    let mut clients: Vec<ClientReport> = config
        .clients
        .iter()
        .map(|c| {
            let key = Row::Client { provider: c.provider_name().to_owned(), id: c.id.clone() };
            let r = view.remove(&key).unwrap_or_default();
            let mut row = build(c.provider_name(), Some(c.id.clone()), true, c.mode.as_str(), &r);
            row.continuity = c.continuity;
            row
        })
        .collect();
    let folded = view.remove(&Row::Folded);
    let v2 = view.remove(&Row::UnattributedV2).unwrap_or_default();
    for (row, r) in &view {
        if let Row::Client { provider, id } = row {
            clients.push(build(provider, Some(id.clone()), false, "unknown", r));
        }
    }
    if let Some(r) = folded {
        clients.push(build("", None, false, "unknown", &r));
    }
    let mut fleet = Fleet::default();
    for c in &clients {
        *match c.verdict {
            Verdict::Quiet => &mut fleet.quiet,
            Verdict::Active => &mut fleet.active,
            Verdict::NeverSeen => &mut fleet.never_seen,
        } += 1;
    }
    clients.retain(|c| {
        query.provider.as_ref().is_none_or(|p| *p == c.provider)
            && query.client.as_ref().is_none_or(|id| c.id.as_ref() == Some(id))
            && query.verdict.is_none_or(|v| v == c.verdict)
    });
    Report {
        generated_at: rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(now)),
        window_days: window,
        since: date(since),
        store: store.to_owned(),
        partial,
        fleet,
        features: Feature::ALL
            .iter()
            .map(|f| (f.as_str().to_owned(), serde_json::Value::String(f.describe().to_owned())))
            .collect(),
        clients,
        unattributed_v2_native: Seen { count: sum(&v2, since, CALLS), last_seen: at(v2.seen.last[CALLS]) },
        reload: None,
    }
}

/// `YYYY-MM-DD` of a day number.
pub(crate) fn date(day: u32) -> String {
    let s = rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(day) * DAY));
    s[..10].to_owned()
}

fn sum(r: &RowView, since: u32, slot: usize) -> u64 {
    r.days.range(since..).map(|(_, c)| c[slot]).sum()
}

/// One row of the report; `span` is (first day, today, now, quiet_after in seconds).
fn row_report(
    provider: &str,
    id: Option<String>,
    configured: bool,
    mode: &str,
    r: &RowView,
    (since, today, now, quiet_after): (u32, u32, u64, u64),
) -> ClientReport {
    let mut totals: Counts = [0; SLOTS];
    for (_, c) in r.days.range(since..) {
        super::record::add(&mut totals, c);
    }
    let features = Feature::ALL
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let seen = Seen { count: totals[FEATURES + i], last_seen: at(r.seen.last[FEATURES + i]) };
            (f.as_str().to_owned(), serde_json::to_value(seen).unwrap_or_default())
        })
        .collect();
    let last_legacy = r.seen.last[LEGACY];
    let (verdict, quiet_days) = if r.seen.last[CALLS] == 0 {
        (Verdict::NeverSeen, None)
    } else if last_legacy != 0 && now.saturating_sub(last_legacy) < quiet_after {
        (Verdict::Active, None)
    } else {
        let from = if last_legacy != 0 { last_legacy } else { r.seen.first };
        (Verdict::Quiet, Some(now.saturating_sub(from) / DAY))
    };
    ClientReport {
        provider: provider.to_owned(),
        id,
        configured,
        mode: mode.to_owned(),
        continuity: false,
        calls: Seen { count: totals[CALLS], last_seen: at(r.seen.last[CALLS]) },
        legacy_calls: totals[LEGACY],
        last_legacy_call: at(last_legacy),
        first_seen: at(r.seen.first),
        verdict,
        quiet_days,
        daily: (since..=today).map(|d| r.days.get(&d).map_or(0, |c| c[LEGACY])).collect(),
        features,
    }
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
    header.push("LAST LEGACY".into());
    header.push("VERDICT".into());
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
        row.push(c.last_legacy_call.clone().unwrap_or_else(|| "never".into()));
        row.push(c.verdict_text());
        rows.push(row);
    }
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = format!(
        "{} days from {} (store: {}{}): {} quiet, {} active, {} never seen\n\n",
        report.window_days,
        report.since,
        report.store,
        if report.partial { ", unreadable: this replica's recent counts only" } else { "" },
        report.fleet.quiet,
        report.fleet.active,
        report.fleet.never_seen
    );
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
