//! FNV-1a, the hasher of the small handle caches on the request path (this module's request
//! counters, the provider table's client lookup): their keys are short, bounded strings
//! (configured client ids), where SipHash's setup dominates the lookup.

use std::hash::Hasher;

/// FNV-1a over the bytes written, 64-bit.
#[derive(Default)]
pub(crate) struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}
