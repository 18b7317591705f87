//! The open files the process may have (`RLIMIT_NOFILE`), adjusted at start
//! as Redis adjusts its own: raised to what `[limits] max_clients` needs
//! beside the backends' connections. Where the hard limit does not allow
//! that, clients are capped below it instead, as Redis lowers its
//! `maxclients`: one over the cap gets Redis's `max number of clients
//! reached`, and the backends' connections still find file descriptors.
//! A reload adjusts it again (more clients, more backends), and so does a
//! cluster backend's slot map that names more masters than counted (a
//! cluster grown past the seeds its config names). Left as it
//! was (a shell's soft limit is often 1024), the client past it
//! was left unanswered in the accept queue, and every reconnect to a
//! backend failed with "too many open files", for every user.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use tracing::{info, warn};

use crate::config::Config;

/// Files kept for what is neither a client nor a backend connection: the
/// admin listener and its clients, logs, the resolver, the hosts file.
pub const RESERVED: u64 = 32;

/// Clients the open files allow; no cap until [`adjust`] finds one.
static CLIENTS_CAP: AtomicUsize = AtomicUsize::new(usize::MAX);

/// The worker threads [`adjust`] counted, once it has run (the proxy's
/// binary; not a proxy run inside tests): a reload adjusts again.
static ADJUSTED_FOR: AtomicUsize = AtomicUsize::new(0);

/// The config [`adjust`] last counted, to count again when a cluster
/// grows.
static COUNTED: Mutex<Option<Config>> = Mutex::new(None);

/// The most masters each cluster backend's slot maps have named, by
/// backend id.
static MASTERS: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

/// The clients accepted at most: `[limits] max_clients`, or fewer when the
/// open files do not allow that many.
pub fn max_clients(configured: usize) -> usize {
    configured.min(CLIENTS_CAP.load(Ordering::Relaxed))
}

/// Files the backends' connections may take, with `threads` workers: each
/// server's shared connections on every worker, the connections it may
/// lease to single clients (blocking commands, WATCHes, subscribers'
/// links), a cluster's seeds or the masters its maps have named
/// (`masters`, by backend id), whichever are more, counted as its
/// servers, and two per sentinel.
pub fn besides_clients(config: &Config, threads: usize, masters: &BTreeMap<String, usize>) -> u64 {
    let pool = &config.pool;
    let per_server = (pool.connections * threads + pool.max_held_connections) as u64;
    let backends: u64 = config
        .backends
        .iter()
        .map(|backend| {
            let servers = backend.cluster.as_ref().map_or(1, |c| {
                let named = masters.get(&backend.id).copied().unwrap_or(0);
                c.seeds.len().max(named).max(1)
            });
            let sentinels = backend.sentinel.as_ref().map_or(0, |s| s.addresses.len());
            servers as u64 * per_server + 2 * sentinels as u64
        })
        .sum();
    RESERVED + backends
}

/// What to do about the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The soft limit to set, when it must rise.
    pub raise_to: Option<u64>,
    /// The clients allowed, when fewer than configured.
    pub cap: Option<usize>,
}

/// The plan for `clients` and `besides` files under the `soft` and `hard`
/// limits (`None`: unlimited).
pub fn plan(soft: Option<u64>, hard: Option<u64>, clients: usize, besides: u64) -> Plan {
    let needed = (clients as u64).saturating_add(besides);
    let soft = soft.unwrap_or(u64::MAX);
    if soft >= needed {
        return Plan {
            raise_to: None,
            cap: None,
        };
    }
    let reachable = needed.min(hard.unwrap_or(u64::MAX));
    let cap = (reachable < needed).then(|| reachable.saturating_sub(besides).max(1) as usize);
    Plan {
        raise_to: (reachable > soft).then_some(reachable),
        cap,
    }
}

/// Raises the soft limit for `config` run on `threads` workers, or caps
/// the clients where it cannot; logs what it did.
pub fn adjust(config: &Config, threads: usize) {
    ADJUSTED_FOR.store(threads.max(1), Ordering::Relaxed);
    *COUNTED.lock().unwrap_or_else(|e| e.into_inner()) = Some(config.clone());
    let clients = config.limits.max_clients;
    let masters = MASTERS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let besides = besides_clients(config, threads, &masters);
    let limit = getrlimit(Resource::Nofile);
    let mut plan = plan(limit.current, limit.maximum, clients, besides);
    if let Some(raised) = plan.raise_to {
        let new = Rlimit {
            current: Some(raised),
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, new) {
            Ok(()) => {
                info!(
                    from = limit.current.unwrap_or(u64::MAX),
                    to = raised,
                    "open files limit raised for max_clients"
                )
            }
            Err(error) => {
                warn!(%error, "the open files limit could not be raised");
                plan = self::plan(limit.current, limit.current, clients, besides);
            }
        }
    }
    CLIENTS_CAP.store(plan.cap.unwrap_or(usize::MAX), Ordering::Relaxed);
    if let Some(cap) = plan.cap {
        warn!(
            max_clients = clients,
            needed = clients as u64 + besides,
            allowed = cap,
            "max_clients needs more open files than the limit allows (ulimit -n, systemd's LimitNOFILE): clients are capped"
        );
    }
}

/// After a reload: [`adjust`] again for the new config, where it ran at
/// start.
pub fn readjust(config: &Config) {
    match ADJUSTED_FOR.load(Ordering::Relaxed) {
        0 => {}
        threads => adjust(config, threads),
    }
}

/// Cluster backend `id`'s new slot map names `masters`: where that is more
/// than its maps named before, the limit is adjusted again for them (once
/// [`adjust`] has run).
pub fn cluster_masters(id: &str, masters: usize) {
    {
        let mut known = MASTERS.lock().unwrap_or_else(|e| e.into_inner());
        let before = known.get(id).copied().unwrap_or(0);
        if masters <= before {
            return;
        }
        known.insert(id.to_string(), masters);
    }
    let threads = ADJUSTED_FOR.load(Ordering::Relaxed);
    let counted = COUNTED.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let (Some(config), 1..) = (counted, threads) {
        adjust(&config, threads);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_rises_to_what_is_needed_within_the_hard_limit() {
        // Enough already.
        let none = Plan {
            raise_to: None,
            cap: None,
        };
        assert_eq!(plan(Some(20_000), Some(20_000), 10_000, 100), none);
        assert_eq!(plan(None, None, 10_000, 100), none);
        // A shell's 1024 under a high hard limit: raised, no cap.
        let raised = plan(Some(1024), Some(524_288), 10_000, 100);
        assert_eq!(
            raised,
            Plan {
                raise_to: Some(10_100),
                cap: None
            }
        );
        assert_eq!(plan(Some(1024), None, 10_000, 100).raise_to, Some(10_100));
        // A hard limit too low: raised to it, clients capped below it.
        let capped = plan(Some(1024), Some(4096), 10_000, 100);
        assert_eq!(
            capped,
            Plan {
                raise_to: Some(4096),
                cap: Some(3996)
            }
        );
        // Not even room for the backends: one client still.
        assert_eq!(plan(Some(64), Some(64), 10, 100).cap, Some(1));
        // Soft already at hard: capped only.
        let at_hard = plan(Some(1024), Some(1024), 10_000, 100);
        assert_eq!(
            at_hard,
            Plan {
                raise_to: None,
                cap: Some(924)
            }
        );
    }

    /// A cluster backend counts its seeds as its servers until its maps
    /// name more masters; then those.
    #[test]
    fn a_cluster_counts_the_masters_its_maps_named_past_its_seeds() {
        let config = Config::parse(
            "[listen]\naddress = \"127.0.0.1:0\"\n\
             [pool]\nconnections = 2\nmax_held_connections = 10\n\
             [[backends]]\nid = \"a\"\naddress = \"127.0.0.1:7000\"\n\
             [[backends]]\nid = \"c\"\ncluster = { seeds = [\"127.0.0.1:7001\"] }\n",
        )
        .unwrap();
        // Each server: 2 connections on each of 3 workers, 10 leased.
        let none = BTreeMap::new();
        assert_eq!(besides_clients(&config, 3, &none), RESERVED + 2 * 16);
        let grown = BTreeMap::from([("c".to_string(), 6)]);
        assert_eq!(besides_clients(&config, 3, &grown), RESERVED + 7 * 16);
        // Another backend's count, or fewer masters than seeds, change nothing.
        let other = BTreeMap::from([("a".to_string(), 6), ("c".to_string(), 0)]);
        assert_eq!(besides_clients(&config, 3, &other), RESERVED + 2 * 16);
    }
}
