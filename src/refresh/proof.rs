//! What a refresh's upstream call proved about its caller (which client secret it carried), kept
//! with the answer or error it got, so that one caller's answer is served to another caller only
//! when both presented the same proof.

use std::fmt;

use subtle::ConstantTimeEq;

/// The client credentials a refresh's upstream call carried. Never the secret itself: a secret a
/// caller presented is kept as its keyed hash ([`super::Refresher::proof`]).
#[derive(Clone, Copy)]
pub enum Proof {
    /// No client secret (a public client's call).
    Public,
    /// The secret oauth-shim holds for the configured client: every legacy call, and a v2 call
    /// presenting exactly that secret.
    Configured,
    /// Another secret a v2 caller presented, as its keyed hash.
    Presented([u8; 32]),
}

/// Hashes compare in constant time.
impl PartialEq for Proof {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Public, Self::Public) | (Self::Configured, Self::Configured) => true,
            (Self::Presented(a), Self::Presented(b)) => a.ct_eq(b).into(),
            _ => false,
        }
    }
}

impl Eq for Proof {}

/// Never shows a hash.
impl fmt::Debug for Proof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Public => "Public",
            Self::Configured => "Configured",
            Self::Presented(_) => "Presented",
        })
    }
}

impl Proof {
    /// Appended to an answer or error that crosses replicas: one tag byte, then the hash.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Self::Public => out.push(b'p'),
            Self::Configured => out.push(b'c'),
            Self::Presented(hash) => {
                out.push(b'h');
                out.extend_from_slice(hash);
            }
        }
    }

    /// A proof read from the start of `bytes`, and the bytes after it.
    pub fn decode_from(bytes: &[u8]) -> Option<(Self, &[u8])> {
        match bytes.split_first()? {
            (b'p', rest) => Some((Self::Public, rest)),
            (b'c', rest) => Some((Self::Configured, rest)),
            (b'h', rest) => {
                let (hash, rest) = rest.split_first_chunk::<32>()?;
                Some((Self::Presented(*hash), rest))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_round_trip_and_compare_by_kind_and_hash() {
        let all = [Proof::Public, Proof::Configured, Proof::Presented([1; 32]), Proof::Presented([2; 32])];
        for (i, a) in all.iter().enumerate() {
            for (j, b) in all.iter().enumerate() {
                assert_eq!(a == b, i == j, "{a:?} {b:?}");
            }
            let mut bytes = Vec::new();
            a.encode_into(&mut bytes);
            bytes.extend_from_slice(b"rest");
            let (back, rest) = Proof::decode_from(&bytes).expect("decodes");
            assert_eq!((&back, rest), (a, &b"rest"[..]));
        }
        assert!(Proof::decode_from(b"h\x01\x02").is_none());
        assert!(Proof::decode_from(b"x").is_none());
        assert_eq!(format!("{:?}", Proof::Presented([7; 32])), "Presented");
    }
}
