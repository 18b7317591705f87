//! MULTI / EXEC / DISCARD as Redis runs them, over one backend: commands
//! after MULTI are checked and answered `+QUEUED` here (an unknown command,
//! a wrong arity, a refused key or a key on another backend than the first
//! one answers its error, and EXEC then answers EXECABORT); EXEC sends
//! `MULTI`, the queued commands and `EXEC` as one batch, written back to
//! back on one backend connection, so the backend runs them as one
//! transaction, and the client gets EXEC's reply. WATCH leases a connection
//! of the watched keys' backend to the client (`Backend::lease_for_keys`;
//! on a cluster backend, of the master of their slot): the WATCH and later
//! the transaction go on it, so the server sees both on one connection and
//! aborts EXEC when a watched key changed; EXEC, DISCARD, UNWATCH and RESET
//! let it go. Once the server answered the EXEC on it (which unwatched
//! every key there), or an UNWATCH sent for a DISCARD or UNWATCH, the
//! connection serves the next lease (`Backend::give_back`), so a client
//! saving under WATCH connects once, not once per transaction.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;

use crate::backend::{Backend, BackendError, BackendResult, BatchResult, Job, Lease, Origin};
use crate::client::migrate::{deletes, moving_keys, settle_moving, still_moving};
use crate::client::plan::{plan, Plan, Policy};
use crate::client::slot::{off_task, Pending, Slot};
use crate::client::State;
use crate::cluster::{after_asking, keys_touch, redirect, Redirect, Touches, TRY_AGAIN_AFTER};
use crate::protocol::command::writes;
use crate::protocol::RedisError;
use crate::protocol::{Cmd, Reply, Request, Route, Spec};
use crate::shared::Topology;

/// A transaction being queued.
#[derive(Debug, Default)]
pub(in crate::client) struct Multi {
    /// The queued commands.
    commands: Vec<Queued>,
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

/// A queued command, RESP-encoded, with the backend of its keys (`None`:
/// no key, PING say) and whether it writes (a transaction that writes is
/// followed by WAIT where the backend has `min_replicas_ack`).
#[derive(Debug)]
struct Queued {
    backend: Option<usize>,
    raw: Bytes,
    write: bool,
}

/// A WATCH in force: the backend of its keys, the connection it is on and
/// the backend that connection is of (for a cluster backend, the master of
/// the keys' slot, which is then `slot`).
#[derive(Debug)]
pub(in crate::client) struct Watching {
    backend: usize,
    on: Backend,
    lease: Lease,
    slot: Option<u16>,
    /// Set when a cluster node refused one of its WATCHes for a slot it
    /// does not serve (the map was behind): that WATCH watched nothing,
    /// so the EXEC aborts without being sent.
    refused: Arc<AtomicBool>,
}

impl Watching {
    /// Ends the WATCH without an EXEC (DISCARD, UNWATCH): an UNWATCH on
    /// its connection clears the server's watches, and once answered the
    /// connection serves the next lease; else it closes. The lease stops
    /// counting at once (another client may WATCH at once, as on Redis).
    pub(in crate::client) fn release(self, origin: Origin, db: u32) {
        let unwatch = Bytes::from_static(b"*1\r\n$7\r\nUNWATCH\r\n");
        let answer = self
            .on
            .submit(Job::one(origin, unwatch, db, false), Some(&self.lease));
        let clean = async move { matches!(answer.await, Ok(Ok(reply)) if !reply.is_error()) };
        self.on.give_back_when(self.lease, clean);
    }
}

impl Multi {
    /// A transaction after WATCH: its keys must be on the watched backend
    /// (in the watched slot, for a cluster).
    pub(in crate::client) fn after_watch(watching: Option<&Watching>) -> Multi {
        Multi {
            backend: watching.map(|w| w.backend),
            slots: watching
                .and_then(|w| Some((w.backend, w.slot?)))
                .into_iter()
                .collect(),
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
    multi.commands.push(Queued {
        backend,
        raw,
        write: writes(spec, request),
    });
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
    let run = Run {
        topo: topo.clone(),
        origin,
        db,
        first,
        keys: multi.keys,
        deleted: multi.deleted,
        watching,
    };
    let rx = off_task(run.go(batches, places));
    let id = topo.backends[first].id.clone();
    let mut slot = Slot::waiting(topo, state.proto, Pending::One(rx), id, now);
    slot.barrier = true;
    slot
}

/// One backend's transaction: MULTI, its commands and EXEC.
struct Batch {
    backend: usize,
    payload: Bytes,
    /// Commands, MULTI and EXEC included.
    count: usize,
    /// Any of its commands writes.
    write: bool,
}

/// One transaction per backend, in the order of their first command; and
/// for each command, its backend's place in that order.
fn transactions(commands: &[Queued], first: usize) -> (Vec<Batch>, Vec<usize>) {
    let mut order: Vec<usize> = vec![first];
    let mut batches: Vec<(BytesMut, usize, bool)> = vec![(BytesMut::new(), 0, false)];
    let mut places = Vec::with_capacity(commands.len());
    for command in commands {
        let backend = command.backend.unwrap_or(first);
        let place = match order.iter().position(|&b| b == backend) {
            Some(place) => place,
            None => {
                order.push(backend);
                batches.push((BytesMut::new(), 0, false));
                order.len() - 1
            }
        };
        let batch = &mut batches[place];
        batch.0.extend_from_slice(&command.raw);
        batch.1 += 1;
        batch.2 |= command.write;
        places.push(place);
    }
    let batches = order
        .iter()
        .zip(batches)
        .map(|(&backend, (commands, count, write))| {
            let mut payload = BytesMut::with_capacity(commands.len() + 32);
            payload.extend_from_slice(b"*1\r\n$5\r\nMULTI\r\n");
            payload.extend_from_slice(&commands);
            payload.extend_from_slice(b"*1\r\n$4\r\nEXEC\r\n");
            Batch {
                backend,
                payload: payload.freeze(),
                count: count + 2,
                write,
            }
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
    async fn go(self, batches: Vec<Batch>, places: Vec<usize>) -> BackendResult {
        let Run {
            topo,
            origin,
            db,
            first,
            keys,
            deleted,
            watching,
        } = self;
        if watching
            .as_ref()
            .is_some_and(|w| w.refused.load(Ordering::Acquire))
        {
            return Ok(aborted());
        }
        settle_moving(&topo, origin, db, &keys, &deleted).await?;
        // A transaction refused -TRYAGAIN goes again until a request
        // timeout after it was first sent.
        let deadline = Instant::now() + topo.config.pool.request_timeout();
        let send = |backend: &Backend, batch: &Batch| {
            let job = Job::transaction(origin, batch.payload.clone(), batch.count, db, batch.write);
            match &watching {
                Some(w) => w.on.submit(job, Some(&w.lease)),
                None => backend.submit(job, None),
            }
        };
        let receivers: Vec<_> = batches
            .into_iter()
            .map(|batch| {
                let backend = &topo.backends[batch.backend];
                let rx = send(backend, &batch);
                (backend, batch, rx)
            })
            .collect();
        let mut execs = Vec::with_capacity(receivers.len());
        let mut answered = true;
        for (backend, batch, rx) in receivers {
            let again = watching.is_none().then_some(&send);
            let (exec, heard) =
                exec_reply(backend, &batch, rx, again, (origin, db), deadline).await;
            answered &= heard;
            execs.push(exec);
        }
        // The server answered the EXEC on the WATCH's connection, which
        // unwatched every key and ended the MULTI there: it is as a new
        // one, and serves the next lease. Else it closes.
        if let Some(watching) = watching.filter(|_| answered) {
            watching.on.give_back(watching.lease);
        }
        if execs.len() == 1 {
            execs
                .pop()
                .unwrap_or_else(|| Err(lost(&topo.backends[first])))
        } else {
            merge_execs(execs, &places)
        }
    }
}

/// A transaction's EXEC reply from `backend`. One refused whole by a
/// cluster node for its slot, nothing ran (see [`refused_for_slot`]), goes
/// again through `again` where there is one: to the slot's master now (the
/// map was corrected, heard), after ASKING to the node importing the slot,
/// or, for keys split by the slot's migration (`-TRYAGAIN`), a moment
/// later, until `deadline`. After a WATCH, whose connection is that
/// node's, there is none, and the EXEC aborts, as it does when that
/// connection ended before the transaction was sent. With the reply,
/// whether the server answered the transaction's EXEC.
async fn exec_reply<F>(
    backend: &Backend,
    batch: &Batch,
    mut rx: oneshot::Receiver<BatchResult>,
    again: Option<&F>,
    (origin, db): (Origin, u32),
    deadline: Instant,
) -> (BackendResult, bool)
where
    F: Fn(&Backend, &Batch) -> oneshot::Receiver<BatchResult>,
{
    let mut tries = 1;
    loop {
        let mut replies = match rx.await {
            Ok(Ok(replies)) => replies,
            // The WATCH's connection ended before the transaction was sent
            // (a failover): the server that heard the WATCH can no longer
            // say whether a watched key changed, so the EXEC aborts, as
            // Redis aborts one whose watched key changed; nothing ran.
            Ok(Err(BackendError::LeaseEnded { .. })) => return (Ok(aborted()), false),
            Ok(Err(error)) => return (Err(error), false),
            Err(_) => return (Err(lost(backend)), false),
        };
        replies.iter().for_each(|reply| backend.heard(reply));
        let Some(redirect) = refused_for_slot(&replies) else {
            return (replies.pop().ok_or_else(|| lost(backend)), true);
        };
        let Some(send) = again else {
            // After a WATCH, on that node's connection: the slot moved on
            // from the node that heard the WATCH, which can no longer say
            // whether a watched key changed. Nothing ran; the EXEC aborts
            // as for a changed key, and the client's next WATCH goes
            // where the corrected map says.
            return (Ok(aborted()), true);
        };
        rx = match redirect {
            Redirect::TryAgain if Instant::now() + TRY_AGAIN_AFTER < deadline => {
                // Afresh: the slot's master, then its redirections.
                tries = 1;
                tokio::time::sleep(TRY_AGAIN_AFTER).await;
                send(backend, batch)
            }
            Redirect::Moved { .. } if tries < MAX_TRIES => {
                tries += 1;
                send(backend, batch)
            }
            Redirect::Ask { node, .. } if tries < MAX_TRIES => {
                tries += 1;
                match backend.node_at(&node) {
                    Some(importing) => importing.submit(asking(origin, db, batch), None),
                    None => return (Err(lost(backend)), false),
                }
            }
            _ => return (replies.pop().ok_or_else(|| lost(backend)), true),
        };
    }
}

/// WATCH outside a transaction: its keys must live on one backend (the
/// one of an earlier WATCH too); the command goes on a connection leased to
/// this client.
pub(in crate::client) fn watch(
    topo: &Arc<Topology>,
    state: &mut State,
    request: &Request,
    policy: &Policy<'_>,
    now: Instant,
) -> Slot {
    let proto = state.proto;
    let filter = policy.filter();
    let mut backend = state.watching.as_ref().map(|w| w.backend);
    let args = request.args();
    let keys: Vec<&[u8]> = args.iter().skip(1).map(|key| &key[..]).collect();
    for &key in &keys {
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
    // On a cluster the watched keys, and the transaction's after them, are
    // in one slot, whose master runs them all on the leased connection.
    let slot = match target.cluster().map(|_| keys_touch(keys.iter().copied())) {
        Some(Touches::CrossSlot) => return Slot::ready(proto, RedisError::CrossSlot.reply()),
        Some(Touches::Slot(slot)) => Some(slot),
        Some(Touches::NoKey) | None => None,
    };
    match state.watching.as_ref() {
        Some(watching) if watching.slot != slot => {
            return Slot::ready(proto, RedisError::CrossSlot.reply());
        }
        Some(_) => {}
        None => {
            let share = state.share(topo);
            let share = share.as_ref().map(|(u, n)| (u, *n));
            let (on, lease) = match target.lease_for_keys(&keys, state.db, share, state.proto) {
                Ok(leased) => leased,
                Err(unleased) => {
                    let message = unleased.message(&target.id, state.user.as_ref(), "WATCH");
                    return Slot::ready(proto, Reply::error(message));
                }
            };
            state.watching = Some(Watching {
                backend: index,
                on,
                lease,
                slot,
                refused: Arc::default(),
            });
        }
    }
    let Some(watching) = state.watching.as_ref() else {
        return Slot::ready(proto, RedisError::Routing.reply());
    };
    let job = Job::one(state.origin(), request.payload(), state.db, false);
    let (rx, settles) = send_watch(topo, watching, &keys, job);
    let rx = heeded(target, rx, watching.refused.clone());
    let mut slot = Slot::waiting(topo, proto, Pending::One(rx), target.id.clone(), now);
    // The client's later requests wait for it, as they would on Redis,
    // where the WATCH would have run before them; on a cluster, so that an
    // EXEC comes after a refusal is known.
    slot.barrier = settles || target.cluster().is_some();
    slot
}

/// Sends a WATCH's `job` on the lease of `watching`; true when its `keys`
/// a migration may still hold elsewhere are brought to their owner first:
/// moved there after the WATCH, they would abort the EXEC though no one
/// changed them.
fn send_watch(
    topo: &Arc<Topology>,
    watching: &Watching,
    keys: &[&[u8]],
    job: (Job, oneshot::Receiver<BackendResult>),
) -> (oneshot::Receiver<BackendResult>, bool) {
    let moving = topo
        .active_migration()
        .map(|migration| still_moving(migration, topo, keys.iter().copied()))
        .unwrap_or_default();
    let Some(queue) = watching.lease.later().filter(|_| !moving.is_empty()) else {
        return (watching.on.submit(job, Some(&watching.lease)), false);
    };
    let (tx, rx) = oneshot::channel();
    let (topo, on) = (topo.clone(), watching.on.clone());
    let (origin, db) = (job.0.origin, job.0.db);
    tokio::spawn(async move {
        if let Err(error) = settle_moving(&topo, origin, db, &moving, &[]).await {
            let _ = tx.send(Err(error));
            return;
        }
        let reply = on.submit_later(job, &queue).await;
        let _ = tx.send(reply.unwrap_or_else(|_| Err(lost(&on))));
    });
    (rx, true)
}

/// The reply `rx` will carry to a WATCH, once `backend` has heard it
/// (see [`Backend::heard`]: a cluster learns of a `-MOVED` on a leased
/// connection). A WATCH whose leased connection had ended (a failover)
/// is answered `+OK`, as Redis answers every WATCH: the earlier WATCHes
/// went with that connection, so the EXEC aborts anyway ([`Run::go`]).
/// So is one a cluster node refused for a slot it does not serve
/// (`-MOVED`, `-ASK`, `-TRYAGAIN`): it watched nothing, `refused` is set
/// and the EXEC aborts, as Redis aborts one whose watched keys moved
/// away; the client's next WATCH goes where the corrected map says.
fn heeded(
    backend: &Backend,
    rx: oneshot::Receiver<BackendResult>,
    refused: Arc<AtomicBool>,
) -> oneshot::Receiver<BackendResult> {
    let backend = backend.clone();
    let (tx, heeded) = oneshot::channel();
    tokio::spawn(async move {
        if let Ok(result) = rx.await {
            let result = match result {
                Ok(reply) => {
                    backend.heard(&reply);
                    if backend.cluster().is_some() && redirect(&reply).is_some() {
                        refused.store(true, Ordering::Release);
                        Ok(Reply::ok())
                    } else {
                        Ok(reply)
                    }
                }
                Err(BackendError::LeaseEnded { .. }) => Ok(Reply::ok()),
                Err(error) => Err(error),
            };
            let _ = tx.send(result);
        }
    });
    heeded
}

/// EXEC's reply to a transaction aborted by its WATCH: a null array
/// (RESP3's null for a RESP3 client).
fn aborted() -> Reply {
    Reply::Raw(Bytes::from_static(b"*-1\r\n"))
}

/// How many times a transaction goes to a cluster whose slot map was
/// behind (see [`refused_for_slot`]) before its client gets the refusal.
const MAX_TRIES: u32 = 3;

/// Where a cluster node that refused a transaction whole for its slot
/// sends it, if its replies (MULTI's, each command's, EXEC's) say so: a
/// command queued, or EXEC itself, answered `-MOVED` (the slot lives
/// elsewhere now), `-ASK` (its keys moved on with a slot being migrated)
/// or `-TRYAGAIN` (its keys split by that migration), and EXEC an error
/// (EXECABORT, or the redirection), so nothing of it ran.
fn refused_for_slot(replies: &[Reply]) -> Option<Redirect> {
    let exec = replies.last()?;
    if !exec.is_error() {
        return None;
    }
    replies.iter().find_map(redirect)
}

/// `batch` again after ASKING, for the node importing its slot: the
/// ASKING flag holds through MULTI until EXEC, so every queued command
/// runs there. EXEC's reply is still the last.
fn asking(origin: Origin, db: u32, batch: &Batch) -> (Job, oneshot::Receiver<BatchResult>) {
    let payload = after_asking(&batch.payload);
    Job::transaction(origin, payload, batch.count + 1, db, batch.write)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(line: &'static str) -> Reply {
        Reply::Raw(Bytes::from_static(line.as_bytes()))
    }

    /// A transaction goes again only when a node refused it whole for a
    /// slot it no longer serves (a queued command moved, or asked to the
    /// node importing the slot, and EXEC aborted), to where it says.
    #[test]
    fn only_a_transaction_refused_whole_for_its_slot_goes_again() {
        let moved = raw("-MOVED 3999 127.0.0.1:7002\r\n");
        let asked = raw("-ASK 3999 127.0.0.1:7003\r\n");
        let abort = raw("-EXECABORT Transaction discarded because of previous errors.\r\n");
        let ok = raw("+OK\r\n");
        let to = |node: &str| node.to_string();
        assert_eq!(
            refused_for_slot(&[ok.clone(), moved.clone(), abort.clone()]),
            Some(Redirect::Moved {
                slot: 3999,
                node: to("127.0.0.1:7002")
            })
        );
        assert_eq!(
            refused_for_slot(&[ok.clone(), asked.clone(), abort.clone()]),
            Some(Redirect::Ask {
                slot: 3999,
                node: to("127.0.0.1:7003")
            })
        );
        // It ran: the node served the slot.
        assert_eq!(
            refused_for_slot(&[ok.clone(), raw("+QUEUED\r\n"), raw("*1\r\n+OK\r\n")]),
            None
        );
        // Aborted for another reason (a wrong command).
        assert_eq!(
            refused_for_slot(&[ok.clone(), raw("-ERR wrong\r\n"), abort]),
            None
        );
        assert_eq!(refused_for_slot(&[]), None);
        // EXEC itself refused (its queued commands' keys checked together):
        // the transaction was discarded.
        let queued = raw("+QUEUED\r\n");
        assert_eq!(
            refused_for_slot(&[ok.clone(), queued.clone(), moved]),
            Some(Redirect::Moved {
                slot: 3999,
                node: to("127.0.0.1:7002")
            })
        );
        let split = raw("-TRYAGAIN Multiple keys request during rehashing of slot\r\n");
        assert_eq!(
            refused_for_slot(&[ok.clone(), queued.clone(), queued, split.clone()]),
            Some(Redirect::TryAgain)
        );
        assert_eq!(
            refused_for_slot(&[ok, split, raw("-EXECABORT Transaction discarded\r\n")]),
            Some(Redirect::TryAgain)
        );
    }
}
