//! The `[state]` key set: what leaves the process (Redis values, and later session records) is
//! sealed with AES-256-GCM and looked up by keyed hashes, never by raw tokens.
//!
//! An operator configures one or more keys, each 32 random bytes written as 64 hex digits or as
//! base64. The first key seals; every key opens (rotation: put the new key first, keep the old
//! one until what it sealed has expired). Each configured key is expanded with HKDF-SHA256 into
//! three independent values: the AES-256-GCM key, the HMAC-SHA256 key for lookup hashes, and a
//! four-byte key id written in front of every sealed value so opening tries only the right key.
//!
//! Sealed layout: `format (1) | key id (4) | nonce (12) | ciphertext and tag`. The caller's
//! associated data (for Redis, the key the value is stored under) is authenticated, so a value
//! copied to another key does not open.
//!
//! Two formats. Format 1 ([`KeySet::seal`]) seals the caller's bytes as they are. Format 2
//! ([`KeySet::seal_stamped`]) puts a [`Stamp`] in front of them, inside the seal: the version of
//! the record the value holds and when the value stops being valid. Whoever can write to Redis
//! but lacks the key can write an old value back, or strip its Redis expiry;
//! [`KeySet::open_stamped`] refuses a stamped value past its sealed expiry, and hands the
//! version to the caller, who compares it with the version its record should have. The format
//! byte is authenticated too (it is part of a stamped value's associated data), so a value does
//! not open as the other format.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// The format byte of a value sealed as it is.
const PLAIN: u8 = 1;
/// The format byte of a value sealed with a [`Stamp`] in front.
const STAMPED: u8 = 2;
const NONCE_LEN: usize = 12;
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
const STAMP_LEN: usize = 16;

/// What a stamped value says about itself, sealed with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The version of the record the value holds (1 for its first write, one more per write).
    pub version: u64,
    /// When the value stops being valid, in milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
}

/// A value [`KeySet::open_stamped`] opened.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    /// A stamped value, not yet past its expiry, and the bytes behind its stamp.
    Stamped(Stamp, Vec<u8>),
    /// A value sealed without a stamp ([`KeySet::seal`]); the caller judges how old it is.
    Plain(Vec<u8>),
}

/// Milliseconds since the Unix epoch, now: the clock stamps are read against.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One configured key, expanded.
struct Key {
    id: [u8; 4],
    aead: Aes256Gcm,
    mac: Hmac<Sha256>,
}

/// The configured keys, first (sealing) key first. `Debug` prints only how many there are.
pub struct KeySet {
    keys: Vec<Key>,
}

/// Why key material was refused. Never contains the material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("no key given")]
    Empty,
    #[error("key {0} is not 32 bytes written as 64 hex digits or base64")]
    Malformed(usize),
    #[error("key {0} is given twice")]
    Duplicate(usize),
}

impl KeySet {
    /// Parse key material: keys separated by commas or whitespace (newlines included), each 64
    /// hex digits or the base64 (standard or URL-safe, padded or not) of 32 bytes.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let mut keys: Vec<Key> = Vec::new();
        for (i, word) in
            text.split(|c: char| c == ',' || c.is_whitespace()).filter(|w| !w.is_empty()).enumerate()
        {
            let raw = decode_key(word).ok_or(KeyError::Malformed(i + 1))?;
            let key = Key::expand(&raw);
            if keys.iter().any(|k| k.id == key.id) {
                return Err(KeyError::Duplicate(i + 1));
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Self { keys })
    }

    /// How many keys open values (the first also seals).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Never true for a parsed set; present for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Seal `plaintext` under the first key, authenticating `aad` with it.
    pub(crate) fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        self.seal_as(PLAIN, aad, plaintext)
    }

    /// Open a value sealed by [`KeySet::seal`] under any configured key with the same `aad`.
    /// `None` when it is not ours, was sealed by a key no longer configured, or was altered.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        self.open_as(PLAIN, aad, sealed)
    }

    /// Seal `plaintext` behind `stamp` under the first key, authenticating `aad` with both.
    pub(crate) fn seal_stamped(&self, aad: &[u8], stamp: Stamp, plaintext: &[u8]) -> Vec<u8> {
        let mut plain = Vec::with_capacity(STAMP_LEN + plaintext.len());
        plain.extend_from_slice(&stamp.version.to_be_bytes());
        plain.extend_from_slice(&stamp.expires_at_ms.to_be_bytes());
        plain.extend_from_slice(plaintext);
        self.seal_as(STAMPED, &stamped_aad(aad), &plain)
    }

    /// Open a value sealed by either [`KeySet::seal_stamped`] or [`KeySet::seal`] with the same
    /// `aad`. `None` as for [`KeySet::open`], and for a stamped value whose expiry is at or
    /// before `now_ms`.
    pub fn open_stamped(&self, aad: &[u8], sealed: &[u8], now_ms: u64) -> Option<Opened> {
        if sealed.first() == Some(&PLAIN) {
            return self.open(aad, sealed).map(Opened::Plain);
        }
        let mut plain = self.open_as(STAMPED, &stamped_aad(aad), sealed)?;
        let (version, rest) = plain.split_first_chunk::<8>()?;
        let (expires_at_ms, _) = rest.split_first_chunk::<8>()?;
        let stamp = Stamp {
            version: u64::from_be_bytes(*version),
            expires_at_ms: u64::from_be_bytes(*expires_at_ms),
        };
        if stamp.expires_at_ms <= now_ms {
            return None;
        }
        plain.drain(..STAMP_LEN);
        Some(Opened::Stamped(stamp, plain))
    }

    fn seal_as(&self, format: u8, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + 16);
        out.push(format);
        out.extend_from_slice(&key.id);
        out.extend_from_slice(&nonce);
        // AES-GCM encryption fails only for plaintexts beyond 64 GiB.
        let sealed =
            key.aead.encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad }).unwrap_or_default();
        out.extend_from_slice(&sealed);
        out
    }

    fn open_as(&self, format: u8, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < HEADER_LEN + 16 || sealed[0] != format {
            return None;
        }
        let key = self.keys.iter().find(|k| k.id == sealed[1..5])?;
        let nonce = Nonce::from_slice(&sealed[5..HEADER_LEN]);
        key.aead.decrypt(nonce, Payload { msg: &sealed[HEADER_LEN..], aad }).ok()
    }

    /// The lookup hash of `parts` under the first key: HMAC-SHA256 over `domain` and each part,
    /// every one length-prefixed, so (`"ab"`, `"c"`) and (`"a"`, `"bc"`) differ. Every process
    /// configured with the same first key computes the same hash.
    pub fn hash(&self, domain: &str, parts: &[&[u8]]) -> [u8; 32] {
        hash_with(&self.keys[0].mac, domain, parts)
    }

    /// The lookup hash under every key, first key first: for long-lived records that must stay
    /// findable across a key rotation.
    pub(crate) fn hashes<'a>(
        &'a self,
        domain: &'a str,
        parts: &'a [&'a [u8]],
    ) -> impl Iterator<Item = [u8; 32]> + 'a {
        self.keys.iter().map(move |k| hash_with(&k.mac, domain, parts))
    }
}

/// A stamped value's associated data: its format byte, then the caller's.
fn stamped_aad(aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + aad.len());
    out.push(STAMPED);
    out.extend_from_slice(aad);
    out
}

/// HMAC-SHA256 keyed with a 32-byte key: the one keyed-hash set-up. HMAC zero-pads a key
/// shorter than the hash's block to the block (RFC 2104), so padding it here is exactly HMAC
/// keyed with `key`, built without a fallible constructor.
pub(crate) fn keyed_mac(key: &[u8; 32]) -> Hmac<Sha256> {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    <Hmac<Sha256> as hmac::digest::KeyInit>::new(&block.into())
}

fn hash_with(mac: &Hmac<Sha256>, domain: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = mac.clone();
    mac.update(&(domain.len() as u64).to_be_bytes());
    mac.update(domain.as_bytes());
    for part in parts {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

impl Key {
    fn expand(raw: &[u8; 32]) -> Self {
        let hk = Hkdf::<Sha256>::new(None, raw);
        let mut enc = [0u8; 32];
        let mut mac = [0u8; 32];
        let mut id = [0u8; 4];
        // HKDF-Expand fails only for outputs longer than 255 blocks.
        let _ = hk.expand(b"oauth-shim/v1 aes-256-gcm", &mut enc);
        let _ = hk.expand(b"oauth-shim/v1 hmac-sha256", &mut mac);
        let _ = hk.expand(b"oauth-shim/v1 key id", &mut id);
        let aead = Aes256Gcm::new(&enc.into());
        let mac = keyed_mac(&mac);
        Self { id, aead, mac }
    }
}

fn decode_key(word: &str) -> Option<[u8; 32]> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let bytes = if word.len() == 64 && word.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32).map(|i| u8::from_str_radix(&word[2 * i..2 * i + 2], 16).ok()).collect::<Option<Vec<u8>>>()?
    } else {
        [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD].iter().find_map(|e| e.decode(word).ok())?
    };
    bytes.try_into().ok()
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet").field("keys", &self.keys.len()).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX_A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const B64_B: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8="; // bytes 0x20..0x3f

    #[test]
    fn hex_and_base64_keys_parse_and_bad_ones_are_refused() {
        assert_eq!(KeySet::parse(HEX_A).unwrap().len(), 1);
        assert_eq!(KeySet::parse(&format!("{B64_B}, {HEX_A}\n")).unwrap().len(), 2);
        assert_eq!(KeySet::parse(B64_B.trim_end_matches('=')).unwrap().len(), 1);
        assert_eq!(KeySet::parse(" \n").unwrap_err(), KeyError::Empty);
        assert_eq!(KeySet::parse(&HEX_A[..62]).unwrap_err(), KeyError::Malformed(1));
        assert_eq!(KeySet::parse(&format!("{HEX_A} c2hvcnQ=")).unwrap_err(), KeyError::Malformed(2));
        assert_eq!(KeySet::parse(&format!("{HEX_A},{HEX_A}")).unwrap_err(), KeyError::Duplicate(2));
        // The same 32 bytes in both spellings are one key.
        let hex_b: String = (0x20u8..0x40).map(|b| format!("{b:02x}")).collect();
        assert_eq!(KeySet::parse(&format!("{hex_b} {B64_B}")).unwrap_err(), KeyError::Duplicate(2));
        let err = KeySet::parse("not-a-key-but-secret-looking").unwrap_err().to_string();
        assert!(!err.contains("secret-looking"));
    }

    #[test]
    fn sealed_values_open_with_any_configured_key_and_only_with_their_aad() {
        let old = KeySet::parse(HEX_A).unwrap();
        let rotated = KeySet::parse(&format!("{B64_B} {HEX_A}")).unwrap();
        let sealed = old.seal(b"key-1", b"canary-token");
        assert!(!sealed.windows(6).any(|w| w == b"canary"));
        assert_eq!(old.open(b"key-1", &sealed).unwrap(), b"canary-token");
        // After rotation the old key still opens; new values are sealed by the new key.
        assert_eq!(rotated.open(b"key-1", &sealed).unwrap(), b"canary-token");
        let fresh = rotated.seal(b"key-1", b"v2");
        assert!(old.open(b"key-1", &fresh).is_none());
        assert_eq!(rotated.open(b"key-1", &fresh).unwrap(), b"v2");
        // Other aad, altered bytes, truncation: refused.
        assert!(old.open(b"key-2", &sealed).is_none());
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(old.open(b"key-1", &altered).is_none());
        assert!(old.open(b"key-1", &sealed[..10]).is_none());
        // Two seals of one value differ (random nonce).
        assert_ne!(old.seal(b"k", b"same"), old.seal(b"k", b"same"));
    }

    #[test]
    fn stamped_values_carry_their_version_and_are_refused_past_their_expiry() {
        let keys = KeySet::parse(HEX_A).unwrap();
        let stamp = Stamp { version: 7, expires_at_ms: 2_000 };
        let sealed = keys.seal_stamped(b"key-1", stamp, b"canary-record");
        assert!(!sealed.windows(6).any(|w| w == b"canary"));
        assert_eq!(
            keys.open_stamped(b"key-1", &sealed, 1_999),
            Some(Opened::Stamped(stamp, b"canary-record".to_vec()))
        );
        assert_eq!(keys.open_stamped(b"key-1", &sealed, 2_000), None, "expired");
        assert_eq!(keys.open_stamped(b"key-2", &sealed, 0), None, "another key's value");
        // The version and the expiry are sealed: changing a byte of the value refuses it.
        for i in 5..sealed.len() {
            let mut altered = sealed.clone();
            altered[i] ^= 1;
            assert_eq!(keys.open_stamped(b"key-1", &altered, 0), None, "byte {i}");
        }
        // A plain value opens as one, whatever the time; neither format opens as the other.
        let plain = keys.seal(b"key-1", b"old");
        assert_eq!(keys.open_stamped(b"key-1", &plain, u64::MAX), Some(Opened::Plain(b"old".to_vec())));
        let mut relabelled = sealed.clone();
        relabelled[0] = PLAIN;
        assert_eq!(keys.open(b"key-1", &relabelled), None);
        assert_eq!(keys.open_stamped(b"key-1", &relabelled, 0), None);
        let mut relabelled = plain.clone();
        relabelled[0] = STAMPED;
        assert_eq!(keys.open_stamped(b"key-1", &relabelled, 0), None);
        assert_eq!(keys.open(b"key-1", &sealed), None);
        assert!(unix_ms() > 1_600_000_000_000);
    }

    #[test]
    fn hashes_are_keyed_stable_and_length_prefixed() {
        let a = KeySet::parse(HEX_A).unwrap();
        let a_again = KeySet::parse(HEX_A).unwrap();
        let b = KeySet::parse(B64_B).unwrap();
        let h = a.hash("refresh", &[b"client", b"token"]);
        assert_eq!(h, a_again.hash("refresh", &[b"client", b"token"]), "replicas agree");
        assert_ne!(h, b.hash("refresh", &[b"client", b"token"]), "keyed");
        assert_ne!(h, a.hash("session", &[b"client", b"token"]), "domain separated");
        assert_ne!(a.hash("r", &[b"ab", b"c"]), a.hash("r", &[b"a", b"bc"]));
        let both = KeySet::parse(&format!("{B64_B} {HEX_A}")).unwrap();
        let all: Vec<_> = both.hashes("refresh", &[b"client", b"token"]).collect();
        assert_eq!(all, vec![b.hash("refresh", &[b"client", b"token"]), h]);
        assert_eq!(format!("{a:?}"), "KeySet { keys: 1, .. }");
    }
}
