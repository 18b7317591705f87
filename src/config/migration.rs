//! `[migration]`: where keys lived before this topology.

use serde::Deserialize;

use super::{invalid, BackendSpec, ConfigError};

/// `[migration]`: the old layout keys are moved from, read through and by
/// a background mover, so nobody is logged out by a change of topology.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationConfig {
    /// The old servers, with the same fields as `[[backends]]`.
    pub from: Vec<BackendSpec>,
    /// How the old layout spread keys over `from`; one server needs none.
    #[serde(default)]
    pub hash: OldHash,
    /// Keys the background mover looks at per second, at most.
    #[serde(default = "default_keys_per_second")]
    pub keys_per_second: u64,
}

fn default_keys_per_second() -> u64 {
    1000
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
        if self.from.is_empty() {
            return Err(invalid("migration.from", "needs at least one server"));
        }
        if self.keys_per_second == 0 {
            return Err(invalid(
                "migration.keys_per_second",
                "must be greater than 0",
            ));
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
            if old.cluster.is_some() {
                return Err(invalid(
                    format!("{field}.cluster"),
                    "moving keys out of a Redis Cluster is not supported yet",
                ));
            }
            old.target(&field)?;
        }
        Ok(())
    }
}
