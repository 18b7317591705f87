//! One backend connection's session state: the replies it owes, in order,
//! and the deadlines by which they are due. No I/O of its own.

use super::job::{BackendError, BackendResult, BatchResult};
use super::retry::Retry;
use crate::net::Outbox;
use crate::protocol::Reply;
use bytes::BytesMut;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::warn;

/// How often a connection blocked on a client's BLPOP looks whether that
/// client is still there.
pub(super) const BLOCKED_CHECK: Duration = Duration::from_millis(500);

/// What a fired deadline means (see [`Session::overdue`]).
pub(super) enum Overdue {
    Dead(SessionEnd),
    /// A blocking command's client is still there: look again later.
    Rearm,
    /// Replies are still coming: the deadline moved on.
    Alive,
}

/// A blocking command owed first, at its deadline (see [`Session::blocked`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BlockedNow {
    /// Its client is gone: closing the connection unblocks the server.
    ClientGone,
    /// It may still be blocked: look again later.
    Waiting,
    /// The address led elsewhere a request timeout ago (a failover named a
    /// new master) and this server has not answered
    /// it: one that is still up and demoted closes it or answers
    /// `-UNBLOCKED` about then, so it is silent (frozen, or cut off), and
    /// it would block here, unserved, while what is pushed goes to the new
    /// master. The session ends and the command goes again there.
    LeftBehind,
}

/// A reply the connection owes, in the order the commands were written.
pub(super) enum Owed {
    /// A client's command.
    Client {
        client: u64,
        reply: oneshot::Sender<BackendResult>,
        sent_at: Instant,
        /// A blocking command's reply is not due before this.
        blocked_until: Option<Instant>,
        /// On a shared connection to a fixed endpoint: sent again if the
        /// server refuses it (see [`super::retry`]).
        retry: Option<Retry>,
    },
    /// A client's batch: the replies gathered so far, sent when all are in.
    Batch {
        client: u64,
        reply: oneshot::Sender<BatchResult>,
        count: usize,
        replies: Vec<Reply>,
        /// Bytes of the replies so far.
        bytes: usize,
        sent_at: Instant,
        /// As for [`Owed::Client`]: the commands refused go again (all of
        /// them, for a transaction).
        retry: Option<Retry>,
        /// One `MULTI` … `EXEC` transaction (see `Job::transaction`).
        transaction: bool,
        /// A transaction that writes, followed by a WAIT: its replies wait
        /// for the WAIT's answer, which decides its EXEC's reply.
        confirm: bool,
    },
    /// A SELECT the proxy inserted to switch databases.
    Select { sent_at: Instant },
    /// A write whose reply waits for the WAIT after it to confirm it.
    Unconfirmed {
        client: u64,
        reply: oneshot::Sender<BackendResult>,
        sent_at: Instant,
        /// As for [`Owed::Client`].
        retry: Option<Retry>,
    },
    /// The WAIT after one or more unconfirmed writes: it decides what each of
    /// their clients gets.
    Wait {
        replicas: u32,
        sent_at: Instant,
        /// A failover began (or a new master was named) while it was in
        /// flight: the replicas that acknowledged it may be resynced from
        /// a new master that never had it, so it is not confirmed.
        doubted: bool,
    },
}

impl Owed {
    pub(super) fn sent_at(&self) -> Instant {
        match self {
            Owed::Client { sent_at, .. }
            | Owed::Batch { sent_at, .. }
            | Owed::Select { sent_at }
            | Owed::Unconfirmed { sent_at, .. }
            | Owed::Wait { sent_at, .. } => *sent_at,
        }
    }
}

/// A write whose reply came, waiting for the answer to the WAIT after it.
pub(super) enum Unconfirmed {
    /// A single write and its reply.
    One {
        reply: oneshot::Sender<BackendResult>,
        wrote: Reply,
    },
    /// A transaction's replies (MULTI's, each queued command's, EXEC's).
    Transaction {
        reply: oneshot::Sender<BatchResult>,
        replies: Vec<Reply>,
    },
}

/// What the WAIT after a write (answered `acked`, `replicas` wanted) makes
/// of the write's reply; `ran`: the reply says something was written
/// (not an error; for a transaction, neither an error nor a WATCH's null).
#[derive(Debug, PartialEq)]
pub(super) enum Verdict {
    /// The reply stands: enough replicas have the write, or nothing was written.
    Stands,
    /// A failover began before the write was confirmed: it may not be on
    /// the new master (see [`Owed::Wait`]'s `doubted`).
    Doubted,
    /// The client gets this instead: `-NOREPLICAS` for too few replicas,
    /// or the WAIT's own error.
    Instead(Reply),
}

pub(super) fn verdict(ran: bool, replicas: u32, doubted: bool, acked: &Reply) -> Verdict {
    match acked {
        _ if !ran => Verdict::Stands,
        _ if doubted => Verdict::Doubted,
        Reply::Int(n) if *n >= i64::from(replicas) => Verdict::Stands,
        Reply::Int(_) => Verdict::Instead(crate::protocol::RedisError::NoReplicas.reply()),
        other => Verdict::Instead(other.clone()),
    }
}

/// What one owed reply's client is told when the session fails with
/// `error`: a request that has not waited the whole timeout did not time
/// out itself; its connection was closed because an earlier one did.
pub(super) fn owed_error(error: &BackendError, sent_at: Instant, now: Instant) -> BackendError {
    match error {
        BackendError::Timeout {
            backend,
            timeout_ms,
        } if now.saturating_duration_since(sent_at).as_millis() < u128::from(*timeout_ms) => {
            BackendError::ConnectionLost {
                backend: backend.clone(),
                reason: format!(
                    "closed after an earlier request on it got no reply within {timeout_ms} ms"
                ),
            }
        }
        other => other.clone(),
    }
}

/// Why a session on a connected socket ended.
pub(super) enum SessionEnd {
    /// Every `Backend` handle is gone: the proxy is shutting down.
    Closed,
    /// The master moved; everything sent to the old one has been answered.
    Switched,
    /// The connection reached `[pool] max_connection_age_s`; everything
    /// sent on it has been answered.
    Aged,
    Failed(BackendError),
}

/// One connected socket's state: the replies it owes, in order, what waits
/// to be written, what was read and not yet framed, and how the session
/// should end.
pub(super) struct Session {
    pub(super) owed: VecDeque<Owed>,
    pub(super) outbox: Outbox,
    pub(super) rbuf: BytesMut,
    /// The database the connection has selected.
    pub(super) db: u32,
    /// The connection is dead only when no reply bytes came for a request
    /// timeout, never because requests queued behind a big batch are old:
    /// `progress` is when bytes last came, `floor` the progress the deadline
    /// last took into account (moved forward when it fires).
    pub(super) progress: Instant,
    pub(super) floor: Instant,
    /// Bytes read since this task last let others run.
    pub(super) read_in_turn: usize,
    /// After a master switch: send nothing more, answer what was sent, then
    /// go (what waits in the lanes goes to the new master).
    pub(super) switching: bool,
    /// The switch is a renewal (the connection aged, or its name moved),
    /// not a new master.
    pub(super) aging: bool,
    /// When the address stopped leading to this session's server (a new
    /// master was named, or a leased connection's host name leads
    /// elsewhere now): a blocking command still owed a request timeout
    /// later is left behind (see [`Session::blocked`]).
    pub(super) left_at: Option<Instant>,
    /// The job queue is closed: send what waits, answer it, then end.
    pub(super) closing: bool,
}

impl Session {
    /// Whether a client still waits for a reply (a SELECT or WAIT the
    /// proxy added does not count).
    pub(super) fn owes_clients(&self) -> bool {
        self.owed
            .iter()
            .any(|owed| !matches!(owed, Owed::Select { .. } | Owed::Wait { .. }))
    }

    /// Whether a WAIT is out, not answered yet.
    pub(super) fn waiting(&self) -> bool {
        self.owed
            .iter()
            .rev()
            .any(|owed| matches!(owed, Owed::Wait { .. }))
    }

    /// Replaces the connection as an aged one is: nothing more is sent
    /// here, and once what was sent is answered the session ends (`Aged`).
    pub(super) fn renew(&mut self) {
        self.aging = true;
        self.switching = true;
    }

    /// The address leads elsewhere now (a new master, or a leased
    /// connection's name moved): nothing more is sent here, what was sent
    /// is answered, then the session ends.
    pub(super) fn leave(&mut self) {
        self.switching = true;
        self.left_at.get_or_insert_with(Instant::now);
    }

    /// A failover began or a new master was named: every write in flight
    /// waiting for its replicas' acknowledgement is answered with an error
    /// instead (see [`Owed::Wait`]'s `doubted`), whatever the old master says.
    pub(super) fn doubt_writes(&mut self) {
        for owed in &mut self.owed {
            if let Owed::Wait { doubted, .. } = owed {
                *doubted = true;
            }
        }
    }

    pub(super) fn new(db: u32) -> Session {
        let now = Instant::now();
        Session {
            owed: VecDeque::new(),
            outbox: Outbox::default(),
            rbuf: BytesMut::with_capacity(16 * 1024),
            db,
            progress: now,
            floor: now,
            read_in_turn: 0,
            switching: false,
            aging: false,
            left_at: None,
            closing: false,
        }
    }

    /// How the session ends now, if it does: switched once everything sent
    /// is answered, closed once that and everything waiting (`queued` jobs)
    /// is.
    pub(super) fn finished(&self, queued: usize) -> Option<SessionEnd> {
        if !self.owed.is_empty() {
            return None;
        }
        if self.switching {
            return Some(match self.aging {
                true => SessionEnd::Aged,
                false => SessionEnd::Switched,
            });
        }
        (self.closing && queued == 0).then_some(SessionEnd::Closed)
    }

    /// When the oldest reply owed is overdue (none owed: never). A blocking
    /// command is looked at every [`BLOCKED_CHECK`] meanwhile, to see
    /// whether its client is still there.
    pub(super) fn due(&self, request_timeout: Duration) -> Option<Instant> {
        let first = self.owed.front()?;
        if let Owed::Client {
            blocked_until: Some(until),
            ..
        } = first
        {
            let due = (*until).max(self.floor) + request_timeout;
            return Some(due.min(Instant::now() + BLOCKED_CHECK));
        }
        Some(first.sent_at().max(self.floor) + request_timeout)
    }

    /// At the deadline, for a blocking command owed first: what became of
    /// it (`None`: not a blocking command, or its time is up).
    pub(super) fn blocked(&self, request_timeout: Duration) -> Option<BlockedNow> {
        match self.owed.front()? {
            Owed::Client {
                reply,
                blocked_until: Some(until),
                ..
            } => {
                let now = Instant::now();
                if reply.is_closed() {
                    return Some(BlockedNow::ClientGone);
                }
                if self.left_at.is_some_and(|at| now >= at + request_timeout) {
                    return Some(BlockedNow::LeftBehind);
                }
                (now < *until + request_timeout).then_some(BlockedNow::Waiting)
            }
            _ => None,
        }
    }

    /// The deadline of the oldest reply owed fired: whether the connection
    /// is dead (no reply bytes for a request timeout; the client of a
    /// blocking command gone, closing it unblocks the server; or a
    /// blocking command left behind by a failover), or alive.
    pub(super) fn overdue(&mut self, backend: &Arc<str>, request_timeout: Duration) -> Overdue {
        match self.blocked(request_timeout) {
            Some(BlockedNow::ClientGone) => return Overdue::Dead(SessionEnd::Closed),
            Some(BlockedNow::Waiting) => return Overdue::Rearm,
            Some(BlockedNow::LeftBehind) => {
                warn!("a blocking command left unanswered where its backend no longer leads (a new master, or its host name moved) goes again where it leads now");
                let lost = BackendError::ConnectionLost {
                    backend: backend.clone(),
                    reason: super::LEFT_BEHIND.into(),
                };
                return Overdue::Dead(SessionEnd::Failed(lost));
            }
            None => {}
        }
        if self.still_alive(request_timeout) {
            return Overdue::Alive;
        }
        Overdue::Dead(SessionEnd::Failed(BackendError::Timeout {
            backend: backend.clone(),
            timeout_ms: request_timeout.as_millis() as u64,
        }))
    }

    /// The deadline fired: whether replies are still coming (the connection
    /// is alive, only busy), in which case the deadline moves on from them.
    pub(super) fn still_alive(&mut self, request_timeout: Duration) -> bool {
        if self.progress > self.floor && self.progress + request_timeout > Instant::now() {
            self.floor = self.progress;
            return true;
        }
        false
    }
}

#[cfg(test)]
impl Owed {
    /// Client 1's command, sent at `sent_at`: the plain reply owed in tests.
    pub(super) fn plain(reply: oneshot::Sender<BackendResult>, sent_at: Instant) -> Owed {
        Owed::Client {
            client: 1,
            reply,
            sent_at,
            blocked_until: None,
            retry: None,
        }
    }

    /// Client 7's batch of three commands, sent now: `retry`, for a fixed
    /// endpoint; a `transaction`, which may wait for a WAIT (`confirm`).
    pub(super) fn three(
        reply: oneshot::Sender<BatchResult>,
        retry: Option<Retry>,
        transaction: bool,
        confirm: bool,
    ) -> Owed {
        Owed::Batch {
            client: 7,
            reply,
            count: 3,
            replies: Vec::new(),
            bytes: 0,
            sent_at: Instant::now(),
            retry,
            transaction,
            confirm,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_request_that_waited_the_whole_timeout_is_told_it_timed_out() {
        let timeout = BackendError::Timeout {
            backend: "a".into(),
            timeout_ms: 1000,
        };
        let now = Instant::now();
        let old = now - Duration::from_millis(1000);
        assert_eq!(owed_error(&timeout, old, now), timeout);
        let young = now - Duration::from_millis(190);
        assert_eq!(
            owed_error(&timeout, young, now).to_string(),
            "backend 'a' connection lost: closed after an earlier request on it got no reply within 1000 ms"
        );
        let lost = BackendError::ConnectionLost {
            backend: "a".into(),
            reason: "closed by the server".into(),
        };
        assert_eq!(owed_error(&lost, young, now), lost);
    }

    #[test]
    fn a_session_ends_only_once_everything_sent_is_answered() {
        let mut s = Session::new(0);
        assert!(s.finished(0).is_none(), "an open session goes on");
        let (tx, _rx) = oneshot::channel();
        s.owed.push_back(Owed::plain(tx, Instant::now()));
        s.switching = true;
        s.closing = true;
        assert!(s.finished(0).is_none(), "a reply is still owed");
        s.owed.clear();
        assert!(matches!(s.finished(3), Some(SessionEnd::Switched)));
        s.switching = false;
        assert!(s.finished(3).is_none(), "closing sends what waits first");
        assert!(matches!(s.finished(0), Some(SessionEnd::Closed)));
    }

    #[test]
    fn a_renewed_session_ends_aged_once_what_was_sent_is_answered() {
        let mut s = Session::new(0);
        let (tx, _rx) = oneshot::channel();
        s.owed.push_back(Owed::plain(tx, Instant::now()));
        s.renew();
        assert!(s.finished(0).is_none(), "a reply is still owed");
        s.owed.clear();
        assert!(matches!(s.finished(5), Some(SessionEnd::Aged)));
    }

    /// A blocking command waits while it may block, unless its client is
    /// gone; once the address led elsewhere a request timeout ago (a new
    /// master) with the command still unanswered, it is left behind.
    #[test]
    fn a_blocking_command_on_a_server_left_a_request_timeout_ago_is_left_behind() {
        let timeout = Duration::from_millis(300);
        let blocking = |s: &mut Session| {
            let (tx, rx) = oneshot::channel();
            s.owed.push_back(Owed::Client {
                client: 1,
                reply: tx,
                sent_at: Instant::now(),
                blocked_until: Some(Instant::now() + Duration::from_secs(3600)),
                retry: None,
            });
            rx
        };
        let mut s = Session::new(0);
        let _rx = blocking(&mut s);
        assert_eq!(s.blocked(timeout), Some(BlockedNow::Waiting));
        s.leave();
        assert!(s.switching);
        assert_eq!(s.blocked(timeout), Some(BlockedNow::Waiting), "just left");
        s.left_at = Some(Instant::now() - timeout);
        assert_eq!(s.blocked(timeout), Some(BlockedNow::LeftBehind));
        // Left again later: the first time counts.
        s.leave();
        assert_eq!(s.blocked(timeout), Some(BlockedNow::LeftBehind));
        drop(_rx);
        assert_eq!(s.blocked(timeout), Some(BlockedNow::ClientGone));
        // A renewal of an aged connection (its server still where the
        // address leads) leaves nothing behind.
        let mut aged = Session::new(0);
        let _rx = blocking(&mut aged);
        aged.renew();
        assert_eq!(aged.left_at, None);
        assert_eq!(aged.blocked(timeout), Some(BlockedNow::Waiting));
    }

    #[test]
    fn a_session_is_overdue_only_without_reply_bytes_for_a_timeout() {
        let timeout = Duration::from_millis(300);
        let mut s = Session::new(0);
        assert_eq!(s.due(timeout), None, "nothing owed, nothing due");
        let sent = Instant::now();
        let (tx, _rx) = oneshot::channel();
        s.owed.push_back(Owed::plain(tx, sent));
        assert_eq!(s.due(timeout), Some(sent.max(s.floor) + timeout));
        // Bytes came since the deadline was set: alive, and the deadline
        // moves on from them.
        s.progress = Instant::now() + Duration::from_millis(1);
        assert!(s.still_alive(timeout));
        assert_eq!(s.floor, s.progress);
        assert_eq!(s.due(timeout), Some(s.progress + timeout));
        // No bytes since: dead.
        assert!(!s.still_alive(timeout));
    }
}
