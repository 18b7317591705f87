//! Backend connections: a few long-lived connections per Redis server and
//! per worker thread, shared by the worker's clients, with requests
//! pipelined and replies matched in order. A client's jobs go on its own
//! worker's connections (see [`crate::workers`]), so they never cross threads.
//!
//! Each connection is one task that owns its socket, a queue of jobs from
//! clients (`mpsc`), their lanes (one per client, taken in turn: see
//! [`lanes`]) and the FIFO of replies it owes (`owed`). Reading and
//! writing happen in the same `select!` loop, so there is no lock and no way
//! for a full socket in one direction to stall the other. Every job gets
//! exactly one answer: the backend's reply, or an error when the connection
//! fails, times out or cannot be made. Nothing waits forever.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info, warn, Instrument};

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};

use tokio::sync::{watch, Notify};

pub mod cluster;
mod lanes;

use lanes::{Lanes, Queued};

use crate::config::{Endpoint, Target};
pub use crate::dial::PoolSettings;
use crate::dial::{call, handshake, jitter, DialError};
use crate::metrics::BackendMetrics;
use crate::net::{Outbox, Stream};
use crate::protocol::{encode_command, reply_extent, Proto, Reply};
use crate::workers::Workers;

/// Unwritten bytes per connection before it stops taking jobs.
const WRITE_HIGH_WATER: usize = 1024 * 1024;
/// Reply bytes a connection reads before it lets other tasks run.
const READ_TURN: usize = 256 * 1024;
/// A client whose replies from backends average more than this goes on
/// its backend's connection for large replies (see [`Origin`]).
pub const LARGE_REPLY_BYTES: u64 = 16 * 1024;
/// A session shorter than this counts as a failed attempt for the backoff.
const STABLE_SESSION: Duration = Duration::from_secs(1);

/// How often a connection blocked on a client's BLPOP looks whether that
/// client is still there.
const BLOCKED_CHECK: Duration = Duration::from_millis(500);

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
    fn is_closed(&self) -> bool {
        match self {
            ReplyTo::One(tx) => tx.is_closed(),
            ReplyTo::Many { tx, .. } => tx.is_closed(),
        }
    }

    /// Answers with `error`, counting the requests it fails in `metrics`.
    fn fail(self, error: BackendError, metrics: &BackendMetrics) {
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
    /// A single write: follow it with WAIT when the backend has
    /// `min_replicas_ack`. Batches never carry such writes.
    pub write: bool,
    /// It came while a failover held the connection.
    held: bool,
    /// A blocking command (BLPOP): its reply may take this long, on a held
    /// connection that is not overdue meanwhile.
    blocks_for: Option<Duration>,
    /// Told once the command is written to the server (a blocking
    /// command's client counts as blocked from then, as on the server).
    written: Option<oneshot::Sender<()>>,
}

impl Job {
    fn new(origin: Origin, payload: Bytes, db: u32, reply: ReplyTo, write: bool) -> Job {
        Job {
            origin,
            payload,
            db,
            reply,
            write,
            held: false,
            blocks_for: None,
            written: None,
        }
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

/// Whether a backend is serving, decided on streaks of results rather than
/// on one: `failures` consecutive failures mark it down, `successes`
/// consecutive successes mark it up again.
#[derive(Debug)]
pub struct Health {
    id: Arc<str>,
    up: AtomicBool,
    /// Connections currently established.
    connected: AtomicUsize,
    metrics: Arc<BackendMetrics>,
    /// Positive: consecutive successes; negative: consecutive failures.
    streak: AtomicI64,
    failures: i64,
    successes: i64,
    /// When the last success came, in ms after `since`: a backend with none
    /// for a probe interval is idle, and probed.
    since: Instant,
    last_success_ms: AtomicU64,
    /// The server's version at the last connect, packed (0: not known yet).
    version: AtomicU64,
}

impl Health {
    fn new(id: Arc<str>, settings: &PoolSettings, metrics: Arc<BackendMetrics>) -> Health {
        Health {
            id,
            up: AtomicBool::new(true),
            connected: AtomicUsize::new(0),
            metrics,
            streak: AtomicI64::new(0),
            failures: settings.health_failures as i64,
            successes: settings.health_successes as i64,
            since: Instant::now(),
            last_success_ms: AtomicU64::new(0),
            version: AtomicU64::new(0),
        }
    }

    /// How long since the last success (a reply, a connect or a probe).
    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_success_ms.load(Ordering::Relaxed));
        self.since.elapsed().saturating_sub(last)
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn success(&self) {
        self.success_at(Instant::now());
    }

    /// A success seen at `at` (a reply read then: the caller has the time).
    /// Every worker's connections report here on every read: in the steady
    /// state (up, the streak past the threshold, the millisecond already
    /// noted) nothing is written, so the lines stay shared between cores.
    fn success_at(&self, at: Instant) {
        let since_start = at.saturating_duration_since(self.since).as_millis() as u64;
        if self.last_success_ms.load(Ordering::Relaxed) != since_start {
            self.last_success_ms.store(since_start, Ordering::Relaxed);
        }
        if self.is_up() && self.streak.load(Ordering::Relaxed) >= self.successes.max(1) {
            return;
        }
        let streak = self.record(|s| if s < 0 { 1 } else { s.saturating_add(1) });
        if streak >= self.successes && !self.up.swap(true, Ordering::Relaxed) {
            self.metrics.up.set(1.0);
            info!(backend = %self.id, "backend is up");
        }
    }

    fn failure(&self) {
        let streak = self.record(|s| if s > 0 { -1 } else { s.saturating_sub(1) });
        self.metrics.errors.increment(1);
        if -streak >= self.failures && self.up.swap(false, Ordering::Relaxed) {
            self.metrics.up.set(0.0);
            warn!(backend = %self.id, "backend is down");
        }
    }

    fn record(&self, step: impl Fn(i64) -> i64) -> i64 {
        let previous = self
            .streak
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| Some(step(s)))
            .unwrap_or_else(|s| s);
        step(previous)
    }
}

/// Who sends a job, which decides the connection it goes on: a client
/// always uses the same one of `[pool] connections` (its commands to one
/// backend stay in order), unless its replies are large (over
/// [`LARGE_REPLY_BYTES`] on average), when it uses the backend's connection
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

/// Where a backend's connections learn the address to use: a fixed one, or
/// the master a Sentinel monitor publishes (started by the topology, see
/// `shared.rs`), with its re-check and failover signals.
pub struct Discovery {
    endpoint: watch::Receiver<Option<Endpoint>>,
    /// Asks the Sentinel monitor to re-check the master at once.
    recheck: Option<Arc<Notify>>,
    /// True while the Sentinel group fails its master over.
    failover: Option<watch::Receiver<bool>>,
    /// Keeps a fixed endpoint's channel open.
    keep: Option<Arc<watch::Sender<Option<Endpoint>>>>,
}

impl Discovery {
    pub fn fixed(endpoint: Endpoint) -> Discovery {
        let (tx, rx) = watch::channel(Some(endpoint));
        Discovery {
            endpoint: rx,
            recheck: None,
            failover: None,
            keep: Some(Arc::new(tx)),
        }
    }

    /// A Sentinel monitor's master, re-check request and failover flag.
    pub fn sentinel(
        endpoint: watch::Receiver<Option<Endpoint>>,
        recheck: Arc<Notify>,
        failover: watch::Receiver<bool>,
    ) -> Discovery {
        Discovery {
            endpoint,
            recheck: Some(recheck),
            failover: Some(failover),
            keep: None,
        }
    }
}

/// Starts one more connection task of a backend on a worker (numbered, for
/// its span), speaking a protocol: `(worker, number, proto, server_id)`;
/// with `server_id`, the connection asks the server its client id after
/// each handshake and keeps it there (held connections: CLIENT UNBLOCK).
#[derive(Clone)]
#[allow(clippy::type_complexity)]
struct Spawn(
    Arc<
        dyn Fn(usize, usize, Proto, Option<Arc<AtomicU64>>) -> mpsc::UnboundedSender<Job>
            + Send
            + Sync,
    >,
);

/// A connection made ahead to be held: its queue, and the server's id of
/// it once connected (0 until then).
type Spare = (mpsc::UnboundedSender<Job>, Arc<AtomicU64>);

/// One worker thread's connections to a backend (see [`crate::workers`]):
/// a client's jobs go on its own worker's, so they never cross threads.
#[derive(Debug, Default)]
struct WorkerPool {
    /// One sender per connection task; the tasks end when every handle is dropped.
    /// Unbounded: what one client can queue is bounded by its pipeline limit
    /// (`limits.max_pipeline`), so all of it by `max_clients` times that.
    queues: Vec<mpsc::UnboundedSender<Job>>,
    /// The connection for clients of large replies, started on first use.
    bulk: OnceLock<mpsc::UnboundedSender<Job>>,
    /// The same for RESP3 clients: connections speaking RESP3, started on
    /// the first RESP3 request.
    queues3: OnceLock<Vec<mpsc::UnboundedSender<Job>>>,
    bulk3: OnceLock<mpsc::UnboundedSender<Job>>,
    /// A connection made ahead for the next client to hold one (WATCH, a
    /// blocking command), per protocol, after the first did: its command
    /// then goes out at once, not after a connect and handshake (a BLPOP
    /// reaches the server before the LPUSH another client sends just after
    /// it, as it would on Redis).
    spare: std::sync::Mutex<[Option<Spare>; 2]>,
}

impl std::fmt::Debug for Spawn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Spawn")
    }
}

/// A client's handle on one backend: the job queues of its connections.
#[derive(Debug, Clone)]
pub struct Backend {
    pub id: Arc<str>,
    /// Every worker's connections, indexed by worker: `[pool] connections`
    /// each (and one for large replies, started on first use).
    pools: Arc<[WorkerPool]>,
    /// The worker threads the connections run on.
    workers: Workers,
    /// Starts one more connection task on a worker.
    spawn: Spawn,
    /// Connections held for single clients now (see [`Backend::hold`]).
    held: Arc<HeldCount>,
    pub health: Arc<Health>,
    /// The address connections use: fixed, or the master the sentinels name.
    /// The sender is kept by the Sentinel monitor task (or here, for a fixed one).
    pub endpoint: watch::Receiver<Option<Endpoint>>,
    /// Keeps a fixed endpoint's channel open; `None` for a Sentinel backend.
    _fixed: Option<Arc<watch::Sender<Option<Endpoint>>>>,
    /// Stops the health probe when the last handle is dropped.
    _probe: Arc<DropGuard>,
    /// What it was started with, so a reload can tell whether it changed.
    target: Target,
    min_replicas_ack: u32,
    settings: Arc<PoolSettings>,
    /// A Redis Cluster: its nodes' backends, the slot map picking one per
    /// job. No connection of this handle's own then.
    cluster: Option<Arc<cluster::Cluster>>,
}

impl Backend {
    /// Starts the backend's connection tasks (and its Sentinel monitor) on the
    /// current runtime.
    pub fn start(
        id: Arc<str>,
        target: Target,
        min_replicas_ack: u32,
        settings: Arc<PoolSettings>,
        discovery: Discovery,
        metrics: Arc<BackendMetrics>,
    ) -> Backend {
        let Discovery {
            endpoint,
            recheck,
            failover,
            keep: fixed,
        } = discovery;
        let health = Arc::new(Health::new(id.clone(), &settings, metrics.clone()));
        let stop_probe = CancellationToken::new();
        let probe = Probe {
            health: health.clone(),
            endpoint: endpoint.clone(),
            target: target.clone(),
            settings: settings.clone(),
        };
        tokio::spawn(
            probe
                .run(stop_probe.clone())
                .instrument(tracing::info_span!("probe", backend = %id)),
        );
        tokio::spawn(learn_version(
            health.clone(),
            endpoint.clone(),
            target.clone(),
            settings.connect_timeout,
            stop_probe.clone(),
        ));
        let pool = settings.connections;
        let workers = Workers::current();
        let spawn = {
            let (id, target, settings) = (id.clone(), target.clone(), settings.clone());
            let (endpoint, health) = (endpoint.clone(), health.clone());
            let workers = workers.clone();
            move |worker: usize, conn: usize, proto: Proto, server_id: Option<Arc<AtomicU64>>| {
                let (tx, rx) = mpsc::unbounded_channel();
                let task = Connection {
                    backend: id.clone(),
                    target: target.clone(),
                    settings: settings.clone(),
                    jobs: rx,
                    endpoint: endpoint.clone(),
                    recheck: recheck.clone(),
                    failover: failover.clone(),
                    health: health.clone(),
                    min_replicas_ack,
                    held: None,
                    lanes: Lanes::default(),
                    // The connection after the pool's is the one for large replies.
                    read_turn: if conn >= pool { READ_TURN } else { usize::MAX },
                    metrics: metrics.clone(),
                    proto,
                    speaks: Proto::Resp2,
                    server_id,
                };
                let span =
                    tracing::info_span!("backend", id = %id, worker, conn, proto = proto.number());
                workers.spawn_on(worker, task.run().instrument(span));
                tx
            }
        };
        let pools: Vec<_> = (0..workers.len())
            .map(|worker| WorkerPool {
                queues: (0..pool)
                    .map(|conn| spawn(worker, conn, Proto::Resp2, None))
                    .collect(),
                bulk: OnceLock::new(),
                queues3: OnceLock::new(),
                bulk3: OnceLock::new(),
                spare: Default::default(),
            })
            .collect();
        Backend {
            id,
            pools: pools.into(),
            workers,
            spawn: Spawn(Arc::new(spawn)),
            held: Arc::default(),
            health,
            endpoint,
            _fixed: fixed,
            _probe: Arc::new(stop_probe.drop_guard()),
            target,
            min_replicas_ack,
            settings,
            cluster: None,
        }
    }

    /// A Redis Cluster behind one backend id (`cluster = { seeds, ... }`):
    /// no connection of its own; each job goes to a node's backend (see
    /// [`cluster`]).
    pub fn start_cluster(
        id: Arc<str>,
        target: Target,
        min_replicas_ack: u32,
        settings: Arc<PoolSettings>,
        metrics: Arc<BackendMetrics>,
    ) -> Backend {
        let health = Arc::new(Health::new(id.clone(), &settings, metrics));
        let (fixed, endpoint) = watch::channel(None);
        let cluster = cluster::Cluster::start(
            id.clone(),
            target.clone(),
            min_replicas_ack,
            settings.clone(),
        );
        // Nothing is ever sent through these: `enqueue_on` routes first,
        // and `hold` gives no held connection.
        let spawn =
            |_: usize, _: usize, _: Proto, _: Option<Arc<AtomicU64>>| mpsc::unbounded_channel().0;
        Backend {
            id,
            pools: Vec::new().into(),
            workers: Workers::current(),
            spawn: Spawn(Arc::new(spawn)),
            held: Arc::default(),
            health,
            endpoint,
            _fixed: Some(Arc::new(fixed)),
            _probe: Arc::new(CancellationToken::new().drop_guard()),
            target,
            min_replicas_ack,
            settings,
            cluster: Some(cluster),
        }
    }

    /// The cluster behind this backend, for a cluster backend.
    pub fn cluster(&self) -> Option<&Arc<cluster::Cluster>> {
        self.cluster.as_ref()
    }

    /// For a cluster backend, the error a command that needs a connection
    /// of its own (`what`: a transaction, a blocking command, a
    /// subscription) gets: not supported there yet.
    pub fn cluster_refusal(&self, what: &str) -> Option<String> {
        self.cluster.as_ref().map(|_| {
            format!(
                "ERR backend '{}' is a Redis Cluster: {what} is not supported on it yet",
                self.id
            )
        })
    }

    /// Whether a client's commands may be gathered into one job for this
    /// backend: not for a cluster, whose nodes are picked per command.
    pub fn batches(&self) -> bool {
        self.cluster.is_none()
    }

    pub fn is_up(&self) -> bool {
        match &self.cluster {
            Some(cluster) => cluster.is_up(),
            None => self.health.is_up(),
        }
    }

    /// Sentinels known to this backend's monitor (0 for a fixed address).
    pub fn sentinels_known(&self) -> usize {
        self.health.metrics.sentinels.load(Ordering::Relaxed)
    }

    /// The backend's counters and histograms, for INFO, /metrics and /status.
    pub fn metrics(&self) -> &BackendMetrics {
        &self.health.metrics
    }

    /// The server's version, once a connection has been made.
    pub fn version(&self) -> Option<crate::dial::Version> {
        if let Some(cluster) = &self.cluster {
            return cluster.version();
        }
        crate::dial::Version::unpacked(self.health.version.load(Ordering::Relaxed))
    }

    /// Established connections.
    pub fn connected(&self) -> usize {
        match &self.cluster {
            Some(cluster) => cluster.nodes().iter().map(Backend::connected).sum(),
            None => self.health.connected.load(Ordering::Relaxed),
        }
    }

    /// Whether this backend was started with these settings (a reload keeps it).
    pub fn same_as(&self, target: &Target, min_replicas_ack: u32, settings: &PoolSettings) -> bool {
        self.target == *target
            && self.min_replicas_ack == min_replicas_ack
            && *self.settings == *settings
    }

    /// Whether two handles talk to the same Redis server (or Sentinel
    /// group), whatever their ids: where a key is, not how it is reached.
    pub fn same_server(&self, other: &Backend) -> bool {
        self.target.source == other.target.source
    }

    /// Whether two handles drive the same connection tasks.
    pub fn same_task(&self, other: &Backend) -> bool {
        Arc::ptr_eq(&self.pools, &other.pools)
    }

    /// Queues a command and returns where its reply will arrive, on the
    /// connection `origin` picks (see [`Origin`]).
    pub fn send(
        &self,
        origin: Origin,
        payload: Bytes,
        db: u32,
        write: bool,
    ) -> oneshot::Receiver<BackendResult> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(Job::new(origin, payload, db, ReplyTo::One(tx), write));
        rx
    }

    /// Queues `count` commands (no write that needs a WAIT among them) that
    /// are answered together, in order.
    pub fn send_batch(
        &self,
        origin: Origin,
        payload: Bytes,
        count: usize,
        db: u32,
    ) -> oneshot::Receiver<BatchResult> {
        let (tx, rx) = oneshot::channel();
        self.enqueue(Job::new(
            origin,
            payload,
            db,
            ReplyTo::Many { tx, count },
            false,
        ));
        rx
    }

    /// A connection of its own for one client (a WATCH until its EXEC),
    /// closed when the handle is dropped; refused when `[pool]
    /// max_held_connections` are held already, or the client's user holds
    /// its share.
    pub fn hold(&self, share: Share<'_>, proto: Proto) -> Result<Held, HoldRefused> {
        if self.cluster.is_some() {
            return Err(HoldRefused::Cluster);
        }
        let (ticket, count) = self.held.take(share, self.settings.max_held)?;
        // On the client's own worker, numbered after the pool's.
        let worker = self.workers.here();
        let number = self.settings.connections + 1 + count;
        let spawn = || {
            let server_id = Arc::new(AtomicU64::new(0));
            let queue = (self.spawn.0)(worker, number, proto, Some(server_id.clone()));
            (queue, server_id)
        };
        let (queue, server_id) = match self.pools.get(worker) {
            Some(pool) => {
                let mut spare = pool.spare.lock().unwrap_or_else(|e| e.into_inner());
                let slot = &mut spare[usize::from(proto == Proto::Resp3)];
                let ready = slot.take().filter(|(q, _)| !q.is_closed());
                *slot = Some(spawn());
                ready.unwrap_or_else(spawn)
            }
            None => spawn(),
        };
        Ok(Held {
            queue,
            server_id,
            _ticket: ticket,
        })
    }

    /// One command on a connection made for it, with AUTH only (SCRIPT KILL
    /// reaches a server that is busy with a script this way).
    pub async fn ask_apart(&self, args: Vec<Bytes>) -> Result<Reply, crate::dial::DialError> {
        let endpoint = self.endpoint.borrow().clone();
        let Some(endpoint) = endpoint else {
            return Err(crate::dial::DialError::Closed);
        };
        let asked = crate::dial::ask_once(&endpoint, &self.target, args);
        match timeout(self.settings.connect_timeout, asked).await {
            Ok(done) => done,
            Err(_) => Err(crate::dial::DialError::Closed),
        }
    }

    /// CLIENT UNBLOCK of one of this backend's held connections (its
    /// server's client id), on a connection of its own: the server's
    /// answer (`:1` when the connection was blocked and is no longer).
    pub async fn unblock(
        &self,
        server_id: u64,
        error: bool,
    ) -> Result<Reply, crate::dial::DialError> {
        let reason: &'static [u8] = if error { b"ERROR" } else { b"TIMEOUT" };
        self.ask_apart(vec![
            Bytes::from_static(b"CLIENT"),
            Bytes::from_static(b"UNBLOCK"),
            Bytes::from(server_id.to_string()),
            Bytes::from_static(reason),
        ])
        .await
    }

    /// A connection apart from the pool, to the current endpoint, made
    /// ready as the pool's are (Pub/Sub links: `crate::pubsub::link`).
    pub async fn connect_apart(&self) -> Result<crate::net::Stream, crate::dial::DialError> {
        let endpoint = self.endpoint.borrow().clone();
        let Some(endpoint) = endpoint else {
            return Err(crate::dial::DialError::Io(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "no master known yet",
            )));
        };
        let connecting = crate::dial::handshake(&endpoint, &self.target, self.settings.databases);
        match timeout(self.settings.connect_timeout, connecting).await {
            Ok(done) => done.map(|(stream, _)| stream),
            Err(_) => Err(crate::dial::DialError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connect timed out",
            ))),
        }
    }

    /// Counts one more connection held for a single client (a Pub/Sub
    /// link) against `[pool] max_held_connections` and the user's share,
    /// until dropped.
    pub fn reserve(&self, share: Share<'_>) -> Result<Reserved, HoldRefused> {
        if self.cluster.is_some() {
            return Err(HoldRefused::Cluster);
        }
        let (ticket, _) = self.held.take(share, self.settings.max_held)?;
        Ok(Reserved { _ticket: ticket })
    }

    /// Queues a command on a held connection.
    pub fn send_held(
        &self,
        held: &Held,
        origin: Origin,
        payload: Bytes,
        db: u32,
    ) -> oneshot::Receiver<BackendResult> {
        let (tx, rx) = oneshot::channel();
        let job = Job::new(origin, payload, db, ReplyTo::One(tx), false);
        self.enqueue_on(job, Some(&held.queue));
        rx
    }

    /// Queues a blocking command (BLPOP, XREAD BLOCK) on a held
    /// connection: its reply may take `blocks_for` (plus the request
    /// timeout) without the connection counting as dead; if the client goes
    /// away meanwhile, the connection is closed, which unblocks the server.
    /// Queues a blocking command on a held connection: where its reply
    /// will arrive, and word once it is written to the server.
    pub fn send_blocking(
        &self,
        held: &Held,
        origin: Origin,
        payload: Bytes,
        db: u32,
        blocks_for: Duration,
    ) -> (oneshot::Receiver<BackendResult>, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let (written, on_written) = oneshot::channel();
        let mut job = Job::new(origin, payload, db, ReplyTo::One(tx), false);
        job.blocks_for = Some(blocks_for);
        job.written = Some(written);
        self.enqueue_on(job, Some(&held.queue));
        (rx, on_written)
    }

    /// Queues `count` commands on a held connection, answered together.
    pub fn send_batch_held(
        &self,
        held: &Held,
        origin: Origin,
        payload: Bytes,
        count: usize,
        db: u32,
    ) -> oneshot::Receiver<BatchResult> {
        let (tx, rx) = oneshot::channel();
        let job = Job::new(origin, payload, db, ReplyTo::Many { tx, count }, false);
        self.enqueue_on(job, Some(&held.queue));
        rx
    }

    /// Whether writes to this backend are followed by WAIT.
    pub fn waits_for_replicas(&self) -> bool {
        self.min_replicas_ack > 0
    }

    fn enqueue(&self, job: Job) {
        self.enqueue_on(job, None);
    }

    /// Queues `job` on `held`, or on the connection its origin picks.
    fn enqueue_on(&self, job: Job, held: Option<&mpsc::UnboundedSender<Job>>) {
        if let (Some(cluster), None) = (&self.cluster, held) {
            return cluster.route(job);
        }
        if !self.health.is_up() {
            // Down: answer at once rather than wait on a connect attempt;
            // the probe brings the backend back.
            self.health.metrics.fast_failures.increment(1);
            let error = BackendError::Unavailable {
                backend: self.id.clone(),
                reason: format!(
                    "down; probed every {} ms",
                    self.settings.probe_interval.as_millis()
                ),
            };
            job.reply.fail(error, &self.health.metrics);
            return;
        }
        let origin = job.origin;
        // The caller's worker; from any other thread, worker 0's (counted).
        let worker = if self.workers.len() == 1 {
            0
        } else {
            self.workers.position().unwrap_or_else(|| {
                self.health.metrics.cross_thread.increment(1);
                self.health
                    .metrics
                    .cross_thread_jobs
                    .fetch_add(1, Ordering::Relaxed);
                0
            })
        };
        let pool = self.pools.get(worker);
        let large = self.settings.connections;
        let spawn = |conn: usize, proto: Proto| (self.spawn.0)(worker, conn, proto, None);
        let queue = match (held, pool) {
            (Some(held), _) => Some(held),
            (None, Some(pool)) => {
                let (queues, bulk) = match origin.proto {
                    Proto::Resp2 => (&pool.queues, &pool.bulk),
                    Proto::Resp3 => (
                        pool.queues3.get_or_init(|| {
                            (0..pool.queues.len())
                                .map(|conn| spawn(conn, Proto::Resp3))
                                .collect()
                        }),
                        &pool.bulk3,
                    ),
                };
                if origin.large_replies {
                    Some(bulk.get_or_init(|| spawn(large, origin.proto)))
                } else {
                    queues.get((origin.client % queues.len().max(1) as u64) as usize)
                }
            }
            (None, None) => None,
        };
        if let Some(queue) = queue {
            if let Err(mpsc::error::SendError(job)) = queue.send(job) {
                let error = BackendError::ConnectionLost {
                    backend: self.id.clone(),
                    reason: "proxy is shutting down".into(),
                };
                job.reply.fail(error, &self.health.metrics);
            }
        }
    }

    /// Sends already split arguments.
    pub fn send_args(
        &self,
        origin: Origin,
        args: &[Bytes],
        db: u32,
        write: bool,
    ) -> oneshot::Receiver<BackendResult> {
        let mut buf = BytesMut::new();
        encode_command(args, &mut buf);
        self.send(origin, buf.freeze(), db, write)
    }
}

/// Asks the server its version on a connection of its own until it
/// answers (every few seconds while it cannot be reached; a server that
/// answers without a version is left unknown):
/// INFO and HELLO report the lowest of the backends'. Apart from the
/// client path, so a server without INFO affects nothing else.
async fn learn_version(
    health: Arc<Health>,
    mut endpoint: watch::Receiver<Option<Endpoint>>,
    target: Target,
    connect_timeout: Duration,
    stop: CancellationToken,
) {
    const AGAIN: Duration = Duration::from_secs(5);
    loop {
        let current = endpoint.borrow_and_update().clone();
        if let Some(current) = current {
            let asked = timeout(connect_timeout, crate::dial::version(&current, &target)).await;
            if let Ok(Ok(answer)) = asked {
                if let Some(version) = answer {
                    health.version.store(version.packed(), Ordering::Relaxed);
                }
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(AGAIN) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// A connection counted against `[pool] max_held_connections` until dropped.
#[derive(Debug)]
pub struct Reserved {
    _ticket: Ticket,
}

/// A connection held for one client; it closes when this is dropped.
#[derive(Debug)]
pub struct Held {
    queue: mpsc::UnboundedSender<Job>,
    /// The server's client id of the connection (0: not known yet).
    server_id: Arc<AtomicU64>,
    _ticket: Ticket,
}

impl Held {
    /// The server's client id of this connection, as it said after the
    /// handshake (CLIENT UNBLOCK names it); 0 when not known.
    pub fn server_id(&self) -> Arc<AtomicU64> {
        self.server_id.clone()
    }
}

/// Whose connection a held one is: a named user and its share of `[pool]
/// max_held_connections` on each backend, or `None` for the default user
/// (held to the pool's limit only).
pub type Share<'a> = Option<(&'a Bytes, usize)>;

/// Why no connection could be held for a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldRefused {
    /// `[pool] max_held_connections` are held already.
    Pool,
    /// The user holds its share already.
    User(usize),
    /// A Redis Cluster backend holds no connection for one client.
    Cluster,
}

impl HoldRefused {
    /// The client's error, for `what` the connection was wanted for.
    pub fn message(self, backend: &str, user: Option<&Bytes>, what: &str) -> String {
        match self {
            HoldRefused::Pool | HoldRefused::Cluster => format!(
                "ERR backend '{backend}' has [pool] max_held_connections held already: no connection for {what}"
            ),
            HoldRefused::User(limit) => format!(
                "ERR user '{}' holds {limit} connections to backend '{backend}' already, its share ([[users]] max_held_connections): no connection for {what}",
                String::from_utf8_lossy(user.map_or(&b""[..], |u| &u[..]))
            ),
        }
    }
}

/// Connections held for single clients on one backend: in all, and per
/// named user.
#[derive(Debug, Default)]
struct HeldCount {
    total: AtomicUsize,
    by_user: std::sync::Mutex<std::collections::HashMap<Bytes, usize>>,
}

/// One held connection's place in [`HeldCount`], given back when dropped.
#[derive(Debug)]
struct Ticket {
    count: Arc<HeldCount>,
    user: Option<Bytes>,
}

trait TakeHeld {
    /// Counts one more held connection for `share`, within `max` in all;
    /// the ticket and how many were held before it.
    fn take(&self, share: Share<'_>, max: usize) -> Result<(Ticket, usize), HoldRefused>;
}

impl TakeHeld for Arc<HeldCount> {
    fn take(&self, share: Share<'_>, max: usize) -> Result<(Ticket, usize), HoldRefused> {
        let count = self.total.fetch_add(1, Ordering::AcqRel);
        if count >= max {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(HoldRefused::Pool);
        }
        if let Some((user, limit)) = share {
            let mut by_user = self.by_user.lock().unwrap_or_else(|e| e.into_inner());
            let mine = by_user.entry(user.clone()).or_default();
            if *mine >= limit {
                drop(by_user);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(HoldRefused::User(limit));
            }
            *mine += 1;
        }
        let ticket = Ticket {
            count: self.clone(),
            user: share.map(|(u, _)| u.clone()),
        };
        Ok((ticket, count))
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(user) = &self.user {
            let mut by_user = self.count.by_user.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(mine) = by_user.get_mut(user) {
                *mine -= 1;
                if *mine == 0 {
                    by_user.remove(user);
                }
            }
        }
        self.count.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A reply the connection owes, in the order the commands were written.
enum Owed {
    /// A client's command.
    Client {
        client: u64,
        reply: oneshot::Sender<BackendResult>,
        sent_at: Instant,
        /// A blocking command's reply is not due before this.
        blocked_until: Option<Instant>,
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
    },
    /// A SELECT the proxy inserted to switch databases.
    Select { sent_at: Instant },
    /// A write whose reply is held until the WAIT after it answers.
    Held { sent_at: Instant },
    /// The WAIT after a held write: it decides what the client gets.
    Wait {
        client: u64,
        reply: oneshot::Sender<BackendResult>,
        replicas: u32,
        sent_at: Instant,
    },
}

impl Owed {
    fn sent_at(&self) -> Instant {
        match self {
            Owed::Client { sent_at, .. }
            | Owed::Batch { sent_at, .. }
            | Owed::Select { sent_at }
            | Owed::Held { sent_at }
            | Owed::Wait { sent_at, .. } => *sent_at,
        }
    }
}

/// Why a session on a connected socket ended.
enum SessionEnd {
    /// Every `Backend` handle is gone: the proxy is shutting down.
    Closed,
    /// The master moved; everything sent to the old one has been answered.
    Switched,
    Failed(BackendError),
}

/// One connected socket's state: the replies it owes, in order, what waits
/// to be written, what was read and not yet framed, and how the session
/// should end.
struct Session {
    owed: VecDeque<Owed>,
    outbox: Outbox,
    rbuf: BytesMut,
    /// The database the connection has selected.
    db: u32,
    /// The connection is dead only when no reply bytes came for a request
    /// timeout, never because requests queued behind a big batch are old:
    /// `progress` is when bytes last came, `floor` the progress the deadline
    /// last took into account (moved forward when it fires).
    progress: Instant,
    floor: Instant,
    /// Bytes read since this task last let others run.
    read_in_turn: usize,
    /// After a master switch: send nothing more, answer what was sent, then
    /// go (what waits in the lanes goes to the new master).
    switching: bool,
    /// The job queue is closed: send what waits, answer it, then end.
    closing: bool,
}

impl Session {
    fn new(db: u32) -> Session {
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
            closing: false,
        }
    }

    /// How the session ends now, if it does: switched once everything sent
    /// is answered, closed once that and everything waiting (`queued` jobs)
    /// is.
    fn finished(&self, queued: usize) -> Option<SessionEnd> {
        if !self.owed.is_empty() {
            return None;
        }
        if self.switching {
            return Some(SessionEnd::Switched);
        }
        (self.closing && queued == 0).then_some(SessionEnd::Closed)
    }

    /// When the oldest reply owed is overdue (none owed: never). A blocking
    /// command is looked at every [`BLOCKED_CHECK`] meanwhile, to see
    /// whether its client is still there.
    fn due(&self, request_timeout: Duration) -> Option<Instant> {
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

    /// At the deadline, for a blocking command owed first: `Some(true)` when
    /// its client is gone (close the connection: the server unblocks),
    /// `Some(false)` while it may still be blocked.
    fn blocked(&self, request_timeout: Duration) -> Option<bool> {
        match self.owed.front()? {
            Owed::Client {
                reply,
                blocked_until: Some(until),
                ..
            } => {
                if reply.is_closed() {
                    return Some(true);
                }
                (Instant::now() < *until + request_timeout).then_some(false)
            }
            _ => None,
        }
    }

    /// The deadline fired: whether replies are still coming (the connection
    /// is alive, only busy), in which case the deadline moves on from them.
    fn still_alive(&mut self, request_timeout: Duration) -> bool {
        if self.progress > self.floor && self.progress + request_timeout > Instant::now() {
            self.floor = self.progress;
            return true;
        }
        false
    }
}

/// One backend connection's task.
struct Connection {
    backend: Arc<str>,
    target: Target,
    settings: Arc<PoolSettings>,
    /// Jobs from clients; closed when every `Backend` handle is dropped.
    jobs: mpsc::UnboundedReceiver<Job>,
    /// The current address (the master, for a Sentinel group).
    endpoint: watch::Receiver<Option<Endpoint>>,
    /// Asks the Sentinel monitor to re-check the master at once.
    recheck: Option<Arc<Notify>>,
    /// True while the Sentinel group fails its master over: take no new
    /// jobs (they wait in `jobs`, each bounded by its client's request
    /// timeout) until the new master is published or the failover aborts.
    failover: Option<watch::Receiver<bool>>,
    health: Arc<Health>,
    min_replicas_ack: u32,
    /// The reply of a write waiting for its WAIT.
    held: Option<Reply>,
    /// Jobs taken from `jobs`, waiting for their client's turn; kept across
    /// sessions (a master switch sends them to the new master).
    lanes: Lanes<Job>,
    /// Bytes read before letting other tasks run: READ_TURN on the
    /// connection for large replies, which could otherwise keep reading for
    /// milliseconds; unlimited on the others, where replies are small and a
    /// pause would only delay them.
    read_turn: usize,
    metrics: Arc<BackendMetrics>,
    /// The protocol this connection's clients want their replies in, and
    /// the one the current session speaks.
    proto: Proto,
    speaks: Proto,
    /// A held connection's: where its server's client id goes after each
    /// handshake.
    server_id: Option<Arc<AtomicU64>>,
}

impl Connection {
    async fn run(mut self) {
        let mut delay = self.settings.backoff_min;
        loop {
            let current = self.endpoint.borrow_and_update().clone();
            let reason = match current {
                None => BackendError::NoMaster {
                    backend: self.backend.clone(),
                },
                Some(endpoint) => {
                    let proto = self.proto;
                    let attempt = timeout(self.settings.connect_timeout, async {
                        let (stream, db) =
                            handshake(&endpoint, &self.target, self.settings.databases).await?;
                        if let Some(server_id) = &self.server_id {
                            server_id
                                .store(crate::dial::client_id(&stream).await?, Ordering::Relaxed);
                        }
                        // A server that cannot speak RESP3 answers in RESP2,
                        // and its replies are converted for RESP3 clients.
                        let speaks = match proto {
                            Proto::Resp3 if crate::dial::hello3(&stream).await? => Proto::Resp3,
                            _ => Proto::Resp2,
                        };
                        Ok::<_, DialError>((stream, db, speaks))
                    })
                    .await;
                    let reason = match attempt {
                        Ok(Ok((stream, db, speaks))) => {
                            info!(%endpoint, "backend connected");
                            self.speaks = speaks;
                            self.metrics.connects.increment(1);
                            self.health.success();
                            let started = Instant::now();
                            self.health.connected.fetch_add(1, Ordering::Relaxed);
                            self.metrics.connections.increment(1.0);
                            let end = self.session(stream, db).await;
                            self.health.connected.fetch_sub(1, Ordering::Relaxed);
                            self.metrics.connections.decrement(1.0);
                            match end {
                                SessionEnd::Closed => {
                                    self.fail_waiting(&BackendError::ConnectionLost {
                                        backend: self.backend.clone(),
                                        reason: "proxy is shutting down".into(),
                                    });
                                    return;
                                }
                                SessionEnd::Switched => {
                                    info!(from = %endpoint, "master switched; reconnecting");
                                    delay = self.settings.backoff_min;
                                    continue;
                                }
                                SessionEnd::Failed(error) => {
                                    warn!(%error, "backend connection failed");
                                    self.health.failure();
                                    self.ask_recheck();
                                    if started.elapsed() >= STABLE_SESSION {
                                        // It was working: retry at once, from the shortest delay.
                                        delay = self.settings.backoff_min;
                                        continue;
                                    }
                                    error.to_string()
                                }
                            }
                        }
                        Ok(Err(reason)) => reason.to_string(),
                        Err(_) => format!(
                            "connect to {endpoint} timed out after {} ms",
                            self.settings.connect_timeout.as_millis()
                        ),
                    };
                    self.health.failure();
                    self.ask_recheck();
                    BackendError::Unavailable {
                        backend: self.backend.clone(),
                        reason,
                    }
                }
            };
            warn!(error = %reason, retry_ms = delay.as_millis() as u64, "backend unavailable");
            self.fail_waiting(&reason);
            // Until the next attempt (or a new master), answer jobs at once
            // instead of letting them wait.
            let retry_at = Instant::now() + jitter(delay);
            delay = (delay * 2).min(self.settings.backoff_max);
            loop {
                tokio::select! {
                    job = self.jobs.recv() => match job {
                        Some(job) => job.reply.fail(reason.clone(), &self.metrics),
                        None => return,
                    },
                    changed = self.endpoint.changed() => {
                        if changed.is_err() {
                            // The monitor is gone: the proxy is stopping.
                            return;
                        }
                        delay = self.settings.backoff_min;
                        break;
                    }
                    _ = sleep_until(retry_at) => break,
                }
            }
        }
    }

    /// Answers every job waiting in the lanes with `error`.
    fn fail_waiting(&mut self, error: &BackendError) {
        for job in self.lanes.take_all() {
            job.reply.fail(error.clone(), &self.metrics);
        }
    }

    fn ask_recheck(&self) {
        if let Some(recheck) = &self.recheck {
            recheck.notify_one();
        }
    }

    /// Serves jobs over one connected socket until it fails or the proxy stops.
    async fn session(&mut self, stream: Stream, db: u32) -> SessionEnd {
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
        let mut failover = self.failover.clone();
        let mut failing_over = failover.as_mut().is_some_and(|f| *f.borrow_and_update());
        let end = loop {
            if let Some(end) = s.finished(self.lanes.queued()) {
                break end;
            }
            // A failover under way, or a new master published that this
            // session has not switched to yet: nothing more goes out here.
            // The flag is read again only when its version moved (an atomic
            // load), not through the channel's lock on every turn.
            if let Some(f) = failover.as_mut() {
                if f.has_changed().unwrap_or(false) {
                    failing_over = *f.borrow_and_update();
                }
            }
            let held = failing_over || endpoint.has_changed().unwrap_or(true);
            // Send what the lanes let go, in one write.
            if !s.switching && !held && self.fill(&mut s) {
                if let Err(e) = s.outbox.write_to(&stream) {
                    break self.lost(e.to_string());
                }
            }
            let due = s.due(request_timeout);
            if let Some(at) = due.filter(|_| armed != due) {
                deadline.as_mut().reset(at);
            }
            armed = due;

            tokio::select! {
                biased;
                ready = stream.readable() => {
                    if let Err(e) = ready {
                        break self.lost(e.to_string());
                    }
                    match self.on_readable(&mut s, &stream) {
                        Ok(true) => tokio::task::yield_now().await,
                        Ok(false) => {}
                        Err(end) => break end,
                    }
                }
                ready = stream.writable(), if !s.outbox.is_empty() => {
                    if let Err(e) = ready.and_then(|_| s.outbox.write_to(&stream)) {
                        break self.lost(e.to_string());
                    }
                }
                job = self.jobs.recv(), if !s.closing => {
                    let Some(job) = job else {
                        // Every handle is gone (a reload removed this backend, or
                        // shutdown): send and answer what waits, then close.
                        s.closing = true;
                        continue;
                    };
                    self.admit(job, held);
                    // Let every client that is ready this turn queue its
                    // command first (one yield puts this task behind them and
                    // behind the next poll of the sockets), then send them
                    // all at once: bigger batches cost Redis and the proxy
                    // fewer syscalls per command. See benches/README.md.
                    tokio::task::yield_now().await;
                    while let Ok(job) = self.jobs.try_recv() {
                        self.admit(job, held);
                    }
                }
                changed = &mut master_moved, if !s.switching => {
                    match changed {
                        Ok(()) => s.switching = true,
                        Err(_) => break SessionEnd::Closed,
                    }
                }
                // Only while held, so the usual path pays nothing for it.
                // `changed` marks the new value seen: read it here.
                now = async {
                    match failover.as_mut() {
                        Some(f) => match f.changed().await {
                            Ok(()) => *f.borrow_and_update(),
                            // The monitor is gone (only when the proxy stops).
                            Err(_) => std::future::pending::<bool>().await,
                        },
                        None => std::future::pending::<bool>().await,
                    }
                }, if held && !s.switching => failing_over = now,
                _ = &mut deadline, if armed.is_some() => {
                    match s.blocked(request_timeout) {
                        Some(true) => break SessionEnd::Closed,
                        Some(false) => {
                            armed = None;
                            continue;
                        }
                        None => {}
                    }
                    if s.still_alive(request_timeout) {
                        continue;
                    }
                    break SessionEnd::Failed(BackendError::Timeout {
                        backend: self.backend.clone(),
                        timeout_ms: request_timeout.as_millis() as u64,
                    });
                }
            }
        };
        self.settle(&mut s, &end);
        end
    }

    /// Reads what the socket has and hands out every complete reply. Returns
    /// whether to let other tasks run first (after `read_turn` bytes).
    fn on_readable(&mut self, s: &mut Session, stream: &Stream) -> Result<bool, SessionEnd> {
        match stream.try_read_buf(&mut s.rbuf, crate::net::BACKEND_READ) {
            Ok(0) => Err(self.lost("closed by the server".into())),
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
    fn settle(&mut self, s: &mut Session, end: &SessionEnd) {
        let error = match end {
            SessionEnd::Failed(error) => error.clone(),
            SessionEnd::Closed | SessionEnd::Switched => BackendError::ConnectionLost {
                backend: self.backend.clone(),
                reason: "proxy is shutting down".into(),
            },
        };
        let mut failed = 0u64;
        for item in s.owed.drain(..) {
            match item {
                Owed::Client { reply, .. } | Owed::Wait { reply, .. } => {
                    failed += 1;
                    let _ = reply.send(Err(error.clone()));
                }
                Owed::Batch {
                    reply,
                    count,
                    replies,
                    ..
                } => {
                    failed += (count - replies.len()) as u64;
                    let _ = reply.send(Err(error.clone()));
                }
                Owed::Select { .. } | Owed::Held { .. } => {}
            }
        }
        self.metrics.failed.add(failed);
        self.held = None;
        self.lanes.clear_in_flight();
    }

    /// Puts a client's job in its lane.
    fn admit(&mut self, mut job: Job, held: bool) {
        if held {
            job.held = true;
            self.metrics
                .held_requests
                .increment(u64::from(job.replies()));
        }
        self.lanes.push(job.origin.client, job);
    }

    /// Moves jobs from the lanes to the outbox, round robin between clients,
    /// while the connection has room. Returns whether any was added.
    fn fill(&mut self, s: &mut Session) -> bool {
        let mut now = None;
        while s.owed.len() < self.settings.max_pending && s.outbox.len() < WRITE_HIGH_WATER {
            let Some((_, job)) = self.lanes.pop() else {
                break;
            };
            let at = *now.get_or_insert_with(Instant::now);
            self.queue(job, at, &mut s.db, &mut s.outbox, &mut s.owed);
        }
        now.is_some()
    }

    fn lost(&self, reason: String) -> SessionEnd {
        SessionEnd::Failed(BackendError::ConnectionLost {
            backend: self.backend.clone(),
            reason,
        })
    }

    /// Appends a job's command to the outbox, preceded by a SELECT when
    /// the client's database differs from the connection's.
    fn queue(
        &self,
        job: Job,
        now: Instant,
        db: &mut u32,
        outbox: &mut Outbox,
        owed: &mut VecDeque<Owed>,
    ) {
        if job.held {
            self.metrics
                .released_requests
                .increment(u64::from(job.replies()));
        }
        let client = job.origin.client;
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
                owed.push_back(Owed::Batch {
                    client,
                    reply: tx,
                    count,
                    replies: Vec::with_capacity(count),
                    bytes: 0,
                    sent_at: now,
                });
                return;
            }
        };
        if job.write && self.min_replicas_ack > 0 {
            // The write's reply is held until WAIT says how many replicas have it.
            let wait_ms = (self.settings.request_timeout / 2).as_millis().max(1);
            let wait = [
                Bytes::from_static(b"WAIT"),
                Bytes::from(self.min_replicas_ack.to_string()),
                Bytes::from(wait_ms.to_string()),
            ];
            outbox.gather(|buf| encode_command(&wait, buf));
            owed.push_back(Owed::Held { sent_at: now });
            owed.push_back(Owed::Wait {
                client,
                reply,
                replicas: self.min_replicas_ack,
                sent_at: now,
            });
        } else {
            owed.push_back(Owed::Client {
                client,
                reply,
                sent_at: now,
                blocked_until: job.blocks_for.map(|d| now.checked_add(d).unwrap_or(now)),
            });
        }
    }

    /// Decodes every complete reply in `rbuf`, read at `read_at`, and hands
    /// each to its owner.
    fn take_replies(
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
            // A demoted or restarting master: have the sentinels asked now.
            if frame.starts_with(b"-READONLY") || frame.starts_with(b"-LOADING") {
                self.ask_recheck();
            }
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
            match owed.pop_front() {
                Some(Owed::Batch {
                    client,
                    reply: tx,
                    count,
                    mut replies,
                    bytes,
                    sent_at,
                }) => {
                    replies.push(reply);
                    if replies.len() >= count {
                        self.lanes.replied(client, count as u32, bytes + size);
                        let _ = tx.send(Ok(replies));
                    } else {
                        // More of the batch's replies are still to come.
                        owed.push_front(Owed::Batch {
                            client,
                            reply: tx,
                            count,
                            replies,
                            bytes: bytes + size,
                            sent_at,
                        });
                    }
                }
                Some(Owed::Client {
                    client, reply: tx, ..
                }) => {
                    self.lanes.replied(client, 1, size);
                    let _ = tx.send(Ok(reply));
                }
                Some(Owed::Held { .. }) => self.held = Some(reply),
                Some(Owed::Wait {
                    client,
                    reply: tx,
                    replicas,
                    ..
                }) => {
                    self.lanes.replied(client, 1, size);
                    let write = self.held.take().unwrap_or(Reply::Null);
                    let answer = match (&write, reply.parsed()) {
                        (w, _) if w.is_error() => write,
                        (_, Reply::Int(acked)) if acked >= replicas as i64 => write,
                        (_, Reply::Int(_)) => {
                            Reply::error("NOREPLICAS Not enough good replicas to write.")
                        }
                        (_, other) => other,
                    };
                    let _ = tx.send(Ok(answer));
                }
                Some(Owed::Select { .. }) => {
                    if let Reply::Error(e) = reply.parsed() {
                        // Commands after it would run in the wrong database: drop the connection.
                        return Err(
                            self.lost(format!("SELECT failed: {}", String::from_utf8_lossy(&e)))
                        );
                    }
                }
                None => return Err(self.lost("reply to no request".into())),
            }
        }
    }
}

/// The health probe of one backend: while it is down, or idle (no success
/// for a probe interval), PING it after the usual handshake every
/// `probe_interval`, over a connection of its own kept between probes. Its
/// results count like any other: `health_successes` of them bring a
/// returning backend up with no client traffic, `health_failures` mark a
/// dead idle one down.
struct Probe {
    health: Arc<Health>,
    endpoint: watch::Receiver<Option<Endpoint>>,
    target: Target,
    settings: Arc<PoolSettings>,
}

impl Probe {
    async fn run(self, stop: CancellationToken) {
        let interval = self.settings.probe_interval;
        let mut conn: Option<(Endpoint, Stream)> = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            if self.health.is_up() && self.health.idle_for() < interval {
                continue;
            }
            let current = self.endpoint.borrow().clone();
            let Some(endpoint) = current else {
                // No master known yet: nothing to probe; the monitor searches.
                continue;
            };
            if conn.as_ref().is_some_and(|(at, _)| *at != endpoint) {
                conn = None;
            }
            let attempt = timeout(self.settings.connect_timeout, async {
                if conn.is_none() {
                    let (stream, _) =
                        handshake(&endpoint, &self.target, self.settings.databases).await?;
                    conn = Some((endpoint.clone(), stream));
                }
                let Some((_, stream)) = &conn else {
                    return Err(DialError::Closed);
                };
                let mut rbuf = BytesMut::new();
                match call(stream, &mut rbuf, &[vec![Bytes::from_static(b"PING")]]).await?[..] {
                    [Reply::Status(ref pong)] if &pong[..] == b"PONG" => Ok(()),
                    ref other => Err(DialError::Protocol(format!("PING answered {other:?}"))),
                }
            })
            .await;
            match attempt {
                Ok(Ok(())) => {
                    self.health.metrics.probes_ok.increment(1);
                    self.health.success();
                }
                Ok(Err(error)) => {
                    debug!(%error, "probe failed");
                    self.probe_failed(&mut conn);
                }
                Err(_) => {
                    debug!("probe timed out");
                    self.probe_failed(&mut conn);
                }
            }
        }
    }

    fn probe_failed(&self, conn: &mut Option<(Endpoint, Stream)>) {
        *conn = None;
        self.health.metrics.probes_failed.increment(1);
        self.health.failure();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, Source};

    #[test]
    fn a_session_ends_only_once_everything_sent_is_answered() {
        let mut s = Session::new(0);
        assert!(s.finished(0).is_none(), "an open session goes on");
        let (tx, _rx) = oneshot::channel();
        s.owed.push_back(Owed::Client {
            client: 1,
            reply: tx,
            sent_at: Instant::now(),
            blocked_until: None,
        });
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
    fn a_session_is_overdue_only_without_reply_bytes_for_a_timeout() {
        let timeout = Duration::from_millis(300);
        let mut s = Session::new(0);
        assert_eq!(s.due(timeout), None, "nothing owed, nothing due");
        let sent = Instant::now();
        let (tx, _rx) = oneshot::channel();
        s.owed.push_back(Owed::Client {
            client: 1,
            reply: tx,
            sent_at: sent,
            blocked_until: None,
        });
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
                tls: None,
            },
            health: Arc::new(Health::new(Arc::from("a"), &settings, metrics.clone())),
            settings,
            jobs,
            endpoint,
            recheck: Some(recheck),
            failover: None,
            min_replicas_ack: 0,
            held: None,
            server_id: None,
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
            let mut owed = VecDeque::from([Owed::Client {
                client: 1,
                reply: tx,
                sent_at: Instant::now(),
                blocked_until: None,
            }]);
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
        let mut owed = VecDeque::from([Owed::Client {
            client: 1,
            reply: tx,
            sent_at: Instant::now(),
            blocked_until: None,
        }]);
        let mut rbuf = BytesMut::from(
            &b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"[..],
        );
        assert!(conn
            .take_replies(&mut rbuf, &mut owed, Instant::now())
            .is_ok());
        assert!(!notified_now(&recheck).await);
    }

    /// Whether a notification is already stored, without waiting for one.
    async fn notified_now(notify: &Notify) -> bool {
        tokio::select! {
            biased;
            _ = notify.notified() => true,
            _ = std::future::ready(()) => false,
        }
    }

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
