//! MULTI / EXEC / DISCARD as Redis runs them, over one backend: commands
//! after MULTI are checked and answered `+QUEUED` here (an unknown command,
//! a wrong arity, a refused key or a key on another backend than the first
//! one answers its error, and EXEC then answers EXECABORT); EXEC sends
//! `MULTI`, the queued commands and `EXEC` as one batch, written back to
//! back on one backend connection, so the backend runs them as one
//! transaction, and the client gets EXEC's reply. WATCH leases a connection
//! of the watched keys' backend to the client (`Backend::lease`): the WATCH
//! and later the transaction go on it, so the backend sees both on one
//! connection and aborts EXEC when a watched key changed; EXEC, DISCARD,
//! UNWATCH and RESET let it go.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;

use crate::backend::{BackendError, BackendResult, Job, Lease, LeaseFor, Origin};
use crate::client::migrate::{deletes, moving_keys, settle_moving};
use crate::client::plan::{plan, Plan, Policy};
use crate::client::slot::{Pending, Slot};
use crate::client::State;
use crate::protocol::RedisError;
use crate::protocol::{Cmd, Reply, Request, Route, Spec};
use crate::shared::Topology;

/// A transaction being queued.
#[derive(Debug, Default)]
pub(in crate::client) struct Multi {
    /// The queued commands, RESP-encoded, each with the backend of its keys
    /// (`None`: no key, PING say).
    commands: Vec<(Option<usize>, Bytes)>,
    bytes: usize,
    /// The backend of the first key.
    backend: Option<usize>,
    /// Keys on several backends, allowed by `[keys] split_transactions`.
    spans: bool,
    /// For each cluster backend in the transaction, the one hash slot its
    /// keys may be in (a cluster runs a transaction on one node, and
    /// refuses keys of several slots).
    slots: Vec<(usize, u16)>,
    /// Keys a migration may still hold elsewhere, settled before EXEC.
    keys: Vec<Bytes>,
    /// Those of them a queued DEL, UNLINK or GETDEL deletes.
    deleted: Vec<Bytes>,
    /// A queuing error happened: EXEC answers EXECABORT.
    aborted: bool,
}

/// A WATCH in force: the backend of its keys and the connection it is on.
#[derive(Debug)]
pub(in crate::client) struct Watching {
    backend: usize,
    lease: Lease,
}

impl Multi {
    /// A transaction after WATCH: its keys must be on the watched backend.
    pub(in crate::client) fn after_watch(watching: Option<&Watching>) -> Multi {
        Multi {
            backend: watching.map(|w| w.backend),
            ..Multi::default()
        }
    }

    /// Notes an error answered to a queued command.
    pub(in crate::client) fn abort(&mut self) {
        self.aborted = true;
    }
}

/// What a command gets while a transaction is being queued: `+QUEUED`, or
/// the error that aborts the transaction.
pub(in crate::client) fn queue(
    topo: &Topology,
    multi: &mut Multi,
    watching: bool,
    spec: &Spec,
    request: &Request,
    policy: &Policy<'_>,
) -> Reply {
    match queued(topo, multi, watching, spec, request, policy) {
        Ok(()) => Reply::status("QUEUED"),
        Err(refusal) => {
            multi.abort();
            refusal
        }
    }
}

/// Queues the command, or says why not (the transaction is then aborted).
fn queued(
    topo: &Topology,
    multi: &mut Multi,
    watching: bool,
    spec: &Spec,
    request: &Request,
    policy: &Policy<'_>,
) -> Result<(), Reply> {
    let backend = backend_of(topo, spec, request, policy)?;
    if let Some(backend) = backend {
        join(multi, backend, watching, request, policy)?;
        if let Some(migration) = topo.active_migration() {
            let moving = moving_keys(migration, topo, spec, request);
            if deletes(spec.cmd) {
                multi.deleted.extend(moving.iter().cloned());
            }
            multi.keys.extend(moving);
        }
    }
    let limits = &topo.config.limits;
    let raw_len = request.raw().map_or(0, |r| r.len());
    if multi.commands.len() + 1 > limits.max_pipeline
        || multi.bytes + raw_len > limits.max_request_bytes
    {
        let (commands, bytes) = (limits.max_pipeline, limits.max_request_bytes);
        return Err(RedisError::TransactionTooLarge { commands, bytes }.reply());
    }
    let raw = request.payload();
    multi.bytes += raw.len();
    multi.commands.push((backend, raw));
    Ok(())
}

/// The backend a queued command runs on: `None` for one the backend
/// answers wherever it runs (PING, ECHO, UNWATCH).
fn backend_of(
    topo: &Topology,
    spec: &Spec,
    request: &Request,
    policy: &Policy<'_>,
) -> Result<Option<usize>, Reply> {
    match spec.route {
        // Run by the backend inside the transaction, answering there.
        Route::Local if matches!(spec.cmd, Cmd::Ping | Cmd::Echo | Cmd::Unwatch) => Ok(None),
        Route::Key | Route::Keys(_) | Route::KeyValues | Route::Script | Route::Specs => {
            match plan(spec, request, policy, |key| topo.route(key), |_| false) {
                Plan::Forward { backend, .. } => Ok(Some(backend)),
                Plan::Refused => Err(RedisError::NoPermKey.reply()),
                Plan::Answer(reply) => Err(reply),
                _ => Err(RedisError::CrossSlot.reply()),
            }
        }
        _ => Err(RedisError::NotInMulti(spec.name.to_uppercase()).reply()),
    }
}

/// Adds `backend` to the transaction: one hash slot per cluster backend,
/// and a second backend only where transactions may be split.
fn join(
    multi: &mut Multi,
    backend: usize,
    watching: bool,
    request: &Request,
    policy: &Policy<'_>,
) -> Result<(), Reply> {
    if policy.clusters.get(backend).copied().unwrap_or(false) {
        if let crate::cluster::Touches::Slot(slot) = crate::cluster::touches(&request.payload()) {
            match multi.slots.iter().find(|(b, _)| *b == backend) {
                Some(&(_, first)) if first != slot => return Err(RedisError::CrossSlot.reply()),
                Some(_) => {}
                None => multi.slots.push((backend, slot)),
            }
        }
    }
    match multi.backend {
        Some(first) if first != backend => {
            // Split over backends only when allowed, and never after a
            // WATCH (its connection is the first backend's).
            if !policy.split_transactions || watching {
                return Err(RedisError::CrossSlot.reply());
            }
            multi.spans = true;
        }
        Some(_) => {}
        None => multi.backend = Some(backend),
    }
    Ok(())
}

/// EXEC: EXECABORT after a queuing error, else the transaction on its
/// backend (keys a migration may hold elsewhere settled first); the slot is
/// a barrier, so later commands wait for it.
pub(in crate::client) fn exec(
    topo: &Arc<Topology>,
    state: &mut State,
    multi: Multi,
    now: Instant,
) -> Slot {
    // EXEC ends a WATCH whatever happens.
    let watching = state.watching.take();
    if multi.aborted {
        return Slot::ready(state.proto, RedisError::ExecAbort.reply());
    }
    let first = multi.backend.unwrap_or(0);
    let (batches, places) = transactions(&multi.commands, first);
    let (origin, db) = (state.origin(), state.db);
    let (tx, rx) = oneshot::channel();
    let run = Run {
        topo: topo.clone(),
        origin,
        db,
        first,
        keys: multi.keys,
        deleted: multi.deleted,
        watching,
    };
    tokio::spawn(async move {
        let _ = tx.send(run.go(batches, places).await);
    });
    let id = topo.backends[first].id.clone();
    let mut slot = Slot::waiting(topo, state.proto, Pending::One(rx), id, now);
    slot.barrier = true;
    slot
}

/// One transaction per backend, in the order of their first command, as
/// (backend, MULTI … EXEC payload, command count); and for each command,
/// its backend's place in that order.
fn transactions(
    commands: &[(Option<usize>, Bytes)],
    first: usize,
) -> (Vec<(usize, Bytes, usize)>, Vec<usize>) {
    let mut order: Vec<usize> = vec![first];
    let mut batches: Vec<(BytesMut, usize)> = vec![(BytesMut::new(), 0)];
    let mut places = Vec::with_capacity(commands.len());
    for (backend, raw) in commands {
        let backend = backend.unwrap_or(first);
        let place = match order.iter().position(|&b| b == backend) {
            Some(place) => place,
            None => {
                order.push(backend);
                batches.push((BytesMut::new(), 0));
                order.len() - 1
            }
        };
        batches[place].0.extend_from_slice(raw);
        batches[place].1 += 1;
        places.push(place);
    }
    let batches = order
        .iter()
        .zip(batches)
        .map(|(&backend, (commands, count))| {
            let mut payload = BytesMut::with_capacity(commands.len() + 32);
            payload.extend_from_slice(b"*1\r\n$5\r\nMULTI\r\n");
            payload.extend_from_slice(&commands);
            payload.extend_from_slice(b"*1\r\n$4\r\nEXEC\r\n");
            (backend, payload.freeze(), count + 2)
        })
        .collect();
    (batches, places)
}

/// An EXEC under way, off the client's task.
struct Run {
    topo: Arc<Topology>,
    origin: Origin,
    db: u32,
    first: usize,
    keys: Vec<Bytes>,
    deleted: Vec<Bytes>,
    /// The WATCH's leased connection, kept until the transactions are done.
    watching: Option<Watching>,
}

impl Run {
    /// Settles the keys a migration may hold elsewhere, sends each
    /// transaction and gathers the EXEC replies (merged in command order
    /// when there are several).
    async fn go(self, batches: Vec<(usize, Bytes, usize)>, places: Vec<usize>) -> BackendResult {
        let Run {
            topo,
            origin,
            db,
            first,
            keys,
            deleted,
            watching,
        } = self;
        settle_moving(&topo, origin, db, &keys, &deleted).await?;
        let receivers: Vec<_> = batches
            .into_iter()
            .map(|(index, payload, count)| {
                let backend = &topo.backends[index];
                let rx = match &watching {
                    Some(w) => {
                        backend.submit(Job::batch(origin, payload, count, db), Some(&w.lease))
                    }
                    None => backend.submit(Job::batch(origin, payload, count, db), None),
                };
                (backend, rx)
            })
            .collect();
        let mut execs = Vec::with_capacity(receivers.len());
        for (backend, rx) in receivers {
            let exec = match rx.await {
                Ok(Ok(mut replies)) => replies.pop().ok_or_else(|| lost(backend)),
                Ok(Err(error)) => Err(error),
                Err(_) => Err(lost(backend)),
            };
            execs.push(exec);
        }
        drop(watching);
        if execs.len() == 1 {
            execs
                .pop()
                .unwrap_or_else(|| Err(lost(&topo.backends[first])))
        } else {
            merge_execs(execs, &places)
        }
    }
}

/// WATCH outside a transaction: its keys must live on one backend (the
/// one of an earlier WATCH too); the command goes on a connection leased to
/// this client.
pub(in crate::client) fn watch(
    topo: &Topology,
    state: &mut State,
    request: &Request,
    policy: &Policy<'_>,
    now: Instant,
) -> Slot {
    let proto = state.proto;
    let filter = policy.filter();
    let mut backend = state.watching.as_ref().map(|w| w.backend);
    for key in request.args().iter().skip(1) {
        if !filter.allows(key) {
            return Slot::ready(proto, RedisError::NoPermKey.reply());
        }
        let owner = topo.route(key);
        match backend {
            Some(b) if b != owner => return Slot::ready(proto, RedisError::CrossSlot.reply()),
            _ => backend = Some(owner),
        }
    }
    let index = backend.unwrap_or(0);
    let target = &topo.backends[index];
    if state.watching.is_none() {
        if let Some(refusal) = target.cluster_refusal("a transaction (MULTI, WATCH)") {
            return Slot::ready(proto, Reply::error(refusal));
        }
        let share = state.share(topo);
        let share = share.as_ref().map(|(u, n)| (u, *n));
        let lease = match target.lease(share, LeaseFor::Commands(state.proto)) {
            Ok(lease) => lease,
            Err(refused) => {
                let message = refused.message(&target.id, state.user.as_ref(), "WATCH");
                return Slot::ready(proto, Reply::error(message));
            }
        };
        state.watching = Some(Watching {
            backend: index,
            lease,
        });
    }
    let Some(watching) = state.watching.as_ref() else {
        return Slot::ready(proto, RedisError::Routing.reply());
    };
    let payload = request.payload();
    let rx = target.submit(
        Job::one(state.origin(), payload, state.db, false),
        Some(&watching.lease),
    );
    Slot::waiting(topo, proto, Pending::One(rx), target.id.clone(), now)
}

/// EXEC's reply from one EXEC per backend: each command's reply from its
/// backend's array, in the order the client queued them; the first error
/// (or null, a WATCH abort) stands for the whole.
fn merge_execs(execs: Vec<BackendResult>, places: &[usize]) -> BackendResult {
    if execs.len() == 1 {
        // One backend: its EXEC reply is the client's, byte for byte.
        return execs.into_iter().next().unwrap_or(Ok(Reply::Null));
    }
    let mut arrays = Vec::with_capacity(execs.len());
    for exec in execs {
        let exec = exec?;
        // Each command's reply as its backend sent it, in the client's
        // protocol; anything but an array (a null: WATCH aborted; an
        // error) stands for the whole.
        let items = exec
            .raw_bytes()
            .and_then(crate::protocol::backend_reply::split_array);
        let Some(items) = items else {
            return Ok(exec);
        };
        let resp3 = matches!(exec, Reply::Raw3(_));
        let items: Vec<Reply> = items
            .into_iter()
            .map(|item| {
                if resp3 {
                    Reply::Raw3(item)
                } else {
                    Reply::Raw(item)
                }
            })
            .collect();
        arrays.push(items.into_iter());
    }
    let mut out = Vec::with_capacity(places.len());
    for &place in places {
        out.push(arrays[place].next().unwrap_or(Reply::Null));
    }
    Ok(Reply::Array(out))
}

fn lost(backend: &crate::backend::Backend) -> BackendError {
    BackendError::ConnectionLost {
        backend: backend.id.clone(),
        reason: "proxy is shutting down".into(),
    }
}
