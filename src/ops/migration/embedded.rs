//! The record in one redb file, `migration.redb`, under `[migration] dir`: for a single
//! instance. Three tables: `days` maps a day (4 bytes, big-endian) followed by a row (its stored
//! form, `record::Row::encode`) to that row's counts that day; `seen` maps a row to when it was
//! first and last seen; `sampled` holds the unknown rows that have a place (at most
//! `max_unknown_ids`). Counts are packed (`record::pack`: only the non-zero ones). Each flush is
//! one transaction, committed durably before it returns; days before the retention go with it.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::record::{self, Counts, DAY, Delta, Row, SLOTS, StoreError, Times, View};

const DAYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("days");
const SEEN: TableDefinition<&[u8], &[u8]> = TableDefinition::new("seen");
const SAMPLED: TableDefinition<&[u8], ()> = TableDefinition::new("sampled");

/// The file name under `[migration] dir`.
pub(crate) const FILE_NAME: &str = "migration.redb";

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("migration record: {e}"))
}

pub(crate) struct EmbeddedRecord {
    db: Database,
}

fn day_key(day: u32, row: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + row.len());
    key.extend_from_slice(&day.to_be_bytes());
    key.extend_from_slice(row);
    key
}

impl EmbeddedRecord {
    /// Open (or create) the file in `dir`, creating the directory (mode 0700) if needed.
    pub(crate) fn open(dir: &Path) -> Result<Self, StoreError> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(|e| err(format!("cannot create {}: {}", dir.display(), e.kind())))?;
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(|e| err(format!("cannot open {}: {e}", path.display())))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        }
        let tx = db.begin_write().map_err(err)?;
        tx.open_table(DAYS).map_err(err)?;
        tx.open_table(SEEN).map_err(err)?;
        tx.open_table(SAMPLED).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(Self { db })
    }

    pub(crate) fn add(&self, deltas: &[Delta], max_unknown: u64, oldest: u32) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut days = tx.open_table(DAYS).map_err(err)?;
            let mut seen = tx.open_table(SEEN).map_err(err)?;
            let mut sampled = tx.open_table(SAMPLED).map_err(err)?;
            for d in deltas {
                let mut row = d.row.encode();
                let unknown = matches!(d.row, Row::Client { .. }) && !d.configured;
                if unknown && sampled.get(row.as_slice()).map_err(err)?.is_none() {
                    if sampled.len().map_err(err)? < max_unknown {
                        sampled.insert(row.as_slice(), ()).map_err(err)?;
                    } else {
                        row = Row::Folded.encode();
                    }
                }
                for (day, counts) in &d.days {
                    let key = day_key(*day, &row);
                    let mut sum: Counts = days
                        .get(key.as_slice())
                        .map_err(err)?
                        .and_then(|v| record::unpack(v.value()))
                        .unwrap_or([0; SLOTS]);
                    record::add(&mut sum, counts);
                    days.insert(key.as_slice(), record::pack(&sum).as_slice()).map_err(err)?;
                }
                let mut s = seen
                    .get(row.as_slice())
                    .map_err(err)?
                    .and_then(|v| record::unpack(v.value()))
                    .map(|slots| Times::from_slots(&slots))
                    .unwrap_or_default();
                s.merge(&d.seen);
                seen.insert(row.as_slice(), record::pack(&s.as_slots()).as_slice()).map_err(err)?;
            }
            days.retain_in(..oldest.to_be_bytes().as_slice(), |_, _| false).map_err(err)?;
            let cutoff = u64::from(oldest) * DAY;
            let mut gone = Vec::new();
            seen.retain(|row, v| {
                let keep = record::unpack::<{ SLOTS + 1 }>(v).is_some_and(|s| s[record::CALLS] >= cutoff);
                if !keep {
                    gone.push(row.to_vec());
                }
                keep
            })
            .map_err(err)?;
            for row in gone {
                sampled.remove(row.as_slice()).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    pub(crate) fn read(&self, since: u32) -> Result<View, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let mut view = View::new();
        let seen = tx.open_table(SEEN).map_err(err)?;
        for entry in seen.iter().map_err(err)? {
            let (k, v) = entry.map_err(err)?;
            if let (Some(row), Some(slots)) = (Row::decode(k.value()), record::unpack(v.value())) {
                view.entry(row).or_default().seen = Times::from_slots(&slots);
            }
        }
        let days = tx.open_table(DAYS).map_err(err)?;
        for entry in days.range(since.to_be_bytes().as_slice()..).map_err(err)? {
            let (k, v) = entry.map_err(err)?;
            let Some((day, row)) = k.value().split_first_chunk::<4>() else { continue };
            if let (Some(row), Some(counts)) = (Row::decode(row), record::unpack::<SLOTS>(v.value())) {
                view.entry(row).or_default().days.insert(u32::from_be_bytes(*day), counts);
            }
        }
        Ok(view)
    }
}
