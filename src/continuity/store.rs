//! The embedded session store: one redb file, `sessions.redb`, under `[continuity] dir`.
//!
//! Two tables. `sessions` maps a session id to `expires_at (8 bytes, big-endian) | sealed
//! record`; the expiry is outside the seal so the sweep needs no key. `tokens` maps the keyed
//! hash of each live minted token to its session id. Neither holds a token: the record is
//! AES-256-GCM sealed, and the index holds only HMACs. Every write is one redb transaction,
//! committed durably (fsync) before it returns, so a crash leaves the last committed state.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::session::SessionId;

const SESSIONS: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("sessions");
const TOKENS: TableDefinition<&[u8; 32], &[u8; 16]> = TableDefinition::new("tokens");

/// The file name under `[continuity] dir`.
pub(crate) const FILE_NAME: &str = "sessions.redb";

/// A store failure: logged once where it is met; the message holds no token.
#[derive(Debug, Clone, thiserror::Error)]
#[error("session store: {0}")]
pub struct StoreError(pub String);

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

/// A stored session: its id and sealed record.
pub(crate) type Stored = (SessionId, Vec<u8>);

pub(crate) struct Embedded {
    db: Database,
}

impl Embedded {
    /// Open (or create) the store file in `dir`, creating the directory (mode 0700) if needed.
    pub(crate) fn open(dir: &Path) -> Result<Self, StoreError> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(dir)
            .map_err(|e| StoreError(format!("cannot create {}: {}", dir.display(), e.kind())))?;
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path)
            .map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        }
        let tx = db.begin_write().map_err(err)?;
        tx.open_table(SESSIONS).map_err(err)?;
        tx.open_table(TOKENS).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(Self { db })
    }

    /// The session a token hash indexes, if any.
    pub(crate) fn find(&self, hash: &[u8; 32]) -> Result<Option<Stored>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let tokens = tx.open_table(TOKENS).map_err(err)?;
        let Some(id) = tokens.get(hash).map_err(err)?.map(|g| SessionId(*g.value())) else {
            return Ok(None);
        };
        let sessions = tx.open_table(SESSIONS).map_err(err)?;
        Ok(sessions.get(&id.0).map_err(err)?.and_then(|v| sealed_part(v.value()).map(|s| (id, s.to_vec()))))
    }

    pub(crate) fn load(&self, id: SessionId) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let sessions = tx.open_table(SESSIONS).map_err(err)?;
        Ok(sessions.get(&id.0).map_err(err)?.and_then(|v| sealed_part(v.value()).map(<[u8]>::to_vec)))
    }

    /// Write a session's record and index its `add` hashes; drop the `remove` ones.
    pub(crate) fn put(
        &self,
        id: SessionId,
        expires_at: u64,
        sealed: &[u8],
        add: &[[u8; 32]],
        remove: &[[u8; 32]],
    ) -> Result<(), StoreError> {
        let mut value = Vec::with_capacity(8 + sealed.len());
        value.extend_from_slice(&expires_at.to_be_bytes());
        value.extend_from_slice(sealed);
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut sessions = tx.open_table(SESSIONS).map_err(err)?;
            sessions.insert(&id.0, value.as_slice()).map_err(err)?;
            let mut tokens = tx.open_table(TOKENS).map_err(err)?;
            for h in remove {
                tokens.remove(h).map_err(err)?;
            }
            for h in add {
                tokens.insert(h, &id.0).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Delete sessions and their index entries. Returns how many sessions existed.
    pub(crate) fn delete(&self, doomed: &[(SessionId, Vec<[u8; 32]>)]) -> Result<usize, StoreError> {
        let tx = self.db.begin_write().map_err(err)?;
        let mut n = 0;
        {
            let mut sessions = tx.open_table(SESSIONS).map_err(err)?;
            let mut tokens = tx.open_table(TOKENS).map_err(err)?;
            for (id, hashes) in doomed {
                n += usize::from(sessions.remove(&id.0).map_err(err)?.is_some());
                for h in hashes {
                    tokens.remove(h).map_err(err)?;
                }
            }
        }
        tx.commit().map_err(err)?;
        Ok(n)
    }

    /// Every session (for operators' listing and revocation).
    pub(crate) fn scan(&self) -> Result<Vec<Stored>, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        let sessions = tx.open_table(SESSIONS).map_err(err)?;
        let mut out = Vec::new();
        for entry in sessions.iter().map_err(err)? {
            let (k, v) = entry.map_err(err)?;
            if let Some(sealed) = sealed_part(v.value()) {
                out.push((SessionId(*k.value()), sealed.to_vec()));
            }
        }
        Ok(out)
    }

    /// Delete every session whose expiry is at or before `now`, and every index entry that
    /// names no session. Returns how many sessions went.
    pub(crate) fn sweep(&self, now: u64) -> Result<usize, StoreError> {
        let tx = self.db.begin_write().map_err(err)?;
        let swept;
        {
            let mut sessions = tx.open_table(SESSIONS).map_err(err)?;
            let before = sessions.len().map_err(err)?;
            sessions.retain(|_, v| expiry(v).is_some_and(|t| t > now)).map_err(err)?;
            swept = (before - sessions.len().map_err(err)?) as usize;
            let mut tokens = tx.open_table(TOKENS).map_err(err)?;
            let mut orphans = Vec::new();
            for entry in tokens.iter().map_err(err)? {
                let (h, id) = entry.map_err(err)?;
                if sessions.get(id.value()).map_err(err)?.is_none() {
                    orphans.push(*h.value());
                }
            }
            for h in &orphans {
                tokens.remove(h).map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        Ok(swept)
    }

    pub(crate) fn count(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(err)?;
        tx.open_table(SESSIONS).map_err(err)?.len().map_err(err)
    }
}

fn expiry(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.get(..8)?.try_into().ok()?))
}

fn sealed_part(value: &[u8]) -> Option<&[u8]> {
    value.get(8..)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_find_sweep_delete() {
        let dir = std::env::temp_dir().join(format!("osh-store-{}", SessionId::random().hex()));
        let store = Embedded::open(&dir).unwrap();
        let (a, b) = (SessionId::random(), SessionId::random());
        store.put(a, 100, b"sealed-a", &[[1; 32], [2; 32]], &[]).unwrap();
        store.put(b, 300, b"sealed-b", &[[3; 32]], &[]).unwrap();
        assert_eq!(store.find(&[2; 32]).unwrap().unwrap(), (a, b"sealed-a".to_vec()));
        store.put(a, 100, b"sealed-a2", &[[4; 32]], &[[1; 32]]).unwrap();
        assert!(store.find(&[1; 32]).unwrap().is_none());
        assert_eq!(store.load(a).unwrap().unwrap(), b"sealed-a2");
        assert_eq!(store.count().unwrap(), 2);
        assert_eq!(store.sweep(200).unwrap(), 1);
        assert!(store.find(&[4; 32]).unwrap().is_none());
        assert_eq!(store.find(&[3; 32]).unwrap().unwrap().0, b);
        assert_eq!(store.delete(&[(b, vec![[3; 32]])]).unwrap(), 1);
        assert_eq!(store.count().unwrap(), 0);
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }
}
