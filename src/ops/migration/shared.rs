//! The record in Redis (`[state] backend = "redis"`), shared by replicas: every replica adds its
//! counts (`HINCRBY`), so any replica reads the fleet's. Keys, under `[state] key_prefix`:
//!
//! - `mig:day:<day>`: a hash per UTC day (the day number, `unix seconds / 86400`), a field per
//!   row and slot (the row's stored form, `0x1e`, a slot letter) holding its count; it expires
//!   when the retention drops the day;
//! - `mig:seen`: a hash of when each row was first (`F`) and last (a slot letter) seen;
//! - `mig:sampled`: the set of unknown rows that have a place (at most `max_unknown_ids`).
//!
//! One script per flush adds every count, so the bound on unknown rows holds across replicas.
//! Redis unreachable: the counts stay in the process for the next flush, and a read shows this
//! process's counts, marked partial.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

use super::record::{CALLS, DAY, Delta, Row, SLOTS, StoreError, Times, View};
use crate::config::MigrationConfig;
use crate::redis::Redis;

/// Add a flush's counts. `KEYS`: seen, sampled, then the day keys. `ARGV[1]`: max unknown
/// rows; then per row: the row, `1` if configured, the number of days, per day (the index of
/// its key in `KEYS`, its expiry, the number of slots, per slot its letter and count), the
/// number of seen slots, per seen slot its letter and time.
const ADD: &str = r"
local max_unknown = tonumber(ARGV[1])
local i = 2
while i <= #ARGV do
  local row = ARGV[i]
  if ARGV[i + 1] == '0' and redis.call('SISMEMBER', KEYS[2], row) == 0 then
    if redis.call('SCARD', KEYS[2]) < max_unknown then
      redis.call('SADD', KEYS[2], row)
    else
      row = 'f'
    end
  end
  local ndays = tonumber(ARGV[i + 2])
  i = i + 3
  for _ = 1, ndays do
    local key = KEYS[tonumber(ARGV[i])]
    local expire, nslots = ARGV[i + 1], tonumber(ARGV[i + 2])
    i = i + 3
    for _ = 1, nslots do
      redis.call('HINCRBY', key, row .. '\30' .. ARGV[i], ARGV[i + 1])
      i = i + 2
    end
    redis.call('EXPIREAT', key, expire)
  end
  local nseen = tonumber(ARGV[i])
  i = i + 1
  for _ = 1, nseen do
    local field, t = row .. '\30' .. ARGV[i], tonumber(ARGV[i + 1])
    local cur = tonumber(redis.call('HGET', KEYS[1], field) or '0')
    if (ARGV[i] == 'F' and (cur == 0 or t < cur)) or (ARGV[i] ~= 'F' and t > cur) then
      redis.call('HSET', KEYS[1], field, t)
    end
    i = i + 2
  end
end
return 1
";

/// Drop the rows last seen before `ARGV[1]` from `KEYS[1]` (seen) and `KEYS[2]` (sampled).
const PRUNE: &str = r"
local all = redis.call('HGETALL', KEYS[1])
local gone = {}
for j = 1, #all, 2 do
  local field = all[j]
  if string.sub(field, -1) == 'a' and tonumber(all[j + 1]) < tonumber(ARGV[1]) then
    gone[#gone + 1] = string.sub(field, 1, -3)
  end
end
for _, row in ipairs(gone) do
  for j = 1, #all, 2 do
    if string.sub(all[j], 1, -3) == row then
      redis.call('HDEL', KEYS[1], all[j])
    end
  end
  redis.call('SREM', KEYS[2], row)
end
return #gone
";

/// The letter of a slot in a field name.
fn letter(slot: usize) -> u8 {
    b'a' + slot as u8
}

#[derive(Clone)]
pub(crate) struct SharedRecord {
    redis: Redis,
    /// The last day the prune ran for (it runs once per day per replica).
    pruned: std::sync::Arc<AtomicU32>,
}

fn unavailable(_: crate::redis::Unavailable) -> StoreError {
    StoreError("redis unavailable".into())
}

impl SharedRecord {
    pub(crate) fn new(redis: Redis) -> Self {
        Self { redis, pruned: std::sync::Arc::default() }
    }

    fn day_key(&self, day: u32) -> String {
        format!("{}day:{day}", self.redis.group("mig"))
    }

    pub(crate) async fn add(
        &self,
        deltas: &[Delta],
        cfg: &MigrationConfig,
        oldest: u32,
    ) -> Result<(), StoreError> {
        if !deltas.is_empty() {
            let mut invocation = add_script().prepare_invoke();
            invocation
                .key(format!("{}seen", self.redis.group("mig")))
                .key(format!("{}sampled", self.redis.group("mig")));
            let mut keys: Vec<u32> = Vec::new();
            invocation.arg(cfg.max_unknown_ids);
            for d in deltas {
                invocation.arg(d.row.encode()).arg(if d.configured { "1" } else { "0" }).arg(d.days.len());
                for (day, counts) in &d.days {
                    let at = keys.iter().position(|k| k == day).unwrap_or_else(|| {
                        keys.push(*day);
                        keys.len() - 1
                    });
                    let expire = (u64::from(*day) + u64::from(cfg.retention_days()) + 1) * DAY;
                    let slots: Vec<usize> = (0..SLOTS).filter(|s| counts[*s] != 0).collect();
                    invocation.arg(at + 3).arg(expire).arg(slots.len());
                    for s in slots {
                        invocation.arg(&[letter(s)][..]).arg(counts[s]);
                    }
                }
                let seen: Vec<usize> = (0..SLOTS).filter(|s| d.seen.last[*s] != 0).collect();
                invocation.arg(seen.len() + usize::from(d.seen.first != 0));
                for s in seen {
                    invocation.arg(&[letter(s)][..]).arg(d.seen.last[s]);
                }
                if d.seen.first != 0 {
                    invocation.arg("F").arg(d.seen.first);
                }
            }
            for day in &keys {
                invocation.key(self.day_key(*day));
            }
            self.redis
                .run(|mut c| async move { invocation.invoke_async::<i64>(&mut c).await })
                .await
                .map_err(unavailable)?;
        }
        if self.pruned.swap(oldest, Ordering::Relaxed) != oldest {
            let mut invocation = prune_script().prepare_invoke();
            invocation
                .key(format!("{}seen", self.redis.group("mig")))
                .key(format!("{}sampled", self.redis.group("mig")))
                .arg(u64::from(oldest) * DAY);
            self.redis
                .run(|mut c| async move { invocation.invoke_async::<i64>(&mut c).await })
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    /// The record from day `since` to day `today`.
    pub(crate) async fn read(&self, since: u32, today: u32) -> Result<View, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(format!("{}seen", self.redis.group("mig")));
        for day in since..=today {
            pipe.cmd("HGETALL").arg(self.day_key(day));
        }
        let hashes: Vec<HashMap<Vec<u8>, u64>> = self
            .redis
            .run(|mut c| async move { pipe.query_async(&mut c).await })
            .await
            .map_err(unavailable)?;
        let mut view = View::new();
        let mut hashes = hashes.into_iter();
        for (field, t) in hashes.next().unwrap_or_default() {
            let Some((row, slot)) = split(&field) else { continue };
            let seen: &mut Times = &mut view.entry(row).or_default().seen;
            match slot {
                b'F' => seen.first = t,
                s => seen.last[usize::from(s - b'a')] = t,
            }
        }
        for (day, hash) in (since..=today).zip(hashes) {
            for (field, n) in hash {
                let Some((row, slot @ b'a'..)) = split(&field) else { continue };
                view.entry(row).or_default().days.entry(day).or_default()[usize::from(slot - b'a')] = n;
            }
        }
        view.retain(|_, r| r.seen.last[CALLS] != 0 || !r.days.is_empty());
        Ok(view)
    }
}

/// A field's row and slot letter (`F`, or `a` + a slot below [`SLOTS`]).
fn split(field: &[u8]) -> Option<(Row, u8)> {
    let (slot, rest) = field.split_last()?;
    let row = rest.strip_suffix(&[0x1e])?;
    let valid = *slot == b'F' || (b'a'..letter(SLOTS)).contains(slot);
    valid.then(|| Row::decode(row).map(|r| (r, *slot)))?
}

fn add_script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(ADD))
}

fn prune_script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(PRUNE))
}

#[cfg(test)]
mod tests {
    #[test]
    fn fields_split_into_row_and_slot() {
        let mut field = super::Row::Folded.encode();
        field.extend_from_slice(b"\x1eF");
        assert_eq!(super::split(&field), Some((super::Row::Folded, b'F')));
        assert_eq!(super::split(b"f\x1ez"), None);
        assert_eq!(super::split(b"f"), None);
    }
}
