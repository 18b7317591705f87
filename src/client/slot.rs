//! A request's place in the reply order ([`Slot`]) and where its reply will
//! come from: ready, one backend, a batch, or the merge of split replies.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::backend::BackendResult;
use crate::client::batcher::Batcher;
use crate::client::merge::{merge, MergeHow};
use crate::client::receive::{poll_receiver, result_reply};
use crate::protocol::command::TABLE;
use crate::protocol::{Proto, Reply, Request};
use crate::shared::Topology;

/// Runs `work` in a task of its own, for a request whose reply is the
/// receiver returned. Once the client's slot stops waiting for it (the
/// request timeout passed, or the client's task ended: CLIENT KILL, an
/// eviction for memory), `work` is dropped, and with it the receivers of what
/// it still waits for in a backend (held by a failover, behind a WAIT),
/// which then count as abandoned and are never sent: a write must not
/// land after what the client did next. (A client that merely closes
/// its connection is still answered what it sent, as Redis runs it.)
pub(in crate::client) fn off_task<F>(work: F) -> oneshot::Receiver<BackendResult>
where
    F: std::future::Future<Output = BackendResult> + Send + 'static,
{
    let (mut tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        tokio::select! {
            result = work => {
                let _ = tx.send(result);
            }
            () = tx.closed() => {}
        }
    });
    rx
}

/// Where a reply will come from.
pub(in crate::client) enum Pending {
    Ready(Reply),
    One(oneshot::Receiver<BackendResult>),
    /// Reply `index` of the batch numbered `seq` (see [`Batcher`]).
    Batched {
        seq: u64,
        index: usize,
    },
    Merge(Box<Merging>),
}

/// One request's place in the reply order.
pub(in crate::client) struct Slot {
    /// The protocol in force when the request ran: a reply queued before a
    /// HELLO is still encoded in the old protocol, as on Redis.
    pub(in crate::client) proto: Proto,
    pub(in crate::client) pending: Pending,
    /// Close the connection once this reply is written (QUIT, protocol error).
    pub(in crate::client) close_after: bool,
    /// Later requests wait until this one is answered (see `migrate.rs`).
    pub(in crate::client) barrier: bool,
    /// A blocking command (`leased.rs`): a client that closes while it
    /// waits is gone, as Redis treats it, not owed its reply.
    pub(in crate::client) blocking: bool,
    /// For a reply from backends: when the client stops waiting, and which
    /// backend(s) the error names then.
    pub(in crate::client) deadline: Option<(Instant, Arc<str>)>,
    /// For metrics and SLOWLOG: the command-table index (`TABLE.len()` for an
    /// unknown command), when the request was decoded, and the request.
    pub(in crate::client) command: usize,
    pub(in crate::client) started: Option<Instant>,
    pub(in crate::client) request: Kept,
    /// The named user that sent the request (`None`: the default user),
    /// whose SLOWLOG entry it would be.
    pub(in crate::client) user: Option<Bytes>,
    /// Bytes of `[limits] max_memory_bytes` the request is charged while
    /// it is served (a large request's; 0 for the rest).
    pub(in crate::client) charge: usize,
    /// Not written to the client (CLIENT REPLY OFF or SKIP).
    pub(in crate::client) silent: bool,
    /// A NOLOOP write: its reply arms the client's notes (see
    /// `tracking::own_writes`).
    pub(in crate::client) arms_noloop: bool,
}

/// What a request leaves in its slot for SLOWLOG; its arguments are taken
/// apart again only if it turns out slow.
pub(in crate::client) enum Kept {
    Nothing,
    Raw(Bytes),
    Args(Vec<Bytes>),
}

impl Kept {
    pub(in crate::client) fn new(request: Request) -> Kept {
        match request {
            Request::Multibulk { raw, .. } => Kept::Raw(raw),
            Request::Inline(args) => Kept::Args(args),
        }
    }

    pub(in crate::client) fn args(&self) -> Vec<Bytes> {
        match self {
            Kept::Nothing => Vec::new(),
            Kept::Raw(raw) => Request::from_raw(raw).map_or_else(Vec::new, |r| r.args()),
            Kept::Args(args) => args.clone(),
        }
    }
}

impl Slot {
    pub(in crate::client) fn ready(proto: Proto, reply: Reply) -> Slot {
        Slot {
            proto,
            pending: Pending::Ready(reply),
            close_after: false,
            barrier: false,
            blocking: false,
            deadline: None,
            command: TABLE.len(),
            started: None,
            request: Kept::Nothing,
            user: None,
            charge: 0,
            silent: false,
            arms_noloop: false,
        }
    }

    /// A slot waiting for backends, answered with a timeout error if they
    /// have not replied within the request timeout.
    pub(in crate::client) fn waiting(
        topo: &Topology,
        proto: Proto,
        pending: Pending,
        backends: Arc<str>,
        now: Instant,
    ) -> Slot {
        let deadline = now + topo.config.pool.request_timeout();
        let mut slot = Slot::ready(proto, Reply::Null);
        slot.pending = pending;
        slot.deadline = Some((deadline, backends));
        slot
    }

    pub(in crate::client) fn is_waiting(&self) -> bool {
        !matches!(self.pending, Pending::Ready(_))
    }

    /// Moves a finished result into `Ready`. With a `Context` it also
    /// registers for wake-up; without one it only checks.
    pub(in crate::client) fn poll_ready(
        &mut self,
        batcher: &mut Batcher,
        cx: Option<&mut Context<'_>>,
    ) -> bool {
        let reply = match &mut self.pending {
            Pending::Ready(_) => return true,
            Pending::Batched { seq, index } => match batcher.poll(*seq, *index, cx) {
                Some(reply) => reply,
                None => return false,
            },
            Pending::One(rx) => match poll_receiver(rx, cx) {
                Some(result) => result_reply(result),
                None => return false,
            },
            Pending::Merge(merging) => {
                if !merging.poll(cx) {
                    return false;
                }
                merging.finish()
            }
        };
        self.pending = Pending::Ready(reply);
        true
    }
}

/// A command split over several backends, waiting for its parts.
pub(in crate::client) struct Merging {
    pub(in crate::client) parts: Vec<(Option<oneshot::Receiver<BackendResult>>, Option<Reply>)>,
    pub(in crate::client) how: MergeHow,
}

impl Merging {
    pub(in crate::client) fn poll(&mut self, mut cx: Option<&mut Context<'_>>) -> bool {
        let mut done = true;
        for (rx, result) in &mut self.parts {
            if let Some(receiver) = rx {
                match poll_receiver(receiver, cx.as_deref_mut()) {
                    Some(r) => {
                        *result = Some(result_reply(r));
                        *rx = None;
                    }
                    None => done = false,
                }
            }
        }
        done
    }

    pub(in crate::client) fn finish(&mut self) -> Reply {
        let parts: Vec<Reply> = self
            .parts
            .iter_mut()
            .map(|(_, r)| r.take().unwrap_or(Reply::Null).parsed())
            .collect();
        merge(&self.how, parts)
    }
}

pub(in crate::client) fn poll_head(
    queue: &mut VecDeque<Slot>,
    batcher: &mut Batcher,
    cx: &mut Context<'_>,
) -> Poll<()> {
    match queue.front_mut() {
        Some(slot) => {
            if slot.poll_ready(batcher, Some(cx)) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
        None => Poll::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendError;

    fn waiting(pending: Pending) -> Slot {
        let mut slot = Slot::ready(Proto::Resp2, Reply::Null);
        slot.pending = pending;
        slot
    }

    fn reply_of(slot: &Slot) -> &Reply {
        match &slot.pending {
            Pending::Ready(reply) => reply,
            _ => panic!("not ready"),
        }
    }

    #[test]
    fn a_slot_is_ready_once_its_backend_answers() {
        let mut batcher = Batcher::default();
        let (tx, rx) = oneshot::channel();
        let mut slot = waiting(Pending::One(rx));
        assert!(slot.is_waiting());
        assert!(!slot.poll_ready(&mut batcher, None));
        tx.send(Ok(Reply::Int(7))).unwrap();
        assert!(slot.poll_ready(&mut batcher, None));
        assert!(!slot.is_waiting());
        assert_eq!(reply_of(&slot), &Reply::Int(7));
    }

    #[test]
    fn a_lost_answer_becomes_the_clients_error() {
        let mut batcher = Batcher::default();
        let (tx, rx) = oneshot::channel::<BackendResult>();
        let mut slot = waiting(Pending::One(rx));
        drop(tx);
        assert!(slot.poll_ready(&mut batcher, None));
        assert!(reply_of(&slot).is_error());
        let (tx, rx) = oneshot::channel();
        let mut slot = waiting(Pending::One(rx));
        let error = BackendError::Timeout {
            backend: Arc::from("a"),
            timeout_ms: 5,
        };
        tx.send(Err(error.clone())).unwrap();
        assert!(slot.poll_ready(&mut batcher, None));
        assert_eq!(reply_of(&slot), &error.to_reply());
    }

    #[test]
    fn a_split_command_waits_for_every_part_then_merges_them() {
        let mut batcher = Batcher::default();
        let (tx1, rx1) = oneshot::channel();
        let (tx2, rx2) = oneshot::channel();
        let merging = Merging {
            parts: vec![(Some(rx1), None), (Some(rx2), None)],
            how: MergeHow::Sum,
        };
        let mut slot = waiting(Pending::Merge(Box::new(merging)));
        tx2.send(Ok(Reply::Int(2))).unwrap();
        assert!(!slot.poll_ready(&mut batcher, None));
        tx1.send(Ok(Reply::Int(3))).unwrap();
        assert!(slot.poll_ready(&mut batcher, None));
        assert_eq!(reply_of(&slot), &Reply::Int(5));
    }
}
