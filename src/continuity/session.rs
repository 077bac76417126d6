//! A continuity session: the real v2 tokens behind a pair of minted ones, and how a record of
//! it is sealed for the store. Only [`Session::seal`] and [`Session::open`] see the tokens in
//! serialized form, and only inside the AES-256-GCM envelope. A record carries its version
//! and its expiry inside the seal; a record written before records carried a version opens as
//! version 0.
//!
//! A record is serialized compactly ([`COMPACT`], then postcard: no field names, hashes as raw
//! bytes), since opening one is most of the cost of an API call with a minted token. A record
//! written as JSON by earlier versions (it starts with `{`) still opens.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::crypto::KeySet;
use crate::oauth::Secret;

/// Domain of the keyed hashes that index minted tokens.
pub(crate) const TOKEN_HASH_DOMAIN: &str = "continuity-token";
/// How many minted access tokens of one session stay valid: the newest, and the one before it
/// (a legacy refresh must not fail calls already on their way with the previous token).
pub(crate) const LIVE_ACCESS_TOKENS: usize = 2;

/// A session's identifier: random, not a credential (it only names the session to operators).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(pub [u8; 16]);

impl SessionId {
    pub fn random() -> Self {
        let mut id = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut id);
        Self(id)
    }

    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn parse(hex: &str) -> Option<Self> {
        if hex.len() != 32 {
            return None;
        }
        let mut id = [0u8; 16];
        for (i, b) in id.iter_mut().enumerate() {
            *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self(id))
    }

    /// The associated data its sealed record is bound to.
    pub fn aad(&self) -> [u8; 24] {
        let mut aad = [0u8; 24];
        aad[..8].copy_from_slice(b"session:");
        aad[8..].copy_from_slice(&self.0);
        aad
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

/// Seconds since the Unix epoch, now.
pub(crate) fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A session as the request path uses it. `Debug` shows no token.
#[derive(Clone)]
pub struct Session {
    pub id: SessionId,
    pub client_id: String,
    /// The token URL the session's grant belongs to; the minted tokens work only while the
    /// request's provider has the same one.
    pub provider: String,
    pub created_at: u64,
    /// When the minted tokens stop working (renewed by a legacy refresh).
    pub expires_at: u64,
    pub v2_access: Secret,
    pub v2_refresh: Option<Secret>,
    /// When the v2 access token expires, if the upstream said.
    pub v2_expires_at: Option<u64>,
    /// How long the v2 access token was issued for (for the refresh margin).
    pub v2_lifetime: Option<u64>,
    /// The legacy fields (`organizer_key` … `email`) as a JSON fragment, `,"name":value` each.
    pub profile: String,
    /// Keyed hashes of the live minted access tokens, newest first.
    pub access_hashes: Vec<[u8; 32]>,
    pub refresh_hash: [u8; 32],
    /// Upstream refreshes made for this session.
    pub refreshes: u64,
    /// Keyed hashes of whom the session counts against for the per-client and per-user caps
    /// (its client, and its user when the login named one).
    pub owners: Vec<[u8; 32]>,
    /// The version of the record the session was read from: 0 for a session not yet written,
    /// or read from a record written before records carried a version. Its next write is
    /// `version + 1`.
    pub version: u64,
    /// The latest expiry any record of this session has carried (with Redis, its anchor keeps
    /// it; see `continuity::anchor`); at least `expires_at` once read.
    pub until: u64,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("client_id", &self.client_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The first byte of a compact record (a JSON record starts with `{`).
const COMPACT: u8 = 1;

/// The serialized form, inside the seal only.
#[derive(Serialize, Deserialize)]
struct Record {
    client_id: String,
    provider: String,
    created_at: u64,
    expires_at: u64,
    v2_access: String,
    v2_refresh: Option<String>,
    v2_expires_at: Option<u64>,
    v2_lifetime: Option<u64>,
    profile: String,
    /// Hashes as base64 strings in JSON (an array of 32 numbers per hash made decoding a JSON
    /// record costly), as raw bytes in the compact form.
    #[serde(with = "b64_hashes")]
    access_hashes: Vec<[u8; 32]>,
    #[serde(with = "b64_hash")]
    refresh_hash: [u8; 32],
    refreshes: u64,
    #[serde(default, with = "b64_hashes")]
    owners: Vec<[u8; 32]>,
    /// Absent (0) in records written before records carried a version; versions that do not
    /// know it ignore it.
    #[serde(default)]
    version: u64,
}

mod b64_hash {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD_NO_PAD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn encode(hash: &[u8; 32]) -> String {
        STANDARD_NO_PAD.encode(hash)
    }

    pub(crate) fn decode<E: serde::de::Error>(text: &str) -> Result<[u8; 32], E> {
        let mut out = [0u8; 32];
        match STANDARD_NO_PAD.decode_slice(text, &mut out) {
            Ok(32) => Ok(out),
            _ => Err(E::custom("not a hash")),
        }
    }

    pub(crate) fn serialize<S: Serializer>(hash: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&encode(hash))
        } else {
            serde::Serialize::serialize(hash, s)
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        if d.is_human_readable() { decode(<&str>::deserialize(d)?) } else { <[u8; 32]>::deserialize(d) }
    }
}

mod b64_hashes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(hashes: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_seq(hashes.iter().map(super::b64_hash::encode))
        } else {
            s.collect_seq(hashes)
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 32]>, D::Error> {
        if d.is_human_readable() {
            <Vec<&str>>::deserialize(d)?.into_iter().map(super::b64_hash::decode).collect()
        } else {
            <Vec<[u8; 32]>>::deserialize(d)
        }
    }
}

impl Session {
    /// Every index hash of this session (its live access tokens and its refresh token).
    pub fn hashes(&self) -> Vec<[u8; 32]> {
        let mut all = self.access_hashes.clone();
        all.push(self.refresh_hash);
        all
    }

    /// Seconds the v2 access token has left (0 once expired); `None` if its expiry is unknown.
    pub fn v2_remaining(&self, now: u64) -> Option<u64> {
        self.v2_expires_at.map(|t| t.saturating_sub(now))
    }

    /// The sealed record of this session as version `version`.
    pub fn seal(&self, keys: &KeySet, version: u64) -> Vec<u8> {
        let record = Record {
            client_id: self.client_id.clone(),
            provider: self.provider.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            v2_access: self.v2_access.expose().to_owned(),
            v2_refresh: self.v2_refresh.as_ref().map(|s| s.expose().to_owned()),
            v2_expires_at: self.v2_expires_at,
            v2_lifetime: self.v2_lifetime,
            profile: self.profile.clone(),
            access_hashes: self.access_hashes.clone(),
            refresh_hash: self.refresh_hash,
            refreshes: self.refreshes,
            owners: self.owners.clone(),
            version,
        };
        // Serializing plain strings and numbers into a Vec cannot fail.
        let plain = postcard::to_extend(&record, vec![COMPACT]).unwrap_or_default();
        keys.seal(&self.id.aad(), &plain)
    }

    /// `None` when the record does not open under any configured key (altered, moved to another
    /// id, or sealed by a key no longer configured).
    pub fn open(id: SessionId, sealed: &[u8], keys: &KeySet) -> Option<Self> {
        let plain = keys.open(&id.aad(), sealed)?;
        let r: Record = match plain.split_first() {
            Some((&COMPACT, rest)) => postcard::from_bytes(rest).ok()?,
            _ => serde_json::from_slice(&plain).ok()?,
        };
        Some(Self {
            id,
            client_id: r.client_id,
            provider: r.provider,
            created_at: r.created_at,
            expires_at: r.expires_at,
            v2_access: Secret::new(r.v2_access),
            v2_refresh: r.v2_refresh.map(Secret::new),
            v2_expires_at: r.v2_expires_at,
            v2_lifetime: r.v2_lifetime,
            profile: r.profile,
            access_hashes: r.access_hashes,
            refresh_hash: r.refresh_hash,
            refreshes: r.refreshes,
            owners: r.owners,
            version: r.version,
            until: r.expires_at,
        })
    }
}

/// Assumed lifetime of a v2 access token whose answer stated none (GoTo's is an hour).
pub(crate) const DEFAULT_V2_LIFETIME: u64 = 3600;

/// A record as versions before record versions wrote it (expiring at 50 s after the epoch).
#[cfg(test)]
pub(crate) const RECORD_WITHOUT_VERSION: &[u8] = br#"{"client_id":"k","provider":"p","created_at":1,"expires_at":50,"v2_access":"a","v2_refresh":null,"v2_expires_at":null,"v2_lifetime":null,"profile":"","access_hashes":[],"refresh_hash":"AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI","refreshes":4}"#;

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as versions before record versions wrote it opens as version 0.
    #[test]
    fn a_record_without_a_version_opens_as_version_0() {
        let keys = KeySet::parse(&"ab".repeat(32)).unwrap();
        let id = SessionId::random();
        let old = Session::open(id, &keys.seal(&id.aad(), RECORD_WITHOUT_VERSION), &keys).unwrap();
        assert_eq!((old.version, old.until, old.refreshes, old.expires_at), (0, 50, 4, 50));
    }

    /// A JSON record with every field (as versions before the compact form wrote it) opens.
    #[test]
    fn a_json_record_opens() {
        let keys = KeySet::parse(&"ab".repeat(32)).unwrap();
        let id = SessionId::random();
        let json = br#"{"client_id":"k","provider":"p","created_at":1,"expires_at":50,"v2_access":"a","v2_refresh":"r","v2_expires_at":9,"v2_lifetime":3600,"profile":"","access_hashes":["AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE"],"refresh_hash":"AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI","refreshes":4,"owners":["AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM"],"version":7}"#;
        let s = Session::open(id, &keys.seal(&id.aad(), json), &keys).unwrap();
        assert_eq!((s.version, s.v2_refresh.unwrap().expose(), s.v2_lifetime), (7, "r", Some(3600)));
        assert_eq!((s.access_hashes, s.refresh_hash, s.owners), (vec![[1; 32]], [2; 32], vec![[3; 32]]));
    }

    #[test]
    fn sealed_record_round_trips_and_hides_tokens() {
        let keys = KeySet::parse(&"ab".repeat(32)).unwrap();
        let s = Session {
            id: SessionId::random(),
            client_id: "k".into(),
            provider: "p".into(),
            created_at: 1,
            expires_at: 2,
            v2_access: Secret::new("canary-v2-access"),
            v2_refresh: Some(Secret::new("canary-v2-refresh")),
            v2_expires_at: Some(3),
            v2_lifetime: Some(3600),
            profile: ",\"email\":\"e\"".into(),
            access_hashes: vec![[1; 32]],
            refresh_hash: [2; 32],
            refreshes: 0,
            owners: vec![[3; 32]],
            version: 0,
            until: 0,
        };
        let sealed = s.seal(&keys, 3);
        assert!(!sealed.windows(6).any(|w| w == b"canary"));
        assert_eq!(keys.open(&s.id.aad(), &sealed).unwrap()[0], COMPACT);
        let back = Session::open(s.id, &sealed, &keys).unwrap();
        assert_eq!(back.v2_access.expose(), "canary-v2-access");
        assert_eq!(back.hashes(), vec![[1; 32], [2; 32]]);
        assert_eq!(back.owners, vec![[3; 32]]);
        assert_eq!((back.version, back.until), (3, 2));
        assert!(Session::open(SessionId::random(), &sealed, &keys).is_none());
        assert!(!format!("{s:?}").contains("canary"));
        assert_eq!(SessionId::parse(&s.id.hex()), Some(s.id));
    }
}
