//! The background mover: SCANs every old server, database by database, and
//! settles each key that an old layout put there and that the current
//! topology owns elsewhere, at most `[migration] keys_per_second` keys
//! looked at per second. A pass with no error ends the migration; a pass
//! with one (an old server down, say) is followed by another after a wait.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backend::{Backend, BackendResult, Origin};
use crate::migration::{call, Migration, Owners, Phase, Purpose, LOCK_PREFIX, RETRY_AFTER};
use crate::own_keys::TOMBSTONE_PREFIX;
use crate::protocol::Reply;

/// The mover's lane on backend connections.
const MOVER: Origin = Origin {
    client: u64::MAX,
    reply_bytes: 0,
    large_replies: false,
    proto: crate::protocol::Proto::Resp2,
};

/// Runs passes until one is clean or the migration is replaced.
pub async fn run(migration: Weak<Migration>, topology: Weak<dyn Owners>, stop: CancellationToken) {
    loop {
        let Some(clean) = pass(&migration, &topology, &stop).await else {
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
) -> Option<bool> {
    let (servers, keys_per_second, databases) = {
        let m = migration.upgrade()?;
        let topo = topology.upgrade()?;
        m.set_phase(Phase::Moving);
        m.progress.scanned.store(0, Ordering::Relaxed);
        m.progress.moved_in_pass.store(0, Ordering::Relaxed);
        m.progress.to_scan.store(0, Ordering::Relaxed);
        (old_servers(&m), m.keys_per_second, topo.databases())
    };
    let count = (keys_per_second / 10).clamp(10, 1000).to_string();
    let started = Instant::now();
    let mut looked = 0u64;
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
                    warn!(server = %server.id, db, reply = ?other, "migration: cannot size an old server; will retry");
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
            let mut cursor = Bytes::from_static(b"0");
            loop {
                let reply = call(
                    &node,
                    MOVER,
                    db,
                    &[b"SCAN", &cursor, b"COUNT", count.as_bytes()],
                    false,
                )
                .await;
                let (next, keys) = match scanned(reply) {
                    Ok(scanned) => scanned,
                    Err(other) => {
                        warn!(server = %server.id, db, reply = ?other, "migration: SCAN failed; will retry");
                        clean = false;
                        break;
                    }
                };
                clean &= settle_batch(migration, topology, server, db, &keys).await?;
                looked += keys.len() as u64;
                if next.is_empty() || &next[..] == b"0" {
                    break;
                }
                cursor = next;
                // At most keys_per_second keys looked at per second.
                let due = started
                    + std::time::Duration::from_secs_f64(looked as f64 / keys_per_second as f64);
                tokio::select! {
                    _ = sleep_until(due) => {}
                    _ = stop.cancelled() => return None,
                }
            }
        }
    }
    info!(looked, clean, "migration: pass over the old servers done");
    Some(clean)
}

/// Every server of the old layouts, once.
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

fn old_servers(m: &Migration) -> Vec<Backend> {
    let mut servers: Vec<Backend> = Vec::new();
    for layout in &m.layouts {
        for server in &layout.servers {
            if !servers.iter().any(|s| s.same_server(server)) {
                servers.push(server.clone());
            }
        }
    }
    servers
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
/// well; `None` once the migration or topology is gone.
async fn settle_batch(
    migration: &Weak<Migration>,
    topology: &Weak<dyn Owners>,
    server: &Backend,
    db: u32,
    keys: &[Reply],
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
    let mut clean = true;
    while let Some(settled) = settles.join_next().await {
        match settled {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                warn!(%error, "migration: a key could not be moved; will retry");
                clean = false;
            }
            Err(error) => {
                warn!(%error, "migration: a move ended abnormally; will retry");
                clean = false;
            }
        }
    }
    Some(clean)
}
