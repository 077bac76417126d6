//! Where the record lives: the embedded file ([`super::embedded`]) for one instance, Redis
//! ([`super::shared`]) for replicas, or this process's memory when neither is open. One set of
//! calls: add a flush's counts, read the days from one on.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use super::embedded::EmbeddedRecord;
use super::record::{self, Delta, Row, StoreError, View};
use super::shared::SharedRecord;
use crate::config::MigrationConfig;

pub(crate) enum Store {
    /// This process's memory: lost on restart.
    Memory(Mutex<(View, BTreeSet<Row>)>),
    /// The redb file `migration.redb` under `[migration] dir`; writes run on the blocking pool.
    Embedded(Arc<EmbeddedRecord>),
    /// Redis, shared by every replica with the same `[state]`.
    Redis(SharedRecord),
}

impl Store {
    pub(crate) fn memory() -> Self {
        Self::Memory(Mutex::default())
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            Self::Embedded(_) => "embedded",
            Self::Redis(_) => "redis",
        }
    }

    /// Add a flush's counts, and drop what is older than day `oldest`.
    pub(crate) async fn add(
        &self,
        deltas: &[Delta],
        cfg: &MigrationConfig,
        oldest: u32,
    ) -> Result<(), StoreError> {
        match self {
            Self::Memory(m) => {
                let mut guard = m.lock().unwrap_or_else(PoisonError::into_inner);
                let (view, unknown) = &mut *guard;
                for d in deltas {
                    record::apply(view, unknown, cfg.max_unknown_ids, d);
                }
                record::prune(view, unknown, oldest);
                Ok(())
            }
            Self::Embedded(e) => {
                let (e, deltas, max) = (Arc::clone(e), deltas.to_vec(), cfg.max_unknown_ids);
                tokio::task::spawn_blocking(move || e.add(&deltas, max, oldest))
                    .await
                    .map_err(|_| StoreError("migration record task failed".into()))?
            }
            Self::Redis(r) => r.add(deltas, cfg, oldest).await,
        }
    }

    /// The record from day `since` to day `today`.
    pub(crate) async fn read(&self, since: u32, today: u32) -> Result<View, StoreError> {
        match self {
            Self::Memory(m) => {
                let guard = m.lock().unwrap_or_else(PoisonError::into_inner);
                let mut view = guard.0.clone();
                for r in view.values_mut() {
                    r.days.retain(|d, _| *d >= since);
                }
                Ok(view)
            }
            Self::Embedded(e) => {
                let e = Arc::clone(e);
                tokio::task::spawn_blocking(move || e.read(since))
                    .await
                    .map_err(|_| StoreError("migration record task failed".into()))?
            }
            Self::Redis(r) => r.read(since, today).await,
        }
    }
}
