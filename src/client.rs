//! One client connection: framing, the per-connection state Redis keeps
//! (protocol, database, name, authentication), the commands the proxy answers
//! itself, and routing of the rest.
//!
//! The handler is a single task. Requests are decoded from the read buffer and
//! dispatched in order; each leaves a slot in `queue` holding its reply or the
//! receiver(s) it will come from. Slots are written strictly from the front, so
//! replies go out in request order however the backends interleave.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;
use tokio_util::codec::{Decoder, Encoder};
use tracing::{debug, Instrument};

use crate::backend::{BackendError, BackendResult, BatchResult, Origin, LARGE_REPLY_BYTES};
use crate::net::Stream;
use crate::protocol::command::{key_positions, lookup_index, TABLE};
use crate::protocol::{
    lookup, Cmd, Merge, Proto, Reply, ReplyEncoder, Request, RequestDecoder, Route, Spec,
};
use crate::server::{Shared, Topology};

/// Encoded but unwritten reply bytes above which the client is not read
/// further until it reads its replies.
const WRITE_HIGH_WATER: usize = 1024 * 1024;
/// Encoded replies held back while a later reply in the pipeline is still
/// coming, at most; see step 3 of the client loop.
const HOLD_LIMIT: usize = 64 * 1024;
/// Buffer capacity an idle client may keep.
const IDLE_BUFFER: usize = 4096;
/// Smallest scratch buffer a batch of several commands is gathered in.
const PAYLOAD_MIN: usize = 4096;
/// Reply bytes a client encodes in one pass before it lets others run.
const ENCODE_TURN: usize = 256 * 1024;
/// Commands one batch towards a backend holds at most (see [`Batcher`]),
/// and the reply bytes it is expected to bring back at most, judged by the
/// client's average reply, which brings a batch of large GETs down to one.
const BATCH_MAX: usize = 16;
const BATCH_REPLY_BYTES: u64 = 64 * 1024;
/// The most a batch holds before the client's first reply has come.
const FIRST_BATCH: usize = 4;

/// How many commands a batch may hold for a client whose replies average
/// `reply_bytes`.
fn batch_max(reply_bytes: u64) -> usize {
    if reply_bytes == 0 {
        // No reply yet: they may be large.
        return FIRST_BATCH;
    }
    let fit = BATCH_REPLY_BYTES / reply_bytes;
    (fit as usize).clamp(1, BATCH_MAX)
}
/// Reply-queue capacity an idle client may keep.
const IDLE_QUEUE: usize = 16;
/// How long a client stays idle before its larger buffers are given back.
const IDLE_RELEASE: Duration = Duration::from_secs(1);

const NOAUTH: &str = "NOAUTH Authentication required.";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
const NOPERM_KEY: &str =
    "NOPERM this user has no permissions to access one of the keys used as arguments";

/// Where a reply will come from.
enum Pending {
    Ready(Reply),
    One(oneshot::Receiver<BackendResult>),
    /// Reply `index` of the batch numbered `seq` (see [`Batcher`]).
    Batched {
        seq: u64,
        index: usize,
    },
    Merge(Box<Merging>),
}

/// Gathers the commands a client pipelines to one backend within one pass
/// of its loop into one job, so a backend connection queues, and answers,
/// one job per client per pass instead of one per command.
///
/// Order is kept: every command bound elsewhere (split over backends, sent
/// to all, or needing a WAIT) first flushes what is gathered, and a batch
/// holds one database's commands only.
#[derive(Default)]
struct Batcher {
    /// Per backend with commands gathered in this pass.
    open: Vec<OpenBatch>,
    /// Per backend (by index): the buffer an open batch's commands are copied
    /// into. A flush splits the payload off; once the backend has written
    /// it, the next batch reuses the same memory instead of allocating.
    scratch: Vec<BytesMut>,
    /// Sent batches whose replies are not all taken yet, oldest first.
    sent: VecDeque<Batch>,
    next_seq: u64,
}

struct OpenBatch {
    backend: usize,
    seq: u64,
    db: u32,
    /// The first command; copied into the backend's scratch buffer when a
    /// second one comes.
    first: Bytes,
    count: usize,
}

struct Batch {
    seq: u64,
    replies: BatchReplies,
    /// Slots not yet answered from it.
    left: usize,
}

enum BatchReplies {
    One(oneshot::Receiver<BackendResult>),
    Many(oneshot::Receiver<BatchResult>),
    /// A single command's answer, not yet taken.
    DoneOne(Option<BackendResult>),
    Done(BatchResult),
}

impl Batcher {
    /// Gathers a command for the backend at `backend` (`id`, for a timeout
    /// error) and returns the slot waiting for it.
    fn add(
        &mut self,
        topo: &Topology,
        state: &State,
        backend: usize,
        id: Arc<str>,
        raw: &Bytes,
        now: Instant,
    ) -> Slot {
        // A batch holds one database's commands, and no more than
        // `batch_max` of them: a backend connection shares itself between
        // clients one job at a time, so a pipeline of hundreds of large GETs
        // must not be one job that everyone else waits behind.
        let most = batch_max(state.reply_bytes);
        if self
            .open
            .iter()
            .any(|open| open.db != state.db || (open.backend == backend && open.count >= most))
        {
            self.flush(topo, state.origin());
        }
        let index = match self.open.iter_mut().find(|open| open.backend == backend) {
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
                });
                (seq, 0)
            }
        };
        let pending = Pending::Batched {
            seq: index.0,
            index: index.1,
        };
        Slot::waiting(topo, state.proto, pending, id, now)
    }

    /// Sends everything gathered.
    fn flush(&mut self, topo: &Topology, origin: Origin) {
        for open in self.open.drain(..) {
            let Some(backend) = topo.backends.get(open.backend) else {
                continue;
            };
            let replies = if open.count == 1 {
                BatchReplies::One(backend.send(origin, open.first, open.db, false))
            } else {
                let payload = self
                    .scratch
                    .get_mut(open.backend)
                    .map(|scratch| scratch.split().freeze())
                    .unwrap_or_default();
                BatchReplies::Many(backend.send_batch(origin, payload, open.count, open.db))
            };
            self.sent.push_back(Batch {
                seq: open.seq,
                replies,
                left: open.count,
            });
        }
    }

    /// Reply `index` of batch `seq`, if it has come.
    fn poll(&mut self, seq: u64, index: usize, cx: Option<&mut Context<'_>>) -> Option<Reply> {
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
    fn abandon(&mut self, seq: u64) {
        if let Some(batch) = self.sent.iter_mut().find(|b| b.seq == seq) {
            batch.left = batch.left.saturating_sub(1);
        }
    }

    /// Gives the scratch buffers back (the client is idle).
    fn release(&mut self) {
        if self.open.is_empty() && self.sent.is_empty() {
            self.scratch = Vec::new();
        }
    }

    /// Forgets the oldest batches once every reply in them is taken.
    fn trim(&mut self) {
        while self.sent.front().is_some_and(|b| b.left == 0) {
            self.sent.pop_front();
        }
    }
}

fn reply_dropped() -> Reply {
    Reply::error("ERR reply dropped by the proxy")
}

/// One request's place in the reply order.
struct Slot {
    /// The protocol in force when the request ran: a reply queued before a
    /// HELLO is still encoded in the old protocol, as on Redis.
    proto: Proto,
    pending: Pending,
    /// Close the connection once this reply is written (QUIT, protocol error).
    close_after: bool,
    /// For a reply from backends: when the client stops waiting, and which
    /// backend(s) the error names then.
    deadline: Option<(Instant, Arc<str>)>,
    /// For metrics and SLOWLOG: the command-table index (`TABLE.len()` for an
    /// unknown command), when the request was decoded, and the request.
    command: usize,
    started: Option<Instant>,
    request: Kept,
}

/// What a request leaves in its slot for SLOWLOG; its arguments are taken
/// apart again only if it turns out slow.
enum Kept {
    Nothing,
    Raw(Bytes),
    Args(Vec<Bytes>),
}

impl Kept {
    fn new(request: Request) -> Kept {
        match request {
            Request::Multibulk { raw, .. } => Kept::Raw(raw),
            Request::Inline(args) => Kept::Args(args),
        }
    }

    fn args(&self) -> Vec<Bytes> {
        match self {
            Kept::Nothing => Vec::new(),
            Kept::Raw(raw) => Request::from_raw(raw).map_or_else(Vec::new, |r| r.args()),
            Kept::Args(args) => args.clone(),
        }
    }
}

impl Slot {
    fn ready(proto: Proto, reply: Reply) -> Slot {
        Slot {
            proto,
            pending: Pending::Ready(reply),
            close_after: false,
            deadline: None,
            command: TABLE.len(),
            started: None,
            request: Kept::Nothing,
        }
    }

    /// A slot waiting for backends, answered with a timeout error if they
    /// have not replied within the request timeout.
    fn waiting(
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

    fn is_waiting(&self) -> bool {
        !matches!(self.pending, Pending::Ready(_))
    }

    /// Moves a finished result into `Ready`. With a `Context` it also
    /// registers for wake-up; without one it only checks.
    fn poll_ready(&mut self, batcher: &mut Batcher, cx: Option<&mut Context<'_>>) -> bool {
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

/// A backend's answer, if it has come; a dropped sender is a lost connection.
fn poll_receiver<T>(
    rx: &mut oneshot::Receiver<Result<T, BackendError>>,
    cx: Option<&mut Context<'_>>,
) -> Option<Result<T, BackendError>> {
    let closed = || {
        Err(BackendError::ConnectionLost {
            backend: "?".into(),
            reason: "reply dropped".into(),
        })
    };
    match cx {
        Some(cx) => match Pin::new(rx).poll(cx) {
            Poll::Ready(result) => Some(result.unwrap_or_else(|_| closed())),
            Poll::Pending => None,
        },
        None => match rx.try_recv() {
            Ok(result) => Some(result),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(closed()),
        },
    }
}

fn result_reply(result: BackendResult) -> Reply {
    result.unwrap_or_else(|e| e.to_reply())
}

/// A command split over several backends, waiting for its parts.
struct Merging {
    parts: Vec<(Option<oneshot::Receiver<BackendResult>>, Option<Reply>)>,
    how: MergeHow,
}

enum MergeHow {
    Sum,
    AllOk,
    /// For each key of the original command: (part, index within the part's reply).
    InKeyOrder(Vec<(usize, usize)>),
}

impl Merging {
    fn poll(&mut self, mut cx: Option<&mut Context<'_>>) -> bool {
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

    fn finish(&mut self) -> Reply {
        let parts: Vec<Reply> = self
            .parts
            .iter_mut()
            .map(|(_, r)| r.take().unwrap_or(Reply::Null).parsed())
            .collect();
        if let Some(error) = parts.iter().find(|r| r.is_error()) {
            return error.clone();
        }
        let unexpected = || Reply::error("ERR unexpected reply from a backend");
        match &self.how {
            MergeHow::Sum => {
                let mut total = 0i64;
                for part in &parts {
                    match part {
                        Reply::Int(n) => total = total.saturating_add(*n),
                        _ => return unexpected(),
                    }
                }
                Reply::Int(total)
            }
            MergeHow::AllOk => Reply::ok(),
            MergeHow::InKeyOrder(positions) => {
                let mut out = Vec::with_capacity(positions.len());
                for &(part, index) in positions {
                    match parts.get(part) {
                        Some(Reply::Array(items)) => {
                            out.push(items.get(index).cloned().unwrap_or(Reply::Null))
                        }
                        _ => return unexpected(),
                    }
                }
                Reply::Array(out)
            }
        }
    }
}

/// What Redis keeps per connection, and what CLIENT INFO shows of it.
struct State {
    id: u64,
    proto: Proto,
    db: u32,
    name: Option<Bytes>,
    lib_name: Option<Bytes>,
    lib_ver: Option<Bytes>,
    authenticated: bool,
    /// The named user (`[[users]]`) the client authenticated as; `None` for
    /// the default user.
    user: Option<Bytes>,
    peer: String,
    local: String,
    connected_at: Instant,
    last_command_at: Instant,
    last_command: &'static str,
    /// Set by QUIT or a protocol error: read no further requests.
    closing: bool,
    /// Moving average of the size of this client's replies from backends,
    /// and whether it counts as a client of large replies (see [`Origin`]),
    /// decided afresh only when nothing of its is in flight.
    reply_bytes: u64,
    large_replies: bool,
}

impl State {
    /// Who sends a request, for the backend connection it goes on.
    fn origin(&self) -> Origin {
        Origin {
            client: self.id,
            reply_bytes: self.reply_bytes,
            large_replies: self.large_replies,
        }
    }

    /// Notes the size of a backend's reply to this client.
    fn replied(&mut self, bytes: usize) {
        self.reply_bytes = (self.reply_bytes * 7 + bytes as u64).div_ceil(8);
    }
}

/// Serves one client until it disconnects or QUITs.
pub async fn serve(shared: Arc<Shared>, stream: Stream, peer: String, local: String) {
    let now = Instant::now();
    let mut state = State {
        id: shared.next_client_id.fetch_add(1, Ordering::Relaxed),
        proto: Proto::Resp2,
        db: 0,
        name: None,
        lib_name: None,
        lib_ver: None,
        authenticated: shared.topology().config.open_by_default(),
        user: None,
        peer,
        local,
        connected_at: now,
        last_command_at: now,
        last_command: "NULL",
        closing: false,
        reply_bytes: 0,
        large_replies: false,
    };
    let span = tracing::debug_span!("client", id = state.id, peer = %state.peer);
    async {
        debug!("client connected");
        match run(&shared, &stream, &mut state).await {
            Ok(()) => debug!("client connection ended"),
            Err(e) => debug!(error = %e, "client connection ended"),
        }
    }
    .instrument(span)
    .await;
}

enum Event {
    Readable(io::Result<()>),
    Writable(io::Result<()>),
    ReplyReady,
    Timer,
    Drain,
    /// `[limits] idle_timeout_s` may have passed.
    IdleTimer,
    /// `[limits] max_memory_bytes` is exceeded and this client holds the most.
    Evicted,
}

/// Ends a client that a limit closes: counted in `closed` (one of the
/// `session_proxy_clients_closed_total` series) and logged with `limit`.
fn limit_closed(closed: &metrics::Counter, limit: &'static str) -> io::Result<()> {
    closed.increment(1);
    tracing::info!(limit, "client closed by a limit");
    Ok(())
}

async fn run(shared: &Shared, stream: &Stream, state: &mut State) -> io::Result<()> {
    // The topology in force; refreshed when a reload bumps the generation.
    let mut generation = shared.generation.load(Ordering::Acquire);
    let mut topo = shared.topology();
    let mut decoder =
        RequestDecoder::new(topo.config.limits.max_request_bytes, state.authenticated);
    // This client's share of `[limits] max_memory_bytes`.
    let account = shared.memory.open(state.id, &state.peer);
    let evicted = account.usage().evict.notified();
    tokio::pin!(evicted);
    // `[limits] idle_timeout_s`: armed while idle, checked against the last read.
    let idle_timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(idle_timer);
    let mut idle_armed = false;
    let mut last_read = Instant::now();
    // Buffers grow on demand and are given back whenever the client is idle,
    // so thousands of idle clients cost little memory.
    let mut rbuf = BytesMut::new();
    let mut wbuf = BytesMut::new();
    let mut queue: VecDeque<Slot> = VecDeque::new();
    let mut batcher = Batcher::default();
    let mut tally = Tally::default();
    let mut eof = false;
    // Set when the proxy drains: the client is closed once it is idle.
    let mut drain = shared.drain_signal.subscribe();
    let mut draining = *drain.borrow();
    // One wait for the drain signal for the whole connection: a fresh
    // `changed()` per pass would register and unregister a waiter each time.
    let drain_started = drain.changed();
    tokio::pin!(drain_started);
    // One timer for the oldest waiting reply. Deadlines only grow along the
    // queue, so it is re-armed when it fires early, not for every request.
    let timer = tokio::time::sleep(std::time::Duration::ZERO);
    tokio::pin!(timer);
    // The timer is also set to give an idle client's buffers back.
    let mut release_armed = false;

    loop {
        let current = shared.generation.load(Ordering::Acquire);
        if current != generation {
            generation = current;
            topo = shared.topology();
            // A reload's limits apply to open connections too.
            decoder.max_request_bytes = topo.config.limits.max_request_bytes;
        }
        let limits = &topo.config.limits;
        let max_pipeline = limits.max_pipeline;
        // One clock reading per pass serves every request decoded and every
        // reply encoded in it.
        let now = Instant::now();
        // 1. Run the requests already read, as far as the pipeline limit allows.
        // `held_back`: complete requests may still wait in `rbuf` because the
        // pipeline was full; they need another pass, not a wait for the socket.
        let mut held_back = false;
        while !state.closing {
            if queue.len() >= max_pipeline {
                held_back = true;
                break;
            }
            match decoder.decode(&mut rbuf) {
                Ok(Some(request)) => {
                    if request.is_empty() {
                        continue;
                    }
                    if queue.is_empty() {
                        // Nothing of this client's is in flight: it may move
                        // between backend connections without reordering.
                        state.large_replies = state.reply_bytes > LARGE_REPLY_BYTES;
                    }
                    let slot = dispatch(shared, &topo, state, &mut batcher, request, now);
                    decoder.authenticated = state.authenticated;
                    queue.push_back(slot);
                }
                Ok(None) => break,
                Err(e) => {
                    state.closing = true;
                    let mut slot = Slot::ready(state.proto, Reply::error(format!("ERR {e}")));
                    slot.close_after = true;
                    queue.push_back(slot);
                }
            }
        }
        batcher.flush(&topo, state.origin());
        // 2. Encode every reply that is ready, in order, up to ENCODE_TURN
        // bytes: a client with megabytes of large replies ready lets the
        // others go first (like Redis's per-client write limit per turn of
        // its event loop), then comes back for the rest.
        let encode_until = wbuf.len() + ENCODE_TURN;
        let mut more_ready = false;
        while let Some(slot) = queue.front_mut() {
            if wbuf.len() >= encode_until {
                more_ready = true;
                break;
            }
            if !slot.poll_ready(&mut batcher, None) {
                break;
            }
            let Some(slot) = queue.pop_front() else { break };
            let close_after = slot.close_after;
            if let Pending::Ready(reply) = slot.pending {
                if let Reply::Raw(bytes) = &reply {
                    state.replied(bytes.len());
                }
                if let Some(started) = slot.started {
                    let took = now.saturating_duration_since(started);
                    observe(
                        shared,
                        &topo,
                        state,
                        &mut tally,
                        slot.command,
                        took,
                        &slot.request,
                        reply.is_error(),
                    );
                }
                let mut encoder = ReplyEncoder { proto: slot.proto };
                encoder
                    .encode(reply, &mut wbuf)
                    .map_err(|e| io::Error::other(e.to_string()))?;
            }
            if close_after {
                queue.clear();
                break;
            }
        }
        batcher.trim();
        tally.flush(shared);
        // Like Redis's client-output-buffer-limit: a client that lets this
        // much of its replies pile up unread is closed, alone.
        if limits.client_output_bytes > 0 && wbuf.len() > limits.client_output_bytes {
            return limit_closed(&shared.metrics.closed_output, "output");
        }
        // 3. Write what the socket takes now, unless a reply further on is
        // still to come. Like Redis, which writes a pipeline's replies once it
        // has run the whole read buffer, replies gathered from several
        // backends go out in one send, not one per backend that answers. The
        // hold ends when that reply comes or times out, or at HOLD_LIMIT bytes.
        let hold = !wbuf.is_empty()
            && wbuf.len() < HOLD_LIMIT
            && queue.front().is_some_and(Slot::is_waiting);
        if !hold {
            let before = wbuf.len();
            let written = stream.write_some(&mut wbuf);
            count_sent(shared, before - wbuf.len());
            written?;
        }
        if more_ready {
            tokio::task::yield_now().await;
            continue;
        }
        if held_back && queue.len() < max_pipeline {
            continue;
        }
        if (state.closing || eof) && queue.is_empty() && wbuf.is_empty() {
            return Ok(());
        }
        if eof && !state.closing {
            // The client half-closed: answer what it sent, then finish.
            state.closing = true;
        }
        let idle = queue.is_empty() && rbuf.is_empty() && wbuf.is_empty();
        if draining && idle {
            // Draining and idle: close unless a request is already waiting in
            // the socket, so nothing the client has sent goes unanswered.
            // The kernel is asked, not the readiness, which may not have
            // seen bytes that came a moment ago.
            match stream.read_now(&mut rbuf, crate::net::CLIENT_READ) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    count_received(shared, n);
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        let oversized = rbuf.capacity() > IDLE_BUFFER
            || wbuf.capacity() > IDLE_BUFFER
            || queue.capacity() > IDLE_QUEUE
            || !batcher.scratch.is_empty();
        if idle && oversized && !release_armed {
            // Give the buffers back if the client is still idle a while from
            // now, not at once: a busy client goes idle between every request
            // and would otherwise allocate its buffers afresh each time.
            // Armed at most a request timeout ahead, the timer can never be
            // later than the deadline of a request that comes meanwhile.
            let after = IDLE_RELEASE.min(topo.config.pool.request_timeout());
            timer.as_mut().reset((now + after).into());
            release_armed = true;
        }
        account.set(rbuf.capacity() + wbuf.capacity(), limits.max_memory_bytes);
        let idle_timeout = Duration::from_secs(limits.idle_timeout_s);
        if idle && !idle_timeout.is_zero() && !idle_armed {
            idle_timer.as_mut().reset((last_read + idle_timeout).into());
            idle_armed = true;
        }
        // 4. Wait for the socket or for the next reply.
        let can_read =
            !state.closing && !eof && queue.len() < max_pipeline && wbuf.len() < WRITE_HIGH_WATER;
        let waiting = queue.front().is_some_and(Slot::is_waiting);
        let event = tokio::select! {
            biased;
            ready = stream.writable(), if !wbuf.is_empty() && !hold => Event::Writable(ready),
            _ = poll_fn(|cx| poll_head(&mut queue, &mut batcher, cx)), if waiting => Event::ReplyReady,
            ready = stream.readable(), if can_read => Event::Readable(ready),
            _ = &mut timer, if waiting || release_armed => Event::Timer,
            // Draining closes only an idle client, so a busy one need not
            // look: it will once it is idle.
            _ = &mut drain_started, if !draining && idle => Event::Drain,
            _ = &mut idle_timer, if idle_armed => Event::IdleTimer,
            _ = &mut evicted => Event::Evicted,
        };
        match event {
            Event::Writable(ready) => ready?,
            Event::ReplyReady => {}
            Event::Drain => draining = true,
            Event::Evicted => return limit_closed(&shared.metrics.closed_memory, "memory"),
            Event::IdleTimer => {
                idle_armed = false;
                let idle_now = queue.is_empty() && wbuf.is_empty();
                if idle_now && !idle_timeout.is_zero() && last_read.elapsed() >= idle_timeout {
                    return limit_closed(&shared.metrics.closed_idle, "idle");
                }
            }
            Event::Timer => {
                release_armed = false;
                if queue.is_empty() && rbuf.is_empty() && wbuf.is_empty() {
                    rbuf = BytesMut::new();
                    wbuf = BytesMut::new();
                    queue = VecDeque::new();
                    batcher.release();
                }
                if let Some(slot) = queue.front_mut() {
                    if let Some((deadline, backends)) = slot.deadline.clone() {
                        if deadline <= Instant::now() {
                            // The client never waits longer than the request timeout.
                            let error = BackendError::Timeout {
                                backend: backends,
                                timeout_ms: topo.config.pool.request_timeout_ms,
                            };
                            if let Pending::Batched { seq, .. } = slot.pending {
                                batcher.abandon(seq);
                            }
                            slot.pending = Pending::Ready(error.to_reply());
                        } else {
                            timer.as_mut().reset(deadline.into());
                        }
                    }
                }
            }
            Event::Readable(ready) => {
                ready?;
                match stream.try_read_buf(&mut rbuf, crate::net::CLIENT_READ) {
                    Ok(0) => {
                        eof = true;
                        if queue.is_empty() && rbuf.is_empty() {
                            return Ok(());
                        }
                    }
                    Ok(n) => {
                        count_received(shared, n);
                        last_read = now;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

/// Counts bytes written to a client in INFO and the metrics.
fn count_sent(shared: &Shared, n: usize) {
    if n > 0 {
        shared
            .stats
            .net_output_bytes
            .fetch_add(n as u64, Ordering::Relaxed);
        shared.stats.writes.fetch_add(1, Ordering::Relaxed);
        shared.metrics.sent_bytes.increment(n as u64);
    }
}

/// Counts bytes read from a client in INFO and the metrics.
fn count_received(shared: &Shared, n: usize) {
    shared
        .stats
        .net_input_bytes
        .fetch_add(n as u64, Ordering::Relaxed);
    shared.stats.reads.fetch_add(1, Ordering::Relaxed);
    shared.metrics.received_bytes.increment(n as u64);
}

/// Finished requests of one command, outcome and latency in a row, counted
/// in the metrics at once: a pipeline's replies, decoded in one pass and
/// encoded in another, mostly share all three.
#[derive(Default)]
struct Tally {
    command: usize,
    error: bool,
    took: Duration,
    count: u64,
}

impl Tally {
    fn add(&mut self, shared: &Shared, command: usize, error: bool, took: Duration) {
        if self.count > 0 && (self.command, self.error, self.took) == (command, error, took) {
            self.count += 1;
            return;
        }
        self.flush(shared);
        *self = Tally {
            command,
            error,
            took,
            count: 1,
        };
    }

    fn flush(&mut self, shared: &Shared) {
        if self.count == 0 {
            return;
        }
        if let Some(metrics) = shared.metrics.command(self.command) {
            if self.error {
                metrics.error.increment(self.count);
            } else {
                metrics.ok.increment(self.count);
            }
            metrics.latency.record(self.took, self.count);
        }
        self.count = 0;
    }
}

/// Counts a finished request in the metrics, and in SLOWLOG when slow.
#[allow(clippy::too_many_arguments)]
fn observe(
    shared: &Shared,
    topo: &Topology,
    state: &State,
    tally: &mut Tally,
    command: usize,
    took: Duration,
    request: &Kept,
    error: bool,
) {
    tally.add(shared, command, error, took);
    let slowlog = &topo.config.slowlog;
    if slowlog.slower_than_us >= 0 && took.as_micros() as i64 >= slowlog.slower_than_us {
        shared.slowlog.record(
            slowlog.max_len,
            took,
            &request.args(),
            &state.peer,
            state.name.as_ref(),
        );
    }
}

fn poll_head(queue: &mut VecDeque<Slot>, batcher: &mut Batcher, cx: &mut Context<'_>) -> Poll<()> {
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

/// Runs one request and returns its slot.
fn dispatch(
    shared: &Shared,
    topo: &Topology,
    state: &mut State,
    batcher: &mut Batcher,
    request: Request,
    started: Instant,
) -> Slot {
    let command = request.arg(0).and_then(lookup_index).unwrap_or(TABLE.len());
    let mut slot = execute(shared, topo, state, batcher, command, &request, started);
    slot.command = command;
    slot.started = Some(started);
    slot.request = Kept::new(request);
    slot
}

/// Runs the request whose command is `TABLE[command]` (out of range: unknown).
fn execute(
    shared: &Shared,
    topo: &Topology,
    state: &mut State,
    batcher: &mut Batcher,
    command: usize,
    request: &Request,
    now: Instant,
) -> Slot {
    let proto = state.proto;
    shared.stats.commands.fetch_add(1, Ordering::Relaxed);
    state.last_command_at = now;
    let Some(spec) = TABLE.get(command) else {
        state.last_command = "NULL";
        shared.metrics.refused_commands.increment(1);
        return Slot::ready(proto, unknown_command(&request.args()));
    };
    state.last_command = spec.name;
    // MSET needs pairs and PING at most one message; Redis checks both inside
    // the command, so after authentication.
    let extra_arity = match spec.cmd {
        Cmd::MSet => request.len().is_multiple_of(2),
        Cmd::Ping => request.len() > 2,
        _ => false,
    };
    if !spec.arity_ok(request.len()) {
        return Slot::ready(proto, arity_error(spec.name));
    }
    if !state.authenticated && !spec.no_auth {
        return Slot::ready(proto, Reply::error(NOAUTH));
    }
    let user = match &state.user {
        None => None,
        Some(name) => match topo.config.user(name) {
            Some(user) => Some(user),
            None if spec.no_auth => None,
            None => {
                // A reload removed the user: authenticate again.
                state.authenticated = false;
                state.user = None;
                return Slot::ready(proto, Reply::error(NOAUTH));
            }
        },
    };
    // Read-only users write nothing; a prefix-restricted client learns
    // nothing about keys beyond its prefixes (DBSIZE counts every key).
    if user.is_some_and(|u| u.read_only && spec.write)
        || (spec.cmd == Cmd::DbSize && is_restricted(topo, user))
    {
        shared.metrics.refused_commands.increment(1);
        return Slot::ready(proto, noperm_command(spec.name));
    }
    if extra_arity {
        return Slot::ready(proto, arity_error(spec.name));
    }
    match spec.route {
        Route::Local => {
            // Gathered commands go first: a local command may change the
            // connection's state (SELECT, AUTH) or answer about it.
            batcher.flush(topo, state.origin());
            let reply = local(shared, topo, state, spec, &request.args());
            let close_after = spec.cmd == Cmd::Quit;
            if close_after {
                state.closing = true;
            }
            // HELLO answers in the protocol it switches to.
            let mut slot = Slot::ready(state.proto, reply);
            slot.close_after = close_after;
            slot
        }
        Route::AllBackends => {
            batcher.flush(topo, state.origin());
            let args = request.args();
            let mut parts = Vec::with_capacity(topo.backends.len());
            for backend in &topo.backends {
                parts.push((
                    Some(backend.send_args(state.origin(), &args, state.db, false)),
                    None,
                ));
            }
            let merging = Pending::Merge(Box::new(Merging {
                parts,
                how: MergeHow::Sum,
            }));
            Slot::waiting(topo, proto, merging, Arc::from("*"), now)
        }
        _ => {
            let user_prefixes = user.map_or(&[][..], |u| &u.prefixes[..]);
            routed(
                shared,
                topo,
                state,
                batcher,
                spec,
                request,
                user_prefixes,
                now,
            )
        }
    }
}

/// Sends a keyed command to the backend(s) owning its keys; a key outside
/// `[keys] prefixes` or the user's own `prefixes` is refused first.
#[allow(clippy::too_many_arguments)]
fn routed(
    shared: &Shared,
    topo: &Topology,
    state: &State,
    batcher: &mut Batcher,
    spec: &Spec,
    request: &Request,
    user_prefixes: &[String],
    now: Instant,
) -> Slot {
    let proto = state.proto;
    let prefixes = &topo.config.keys.prefixes;
    let allowed = |key: &[u8], list: &[String]| {
        list.is_empty() || list.iter().any(|p| key.starts_with(p.as_bytes()))
    };
    // (arg position, backend index), listed only once there is a second key.
    let mut owners: Vec<(usize, usize)> = Vec::new();
    let mut first = None;
    let mut one_backend = true;
    for pos in key_positions(spec, request.len()) {
        let Some(key) = request.arg(pos) else {
            continue;
        };
        if !allowed(key, prefixes) || !allowed(key, user_prefixes) {
            shared.stats.refused_keys.fetch_add(1, Ordering::Relaxed);
            shared.metrics.refused_keys.increment(1);
            return Slot::ready(proto, Reply::error(NOPERM_KEY));
        }
        let owner = topo.route(key);
        match first {
            None => first = Some((pos, owner)),
            Some((first_pos, first_owner)) => {
                if owners.is_empty() {
                    owners.push((first_pos, first_owner));
                }
                owners.push((pos, owner));
                one_backend &= owner == first_owner;
            }
        }
    }
    let first = first.map_or(0, |(_, b)| b);
    if one_backend {
        // One backend has every key: forward the request as it came,
        // gathered with the client's other commands for that backend.
        let backend = &topo.backends[first];
        let waits = spec.write && backend.waits_for_replicas();
        let raw = request.raw();
        if let Some(raw) = raw.filter(|_| !waits) {
            return batcher.add(topo, state, first, backend.id.clone(), raw, now);
        }
        // Sent on its own (an inline request, or a write followed by WAIT),
        // after what is gathered.
        batcher.flush(topo, state.origin());
        let rx = match raw {
            Some(raw) => backend.send(state.origin(), raw.clone(), state.db, spec.write),
            None => backend.send_args(state.origin(), &request.args(), state.db, spec.write),
        };
        return Slot::waiting(topo, proto, Pending::One(rx), backend.id.clone(), now);
    }

    // Split, after what is gathered: one sub-command per backend, keys in
    // their original order.
    batcher.flush(topo, state.origin());
    let args = request.args();
    let mut groups: Vec<(usize, Vec<Bytes>)> = Vec::new();
    let mut positions = Vec::with_capacity(owners.len());
    for &(pos, backend) in &owners {
        let group = match groups.iter().position(|(b, _)| *b == backend) {
            Some(g) => g,
            None => {
                groups.push((backend, vec![args[0].clone()]));
                groups.len() - 1
            }
        };
        let sub = &mut groups[group].1;
        positions.push((group, sub.len() - 1));
        sub.push(args[pos].clone());
        if spec.route == Route::KeyValues {
            if let Some(value) = args.get(pos + 1) {
                sub.push(value.clone());
            }
        }
    }
    let how = match spec.route {
        Route::Keys(Merge::Sum) => MergeHow::Sum,
        Route::Keys(Merge::InKeyOrder) => MergeHow::InKeyOrder(positions),
        _ => MergeHow::AllOk,
    };
    let mut parts = Vec::with_capacity(groups.len());
    for (backend, sub) in &groups {
        parts.push((
            Some(topo.backends[*backend].send_args(state.origin(), sub, state.db, spec.write)),
            None,
        ));
    }
    let ids: Vec<&str> = groups.iter().map(|(b, _)| &*topo.backends[*b].id).collect();
    Slot::waiting(
        topo,
        proto,
        Pending::Merge(Box::new(Merging { parts, how })),
        Arc::from(ids.join("', '")),
        now,
    )
}

/// Redis's reply to a command it does not have, byte for byte: arguments are
/// echoed as C strings (up to a NUL byte), 128 bytes in all, other bytes kept
/// as they are (not made UTF-8).
fn unknown_command(args: &[Bytes]) -> Reply {
    let mut listed: Vec<u8> = Vec::new();
    for arg in &args[1..] {
        if listed.len() >= 128 {
            break;
        }
        let room = 128 - listed.len();
        listed.push(b'\'');
        listed.extend_from_slice(c_str(arg, room));
        listed.extend_from_slice(b"' ");
    }
    let mut msg = b"ERR unknown command '".to_vec();
    msg.extend_from_slice(c_str(&args[0], 128));
    msg.extend_from_slice(b"', with args beginning with: ");
    msg.extend_from_slice(&listed);
    Reply::error(msg)
}

/// What C's `%.*s` prints of `arg`: up to its first NUL, at most `max` bytes.
fn c_str(arg: &[u8], max: usize) -> &[u8] {
    let end = arg.iter().position(|&b| b == 0).unwrap_or(arg.len());
    &arg[..end.min(max)]
}

fn arity_error(name: &str) -> Reply {
    Reply::error(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

fn unknown_subcommand(sub: &[u8], command: &str) -> Reply {
    let mut msg = b"ERR unknown subcommand '".to_vec();
    msg.extend_from_slice(c_str(sub, 128));
    msg.extend_from_slice(format!("'. Try {command} HELP.").as_bytes());
    Reply::error(msg)
}

/// Commands the proxy answers itself.
fn local(
    shared: &Shared,
    topo: &Topology,
    state: &mut State,
    spec: &Spec,
    args: &[Bytes],
) -> Reply {
    match spec.cmd {
        Cmd::Ping => match args.get(1) {
            None => Reply::status("PONG"),
            Some(msg) => Reply::Bulk(msg.clone()),
        },
        Cmd::Echo => Reply::Bulk(args[1].clone()),
        Cmd::Quit => Reply::ok(),
        Cmd::Reset => {
            state.proto = Proto::Resp2;
            state.db = 0;
            state.name = None;
            state.authenticated = topo.config.open_by_default();
            state.user = None;
            Reply::status("RESET")
        }
        Cmd::Auth => auth(topo, state, args),
        Cmd::Hello => hello(topo, state, args),
        Cmd::Select => match parse_int(&args[1]) {
            None => Reply::error("ERR value is not an integer or out of range"),
            Some(db) if db < 0 || db >= topo.config.listen.databases as i64 => {
                Reply::error("ERR DB index is out of range")
            }
            Some(db) => {
                state.db = db as u32;
                Reply::ok()
            }
        },
        Cmd::Client => client_command(shared, state, args),
        Cmd::Command => command_command(args, state.proto),
        Cmd::Info => {
            // A prefix-restricted client is not shown the backends' addresses.
            let user = state.user.as_ref().and_then(|n| topo.config.user(n));
            Reply::Verbatim(Bytes::from(crate::server::info_text(
                shared,
                topo,
                args.get(1),
                is_restricted(topo, user),
            )))
        }
        Cmd::Slowlog => slowlog_command(shared, args),
        // Routed commands never reach here.
        _ => Reply::error("ERR internal routing error"),
    }
}

fn parse_int(arg: &[u8]) -> Option<i64> {
    std::str::from_utf8(arg).ok()?.parse().ok()
}

/// Who a user name and password authenticate as: `Some(None)` for the
/// default user, `Some(Some(name))` for a named one, `None` when refused.
fn authenticate(topo: &Topology, user: Option<&[u8]>, password: &[u8]) -> Option<Option<Bytes>> {
    let config = &topo.config;
    let listen = &config.listen;
    let default = match user {
        None => true,
        Some(user) => {
            user == b"default"
                || listen
                    .username
                    .as_deref()
                    .is_some_and(|u| u.as_bytes() == user)
        }
    };
    if default {
        return match &listen.password {
            // Like Redis's default user with `nopass`: any password is
            // accepted, unless named users exist (then it is off).
            None => config.users.is_empty().then_some(None),
            Some(expected) => constant_time_eq(expected.as_bytes(), password).then_some(None),
        };
    }
    let named = config.user(user?)?;
    constant_time_eq(named.secret().as_bytes(), password)
        .then(|| Some(Bytes::copy_from_slice(named.name.as_bytes())))
}

/// Whether a client sees only part of the keyspace.
fn is_restricted(topo: &Topology, user: Option<&crate::config::User>) -> bool {
    !topo.config.keys.prefixes.is_empty() || user.is_some_and(|u| !u.prefixes.is_empty())
}

/// Redis 7.0's reply to a command an ACL forbids.
fn noperm_command(name: &str) -> Reply {
    Reply::error(format!(
        "NOPERM this user has no permissions to run the '{name}' command"
    ))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn auth(topo: &Topology, state: &mut State, args: &[Bytes]) -> Reply {
    if args.len() > 3 {
        return Reply::error("ERR syntax error");
    }
    let (user, password) = match args {
        [_, password] => {
            if topo.config.listen.password.is_none() {
                return Reply::error(
                    "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
                );
            }
            (None, password)
        }
        [_, user, password] => (Some(&user[..]), password),
        _ => return arity_error("auth"),
    };
    match authenticate(topo, user, password) {
        Some(who) => {
            state.authenticated = true;
            state.user = who;
            Reply::ok()
        }
        None => Reply::error(WRONGPASS),
    }
}

fn hello(topo: &Topology, state: &mut State, args: &[Bytes]) -> Reply {
    let mut proto = None;
    if let Some(version) = args.get(1) {
        match parse_int(version) {
            None => return Reply::error("ERR Protocol version is not an integer or out of range"),
            Some(2) => proto = Some(Proto::Resp2),
            Some(3) => proto = Some(Proto::Resp3),
            Some(_) => return Reply::error("NOPROTO unsupported protocol version"),
        }
    }
    let mut credentials = None;
    let mut name = None;
    let mut i = 2;
    while i < args.len() {
        let more = args.len() - 1 - i;
        let option = args[i].to_ascii_uppercase();
        if option == b"AUTH" && more >= 2 {
            credentials = Some((&args[i + 1], &args[i + 2]));
            i += 3;
        } else if option == b"SETNAME" && more >= 1 {
            if let Err(e) = check_client_name(&args[i + 1]) {
                return e;
            }
            name = Some(args[i + 1].clone());
            i += 2;
        } else {
            let mut msg = b"ERR Syntax error in HELLO option '".to_vec();
            msg.extend_from_slice(c_str(&args[i], usize::MAX));
            msg.push(b'\'');
            return Reply::error(msg);
        }
    }
    if let Some((user, password)) = credentials {
        let Some(who) = authenticate(topo, Some(user), password) else {
            return Reply::error(WRONGPASS);
        };
        state.authenticated = true;
        state.user = who;
    }
    if !state.authenticated {
        return Reply::error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
        );
    }
    if let Some(name) = name {
        state.name = (!name.is_empty()).then_some(name);
    }
    if let Some(proto) = proto {
        state.proto = proto;
    }
    Reply::Map(vec![
        (Reply::bulk_str("server"), Reply::bulk_str("redis")),
        (
            Reply::bulk_str("version"),
            Reply::bulk_str(crate::REDIS_VERSION),
        ),
        (Reply::bulk_str("proto"), Reply::Int(state.proto.number())),
        (Reply::bulk_str("id"), Reply::Int(state.id as i64)),
        (Reply::bulk_str("mode"), Reply::bulk_str("standalone")),
        (Reply::bulk_str("role"), Reply::bulk_str("master")),
        (Reply::bulk_str("modules"), Reply::Array(Vec::new())),
    ])
}

fn check_client_name(name: &[u8]) -> Result<(), Reply> {
    if name.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
        return Err(Reply::error(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    Ok(())
}

fn client_command(shared: &Shared, state: &mut State, args: &[Bytes]) -> Reply {
    let sub = args[1].to_ascii_uppercase();
    let argc = args.len();
    let (name, arity_ok) = match &sub[..] {
        b"SETNAME" => ("client|setname", argc == 3),
        b"GETNAME" => ("client|getname", argc == 2),
        b"ID" => ("client|id", argc == 2),
        b"INFO" => ("client|info", argc == 2),
        b"LIST" => ("client|list", argc >= 2),
        b"SETINFO" => ("client|setinfo", argc == 4),
        _ => return unknown_subcommand(&args[1], "CLIENT"),
    };
    if !arity_ok {
        return arity_error(name);
    }
    match &sub[..] {
        b"SETNAME" => match check_client_name(&args[2]) {
            Err(e) => e,
            Ok(()) => {
                state.name = (!args[2].is_empty()).then(|| args[2].clone());
                Reply::ok()
            }
        },
        b"GETNAME" => state.name.clone().map_or(Reply::Null, Reply::Bulk),
        b"ID" => Reply::Int(state.id as i64),
        b"INFO" => Reply::Verbatim(Bytes::from(client_line(shared, state))),
        b"LIST" => {
            // Only this client is listed: other clients are other users' business.
            let mut wanted = true;
            let mut i = 2;
            while i < argc {
                if args[i].eq_ignore_ascii_case(b"ID") {
                    wanted = args[i + 1..]
                        .iter()
                        .any(|id| parse_int(id) == Some(state.id as i64));
                    break;
                } else if args[i].eq_ignore_ascii_case(b"TYPE") && i + 1 < argc {
                    wanted = args[i + 1].eq_ignore_ascii_case(b"normal");
                    i += 2;
                } else {
                    return Reply::error("ERR syntax error");
                }
            }
            let text = if wanted {
                client_line(shared, state)
            } else {
                String::new()
            };
            Reply::Verbatim(Bytes::from(text))
        }
        _ => {
            // SETINFO, as on Redis 7.2; clients ignore the answer either way.
            let value = args[3].clone();
            if args[2].eq_ignore_ascii_case(b"LIB-NAME") {
                state.lib_name = Some(value);
            } else if args[2].eq_ignore_ascii_case(b"LIB-VER") {
                state.lib_ver = Some(value);
            } else {
                let mut msg = b"ERR Unrecognized option '".to_vec();
                msg.extend_from_slice(c_str(&args[2], usize::MAX));
                msg.push(b'\'');
                return Reply::error(msg);
            }
            Reply::ok()
        }
    }
}

/// One line of CLIENT LIST / CLIENT INFO, in Redis's format.
fn client_line(_shared: &Shared, state: &State) -> String {
    let show = |b: &Option<Bytes>| {
        b.as_ref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    format!(
        "id={} addr={} laddr={} fd=-1 name={} age={} idle={} flags=N db={} sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd=client|{} user={} redir=-1 resp={} lib-name={} lib-ver={}\n",
        state.id,
        state.peer,
        state.local,
        show(&state.name),
        state.connected_at.elapsed().as_secs(),
        state.last_command_at.elapsed().as_secs(),
        state.db,
        if state.last_command == "client" { "info" } else { state.last_command },
        state.user.as_ref().map_or("default".into(), |u| String::from_utf8_lossy(u)),
        state.proto.number(),
        show(&state.lib_name),
        show(&state.lib_ver),
    )
}

/// Redis 7's SLOWLOG HELP text, line for line.
const SLOWLOG_HELP: &[&str] = &[
    "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GET [<count>]",
    "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
    "    Entries are made of:",
    "    id, timestamp, time in microseconds, arguments array, client IP and port,",
    "    client name",
    "LEN",
    "    Return the length of the slowlog.",
    "RESET",
    "    Reset the slowlog.",
    "HELP",
    "    Prints this help.",
];

/// SLOWLOG GET [count] | LEN | RESET | HELP.
fn slowlog_command(shared: &Shared, args: &[Bytes]) -> Reply {
    let sub = args[1].to_ascii_uppercase();
    match (&sub[..], args.len()) {
        (b"GET", 2) => shared.slowlog.get(10),
        (b"GET", 3) => match parse_int(&args[2]) {
            Some(n) if n < 0 => shared.slowlog.get(usize::MAX),
            Some(n) => shared.slowlog.get(n as usize),
            None => Reply::error("ERR value is not an integer or out of range"),
        },
        (b"GET", _) => arity_error("slowlog|get"),
        (b"LEN", 2) => Reply::Int(shared.slowlog.len() as i64),
        (b"LEN", _) => arity_error("slowlog|len"),
        (b"RESET", 2) => {
            shared.slowlog.reset();
            Reply::ok()
        }
        (b"RESET", _) => arity_error("slowlog|reset"),
        (b"HELP", 2) => Reply::Array(
            SLOWLOG_HELP
                .iter()
                .map(|line| Reply::status(line))
                .collect(),
        ),
        (b"HELP", _) => arity_error("slowlog|help"),
        _ => unknown_subcommand(&args[1], "SLOWLOG"),
    }
}

fn command_command(args: &[Bytes], _proto: Proto) -> Reply {
    let Some(sub) = args.get(1) else {
        return Reply::Array(TABLE.iter().map(command_info).collect());
    };
    let sub_upper = sub.to_ascii_uppercase();
    match &sub_upper[..] {
        b"COUNT" if args.len() == 2 => Reply::Int(TABLE.len() as i64),
        b"COUNT" => arity_error("command|count"),
        b"INFO" => {
            if args.len() == 2 {
                return Reply::Array(TABLE.iter().map(command_info).collect());
            }
            Reply::Array(
                args[2..]
                    .iter()
                    .map(|name| lookup(name).map_or(Reply::Null, command_info))
                    .collect(),
            )
        }
        // No documentation is served; redis-cli then simply shows no hints.
        b"DOCS" => Reply::Map(Vec::new()),
        _ => unknown_subcommand(sub, "COMMAND"),
    }
}

/// A COMMAND INFO entry in Redis 7's shape.
fn command_info(spec: &'static Spec) -> Reply {
    let mut flags = vec![Reply::status(if spec.write { "write" } else { "readonly" })];
    if spec.route == Route::Local {
        flags = vec![Reply::status("fast")];
        if spec.no_auth {
            flags.push(Reply::status("no_auth"));
        }
    }
    let (first, last, step) = spec.keys;
    Reply::Array(vec![
        Reply::bulk_str(spec.name),
        Reply::Int(spec.arity as i64),
        Reply::Set(flags),
        Reply::Int(first),
        Reply::Int(last),
        Reply::Int(step),
        Reply::Set(Vec::new()),
        Reply::Set(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
    ])
}
