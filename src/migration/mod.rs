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
//! leaves the key nowhere. One settle per key at a time: within a proxy
//! ([`locks`], shared by clients and the background mover, [`mover`], which
//! scans the old servers and settles what it finds until nothing is left),
//! and across proxies by a lock key next to the key on the old server, taken
//! in the same script that reads the key and released in the one that
//! deletes it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use metrics::{counter, Counter};
use tracing::info;

use crate::backend::{Backend, BackendError, Job, Origin};
use crate::ketama::Ketama;
use crate::protocol::Reply;
use crate::router::Router;

pub mod fence;
pub mod locks;
pub mod mover;
mod settle_error;

pub use settle_error::{SettleError, GONE_AFTER};

use locks::KeyLocks;

/// Reads a key for a move: its serialized value and remaining TTL in ms, at
/// one instant, and takes the key's move lock on the old server (KEYS[2],
/// token ARGV[1], for ARGV[2] ms), which every proxy's settle of the key
/// takes: nil when there is no such key, `BUSY` while another move of it
/// is under way.
const READ_FOR_MOVE: &str = "local v = redis.call('DUMP', KEYS[1]) \
     if not v then return false end \
     if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 'BUSY' end \
     return {v, redis.call('PTTL', KEYS[1])}";

/// Deletes a key only if it still holds the value read for the move
/// (ARGV[1]), and releases the move lock if it is still ours (ARGV[2]).
const DELETE_IF_SAME: &str = "local n = 0 \
     if redis.call('DUMP', KEYS[1]) == ARGV[1] then n = redis.call('DEL', KEYS[1]) end \
     if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end \
     return n";

/// Takes the move lock KEYS[1] (token ARGV[1], for ARGV[2] ms): `BUSY`
/// while another move of the key holds it. For a layout ahead, whose lock
/// is on the owner: see [`Layout::lock_at_owner`].
const LOCK: &str = "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then \
     return 'OK' end return 'BUSY'";

/// Reads a key for a move without a lock beside it (the lock is on the
/// owner): nil when there is no such key.
const READ: &str = "local v = redis.call('DUMP', KEYS[1]) \
     if not v then return false end \
     return {v, redis.call('PTTL', KEYS[1])}";

/// Releases the move lock if it is still ours, after a failed move.
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
     return redis.call('DEL', KEYS[1]) end return 0";

pub use crate::own_keys::LOCK_PREFIX;

/// How long a move lock lasts at least, should its proxy die holding it. A
/// move that has held it for half that long gives up before writing.
const LOCK_MIN: Duration = Duration::from_secs(10);

/// How often a settle looks again while another proxy moves the key.
const BUSY_RETRY: Duration = Duration::from_millis(2);

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
    /// `reload` (the topology before a reload), `config` (`[migration]`)
    /// or `ahead` (the layout a reload switches to, while it settles).
    pub source: &'static str,
}

/// The `source` of a layout a reload is about to switch to: while the
/// reload settles ([`crate::config::ReloadConfig`]), keys are owned by the
/// layout before it and brought back from this one, where a proxy that
/// switched already may have moved them.
pub const AHEAD: &str = "ahead";

impl Layout {
    /// Whether a move from this layout takes its lock on the owner rather
    /// than on this layout's server: the lock of a key is always on the
    /// server of the layout before the reload, so a proxy bringing a key
    /// back (from a layout ahead) and one moving it on (from the layout
    /// before) take the same lock.
    pub fn lock_at_owner(&self) -> bool {
        self.source == AHEAD
    }

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

/// What the mover needs of the current topology, and no more: a narrow view
/// the topology gives, so the migration does not reach back into it.
pub trait Owners: Send + Sync + 'static {
    /// How many databases each server has.
    fn databases(&self) -> u32;
    /// The backend that owns `key` now; `None` for a key outside the
    /// configured prefixes (`[keys] prefixes`), which the mover leaves be.
    fn owner_of(&self, key: &[u8]) -> Option<&Backend>;
}

fn failed(error: BackendError) -> SettleError {
    SettleError::Failed(error)
}

/// What the owner made of the copy: moved, or stale (it had a newer one);
/// else why the move failed.
fn landed(
    owner: &Backend,
    restored: Result<fence::Restored, BackendError>,
) -> Result<Settled, SettleError> {
    match restored {
        Ok(fence::Restored::Done) => Ok(Settled::Moved),
        Ok(fence::Restored::Refused(e)) if e.starts_with(b"BUSYKEY") => Ok(Settled::Stale),
        Ok(fence::Restored::Refused(e)) => Err(failed(refused(owner, &e))),
        Ok(fence::Restored::Late) => {
            Err(failed(unexpected(owner, "a copy within the move's lock")))
        }
        Ok(fence::Restored::Unexpected) => Err(failed(unexpected(owner, "OK"))),
        Err(error) => Err(failed(error)),
    }
}

/// One key's move from an old server to its owner, under a move lock kept
/// beside the old copy, or at the owner (`lock_at_owner`).
struct Move<'a> {
    origin: Origin,
    db: u32,
    key: &'a Bytes,
    owner: &'a Backend,
    old: &'a Backend,
    lock_at_owner: bool,
    /// The lock's key, this move's token in it, and how long it lasts.
    lock: Vec<u8>,
    token: String,
    lock_ms: String,
}

impl Move<'_> {
    fn lock_server(&self) -> &Backend {
        if self.lock_at_owner {
            self.owner
        } else {
            self.old
        }
    }

    /// Releases the lock if it is still this move's.
    async fn release(&self) {
        let args: [&[u8]; 5] = [
            b"EVAL",
            RELEASE.as_bytes(),
            b"1",
            &self.lock,
            self.token.as_bytes(),
        ];
        let _ = call(self.lock_server(), self.origin, self.db, &args, false).await;
    }

    /// One try at locking the key and reading its old copy: the value and
    /// its PTTL, a null (no old copy), or BUSY (another move holds it).
    async fn lock_and_read(&self) -> Result<Reply, SettleError> {
        let (origin, db, key, old) = (self.origin, self.db, self.key, self.old);
        let (lock, token, lock_ms) = (&self.lock, self.token.as_bytes(), self.lock_ms.as_bytes());
        if !self.lock_at_owner {
            let args: [&[u8]; 7] = [
                b"EVAL",
                READ_FOR_MOVE.as_bytes(),
                b"2",
                key,
                lock,
                token,
                lock_ms,
            ];
            return call(old, origin, db, &args, false)
                .await
                .map_err(SettleError::OldDown);
        }
        let args: [&[u8]; 6] = [b"EVAL", LOCK.as_bytes(), b"1", lock, token, lock_ms];
        match call(self.owner, origin, db, &args, false)
            .await
            .map_err(failed)?
        {
            Reply::Bulk(ok) if &ok[..] == b"OK" => {
                let args: [&[u8]; 4] = [b"EVAL", READ.as_bytes(), b"1", key];
                let read = call(old, origin, db, &args, false).await;
                if !matches!(read, Ok(Reply::Array(_))) {
                    self.release().await;
                }
                read.map_err(SettleError::OldDown)
            }
            Reply::Error(e) => Err(failed(refused(self.owner, &e))),
            other => Ok(other),
        }
    }

    /// The owner has the key (or a newer one): the old copy goes, if it is
    /// still the one moved.
    async fn delete_old(&self, value: &Bytes) -> Result<(), SettleError> {
        let args: [&[u8]; 7] = [
            b"EVAL",
            DELETE_IF_SAME.as_bytes(),
            b"2",
            self.key,
            &self.lock,
            value,
            self.token.as_bytes(),
        ];
        let deleted = call(self.old, self.origin, self.db, &args, false).await;
        if self.lock_at_owner {
            // The lock is not beside the old copy: release it on the owner.
            self.release().await;
        }
        match deleted {
            Ok(Reply::Int(_)) => Ok(()),
            Ok(Reply::Error(e)) => Err(failed(refused(self.old, &e))),
            Ok(_) => Err(failed(unexpected(self.old, "an integer"))),
            Err(error) => Err(failed(error)),
        }
    }
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
    /// How long a move lock on an old server lasts.
    lock_for: Duration,
    pub progress: Progress,
    done: AtomicBool,
    started: Instant,
    moved_total: Counter,
    misses_total: Counter,
    /// Stops the mover when the migration is dropped (a reload replaced it).
    stop: Mutex<Option<tokio_util::sync::DropGuard>>,
}

impl Migration {
    /// `request_timeout` is the pool's: a move lock outlasts four of them.
    pub fn new(
        layouts: Vec<Arc<Layout>>,
        locks: Arc<KeyLocks>,
        keys_per_second: u64,
        request_timeout: Duration,
    ) -> Migration {
        Migration {
            layouts,
            locks,
            keys_per_second,
            lock_for: LOCK_MIN.max(request_timeout * 4),
            progress: Progress::default(),
            done: AtomicBool::new(false),
            started: Instant::now(),
            moved_total: counter!(crate::metrics::MIGRATION_MOVED),
            misses_total: counter!(crate::metrics::MIGRATION_MISSES),
            stop: Mutex::new(None),
        }
    }

    /// Counts an old location that did not answer in time.
    pub fn count_old_error(&self) {
        self.progress.old_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether this is the migration of a reload that is settling: keys
    /// are brought back from the layout ahead (see [`AHEAD`]).
    pub fn is_settling(&self) -> bool {
        self.layouts.first().is_some_and(|l| l.source == AHEAD)
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
    /// newest layout first, each once, with the layout that put it there.
    pub fn old_locations<'a>(
        &'a self,
        key: &[u8],
        owner: &Backend,
    ) -> Vec<(&'a Backend, &'a Layout)> {
        let mut found: Vec<(&Backend, &Layout)> = Vec::new();
        for layout in &self.layouts {
            let holder = layout.holder(key);
            if !holder.same_server(owner) && !found.iter().any(|(f, _)| f.same_server(holder)) {
                found.push((holder, layout));
            }
        }
        found
    }

    /// Whether `key` may still be somewhere else than on `owner`.
    pub fn is_moving(&self, key: &[u8], owner: &Backend) -> bool {
        self.is_active() && !self.old_locations(key, owner).is_empty()
    }

    /// Brings `key` (in `db`) from its old locations to `owner`, if it is
    /// there; see the module's doc for the order of the steps. Nothing is
    /// deleted anywhere when a step fails. `for_client` counts a found key
    /// as a miss served.
    pub async fn settle(
        &self,
        origin: Origin,
        db: u32,
        key: &Bytes,
        owner: &Backend,
        for_client: bool,
    ) -> Result<Settled, SettleError> {
        let mut outcome = Settled::Absent;
        for (old, layout) in self.old_locations(key, owner) {
            let _guard = self.locks.lock(db, key).await;
            let settled = self.settle_from(origin, db, key, owner, old, layout.lock_at_owner());
            let found = match settled.await {
                Ok(found) => found,
                Err(error) => {
                    self.progress.old_errors.fetch_add(1, Ordering::Relaxed);
                    return Err(error.gone_if_unanswered_for(old.unanswered_for()));
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
        lock_at_owner: bool,
    ) -> Result<Settled, SettleError> {
        let mv = Move {
            origin,
            db,
            key,
            owner,
            old,
            lock_at_owner,
            lock: lock_name(key, owner.cluster().is_some() || old.cluster().is_some()),
            token: rand::random::<u64>().to_string(),
            lock_ms: self.lock_for.as_millis().to_string(),
        };
        let Some((value, pttl, locked_at)) = self.take(&mv).await? else {
            return Ok(Settled::Absent);
        };
        if pttl == -2 {
            mv.release().await;
            return Ok(Settled::Absent);
        }
        if locked_at.elapsed() > self.lock_for / 2 {
            // The lock may lapse before the copy lands: try again later.
            mv.release().await;
            return Err(failed(unexpected(old, "a move within its lock")));
        }
        // RESTORE's TTL 0 means none; a key about to expire keeps 1 ms, not
        // forever. The copy lands while the lock holds or not at all: a
        // RESTORE that reaches a slow owner after the lock lapsed would
        // bring back a key another proxy moved and deleted meanwhile.
        let ttl = if pttl < 0 { 0 } else { pttl.max(1) };
        let until = locked_at + self.lock_for;
        let copy = fence::Dumped {
            key,
            payload: &value,
            ttl_ms: ttl,
            replace: false,
        };
        let restored = fence::restore_before(owner, origin, db, copy, until).await;
        let outcome = match landed(owner, restored) {
            Ok(outcome) => outcome,
            Err(error) => {
                mv.release().await;
                return Err(error);
            }
        };
        mv.delete_old(&value).await.map(|()| outcome)
    }

    /// Locks the key and reads its old copy (value, PTTL, when the lock was
    /// asked for), waiting while another proxy moves it, as long as a
    /// request may; `None` when there is no old copy.
    async fn take(&self, mv: &Move<'_>) -> Result<Option<(Bytes, i64, Instant)>, SettleError> {
        let given_up = Instant::now() + self.lock_for / 2;
        loop {
            // The lock is taken after this: it lapses no sooner than
            // `lock_for` from here.
            let asked = Instant::now();
            let old = mv.old;
            match mv.lock_and_read().await? {
                Reply::Array(items) => match items.as_slice() {
                    [Reply::Bulk(value), Reply::Int(pttl)] => {
                        return Ok(Some((value.clone(), *pttl, asked)))
                    }
                    _ => return Err(failed(unexpected(old, "a value and a TTL"))),
                },
                Reply::Null => return Ok(None),
                Reply::Bulk(busy) if &busy[..] == b"BUSY" => {
                    if Instant::now() >= given_up {
                        return Err(failed(BackendError::Timeout {
                            backend: mv.lock_server().id.clone(),
                            timeout_ms: self.lock_for.as_millis() as u64 / 2,
                        }));
                    }
                    tokio::time::sleep(BUSY_RETRY).await;
                }
                // The old server answered: it is up, and may hold the
                // session. Its refusal fails the request; a miss would log
                // the user out.
                Reply::Error(e) => return Err(failed(refused(old, &e))),
                _ => return Err(failed(unexpected(old, "a value and a TTL"))),
            }
        }
    }

    /// Starts the background mover; it stops when this migration is dropped
    /// or its topology is gone.
    pub fn start_mover(self: &Arc<Self>, topology: std::sync::Weak<dyn Owners>) {
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
            state: if self.is_settling() {
                "settling"
            } else {
                self.phase().name()
            },
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

/// The move lock's key for `key`: `LOCK_PREFIX` and the key; for a move
/// from or to a Redis Cluster, with the part of the key the cluster hashes
/// as its hash tag first, so that lock and key share a slot (the scripts
/// that read or delete the old copy take both). A key that contains a `}`
/// outside a hash tag of its own still lands elsewhere.
fn lock_name(key: &[u8], cluster: bool) -> Vec<u8> {
    if !cluster {
        return [LOCK_PREFIX, key].concat();
    }
    let tag = crate::cluster::hash_tag(key);
    [LOCK_PREFIX, b"{", tag, b"}", key].concat()
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
    // The mover reads these replies itself: RESP2, whatever the client speaks.
    let rx = backend.submit(Job::command(origin.resp2(), &args, db, write), None);
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

#[cfg(test)]
mod tests {
    use super::lock_name;
    use crate::cluster::slot;

    #[test]
    fn a_lock_for_a_cluster_shares_its_keys_slot() {
        for key in [&b"session:abc"[..], b"session:{u3}:g5", b"a{b"] {
            assert_eq!(slot(&lock_name(key, true)), slot(key), "{key:?}");
        }
        assert_eq!(lock_name(b"k", false), b"__session-proxy-moving:k");
    }
}
