//! The record's unit tests: bounds, verdicts, windows and query parsing, in memory.

use super::record::DAY;
use super::report::{Query, Verdict, parse_days, table};
use super::{Call, Feature, Migration};
use crate::config::Config;

fn day(n: u64) -> u64 {
    n * DAY
}

#[tokio::test]
async fn unknown_ids_are_bounded_and_cut() {
    let m = Migration::default();
    let config = Config::default();
    for i in 0..config.migration.max_unknown_ids + 5 {
        m.record("default", &format!("u{i}"), false, Call::default().with(Feature::TokenGet, true));
    }
    m.record("default", &"x".repeat(500), false, Call::default());
    let r = m.report(&config, &Query::default()).await;
    assert_eq!(r.clients.len() as u64, config.migration.max_unknown_ids + 1);
    let folded = r.clients.last().unwrap();
    assert!(folded.id.is_none());
    assert_eq!(folded.calls.count, 6);
    assert_eq!(folded.count(Feature::TokenGet), 5);
    assert!(r.clients.iter().all(|c| c.id.as_ref().is_none_or(|id| id.chars().count() <= 65)));
}

#[tokio::test]
async fn table_neutralises_control_characters() {
    let m = Migration::default();
    m.record("default", "evil\u{1b}[2J", false, Call::default());
    let t = table(&m.report(&Config::default(), &Query::default()).await);
    assert!(!t.contains('\u{1b}'));
    assert!(t.contains("evil?[2J"));
}

#[tokio::test]
async fn verdicts_follow_the_last_legacy_call() {
    let m = Migration::default();
    let config = Config::default();
    let legacy = Call::default().with(Feature::TokenGet, true);
    m.pin_clock(Some(day(20_000) + 5));
    m.record("default", "old", false, legacy);
    m.record("default", "v2-only", false, Call::default().with(Feature::V2Native, true));
    m.pin_clock(Some(day(20_010) + 7));
    m.record("default", "busy", false, legacy);
    let r = m.report(&config, &Query::default()).await;
    let row = |id: &str| r.clients.iter().find(|c| c.id.as_deref() == Some(id)).unwrap().clone();
    assert_eq!(row("old").verdict_text(), "quiet for 10 days");
    assert_eq!(row("v2-only").verdict_text(), "quiet for 10 days");
    assert_eq!(row("busy").verdict_text(), "active");
    assert_eq!(row("old").daily.len(), 30);
    assert_eq!(row("old").daily[19], 1, "day 20000 is 10 days before today");
    assert_eq!(row("busy").daily[29], 1);
    assert_eq!((r.fleet.quiet, r.fleet.active, r.fleet.never_seen), (2, 1, 0));
    let only = Query { verdict: Some(Verdict::Active), ..Query::default() };
    assert_eq!(m.report(&config, &only).await.clients.len(), 1);
    let short = Query { since_days: Some(5), ..Query::default() };
    let r = m.report(&config, &short).await;
    let old = r.clients.iter().find(|c| c.id.as_deref() == Some("old")).unwrap();
    assert_eq!((old.legacy_calls, old.daily.len()), (0, 5), "outside the window");
    assert_eq!(old.last_legacy_call.as_deref(), Some("2024-10-04T00:00:05Z"));
}

#[test]
fn queries_parse() {
    let q = Query::parse(Some("since=14d&client=a%20b&verdict=quiet&provider=")).unwrap();
    assert_eq!(q.since_days, Some(14));
    assert_eq!(q.client.as_deref(), Some("a b"));
    assert_eq!((q.verdict, q.provider), (Some(Verdict::Quiet), None));
    for bad in ["since=0d", "since=3w", "since=x", "verdict=maybe", "since=99999d"] {
        assert!(Query::parse(Some(bad)).is_err(), "{bad}");
    }
    assert_eq!(parse_days("30days"), Ok(30));
}
