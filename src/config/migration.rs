//! `[migration]`: where keys lived before this topology.

use std::time::Duration;

use serde::Deserialize;

use super::{invalid, BackendSpec, ConfigError};

/// `[migration]`: the old layout keys are moved from, read through and by
/// a background mover, so nobody is logged out by a change of topology.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationConfig {
    /// The old servers, with the same fields as `[[backends]]`; none: the
    /// section only tunes the moves after a reload.
    #[serde(default)]
    pub from: Vec<BackendSpec>,
    /// How the old layout spread keys over `from`; one server needs none.
    #[serde(default)]
    pub hash: OldHash,
    /// Keys the background mover looks at per second, at most.
    #[serde(default = "default_keys_per_second")]
    pub keys_per_second: u64,
    /// How long an old server known down goes without answering before it
    /// is taken for gone: writes to its keys then go to their owner, and
    /// deletes leave a tombstone there.
    #[serde(default = "default_gone_after_s")]
    pub gone_after_s: u64,
    /// How long a tombstone lasts: a copy of the deleted key on a server
    /// taken for gone is not moved in should that server come back within
    /// this long.
    #[serde(default = "default_tombstone_ttl_s")]
    pub tombstone_ttl_s: u64,
}

fn default_keys_per_second() -> u64 {
    1000
}

fn default_gone_after_s() -> u64 {
    30
}

/// Two weeks: Django's default session age (`SESSION_COOKIE_AGE`).
fn default_tombstone_ttl_s() -> u64 {
    14 * 24 * 3600
}

/// What `[migration]` tunes in a migration, its defaults where there is
/// none (the moves after a reload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrationTuning {
    pub keys_per_second: u64,
    pub gone_after: Duration,
    pub tombstone_for: Duration,
}

impl MigrationTuning {
    pub fn of(config: Option<&MigrationConfig>) -> MigrationTuning {
        let (keys_per_second, gone_after_s, tombstone_ttl_s) = config.map_or(
            (
                default_keys_per_second(),
                default_gone_after_s(),
                default_tombstone_ttl_s(),
            ),
            |m| (m.keys_per_second, m.gone_after_s, m.tombstone_ttl_s),
        );
        MigrationTuning {
            keys_per_second,
            gone_after: Duration::from_secs(gone_after_s),
            tombstone_for: Duration::from_secs(tombstone_ttl_s),
        }
    }
}

/// The old layout's hash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OldHash {
    /// A previous session-proxy topology: rendezvous over the ids and weights.
    #[default]
    Rendezvous,
    /// twemproxy's `distribution: ketama`, `hash: fnv1a_64`, with each id
    /// being twemproxy's server name and weights whole numbers.
    Ketama,
}

impl MigrationConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.keys_per_second == 0 {
            return Err(invalid(
                "migration.keys_per_second",
                "must be greater than 0",
            ));
        }
        for (field, value) in [
            ("migration.gone_after_s", self.gone_after_s),
            ("migration.tombstone_ttl_s", self.tombstone_ttl_s),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be greater than 0"));
            }
        }
        for (i, old) in self.from.iter().enumerate() {
            let field = format!("migration.from[{i}]");
            if old.id.is_empty() || self.from[..i].iter().any(|o| o.id == old.id) {
                return Err(invalid(
                    format!("{field}.id"),
                    format!("'{}' is empty or used twice", old.id),
                ));
            }
            let whole = old.weight.fract() == 0.0 && old.weight >= 1.0;
            if !(old.weight.is_normal() && old.weight > 0.0)
                || (self.hash == OldHash::Ketama && !whole)
            {
                return Err(invalid(
                    format!("{field}.weight"),
                    "must be a positive number (a whole one for ketama)",
                ));
            }
            old.target(&field)?;
        }
        Ok(())
    }
}
