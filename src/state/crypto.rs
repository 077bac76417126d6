//! The `[state]` key set: what leaves the process (session records on disk or in Redis) is
//! sealed with AES-256-GCM and looked up by keyed hashes, never by raw tokens.
//!
//! An operator configures one or more keys, each 32 random bytes written as 64 hex digits or as
//! base64. The first key seals and hashes; every key opens, and lookups try every key's hash
//! (rotation: put the new key first, keep the old one until what it sealed has expired). Each
//! key is expanded with HKDF-SHA256 into an AES-256-GCM key, an HMAC-SHA256 key and a four-byte
//! key id written in front of every sealed value.
//!
//! Sealed layout: `version (1) | key id (4) | nonce (12) | ciphertext and tag`. The caller's
//! associated data (the record's storage key) is authenticated, so a value copied to another
//! key does not open.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;

struct Key {
    id: [u8; 4],
    aead: Aes256Gcm,
    mac: Hmac<Sha256>,
}

/// The configured keys, sealing key first. `Debug` prints only how many there are.
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
    /// Keys separated by commas or whitespace, each 64 hex digits or the base64 of 32 bytes.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let mut keys: Vec<Key> = Vec::new();
        let words = text.split(|c: char| c == ',' || c.is_whitespace()).filter(|w| !w.is_empty());
        for (i, word) in words.enumerate() {
            let key = Key::expand(&decode_key(word).ok_or(KeyError::Malformed(i + 1))?);
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

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Seal `plaintext` under the first key, authenticating `aad` with it.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + 16);
        out.push(VERSION);
        out.extend_from_slice(&key.id);
        out.extend_from_slice(&nonce);
        // AES-GCM encryption fails only for plaintexts beyond 64 GiB.
        let sealed =
            key.aead.encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad }).unwrap_or_default();
        out.extend_from_slice(&sealed);
        out
    }

    /// Open a value sealed by any configured key with the same `aad`; `None` when it is not
    /// ours, its key is no longer configured, or it was altered.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < HEADER_LEN + 16 || sealed[0] != VERSION {
            return None;
        }
        let key = self.keys.iter().find(|k| k.id == sealed[1..5])?;
        let nonce = Nonce::from_slice(&sealed[5..HEADER_LEN]);
        key.aead.decrypt(nonce, Payload { msg: &sealed[HEADER_LEN..], aad }).ok()
    }

    /// The lookup hash of `parts` under the first key: HMAC-SHA256 over `domain` and each part,
    /// each length-prefixed. Every process with the same first key computes the same hash.
    pub fn hash(&self, domain: &str, parts: &[&[u8]]) -> [u8; 32] {
        hash_with(&self.keys[0].mac, domain, parts)
    }

    /// The lookup hash under every key, first key first: long-lived records stay findable
    /// across a key rotation.
    pub fn hashes<'a>(
        &'a self,
        domain: &'a str,
        parts: &'a [&'a [u8]],
    ) -> impl Iterator<Item = [u8; 32]> + 'a {
        self.keys.iter().map(move |k| hash_with(&k.mac, domain, parts))
    }
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
        let (mut enc, mut mac, mut id) = ([0u8; 32], [0u8; 32], [0u8; 4]);
        // HKDF-Expand fails only for outputs longer than 255 blocks.
        let _ = hk.expand(b"oauth-shim/v1 aes-256-gcm", &mut enc);
        let _ = hk.expand(b"oauth-shim/v1 hmac-sha256", &mut mac);
        let _ = hk.expand(b"oauth-shim/v1 key id", &mut id);
        let aead = Aes256Gcm::new(&enc.into());
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(&mac).unwrap_or_else(|_| unreachable!());
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
    const B64_B: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

    #[test]
    fn keys_parse_and_bad_ones_are_refused_without_echo() {
        assert_eq!(KeySet::parse(HEX_A).unwrap().len(), 1);
        assert_eq!(KeySet::parse(&format!("{B64_B}, {HEX_A}\n")).unwrap().len(), 2);
        assert_eq!(KeySet::parse(" \n").unwrap_err(), KeyError::Empty);
        assert_eq!(KeySet::parse(&HEX_A[..62]).unwrap_err(), KeyError::Malformed(1));
        assert_eq!(KeySet::parse(&format!("{HEX_A},{HEX_A}")).unwrap_err(), KeyError::Duplicate(2));
        assert!(!KeySet::parse("secret-looking").unwrap_err().to_string().contains("secret"));
    }

    #[test]
    fn sealed_values_open_with_any_key_and_only_with_their_aad() {
        let old = KeySet::parse(HEX_A).unwrap();
        let rotated = KeySet::parse(&format!("{B64_B} {HEX_A}")).unwrap();
        let sealed = old.seal(b"k1", b"canary-token");
        assert!(!sealed.windows(6).any(|w| w == b"canary"));
        assert_eq!(rotated.open(b"k1", &sealed).unwrap(), b"canary-token");
        assert!(old.open(b"k1", &rotated.seal(b"k1", b"x")).is_none());
        assert!(old.open(b"k2", &sealed).is_none());
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(old.open(b"k1", &altered).is_none());
        let h = old.hash("d", &[b"t"]);
        assert_eq!(rotated.hashes("d", &[b"t"]).nth(1), Some(h));
        assert_ne!(rotated.hash("d", &[b"t"]), h);
    }
}
