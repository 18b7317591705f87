//! What a backend connection sends and what it hands back: jobs into
//! the lanes and from them into the outbox (with the SELECT and WAIT the
//! proxy adds), and each reply read to the request it answers, refused
//! commands kept to go again (see [`super::retry`]).

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;
use tracing::warn;

use super::connection::{Connection, WRITE_HIGH_WATER};
use super::job::{BackendError, Job, ReplyTo};
use super::lanes::Queued;
use super::retry::{self, Retry};
use super::session::{verdict, Owed, Session, SessionEnd, Unconfirmed, Verdict};
use crate::net::Outbox;
use crate::protocol::{encode_command, reply_extent, Proto, Reply};

impl Connection {
    /// Puts a client's job in its lane.
    pub(super) fn admit(&mut self, mut job: Job, held: bool) {
        if held {
            job.held = true;
            self.metrics
                .held_requests
                .increment(u64::from(job.replies()));
        }
        self.lanes.push(job.origin.client, job);
    }

    /// Moves jobs from the lanes to the outbox, round robin between clients,
    /// while the connection has room (`only_reads`: the jobs of reads only).
    /// Returns whether any was added.
    pub(super) fn fill(&mut self, s: &mut Session, only_reads: bool) -> bool {
        // While a WAIT is out (it blocks the connection up to its timeout
        // when replicas are missing), a write sent behind it would run on
        // the server only once it returns: maybe after its client had its
        // timeout error and went on, undoing what came next (the nemesis
        // saw a session go back so). Writes wait in the lanes meanwhile,
        // where one whose client gave up is dropped, never sent.
        let only_reads = only_reads || (self.min_replicas_ack > 0 && s.waiting());
        let mut now = None;
        let mut unwaited = false;
        while s.owed.len() < self.settings.max_pending && s.outbox.len() < WRITE_HIGH_WATER {
            let next = match only_reads {
                false => self.lanes.pop(),
                true => self.lanes.pop_if(|job| job.read),
            };
            let Some((_, job)) = next else {
                break;
            };
            let at = *now.get_or_insert_with(Instant::now);
            // A blocking command leaves no state on the server once
            // answered; anything else sent on a leased connection may.
            self.carried |= self.server_id.is_some() && job.blocks_for.is_none();
            unwaited |= self.queue(job, at, &mut s.db, &mut s.outbox, &mut s.owed);
        }
        if let (true, Some(at)) = (unwaited, now) {
            // One WAIT after the writes of this turn decides them all (WAIT
            // counts the replicas that have every write the connection made
            // before it). One per write would block the connection once per
            // write when replicas are missing, so that the last of a long
            // pipeline ran on the server long after its client had its
            // timeout error, and undid what the client did next.
            let wait_ms = (self.settings.request_timeout / 2).as_millis().max(1);
            let wait = [
                Bytes::from_static(b"WAIT"),
                Bytes::from(self.min_replicas_ack.to_string()),
                Bytes::from(wait_ms.to_string()),
            ];
            s.outbox.gather(|buf| encode_command(&wait, buf));
            s.owed.push_back(Owed::Wait {
                replicas: self.min_replicas_ack,
                sent_at: at,
                doubted: false,
            });
        }
        now.is_some()
    }

    /// A command the server refused (it did not run): kept to be sent
    /// again once a master that serves is reached, unless its client has
    /// given up.
    pub(super) fn retry_later(
        &mut self,
        retry: Retry,
        reply: tokio::sync::oneshot::Sender<super::job::BackendResult>,
    ) {
        if reply.is_closed() {
            return;
        }
        let mut job = Job::new(
            retry.origin,
            retry.payload,
            retry.db,
            ReplyTo::One(reply),
            true,
        );
        job.held = true;
        self.metrics.held_requests.increment(1);
        self.retries.push(job);
    }

    /// A batch answered with some of its commands refused: those go again
    /// as a batch of their own (all of a transaction's, none of which ran),
    /// and the client gets the whole batch once they are answered (see
    /// [`retry::merge`]).
    pub(super) fn retry_batch_later(
        &mut self,
        retry: Retry,
        reply: tokio::sync::oneshot::Sender<super::job::BatchResult>,
        replies: Vec<Reply>,
        (transaction, write): (bool, bool),
    ) {
        let Some((payload, places)) = retry::refused_in_batch(&retry, &replies, transaction) else {
            let _ = reply.send(Ok(replies));
            return;
        };
        if reply.is_closed() {
            return;
        }
        let (again, answer) = tokio::sync::oneshot::channel();
        let count = places.len();
        let mut job = Job::new(
            retry.origin,
            payload,
            retry.db,
            ReplyTo::Many { tx: again, count },
            write,
        );
        job.transaction = transaction;
        job.held = true;
        self.metrics.held_requests.increment(count as u64);
        self.retries.push(job);
        tokio::spawn(retry::merge(reply, replies, places, answer));
    }

    /// The commands to send again go back to the front of their clients'
    /// lanes, in the order they were first sent.
    pub(super) fn requeue_retries(&mut self) {
        for job in self.retries.drain(..).rev() {
            self.lanes.push_front(job.origin.client, job);
        }
    }

    /// Appends a job's command to the outbox, preceded by a SELECT when
    /// the client's database differs from the connection's. True for a
    /// write whose reply waits for a WAIT, which the caller appends.
    pub(super) fn queue(
        &self,
        job: Job,
        now: Instant,
        db: &mut u32,
        outbox: &mut Outbox,
        owed: &mut VecDeque<Owed>,
    ) -> bool {
        if job.held {
            self.metrics
                .released_requests
                .increment(u64::from(job.replies()));
        }
        let client = job.origin.client;
        // A leased connection keeps its client's state (MULTI, WATCH), which
        // a command sent again on another connection would not have.
        let retry = (self.reconnect_on_readonly && self.server_id.is_none()).then(|| Retry {
            origin: job.origin,
            payload: job.payload.clone(),
            db: job.db,
        });
        if job.db != *db {
            let index = Bytes::from(job.db.to_string());
            outbox.gather(|buf| encode_command(&[Bytes::from_static(b"SELECT"), index], buf));
            owed.push_back(Owed::Select { sent_at: now });
            *db = job.db;
        }
        outbox.push(job.payload);
        if let Some(written) = job.written {
            // The outbox goes out in this turn of the connection's loop.
            let _ = written.send(());
        }
        let reply = match job.reply {
            ReplyTo::One(reply) => reply,
            ReplyTo::Many { tx, count } => {
                // A transaction's EXEC reply is held until WAIT says how
                // many replicas have its writes.
                let confirm = job.write && job.transaction && self.min_replicas_ack > 0;
                owed.push_back(Owed::Batch {
                    client,
                    reply: tx,
                    count,
                    replies: Vec::with_capacity(count),
                    bytes: 0,
                    sent_at: now,
                    retry,
                    transaction: job.transaction,
                    confirm,
                });
                return confirm;
            }
        };
        if job.write && self.min_replicas_ack > 0 {
            // The write's reply is held until WAIT says how many replicas have it.
            owed.push_back(Owed::Unconfirmed {
                client,
                reply,
                sent_at: now,
                retry,
            });
            true
        } else {
            owed.push_back(Owed::Client {
                client,
                reply,
                sent_at: now,
                blocked_until: job.blocks_for.map(|d| now.checked_add(d).unwrap_or(now)),
                retry,
            });
            false
        }
    }

    /// Decodes every complete reply in `rbuf`, read at `read_at`, and hands
    /// each to its owner.
    pub(super) fn take_replies(
        &mut self,
        rbuf: &mut BytesMut,
        owed: &mut VecDeque<Owed>,
        read_at: Instant,
    ) -> Result<(), SessionEnd> {
        let mut any = false;
        let mut taken = 0u64;
        loop {
            // Only the frame's extent is decoded; its bytes go to the client as they are.
            // The extent is found without recursion and within bounds, so a
            // hostile or broken backend cannot overflow the stack or memory.
            let frame = match reply_extent(rbuf, self.settings.max_reply_bytes) {
                Ok(Some(amount)) => rbuf.split_to(amount).freeze(),
                Ok(None) => {
                    if any {
                        self.health.success_at(read_at);
                        self.metrics.replies.add(taken);
                    }
                    return Ok(());
                }
                Err(e) => {
                    self.metrics.protocol_errors.increment(1);
                    warn!(error = %e, "backend sent a reply the proxy refuses");
                    return Err(self.lost(format!("bad reply: {e}")));
                }
            };
            // A push (RESP3) answers no request: nothing here subscribes or
            // tracks, but one must not take another request's place.
            if self.speaks == Proto::Resp3 && frame.first() == Some(&b'>') {
                continue;
            }
            let refused = self.note_refusal(&frame, read_at);
            let size = frame.len();
            let reply = match self.speaks {
                Proto::Resp2 => Reply::Raw(frame),
                Proto::Resp3 => Reply::Raw3(frame),
            };
            taken += 1;
            if !any {
                any = true;
                if let Some(first) = owed.front() {
                    let took = read_at.saturating_duration_since(first.sent_at());
                    self.metrics.latency.record(took, 1);
                }
            }
            self.answer(owed, reply, size, refused)?;
        }
    }

    /// A refusal (`-READONLY`, `-LOADING`: a demoted or restarting
    /// master) has the sentinels asked now; on a fixed endpoint, whose name
    /// (or address) may lead to a master that serves now, it makes the
    /// connection reconnect, and the command goes again (true).
    pub(super) fn note_refusal(&mut self, frame: &[u8], read_at: Instant) -> bool {
        if !retry::refused(frame) {
            return false;
        }
        self.ask_recheck();
        if self.reconnect_on_readonly {
            self.want_master.get_or_insert(read_at);
        }
        self.reconnect_on_readonly
    }

    /// Hands one reply (`size` bytes; `refused`: see [`Self::note_refusal`])
    /// to what it answers: the first reply owed.
    pub(super) fn answer(
        &mut self,
        owed: &mut VecDeque<Owed>,
        reply: Reply,
        size: usize,
        refused: bool,
    ) -> Result<(), SessionEnd> {
        // A batch's replies are gathered where it waits, in place: moved
        // out and back per reply, it costs two copies of the entry each.
        if let Some(Owed::Batch {
            count,
            replies,
            bytes,
            ..
        }) = owed.front_mut()
        {
            replies.push(reply);
            *bytes += size;
            if replies.len() < *count {
                // More of the batch's replies are still to come.
                return Ok(());
            }
            if let Some(batch) = owed.pop_front() {
                self.answer_batch(batch);
            }
            return Ok(());
        }
        match owed.pop_front() {
            Some(Owed::Client {
                client,
                reply: tx,
                retry,
                ..
            }) => {
                self.lanes.replied(client, 1, size);
                match retry.filter(|_| refused) {
                    Some(retry) => self.retry_later(retry, tx),
                    None => {
                        let _ = tx.send(Ok(reply));
                    }
                }
            }
            Some(Owed::Unconfirmed {
                client,
                reply: tx,
                retry,
                ..
            }) => {
                self.lanes.replied(client, 1, size);
                match retry.filter(|_| refused) {
                    Some(retry) => self.retry_later(retry, tx),
                    None => self.unconfirmed.push(Unconfirmed::One {
                        reply: tx,
                        wrote: reply,
                    }),
                }
            }
            Some(Owed::Wait {
                replicas, doubted, ..
            }) => self.decide_unconfirmed(replicas, doubted, reply.parsed()),
            Some(Owed::Select { .. }) => {
                if let Reply::Error(e) = reply.parsed() {
                    // Commands after it would run in the wrong database: drop the connection.
                    return Err(
                        self.lost(format!("SELECT failed: {}", String::from_utf8_lossy(&e)))
                    );
                }
            }
            // (A batch took its reply above.)
            Some(Owed::Batch { .. }) | None => return Err(self.lost("reply to no request".into())),
        }
        Ok(())
    }

    /// A batch whose replies are all in: answered (its refused commands
    /// sent again first, when there are any; a transaction that writes
    /// once the WAIT after it decides).
    pub(super) fn answer_batch(&mut self, batch: Owed) {
        let Owed::Batch {
            client,
            reply: tx,
            count,
            replies,
            bytes,
            retry,
            transaction,
            confirm,
            ..
        } = batch
        else {
            return;
        };
        self.lanes.replied(client, count as u32, bytes);
        match retry.filter(|_| self.want_master.is_some()) {
            Some(retry) => self.retry_batch_later(retry, tx, replies, (transaction, confirm)),
            None if confirm => self
                .unconfirmed
                .push(Unconfirmed::Transaction { reply: tx, replies }),
            None => {
                let _ = tx.send(Ok(replies));
            }
        }
    }

    /// The WAIT after the unconfirmed writes answered `acked`: each write's
    /// client gets its reply if enough replicas have it, `-NOREPLICAS` if
    /// not, and an error if a failover began meanwhile (see [`Owed::Wait`]
    /// and [`verdict`]). A transaction's verdict is its EXEC reply's.
    pub(super) fn decide_unconfirmed(&mut self, replicas: u32, doubted: bool, acked: Reply) {
        let doubt = || BackendError::Unavailable {
            backend: self.backend.clone(),
            reason:
                "a failover began before the write was confirmed: it may not be on the new master"
                    .into(),
        };
        for unconfirmed in std::mem::take(&mut self.unconfirmed) {
            match unconfirmed {
                Unconfirmed::One { reply, wrote } => {
                    let answer = match verdict(!wrote.is_error(), replicas, doubted, &acked) {
                        Verdict::Stands => Ok(wrote),
                        Verdict::Doubted => Err(doubt()),
                        Verdict::Instead(instead) => Ok(instead),
                    };
                    let _ = reply.send(answer);
                }
                Unconfirmed::Transaction { reply, mut replies } => {
                    let ran = replies
                        .last()
                        .is_some_and(|exec| !exec.is_error() && !exec.is_null());
                    let answer = match verdict(ran, replicas, doubted, &acked) {
                        Verdict::Stands => Ok(replies),
                        Verdict::Doubted => Err(doubt()),
                        Verdict::Instead(instead) => {
                            if let Some(exec) = replies.last_mut() {
                                *exec = instead;
                            }
                            Ok(replies)
                        }
                    };
                    let _ = reply.send(answer);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::connection::Connection;
    use super::super::health::Health;
    use super::super::job::Origin;
    use super::super::lanes::Lanes;
    use super::*;
    use crate::config::Endpoint;
    use crate::config::Target;
    use crate::config::{self, Source};
    use crate::dial::PoolSettings;
    use crate::metrics::BackendMetrics;
    use std::sync::Arc;
    use tokio::sync::oneshot;
    use tokio::sync::{mpsc, watch, Notify};

    /// A connection task's state, without a socket, for exercising reply handling.
    fn connection(recheck: Arc<Notify>) -> Connection {
        let settings = Arc::new(PoolSettings::from_config(
            &config::Config::parse(
                "[listen]\naddress = \"127.0.0.1:1\"\n[[backends]]\nid = \"a\"\naddress = \"127.0.0.1:2\"\n",
            )
            .unwrap(),
        ));
        let metrics = Arc::new(BackendMetrics::new("a"));
        let (_tx, jobs) = mpsc::unbounded_channel();
        let (_etx, endpoint) = watch::channel(None);
        Connection {
            backend: Arc::from("a"),
            target: Target {
                source: Source::Fixed(Endpoint::Tcp("127.0.0.1:2".into())),
                username: None,
                password: None,
                password_file: None,
                password_env: None,
                aws_iam: None,
                tls: None,
            },
            health: Arc::new(Health::new(Arc::from("a"), &settings, metrics.clone())),
            settings,
            jobs,
            endpoint,
            recheck: Some(recheck),
            failover: None,
            min_replicas_ack: 0,
            unconfirmed: Vec::new(),
            server_id: None,
            reconnect_on_readonly: false,
            want_master: None,
            retries: Vec::new(),
            prepared: None,
            first_master_by: None,
            carried: false,
            lanes: Lanes::default(),
            read_turn: usize::MAX,
            metrics,
            proto: Proto::Resp2,
            speaks: Proto::Resp2,
        }
    }

    #[tokio::test]
    async fn readonly_and_loading_replies_ask_for_a_sentinel_recheck() {
        for reply in [
            &b"-READONLY You can't write against a read only replica.\r\n"[..],
            b"-LOADING Redis is loading\r\n",
        ] {
            let recheck = Arc::new(Notify::new());
            let mut conn = connection(recheck.clone());
            let (tx, rx) = oneshot::channel();
            let mut owed = VecDeque::from([Owed::plain(tx, Instant::now())]);
            let mut rbuf = BytesMut::from(reply);
            assert!(conn
                .take_replies(&mut rbuf, &mut owed, Instant::now())
                .is_ok());
            // The client still gets the backend's own error...
            assert!(rx.await.unwrap().unwrap().is_error());
            // ...and the monitor has been woken: a stored permit is ready at once.
            assert!(notified_now(&recheck).await, "re-check requested");
        }
        // An ordinary error does not ask.
        let recheck = Arc::new(Notify::new());
        let mut conn = connection(recheck.clone());
        let (tx, _rx) = oneshot::channel();
        let mut owed = VecDeque::from([Owed::plain(tx, Instant::now())]);
        let mut rbuf = BytesMut::from(
            &b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"[..],
        );
        assert!(conn
            .take_replies(&mut rbuf, &mut owed, Instant::now())
            .is_ok());
        assert!(!notified_now(&recheck).await);
    }

    /// Two writes, a transaction that writes and the one WAIT after them:
    /// the WAIT's count decides all three. Acknowledged by their replicas
    /// while a failover began, they are not confirmed to the clients: the
    /// replicas that have them may be resynced from a new master that does
    /// not (the nemesis lost such writes). Too few replicas: NOREPLICAS for
    /// each write, and for the transaction's EXEC.
    #[tokio::test]
    async fn one_wait_decides_the_writes_before_it() {
        for (doubt, acked) in [(false, 1), (true, 1), (false, 0)] {
            let mut conn = connection(Arc::new(Notify::new()));
            let mut s = Session::new(0);
            let mut receivers = Vec::new();
            for client in [1, 2] {
                let (tx, rx) = oneshot::channel();
                s.owed.push_back(Owed::Unconfirmed {
                    client,
                    reply: tx,
                    sent_at: Instant::now(),
                    retry: None,
                });
                receivers.push(rx);
            }
            let (tx, transaction) = oneshot::channel();
            s.owed.push_back(Owed::three(tx, None, true, true));
            s.owed.push_back(Owed::Wait {
                replicas: 1,
                sent_at: Instant::now(),
                doubted: false,
            });
            if doubt {
                s.doubt_writes();
            }
            let bytes = format!("+OK\r\n+OK\r\n+OK\r\n+QUEUED\r\n*1\r\n+OK\r\n:{acked}\r\n");
            let mut rbuf = BytesMut::from(bytes.as_bytes());
            assert!(conn
                .take_replies(&mut rbuf, &mut s.owed, Instant::now())
                .is_ok());
            assert!(s.owed.is_empty() && conn.unconfirmed.is_empty());
            let exec = transaction
                .await
                .unwrap()
                .map(|mut replies| replies.pop().unwrap());
            let mut answers = Vec::new();
            for rx in receivers {
                answers.push(rx.await.unwrap());
            }
            for answer in answers.into_iter().chain([exec]) {
                match (doubt, acked) {
                    (true, _) => {
                        let error = answer.unwrap_err().to_string();
                        assert!(error.contains("failover began"), "{error}");
                    }
                    (false, 1) => assert!(!answer.unwrap().is_error()),
                    _ => {
                        let reply = answer.unwrap();
                        assert!(reply.is_error(), "{reply:?}");
                    }
                }
            }
        }
    }

    /// A transaction that wrote nothing stands whatever the WAIT says: one
    /// aborted (EXECABORT, or a WATCH's null), and one that only reads,
    /// which no WAIT follows.
    #[tokio::test]
    async fn a_transaction_that_wrote_nothing_is_not_refused_for_replicas() {
        let mut conn = connection(Arc::new(Notify::new()));
        conn.min_replicas_ack = 1;
        let mut s = Session::new(0);
        let mut receivers = Vec::new();
        for (transaction, confirm) in [(true, true), (true, true), (true, false)] {
            let (tx, rx) = oneshot::channel();
            s.owed
                .push_back(Owed::three(tx, None, transaction, confirm));
            receivers.push(rx);
        }
        s.owed.push_back(Owed::Wait {
            replicas: 1,
            sent_at: Instant::now(),
            doubted: false,
        });
        let aborted = "+OK\r\n-ERR wrong number of arguments for 'set' command\r\n-EXECABORT Transaction discarded because of previous errors.\r\n";
        let bytes =
            format!("{aborted}+OK\r\n+QUEUED\r\n*-1\r\n+OK\r\n+QUEUED\r\n*1\r\n$1\r\nv\r\n:0\r\n");
        let mut rbuf = BytesMut::from(bytes.as_bytes());
        assert!(conn
            .take_replies(&mut rbuf, &mut s.owed, Instant::now())
            .is_ok());
        let mut execs = Vec::new();
        for rx in receivers {
            execs.push(rx.await.unwrap().unwrap().pop().unwrap());
        }
        let raw = |s: &'static str| Reply::Raw(Bytes::from(s));
        assert_eq!(
            execs,
            vec![
                raw("-EXECABORT Transaction discarded because of previous errors.\r\n"),
                raw("*-1\r\n"),
                raw("*1\r\n$1\r\nv\r\n"),
            ]
        );
    }

    /// A transaction a demoted master refused at queue time (-READONLY,
    /// and EXEC's -EXECABORT) ran none of its commands: all of it is kept
    /// to go again, as one transaction, not the refused write alone.
    #[tokio::test]
    async fn a_refused_transaction_goes_again_whole() {
        let mut conn = connection(Arc::new(Notify::new()));
        conn.reconnect_on_readonly = true;
        let payload = Bytes::from_static(
            b"*1\r\n$5\r\nMULTI\r\n*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n*1\r\n$4\r\nEXEC\r\n",
        );
        let (tx, _rx) = oneshot::channel();
        let mut s = Session::new(0);
        s.owed.push_back(Owed::three(
            tx,
            Some(refused_from_7(payload.clone())),
            true,
            false,
        ));
        let bytes = "+OK\r\n-READONLY You can't write against a read only replica.\r\n-EXECABORT Transaction discarded because of previous errors.\r\n";
        let mut rbuf = BytesMut::from(bytes);
        assert!(conn
            .take_replies(&mut rbuf, &mut s.owed, Instant::now())
            .is_ok());
        conn.settle(&mut s, &SessionEnd::Switched);
        let (_, again) = conn.lanes.pop().expect("the transaction goes again");
        assert_eq!(again.payload, payload);
        assert!(again.transaction);
        assert!(matches!(again.reply, ReplyTo::Many { count: 3, .. }));
    }

    /// A fixed endpoint's server became a replica: the writes it refused
    /// with -READONLY (they did not run) are not answered, but kept to go
    /// again first, in their order, once a master is reached; a read's
    /// reply and a write without retry information pass as they came.
    #[tokio::test]
    async fn writes_refused_with_readonly_go_again() {
        let mut conn = connection(Arc::new(Notify::new()));
        conn.reconnect_on_readonly = true;
        let mut s = Session::new(0);
        let mut receivers = Vec::new();
        for (payload, retry) in [("SET a 1", true), ("GET a", false), ("SET b 2", true)] {
            let (tx, rx) = oneshot::channel();
            s.owed.push_back(Owed::Client {
                client: 7,
                reply: tx,
                sent_at: Instant::now(),
                blocked_until: None,
                retry: retry.then(|| refused_from_7(Bytes::from(payload))),
            });
            receivers.push(rx);
        }
        let readonly = "-READONLY You can't write against a read only replica.\r\n";
        let bytes = format!("{readonly}$1\r\n1\r\n{readonly}");
        let mut rbuf = BytesMut::from(bytes.as_bytes());
        assert!(conn
            .take_replies(&mut rbuf, &mut s.owed, Instant::now())
            .is_ok());
        assert!(conn.want_master.is_some());
        let mut receivers = receivers.into_iter();
        let (mut first, read, mut last) = (
            receivers.next().unwrap(),
            receivers.next().unwrap(),
            receivers.next().unwrap(),
        );
        assert!(!read.await.unwrap().unwrap().is_error(), "the read passes");
        assert!(first.try_recv().is_err() && last.try_recv().is_err());
        conn.settle(&mut s, &SessionEnd::Switched);
        let sent: Vec<Bytes> = std::iter::from_fn(|| conn.lanes.pop())
            .map(|(_, job)| job.payload)
            .collect();
        assert_eq!(sent, vec![Bytes::from("SET a 1"), Bytes::from("SET b 2")]);
    }

    /// A pipelined batch, some of it refused (a write with -READONLY, a
    /// read with -LOADING): only those go again, as one batch; once it is
    /// answered the client gets the whole batch, each reply in its place.
    #[tokio::test]
    async fn the_refused_commands_of_a_batch_go_again_and_take_their_places() {
        let mut conn = connection(Arc::new(Notify::new()));
        conn.reconnect_on_readonly = true;
        let commands: Vec<Vec<u8>> = [&["SET", "a", "1"][..], &["GET", "a"], &["GET", "b"]]
            .iter()
            .map(|args| {
                let mut buf = BytesMut::new();
                let args: Vec<Bytes> = args.iter().map(|a| Bytes::from(*a)).collect();
                encode_command(&args, &mut buf);
                buf.to_vec()
            })
            .collect();
        let (tx, rx) = oneshot::channel();
        let mut s = Session::new(0);
        s.owed.push_back(Owed::three(
            tx,
            Some(refused_from_7(Bytes::from(commands.concat()))),
            false,
            false,
        ));
        let bytes = "-READONLY You can't write against a read only replica.\r\n$1\r\n1\r\n-LOADING Redis is loading the dataset in memory\r\n";
        let mut rbuf = BytesMut::from(bytes);
        assert!(conn
            .take_replies(&mut rbuf, &mut s.owed, Instant::now())
            .is_ok());
        assert!(conn.want_master.is_some() && s.owed.is_empty());
        conn.settle(&mut s, &SessionEnd::Switched);
        let (_, again) = conn.lanes.pop().expect("the refused commands go again");
        assert!(conn.lanes.pop().is_none());
        assert_eq!(
            again.payload,
            Bytes::from([&commands[0][..], &commands[2]].concat())
        );
        let ReplyTo::Many { tx, count: 2 } = again.reply else {
            panic!("one batch of the two refused commands");
        };
        let ok = |s: &'static str| Reply::Raw(Bytes::from(s));
        tx.send(Ok(vec![ok("+OK\r\n"), ok("$1\r\n2\r\n")])).unwrap();
        let replies = rx.await.unwrap().unwrap();
        assert_eq!(
            replies,
            vec![ok("+OK\r\n"), ok("$1\r\n1\r\n"), ok("$1\r\n2\r\n")]
        );
    }

    /// What client 7's `payload` needs to go again after a refusal.
    fn refused_from_7(payload: Bytes) -> Retry {
        let origin = Origin {
            client: 7,
            reply_bytes: 0,
            large_replies: false,
            proto: Proto::Resp2,
        };
        Retry {
            origin,
            payload,
            db: 0,
        }
    }

    /// Whether a notification is already stored, without waiting for one.
    async fn notified_now(notify: &Notify) -> bool {
        tokio::select! {
            biased;
            _ = notify.notified() => true,
            _ = std::future::ready(()) => false,
        }
    }
}
