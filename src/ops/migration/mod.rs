//! The migration record: per provider, client id and UTC day, how often each legacy feature was
//! used, and when each was first and last seen, so operators can see who still speaks legacy,
//! how, and since when each client has been quiet. Fed from the token and authorize handlers and
//! from pass-through; read at the admin listener's `GET /migration` (JSON, text, the page) and
//! by `oauth-shim report`.
//!
//! A request only bumps this process's counts (`Ledger`, under one short lock, allocating only
//! for a row not seen since the last flush). A flusher ([`Migration::flush`], every
//! `[migration] flush_interval` and at shutdown) adds them to the record's store
//! ([`store::Store`]): the embedded file (`embedded`), Redis shared by replicas (`shared`), or
//! memory when neither is open. A read is the store's record plus the counts not yet flushed.
//! [`record`] is the data every store keeps, [`report`] what a read shows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::SystemTime;

use crate::config::Config;

mod embedded;
mod feature;
pub(crate) mod record;
mod report;
mod shared;
pub(crate) mod store;
#[cfg(test)]
mod tests;

pub(crate) use feature::Call;
pub use feature::Feature;
use record::{CALLS, Counts, Delta, FEATURES, LEGACY, Row, SLOTS, Times, View, day_of};
pub use report::parse_days;
pub use report::{ClientReport, Fleet, Report, Seen, Verdict, table};
pub(crate) use report::{Query, rfc3339};
use store::Store;

/// Longer unknown ids are cut (they are caller input).
const MAX_ID_CHARS: usize = 64;

/// One row's counts since the last flush. Kept (emptied) after a flush, so a client calling
/// steadily costs no allocation; dropped after a flush interval without calls.
#[derive(Debug, Default)]
struct Pending {
    configured: bool,
    days: Vec<(u32, Counts)>,
    seen: Times,
}

impl Pending {
    fn hit(&mut self, now: u64, call: &Call) {
        let day = day_of(now);
        let at = match self.days.iter().position(|(d, _)| *d == day) {
            Some(at) => at,
            None => {
                self.days.push((day, [0; SLOTS]));
                self.days.len() - 1
            }
        };
        let counts = &mut self.days[at].1;
        let mut bump = |slot: usize| {
            counts[slot] += 1;
            self.seen.last[slot] = now;
        };
        bump(CALLS);
        if call.is_legacy() {
            bump(LEGACY);
        }
        for (f, used) in call.features.iter().enumerate() {
            if *used {
                bump(FEATURES + f);
            }
        }
        if self.seen.first == 0 {
            self.seen.first = now;
        }
    }

    /// Take the counts out (for a flush or a read), leaving the row in place.
    fn delta(&self, row: Row) -> Delta {
        Delta { row, configured: self.configured, days: self.days.clone(), seen: self.seen }
    }
}

/// This process's counts since the last flush, and which unknown ids it gave a row.
#[derive(Default)]
struct Ledger {
    /// By provider (a short list, scanned), then client id.
    by_id: Vec<(String, HashMap<String, Pending>)>,
    /// Unknown ids given a row of their own, by provider; at most `max_unknown_ids` in all.
    sampled: Vec<(String, std::collections::HashSet<String>)>,
    sampled_count: u64,
    folded: Pending,
    unattributed_v2: Pending,
}

impl Ledger {
    fn deltas(&self) -> Vec<Delta> {
        let mut out = Vec::new();
        for (provider, ids) in &self.by_id {
            for (id, p) in ids.iter().filter(|(_, p)| !p.days.is_empty()) {
                out.push(p.delta(Row::Client { provider: provider.clone(), id: id.clone() }));
            }
        }
        for (row, p) in [(Row::Folded, &self.folded), (Row::UnattributedV2, &self.unattributed_v2)] {
            if !p.days.is_empty() {
                out.push(p.delta(row));
            }
        }
        out
    }

    /// Forget the counts `deltas` took: rows without counts are dropped, the others emptied.
    fn clear(&mut self) {
        for (_, ids) in &mut self.by_id {
            ids.retain(|_, p| !p.days.is_empty());
            for p in ids.values_mut() {
                p.days.clear();
                p.seen = Times::default();
            }
        }
        for p in [&mut self.folded, &mut self.unattributed_v2] {
            p.days.clear();
            p.seen = Times::default();
        }
    }

    /// Put back counts a flush could not write, to try again with the next one.
    fn restore(&mut self, deltas: Vec<Delta>) {
        for d in deltas {
            let p = match d.row {
                Row::Client { provider, id } => {
                    let at = provider_slot(&mut self.by_id, &provider, HashMap::new);
                    self.by_id[at].1.entry(id).or_default()
                }
                Row::Folded => &mut self.folded,
                Row::UnattributedV2 => &mut self.unattributed_v2,
            };
            p.configured |= d.configured;
            for (day, counts) in d.days {
                match p.days.iter_mut().find(|(d, _)| *d == day) {
                    Some((_, c)) => record::add(c, &counts),
                    None => p.days.push((day, counts)),
                }
            }
            p.seen.merge(&d.seen);
        }
    }
}

/// The index of `provider` in a per-provider list, added (with `empty()`) if missing.
fn provider_slot<T>(list: &mut Vec<(String, T)>, provider: &str, empty: impl FnOnce() -> T) -> usize {
    match list.iter().position(|(p, _)| p == provider) {
        Some(at) => at,
        None => {
            list.push((provider.to_owned(), empty()));
            list.len() - 1
        }
    }
}

/// The record: this process's counts and the store they are flushed to. Survives config
/// reloads.
pub struct Migration {
    ledger: Mutex<Ledger>,
    /// The store, opened with the listeners (`State::open_migration_record`); until then,
    /// reads show this process's counts only.
    store: OnceLock<Store>,
    /// Held by a flush from taking the counts until the store has them, and by a read, so a
    /// read never misses counts in flight.
    flushing: tokio::sync::Mutex<()>,
    /// Unix seconds the clock is pinned to (tests), or 0: the system clock.
    pinned: AtomicU64,
    max_unknown_ids: AtomicU64,
}

impl Default for Migration {
    fn default() -> Self {
        Self {
            ledger: Mutex::default(),
            store: OnceLock::new(),
            flushing: tokio::sync::Mutex::new(()),
            pinned: AtomicU64::new(0),
            max_unknown_ids: AtomicU64::new(crate::config::MigrationConfig::default().max_unknown_ids),
        }
    }
}

impl Migration {
    /// Record one call by `client_id` of `provider`; `configured` says whether the id is a
    /// configured client of that provider.
    pub(crate) fn record(&self, provider: &str, client_id: &str, configured: bool, call: Call) {
        let now = self.now();
        let max_unknown = self.max_unknown_ids.load(Ordering::Relaxed);
        let mut ledger = self.ledger.lock().unwrap_or_else(PoisonError::into_inner);
        let Ledger { by_id, sampled, sampled_count, folded, .. } = &mut *ledger;
        let at = provider_slot(by_id, provider, HashMap::new);
        let ids = &mut by_id[at].1;
        let long = !configured && client_id.chars().count() > MAX_ID_CHARS;
        let cut_id = long.then(|| cut(client_id));
        let id = cut_id.as_deref().unwrap_or(client_id);
        let pending = if let Some(p) = ids.get_mut(id) {
            p
        } else if configured {
            ids.entry(id.to_owned()).or_insert_with(|| Pending { configured: true, ..Pending::default() })
        } else {
            let at = provider_slot(sampled, provider, Default::default);
            let known = sampled[at].1.contains(id);
            if known || *sampled_count < max_unknown {
                if !known {
                    sampled[at].1.insert(id.to_owned());
                    *sampled_count += 1;
                }
                ids.entry(id.to_owned()).or_default()
            } else {
                folded
            }
        };
        pending.hit(now, &call);
    }

    /// A v2-native call that named no configured client.
    pub(crate) fn record_unattributed_v2(&self) {
        let now = self.now();
        let mut ledger = self.ledger.lock().unwrap_or_else(PoisonError::into_inner);
        ledger.unattributed_v2.hit(now, &Call::default().with(Feature::V2Native, true));
    }

    /// Use `store` from now on, with `[migration]`'s bounds. Only the first call counts.
    pub(crate) fn attach(&self, store: Store, config: &Config) {
        self.max_unknown_ids.store(config.migration.max_unknown_ids, Ordering::Relaxed);
        if self.store.set(store).is_err() {
            tracing::debug!("the migration record's store was already open");
        }
    }

    /// Which store the record is in: `memory`, `embedded` or `redis`.
    pub(crate) fn store_kind(&self) -> &'static str {
        self.store.get().map_or("memory", Store::kind)
    }

    /// Add this process's counts to the store. Counts the store did not take (Redis down) stay
    /// here for the next flush. Returns whether the store took them.
    pub async fn flush(&self, config: &Config) -> bool {
        let Some(store) = self.store.get() else { return true };
        let _flushing = self.flushing.lock().await;
        let deltas = {
            let mut ledger = self.ledger.lock().unwrap_or_else(PoisonError::into_inner);
            let deltas = ledger.deltas();
            ledger.clear();
            deltas
        };
        let now = self.now();
        let oldest = oldest_day(now, config);
        match store.add(&deltas, &config.migration, oldest).await {
            Ok(()) => true,
            Err(why) => {
                tracing::warn!(error = %why, store = store.kind(), "migration record: counts not written; kept for the next flush");
                self.ledger.lock().unwrap_or_else(PoisonError::into_inner).restore(deltas);
                false
            }
        }
    }

    /// The record from day `since` on: the store's and this process's counts not yet flushed.
    /// `partial` is set when the store could not be read (only this process's counts since the
    /// last flush are then shown).
    pub(crate) async fn read(&self, since: u32) -> (View, bool) {
        let _flushing = self.flushing.lock().await;
        let (mut view, partial) = match self.store.get() {
            Some(store) => match store.read(since, day_of(self.now())).await {
                Ok(view) => (view, false),
                Err(why) => {
                    tracing::warn!(error = %why, store = store.kind(), "migration record: unreadable; showing this process's counts");
                    (View::new(), true)
                }
            },
            None => (View::new(), false),
        };
        let pending = self.ledger.lock().unwrap_or_else(PoisonError::into_inner).deltas();
        let mut mine = View::new();
        for d in pending {
            let r = mine.entry(d.row).or_default();
            for (day, counts) in d.days.into_iter().filter(|(day, _)| *day >= since) {
                record::add(r.days.entry(day).or_default(), &counts);
            }
            r.seen.merge(&d.seen);
        }
        record::merge(&mut view, mine);
        (view, partial)
    }

    /// The report against the config in force, as `query` asks.
    pub(crate) async fn report(&self, config: &Config, query: &Query) -> Report {
        let now = self.now();
        let (since, _) = report::window(config, query, day_of(now));
        let (view, partial) = self.read(since).await;
        report::build(config, query, report::Read { view, partial, store: self.store_kind(), now })
    }

    /// Now, in unix seconds, on the record's clock.
    pub fn now(&self) -> u64 {
        match self.pinned.load(Ordering::Relaxed) {
            0 => SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            pinned => pinned,
        }
    }

    /// Pin the record's clock to `unix_secs` (`None`: the system clock again). For tests of day
    /// rollover and retention.
    #[doc(hidden)]
    pub fn pin_clock(&self, unix_secs: Option<u64>) {
        self.pinned.store(unix_secs.unwrap_or(0), Ordering::Relaxed);
    }
}

/// The record in Redis, shared by replicas.
pub(crate) fn shared_record(redis: crate::redis::Redis) -> Store {
    Store::Redis(shared::SharedRecord::new(redis))
}

/// The record in `dir/migration.redb`.
pub(crate) fn embedded_record(dir: &std::path::Path) -> Result<Store, record::StoreError> {
    embedded::EmbeddedRecord::open(dir).map(|e| Store::Embedded(std::sync::Arc::new(e)))
}

/// The first day `retention` keeps, at `now`.
fn oldest_day(now: u64, config: &Config) -> u32 {
    day_of(now).saturating_sub(config.migration.retention_days().saturating_sub(1))
}

fn cut(id: &str) -> String {
    let mut s: String = id.chars().take(MAX_ID_CHARS).collect();
    s.push('…');
    s
}
