//! A session's anchor in Redis, and the rule that decides whether a session read from Redis is
//! its current, live one.
//!
//! Whoever can write to Redis but lacks the `[state]` key can still write an old sealed value
//! back. So next to its record every session has an *anchor* (a field of the `cont:anchors`
//! hash): sealed with the key, it names the record version that is current and whether the
//! session is live or revoked, and lives until the latest expiry any record of the session
//! carried. The store writes a record and its anchor together, in one script that first checks
//! the anchor is still the one the writer read. Revocation turns the anchor into a tombstone
//! (version `u64::MAX`, revoked) that outlives every record of the session.
//!
//! A session read from Redis is accepted only when
//! - its id is in the index (`cont:index`, what listing and revoking read), so a session that
//!   works is always listed and revocable;
//! - its record opens and is not past the expiry sealed in it (a value whose Redis expiry was
//!   stripped is refused all the same);
//! - its anchor opens, is live, and names the record's version: an older record written back, a
//!   record of a revoked session, or a record whose anchor was deleted is refused.
//!
//! A record written before records carried a version (version 0) is accepted only while its
//! session has no anchor at all, that is until this version first writes it.

use super::session::{Session, SessionId};
use crate::crypto::{KeySet, Opened, Stamp};

/// The anchor version of a revoked session: no writer ever expects it.
const TOMBSTONE: u64 = u64::MAX;
const LIVE: u8 = 1;
const REVOKED: u8 = 0;

/// A session's anchor, opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Anchor {
    /// The version of the session's current record (`u64::MAX` once revoked).
    pub(crate) version: u64,
    /// The latest expiry (seconds since the epoch) of any record of the session: the anchor lives
    /// that long.
    pub(crate) until: u64,
    pub(crate) live: bool,
}

impl Anchor {
    /// The anchor of `session` written as `version`.
    pub(crate) fn live(session: &Session, version: u64) -> Self {
        Self { version, until: session.until.max(session.expires_at), live: true }
    }

    /// The tombstone of a revoked `session`.
    pub(crate) fn tombstone(session: &Session) -> Self {
        Self { version: TOMBSTONE, until: session.until.max(session.expires_at), live: false }
    }

    /// The bytes stored: the version in the clear (for the store's compare-and-set; the same
    /// version is sealed behind it), then the sealed anchor.
    pub(crate) fn seal(&self, keys: &KeySet, id: &SessionId) -> Vec<u8> {
        let stamp = Stamp { version: self.version, expires_at_ms: self.until.saturating_mul(1000) };
        let state = if self.live { LIVE } else { REVOKED };
        let mut out = self.version.to_be_bytes().to_vec();
        out.extend_from_slice(&keys.seal_stamped(&aad(id), stamp, &[state]));
        out
    }

    /// `None` when the anchor does not open, is past its expiry, or its clear version is not the
    /// sealed one.
    pub(crate) fn open(keys: &KeySet, id: &SessionId, stored: &[u8], now_ms: u64) -> Option<Self> {
        let (clear, sealed) = stored.split_first_chunk::<8>()?;
        let Opened::Stamped(stamp, state) = keys.open_stamped(&aad(id), sealed, now_ms)? else {
            return None;
        };
        let live = match state[..] {
            [LIVE] => true,
            [REVOKED] => false,
            _ => return None,
        };
        (u64::from_be_bytes(*clear) == stamp.version).then_some(Self {
            version: stamp.version,
            until: stamp.expires_at_ms / 1000,
            live,
        })
    }
}

/// The clear version an anchor written as `version` starts with: what a writer that read
/// `version` expects to find (nothing, for version 0).
pub(crate) fn expected(version: u64) -> Vec<u8> {
    if version == 0 { Vec::new() } else { version.to_be_bytes().to_vec() }
}

fn aad(id: &SessionId) -> [u8; 31] {
    let mut aad = [0u8; 31];
    aad[..15].copy_from_slice(b"session-anchor:");
    aad[15..].copy_from_slice(&id.0);
    aad
}

/// The session `id` as read from Redis (its record, its anchor, whether the index lists it),
/// if it is the current, live one (see the module's doc).
pub(crate) fn current(
    keys: &KeySet,
    id: SessionId,
    record: Option<&[u8]>,
    anchor: Option<&[u8]>,
    indexed: bool,
    now_ms: u64,
) -> Option<Session> {
    let Some(mut session) = Session::open(id, record?, keys) else {
        tracing::warn!(session = ?id, "a session record does not open with the configured keys");
        return None;
    };
    if session.expires_at.saturating_mul(1000) <= now_ms {
        return None;
    }
    let accepted = match (session.version, anchor) {
        (0, None) => indexed,
        (version, Some(anchor)) if version > 0 => {
            Anchor::open(keys, &id, anchor, now_ms).is_some_and(|anchor| {
                session.until = anchor.until;
                indexed && anchor.live && anchor.version == version
            })
        }
        _ => false,
    };
    if !accepted {
        tracing::warn!(
            session = ?id,
            "a session record in Redis is not its session's current one (revoked, superseded, or written back)"
        );
    }
    accepted.then_some(session)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::Secret;

    fn session(id: SessionId, expires_at: u64) -> Session {
        Session {
            id,
            client_id: "k".into(),
            provider: "p".into(),
            created_at: 1,
            expires_at,
            v2_access: Secret::new("canary-v2"),
            v2_refresh: None,
            v2_expires_at: None,
            v2_lifetime: None,
            profile: String::new(),
            access_hashes: vec![[1; 32]],
            refresh_hash: [2; 32],
            refreshes: 0,
            owners: Vec::new(),
            version: 0,
            until: 0,
        }
    }

    #[test]
    fn an_anchor_round_trips_and_its_clear_version_must_match_the_sealed_one() {
        let keys = KeySet::parse(&"cd".repeat(32)).unwrap();
        let id = SessionId::random();
        let s = session(id, 50);
        let anchor = Anchor::live(&s, 4);
        let stored = anchor.seal(&keys, &id);
        assert_eq!(&stored[..8], &expected(4)[..]);
        assert_eq!(Anchor::open(&keys, &id, &stored, 49_999), Some(anchor));
        assert_eq!(Anchor::open(&keys, &id, &stored, 50_000), None, "past the latest record's expiry");
        assert_eq!(Anchor::open(&keys, &SessionId::random(), &stored, 0), None, "another session's");
        let mut relabelled = stored.clone();
        relabelled[..8].copy_from_slice(&9u64.to_be_bytes());
        assert_eq!(Anchor::open(&keys, &id, &relabelled, 0), None);
        let dead = Anchor::tombstone(&Session { until: 80, ..s });
        assert_eq!(
            Anchor::open(&keys, &id, &dead.seal(&keys, &id), 0),
            Some(Anchor { version: u64::MAX, until: 80, live: false })
        );
        assert!(expected(0).is_empty());
    }

    #[test]
    fn only_the_current_record_of_a_live_indexed_session_is_accepted() {
        let keys = KeySet::parse(&"cd".repeat(32)).unwrap();
        let id = SessionId::random();
        let s = session(id, 50);
        let (v1, v2) = (s.seal(&keys, 1), s.seal(&keys, 2));
        let anchor2 = Anchor::live(&s, 2).seal(&keys, &id);
        let current = |record: &[u8], anchor: Option<&[u8]>, indexed| {
            super::current(&keys, id, Some(record), anchor, indexed, 1_000).map(|s| s.version)
        };
        assert_eq!(current(&v2, Some(&anchor2), true), Some(2));
        assert_eq!(current(&v2, Some(&anchor2), false), None, "not in the index");
        assert_eq!(current(&v1, Some(&anchor2), true), None, "an older record");
        assert_eq!(current(&v2, None, true), None, "its anchor deleted");
        assert_eq!(current(&v2, Some(&Anchor::tombstone(&s).seal(&keys, &id)), true), None, "revoked");
        assert_eq!(current(&v2, Some(&Anchor::live(&s, 2).seal(&keys, &SessionId::random())), true), None);
        assert!(super::current(&keys, id, Some(&v2), Some(&anchor2), true, 50_000).is_none(), "expired");
        assert!(super::current(&keys, id, None, Some(&anchor2), true, 0).is_none(), "no record");
        // A record from before versions: only while the session has no anchor.
        let old = keys.seal(&id.aad(), crate::continuity::session::RECORD_WITHOUT_VERSION);
        assert_eq!(current(&old, None, true), Some(0));
        assert_eq!(current(&old, None, false), None);
        assert_eq!(current(&old, Some(&anchor2), true), None);
        assert_eq!(current(&old, Some(&Anchor::tombstone(&s).seal(&keys, &id)), true), None);
    }
}
