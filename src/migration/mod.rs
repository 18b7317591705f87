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
mod key_move;
pub mod locks;
pub mod mover;
mod settle_error;

pub use settle_error::SettleError;

use crate::config::MigrationTuning;
use key_move::{across_cluster, landed, lock_name, tombstone_name, Move, Step};
use locks::KeyLocks;

pub use crate::own_keys::LOCK_PREFIX;

/// Adds the server ARGV[1] to the tombstone KEYS[1] (a set: a key may have
/// several old servers taken for gone), which lasts ARGV[2] ms from now.
const BURY: &str = "redis.call('SADD', KEYS[1], ARGV[1]) \
     return redis.call('PEXPIRE', KEYS[1], ARGV[2])";

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

/// Whom a key is settled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The background mover.
    Mover,
    /// A client's request: a key found is counted as a miss served.
    Client,
    /// A client's delete of the key (DEL, UNLINK, GETDEL). An old server
    /// taken for gone does not fail it: a tombstone goes on the owner
    /// (`TOMBSTONE_PREFIX` + key, naming that server, for `[migration]
    /// tombstone_ttl_s`), and a move of the key from that server, should
    /// it come back, lands nothing while the tombstone is there, so the
    /// session deleted stays deleted.
    Delete,
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
    /// Deletes that left a tombstone (see [`Purpose::Delete`]).
    pub buried: AtomicU64,
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
    pub keys_buried: u64,
    pub misses_served: u64,
    pub old_location_errors: u64,
    /// Old servers known down now, and those among them taken for gone
    /// (see [`Migration::servers_down`]).
    pub old_servers_down: Vec<String>,
    pub old_servers_gone: Vec<String>,
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
    /// How long an old server known down goes unanswered before it is
    /// taken for gone (see [`SettleError::gone_if_unanswered_for`]).
    gone_after: Duration,
    /// How long a key's tombstone lasts (see [`Purpose::Delete`]).
    tombstone_for: Duration,
    /// How long a move lock on an old server lasts.
    lock_for: Duration,
    /// How long a step of a move waits for its server (the pool's).
    request_timeout: Duration,
    pub progress: Progress,
    done: AtomicBool,
    started: Instant,
    moved_total: Counter,
    misses_total: Counter,
    /// Stops the mover when dropped: when the migration is, or when a
    /// reload replaced its topology ([`Migration::stop_mover`]).
    stop: Mutex<mover::MoverStop>,
}

impl Migration {
    /// `request_timeout` is the pool's: a move lock outlasts four of them.
    pub fn new(
        layouts: Vec<Arc<Layout>>,
        locks: Arc<KeyLocks>,
        tuning: MigrationTuning,
        request_timeout: Duration,
    ) -> Migration {
        Migration {
            layouts,
            locks,
            keys_per_second: tuning.keys_per_second,
            gone_after: tuning.gone_after,
            tombstone_for: tuning.tombstone_for,
            lock_for: LOCK_MIN.max(request_timeout * 4),
            request_timeout,
            progress: Progress::default(),
            done: AtomicBool::new(false),
            started: Instant::now(),
            moved_total: counter!(crate::metrics::MIGRATION_MOVED),
            misses_total: counter!(crate::metrics::MIGRATION_MISSES),
            stop: Mutex::default(),
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

    /// Every server of the old layouts, once.
    pub fn servers(&self) -> Vec<&Backend> {
        let mut servers: Vec<&Backend> = Vec::new();
        for layout in &self.layouts {
            for server in &layout.servers {
                if !servers.iter().any(|s| s.same_server(server)) {
                    servers.push(server);
                }
            }
        }
        servers
    }

    /// The ids of the old servers known down now (their connections fail),
    /// and of those among them taken for gone (unanswered for `[migration]
    /// gone_after_s`): the mover cannot end while one is down, and what it
    /// holds fails or, once gone, answers as missing (see
    /// [`SettleError::request_goes_on`]).
    pub fn servers_down(&self) -> (Vec<String>, Vec<String>) {
        let down: Vec<&Backend> = self.servers().into_iter().filter(|s| !s.is_up()).collect();
        let ids = |servers: &[&Backend]| servers.iter().map(|s| s.id.to_string()).collect();
        let gone: Vec<&Backend> = down
            .iter()
            .copied()
            .filter(|s| s.unanswered_for() >= self.gone_after)
            .collect();
        (ids(&down), ids(&gone))
    }

    /// Whether `key` may still be somewhere else than on `owner`.
    pub fn is_moving(&self, key: &[u8], owner: &Backend) -> bool {
        self.is_active() && !self.old_locations(key, owner).is_empty()
    }

    /// The moment a settle that starts now stops waiting, unless its caller
    /// gives up sooner: while another move holds the key, half its lock.
    pub fn patience(&self) -> Instant {
        Instant::now() + self.lock_for / 2
    }

    /// Brings `key` (in `db`) from its old locations to `owner`, if it is
    /// there; see the module's doc for the order of the steps. Nothing is
    /// deleted anywhere when a step fails. `purpose` says whom for (see
    /// [`Purpose`]). `by` is when the caller stops waiting (the client's
    /// answer is due; else [`Migration::patience`]): no move's lock is
    /// taken for it later.
    pub async fn settle(
        &self,
        origin: Origin,
        db: u32,
        key: &Bytes,
        owner: &Backend,
        purpose: Purpose,
        by: Instant,
    ) -> Result<Settled, SettleError> {
        let mut outcome = Settled::Absent;
        let olds = self.old_locations(key, owner);
        for (i, &(old, layout)) in olds.iter().enumerate() {
            let _guard = self.locks.lock(db, key).await;
            let step = Step {
                owner,
                old,
                newer: &olds[..i],
                lock_at_owner: layout.lock_at_owner(),
            };
            let settled = self.settle_from(origin, db, key, step, by);
            let found = match settled.await {
                Ok(found) => found,
                Err(error) => {
                    self.progress.old_errors.fetch_add(1, Ordering::Relaxed);
                    let unanswered = old.unanswered_for();
                    let error = error.gone_if_unanswered_for(unanswered, self.gone_after);
                    if purpose == Purpose::Delete && matches!(error, SettleError::OldGone(_)) {
                        self.bury(origin, db, key, owner, old).await?;
                        self.progress.buried.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    return Err(error);
                }
            };
            if found != Settled::Absent {
                outcome = found;
                self.progress.moved_in_pass.fetch_add(1, Ordering::Relaxed);
                if found == Settled::Moved {
                    self.progress.moved.fetch_add(1, Ordering::Relaxed);
                    self.moved_total.increment(1);
                    if purpose != Purpose::Mover {
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
        step: Step<'_>,
        by: Instant,
    ) -> Result<Settled, SettleError> {
        let Step {
            owner,
            old,
            newer,
            lock_at_owner,
        } = step;
        let cluster = across_cluster(owner, old);
        let mv = Move {
            origin,
            db,
            key,
            owner,
            old,
            lock_at_owner,
            lock: lock_name(key, cluster),
            token: rand::random::<u64>().to_string(),
            lock_ms: self.lock_for.as_millis().to_string(),
        };
        // Dropped here, or failed (a reply lost after its request was
        // sent), the lock may be taken for nobody: it is released.
        let mut unlock = mv.release_if_dropped();
        let Some((value, pttl, locked_at)) = self.take(&mv, by).await? else {
            unlock.disarm();
            return Ok(Settled::Absent);
        };
        // The copy lands while the lock holds or not at all (a RESTORE that
        // reaches a slow owner after the lock is gone would bring back a
        // key another proxy moved and deleted meanwhile), and no later than
        // when the caller stops waiting, on the backends' clocks: a move
        // its caller gave up (the owner frozen, the copy in its socket)
        // then releases the lock, where it held the key for nobody until it
        // lapsed, every request for the session failing meanwhile (a
        // 15-minute nemesis saw ten seconds of them).
        let until = (locked_at + self.lock_for).min(by + fence::CLOCK_ALLOWANCE);
        unlock.not_before(until);
        let carried = self.carry(&mv, newer, &value, pttl, locked_at, until).await;
        if carried.is_ok() {
            unlock.disarm();
        }
        carried
    }

    /// The rest of a move once the lock is taken and the old copy read:
    /// the copy to the owner (fenced by `until`), then the old copy
    /// deleted, which releases the lock.
    async fn carry(
        &self,
        mv: &Move<'_>,
        newer: &[(&Backend, &Layout)],
        value: &Bytes,
        pttl: i64,
        locked_at: Instant,
        until: Instant,
    ) -> Result<Settled, SettleError> {
        let (key, owner, old) = (mv.key, mv.owner, mv.old);
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
        // forever.
        let ttl = if pttl < 0 { 0 } else { pttl.max(1) };
        // Deleted while a newer layout's holder owned it: the copy goes.
        if mv.buried_beside(newer).await? {
            return mv.delete_old(value).await.map(|_| Settled::Stale);
        }
        // Not over a tombstone that names the old server: the key was
        // deleted while that server was taken for gone.
        let tombstone = tombstone_name(key, across_cluster(owner, old));
        let copy = fence::Dumped {
            key,
            payload: value,
            ttl_ms: ttl,
            replace: false,
            unless_buried: Some((&tombstone, old.id.as_bytes())),
        };
        let restored = fence::restore_before(owner, mv.origin, mv.db, copy, until).await;
        let buried = matches!(restored, Ok(fence::Restored::Buried));
        let outcome = match landed(owner, restored) {
            Ok(outcome) => outcome,
            Err(error) => {
                mv.release().await;
                return Err(error);
            }
        };
        if mv.delete_old(value).await? && buried {
            mv.unbury(&tombstone).await;
        }
        Ok(outcome)
    }

    /// Leaves `key`'s tombstone on `owner`, naming `old` (taken for gone):
    /// see [`Purpose::Delete`].
    async fn bury(
        &self,
        origin: Origin,
        db: u32,
        key: &Bytes,
        owner: &Backend,
        old: &Backend,
    ) -> Result<(), SettleError> {
        let tombstone = tombstone_name(key, across_cluster(owner, old));
        let ms = self.tombstone_for.as_millis().to_string();
        let (bury, server) = (BURY.as_bytes(), old.id.as_bytes());
        let args: [&[u8]; 6] = [b"EVAL", bury, b"1", &tombstone, server, ms.as_bytes()];
        match call(owner, origin, db, &args, true).await {
            Ok(Reply::Int(1)) => Ok(()),
            Ok(Reply::Error(e)) => Err(failed(refused(owner, &e))),
            Ok(_) => Err(failed(unexpected(owner, "1"))),
            Err(error) => Err(failed(error)),
        }
    }

    /// Locks the key and reads its old copy (value, PTTL, when the lock was
    /// asked for), waiting while another proxy moves it, until `by` at
    /// most; `None` when there is no old copy. Each try at the lock is
    /// fenced by when it stops being waited for: `by`, or the request
    /// timeout after it was asked.
    async fn take(
        &self,
        mv: &Move<'_>,
        by: Instant,
    ) -> Result<Option<(Bytes, i64, Instant)>, SettleError> {
        let started = Instant::now();
        let given_up = by.min(self.patience());
        loop {
            // The lock is taken after this: it lapses no sooner than
            // `lock_for` from here.
            let asked = Instant::now();
            let old = mv.old;
            match mv
                .lock_and_read(by.min(asked + self.request_timeout))
                .await?
            {
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
                            timeout_ms: given_up.saturating_duration_since(started).as_millis()
                                as u64,
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
        let (old_servers_down, old_servers_gone) = self.servers_down();
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
            keys_buried: load(&p.buried),
            misses_served: load(&p.misses_served),
            old_location_errors: load(&p.old_errors),
            old_servers_down,
            old_servers_gone,
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

/// The lane on backend connections of what the proxy asks for itself (the
/// mover, `crate::switch_time`): no client's.
pub(crate) const PROXY_LANE: Origin = Origin {
    client: u64::MAX,
    reply_bytes: 0,
    large_replies: false,
    proto: crate::protocol::Proto::Resp2,
};

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
