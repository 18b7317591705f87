//! The sentinels a monitor asks: those configured, and those the sentinels
//! name (`SENTINEL SENTINELS`), at most [`MAX_KNOWN`] in all. A sentinel
//! that names ever more addresses, or a group whose sentinels come back on
//! new addresses (a pod's restart), cannot grow the list (each entry is a
//! subscriber's connection and an ask per check): past the bound a new one
//! takes the place of a learned one that does not answer, one per check.

use std::sync::Arc;

use tokio::time::Instant;

use super::SENTINEL_BACKOFF_MAX;
use crate::dial::{Backoff, PoolSettings};

/// Sentinels known per monitor, configured ones beyond it all kept.
pub(super) const MAX_KNOWN: usize = 16;

/// A sentinel the monitor knows of.
pub(super) struct Known {
    pub(super) address: String,
    /// Not asked again before this, after failures.
    pub(super) retry_at: Instant,
    /// The wait after a failure: twice the backoff's minimum, doubling.
    pub(super) backoff: Backoff,
    /// Whether its last ask failed.
    pub(super) failed: bool,
    /// Named by a sentinel rather than configured: may be forgotten.
    learned: bool,
    /// Held while known: its subscriber stops once it is dropped.
    pub(super) alive: Arc<()>,
}

impl Known {
    pub(super) fn new(address: String, settings: &PoolSettings) -> Known {
        Known {
            address,
            retry_at: Instant::now(),
            backoff: Backoff::new(settings.backoff_min * 2, SENTINEL_BACKOFF_MAX).exact(),
            failed: false,
            learned: false,
            alive: Arc::new(()),
        }
    }
}

/// What to do with an address a sentinel named.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Learn {
    /// Known already, or no room: nothing.
    Skip,
    /// Added.
    Add,
    /// Added in place of the learned sentinel at this index, which failed
    /// its last ask.
    Replace(usize),
}

/// Where `address` goes among `known`; `replaced` says whether this check
/// replaced one already (at most one per check).
pub(super) fn learn(known: &[Known], address: &str, replaced: bool) -> Learn {
    if known.iter().any(|k| k.address == address) {
        return Learn::Skip;
    }
    if known.len() < MAX_KNOWN {
        return Learn::Add;
    }
    match known.iter().position(|k| k.learned && k.failed) {
        Some(index) if !replaced => Learn::Replace(index),
        _ => Learn::Skip,
    }
}

/// Takes `address` into `known` as `learn` says; the sentinel it replaced,
/// if any (its subscriber stops once it is dropped), and the new entry's
/// index.
pub(super) fn take(
    known: &mut Vec<Known>,
    address: String,
    decision: Learn,
    settings: &PoolSettings,
) -> (Option<Known>, Option<usize>) {
    let entry = || Known {
        learned: true,
        ..Known::new(address, settings)
    };
    match decision {
        Learn::Skip => (None, None),
        Learn::Add => {
            known.push(entry());
            (None, Some(known.len() - 1))
        }
        Learn::Replace(index) => {
            let gone = std::mem::replace(&mut known[index], entry());
            (Some(gone), Some(index))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> PoolSettings {
        let config = "[listen]\naddress = \"127.0.0.1:1\"\n[[backends]]\nid = \"a\"\naddress = \"127.0.0.1:2\"\n";
        PoolSettings::from_config(&crate::config::Config::parse(config).unwrap())
    }

    #[test]
    fn the_list_stays_bounded_and_only_a_failing_learned_sentinel_gives_way() {
        let settings = settings();
        let mut known: Vec<Known> = (0..3)
            .map(|i| Known::new(format!("10.0.0.{i}:26379"), &settings))
            .collect();
        // Configured ones known already.
        assert_eq!(learn(&known, "10.0.0.1:26379", false), Learn::Skip);
        for i in 3..MAX_KNOWN {
            let address = format!("10.0.1.{i}:26379");
            let decision = learn(&known, &address, false);
            assert_eq!(decision, Learn::Add);
            take(&mut known, address, decision, &settings);
        }
        assert_eq!(known.len(), MAX_KNOWN);
        // Full, and every learned one answers: no room.
        assert_eq!(learn(&known, "10.9.9.9:26379", false), Learn::Skip);
        // A configured sentinel that fails never gives way.
        known[0].failed = true;
        assert_eq!(learn(&known, "10.9.9.9:26379", false), Learn::Skip);
        // A learned one that fails does, once per check.
        known[7].failed = true;
        let decision = learn(&known, "10.9.9.9:26379", false);
        assert_eq!(decision, Learn::Replace(7));
        assert_eq!(learn(&known, "10.9.9.9:26379", true), Learn::Skip);
        let (gone, at) = take(&mut known, "10.9.9.9:26379".into(), decision, &settings);
        assert_eq!(gone.map(|g| g.address), Some("10.0.1.7:26379".to_string()));
        assert_eq!(at, Some(7));
        assert_eq!(known.len(), MAX_KNOWN);
        assert_eq!(known[7].address, "10.9.9.9:26379");
    }
}
