//! What a client asks of a backend (a `Job`), where its answer goes
//! (`ReplyTo`), who sends it (`Origin`), and why it may fail (`BackendError`).

use super::lanes::Queued;
use crate::metrics::BackendMetrics;
use crate::protocol::{encode_command, Proto, Reply};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Why a backend could not answer; sent to the client as an `ERR` reply.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BackendError {
    #[error("backend '{backend}' has no known master yet")]
    NoMaster { backend: Arc<str> },
    #[error("backend '{backend}' is unavailable: {reason}")]
    Unavailable { backend: Arc<str>, reason: String },
    #[error("backend '{backend}' did not answer within {timeout_ms} ms")]
    Timeout { backend: Arc<str>, timeout_ms: u64 },
    #[error("backend '{backend}' connection lost: {reason}")]
    ConnectionLost { backend: Arc<str>, reason: String },
    /// A leased connection's session ended after it had carried its
    /// client's commands, whose state (a WATCH) the server dropped with
    /// it: nothing more is sent on it (see [`super::Lease`]).
    #[error(
        "backend '{backend}' connection lost: the connection this client's WATCH was sent on ended"
    )]
    LeaseEnded { backend: Arc<str> },
}

impl BackendError {
    pub fn to_reply(&self) -> Reply {
        Reply::error(format!("ERR {self}"))
    }
}

/// What a client gets back for one job: the backend's reply or why there is none.
pub type BackendResult = Result<Reply, BackendError>;

/// What a client gets back for a batch: every reply, in order, or why there are none.
pub type BatchResult = Result<Vec<Reply>, BackendError>;

/// Where a job's reply (or replies) go; dropped by the connection task once answered.
#[derive(Debug)]
pub enum ReplyTo {
    One(oneshot::Sender<BackendResult>),
    /// A batch of `count` commands answered together.
    Many {
        tx: oneshot::Sender<BatchResult>,
        count: usize,
    },
}

impl ReplyTo {
    pub(super) fn is_closed(&self) -> bool {
        match self {
            ReplyTo::One(tx) => tx.is_closed(),
            ReplyTo::Many { tx, .. } => tx.is_closed(),
        }
    }

    /// Answers with `error`, counting the requests it fails in `metrics`.
    pub(super) fn fail(self, error: BackendError, metrics: &BackendMetrics) {
        let requests = match &self {
            ReplyTo::One(_) => 1,
            ReplyTo::Many { count, .. } => *count as u64,
        };
        metrics.failed.add(requests);
        match self {
            ReplyTo::One(tx) => {
                let _ = tx.send(Err(error));
            }
            ReplyTo::Many { tx, .. } => {
                let _ = tx.send(Err(error));
            }
        }
    }
}

/// One command, or a batch of commands from one client, for one backend.
#[derive(Debug)]
pub struct Job {
    /// Who sent it: the client's lane in the connection, and the connection.
    pub origin: Origin,
    /// The command(s), RESP-encoded, back to back.
    pub payload: Bytes,
    /// The database the client has selected.
    pub db: u32,
    pub reply: ReplyTo,
    /// A write: follow it with WAIT when the backend has
    /// `min_replicas_ack` (of batches, only a transaction may be one: the
    /// WAIT then decides its EXEC's reply).
    pub write: bool,
    /// A batch that is one `MULTI` … `EXEC` transaction: all of it runs or
    /// none, so refused in part (`-READONLY`, `-LOADING` at queue time,
    /// and EXEC's `-EXECABORT`) it goes again whole.
    pub(super) transaction: bool,
    /// Only reads (no command that may write, no script): sent to the
    /// master even while a failover holds writes, so reads go on.
    pub read: bool,
    /// It came while a failover held the connection.
    pub(super) held: bool,
    /// A blocking command (BLPOP): its reply may take this long, on a leased
    /// connection that is not overdue meanwhile.
    pub(super) blocks_for: Option<Duration>,
    /// Told once the command is written to the server (a blocking
    /// command's client counts as blocked from then, as on the server).
    pub(super) written: Option<oneshot::Sender<()>>,
}

impl Job {
    pub(super) fn new(origin: Origin, payload: Bytes, db: u32, reply: ReplyTo, write: bool) -> Job {
        Job {
            origin,
            payload,
            db,
            reply,
            write,
            transaction: false,
            read: false,
            held: false,
            blocks_for: None,
            written: None,
        }
    }

    /// Marks the job as reads only (see [`Job::read`]).
    pub fn reading(mut self, read: bool) -> Job {
        self.read = read;
        self
    }

    /// One command (or several answered as one reply) already encoded, and
    /// where its reply will arrive.
    pub fn one(
        origin: Origin,
        payload: Bytes,
        db: u32,
        write: bool,
    ) -> (Job, oneshot::Receiver<BackendResult>) {
        let (tx, rx) = oneshot::channel();
        (Job::new(origin, payload, db, ReplyTo::One(tx), write), rx)
    }

    /// One command from its arguments, and where its reply will arrive.
    pub fn command(
        origin: Origin,
        args: &[Bytes],
        db: u32,
        write: bool,
    ) -> (Job, oneshot::Receiver<BackendResult>) {
        let mut buf = BytesMut::new();
        encode_command(args, &mut buf);
        Job::one(origin, buf.freeze(), db, write)
    }

    /// `count` commands (no write that needs a WAIT among them) answered
    /// together, in order (a transaction: [`Job::transaction`]).
    pub fn batch(
        origin: Origin,
        payload: Bytes,
        count: usize,
        db: u32,
    ) -> (Job, oneshot::Receiver<BatchResult>) {
        let (tx, rx) = oneshot::channel();
        (
            Job::new(origin, payload, db, ReplyTo::Many { tx, count }, false),
            rx,
        )
    }

    /// A `MULTI` … `EXEC` transaction of `count` commands (MULTI and EXEC
    /// included), answered together; `write` when any of its commands
    /// writes (see [`Job::write`]).
    pub fn transaction(
        origin: Origin,
        payload: Bytes,
        count: usize,
        db: u32,
        write: bool,
    ) -> (Job, oneshot::Receiver<BatchResult>) {
        let (mut job, rx) = Job::batch(origin, payload, count, db);
        job.write = write;
        job.transaction = true;
        (job, rx)
    }

    /// A blocking command (BLPOP, XREAD BLOCK), for a leased connection: its
    /// reply may take `blocks_for` (plus the request timeout) without the
    /// connection counting as dead. Where its reply will arrive, and word
    /// once it is written to the server.
    pub fn blocking(
        origin: Origin,
        payload: Bytes,
        db: u32,
        blocks_for: Duration,
    ) -> (
        Job,
        (oneshot::Receiver<BackendResult>, oneshot::Receiver<()>),
    ) {
        let (mut job, rx) = Job::one(origin, payload, db, false);
        let (written, on_written) = oneshot::channel();
        job.blocks_for = Some(blocks_for);
        job.written = Some(written);
        (job, (rx, on_written))
    }
}

impl Queued for Job {
    fn replies(&self) -> u32 {
        match &self.reply {
            ReplyTo::One(_) => 1,
            ReplyTo::Many { count, .. } => *count as u32,
        }
    }

    fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    fn reply_bytes(&self) -> u64 {
        self.origin.reply_bytes
    }
}

/// Who sends a job, which decides the connection it goes on: a client
/// always uses the same one of `[pool] connections` (its commands to one
/// backend stay in order), unless its replies are large (over
/// [`super::LARGE_REPLY_BYTES`] on average), when it uses the backend's connection
/// for large replies, started on first use. So a client that pipelines
/// hundreds of 100 KB GETs queues nothing ahead of anyone's small session
/// reads: Redis serves the two connections in turn, as it would the clients
/// themselves. A client moves between the two only when nothing of its is
/// in flight, so its commands still run in the order it sent them.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    pub client: u64,
    /// The average size of the client's replies so far (0: none yet).
    pub reply_bytes: u64,
    pub large_replies: bool,
    /// The protocol the replies are wanted in: a RESP3 client's requests
    /// go on connections speaking RESP3 (started on first use), so the
    /// server's own RESP3 reply is its answer (merged ones are read in
    /// RESP3 too, keeping the client's requests on one connection, in
    /// order); what the proxy does alone is asked in RESP2.
    pub proto: Proto,
}

impl Origin {
    /// The same sender, for replies the proxy reads or merges itself.
    pub fn resp2(self) -> Origin {
        Origin {
            proto: Proto::Resp2,
            ..self
        }
    }
}

/// What `rx` brings, unless the client behind `tx` gives up first
/// (`None`): `rx` is then dropped, so a job sent with its sender counts as
/// abandoned and a connection drops it unsent (see [`Queued::abandoned`]):
/// a write its client was told failed does not run later.
pub(super) async fn unless_abandoned<T, U>(
    rx: oneshot::Receiver<T>,
    tx: &mut oneshot::Sender<U>,
) -> Option<Result<T, oneshot::error::RecvError>> {
    tokio::select! {
        biased;
        result = rx => Some(result),
        _ = tx.closed() => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_redis_style() {
        let e = BackendError::Timeout {
            backend: "a".into(),
            timeout_ms: 100,
        };
        assert_eq!(
            e.to_reply(),
            Reply::error("ERR backend 'a' did not answer within 100 ms")
        );
    }
}
