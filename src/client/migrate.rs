//! A request on keys that a migration may still hold on an old server: each
//! such key is settled first (brought to its owner, see
//! [`crate::migration`]), then the request runs as [`plan`] decided. The
//! steps run in a task of their own; the slot is a barrier, so the client's
//! next requests wait for it and keep their order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::backend::{Backend, BackendError, BackendResult, Job, Origin};
use crate::client::ctx::Ctx;
use crate::client::merge::{merge, MergeHow};
use crate::client::plan::Plan;
use crate::client::slot::{off_task, Pending, Slot};
use crate::migration::{Migration, Purpose, SettleError};
use crate::protocol::RedisError;
use crate::protocol::{Cmd, Reply, Request, Spec};
use crate::shared::Topology;

/// The keys of `request` that may still be on an old server.
pub(in crate::client) fn moving_keys(
    migration: &Migration,
    topo: &Topology,
    spec: &Spec,
    request: &Request,
) -> Vec<Bytes> {
    let keys = crate::protocol::keys::request_key_positions(spec, request)
        .into_iter()
        .filter_map(|pos| request.arg(pos));
    still_moving(migration, topo, keys)
}

/// Those of `keys` that may still be on an old server.
pub(in crate::client) fn still_moving<'k>(
    migration: &Migration,
    topo: &Topology,
    keys: impl Iterator<Item = &'k [u8]>,
) -> Vec<Bytes> {
    keys.filter(|key| migration.is_moving(key, &topo.backends[topo.route(key)]))
        .map(Bytes::copy_from_slice)
        .collect()
}

/// Whether `cmd` deletes its keys: a delete must reach a key's old location
/// too (or leave a tombstone beside one taken for gone), or the session
/// could come back from there.
pub(in crate::client) fn deletes(cmd: Cmd) -> bool {
    matches!(cmd, Cmd::Del | Cmd::Unlink | Cmd::GetDel)
}

/// What to send once the keys are settled: the plan's sends, owned.
enum Sends {
    One {
        backend: usize,
        payload: Bytes,
    },
    Split {
        parts: Vec<(usize, Vec<Bytes>)>,
        how: MergeHow,
    },
}

/// Settles `keys`, then carries out `planned` (Forward or Split).
pub(in crate::client) fn migrating(
    cx: &mut Ctx<'_>,
    migration: &Arc<Migration>,
    planned: Plan,
    keys: Vec<Bytes>,
) -> Slot {
    let Ctx {
        topo,
        spec,
        request,
        now,
        ..
    } = *cx;
    // What is gathered goes first: those commands came before this one.
    cx.flush();
    let sends = match planned {
        Plan::Split { parts, how } => Sends::Split { parts, how: *how },
        Plan::Forward { backend, .. } => {
            let payload = request.payload();
            Sends::One { backend, payload }
        }
        // Refused and Every never carry keys here.
        _ => return Slot::ready(cx.state.proto, RedisError::Routing.reply()),
    };
    // A delete must reach the old location too, or the session could come
    // back from there: with it unreachable, the delete fails instead.
    let deleting = deletes(spec.cmd);
    // Where a failed settle must fail the request too (see below).
    let must_settle = deleting || (spec.write && migration.is_settling());
    let ids: Arc<str> = match &sends {
        Sends::One { backend, .. } => topo.backends[*backend].id.clone(),
        Sends::Split { parts, .. } => {
            let ids: Vec<&str> = parts.iter().map(|(b, _)| &*topo.backends[*b].id).collect();
            Arc::from(ids.join("', '"))
        }
    };
    // A GET first asks the owner: a key already there is the newest, and
    // only a miss pays the trip to the old location.
    let read_first = match (&sends, spec.cmd) {
        (Sends::One { backend, payload }, Cmd::Get) => Some((*backend, payload.clone())),
        _ => None,
    };
    let run = Settling {
        topo: topo.clone(),
        backends: ids.clone(),
        migration: migration.clone(),
        origin: cx.state.origin(),
        db: cx.state.db,
        write: spec.write,
        purpose: if deleting {
            Purpose::Delete
        } else {
            Purpose::Client
        },
        must_settle,
        settle_by: SettleBy::half_of(topo.config.pool.request_timeout(), now),
        deadline: now + topo.config.pool.request_timeout(),
    };
    let rx = off_task(run.go(read_first, keys, sends));
    let mut slot = Slot::waiting(topo, cx.state.proto, Pending::One(rx), ids, now);
    slot.barrier = true;
    slot
}

/// A request whose keys a migration may still hold elsewhere, off the
/// client's task.
struct Settling {
    topo: Arc<Topology>,
    /// The backend(s) the request goes to, named by its timeout error.
    backends: Arc<str>,
    migration: Arc<Migration>,
    origin: Origin,
    db: u32,
    write: bool,
    /// A delete's keys leave a tombstone beside an old server taken for gone.
    purpose: Purpose,
    /// Whether a failed settle fails the request too.
    must_settle: bool,
    /// When a slow old location counts as down.
    settle_by: SettleBy,
    /// The client's request timeout.
    deadline: Instant,
}

impl Settling {
    /// A GET asks the owner first; otherwise (or on a miss) the keys are
    /// settled, then the request is sent.
    async fn go(
        self,
        read_first: Option<(usize, Bytes)>,
        keys: Vec<Bytes>,
        sends: Sends,
    ) -> BackendResult {
        if let Some((backend, payload)) = read_first {
            let first = self.send(Sends::One { backend, payload }).await;
            if first.as_ref().is_ok_and(|reply| !is_null(reply)) {
                return first;
            }
        }
        for key in &keys {
            self.settle(key).await?;
        }
        self.send(sends).await
    }

    /// Sends and waits until the client's deadline at most. Past it the
    /// client has had its timeout error, so nothing more is sent, and a job
    /// still waiting in its backend (held by a failover, say) is dropped
    /// with its receiver, not sent later: a write must not land after what
    /// the client did next (the nemesis saw a logout undone so).
    async fn send(&self, sends: Sends) -> BackendResult {
        let (topo, origin, db, write) = (&self.topo, self.origin, self.db, self.write);
        let timed_out = || BackendError::Timeout {
            backend: self.backends.clone(),
            timeout_ms: topo.config.pool.request_timeout_ms,
        };
        if Instant::now() >= self.deadline {
            return Err(timed_out());
        }
        let sent = send(topo, origin, db, write, sends);
        tokio::time::timeout_at(self.deadline.into(), sent)
            .await
            .unwrap_or_else(|_| Err(timed_out()))
    }

    /// Settles one key: an old server that is slow to answer must not cost
    /// the client its whole request timeout: half of it, then it counts as
    /// down.
    async fn settle(&self, key: &Bytes) -> Result<(), BackendError> {
        let topo = &self.topo;
        let owner = &topo.backends[topo.route(key)];
        let settled = settle_within(
            &self.migration,
            (self.origin, self.db),
            key,
            owner,
            self.purpose,
            self.settle_by,
        );
        match settled.await {
            Ok(()) => Ok(()),
            // A request beside an old server known down goes on (a read
            // answered as the miss it would have been) only once that
            // server is taken for gone; a slow old server, a delete, or a
            // write while a reload settles fail it (see
            // `SettleError::request_goes_on`).
            Err(error) if error.request_goes_on(self.must_settle) => Ok(()),
            Err(error) => Err(error.into_backend()),
        }
    }
}

/// How long a request's settles may wait: half its timeout from when it
/// came, so that an old server slow to answer counts as down while the
/// client's own deadline is still ahead.
#[derive(Debug, Clone, Copy)]
pub(in crate::client) struct SettleBy {
    by: Instant,
    /// The wait, as the timeout error names it.
    waited_ms: u64,
}

impl SettleBy {
    /// Half of `timeout` from `came`.
    pub(in crate::client) fn half_of(timeout: Duration, came: Instant) -> SettleBy {
        let half = timeout / 2;
        SettleBy {
            by: came + half,
            waited_ms: half.as_millis() as u64,
        }
    }
}

/// Settles `key` (see [`Migration::settle`]) until `settle_by` at most: an
/// old server slow to answer then counts as down, and the error names the
/// key's old locations and its owner, the servers the settle waited on.
pub(in crate::client) async fn settle_within(
    migration: &Migration,
    (origin, db): (Origin, u32),
    key: &Bytes,
    owner: &Backend,
    purpose: Purpose,
    SettleBy { by, waited_ms }: SettleBy,
) -> Result<(), SettleError> {
    let settle = migration.settle(origin, db, key, owner, purpose, by);
    tokio::time::timeout_at(by.into(), settle)
        .await
        .map(|settled| settled.map(|_| ()))
        .unwrap_or_else(|_| {
            migration.count_old_error();
            Err(SettleError::OldDown(BackendError::Timeout {
                backend: settled_on(migration, key, owner),
                timeout_ms: waited_ms,
            }))
        })
}

/// The servers a settle of `key` talks to, as an error names them: its old
/// locations, newest first, then its owner (the move's lock is there).
fn settled_on(migration: &Migration, key: &[u8], owner: &Backend) -> Arc<str> {
    let mut ids: Vec<&str> = Vec::new();
    let olds = migration.old_locations(key, owner);
    for id in olds.iter().map(|(old, _)| &*old.id).chain([&*owner.id]) {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Arc::from(ids.join("', '"))
}

/// Brings keys still on an old server to their owner, as any command does
/// before it runs on a connection of its own (a transaction, a blocking
/// command). These may write: an old server known down fails them until it
/// is taken for gone, as for any write; the keys in `deleted` leave a
/// tombstone beside it then, as a DEL's do. As for any request, an old
/// server slow to answer fails them at half the request timeout, named
/// in the error.
pub(in crate::client) async fn settle_moving(
    topo: &Topology,
    origin: Origin,
    db: u32,
    keys: &[Bytes],
    deleted: &[Bytes],
) -> Result<(), BackendError> {
    let Some(migration) = topo.active_migration() else {
        return Ok(());
    };
    let by = SettleBy::half_of(topo.config.pool.request_timeout(), Instant::now());
    for key in keys {
        let owner = &topo.backends[topo.route(key)];
        let purpose = if deleted.contains(key) {
            Purpose::Delete
        } else {
            Purpose::Client
        };
        match settle_within(migration, (origin, db), key, owner, purpose, by).await {
            Ok(()) => {}
            Err(error) if error.request_goes_on(false) => {}
            Err(error) => return Err(error.into_backend()),
        }
    }
    Ok(())
}

/// Whether a backend's reply is a null (a GET's miss).
fn is_null(reply: &Reply) -> bool {
    reply.is_null()
}

/// Sends the planned command(s) and waits for the client's reply.
async fn send(
    topo: &Topology,
    origin: crate::backend::Origin,
    db: u32,
    write: bool,
    sends: Sends,
) -> BackendResult {
    let lost = |backend: &crate::backend::Backend| BackendError::ConnectionLost {
        backend: backend.id.clone(),
        reason: "proxy is shutting down".into(),
    };
    match sends {
        Sends::One { backend, payload } => {
            let backend = &topo.backends[backend];
            let rx = backend.submit(Job::one(origin, payload, db, write), None);
            rx.await.unwrap_or_else(|_| Err(lost(backend)))
        }
        Sends::Split { parts, how } => {
            let receivers: Vec<_> = parts
                .iter()
                .map(|(b, sub)| {
                    let rx = topo.backends[*b]
                        .submit(Job::command(origin.resp2(), sub, db, write), None);
                    (b, rx)
                })
                .collect();
            let mut replies = Vec::with_capacity(receivers.len());
            for (b, rx) in receivers {
                let backend = &topo.backends[*b];
                replies.push(rx.await.unwrap_or_else(|_| Err(lost(backend)))?.parsed());
            }
            Ok(merge(&how, replies))
        }
    }
}
