//! One backend connection's task: the reconnect loop, and the select over
//! its jobs and its socket.

use super::lanes::Lanes;
use crate::config::{Endpoint, Target};
use crate::dial::PoolSettings;
use crate::dial::{handshake, Backoff, DialError};
use crate::metrics::BackendMetrics;
use crate::net::Stream;
use crate::protocol::Proto;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::sync::{watch, Notify};
use tokio::time::{sleep_until, timeout, Instant, Sleep};
use tracing::{debug, info, warn};

use super::health::Health;
use super::hold::{FailoverFlag, Send};
use super::job::{BackendError, Job};
use super::lease::ServerId;
use super::renewal::{Refresh, Renew, Renewal};
use super::session::{owed_error, Overdue, Owed, Session, SessionEnd, Unconfirmed};

/// Unwritten bytes per connection before it stops taking jobs.
pub(super) const WRITE_HIGH_WATER: usize = 1024 * 1024;

/// How one connection attempt ended.
enum Attempt {
    /// Connect again now (a switch, an aged connection, a replica still).
    Again,
    /// The proxy is stopping.
    Stop,
    /// The backend is unavailable, for this reason.
    Failed(String),
}

/// A socket made ready for a session: handshake done, RESP3 asked for,
/// and the server's role read when only a master will do.
pub(super) struct Ready {
    pub(super) endpoint: Endpoint,
    stream: Stream,
    db: u32,
    peer: Option<SocketAddr>,
    speaks: Proto,
    role: Option<String>,
}

/// What makes a connection's sockets, owned so that a replacement can be
/// made in a task of its own while the old connection still serves.
#[derive(Clone)]
struct Dialer {
    target: Target,
    settings: Arc<PoolSettings>,
    proto: Proto,
    server_id: Option<Arc<ServerId>>,
}

impl Dialer {
    /// Connects to `endpoint` within the connect timeout; the reason when
    /// it could not.
    async fn connect(self, endpoint: Endpoint, check_role: bool) -> Result<Ready, String> {
        let limit = self.settings.connect_timeout;
        let attempt = timeout(limit, async {
            let done = handshake(&endpoint, &self.target, &self.settings).await?;
            let stream = done.stream;
            if let Some(server_id) = &self.server_id {
                let at = super::ServerAt {
                    endpoint: endpoint.clone(),
                    peer: done.peer,
                };
                server_id.set(at, crate::dial::client_id(&stream).await?);
            }
            // A server that cannot speak RESP3 answers in RESP2, and its
            // replies are converted for RESP3 clients.
            let speaks = match self.proto {
                Proto::Resp3 if crate::dial::hello3(&stream).await? => Proto::Resp3,
                _ => Proto::Resp2,
            };
            // After a -READONLY or -LOADING: only a master that serves will do.
            let role = match check_role {
                true => Some(crate::dial::serving_role(&stream).await?),
                false => None,
            };
            Ok::<_, DialError>(Ready {
                endpoint: endpoint.clone(),
                stream,
                db: done.db,
                peer: done.peer,
                speaks,
                role,
            })
        })
        .await;
        match attempt {
            Ok(Ok(ready)) => Ok(ready),
            Ok(Err(reason)) => Err(reason.to_string()),
            Err(_) => Err(format!(
                "connect to {endpoint} timed out after {} ms",
                limit.as_millis()
            )),
        }
    }
}

/// A session shorter than this counts as a failed attempt for the backoff.
const STABLE_SESSION: Duration = Duration::from_secs(1);

/// One backend connection's task.
pub(super) struct Connection {
    pub(super) backend: Arc<str>,
    pub(super) target: Target,
    pub(super) settings: Arc<PoolSettings>,
    /// Jobs from clients; closed when every `Backend` handle is dropped.
    pub(super) jobs: mpsc::UnboundedReceiver<Job>,
    /// The current address (the master, for a Sentinel group).
    pub(super) endpoint: watch::Receiver<Option<Endpoint>>,
    /// Asks the Sentinel monitor to re-check the master at once.
    pub(super) recheck: Option<Arc<Notify>>,
    /// True while the Sentinel group fails its master over: take no new
    /// jobs (they wait in `jobs`, each bounded by its client's request
    /// timeout) until the new master is published or the failover aborts.
    pub(super) failover: Option<watch::Receiver<bool>>,
    pub(super) health: Arc<Health>,
    pub(super) min_replicas_ack: u32,
    /// Writes whose reply came, waiting for the WAIT after them.
    pub(super) unconfirmed: Vec<Unconfirmed>,
    /// Jobs taken from `jobs`, waiting for their client's turn; kept across
    /// sessions (a master switch sends them to the new master).
    pub(super) lanes: Lanes<Job>,
    /// Bytes read before letting other tasks run: READ_TURN on the
    /// connection for large replies, which could otherwise keep reading for
    /// milliseconds; unlimited on the others, where replies are small and a
    /// pause would only delay them.
    pub(super) read_turn: usize,
    pub(super) metrics: Arc<BackendMetrics>,
    /// The protocol this connection's clients want their replies in, and
    /// the one the current session speaks.
    pub(super) proto: Proto,
    pub(super) speaks: Proto,
    /// A leased connection's: where its server's client id goes after each
    /// handshake.
    pub(super) server_id: Option<Arc<ServerId>>,
    /// See [`super::Discovery`]: reconnect once the server says it is a
    /// replica now (`-READONLY`) or loading its data (`-LOADING`).
    pub(super) reconnect_on_readonly: bool,
    /// Since when the server has refused commands (a `-READONLY` or
    /// `-LOADING` came): the session that saw it reconnects once what it
    /// owes is in, and the next connections must reach a master that
    /// serves (`ROLE`, `PING`) before they are used; until then jobs wait,
    /// for a request timeout at most. None at the start of every session
    /// (taken once a master is reached).
    pub(super) want_master: Option<Instant>,
    /// Commands refused (see [`retry`]), in the order they were sent: they
    /// go again, first, once a master that serves is reached.
    pub(super) retries: Vec<Job>,
    /// The connection made while the last one aged, taken by the next
    /// attempt: the old one's replies come in meanwhile, and no request
    /// waits for a connect.
    pub(super) prepared: Option<Ready>,
    /// Until then, while no master is known yet (a Sentinel backend whose
    /// monitor has not answered since the start), jobs wait for one in
    /// `jobs` instead of failing at once: a proxy just (re)started gives
    /// no error for the moment its monitor takes to find the master. Taken
    /// by the first wait.
    pub(super) first_master_by: Option<Instant>,
    /// A leased connection that has sent its client's commands, other
    /// than blocking ones (which leave none once answered, so their
    /// connection can serve the next lease): the server keeps that
    /// client's state (a WATCH) on this session only,
    /// so once it ends the lease sends nothing more (see
    /// [`Connection::refuse_until_dropped`]).
    pub(super) carried: bool,
}

impl Connection {
    pub(super) async fn run(mut self) {
        let mut backoff = Backoff::new(self.settings.backoff_min, self.settings.backoff_max);
        loop {
            let current = self.endpoint.borrow_and_update().clone();
            let reason = match current {
                None if self.first_master_found().await => continue,
                None => BackendError::NoMaster {
                    backend: self.backend.clone(),
                },
                Some(endpoint) => match self.attempt(&endpoint, &mut backoff).await {
                    Attempt::Stop => return,
                    _ if self.carried => return self.refuse_until_dropped().await,
                    Attempt::Again => continue,
                    Attempt::Failed(reason) => {
                        self.health.failure();
                        self.ask_recheck();
                        BackendError::Unavailable {
                            backend: self.backend.clone(),
                            reason,
                        }
                    }
                },
            };
            if !self.fail_until_retry(reason, &mut backoff).await {
                return;
            }
        }
    }

    /// One connection to `endpoint`: made (or the one prepared while the
    /// last aged), checked, and served until its session ends.
    async fn attempt(&mut self, endpoint: &Endpoint, backoff: &mut Backoff) -> Attempt {
        // Made while the last connection aged, to the same endpoint, and
        // no -READONLY since (which asks for a role check).
        let prepared = self
            .prepared
            .take()
            .filter(|p| p.endpoint == *endpoint && self.want_master.is_none());
        let ready = match prepared {
            Some(ready) => ready,
            None => {
                let check_role = self.want_master.is_some();
                match self.dialer().connect(endpoint.clone(), check_role).await {
                    Ok(ready) => ready,
                    Err(reason) => return Attempt::Failed(reason),
                }
            }
        };
        if let Some(role) = ready.role.as_deref().filter(|role| *role != "master") {
            return match self.await_master(endpoint, role).await {
                Some(reason) => Attempt::Failed(reason),
                None => Attempt::Again,
            };
        }
        if self.want_master.take().is_some() {
            info!(%endpoint, "a master that serves again after READONLY or LOADING");
        }
        if let Some(peer) = ready.peer {
            self.metrics.reached(endpoint, peer);
        }
        info!(%endpoint, "backend connected");
        self.speaks = ready.speaks;
        self.metrics.connects.increment(1);
        self.health.success();
        let started = Instant::now();
        self.health.connected.fetch_add(1, Ordering::Relaxed);
        let end = self.session(ready.stream, ready.db, ready.peer).await;
        self.health.connected.fetch_sub(1, Ordering::Relaxed);
        match end {
            SessionEnd::Closed => {
                self.fail_waiting(&BackendError::ConnectionLost {
                    backend: self.backend.clone(),
                    reason: "proxy is shutting down".into(),
                });
                Attempt::Stop
            }
            SessionEnd::Switched | SessionEnd::Aged => {
                match end {
                    SessionEnd::Aged => debug!(%endpoint, "connection aged out; replaced"),
                    _ if self.want_master.is_some() => {
                        info!(from = %endpoint, "reconnecting after READONLY or LOADING")
                    }
                    _ => info!(from = %endpoint, "master switched; reconnecting"),
                }
                backoff.reset();
                Attempt::Again
            }
            // Not the backend's failure: where it leads now serves (the
            // session logged why).
            SessionEnd::Failed(BackendError::ConnectionLost { reason, .. })
                if reason == super::LEFT_BEHIND =>
            {
                backoff.reset();
                Attempt::Again
            }
            SessionEnd::Failed(error) => {
                warn!(%error, "backend connection failed");
                self.health.failure();
                self.ask_recheck();
                if started.elapsed() >= STABLE_SESSION {
                    // It was working: retry at once, from the shortest delay.
                    backoff.reset();
                    return Attempt::Again;
                }
                Attempt::Failed(error.to_string())
            }
        }
    }

    /// No master known yet: waits for the monitor's first (jobs wait
    /// queued meanwhile), until `first_master_by`. Whether one came.
    async fn first_master_found(&mut self) -> bool {
        let Some(by) = self.first_master_by.take() else {
            return false;
        };
        matches!(
            tokio::time::timeout_at(by, self.endpoint.changed()).await,
            Ok(Ok(()))
        )
    }

    /// The backend is unavailable for `reason`: what waits gets it, and
    /// until the next attempt (or a new master) jobs are answered at once
    /// instead of waiting. False when the proxy is stopping.
    async fn fail_until_retry(&mut self, reason: BackendError, backoff: &mut Backoff) -> bool {
        let retry_ms = backoff.current().as_millis() as u64;
        warn!(error = %reason, retry_ms, "backend unavailable");
        self.fail_waiting(&reason);
        let retry_at = Instant::now() + backoff.pause();
        loop {
            tokio::select! {
                job = self.jobs.recv() => match job {
                    Some(job) => job.reply.fail(reason.clone(), &self.metrics),
                    None => return false,
                },
                changed = self.endpoint.changed() => {
                    if changed.is_err() {
                        // The monitor is gone: the proxy is stopping.
                        return false;
                    }
                    backoff.reset();
                    return true;
                }
                _ = sleep_until(retry_at) => return true,
            }
        }
    }

    /// A leased connection whose session ended after carrying its
    /// client's commands: the server dropped that client's state (a
    /// WATCH) with the session, and a new one would not have it, so an
    /// EXEC sent there would run unwatched. What waits, and every job
    /// until the lease is dropped, gets [`BackendError::LeaseEnded`]
    /// unsent (its client aborts the EXEC).
    async fn refuse_until_dropped(&mut self) {
        let ended = BackendError::LeaseEnded {
            backend: self.backend.clone(),
        };
        info!("leased connection ended: its client's WATCH went with it");
        self.fail_waiting(&ended);
        while let Some(job) = self.jobs.recv().await {
            job.reply.fail(ended.clone(), &self.metrics);
        }
    }

    /// What makes this connection's sockets, apart from the task.
    fn dialer(&self) -> Dialer {
        Dialer {
            target: self.target.clone(),
            settings: self.settings.clone(),
            proto: self.proto,
            server_id: self.server_id.clone(),
        }
    }

    /// What a session refreshes its host name with: a connection that
    /// reached `peer` through a name, with `[pool] dns_refresh_s` set.
    fn dns_refresh(&self, peer: Option<SocketAddr>) -> Option<Refresh> {
        Refresh::of(&self.settings, self.endpoint.borrow().as_ref(), peer)
    }

    /// The endpoint leads to a replica still (or a master loading its
    /// data), after a `-READONLY` or `-LOADING`: within a request timeout
    /// of it, jobs wait (the name of a managed service moves to the new
    /// master soon after the old one is demoted; a restarted server loads
    /// its data) and `None` says try again shortly; after that, the reason
    /// to fail them.
    async fn await_master(&mut self, endpoint: &Endpoint, role: &str) -> Option<String> {
        let since = self.want_master.get_or_insert_with(Instant::now);
        if since.elapsed() < self.settings.request_timeout {
            debug!(%endpoint, role, "no master that serves yet; waiting");
            tokio::time::sleep(self.settings.backoff_min).await;
            return None;
        }
        Some(match role {
            "loading" => format!("{endpoint} is loading its data"),
            _ => format!(
                "{endpoint} is a replica (ROLE {role}) since it answered READONLY: waiting for its address to lead to a master"
            ),
        })
    }

    /// Answers every job waiting in the lanes with `error`.
    pub(super) fn fail_waiting(&mut self, error: &BackendError) {
        for job in self.lanes.take_all() {
            job.reply.fail(error.clone(), &self.metrics);
        }
    }

    pub(super) fn ask_recheck(&self) {
        if let Some(recheck) = &self.recheck {
            recheck.notify_one();
        }
    }

    /// Serves jobs over one connected socket until it fails or the proxy stops.
    pub(super) async fn session(
        &mut self,
        stream: Stream,
        db: u32,
        peer: Option<SocketAddr>,
    ) -> SessionEnd {
        let mut s = Session::new(db);
        let request_timeout = self.settings.request_timeout;
        // One timer for the oldest unanswered command, not one per command.
        let deadline = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(deadline);
        let mut armed: Option<Instant> = None;
        // One wait for a new master for the whole session (on a copy of the
        // receiver, which has seen the same version): a fresh `changed()` per
        // turn of the loop would register and unregister a waiter each time.
        let mut moved = self.endpoint.clone();
        let master_moved = moved.changed();
        tokio::pin!(master_moved);
        let endpoint = self.endpoint.clone();
        let mut renewal = self.renewal(peer);
        let mut failover = FailoverFlag::new(self.failover.clone());
        let end = loop {
            if let Some(end) = s.finished(self.lanes.queued()) {
                break end;
            }
            // A failover under way, or a new master published that this
            // session has not switched to yet: nothing more goes out here.
            failover.look(&mut s);
            let moved = endpoint.has_changed().unwrap_or(true);
            let held = failover.on || moved;
            // Send what the lanes let go, in one write.
            if let Err(end) = self.send_turn(&mut s, &stream, Send::now(failover.on, moved)) {
                break end;
            }
            arm(deadline.as_mut(), &mut armed, s.due(request_timeout));
            tokio::select! {
                biased;
                ready = stream.readable() => {
                    if let Err(end) = self.read_turn(&mut s, &stream, ready).await {
                        break end;
                    }
                }
                ready = stream.writable(), if !s.outbox.is_empty() || stream.wants_write() => {
                    if let Err(e) = ready.and_then(|_| s.outbox.write_to(&stream)) {
                        break self.lost(e.to_string());
                    }
                }
                job = self.jobs.recv(), if !s.closing => match job {
                    Some(job) => self.admit_turn(job, held).await,
                    // Every handle is gone (a reload removed this backend, or
                    // shutdown): send and answer what waits, then close.
                    None => s.closing = true,
                },
                changed = &mut master_moved, if !s.switching => {
                    let Ok(()) = changed else { break SessionEnd::Closed };
                    s.leave();
                    s.doubt_writes();
                }
                // Only while held, so the usual path pays nothing for it.
                now = failover.changed(), if held && !s.switching => failover.set(now, &mut s),
                // Old enough, or the name moved: the replacement is made
                // first, in a task of its own, while this one serves on; then
                // nothing more is taken here, the replies come in, and the
                // next attempt goes on over the new one.
                renew = renewal.next(), if renewal.armed() && !s.switching => {
                    self.on_renew(renew, &mut renewal, &mut s);
                }
                _ = &mut deadline, if armed.is_some() => {
                    match s.overdue(&self.backend, self.settings.request_timeout) {
                        Overdue::Dead(end) => break end,
                        Overdue::Rearm => armed = None,
                        Overdue::Alive => {}
                    }
                }
            }
        };
        self.close(&mut s, stream, &end);
        end
    }

    /// The session is over: a connection given up with clients still owed
    /// a reply is reset (they get an error, so what of theirs the kernel
    /// still holds must not reach the server later), then what is owed is
    /// settled.
    fn close(&mut self, s: &mut Session, stream: Stream, end: &SessionEnd) {
        if s.owes_clients() {
            stream.abort();
        }
        drop(stream);
        self.forget_server_id();
        self.settle(s, end);
    }

    /// A closed connection's client id names nothing on its server (a
    /// server restarted at the same address counts its ids again): a
    /// CLIENT UNBLOCK aimed at it is answered 0 until the next handshake.
    fn forget_server_id(&self) {
        if let Some(id) = &self.server_id {
            id.forget();
        }
    }

    /// The session's renewal. A shared connection is replaced once it is
    /// this old (`[pool] max_connection_age_s`); one leased to a client
    /// (WATCH, a blocking command) keeps its client's state and is not. One
    /// to a host name looks it up again every `[pool] dns_refresh_s`: once
    /// the name no longer leads to the address reached, a shared one is
    /// replaced as an aged one, and a leased one leaves as after a new
    /// master.
    fn renewal(&self, peer: Option<SocketAddr>) -> Renewal<Ready> {
        let max_age = self
            .settings
            .max_connection_age
            .filter(|_| self.server_id.is_none());
        Renewal::new(max_age, self.dns_refresh(peer), peer)
    }

    /// Sends what the lanes let go, in one write, unless the session is
    /// switching or held back by a failover.
    fn send_turn(
        &mut self,
        s: &mut Session,
        stream: &Stream,
        send: Send,
    ) -> Result<(), SessionEnd> {
        if s.switching || send == Send::Nothing {
            return Ok(());
        }
        if self.fill(s, send == Send::Reads) {
            if let Err(e) = s.outbox.write_to(stream) {
                return Err(self.lost(e.to_string()));
            }
        }
        Ok(())
    }

    /// Takes in what the server sent; after a refusal (READONLY, LOADING)
    /// nothing more goes to that server: once its replies are in, the
    /// session reconnects (jobs wait in the lanes).
    async fn read_turn(
        &mut self,
        s: &mut Session,
        stream: &Stream,
        ready: std::io::Result<()>,
    ) -> Result<(), SessionEnd> {
        if let Err(e) = ready {
            return Err(self.lost(e.to_string()));
        }
        if self.on_readable(s, stream)? {
            tokio::task::yield_now().await;
        }
        if self.want_master.is_some() && !s.switching {
            info!("the server refused a command (READONLY, LOADING): reconnecting to where its address leads now");
            s.switching = true;
        }
        Ok(())
    }

    /// Acts on what the session's renewal says: an aged connection's
    /// replacement is made (in a task of its own, to the current endpoint),
    /// and once it is, or once the name moved, the session renews.
    fn on_renew(&mut self, renew: Renew<Ready>, renewal: &mut Renewal<Ready>, s: &mut Session) {
        match renew {
            Renew::Aged => {
                let current = self.endpoint.borrow().clone();
                match current {
                    Some(to) => renewal.prepare(tokio::spawn(self.dialer().connect(to, false))),
                    None => s.renew(),
                }
            }
            Renew::Prepared(ready) => {
                self.prepared = ready;
                s.renew();
            }
            // A leased connection leaves as after a new master: a blocking
            // command on a primary gone silent at a managed service's
            // failover goes again where the name leads, a request timeout
            // later (see `Session::blocked`); a WATCH ends with its lease.
            Renew::Moved if self.server_id.is_some() => s.leave(),
            Renew::Moved => s.renew(),
        }
    }

    /// Takes `job` and every other job sent in this turn: every client that
    /// is ready this turn queues its command first (one yield puts this task
    /// behind them and behind the next poll of the sockets), then they go
    /// out at once: bigger batches cost Redis and the proxy fewer syscalls
    /// per command. See benches/README.md. A leased connection has one
    /// client, whose jobs queued so far are taken without the yield.
    async fn admit_turn(&mut self, job: Job, held: bool) {
        self.admit(job, held);
        if self.server_id.is_none() {
            tokio::task::yield_now().await;
        }
        while let Ok(job) = self.jobs.try_recv() {
            self.admit(job, held);
        }
    }

    /// Reads what the socket has and hands out every complete reply. Returns
    /// whether to let other tasks run first (after `read_turn` bytes).
    pub(super) fn on_readable(
        &mut self,
        s: &mut Session,
        stream: &Stream,
    ) -> Result<bool, SessionEnd> {
        match stream.try_read_buf(&mut s.rbuf, crate::net::BACKEND_READ) {
            Ok(0) => Err(self.lost(super::CLOSED_BY_THE_SERVER.into())),
            Ok(n) => {
                s.progress = Instant::now();
                self.take_replies(&mut s.rbuf, &mut s.owed, s.progress)?;
                // A stream of large replies could keep this task reading for
                // milliseconds: after `read_turn` bytes, the clients it woke
                // (and everyone else) go first.
                s.read_in_turn += n;
                if s.read_in_turn >= self.read_turn {
                    s.read_in_turn = 0;
                    return Ok(true);
                }
                Ok(false)
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(self.lost(e.to_string())),
        }
    }

    /// The session is over: whatever is still owed gets the error (its
    /// command may or may not have run), and nothing is in flight any more.
    pub(super) fn settle(&mut self, s: &mut Session, end: &SessionEnd) {
        self.requeue_retries();
        let error = match end {
            SessionEnd::Failed(error) => error.clone(),
            SessionEnd::Closed | SessionEnd::Switched | SessionEnd::Aged => {
                BackendError::ConnectionLost {
                    backend: self.backend.clone(),
                    reason: "proxy is shutting down".into(),
                }
            }
        };
        let mut failed = 0u64;
        let now = Instant::now();
        for item in s.owed.drain(..) {
            let error = owed_error(&error, item.sent_at(), now);
            match item {
                Owed::Client { reply, .. } | Owed::Unconfirmed { reply, .. } => {
                    failed += 1;
                    let _ = reply.send(Err(error));
                }
                Owed::Batch {
                    reply,
                    count,
                    replies,
                    ..
                } => {
                    failed += (count - replies.len()) as u64;
                    let _ = reply.send(Err(error));
                }
                Owed::Select { .. } | Owed::Wait { .. } => {}
            }
        }
        // Writes whose reply came but not their WAIT's: not confirmed.
        for unconfirmed in self.unconfirmed.drain(..) {
            match unconfirmed {
                Unconfirmed::One { reply, .. } => {
                    failed += 1;
                    let _ = reply.send(Err(error.clone()));
                }
                Unconfirmed::Transaction { reply, replies } => {
                    failed += replies.len() as u64;
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
        self.metrics.failed.add(failed);
        self.lanes.clear_in_flight();
    }

    pub(super) fn lost(&self, reason: String) -> SessionEnd {
        SessionEnd::Failed(BackendError::ConnectionLost {
            backend: self.backend.clone(),
            reason,
        })
    }
}

/// Sets the session's one timer to `due`, the oldest unanswered command's
/// deadline, when that changed.
fn arm(deadline: Pin<&mut Sleep>, armed: &mut Option<Instant>, due: Option<Instant>) {
    if let Some(at) = due.filter(|_| *armed != due) {
        deadline.reset(at);
    }
    *armed = due;
}
