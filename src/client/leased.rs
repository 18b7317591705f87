//! Blocking commands (BLPOP, BZPOPMIN, BLMOVE, XREAD BLOCK, ...): each runs
//! on a connection leased to its client for that command
//! (`Backend::lease_for_keys`: on a cluster backend, to the master of the
//! keys' slot; at most `[pool] max_held_connections` per backend or
//! node), never on the shared
//! pipelined connections, which a blocked command would stall for every
//! other client. The slot is a barrier: the client's later requests run
//! after it, as they would on Redis.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::backend::{Backend, BackendError, BackendResult, Job, Lease, Origin};
use crate::client::ctx::Ctx;
use crate::client::migrate::settle_moving;
use crate::client::slot::{Pending, Slot};
use crate::clients::ClientCard;
use crate::protocol::command::block_time;
use crate::protocol::keys::request_key_positions;
use crate::protocol::Reply;
use crate::shared::Topology;

/// Runs blocking `request` on a connection of its own to backend `index`;
/// `moving` are its keys a migration may still hold elsewhere, settled
/// first.
pub(in crate::client) fn blocking(
    cx: &mut Ctx<'_>,
    index: usize,
    moving: Vec<Bytes>,
    blocked: &Arc<std::sync::atomic::AtomicUsize>,
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
    let backend = &topo.backends[index];
    let share = cx.state.share(topo);
    let share = share.as_ref().map(|(u, n)| (u, *n));
    let keys: Vec<&[u8]> = request_key_positions(spec, request)
        .into_iter()
        .filter_map(|position| request.arg(position))
        .collect();
    let (on, lease) = match backend.lease_for_keys(&keys, cx.state.db, share, cx.state.proto) {
        Ok(leased) => leased,
        Err(unleased) => {
            let message =
                unleased.message(&backend.id, cx.state.user.as_ref(), "a blocking command");
            return Slot::ready(cx.state.proto, Reply::error(message));
        }
    };
    let blocks_for = block_time(spec, request);
    let (tx, out) = oneshot::channel();
    let run = BlockingRun {
        topo: topo.clone(),
        routed: backend.clone(),
        backend: on,
        lease,
        origin: cx.state.origin(),
        db: cx.state.db,
        blocks_for,
        blocked: blocked.clone(),
        card: cx.state.card.clone(),
    };
    tokio::spawn(run.go(request.payload(), moving, tx));
    let mut slot = Slot::waiting(
        topo,
        cx.state.proto,
        Pending::One(out),
        backend.id.clone(),
        now,
    );
    // The client waits as long as the command may block, and a request
    // timeout on top.
    if let Some((deadline, ids)) = slot.deadline.take() {
        let until = deadline.checked_add(blocks_for).unwrap_or(deadline);
        slot.deadline = Some((until, ids));
    }
    slot.barrier = true;
    slot.blocking = true;
    slot
}

/// A blocking command on its leased connection, off the client's task.
struct BlockingRun {
    topo: Arc<Topology>,
    /// The configured backend of the command's keys, and the one it runs
    /// on (for a cluster, the master of their slot).
    routed: Backend,
    backend: Backend,
    lease: Lease,
    origin: Origin,
    db: u32,
    blocks_for: Duration,
    blocked: Arc<std::sync::atomic::AtomicUsize>,
    card: Arc<ClientCard>,
}

impl BlockingRun {
    /// Settles the keys still on an old server, then sends the command and
    /// answers `tx` with its reply, unless the client is gone first.
    async fn go(self, payload: Bytes, moving: Vec<Bytes>, mut tx: oneshot::Sender<BackendResult>) {
        let BlockingRun {
            topo,
            routed,
            backend: leased,
            lease,
            origin,
            db,
            blocks_for,
            blocked,
            card,
        } = self;
        if let Err(error) = settle_moving(&topo, origin, db, &moving, &[]).await {
            let _ = tx.send(Err(error));
            return;
        }
        let id = leased.id.clone();
        let (mut rx, written) =
            leased.submit(Job::blocking(origin, payload, db, blocks_for), Some(&lease));
        let on = (leased.clone(), lease.server_id());
        // The lease lasts until the reply comes, or the client is gone (the
        // connection then closes, which unblocks the server).
        let _lease = lease;
        // Counted in INFO's blocked_clients from when the command is
        // written to the server (so clients count in the order the server
        // blocks them) until it answers or the client is gone: the count
        // goes down when this task ends, however.
        let mut _blocked = None;
        let reply = tokio::select! {
            sent = written => {
                _blocked = sent.ok().map(|()| Blocked::count(&blocked, card, on));
                tokio::select! {
                    reply = rx => reply,
                    _ = tx.closed() => return,
                }
            }
            reply = &mut rx => reply,
            _ = tx.closed() => return,
        };
        if let Ok(Ok(reply)) = &reply {
            routed.heard(reply);
        }
        let _ = tx.send(reply.unwrap_or_else(|_| Err(lost(&id))));
    }
}

/// One client counted in INFO's `blocked_clients`, and shown blocked to
/// CLIENT LIST and CLIENT UNBLOCK, while it lives.
struct Blocked {
    counter: Arc<std::sync::atomic::AtomicUsize>,
    card: Arc<crate::clients::ClientCard>,
}

impl Blocked {
    fn count(
        counter: &Arc<std::sync::atomic::AtomicUsize>,
        card: Arc<crate::clients::ClientCard>,
        on: crate::clients::BlockedOn,
    ) -> Blocked {
        counter.fetch_add(1, Ordering::Relaxed);
        card.set_blocked_on(Some(on));
        Blocked {
            counter: counter.clone(),
            card,
        }
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        self.card.set_blocked_on(None);
        self.counter.fetch_sub(1, Ordering::Relaxed);
    }
}

fn lost(backend: &Arc<str>) -> BackendError {
    BackendError::ConnectionLost {
        backend: backend.clone(),
        reason: "proxy is shutting down".into(),
    }
}
