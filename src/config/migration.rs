//! `[migration]`: the migration record (per client, feature and UTC day): where the embedded
//! file lives, how long days are kept, how often counts are written, its bounds, and the
//! defaults of the report's window and verdict.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::ConfigError;

const DAY: u64 = 24 * 3600;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MigrationConfig {
    /// Directory of the embedded record (`migration.redb`), used unless `[state]` is Redis.
    pub dir: PathBuf,
    /// How long daily counts are kept (whole days).
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How often the counts of this process are added to the record (and at shutdown); a crash
    /// loses at most this much.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// The report's and the page's window when the reader names none (whole days).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// A client with no legacy call for this long (whole days) is "quiet": ready to switch.
    #[serde(with = "humantime_serde")]
    pub quiet_after: Duration,
    /// At most this many ids that name no configured client get a row of their own in the
    /// record (a sample, for display); calls of every further one are counted in one row,
    /// "other unknown ids". The record thus holds at most the configured clients, this many
    /// ids, and two more rows, each for `retention` days.
    pub max_unknown_ids: u64,
}

impl Default for MigrationConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/var/lib/oauth-shim"),
            retention: Duration::from_secs(90 * DAY),
            flush_interval: Duration::from_secs(5),
            window: Duration::from_secs(30 * DAY),
            quiet_after: Duration::from_secs(7 * DAY),
            max_unknown_ids: 100,
        }
    }
}

impl MigrationConfig {
    /// `retention` in whole days.
    pub(crate) fn retention_days(&self) -> u32 {
        whole_days(self.retention)
    }

    /// `window` in whole days.
    pub(crate) fn window_days(&self) -> u32 {
        whole_days(self.window)
    }

    /// `quiet_after` in whole days.
    pub(crate) fn quiet_days(&self) -> u32 {
        whole_days(self.quiet_after)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("migration.retention", self.retention),
            ("migration.window", self.window),
            ("migration.quiet_after", self.quiet_after),
        ] {
            if value.as_secs() % DAY != 0 || !(1..=3650).contains(&(value.as_secs() / DAY)) {
                return Err(ConfigError(format!("{key} must be whole days, between 1day and 3650days")));
            }
        }
        if self.window > self.retention {
            return Err(ConfigError("migration.window must not be longer than migration.retention".into()));
        }
        if self.flush_interval.is_zero() || self.flush_interval > Duration::from_secs(3600) {
            return Err(ConfigError("migration.flush_interval must be between 1ms and 1h".into()));
        }
        if self.max_unknown_ids > 100_000 {
            return Err(ConfigError("migration.max_unknown_ids must be at most 100000".into()));
        }
        Ok(())
    }
}

fn whole_days(d: Duration) -> u32 {
    u32::try_from(d.as_secs() / DAY).unwrap_or(u32::MAX)
}
