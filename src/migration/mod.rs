//! Changing the topology without logging anyone out.
//!
//! While a migration is on, a key has an owner (the current topology's
//! backend for it) and old locations: where each old layout put it (the
//! topology before a reload, or `[migration] from`). Before a command runs
//! on a key whose old location is another server, the key is *settled*
//! ([`Migration::settle`]): read from the old location with its remaining
//! TTL (DUMP and PTTL in one script), written to the owner only if the owner
//! has no such key (RESTORE without REPLACE: a newer write wins), and only
//! once the owner has acknowledged it, deleted from the old location if it
//! still holds what was read. Then the command runs on the owner as usual, so
//! reads find the session, writes go to the owner and a DEL after a settle
//! leaves the key nowhere. One settle per key at a time ([`locks`]), shared
//! by clients and the background mover ([`mover`]), which scans the old
//! servers and settles what it finds until nothing is left.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use metrics::{counter, Counter};
use tracing::info;

use crate::backend::{Backend, BackendError, Origin};
use crate::ketama::Ketama;
use crate::protocol::Reply;
use crate::router::Router;

pub mod locks;
pub mod mover;

use locks::KeyLocks;

/// Reads a key for a move: its serialized value and remaining TTL in ms, at
/// one instant; nil when there is no such key.
const READ_FOR_MOVE: &str = "local v = redis.call('DUMP', KEYS[1]) \
     if not v then return false end \
     return {v, redis.call('PTTL', KEYS[1])}";

/// Deletes a key only if it still holds the value read for the move.
const DELETE_IF_SAME: &str = "if redis.call('DUMP', KEYS[1]) == ARGV[1] then \
     return redis.call('DEL', KEYS[1]) end return 0";

/// How an old layout spread keys over its servers.
pub enum Spread {
    /// One server held every key.
    Single,
    /// A session-proxy topology (ids and weights).
    Rendezvous(Router),
    /// twemproxy's ketama pool (names and weights).
    Ketama(Ketama),
}

/// Where keys lived before: a spread and its servers, in its order.
pub struct Layout {
    pub spread: Spread,
    pub servers: Vec<Backend>,
    /// `reload` (the topology before a reload) or `config` (`[migration]`).
    pub source: &'static str,
}

impl Layout {
    /// The server this layout put `key` on.
    pub fn holder(&self, key: &[u8]) -> &Backend {
        let index = match &self.spread {
            Spread::Single => 0,
            Spread::Rendezvous(router) => router.owner(key),
            Spread::Ketama(ring) => ring.server(key),
        };
        &self.servers[index]
    }
}

/// What a settle found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// No old location held the key (or none differs from the owner).
    Absent,
    /// Copied to the owner and removed from the old location.
    Moved,
    /// The owner already had a newer value; the old copy was removed.
    Stale,
}

/// The migration's phase, for INFO and /topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// The mover is going through the old servers.
    Moving = 0,
    /// A pass failed somewhere (an old server down): it waits, then goes again.
    Retrying = 1,
    /// Nothing is left: reads no longer look at the old locations.
    Done = 2,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Moving => "moving",
            Phase::Retrying => "retrying",
            Phase::Done => "done",
        }
    }
}

/// Counts for the report; the mover keeps the pass ones.
#[derive(Debug, Default)]
pub struct Progress {
    pub moved: AtomicU64,
    pub stale: AtomicU64,
    pub misses_served: AtomicU64,
    pub old_errors: AtomicU64,
    /// Keys looked at in this pass, and the old servers' size at its start.
    pub scanned: AtomicU64,
    pub to_scan: AtomicU64,
    /// Keys moved (or found stale) in this pass.
    pub moved_in_pass: AtomicU64,
    pub passes: AtomicU64,
    phase: AtomicU8,
}

/// What INFO and /topology show of a migration.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub state: &'static str,
    pub sources: Vec<String>,
    pub keys_moved: u64,
    pub keys_stale: u64,
    pub misses_served: u64,
    pub old_location_errors: u64,
    pub passes: u64,
    pub keys_scanned_in_pass: u64,
    /// An estimate: what is still to scan in this pass, times the share of
    /// scanned keys that had to move.
    pub keys_left: u64,
    /// An estimate: what is still to scan at `keys_per_second`.
    pub seconds_left: u64,
    pub keys_per_second: u64,
    pub running_s: u64,
}

/// A migration in progress: the old layouts, newest first, and its state.
pub struct Migration {
    pub layouts: Vec<Arc<Layout>>,
    pub locks: Arc<KeyLocks>,
    pub keys_per_second: u64,
    pub progress: Progress,
    done: AtomicBool,
    started: Instant,
    moved_total: Counter,
    misses_total: Counter,
    /// Stops the mover when the migration is dropped (a reload replaced it).
    stop: Mutex<Option<tokio_util::sync::DropGuard>>,
}

impl Migration {
    pub fn new(layouts: Vec<Arc<Layout>>, locks: Arc<KeyLocks>, keys_per_second: u64) -> Migration {
        Migration {
            layouts,
            locks,
            keys_per_second,
            progress: Progress::default(),
            done: AtomicBool::new(false),
            started: Instant::now(),
            moved_total: counter!(crate::metrics::MIGRATION_MOVED),
            misses_total: counter!(crate::metrics::MIGRATION_MISSES),
            stop: Mutex::new(None),
        }
    }

    /// Whether reads still look at the old locations.
    pub fn is_active(&self) -> bool {
        !self.done.load(Ordering::Acquire)
    }

    pub fn phase(&self) -> Phase {
        match self.progress.phase.load(Ordering::Relaxed) {
            0 => Phase::Moving,
            1 => Phase::Retrying,
            _ => Phase::Done,
        }
    }

    pub(crate) fn set_phase(&self, phase: Phase) {
        self.progress.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// Ends the migration: reads stop looking at the old locations.
    pub fn finish(&self) {
        self.set_phase(Phase::Done);
        self.done.store(true, Ordering::Release);
        info!(
            moved = self.progress.moved.load(Ordering::Relaxed),
            "migration finished: nothing is left on the old servers"
        );
    }

    /// The old locations of `key` that are another server than `owner`,
    /// newest layout first, each once.
    pub fn old_locations<'a>(&'a self, key: &[u8], owner: &Backend) -> Vec<&'a Backend> {
        let mut found: Vec<&Backend> = Vec::new();
        for layout in &self.layouts {
            let holder = layout.holder(key);
            if !holder.same_server(owner) && !found.iter().any(|f| f.same_server(holder)) {
                found.push(holder);
            }
        }
        found
    }

    /// Whether `key` may still be somewhere else than on `owner`.
    pub fn is_moving(&self, key: &[u8], owner: &Backend) -> bool {
        self.is_active() && !self.old_locations(key, owner).is_empty()
    }

    /// Brings `key` (in `db`) from its old locations to `owner`, if it is
    /// there; see the module's doc for the order of the steps. An old
    /// location that cannot be reached is an error, and nothing is deleted
    /// anywhere then. `for_client` counts a found key as a miss served.
    pub async fn settle(
        &self,
        origin: Origin,
        db: u32,
        key: &Bytes,
        owner: &Backend,
        for_client: bool,
    ) -> Result<Settled, BackendError> {
        let mut outcome = Settled::Absent;
        for old in self.old_locations(key, owner) {
            let _guard = self.locks.lock(db, key).await;
            let found = match self.settle_from(origin, db, key, owner, old).await {
                Ok(found) => found,
                Err(error) => {
                    self.progress.old_errors.fetch_add(1, Ordering::Relaxed);
                    return Err(error);
                }
            };
            if found != Settled::Absent {
                outcome = found;
                self.progress.moved_in_pass.fetch_add(1, Ordering::Relaxed);
                if found == Settled::Moved {
                    self.progress.moved.fetch_add(1, Ordering::Relaxed);
                    self.moved_total.increment(1);
                    if for_client {
                        self.progress.misses_served.fetch_add(1, Ordering::Relaxed);
                        self.misses_total.increment(1);
                    }
                } else {
                    self.progress.stale.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Ok(outcome)
    }

    async fn settle_from(
        &self,
        origin: Origin,
        db: u32,
        key: &Bytes,
        owner: &Backend,
        old: &Backend,
    ) -> Result<Settled, BackendError> {
        let read = call(
            old,
            origin,
            db,
            &[b"EVAL", READ_FOR_MOVE.as_bytes(), b"1", key],
            false,
        )
        .await?;
        let (value, pttl) = match read {
            Reply::Array(items) => match items.as_slice() {
                [Reply::Bulk(value), Reply::Int(pttl)] => (value.clone(), *pttl),
                _ => return Err(unexpected(old, "a value and a TTL")),
            },
            Reply::Null => return Ok(Settled::Absent),
            Reply::Error(e) => return Err(refused(old, &e)),
            _ => return Err(unexpected(old, "a value and a TTL")),
        };
        if pttl == -2 {
            return Ok(Settled::Absent);
        }
        // RESTORE's TTL 0 means none; a key about to expire keeps 1 ms, not
        // forever.
        let ttl = if pttl < 0 { 0 } else { pttl.max(1) };
        let ttl = ttl.to_string();
        let restored = call(
            owner,
            origin,
            db,
            &[b"RESTORE", key, ttl.as_bytes(), &value],
            true,
        )
        .await?;
        let outcome = match restored {
            Reply::Status(_) => Settled::Moved,
            Reply::Error(e) if e.starts_with(b"BUSYKEY") => Settled::Stale,
            Reply::Error(e) => return Err(refused(owner, &e)),
            _ => return Err(unexpected(owner, "OK")),
        };
        // The owner has it (or a newer one): now the old copy may go.
        match call(
            old,
            origin,
            db,
            &[b"EVAL", DELETE_IF_SAME.as_bytes(), b"1", key, &value],
            false,
        )
        .await?
        {
            Reply::Int(_) => Ok(outcome),
            Reply::Error(e) => Err(refused(old, &e)),
            _ => Err(unexpected(old, "an integer")),
        }
    }

    /// Starts the background mover; it stops when this migration is dropped
    /// or its topology is gone.
    pub fn start_mover(self: &Arc<Self>, topology: std::sync::Weak<crate::shared::Topology>) {
        let token = tokio_util::sync::CancellationToken::new();
        if let Ok(mut stop) = self.stop.lock() {
            *stop = Some(token.clone().drop_guard());
        }
        tokio::spawn(mover::run(Arc::downgrade(self), topology, token));
    }

    pub fn report(&self) -> Report {
        let p = &self.progress;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let scanned = load(&p.scanned);
        let to_scan = load(&p.to_scan).saturating_sub(scanned);
        let share = if scanned == 0 {
            1.0
        } else {
            load(&p.moved_in_pass) as f64 / scanned as f64
        };
        let done = self.phase() == Phase::Done;
        Report {
            state: self.phase().name(),
            sources: self
                .layouts
                .iter()
                .map(|l| {
                    let ids: Vec<&str> = l.servers.iter().map(|s| &*s.id).collect();
                    format!("{}: {}", l.source, ids.join(", "))
                })
                .collect(),
            keys_moved: load(&p.moved),
            keys_stale: load(&p.stale),
            misses_served: load(&p.misses_served),
            old_location_errors: load(&p.old_errors),
            passes: load(&p.passes),
            keys_scanned_in_pass: scanned,
            keys_left: if done {
                0
            } else {
                (to_scan as f64 * share).ceil() as u64
            },
            seconds_left: if done {
                0
            } else {
                to_scan.div_ceil(self.keys_per_second)
            },
            keys_per_second: self.keys_per_second,
            running_s: self.started.elapsed().as_secs(),
        }
    }
}

/// Sends one command and waits for its parsed reply.
pub(crate) async fn call(
    backend: &Backend,
    origin: Origin,
    db: u32,
    args: &[&[u8]],
    write: bool,
) -> Result<Reply, BackendError> {
    let args: Vec<Bytes> = args.iter().map(|a| Bytes::copy_from_slice(a)).collect();
    let rx = backend.send_args(origin, &args, db, write);
    match rx.await {
        Ok(result) => result.map(Reply::parsed),
        Err(_) => Err(BackendError::ConnectionLost {
            backend: backend.id.clone(),
            reason: "proxy is shutting down".into(),
        }),
    }
}

fn unexpected(backend: &Backend, wanted: &str) -> BackendError {
    BackendError::Unavailable {
        backend: backend.id.clone(),
        reason: format!("moving a key, expected {wanted} in reply"),
    }
}

fn refused(backend: &Backend, error: &[u8]) -> BackendError {
    BackendError::Unavailable {
        backend: backend.id.clone(),
        reason: format!("moving a key: {}", String::from_utf8_lossy(error)),
    }
}

/// How long the mover waits before another pass after a failed one.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
