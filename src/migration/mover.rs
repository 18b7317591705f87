//! The background mover: SCANs every old server, database by database, and
//! settles each key that an old layout put there and that the current
//! topology owns elsewhere, at most `[migration] keys_per_second` keys
//! looked at per second. A pass with no error ends the migration; a pass
//! with one (an old server down, say) is followed by another after a wait.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backend::{Backend, BackendResult, Origin};
use crate::migration::{call, Migration, Owners, Phase, Purpose, LOCK_PREFIX, RETRY_AFTER};
use crate::own_keys::TOMBSTONE_PREFIX;
use crate::protocol::Reply;

/// The mover's lane on backend connections: the proxy's own.
const MOVER: Origin = super::PROXY_LANE;

/// How often the mover logs trouble with one old server: one that died
/// fails every pass, and a pass comes every second.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// When the mover last logged trouble with each old server.
#[derive(Default)]
struct Warned(HashMap<Arc<str>, Instant>);

impl Warned {
    /// Whether trouble with `server` is to be logged at `now` (noted so).
    fn due(&mut self, server: &Arc<str>, now: Instant) -> bool {
        match self.0.get(server) {
            Some(&last) if now.duration_since(last) < WARN_EVERY => false,
            _ => {
                self.0.insert(server.clone(), now);
                true
            }
        }
    }
}

/// The mover's stop: dropped with the migration, or taken when a reload
/// replaced its topology (after which no mover starts).
#[derive(Default)]
pub(super) struct MoverStop {
    guard: Option<tokio_util::sync::DropGuard>,
    replaced: bool,
}

impl Migration {
    /// Starts the background mover; it stops when this migration is dropped,
    /// its topology is gone or a reload replaced it. Not once stopped
    /// ([`Migration::stop_mover`]): a start delayed past a reload
    /// (`Topology::start_mover_after`) starts nothing.
    pub fn start_mover(self: &Arc<Self>, topology: Weak<dyn Owners>) {
        let token = CancellationToken::new();
        let mut stop = self.stop.lock().unwrap_or_else(|p| p.into_inner());
        if stop.replaced {
            return;
        }
        stop.guard = Some(token.clone().drop_guard());
        tokio::spawn(run(Arc::downgrade(self), topology, token));
    }

    /// Stops the mover, and any start of it to come (a reload replaced the
    /// topology; the next migration has this one's layouts and a mover of
    /// its own).
    pub fn stop_mover(&self) {
        let mut stop = self.stop.lock().unwrap_or_else(|p| p.into_inner());
        stop.replaced = true;
        stop.guard = None;
    }
}

/// Runs passes until one is clean or the migration is replaced.
pub async fn run(migration: Weak<Migration>, topology: Weak<dyn Owners>, stop: CancellationToken) {
    let mut warned = Warned::default();
    loop {
        let Some(clean) = pass(&migration, &topology, &stop, &mut warned).await else {
            return;
        };
        let Some(m) = migration.upgrade() else {
            return;
        };
        m.progress.passes.fetch_add(1, Ordering::Relaxed);
        if clean {
            m.finish();
            return;
        }
        m.set_phase(Phase::Retrying);
        drop(m);
        tokio::select! {
            _ = tokio::time::sleep(RETRY_AFTER) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// One pass over every old server. `None` when stopped, else whether every
/// key was looked at without an error.
async fn pass(
    migration: &Weak<Migration>,
    topology: &Weak<dyn Owners>,
    stop: &CancellationToken,
    warned: &mut Warned,
) -> Option<bool> {
    let (servers, keys_per_second, databases) = {
        let m = migration.upgrade()?;
        let topo = topology.upgrade()?;
        m.set_phase(Phase::Moving);
        m.progress.scanned.store(0, Ordering::Relaxed);
        m.progress.moved_in_pass.store(0, Ordering::Relaxed);
        m.progress.to_scan.store(0, Ordering::Relaxed);
        let servers: Vec<Backend> = m.servers().into_iter().cloned().collect();
        (servers, m.keys_per_second, topo.databases())
    };
    let mut this = Pass {
        migration,
        topology,
        stop,
        warned,
        count: (keys_per_second / 10).clamp(10, 1000).to_string(),
        keys_per_second,
        started: Instant::now(),
        looked: 0,
    };
    let mut clean = true;
    for server in &servers {
        let Some(nodes) = scanned_nodes(server, databases) else {
            clean = false;
            continue;
        };
        for (node, db) in nodes {
            let size = match call(&node, MOVER, db, &[b"DBSIZE"], false).await {
                Ok(Reply::Int(n)) => n.max(0) as u64,
                other => {
                    if this.warned.due(&server.id, Instant::now()) {
                        let unanswered_s = server.unanswered_for().as_secs();
                        warn!(server = %server.id, db, reply = ?other, unanswered_s, "migration: cannot size an old server; the mover retries every second (logged once a minute)");
                    }
                    clean = false;
                    break;
                }
            };
            if size == 0 {
                continue;
            }
            migration
                .upgrade()?
                .progress
                .to_scan
                .fetch_add(size, Ordering::Relaxed);
            clean &= this.scan(server, &node, db).await?;
        }
    }
    let looked = this.looked;
    info!(looked, clean, "migration: pass over the old servers done");
    Some(clean)
}

/// A pass under way: where it reports, its pace (at most `keys_per_second`
/// keys looked at per second since `started`, SCAN's COUNT a tenth of
/// that), and what it logged.
struct Pass<'a> {
    migration: &'a Weak<Migration>,
    topology: &'a Weak<dyn Owners>,
    stop: &'a CancellationToken,
    warned: &'a mut Warned,
    count: String,
    keys_per_second: u64,
    started: Instant,
    looked: u64,
}

impl Pass<'_> {
    /// SCANs `node` (of the old server `server`) in `db`, settling each batch.
    /// Whether all went well; `None` when stopped.
    async fn scan(&mut self, server: &Backend, node: &Backend, db: u32) -> Option<bool> {
        let mut clean = true;
        let mut cursor = Bytes::from_static(b"0");
        loop {
            let scan: [&[u8]; 4] = [b"SCAN", &cursor, b"COUNT", self.count.as_bytes()];
            let (next, keys) = match scanned(call(node, MOVER, db, &scan, false).await) {
                Ok(scanned) => scanned,
                Err(other) => {
                    if self.warned.due(&server.id, Instant::now()) {
                        warn!(server = %server.id, db, reply = ?other, "migration: SCAN failed; the mover retries every second (logged once a minute)");
                    }
                    return Some(false);
                }
            };
            let (migration, topology) = (self.migration, self.topology);
            clean &= settle_batch(migration, topology, (server, db), &keys, self.warned).await?;
            self.looked += keys.len() as u64;
            if next.is_empty() || &next[..] == b"0" {
                return Some(clean);
            }
            cursor = next;
            let due = self.started
                + Duration::from_secs_f64(self.looked as f64 / self.keys_per_second as f64);
            tokio::select! {
                _ = sleep_until(due) => {}
                _ = self.stop.cancelled() => return None,
            }
        }
    }
}

/// Where the mover looks for an old server's keys, and in which database:
/// the server in each database, or a Redis Cluster's masters serving slots
/// now, in its one database (SELECT is refused there). `None`: a cluster
/// whose slot map is not known yet.
fn scanned_nodes(server: &Backend, databases: u32) -> Option<Vec<(Backend, u32)>> {
    match server.cluster() {
        Some(cluster) => {
            let masters = cluster.masters();
            (!masters.is_empty()).then(|| masters.into_iter().map(|m| (m, 0)).collect())
        }
        None => Some((0..databases).map(|db| (server.clone(), db)).collect()),
    }
}

/// A SCAN reply's next cursor and keys (an odd pair: none, and the end);
/// anything else given back.
fn scanned(reply: BackendResult) -> Result<(Bytes, Vec<Reply>), BackendResult> {
    match reply {
        Ok(Reply::Array(mut parts)) if parts.len() == 2 => match (parts.pop(), parts.pop()) {
            (Some(Reply::Array(keys)), Some(Reply::Bulk(next))) => Ok((next, keys)),
            _ => Ok((Bytes::new(), Vec::new())),
        },
        other => Err(other),
    }
}

/// Settles the keys of one SCAN batch that `server` holds under an old
/// layout and the current topology owns elsewhere. Returns whether all went
/// well (the first failure logged, at most once a minute for the server);
/// `None` once the migration or topology is gone.
async fn settle_batch(
    migration: &Weak<Migration>,
    topology: &Weak<dyn Owners>,
    (server, db): (&Backend, u32),
    keys: &[Reply],
    warned: &mut Warned,
) -> Option<bool> {
    let m: Arc<Migration> = migration.upgrade()?;
    let topo = topology.upgrade()?;
    // The batch's keys are settled side by side: each is one round trip
    // after another, and the lock keeps any key to one settle at a time.
    let mut settles = tokio::task::JoinSet::new();
    for key in keys {
        m.progress.scanned.fetch_add(1, Ordering::Relaxed);
        let Reply::Bulk(key) = key else { continue };
        // Locks and tombstones are the proxy's, and go with nothing.
        if key.starts_with(LOCK_PREFIX) || key.starts_with(TOMBSTONE_PREFIX) {
            continue;
        }
        let Some(owner) = topo.owner_of(key) else {
            continue;
        };
        let held_here = m.layouts.iter().any(|l| l.holder(key).same_server(server));
        if !held_here || owner.same_server(server) {
            continue;
        }
        let (m, owner, key) = (m.clone(), owner.clone(), key.clone());
        settles.spawn(async move {
            let by = m.patience();
            m.settle(MOVER, db, &key, &owner, Purpose::Mover, by).await
        });
    }
    let mut failed = 0usize;
    while let Some(settled) = settles.join_next().await {
        let error = match settled {
            Ok(Ok(_)) => continue,
            Ok(Err(error)) => error.to_string(),
            Err(error) => format!("the move ended abnormally: {error}"),
        };
        failed += 1;
        if failed == 1 && warned.due(&server.id, Instant::now()) {
            warn!(server = %server.id, %error, "migration: a key could not be moved; the mover retries every second (logged once a minute)");
        }
    }
    Some(failed == 0)
}

#[cfg(test)]
mod tests {
    use super::{Warned, WARN_EVERY};
    use std::sync::Arc;
    use tokio::time::Instant;

    #[test]
    fn trouble_with_a_server_is_logged_once_a_minute_each() {
        let mut warned = Warned::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let t0 = Instant::now();
        assert!(warned.due(&a, t0));
        assert!(!warned.due(&a, t0 + WARN_EVERY / 2));
        assert!(warned.due(&b, t0 + WARN_EVERY / 2));
        assert!(warned.due(&a, t0 + WARN_EVERY));
        assert!(!warned.due(&a, t0 + WARN_EVERY * 3 / 2));
    }
}
