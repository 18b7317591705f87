//! The batcher: a client's commands for one backend, gathered within one
//! pass of its loop into one job (see [`Batcher`]).

use std::collections::VecDeque;
use std::task::Context;

use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;

use crate::backend::{BackendResult, BatchResult, Job, Origin};
use crate::client::receive::{poll_receiver, result_reply};
use crate::client::State;
use crate::protocol::RedisError;
use crate::protocol::Reply;
use crate::shared::Topology;

/// Smallest scratch buffer a batch of several commands is gathered in.
pub(in crate::client) const PAYLOAD_MIN: usize = 4096;

/// Commands one batch towards a backend holds at most (see [`Batcher`]),
/// and the reply bytes it is expected to bring back at most, judged by the
/// client's average reply, which brings a batch of large GETs down to one.
pub(in crate::client) const BATCH_MAX: usize = 16;

pub(in crate::client) const BATCH_REPLY_BYTES: u64 = 64 * 1024;

/// The most a batch holds before the client's first reply has come.
pub(in crate::client) const FIRST_BATCH: usize = 4;

/// How many commands a batch may hold for a client whose replies average
/// `reply_bytes`.
pub(in crate::client) fn batch_max(reply_bytes: u64) -> usize {
    if reply_bytes == 0 {
        // No reply yet: they may be large.
        return FIRST_BATCH;
    }
    let fit = BATCH_REPLY_BYTES / reply_bytes;
    (fit as usize).clamp(1, BATCH_MAX)
}

/// Gathers the commands a client pipelines to one backend within one pass
/// of its loop into one job, so a backend connection queues, and answers,
/// one job per client per pass instead of one per command.
///
/// Order is kept: every command bound elsewhere (split over backends, sent
/// to all, or needing a WAIT) first flushes what is gathered, and a batch
/// holds one database's commands only.
#[derive(Default)]
pub(in crate::client) struct Batcher {
    /// Per backend with commands gathered in this pass.
    pub(in crate::client) open: Vec<OpenBatch>,
    /// Per backend (by index): the buffer an open batch's commands are copied
    /// into. A flush splits the payload off; once the backend has written
    /// it, the next batch reuses the same memory instead of allocating.
    pub(in crate::client) scratch: Vec<BytesMut>,
    /// Sent batches whose replies are not all taken yet, oldest first.
    pub(in crate::client) sent: VecDeque<Batch>,
    pub(in crate::client) next_seq: u64,
}

pub(in crate::client) struct OpenBatch {
    pub(in crate::client) backend: usize,
    pub(in crate::client) seq: u64,
    pub(in crate::client) db: u32,
    /// The first command; copied into the backend's scratch buffer when a
    /// second one comes.
    pub(in crate::client) first: Bytes,
    pub(in crate::client) count: usize,
    /// Every command in it only reads (see `crate::backend::Job::read`).
    pub(in crate::client) read: bool,
}

pub(in crate::client) struct Batch {
    pub(in crate::client) seq: u64,
    pub(in crate::client) replies: BatchReplies,
    /// Slots not yet answered from it.
    pub(in crate::client) left: usize,
}

pub(in crate::client) enum BatchReplies {
    One(oneshot::Receiver<BackendResult>),
    Many(oneshot::Receiver<BatchResult>),
    /// A single command's answer, not yet taken.
    DoneOne(Option<BackendResult>),
    Done(BatchResult),
}

impl Batcher {
    /// Gathers a command (never one followed by WAIT; `read`: it only
    /// reads) for the backend at `backend` and returns where its reply will
    /// be: the batch's number and the reply's index in it (see
    /// [`Batcher::poll`]).
    pub(in crate::client) fn add(
        &mut self,
        topo: &Topology,
        state: &State,
        backend: usize,
        raw: &Bytes,
        read: bool,
    ) -> (u64, usize) {
        // A batch holds one database's commands, and no more than
        // `batch_max` of them: a backend connection shares itself between
        // clients one job at a time, so a pipeline of hundreds of large GETs
        // must not be one job that everyone else waits behind.
        let most = match topo.backends.get(backend) {
            Some(b) if !b.batches() => 1,
            _ => batch_max(state.reply_bytes),
        };
        if self
            .open
            .iter()
            .any(|open| open.db != state.db || (open.backend == backend && open.count >= most))
        {
            self.flush(topo, state.origin());
        }
        match self.open.iter_mut().find(|open| open.backend == backend) {
            Some(open) => {
                if self.scratch.len() <= backend {
                    self.scratch.resize_with(backend + 1, BytesMut::new);
                }
                if let Some(payload) = self.scratch.get_mut(backend) {
                    if open.count == 1 {
                        payload.reserve((open.first.len() + raw.len()).max(PAYLOAD_MIN));
                        payload.extend_from_slice(&open.first);
                    }
                    payload.extend_from_slice(raw);
                }
                open.count += 1;
                open.read &= read;
                (open.seq, open.count - 1)
            }
            None => {
                let seq = self.next_seq;
                self.next_seq += 1;
                self.open.push(OpenBatch {
                    backend,
                    seq,
                    db: state.db,
                    first: raw.clone(),
                    count: 1,
                    read,
                });
                (seq, 0)
            }
        }
    }

    /// Sends everything gathered.
    pub(in crate::client) fn flush(&mut self, topo: &Topology, origin: Origin) {
        for open in self.open.drain(..) {
            let Some(backend) = topo.backends.get(open.backend) else {
                continue;
            };
            let replies = if open.count == 1 {
                let (job, rx) = Job::one(origin, open.first, open.db, false);
                BatchReplies::One(backend.submit((job.reading(open.read), rx), None))
            } else {
                let payload = self
                    .scratch
                    .get_mut(open.backend)
                    .map(|scratch| scratch.split().freeze())
                    .unwrap_or_default();
                let (job, rx) = Job::batch(origin, payload, open.count, open.db);
                BatchReplies::Many(backend.submit((job.reading(open.read), rx), None))
            };
            self.sent.push_back(Batch {
                seq: open.seq,
                replies,
                left: open.count,
            });
        }
    }

    /// Reply `index` of batch `seq`, if it has come.
    pub(in crate::client) fn poll(
        &mut self,
        seq: u64,
        index: usize,
        cx: Option<&mut Context<'_>>,
    ) -> Option<Reply> {
        let Some(batch) = self.sent.iter_mut().find(|b| b.seq == seq) else {
            return Some(reply_dropped());
        };
        match &mut batch.replies {
            BatchReplies::One(rx) => {
                batch.replies = BatchReplies::DoneOne(Some(poll_receiver(rx, cx)?));
            }
            BatchReplies::Many(rx) => batch.replies = BatchReplies::Done(poll_receiver(rx, cx)?),
            BatchReplies::DoneOne(_) | BatchReplies::Done(_) => {}
        }
        let reply = match &mut batch.replies {
            BatchReplies::DoneOne(result) => result.take().map_or_else(reply_dropped, result_reply),
            BatchReplies::Done(Ok(replies)) => replies
                .get_mut(index)
                .map_or_else(reply_dropped, |r| std::mem::replace(r, Reply::Null)),
            BatchReplies::Done(Err(e)) => e.to_reply(),
            BatchReplies::One(_) | BatchReplies::Many(_) => return None,
        };
        batch.left = batch.left.saturating_sub(1);
        Some(reply)
    }

    /// A slot waiting on batch `seq` was answered otherwise (it timed out).
    pub(in crate::client) fn abandon(&mut self, seq: u64) {
        if let Some(batch) = self.sent.iter_mut().find(|b| b.seq == seq) {
            batch.left = batch.left.saturating_sub(1);
        }
    }

    /// Gives the scratch buffers back (the client is idle).
    pub(in crate::client) fn release(&mut self) {
        if self.open.is_empty() && self.sent.is_empty() {
            self.scratch = Vec::new();
        }
    }

    /// Forgets the oldest batches once every reply in them is taken.
    pub(in crate::client) fn trim(&mut self) {
        while self.sent.front().is_some_and(|b| b.left == 0) {
            self.sent.pop_front();
        }
    }
}

pub(in crate::client) fn reply_dropped() -> Reply {
    RedisError::ReplyDropped.reply()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendError;

    fn sent(batcher: &mut Batcher, seq: u64, replies: BatchReplies, left: usize) {
        batcher.sent.push_back(Batch { seq, replies, left });
    }

    #[test]
    fn a_batch_is_fewer_commands_the_larger_a_clients_replies() {
        assert_eq!(batch_max(0), FIRST_BATCH);
        assert_eq!(batch_max(100), BATCH_MAX);
        assert_eq!(batch_max(16 * 1024), 4);
        assert_eq!(batch_max(1 << 20), 1);
    }

    #[test]
    fn each_slot_takes_its_own_reply_of_the_batch_and_the_batch_is_then_forgotten() {
        let mut batcher = Batcher::default();
        let (tx, rx) = oneshot::channel();
        sent(&mut batcher, 0, BatchReplies::Many(rx), 2);
        assert_eq!(batcher.poll(0, 1, None), None);
        tx.send(Ok(vec![Reply::Int(1), Reply::Int(2)])).unwrap();
        assert_eq!(batcher.poll(0, 1, None), Some(Reply::Int(2)));
        batcher.trim();
        assert_eq!(batcher.sent.len(), 1, "one reply is still owed");
        assert_eq!(batcher.poll(0, 0, None), Some(Reply::Int(1)));
        batcher.trim();
        assert!(batcher.sent.is_empty());
        // A batch no longer there answers as a dropped reply.
        assert_eq!(batcher.poll(0, 0, None), Some(reply_dropped()));
    }

    #[test]
    fn batches_answered_out_of_order_are_all_forgotten_once_taken() {
        // Slots take their replies in request order, which interleaves
        // batches to different backends: batch 0 (two commands to one
        // backend) around batch 1 (one to another), then batch 2, whose
        // slot times out. Nothing stays behind in `sent`, however long the
        // connection, once each slot is answered or given up.
        let mut batcher = Batcher::default();
        for round in 0..1000u64 {
            let seq = round * 3;
            let done = |replies: Vec<Reply>| BatchReplies::Done(Ok(replies));
            sent(
                &mut batcher,
                seq,
                done(vec![Reply::Int(0), Reply::Int(2)]),
                2,
            );
            sent(&mut batcher, seq + 1, done(vec![Reply::Int(1)]), 1);
            sent(&mut batcher, seq + 2, done(vec![Reply::Int(3)]), 1);
            assert_eq!(batcher.poll(seq, 0, None), Some(Reply::Int(0)));
            batcher.trim();
            assert_eq!(batcher.poll(seq + 1, 0, None), Some(Reply::Int(1)));
            batcher.trim();
            assert_eq!(batcher.sent.len(), 3, "batch {seq} still owes a reply");
            assert_eq!(batcher.poll(seq, 1, None), Some(Reply::Int(2)));
            batcher.trim();
            assert_eq!(batcher.sent.len(), 1);
            batcher.abandon(seq + 2);
            batcher.trim();
            assert!(batcher.sent.is_empty(), "round {round}");
        }
    }

    #[test]
    fn a_failed_batch_gives_every_slot_its_error() {
        let mut batcher = Batcher::default();
        let (tx, rx) = oneshot::channel();
        sent(&mut batcher, 3, BatchReplies::Many(rx), 2);
        let error = BackendError::ConnectionLost {
            backend: "a".into(),
            reason: "closed".into(),
        };
        tx.send(Err(error.clone())).unwrap();
        assert_eq!(batcher.poll(3, 0, None), Some(error.to_reply()));
        assert_eq!(batcher.poll(3, 1, None), Some(error.to_reply()));
        // A single command's batch, and a slot that timed out instead.
        let (tx, rx) = oneshot::channel();
        sent(&mut batcher, 4, BatchReplies::One(rx), 1);
        drop(tx);
        assert!(batcher.poll(4, 0, None).is_some_and(|r| r.is_error()));
        sent(
            &mut batcher,
            5,
            BatchReplies::Done(Ok(vec![Reply::Null])),
            1,
        );
        batcher.abandon(5);
        batcher.trim();
        assert!(batcher.sent.is_empty());
    }
}
