//! Backend connections: a few long-lived connections per Redis server and
//! per worker thread, shared by the worker's clients, with requests
//! pipelined and replies matched in order. A client's jobs go on its own
//! worker's connections (see [`crate::workers`]), so they never cross threads.
//!
//! Each connection is one task that owns its socket, a queue of jobs from
//! clients (`mpsc`), their lanes (one per client, taken in turn: see
//! `lanes.rs`) and the FIFO of replies it owes (`owed`). Reading and
//! writing happen in the same `select!` loop, so there is no lock and no way
//! for a full socket in one direction to stall the other. Every job gets
//! exactly one answer: the backend's reply, or an error when the connection
//! fails, times out or cannot be made. Nothing waits forever.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{timeout, Instant};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, warn, Instrument};

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{watch, Notify};

pub mod cluster;
mod connection;
mod health;
mod hold;
mod job;
mod lanes;
mod lease;
mod renewal;
mod replies;
mod retry;
mod routing;
mod session;
mod unblock;
mod worker_pool;

use connection::Connection;
pub use health::Health;
use health::Probe;
pub use job::{BackendError, BackendResult, BatchResult, Job, Origin, ReplyTo};
use lease::Leases;
pub use lease::{Lease, LeaseFor, LeaseQueue, LeaseRefused, ServerAt, ServerId, Share, Unleased};
pub use retry::refusal;

use lanes::Lanes;
use worker_pool::WorkerPool;

use crate::config::{Endpoint, Target};
pub use crate::dial::PoolSettings;
use crate::metrics::BackendMetrics;
use crate::protocol::{Proto, Reply};
use crate::workers::Workers;

/// Reply bytes a connection reads before it lets other tasks run.
const READ_TURN: usize = 256 * 1024;

/// How many reply bytes connection `conn` of a worker's `pool` reads in
/// a turn: [`READ_TURN`] for the one after the pool's, the connection
/// for large replies; no limit on the others.
fn read_turn(conn: usize, pool: usize) -> usize {
    if conn >= pool {
        READ_TURN
    } else {
        usize::MAX
    }
}

/// Why a connection was lost when its server closed it: anything it had
/// answered came before the close.
pub const CLOSED_BY_THE_SERVER: &str = "closed by the server";

/// Why a blocking command's connection was given up when a failover left
/// it unanswered on a silent old master (see `session::BlockedNow`): the
/// command goes again on the new master, as after [`CLOSED_BY_THE_SERVER`].
pub const LEFT_BEHIND: &str = "the old master did not answer after a failover";

/// A client whose replies from backends average more than this goes on
/// its backend's connection for large replies (see [`Origin`]).
pub const LARGE_REPLY_BYTES: u64 = 16 * 1024;

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
    /// A `-READONLY` or `-LOADING` reply makes the connection reconnect
    /// (resolving the name again), sending what was refused again there: a
    /// managed service's failover moves its endpoint to the new master and
    /// leaves the old one a replica; a restarted server loads its data.
    reconnect_on_readonly: bool,
}

impl Discovery {
    /// A backend at a fixed address or name, followed when it moves.
    pub fn fixed(endpoint: Endpoint) -> Discovery {
        let (tx, rx) = watch::channel(Some(endpoint));
        Discovery {
            endpoint: rx,
            recheck: None,
            failover: None,
            keep: Some(Arc::new(tx)),
            reconnect_on_readonly: true,
        }
    }

    /// A Redis Cluster node: the slot map, not its address, says where a
    /// key goes after a failover.
    pub fn cluster_node(endpoint: Endpoint) -> Discovery {
        Discovery {
            reconnect_on_readonly: false,
            ..Discovery::fixed(endpoint)
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
            // The monitor is asked again instead.
            reconnect_on_readonly: false,
        }
    }
}

/// Starts one more connection task of a backend on a worker (numbered, for
/// its span), speaking a protocol: `(worker, number, proto, server_id)`;
/// with `server_id`, the connection asks the server its client id after
/// each handshake and keeps it there (leased connections: CLIENT UNBLOCK).
#[derive(Clone)]
#[allow(clippy::type_complexity)]
struct Spawn(
    Arc<
        dyn Fn(usize, usize, Proto, Option<Arc<ServerId>>) -> mpsc::UnboundedSender<Job>
            + Send
            + Sync,
    >,
);

impl std::fmt::Debug for Spawn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Spawn")
    }
}

/// A client's handle on one backend: the job queues of its connections,
/// or of a Redis Cluster's nodes.
#[derive(Debug, Clone)]
pub struct Backend {
    pub id: Arc<str>,
    /// What is behind the id: a server and the proxy's connections to it,
    /// or a Redis Cluster.
    kind: Kind,
    pub health: Arc<Health>,
    /// The address connections use: fixed, or the master the sentinels name.
    /// The sender is kept by the Sentinel monitor task (or here, for a fixed one).
    pub endpoint: watch::Receiver<Option<Endpoint>>,
    /// Keeps a fixed endpoint's channel open; `None` for a Sentinel backend.
    _fixed: Option<Arc<watch::Sender<Option<Endpoint>>>>,
    /// Stops the health probe when the last handle is dropped.
    _probe: Arc<DropGuard>,
    /// What it was started with, so a reload can tell whether it changed
    /// (shared: a blocking command's run clones its backend's handle).
    target: Arc<Target>,
    min_replicas_ack: u32,
    settings: Arc<PoolSettings>,
}

/// What is behind a backend id.
#[derive(Debug, Clone)]
enum Kind {
    /// One Redis server (fixed, by name, or the master Sentinel names) and
    /// the proxy's connections to it.
    Pool(Pool),
    /// A Redis Cluster: its nodes' backends, the slot map picking one per
    /// job. No connection of this handle's own.
    Cluster(Arc<cluster::Cluster>),
}

/// A pool backend's connections, a pool per worker thread.
#[derive(Debug, Clone)]
struct Pool {
    /// Every worker's connections, indexed by worker: `[pool] connections`
    /// each (and one for large replies, started on first use).
    pools: Arc<[WorkerPool]>,
    /// The worker threads the connections run on.
    workers: Workers,
    /// Starts one more connection task on a worker.
    spawn: Spawn,
    /// Connections leased to single clients now (see [`Backend::lease`]).
    leases: Arc<Leases>,
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
            reconnect_on_readonly,
        } = discovery;
        let health = Arc::new(Health::new(id.clone(), &settings, metrics.clone()));
        let probe = Probe {
            health: health.clone(),
            endpoint: endpoint.clone(),
            target: target.clone(),
            settings: settings.clone(),
        };
        let stop_probe = probe.start(&id);
        let pool = settings.connections;
        let workers = Workers::current();
        let spawn = {
            let (id, target, settings) = (id.clone(), target.clone(), settings.clone());
            let (endpoint, health, workers) = (endpoint.clone(), health.clone(), workers.clone());
            move |worker: usize, conn: usize, proto: Proto, server_id: Option<Arc<ServerId>>| {
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
                    unconfirmed: Vec::new(),
                    lanes: Lanes::default(),
                    read_turn: read_turn(conn, pool),
                    metrics: metrics.clone(),
                    proto,
                    speaks: Proto::Resp2,
                    server_id,
                    reconnect_on_readonly,
                    want_master: None,
                    retries: Vec::new(),
                    prepared: None,
                    first_master_by: Some(tokio::time::Instant::now() + settings.request_timeout),
                    carried: false,
                };
                let span =
                    tracing::info_span!("backend", id = %id, worker, conn, proto = proto.number());
                workers.spawn_on(worker, task.run().instrument(span));
                tx
            }
        };
        let pools = WorkerPool::start_all(workers.len(), pool, settings.spare_idle, |w, conn| {
            spawn(w, conn, Proto::Resp2, None)
        });
        Backend {
            id,
            kind: Kind::Pool(Pool {
                pools,
                workers,
                spawn: Spawn(Arc::new(spawn)),
                leases: Arc::default(),
            }),
            health,
            endpoint,
            _fixed: fixed,
            _probe: Arc::new(stop_probe.drop_guard()),
            target: Arc::new(target),
            min_replicas_ack,
            settings,
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
        Backend {
            id,
            kind: Kind::Cluster(cluster),
            health,
            endpoint,
            _fixed: Some(Arc::new(fixed)),
            _probe: Arc::new(CancellationToken::new().drop_guard()),
            target: Arc::new(target),
            min_replicas_ack,
            settings,
        }
    }

    /// The cluster behind this backend, for a cluster backend.
    pub fn cluster(&self) -> Option<&Arc<cluster::Cluster>> {
        match &self.kind {
            Kind::Cluster(cluster) => Some(cluster),
            Kind::Pool(_) => None,
        }
    }

    /// For a cluster backend, the node at `address` (a `-ASK`'s, where one
    /// request goes after ASKING); `None` for a backend that is not a
    /// cluster, or when redirections named as many new nodes as the
    /// cluster starts between two slot maps.
    pub fn node_at(&self, address: &str) -> Option<Backend> {
        self.cluster()
            .and_then(|cluster| cluster.redirected_to(address))
    }

    /// Whether a client's commands may be gathered into one job for this
    /// backend: not for a cluster, whose nodes are picked per command.
    pub fn batches(&self) -> bool {
        self.cluster().is_none()
    }

    pub fn is_up(&self) -> bool {
        match self.cluster() {
            Some(cluster) => cluster.is_up(),
            None => self.health.is_up(),
        }
    }

    /// How long the server has gone without answering (a reply, a connect
    /// or a probe: a live one is probed when idle, so this stays under the
    /// probe interval). Zero for a Redis Cluster, whose nodes answer apart.
    pub fn unanswered_for(&self) -> Duration {
        match self.cluster() {
            Some(_) => Duration::ZERO,
            None => self.health.idle_for(),
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

    /// Its series at a scrape, its state from its own health (a cluster's
    /// nodes have rows of their own).
    pub fn row(&self) -> crate::metrics::BackendRow<'_> {
        let connections = self.health.connected.load(Ordering::Relaxed);
        self.health.metrics.row(self.health.is_up(), connections)
    }

    /// The server's version, once a connection has been made.
    pub fn version(&self) -> Option<crate::dial::Version> {
        if let Some(cluster) = self.cluster() {
            return cluster.version();
        }
        crate::dial::Version::unpacked(self.health.version.load(Ordering::Relaxed))
    }

    /// Established connections.
    pub fn connected(&self) -> usize {
        match self.cluster() {
            Some(cluster) => cluster.nodes().iter().map(Backend::connected).sum(),
            None => self.health.connected.load(Ordering::Relaxed),
        }
    }

    /// Whether this backend was started with these settings (a reload keeps it).
    pub fn same_as(&self, target: &Target, min_replicas_ack: u32, settings: &PoolSettings) -> bool {
        *self.target == *target
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
        match (&self.kind, &other.kind) {
            (Kind::Pool(a), Kind::Pool(b)) => Arc::ptr_eq(&a.pools, &b.pools),
            (Kind::Cluster(a), Kind::Cluster(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// For a cluster backend, the master that serves `keys` (in database
    /// `db`) by the proxy's slot map now; `None` for another backend, or
    /// where the map names none.
    pub fn serving(&self, keys: &[&[u8]], db: u32) -> Option<Backend> {
        match &self.kind {
            Kind::Cluster(cluster) => cluster.master_for(keys, db).ok(),
            Kind::Pool(_) => None,
        }
    }

    /// A connection of its own for a client's commands about `keys` (in
    /// database `db`), and the backend to submit them to with the lease:
    /// this one, or for a cluster backend the master that serves the keys'
    /// slot now (a WATCH and its transaction, a blocking command run on
    /// that node, as a cluster client would run them).
    pub fn lease_for_keys(
        &self,
        keys: &[&[u8]],
        db: u32,
        share: Share<'_>,
        proto: Proto,
    ) -> Result<(Backend, Lease), Unleased> {
        let on = match &self.kind {
            Kind::Cluster(cluster) => cluster.master_for(keys, db).map_err(Unleased::Cluster)?,
            Kind::Pool(_) => self.clone(),
        };
        let lease = on
            .lease(share, LeaseFor::Commands(proto))
            .map_err(Unleased::Refused)?;
        Ok((on, lease))
    }

    /// Notes a reply to a command sent on a connection leased by
    /// [`Backend::lease_for_keys`]: for a cluster, a `-MOVED` (which a
    /// lease cannot follow: the client gets it) corrects the slot map for
    /// the client's next try.
    pub fn heard(&self, reply: &Reply) {
        if let Kind::Cluster(cluster) = &self.kind {
            cluster.heard(reply);
        }
    }

    /// One command on a connection made for it, with AUTH only (SCRIPT KILL
    /// reaches a server that is busy with a script this way).
    pub async fn ask_apart(&self, args: Vec<Bytes>) -> Result<Reply, crate::dial::DialError> {
        let endpoint = self.endpoint.borrow().clone();
        let Some(endpoint) = endpoint else {
            return Err(crate::dial::DialError::Closed);
        };
        self.ask_at((&endpoint, None), args).await
    }

    /// As [`Backend::ask_apart`], of the server at `endpoint` (at `peer`,
    /// the address it led to once, when given).
    async fn ask_at(
        &self,
        at: (&Endpoint, Option<std::net::SocketAddr>),
        args: Vec<Bytes>,
    ) -> Result<Reply, crate::dial::DialError> {
        let hosts_file = self.settings.hosts_file.as_deref();
        let asked = crate::dial::ask_once(at, &self.target, hosts_file, args);
        match timeout(self.settings.connect_timeout, asked).await {
            Ok(done) => done,
            Err(_) => Err(crate::dial::DialError::Closed),
        }
    }

    /// CLIENT UNBLOCK of one of this backend's leased connections (its
    /// server's client id), on a connection of its own to that server, at
    /// the address the connection reached (the endpoint, or its name, may
    /// lead elsewhere since), run when no write pause is on (see
    /// `unblock.rs`): the server's answer (`:1` when the connection was
    /// blocked and is no longer; `:0` when a write pause outlasted the
    /// patience `unblock::patience` gives).
    pub async fn unblock(
        &self,
        (at, server_id): (ServerAt, u64),
        error: bool,
    ) -> Result<Reply, crate::dial::DialError> {
        let asking = unblock::Asking {
            at: &at,
            target: &self.target,
            hosts_file: self.settings.hosts_file.as_deref(),
            patience: unblock::patience(&self.settings),
        };
        unblock::ask(asking, server_id, error).await
    }

    /// A connection apart from the pool, to the current endpoint, made
    /// ready as the pool's are (Pub/Sub links: `crate::pubsub::link`;
    /// tracking links), and the address it reached (see
    /// [`Backend::name_moved`]).
    pub async fn connect_apart(
        &self,
    ) -> Result<(crate::net::Stream, Option<std::net::SocketAddr>), crate::dial::DialError> {
        let endpoint = self.endpoint.borrow().clone();
        let Some(endpoint) = endpoint else {
            return Err(crate::dial::DialError::Io(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "no master known yet",
            )));
        };
        let connecting = crate::dial::handshake(&endpoint, &self.target, &self.settings);
        match timeout(self.settings.connect_timeout, connecting).await {
            Ok(done) => done.map(|done| (done.stream, done.peer)),
            Err(_) => Err(crate::dial::DialError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connect timed out",
            ))),
        }
    }

    /// Returns once the backend's host name no longer leads to `peer`, the
    /// address a connection apart reached (looked up every `[pool]
    /// dns_refresh_s`, as the pool's connections look it up); never for a
    /// backend given by address, or with the lookups off. A link on a
    /// managed service's old primary would miss what happens on the new
    /// one (its keyspace events), or hear nothing at all from a primary
    /// gone silent.
    pub async fn name_moved(&self, peer: Option<std::net::SocketAddr>) {
        let refresh = renewal::Refresh::of(&self.settings, self.endpoint.borrow().as_ref(), peer);
        renewal::name_moved(refresh, peer).await
    }

    /// Whether writes to this backend are followed by WAIT.
    pub fn waits_for_replicas(&self) -> bool {
        self.min_replicas_ack > 0
    }

    /// Queues a job made by `Job::one`, `command`, `batch` or `blocking`
    /// and returns where its answer will arrive: on the client's own
    /// connection when its `lease` is given, else on the connection its
    /// origin picks (for a Redis Cluster, the node its slot names).
    pub fn submit<R>(&self, (job, answer): (Job, R), lease: Option<&Lease>) -> R {
        self.enqueue_on(job, lease.and_then(Lease::queue));
        answer
    }

    /// As [`Backend::submit`] on a lease, from a task that holds only its
    /// queue ([`Lease::later`]).
    pub fn submit_later<R>(&self, (job, answer): (Job, R), queue: &LeaseQueue) -> R {
        self.enqueue_on(job, Some(&queue.0));
        answer
    }

    /// Queues `job` on `leased`, or on the connection its origin picks.
    fn enqueue_on(&self, job: Job, leased: Option<&mpsc::UnboundedSender<Job>>) {
        if let (Kind::Cluster(cluster), None) = (&self.kind, leased) {
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
        let queue = match (leased, &self.kind) {
            (Some(leased), _) => Some(leased),
            (None, Kind::Pool(pool)) => self.pool_queue(pool, job.origin),
            (None, Kind::Cluster(_)) => None,
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

    /// The connection of the caller's worker that `origin` picks: by its
    /// protocol, and the one for large replies for a client of large
    /// replies.
    fn pool_queue<'p>(
        &self,
        pool: &'p Pool,
        origin: Origin,
    ) -> Option<&'p mpsc::UnboundedSender<Job>> {
        // The caller's worker; from any other thread, worker 0's (counted).
        let worker = if pool.workers.len() == 1 {
            0
        } else {
            pool.workers.position().unwrap_or_else(|| {
                self.health.metrics.cross_thread.increment(1);
                0
            })
        };
        let worker_pool = pool.pools.get(worker)?;
        let large = self.settings.connections;
        let spawn = |conn: usize, proto: Proto| (pool.spawn.0)(worker, conn, proto, None);
        let (queues, bulk) = match origin.proto {
            Proto::Resp2 => (&worker_pool.queues, &worker_pool.bulk),
            Proto::Resp3 => (
                worker_pool.queues3.get_or_init(|| {
                    (0..worker_pool.queues.len())
                        .map(|conn| spawn(conn, Proto::Resp3))
                        .collect()
                }),
                &worker_pool.bulk3,
            ),
        };
        if origin.large_replies {
            Some(bulk.get_or_init(|| spawn(large, origin.proto)))
        } else {
            queues.get((origin.client % queues.len().max(1) as u64) as usize)
        }
    }
}
