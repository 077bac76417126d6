//! The embedded session store: one redb file, `sessions.redb`, under `[continuity] dir`.
//!
//! Three tables. `sessions` maps a session id to `expires_at (8 bytes, big-endian) | sealed
//! record`; the expiry is outside the seal so the sweep needs no key. `tokens` maps the keyed
//! hash of each live minted token to its session id. `owners` maps the keyed hash of whom a
//! session counts against (its client, its user) followed by the session id to the session's
//! expiry, for the per-client and per-user caps. None holds a token or a user name: the record
//! is AES-256-GCM sealed, and the indexes hold only HMACs. Every write is one redb transaction,
//! committed durably (fsync) before it returns, so a crash leaves the last committed state.
//!
//! One process holds the file, so the places logins under way have taken among the sessions
//! ([`Embedded::reserve`]) are kept in memory: they end with the login, or with the process.

use std::path::Path;
use std::sync::{Mutex, PoisonError};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::session::SessionId;

const SESSIONS: TableDefinition<&[u8; 16], &[u8]> = TableDefinition::new("sessions");
const TOKENS: TableDefinition<&[u8; 32], &[u8; 16]> = TableDefinition::new("tokens");
const OWNERS: TableDefinition<&[u8; 48], u64> = TableDefinition::new("owners");

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
pub(crate) type SealedSession = (SessionId, Vec<u8>);

/// Which session cap refused a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Over {
    /// `max_sessions`: all sessions.
    All,
    /// `max_sessions_per_client`.
    Client,
    /// `max_sessions_per_user`.
    User,
}

impl Over {
    /// The metric label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Client => "client",
            Self::User => "user",
        }
    }
}

/// One cap below `max_sessions`: at most `max` live sessions (places taken included) counted
/// under `owners`, the hash of one owner under each configured key, the first key's first (a
/// session counted under an older key's hash still counts while that key is configured).
pub(crate) struct Cap {
    pub(crate) owners: Vec<[u8; 32]>,
    pub(crate) max: u64,
    pub(crate) over: Over,
}

/// A session to delete, with every index entry it has: its token hashes and its owners.
pub(crate) struct Doomed {
    pub(crate) id: SessionId,
    pub(crate) tokens: Vec<[u8; 32]>,
    pub(crate) owners: Vec<[u8; 32]>,
}

pub(crate) struct Embedded {
    db: Database,
    /// Places taken by logins under way: the future session's id and its owners.
    pending: Mutex<Vec<(SessionId, Vec<[u8; 32]>)>>,
}

/// The `owners` key of a session under one owner.
fn owner_key(owner: &[u8; 32], id: &[u8; 16]) -> [u8; 48] {
    let mut key = [0u8; 48];
    key[..32].copy_from_slice(owner);
    key[32..].copy_from_slice(id);
    key
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
        tx.open_table(OWNERS).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(Self { db, pending: Mutex::default() })
    }

    /// The session a token hash indexes, if any.
    pub(crate) fn find(&self, hash: &[u8; 32]) -> Result<Option<SealedSession>, StoreError> {
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

    /// Write a session's record, index its `add` hashes and drop the `remove` ones, and count
    /// it against its `owners` until it expires. A place its login took is settled.
    pub(crate) fn put(
        &self,
        id: SessionId,
        expires_at: u64,
        sealed: &[u8],
        add: &[[u8; 32]],
        remove: &[[u8; 32]],
        owners: &[[u8; 32]],
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
            let mut table = tx.open_table(OWNERS).map_err(err)?;
            for owner in owners {
                table.insert(&owner_key(owner, &id.0), expires_at).map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        self.give_back(id);
        Ok(())
    }

    /// Take a place for a login under way (the session it will create is `id`), unless that
    /// would put more than `max_sessions` in the store or more than a cap's `max` under one of
    /// the cap's owners; `Some` names the cap that refused. Live sessions and places taken are
    /// counted alike.
    pub(crate) fn reserve(
        &self,
        id: SessionId,
        now: u64,
        max_sessions: u64,
        caps: &[Cap],
    ) -> Result<Option<Over>, StoreError> {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let tx = self.db.begin_read().map_err(err)?;
        let all = tx.open_table(SESSIONS).map_err(err)?.len().map_err(err)?;
        if all.saturating_add(pending.len() as u64) >= max_sessions {
            return Ok(Some(Over::All));
        }
        let table = tx.open_table(OWNERS).map_err(err)?;
        for cap in caps {
            let mut n =
                pending.iter().filter(|(_, o)| o.iter().any(|h| cap.owners.contains(h))).count() as u64;
            for owner in &cap.owners {
                let (first, last) = (owner_key(owner, &[0; 16]), owner_key(owner, &[0xff; 16]));
                for entry in table.range(&first..=&last).map_err(err)? {
                    n += u64::from(entry.map_err(err)?.1.value() > now);
                    if n >= cap.max {
                        return Ok(Some(cap.over));
                    }
                }
            }
            if n >= cap.max {
                return Ok(Some(cap.over));
            }
        }
        pending.push((id, caps.iter().filter_map(|c| c.owners.first().copied()).collect()));
        Ok(None)
    }

    /// Give back the place taken for `id` (its login failed, or its session is stored).
    pub(crate) fn give_back(&self, id: SessionId) {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).retain(|(p, _)| *p != id);
    }

    /// Delete sessions and their index entries. Returns how many sessions existed.
    pub(crate) fn delete(&self, doomed: &[Doomed]) -> Result<usize, StoreError> {
        let tx = self.db.begin_write().map_err(err)?;
        let mut n = 0;
        {
            let mut sessions = tx.open_table(SESSIONS).map_err(err)?;
            let mut tokens = tx.open_table(TOKENS).map_err(err)?;
            let mut owners = tx.open_table(OWNERS).map_err(err)?;
            for d in doomed {
                n += usize::from(sessions.remove(&d.id.0).map_err(err)?.is_some());
                for h in &d.tokens {
                    tokens.remove(h).map_err(err)?;
                }
                for owner in &d.owners {
                    owners.remove(&owner_key(owner, &d.id.0)).map_err(err)?;
                }
            }
        }
        tx.commit().map_err(err)?;
        Ok(n)
    }

    /// Every session (for operators' listing and revocation).
    pub(crate) fn scan(&self) -> Result<Vec<SealedSession>, StoreError> {
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

    /// Delete every session whose expiry is at or before `now`, every token entry that names no
    /// session, and every owner entry past its expiry. Returns how many sessions went.
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
            tx.open_table(OWNERS).map_err(err)?.retain(|_, expires| expires > now).map_err(err)?;
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
        store.put(a, 100, b"sealed-a", &[[1; 32], [2; 32]], &[], &[[9; 32]]).unwrap();
        store.put(b, 300, b"sealed-b", &[[3; 32]], &[], &[[9; 32]]).unwrap();
        assert_eq!(store.find(&[2; 32]).unwrap().unwrap(), (a, b"sealed-a".to_vec()));
        store.put(a, 100, b"sealed-a2", &[[4; 32]], &[[1; 32]], &[[9; 32]]).unwrap();
        assert!(store.find(&[1; 32]).unwrap().is_none());
        assert_eq!(store.load(a).unwrap().unwrap(), b"sealed-a2");
        assert_eq!(store.count().unwrap(), 2);
        assert_eq!(store.sweep(200).unwrap(), 1);
        assert!(store.find(&[4; 32]).unwrap().is_none());
        assert_eq!(store.find(&[3; 32]).unwrap().unwrap().0, b);
        assert_eq!(
            store.delete(&[Doomed { id: b, tokens: vec![[3; 32]], owners: vec![[9; 32]] }]).unwrap(),
            1
        );
        assert_eq!(store.count().unwrap(), 0);
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn places_count_with_live_sessions_until_given_back() {
        let dir = std::env::temp_dir().join(format!("osh-store-{}", SessionId::random().hex()));
        let store = Embedded::open(&dir).unwrap();
        let owner = [7; 32];
        let caps = [Cap { owners: vec![[6; 32], owner], max: 2, over: Over::Client }];
        let [a, b, c, d] = [(); 4].map(|()| SessionId::random());
        assert_eq!(store.reserve(a, 10, 100, &caps).unwrap(), None);
        assert_eq!(store.reserve(b, 10, 100, &caps).unwrap(), None);
        assert_eq!(store.reserve(c, 10, 100, &caps).unwrap(), Some(Over::Client), "two logins under way");
        store.give_back(b);
        // `a` is stored, under the hash an older key gave the owner: it still counts.
        store.put(a, 100, b"sealed", &[], &[], &[owner]).unwrap();
        assert_eq!(store.reserve(c, 10, 100, &caps).unwrap(), None);
        assert_eq!(store.reserve(d, 10, 100, &caps).unwrap(), Some(Over::Client));
        assert_eq!(store.reserve(d, 10, 2, &[]).unwrap(), Some(Over::All), "one stored, one under way");
        // Past its expiry a session no longer counts against its owner.
        assert_eq!(store.reserve(d, 100, 100, &caps).unwrap(), None);
        store.give_back(d);
        store.delete(&[Doomed { id: a, tokens: Vec::new(), owners: vec![owner] }]).unwrap();
        assert_eq!(store.reserve(d, 10, 100, &caps).unwrap(), None, "deleted: its place is free");
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }
}
