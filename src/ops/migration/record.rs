//! The record's data, as every store keeps it: rows (a client id of a provider, the other
//! unknown ids folded into one, the v2-native calls naming no client), each row's counts per UTC
//! day, and when it was first and last seen; the batch of counts a flush adds, and the merge
//! that applies a batch under the record's bound.

use std::collections::{BTreeMap, BTreeSet};

use super::feature::Feature;

/// Count slots: slot [`CALLS`] is the calls, [`LEGACY`] the legacy calls (those neither
/// v2-native nor v2 needing normalisation), `FEATURES + f` the calls with feature `f`.
pub(crate) const SLOTS: usize = FEATURES + Feature::ALL.len();
pub(crate) const CALLS: usize = 0;
pub(crate) const LEGACY: usize = 1;
pub(crate) const FEATURES: usize = 2;
pub(crate) type Counts = [u64; SLOTS];

/// Seconds in a day; a day number is `unix seconds / DAY`, so days are UTC.
pub(crate) const DAY: u64 = 24 * 3600;

/// The UTC day of `unix_secs`.
pub(crate) fn day_of(unix_secs: u64) -> u32 {
    u32::try_from(unix_secs / DAY).unwrap_or(u32::MAX)
}

/// Why a store call failed; logged where it is met.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub(crate) struct StoreError(pub(crate) String);

/// One row of the record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Row {
    /// A client id (configured or not) seen on a provider.
    Client { provider: String, id: String },
    /// Every unknown id beyond the ones the record gives a row of their own.
    Folded,
    /// v2-native calls that named no configured client.
    UnattributedV2,
}

/// The separator between a row's provider and id in its stored form (`0x1f`, which a provider
/// name never holds: it is from the config, and validated).
const UNIT: u8 = 0x1f;

impl Row {
    /// The stored form: `c` provider `0x1f` id, `f`, or `v`.
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            Self::Client { provider, id } => {
                let mut out = Vec::with_capacity(2 + provider.len() + id.len());
                out.push(b'c');
                out.extend_from_slice(provider.as_bytes());
                out.push(UNIT);
                out.extend_from_slice(id.as_bytes());
                out
            }
            Self::Folded => b"f".to_vec(),
            Self::UnattributedV2 => b"v".to_vec(),
        }
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        match bytes.split_first()? {
            (b'c', rest) => {
                let at = rest.iter().position(|&b| b == UNIT)?;
                let provider = std::str::from_utf8(&rest[..at]).ok()?.to_owned();
                let id = std::str::from_utf8(&rest[at + 1..]).ok()?.to_owned();
                Some(Self::Client { provider, id })
            }
            (b'f', []) => Some(Self::Folded),
            (b'v', []) => Some(Self::UnattributedV2),
            _ => None,
        }
    }
}

/// When a row was first seen and last seen per slot (unix seconds; 0: never).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Times {
    pub(crate) first: u64,
    pub(crate) last: Counts,
}

impl Times {
    pub(crate) fn merge(&mut self, other: &Times) {
        if other.first != 0 && (self.first == 0 || other.first < self.first) {
            self.first = other.first;
        }
        for (mine, theirs) in self.last.iter_mut().zip(other.last) {
            *mine = (*mine).max(theirs);
        }
    }

    /// As stored: the last-seen slots, then first.
    pub(crate) fn as_slots(&self) -> [u64; SLOTS + 1] {
        let mut out = [0; SLOTS + 1];
        out[..SLOTS].copy_from_slice(&self.last);
        out[SLOTS] = self.first;
        out
    }

    pub(crate) fn from_slots(slots: &[u64; SLOTS + 1]) -> Self {
        let mut last = [0; SLOTS];
        last.copy_from_slice(&slots[..SLOTS]);
        Self { first: slots[SLOTS], last }
    }
}

/// Add `b` to `a`, slot by slot.
pub(crate) fn add(a: &mut Counts, b: &Counts) {
    for (x, y) in a.iter_mut().zip(b) {
        *x = x.saturating_add(*y);
    }
}

/// Slots as stored on disk: a bitmap of the non-zero slots (2 bytes, big-endian), then each
/// non-zero slot as 8 bytes, big-endian. Most slots of a client-day are zero.
pub(crate) fn pack<const N: usize>(slots: &[u64; N]) -> Vec<u8> {
    let mut map = 0u16;
    let mut out = vec![0, 0];
    for (i, v) in slots.iter().enumerate() {
        if *v != 0 {
            map |= 1 << i;
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
    out[..2].copy_from_slice(&map.to_be_bytes());
    out
}

/// The inverse of [`pack`]; `None` for bytes it did not write.
pub(crate) fn unpack<const N: usize>(bytes: &[u8]) -> Option<[u64; N]> {
    let (map, mut rest) = bytes.split_first_chunk::<2>()?;
    let map = u16::from_be_bytes(*map);
    let mut out = [0; N];
    for (i, slot) in out.iter_mut().enumerate() {
        if map & (1 << i) != 0 {
            let (v, tail) = rest.split_first_chunk::<8>()?;
            *slot = u64::from_be_bytes(*v);
            rest = tail;
        }
    }
    rest.is_empty().then_some(out)
}

/// What a flush adds for one row: its counts per day, and when it was seen meanwhile.
#[derive(Debug, Clone)]
pub(crate) struct Delta {
    pub(crate) row: Row,
    /// A configured client's row always has a place; another id's takes one of the
    /// `max_unknown_ids` (or is folded when none is left).
    pub(crate) configured: bool,
    pub(crate) days: Vec<(u32, Counts)>,
    pub(crate) seen: Times,
}

/// One row as read: its days from the start of the read (ascending) and when it was seen.
#[derive(Debug, Clone, Default)]
pub(crate) struct RowView {
    pub(crate) days: BTreeMap<u32, Counts>,
    pub(crate) seen: Times,
}

/// The record as read.
pub(crate) type View = BTreeMap<Row, RowView>;

/// Add `delta` to `view` as a store does: under the row's real name if it has a place, else
/// to the folded row. `unknown` holds the unknown rows that have a place.
pub(crate) fn apply(view: &mut View, unknown: &mut BTreeSet<Row>, max_unknown: u64, delta: &Delta) {
    let row = admit(unknown, max_unknown, delta);
    let entry = view.entry(row).or_default();
    for (day, counts) in &delta.days {
        add(entry.days.entry(*day).or_default(), counts);
    }
    entry.seen.merge(&delta.seen);
}

/// The row `delta`'s counts go to: its own when it is configured, already has a place, or a
/// place is left; else the folded row.
fn admit(unknown: &mut BTreeSet<Row>, max_unknown: u64, delta: &Delta) -> Row {
    if !matches!(delta.row, Row::Client { .. }) || delta.configured || unknown.contains(&delta.row) {
        return delta.row.clone();
    }
    if (unknown.len() as u64) < max_unknown {
        unknown.insert(delta.row.clone());
        return delta.row.clone();
    }
    Row::Folded
}

/// Drop the days before `oldest`, and the rows last seen before it.
pub(crate) fn prune(view: &mut View, unknown: &mut BTreeSet<Row>, oldest: u32) {
    let cutoff = u64::from(oldest) * DAY;
    view.retain(|row, r| {
        r.days.retain(|d, _| *d >= oldest);
        let keep = r.seen.last[CALLS] >= cutoff;
        if !keep {
            unknown.remove(row);
        }
        keep
    });
}

/// Merge `from` into `into` (a store's view and this process's counts not yet flushed).
pub(crate) fn merge(into: &mut View, from: View) {
    for (row, r) in from {
        let entry = into.entry(row).or_default();
        for (day, counts) in r.days {
            add(entry.days.entry(day).or_default(), &counts);
        }
        entry.seen.merge(&r.seen);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_slots_round_trip() {
        for row in [
            Row::Client { provider: "default".into(), id: "a\u{1f}b<script>".into() },
            Row::Folded,
            Row::UnattributedV2,
        ] {
            assert_eq!(Row::decode(&row.encode()), Some(row));
        }
        let mut c: Counts = [0; SLOTS];
        c[0] = 7;
        c[3] = u64::MAX;
        let packed = pack(&c);
        assert_eq!(packed.len(), 2 + 16);
        assert_eq!(unpack::<SLOTS>(&packed), Some(c));
        assert_eq!(unpack::<SLOTS>(&packed[..5]), None);
    }

    #[test]
    fn unknown_rows_beyond_the_bound_fold() {
        let (mut view, mut unknown) = (View::new(), BTreeSet::new());
        let delta = |id: &str, configured| Delta {
            row: Row::Client { provider: "default".into(), id: id.into() },
            configured,
            days: vec![(10, [1; SLOTS])],
            seen: Times { first: 10 * DAY, last: [10 * DAY; SLOTS] },
        };
        for id in ["a", "b", "c", "a"] {
            apply(&mut view, &mut unknown, 2, &delta(id, false));
        }
        apply(&mut view, &mut unknown, 2, &delta("known", true));
        assert_eq!(view.len(), 4, "a, b, the folded row, the configured client");
        assert_eq!(view[&Row::Folded].days[&10][0], 1);
        assert_eq!(view[&delta("a", false).row].days[&10][0], 2);
        prune(&mut view, &mut unknown, 11);
        assert!(view.is_empty() && unknown.is_empty());
    }
}
