//! Blocking commands (BLPOP, BZPOPMIN, BLMOVE, XREAD BLOCK, ...): each runs
//! on a connection leased to its client for that command
//! (`Backend::lease_for_keys`: on a cluster backend, to the master of the
//! keys' slot; at most `[pool] max_held_connections` per backend or
//! node), never on the shared
//! pipelined connections, which a blocked command would stall for every
//! other client. The slot is a barrier: the client's later requests run
//! after it, as they would on Redis. A server that refuses it without
//! running it (a cluster node that does not serve its slot, a master
//! demoted while it blocked) has it sent again where it says
//! (`super::resend`). Once answered, its connection is given back for the
//! next lease (`Backend::give_back`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::backend::{
    Backend, BackendError, BackendResult, Job, Lease, LeaseFor, Origin, Unleased, LEFT_BEHIND,
};
use crate::client::ctx::Ctx;
use crate::client::migrate::settle_moving;
use crate::client::resend::{Elsewhere, Go, Resend, LEFT_CHECK};
use crate::client::slot::{Pending, Slot};
use crate::clients::{Aim, ClientCard};
use crate::cluster::TRY_AGAIN_AFTER;
use crate::protocol::command::block_time;
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
    // A server that refuses the command (a cluster's redirection, a
    // master demoted under it) ran nothing: it goes again where it says.
    let resend = Resend::of(
        spec,
        request,
        cx.state.share(topo),
        cx.state.proto,
        backend.cluster().is_some(),
    );
    let leased = match lease(backend, cx.state.db, &resend, &Go::Master) {
        Ok(leased) => leased,
        Err(message) => return Slot::ready(cx.state.proto, Reply::error(message)),
    };
    let blocks_for = block_time(spec, request);
    let (tx, out) = oneshot::channel();
    let run = BlockingRun {
        started: Instant::now(),
        topo: topo.clone(),
        routed: backend.clone(),
        origin: cx.state.origin(),
        db: cx.state.db,
        blocks_for,
        blocked: blocked.clone(),
        card: cx.state.card.clone(),
        resend,
    };
    // Sent now, from the client's task, where no key needs settling
    // first: clients' blocking commands reach the server in the order
    // they came, and before a command another client sends after them.
    let payload = request.payload();
    let first = moving
        .is_empty()
        .then(|| run.submit(&leased, &payload, blocks_for));
    tokio::spawn(run.go(leased, payload, moving, first, tx));
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
    /// The configured backend of the command's keys (the command runs on
    /// it, or for a cluster on the master of their slot).
    routed: Backend,
    origin: Origin,
    db: u32,
    /// When it was first sent (or settled), and how long it may block
    /// from then: a resend blocks for what is left.
    started: Instant,
    blocks_for: Duration,
    blocked: Arc<std::sync::atomic::AtomicUsize>,
    card: Arc<ClientCard>,
    resend: Resend,
}

/// A connection of the command's own, the backend it is on, whether a
/// CLIENT UNBLOCK is aimed at the command on it, and whether it is where
/// an `-ASK` sent it (not where the slot map names).
struct Leased {
    on: Backend,
    lease: Lease,
    aim: Arc<Aim>,
    asked: bool,
}

impl BlockingRun {
    /// Settles the keys still on an old server, then sends the command (to
    /// where a cluster's node redirects it, if one does) and answers `tx`
    /// with its reply, unless the client is gone first.
    async fn go(
        mut self,
        mut leased: Leased,
        mut payload: Bytes,
        moving: Vec<Bytes>,
        first: Option<Sent>,
        mut tx: oneshot::Sender<BackendResult>,
    ) {
        let mut blocks_for = self.blocks_for;
        let mut sent = match first {
            Some(sent) => sent,
            None => {
                let settled = settle_moving(&self.topo, self.origin, self.db, &moving, &[]);
                if let Err(error) = settled.await {
                    let _ = tx.send(Err(error));
                    return;
                }
                self.submit(&leased, &payload, blocks_for)
            }
        };
        loop {
            let Some(reply) = self.reply(&leased, sent, &mut tx).await else {
                return;
            };
            if let Ok(reply) = &reply {
                self.routed.heard(reply);
            }
            let timeout = self.topo.config.pool.request_timeout();
            let Some(go) = self.resend.follow(&reply, Instant::now(), timeout) else {
                // Answered on a connection that had only this command
                // (no ASKING before it), and no CLIENT UNBLOCK aimed at it
                // (which could reach the next lease's): it serves the next.
                if leased.aim.end() && reply.is_ok() && !leased.asked {
                    leased.on.give_back(leased.lease);
                }
                let _ = tx.send(reply);
                return;
            };
            drop(leased);
            if go == Go::Later {
                debug!(backend = %self.routed.id, "a blocking command answered -TRYAGAIN, -READONLY or -LOADING goes again");
                tokio::select! {
                    _ = tokio::time::sleep(TRY_AGAIN_AFTER) => {}
                    _ = tx.closed() => return,
                }
            } else {
                info!(backend = %self.routed.id, ?go, "a blocking command given back unserved goes again");
            }
            leased = match lease(&self.routed, self.db, &self.resend, &go) {
                Ok(next) => next,
                Err(message) => {
                    let _ = tx.send(Ok(Reply::error(message)));
                    return;
                }
            };
            blocks_for = self.blocks_for.saturating_sub(self.started.elapsed());
            payload = self.resend.payload(blocks_for);
            sent = self.submit(&leased, &payload, blocks_for);
        }
    }

    /// Sends the command on `leased` (after ASKING where an `-ASK` sent it).
    fn submit(&self, leased: &Leased, payload: &Bytes, blocks_for: Duration) -> Sent {
        let Leased {
            on, lease, asked, ..
        } = leased;
        // ASKING's reply is awaited by no one, but its job must not look
        // abandoned (it would be skipped): its receiver lives until the
        // command's reply.
        let asked = asked.then(|| {
            let asking = Bytes::from_static(b"*1\r\n$6\r\nASKING\r\n");
            on.submit(Job::one(self.origin, asking, self.db, false), Some(lease))
        });
        let job = Job::blocking(self.origin, payload.clone(), self.db, blocks_for);
        let (reply, written) = on.submit(job, Some(lease));
        Sent {
            reply,
            written,
            _asked: asked,
        }
    }

    /// Waits for the reply of the command `sent` on `leased`; `None` once
    /// the client is gone.
    async fn reply(
        &self,
        leased: &Leased,
        sent: Sent,
        tx: &mut oneshot::Sender<BackendResult>,
    ) -> Option<BackendResult> {
        let Leased { on, lease, aim, .. } = leased;
        let Sent {
            reply: mut rx,
            written,
            _asked,
        } = sent;
        // Counted in INFO's blocked_clients from when the command is
        // written to the server (so clients count in the order the server
        // blocks them) until it answers or the client is gone: the count
        // goes down when this returns, however. The lease lasts as long
        // (the connection then closes, which unblocks the server).
        let mut _blocked = None;
        let reply = tokio::select! {
            sent = written => {
                let here = (on.clone(), lease.server_id(), aim.clone());
                _blocked = sent.ok().map(|()| Blocked::count(&self.blocked, self.card.clone(), here));
                tokio::select! {
                    reply = rx => reply,
                    _ = tx.closed() => return None,
                    () = self.left_behind(leased) => Ok(Err(BackendError::ConnectionLost {
                        backend: on.id.clone(),
                        reason: LEFT_BEHIND.into(),
                    })),
                }
            }
            reply = &mut rx => reply,
            _ = tx.closed() => return None,
        };
        Some(reply.unwrap_or_else(|_| Err(lost(&on.id))))
    }

    /// Resolves once a cluster's slot map has named another master than
    /// the node `leased` is on for the command's keys, for a request
    /// timeout ([`Elsewhere`]); never on another backend (a Sentinel
    /// backend's connection gives such a command up itself, see
    /// `backend::session::BlockedNow`) or after an `-ASK`.
    async fn left_behind(&self, leased: &Leased) {
        if self.routed.cluster().is_none() || leased.asked {
            return std::future::pending().await;
        }
        let timeout = self.topo.config.pool.request_timeout();
        let keys: Vec<&[u8]> = self.resend.keys.iter().map(|key| &key[..]).collect();
        let mut elsewhere = Elsewhere::default();
        loop {
            tokio::time::sleep(LEFT_CHECK).await;
            let serving = self.routed.serving(&keys, self.db);
            let moved = serving.is_some_and(|node| node.id != leased.on.id);
            if elsewhere.left_behind(moved, Instant::now(), timeout) {
                info!(node = %leased.on.id, "a blocking command left on a node the slot map no longer names goes again");
                return;
            }
        }
    }
}

/// A blocking command sent on its connection: where its reply comes, word
/// once it is written, and an ASKING's reply before it (awaited by no one).
struct Sent {
    reply: oneshot::Receiver<BackendResult>,
    written: oneshot::Receiver<()>,
    _asked: Option<oneshot::Receiver<BackendResult>>,
}

/// A connection of its own for the command where `go` says: the cluster
/// node an `-ASK` names, else the master of its keys now (a `-MOVED` has
/// corrected the slot map already), on `routed` (a cluster's node, or the
/// configured backend). Else the client's error.
fn lease(routed: &Backend, db: u32, resend: &Resend, go: &Go) -> Result<Leased, String> {
    let Resend {
        keys, share, proto, ..
    } = resend;
    let share = share.as_ref().map(|(user, n)| (user, *n));
    let asked = match go {
        Go::Ask(node) => routed.node_at(node),
        Go::Master | Go::Later => None,
    };
    let leased = match asked {
        Some(on) => on
            .lease(share, LeaseFor::Commands(*proto))
            .map(|lease| (on, lease))
            .map_err(Unleased::Refused),
        None => {
            let keys: Vec<&[u8]> = keys.iter().map(|key| &key[..]).collect();
            routed.lease_for_keys(&keys, db, share, *proto)
        }
    };
    let user = share.map(|(user, _)| user);
    leased
        .map(|(on, lease)| Leased {
            on,
            lease,
            aim: Arc::default(),
            asked: matches!(go, Go::Ask(_)),
        })
        .map_err(|why| why.message(&routed.id, user, "a blocking command"))
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
