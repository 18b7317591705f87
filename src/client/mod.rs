//! One client connection: framing, the per-connection state Redis keeps
//! (protocol, database, name, authentication), the commands the proxy answers
//! itself, and routing of the rest.
//!
//! The handler is a single task. Requests are decoded from the read buffer and
//! dispatched in order; each leaves a slot in `queue` holding its reply or the
//! receiver(s) it will come from. Slots are written strictly from the front, so
//! replies go out in request order however the backends interleave.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tracing::{debug, Instrument};

use crate::backend::{BackendError, LARGE_REPLY_BYTES};
use crate::memory::ARG_COST;
use crate::net::Stream;
use crate::protocol::request::{Framed, LARGE_REQUEST_ARGS};
use crate::protocol::RedisError;
use crate::protocol::{Proto, Request, RequestDecoder};
use crate::rare::{self, Rare};
use crate::shared::{Shared, Topology};

use self::batcher::Batcher;
use self::dispatch::dispatch;
use self::pubsub::Subscriber;
use self::slot::{poll_head, Pending, Slot};
pub(in crate::client) use self::state::State;
use self::tally::{count_received, Tally};

mod admit;
mod batcher;
mod commands;
mod ctx;
mod decide;
mod dispatch;
mod errors;
mod forward;
mod leased;
mod merge;
mod migrate;
mod output;
mod own_path;
mod plan;
mod pubsub;
mod receive;
mod rename;
mod resend;
mod slot;
mod state;
mod sweep;
mod tally;
mod tracking;
mod transaction;

/// Encoded but unwritten reply bytes above which the client is not read
/// further until it reads its replies.
const WRITE_HIGH_WATER: usize = 1024 * 1024;

/// Buffer capacity an idle client may keep.
const IDLE_BUFFER: usize = 4096;

/// Reply-queue capacity an idle client may keep.
const IDLE_QUEUE: usize = 16;

/// How long a client stays idle before its larger buffers are given back.
const IDLE_RELEASE: Duration = Duration::from_secs(1);

/// Serves one client until it disconnects or QUITs.
pub async fn serve(shared: Arc<Shared>, stream: Stream, peer: String, local: String) {
    let now = Instant::now();
    let id = shared.next_client_id.fetch_add(1, Ordering::Relaxed);
    let registered = shared.clients.register(id, &peer, &local, now);
    let mut state = State {
        id,
        proto: Proto::Resp2,
        db: 0,
        name: None,
        lib_name: None,
        lib_ver: None,
        authenticated: shared.topology().config.open_by_default(),
        user: None,
        peer,
        last_command_at: now,
        last_command: "NULL",
        closing: false,
        reply_bytes: 0,
        large_replies: false,
        multi: None,
        watching: None,
        subscriber: None,
        card: registered.card.clone(),
        auth_failures: 0,
        replies_off: false,
        skip_replies: 0,
        tracking: Default::default(),
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
    tracking::gone(&shared, &state);
    drop(registered);
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
    /// Another client named this one in CLIENT KILL.
    Killed,
    /// A Pub/Sub message from one of the client's links.
    Message(Bytes),
    /// A reload: a subscriber's links follow the new topology.
    Reloaded,
    /// CLIENT TRACKING: invalidations wait in the client's inbox.
    Invalidated,
}

/// Ends a client that a limit closes: counted in `closed` (one of the
/// `session_proxy_clients_closed_total` series) and logged with `limit`.
fn limit_closed(closed: &metrics::Counter, limit: &'static str) -> io::Result<()> {
    closed.increment(1);
    tracing::info!(limit, "client closed by a limit");
    Ok(())
}

/// One client's connection while it is served: the topology in force, the
/// buffers, the reply queue and the batcher, with each step of the loop as a
/// method. Buffers grow on demand and are given back whenever the client is
/// idle, so thousands of idle clients cost little memory.
struct Handler<'a> {
    shared: &'a Shared,
    stream: &'a Stream,
    state: &'a mut State,
    /// The topology in force; refreshed when a reload bumps the generation.
    topo: Arc<Topology>,
    generation: u64,
    decoder: RequestDecoder,
    /// This client's share of `[limits] max_memory_bytes`: its buffers,
    /// and what its large requests are charged while served.
    account: crate::memory::Account,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Every request's slot, in request order; written from the front.
    queue: VecDeque<Slot>,
    batcher: Batcher,
    tally: Tally,
    /// The client half-closed.
    eof: bool,
    /// The last request is a barrier still waiting (a migration moving its
    /// keys): no further request runs, or is read, until it is answered.
    blocked: bool,
    /// The last request is the client's first to a backend, a barrier: its
    /// reply tells how large this client's replies are, so the pipeline
    /// behind it goes on the right connection (see [`Handler::sized`]).
    sizing: bool,
    last_read: Instant,
    /// When the client's last reply was ready to write: SLOWLOG times a
    /// request from then at the earliest.
    last_reply: Instant,
}

impl<'a> Handler<'a> {
    /// A new connection's handler, on the current topology, with its share
    /// of `[limits] max_memory_bytes`.
    fn new(shared: &'a Shared, stream: &'a Stream, state: &'a mut State) -> Handler<'a> {
        let topo = shared.topology();
        let limit = topo.config.limits.max_request_bytes;
        let decoder = RequestDecoder::new(limit, state.authenticated);
        let account = shared.memory.open(state.id, &state.peer);
        Handler {
            shared,
            stream,
            generation: shared.generation.load(Ordering::Acquire),
            topo,
            decoder,
            account,
            state,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            queue: VecDeque::new(),
            batcher: Batcher::default(),
            tally: Tally::default(),
            eof: false,
            blocked: false,
            sizing: false,
            last_read: Instant::now(),
            last_reply: Instant::now(),
        }
    }

    /// Picks up a reload: a new topology, and its limits for this client too.
    fn refresh(&mut self) {
        let current = self.shared.generation.load(Ordering::Acquire);
        if current != self.generation {
            self.generation = current;
            self.topo = self.shared.topology();
            self.decoder.max_request_bytes = self.topo.config.limits.max_request_bytes;
            if let Some(subscriber) = self.state.subscriber.as_mut() {
                subscriber.follow(&self.topo);
            }
        }
    }

    /// Step 1: runs the requests already read, as far as the pipeline limit
    /// allows. Returns whether complete requests may still wait in `rbuf`
    /// because the pipeline was full: they need another pass, not a wait
    /// for the socket.
    fn run_requests(&mut self, now: Instant) -> bool {
        let max_pipeline = self.topo.config.limits.max_pipeline;
        let mut held_back = false;
        self.blocked = false;
        while !self.state.closing {
            if let Some(last) = self.queue.back_mut() {
                if last.barrier && !last.poll_ready(&mut self.batcher, None) {
                    self.blocked = true;
                    break;
                }
            }
            if self.sizing {
                self.sized();
            }
            if self.queue.len() >= max_pipeline {
                held_back = true;
                break;
            }
            let (account, limit) = (&self.account, self.topo.config.limits.max_memory_bytes);
            let decoded = self.decoder.decode_with(&mut self.rbuf, &mut |args| {
                account.try_charge(args.saturating_mul(ARG_COST), limit)
            });
            match decoded {
                Ok(Some(Framed::Refused { args })) => {
                    self.shared.metrics.refused_commands.increment(1);
                    let mib = args.saturating_mul(ARG_COST) >> 20;
                    let refusal = RedisError::RequestTooLarge { args, mib }.reply();
                    self.queue.push_back(Slot::ready(self.state.proto, refusal));
                }
                Ok(Some(Framed::Request(request))) => {
                    if !request.is_empty() {
                        self.take_request(request, now);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.state.closing = true;
                    let mut slot = Slot::ready(
                        self.state.proto,
                        RedisError::Protocol(e.to_string()).reply(),
                    );
                    slot.close_after = true;
                    self.queue.push_back(slot);
                }
            }
        }
        self.batcher.flush(&self.topo, self.state.origin());
        held_back
    }

    /// Runs one request and queues its slot.
    fn take_request(&mut self, request: Request, now: Instant) {
        // Charged when its header came (see `decode_with`).
        let charge = match &request {
            Request::Multibulk { .. } if request.len() >= LARGE_REQUEST_ARGS => {
                request.len() * ARG_COST
            }
            _ => 0,
        };
        if self.queue.is_empty() {
            // Nothing of this client's is in flight: it may move
            // between backend connections without reordering.
            self.state.large_replies = self.state.reply_bytes > LARGE_REPLY_BYTES;
        }
        let mut slot = dispatch(
            self.shared,
            &self.topo,
            self.state,
            &mut self.batcher,
            request,
            now,
        );
        if self.state.reply_bytes == 0 && slot.deadline.is_some() && !slot.barrier {
            slot.barrier = true;
            self.sizing = true;
            // A barrier is checked before the next request: its
            // batch must be on its way.
            self.batcher.flush(&self.topo, self.state.origin());
        }
        self.decoder.authenticated = self.state.authenticated;
        slot.charge = charge;
        self.queue.push_back(slot);
    }

    /// Steps 1-3 of the loop: takes the new topology, runs the requests
    /// read, encodes the replies that came, writes them; then says what is
    /// left to do.
    fn pass(&mut self, now: Instant) -> io::Result<Pass> {
        self.refresh();
        let held_back = self.run_requests(now);
        let more_ready = self.encode_replies(now)?;
        let limits = &self.topo.config.limits;
        let (max_pipeline, output_limit) = (limits.max_pipeline, limits.client_output_bytes);
        // Like Redis's client-output-buffer-limit: a client that lets this
        // much of its replies pile up unread is closed, alone.
        if output_limit > 0 && self.wbuf.len() > output_limit {
            return limit_closed(&self.shared.metrics.closed_output, "output").map(|()| Pass::Done);
        }
        let hold = self.write()?;
        if more_ready {
            return Ok(Pass::Yield);
        }
        if held_back && self.queue.len() < max_pipeline {
            return Ok(Pass::Again);
        }
        if self.eof && self.queue.iter().any(|s| s.blocking && s.is_waiting()) {
            // Gone while blocked (BLPOP): as on Redis, the client is dropped;
            // its leased connection closes, which unblocks the server.
            return Ok(Pass::Done);
        }
        if (self.state.closing || self.eof) && self.queue.is_empty() && self.wbuf.is_empty() {
            return Ok(Pass::Done);
        }
        if self.eof && !self.state.closing {
            // The client half-closed: answer what it sent, then finish.
            self.state.closing = true;
        }
        Ok(Pass::Wait { hold })
    }

    /// Draining and idle: close, unless a request is already waiting in the
    /// socket, so nothing the client has sent goes unanswered. The kernel
    /// is asked, not the readiness, which may not have seen bytes that came
    /// a moment ago.
    fn drained(&mut self) -> io::Result<Drained> {
        match self
            .stream
            .read_now(&mut self.rbuf, crate::net::CLIENT_READ)
        {
            Ok(0) => Ok(Drained::Close),
            Ok(n) => {
                count_received(self.shared, n);
                Ok(Drained::Read)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Drained::Close),
            Err(e) => Err(e),
        }
    }

    /// Whether to read the socket now. Behind a blocking command it is
    /// still read, a little, to see the client close.
    fn can_read(&self, max_pipeline: usize) -> bool {
        let behind_blocking =
            self.queue.back().is_some_and(|s| s.blocking) && self.rbuf.len() < READ_BEHIND_BLOCKING;
        !self.state.closing
            && !self.eof
            && (!self.blocked || behind_blocking)
            && self.queue.len() < max_pipeline
            && self.wbuf.len() < WRITE_HIGH_WATER
    }

    /// Acts on what the loop waited for.
    fn on_event(&mut self, event: Event, waits: &mut Waits, now: Instant) -> io::Result<Flow> {
        match event {
            Event::Writable(ready) => ready?,
            Event::ReplyReady => {}
            Event::Message(frame) => self.deliver(frame),
            Event::Invalidated => {
                for frame in tracking::frames(self.state) {
                    self.push_out(frame);
                }
            }
            // The next pass's `refresh` takes the new topology.
            Event::Reloaded => {}
            Event::Drain => waits.draining = true,
            Event::Evicted => {
                limit_closed(&self.shared.metrics.closed_memory, "memory")?;
                return Ok(Flow::End);
            }
            Event::Killed => {
                debug!("client killed by CLIENT KILL");
                return Ok(Flow::End);
            }
            Event::IdleTimer => {
                waits.idle_armed = false;
                let idle_timeout = Duration::from_secs(self.topo.config.limits.idle_timeout_s);
                let idle_now = self.queue.is_empty() && self.wbuf.is_empty();
                if idle_now && !idle_timeout.is_zero() && self.last_read.elapsed() >= idle_timeout {
                    limit_closed(&self.shared.metrics.closed_idle, "idle")?;
                    return Ok(Flow::End);
                }
            }
            Event::Timer => {
                waits.release_armed = false;
                self.release_if_idle();
                if let Some(deadline) = self.expire_head() {
                    waits.timer.as_mut().reset(deadline.into());
                }
            }
            Event::Readable(ready) => {
                ready?;
                if !self.read(now)? {
                    return Ok(Flow::End);
                }
            }
        }
        Ok(Flow::Go)
    }

    /// Nothing read, queued or unwritten.
    fn is_idle(&self) -> bool {
        self.queue.is_empty()
            && self.rbuf.is_empty()
            && self.wbuf.is_empty()
            && !self.stream.wants_write()
    }

    /// Holding more memory than an idle client should.
    fn is_oversized(&self) -> bool {
        self.rbuf.capacity() > IDLE_BUFFER
            || self.wbuf.capacity() > IDLE_BUFFER
            || self.queue.capacity() > IDLE_QUEUE
            || !self.batcher.scratch.is_empty()
    }

    /// Gives the buffers back if the client is (still) idle.
    fn release_if_idle(&mut self) {
        if self.is_idle() {
            self.rbuf = BytesMut::new();
            self.wbuf = BytesMut::new();
            self.queue = VecDeque::new();
            self.batcher.release();
        }
    }

    /// The first waiting reply's deadline passed: it gets the timeout error
    /// (the client never waits longer than the request timeout). Returns the
    /// deadline to wait for instead when it has not passed yet.
    fn expire_head(&mut self) -> Option<Instant> {
        let slot = self.queue.front_mut()?;
        let (deadline, backends) = slot.deadline.clone()?;
        if deadline > Instant::now() {
            return Some(deadline);
        }
        let error = BackendError::Timeout {
            backend: backends,
            timeout_ms: self.topo.config.pool.request_timeout_ms,
        };
        if let Pending::Batched { seq, .. } = slot.pending {
            self.batcher.abandon(seq);
        }
        slot.pending = Pending::Ready(error.to_reply());
        None
    }

    /// Reads what the socket has. Returns false once the client is gone with
    /// nothing left to answer.
    fn read(&mut self, now: Instant) -> io::Result<bool> {
        match self
            .stream
            .try_read_buf(&mut self.rbuf, crate::net::CLIENT_READ)
        {
            Ok(0) => {
                self.eof = true;
                Ok(!(self.queue.is_empty() && self.rbuf.is_empty()))
            }
            Ok(n) => {
                count_received(self.shared, n);
                self.last_read = now;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
            Err(e) => Err(e),
        }
    }
}

/// How much a client may send behind a blocking command that has not
/// answered yet before the proxy stops reading it.
const READ_BEHIND_BLOCKING: usize = 64 * 1024;

/// The next message of a subscribed client's links.
async fn next_message(subscriber: &mut Option<Box<Subscriber>>) -> Bytes {
    match subscriber {
        Some(s) => match s.messages.recv().await {
            Some(frame) => frame,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

async fn run(shared: &Shared, stream: &Stream, state: &mut State) -> io::Result<()> {
    let mut c = Handler::new(shared, stream, state);
    // The signals below almost never come: polled once they woke the task.
    let wakes = rare::Wakes::new();
    // This client's share of `[limits] max_memory_bytes` is used up.
    let usage = Arc::clone(c.account.usage_handle());
    let evicted = Rare::new(usage.evict.notified(), &wakes);
    tokio::pin!(evicted);
    // CLIENT KILL from another client, or invalidations for this client
    // (CLIENT TRACKING, its own or redirected to it): one wake-up for both.
    let card = c.state.card.clone();
    let woken = Rare::new(card.inbox.notify.notified(), &wakes);
    tokio::pin!(woken);
    // Set when the proxy drains: the client is closed once it is idle.
    let mut drain = shared.drain.subscribe();
    let mut reloads = shared.reloaded.subscribe();
    let mut waits = Waits::new(*drain.borrow());
    // One wait for the drain signal for the whole connection: a fresh
    // `changed()` per pass would register and unregister a waiter each time.
    let drain_started = Rare::new(drain.changed(), &wakes);
    tokio::pin!(drain_started);

    loop {
        // Steps 1-3: take the new topology, run what was read, encode what
        // came back, write it. One clock reading per pass serves every
        // request decoded and every reply encoded in it.
        let now = Instant::now();
        let hold = match c.pass(now)? {
            Pass::Again => continue,
            Pass::Yield => {
                tokio::task::yield_now().await;
                continue;
            }
            Pass::Done => return Ok(()),
            Pass::Wait { hold } => hold,
        };
        let idle = c.is_idle();
        if waits.draining && idle {
            match c.drained()? {
                Drained::Close => return Ok(()),
                Drained::Read => continue,
            }
        }
        waits.arm(&c, idle, now);
        c.account.set(
            c.rbuf.capacity() + c.wbuf.capacity(),
            c.topo.config.limits.max_memory_bytes,
        );
        // Step 4: wait for the socket or for the next reply.
        let max_pipeline = c.topo.config.limits.max_pipeline;
        let can_read = c.can_read(max_pipeline);
        let waiting = c.queue.front().is_some_and(Slot::is_waiting);
        // (A TLS stream may hold records the socket did not take yet.)
        let unwritten = !c.wbuf.is_empty() || stream.wants_write();
        let event = tokio::select! {
            biased;
            ready = stream.writable(), if unwritten && !hold => Event::Writable(ready),
            _ = poll_fn(|cx| poll_head(&mut c.queue, &mut c.batcher, cx)), if waiting => Event::ReplyReady,
            // Before new requests: news of a change goes out ahead of the
            // replies to requests that come after it, as on Redis.
            _ = &mut woken => if card.is_killed() { Event::Killed } else { Event::Invalidated },
            ready = stream.readable(), if can_read => Event::Readable(ready),
            _ = waits.timer.as_mut(), if waiting || waits.release_armed => Event::Timer,
            // Draining closes only an idle client, so a busy one need not
            // look: it will once it is idle.
            _ = &mut drain_started, if !waits.draining && idle => Event::Drain,
            _ = waits.idle.as_mut(), if waits.idle_armed => Event::IdleTimer,
            message = next_message(&mut c.state.subscriber), if c.state.subscriber.is_some() && c.queue.len() < max_pipeline => Event::Message(message),
            _ = reloads.changed(), if c.state.subscriber.is_some() => Event::Reloaded,
            _ = &mut evicted => Event::Evicted,
        };
        if let Event::Invalidated = event {
            woken.set(Rare::new(card.inbox.notify.notified(), &wakes));
        }
        if let Flow::End = c.on_event(event, &mut waits, now)? {
            return Ok(());
        }
    }
}

/// What one pass over a client's work leaves to do (see [`Handler::pass`]).
enum Pass {
    /// Requests were held back for room in the pipeline, and there is room.
    Again,
    /// More replies are ready: let other tasks run first, then go on.
    Yield,
    /// The client is finished (or closed by a limit).
    Done,
    /// Wait for the socket or a reply; `hold`: the unwritten replies wait
    /// for the one being gathered (see [`Handler::write`]).
    Wait { hold: bool },
}

/// Whether a client's loop goes on after an event.
enum Flow {
    Go,
    End,
}

/// A draining, idle client: what its socket held (see [`Handler::drained`]).
enum Drained {
    Close,
    Read,
}

/// The timers a client's loop waits on besides its socket and replies.
struct Waits {
    /// One timer for the oldest waiting reply. Deadlines only grow along
    /// the queue, so it is re-armed when it fires early, not for every
    /// request. It is also set to give an idle client's buffers back.
    timer: Pin<Box<tokio::time::Sleep>>,
    release_armed: bool,
    /// `[limits] idle_timeout_s`: armed while idle, checked against the
    /// last read.
    idle: Pin<Box<tokio::time::Sleep>>,
    idle_armed: bool,
    /// The proxy drains: the client is closed once it is idle.
    draining: bool,
}

impl Waits {
    fn new(draining: bool) -> Waits {
        Waits {
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            release_armed: false,
            idle: Box::pin(tokio::time::sleep(Duration::ZERO)),
            idle_armed: false,
            draining,
        }
    }

    /// Arms the timers an idle client needs: giving its buffers back, and
    /// its idle timeout.
    fn arm(&mut self, c: &Handler<'_>, idle: bool, now: Instant) {
        if idle && c.is_oversized() && !self.release_armed {
            // Give the buffers back if the client is still idle a while from
            // now, not at once: a busy client goes idle between every request
            // and would otherwise allocate its buffers afresh each time.
            // Armed at most a request timeout ahead, the timer can never be
            // later than the deadline of a request that comes meanwhile.
            let after = IDLE_RELEASE.min(c.topo.config.pool.request_timeout());
            self.timer.as_mut().reset((now + after).into());
            self.release_armed = true;
        }
        // As on Redis, the idle timeout does not apply to a subscriber.
        let idle_timeout = Duration::from_secs(c.topo.config.limits.idle_timeout_s);
        if idle && !idle_timeout.is_zero() && !self.idle_armed && c.state.subscriber.is_none() {
            self.idle
                .as_mut()
                .reset((c.last_read + idle_timeout).into());
            self.idle_armed = true;
        }
    }
}
