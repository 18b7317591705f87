//! Listeners, the state every client handler shares, reload and draining.
//!
//! `run` accepts on TCP and/or a unix socket. At most `limits.max_clients`
//! clients are served, counted over every listener; one more is told so and
//! closed, as Redis does.
//! Everything a config file decides lives in a [`Topology`], swapped whole on
//! reload; client handlers pick up the new one at their next request.

use std::collections::VecDeque;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::backend::{Backend, PoolSettings};
use crate::config::{Config, OnBackendDown};
use crate::memory::ClientMemory;
use crate::metrics::Metrics;
use crate::net::Stream;
use crate::router::Router;
use crate::shutdown::Shutdown;
use crate::slowlog::SlowLog;

/// Counters shown by INFO.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections_received: AtomicU64,
    pub connected_clients: AtomicUsize,
    pub commands: AtomicU64,
    pub refused_keys: AtomicU64,
    pub net_input_bytes: AtomicU64,
    pub net_output_bytes: AtomicU64,
    /// Reads from, and writes to, client sockets that moved data.
    pub reads: AtomicU64,
    pub writes: AtomicU64,
}

/// What one config file decides: settings, router and backends.
pub struct Topology {
    pub config: Config,
    pub router: Router,
    /// Backends in config order, as the router's indexes refer to them.
    pub backends: Vec<Backend>,
}

impl Topology {
    /// Builds the router and the backends, reusing the running backends of
    /// `previous` whose id, address, credentials and pool settings are
    /// unchanged, so their connections stay up.
    fn build(config: Config, previous: Option<&Topology>) -> anyhow::Result<Topology> {
        let router = Router::new(config.route_members())?;
        let settings = Arc::new(PoolSettings::from_config(&config));
        let mut backends = Vec::with_capacity(config.backends.len());
        for (i, spec) in config.backends.iter().enumerate() {
            let target = spec.target(&format!("backends[{i}]"))?;
            let reused = previous
                .and_then(|p| p.backends.iter().find(|b| *b.id == *spec.id))
                .filter(|b| b.same_as(&target, spec.min_replicas_ack, &settings));
            backends.push(match reused {
                Some(backend) => backend.clone(),
                None => Backend::start(&spec.id, target, spec.min_replicas_ack, settings.clone()),
            });
        }
        Ok(Topology {
            config,
            router,
            backends,
        })
    }

    /// The backend that serves `key` now: its rendezvous owner, or with
    /// `on_backend_down = "next"` and the owner down, the first candidate
    /// after it that is up.
    pub fn route(&self, key: &[u8]) -> usize {
        let owner = self.router.owner(key);
        if self.config.pool.on_backend_down == OnBackendDown::Next && !self.backends[owner].is_up()
        {
            if let Some(next) = self
                .router
                .candidates(key)
                .into_iter()
                .find(|&i| self.backends[i].is_up())
            {
                return next;
            }
        }
        owner
    }
}

/// Everything client handlers share.
pub struct Shared {
    /// The current topology; replaced whole by `reload`.
    topology: RwLock<Arc<Topology>>,
    /// Bumped on every reload, so clients notice without taking the lock.
    pub generation: AtomicU64,
    /// Where the config came from, for reloads; `None` when built from text.
    pub config_path: Option<PathBuf>,
    pub next_client_id: AtomicU64,
    pub stats: Stats,
    pub metrics: Metrics,
    pub slowlog: SlowLog,
    /// Every client's buffer memory, for `[limits] max_memory_bytes`.
    pub memory: Arc<ClientMemory>,
    pub started: Instant,
    /// The TCP port clients connect to, for INFO.
    pub tcp_port: u16,
    /// Set when shutdown starts: /readyz fails and clients are closed once idle.
    pub draining: AtomicBool,
    /// Fires when draining starts; each client handler watches it.
    pub drain_signal: watch::Sender<bool>,
    /// The last reloads, newest last, for the status page.
    pub reloads: Mutex<VecDeque<ReloadEvent>>,
}

/// A reload, accepted or refused.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadEvent {
    pub at_unix: u64,
    pub ok: bool,
    pub detail: String,
}

/// Reloads kept for the status page.
const RELOADS_KEPT: usize = 10;

impl Shared {
    /// Builds the first topology and starts the backend connection tasks.
    pub fn new(config: Config, tcp_port: u16) -> anyhow::Result<Shared> {
        let topology = Topology::build(config, None)?;
        let (drain_signal, _) = watch::channel(false);
        Ok(Shared {
            topology: RwLock::new(Arc::new(topology)),
            generation: AtomicU64::new(0),
            config_path: None,
            next_client_id: AtomicU64::new(1),
            stats: Stats::default(),
            metrics: Metrics::new(),
            slowlog: SlowLog::default(),
            memory: Arc::default(),
            started: Instant::now(),
            tcp_port,
            draining: AtomicBool::new(false),
            drain_signal,
            reloads: Mutex::new(VecDeque::new()),
        })
    }

    pub fn with_config_path(mut self, path: PathBuf) -> Shared {
        self.config_path = Some(path);
        self
    }

    pub fn topology(&self) -> Arc<Topology> {
        match self.topology.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Re-reads the config file and swaps the topology in. An invalid file is
    /// refused and the running topology kept.
    pub fn reload(&self) -> anyhow::Result<String> {
        let result = self.try_reload();
        let detail = match &result {
            Ok(summary) => {
                self.metrics.reloads_ok.increment(1);
                info!(%summary, "config reloaded");
                summary.clone()
            }
            Err(error) => {
                self.metrics.reloads_failed.increment(1);
                warn!(error = %format!("{error:#}"), "reload refused; the running config stays");
                // The reason may quote the file (a password line, say): the
                // status page gets only the fact.
                "refused; the running config stays (the reason is in the log)".to_string()
            }
        };
        if let Ok(mut reloads) = self.reloads.lock() {
            reloads.push_back(ReloadEvent {
                at_unix: crate::metrics::unix_now(),
                ok: result.is_ok(),
                detail,
            });
            while reloads.len() > RELOADS_KEPT {
                reloads.pop_front();
            }
        }
        result
    }

    fn try_reload(&self) -> anyhow::Result<String> {
        let path = self
            .config_path
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no config file to reload"))?;
        let config = Config::load(path)?;
        let current = self.topology();
        if config.listen.address != current.config.listen.address
            || config.listen.unix_socket != current.config.listen.unix_socket
            || config.admin != current.config.admin
        {
            warn!("listen and admin addresses change only on restart");
        }
        let topology = Topology::build(config, Some(&current))?;
        let reused = topology
            .backends
            .iter()
            .filter(|b| current.backends.iter().any(|c| c.same_task(b)))
            .count();
        let summary = format!(
            "{} backends ({} kept running, {} started)",
            topology.backends.len(),
            reused,
            topology.backends.len() - reused
        );
        match self.topology.write() {
            Ok(mut t) => *t = Arc::new(topology),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(topology),
        }
        self.generation.fetch_add(1, Ordering::Release);
        Ok(summary)
    }

    /// Whether the proxy should get traffic: not draining, and every backend up.
    pub fn ready(&self) -> Result<(), String> {
        if self.draining.load(Ordering::Relaxed) {
            return Err("draining".into());
        }
        let down: Vec<String> = self
            .topology()
            .backends
            .iter()
            .filter(|b| !b.is_up())
            .map(|b| b.id.to_string())
            .collect();
        if down.is_empty() {
            Ok(())
        } else {
            Err(format!("backends down: {}", down.join(", ")))
        }
    }
}

/// The bound listening sockets.
pub struct Listeners {
    pub tcp: Option<TcpListener>,
    pub unix: Option<(UnixListener, PathBuf)>,
}

impl Listeners {
    /// Binds what `[listen]` asks for.
    pub async fn bind(config: &Config) -> anyhow::Result<Listeners> {
        let tcp = match &config.listen.address {
            Some(address) => Some(
                TcpListener::bind(address)
                    .await
                    .map_err(|e| anyhow::anyhow!("listen.address {address}: {e}"))?,
            ),
            None => None,
        };
        let unix = match &config.listen.unix_socket {
            Some(path) => {
                // A socket file left by a previous run would make bind fail.
                if path.exists() {
                    std::fs::remove_file(path)?;
                }
                let listener = UnixListener::bind(path)
                    .map_err(|e| anyhow::anyhow!("listen.unix_socket {}: {e}", path.display()))?;
                let mode = config.unix_socket_mode()?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
                Some((listener, path.clone()))
            }
            None => None,
        };
        Ok(Listeners { tcp, unix })
    }

    pub fn tcp_port(&self) -> u16 {
        self.tcp
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map_or(0, |a| a.port())
    }
}

/// Serves clients until `shutdown` fires, then drains: stops accepting,
/// closes each client once everything it sent is answered, and returns when
/// all are gone or the grace period is over.
pub async fn run(listeners: Listeners, shared: Arc<Shared>, mut shutdown: Shutdown) {
    // Every client task is tracked, whichever listener accepted it, so the
    // drain can wait for all of them.
    let clients = TaskTracker::new();
    let tcp = listeners.tcp.map(|listener| {
        let local = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        info!(address = %local, "listening on tcp");
        tokio::spawn(accept_loop(
            Listener::Tcp(listener),
            local,
            shared.clone(),
            clients.clone(),
        ))
    });
    let unix = listeners.unix.map(|(listener, path)| {
        info!(path = %path.display(), "listening on unix socket");
        let task = tokio::spawn(accept_loop(
            Listener::Unix(listener),
            path.display().to_string(),
            shared.clone(),
            clients.clone(),
        ));
        (task, path)
    });
    shutdown.recv().await;
    let grace = Duration::from_millis(shared.topology().config.shutdown.grace_period_ms);
    info!(grace_ms = grace.as_millis() as u64, "draining");
    shared.draining.store(true, Ordering::Relaxed);
    if let Some(task) = tcp {
        task.abort();
    }
    if let Some((task, path)) = unix {
        task.abort();
        let _ = std::fs::remove_file(path);
    }
    shared.drain_signal.send_replace(true);
    clients.close();
    match tokio::time::timeout(grace, clients.wait()).await {
        Ok(()) => info!("all clients finished"),
        Err(_) => warn!(
            clients = shared.stats.connected_clients.load(Ordering::Relaxed),
            "grace period over; closing the remaining clients"
        ),
    }
}

/// A bound listener of either kind.
enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// Accepts one client: its socket and its peer address for logs and CLIENT LIST.
    async fn accept(&self, local: &str) -> std::io::Result<(Stream, String)> {
        match self {
            Listener::Tcp(listener) => {
                let (socket, peer) = listener.accept().await?;
                let _ = socket.set_nodelay(true);
                Ok((Stream::Tcp(socket), peer.to_string()))
            }
            Listener::Unix(listener) => {
                let (socket, _) = listener.accept().await?;
                Ok((Stream::Unix(socket), format!("{local}:0")))
            }
        }
    }
}

/// Accepts clients. One beyond `[limits] max_clients` (every listener
/// counted together, the limit in force read at each accept) gets Redis's
/// error and is closed, as Redis does, instead of waiting unanswered.
async fn accept_loop(listener: Listener, local: String, shared: Arc<Shared>, clients: TaskTracker) {
    loop {
        match listener.accept(&local).await {
            Ok((stream, peer)) => {
                let max_clients = shared.topology().config.limits.max_clients;
                let count = &shared.stats.connected_clients;
                if count.fetch_add(1, Ordering::AcqRel) >= max_clients {
                    count.fetch_sub(1, Ordering::AcqRel);
                    shared.metrics.rejected_clients.increment(1);
                    // Told on a task of its own, bounded in time, so a client
                    // that never reads cannot hold up the accept loop.
                    tokio::spawn(async move {
                        let mut reply = bytes::BytesMut::from(MAX_CLIENTS_REACHED);
                        let _ =
                            tokio::time::timeout(REFUSE_WRITE, stream.write_all(&mut reply)).await;
                    });
                    continue;
                }
                let shared = shared.clone();
                let local = local.clone();
                clients.spawn(serve(shared, stream, peer, local));
            }
            Err(e) => accept_error(e).await,
        }
    }
}

/// What a client beyond the limit reads before the proxy closes it.
const MAX_CLIENTS_REACHED: &[u8] = b"-ERR max number of clients reached\r\n";
/// The longest the proxy tries to tell a refused client.
const REFUSE_WRITE: Duration = Duration::from_secs(1);

/// Out of file descriptors and the like: wait a little rather than spin.
async fn accept_error(e: std::io::Error) {
    warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Serves one client; its slot in `connected_clients` was taken by the accept loop.
async fn serve(shared: Arc<Shared>, stream: Stream, peer: String, local: String) {
    shared
        .stats
        .connections_received
        .fetch_add(1, Ordering::Relaxed);
    shared.metrics.client_connections.increment(1.0);
    crate::client::serve(shared.clone(), stream, peer, local).await;
    shared.metrics.client_connections.decrement(1.0);
    shared
        .stats
        .connected_clients
        .fetch_sub(1, Ordering::Relaxed);
}

/// The INFO reply: Redis's `# Section` / `field:value` text. A `restricted`
/// client (one limited to key prefixes) gets no Backends section: their
/// addresses are the operator's business.
pub fn info_text(
    shared: &Shared,
    topology: &Topology,
    section: Option<&Bytes>,
    restricted: bool,
) -> String {
    let wanted = section.map(|s| String::from_utf8_lossy(s).to_ascii_lowercase());
    let show = |name: &str| match wanted.as_deref() {
        None | Some("default") | Some("all") | Some("everything") => true,
        Some(w) => w == name,
    };
    let stats = &shared.stats;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
    let mut out = String::new();
    let mut section = |name: &str, title: &str, fields: Vec<(String, String)>| {
        if !show(name) {
            return;
        }
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        out.push_str(&format!("# {title}\r\n"));
        for (k, v) in fields {
            out.push_str(&format!("{k}:{v}\r\n"));
        }
    };
    let f = |k: &str, v: String| (k.to_string(), v);
    section(
        "server",
        "Server",
        vec![
            f("redis_version", crate::REDIS_VERSION.to_string()),
            f("redis_mode", "standalone".into()),
            f("os", std::env::consts::OS.into()),
            f("arch_bits", usize::BITS.to_string()),
            f("process_id", std::process::id().to_string()),
            f("tcp_port", shared.tcp_port.to_string()),
            f(
                "uptime_in_seconds",
                shared.started.elapsed().as_secs().to_string(),
            ),
            f("proxy_name", "session-proxy".into()),
            f("proxy_version", env!("CARGO_PKG_VERSION").into()),
        ],
    );
    section(
        "clients",
        "Clients",
        vec![
            f(
                "connected_clients",
                stats.connected_clients.load(Ordering::Relaxed).to_string(),
            ),
            f("maxclients", topology.config.limits.max_clients.to_string()),
        ],
    );
    section("persistence", "Persistence", vec![f("loading", "0".into())]);
    section(
        "stats",
        "Stats",
        vec![
            f(
                "total_connections_received",
                load(&stats.connections_received),
            ),
            f("total_commands_processed", load(&stats.commands)),
            f("total_net_input_bytes", load(&stats.net_input_bytes)),
            f("total_net_output_bytes", load(&stats.net_output_bytes)),
            f("total_reads_processed", load(&stats.reads)),
            f("total_writes_processed", load(&stats.writes)),
        ],
    );
    section(
        "replication",
        "Replication",
        vec![
            f("role", "master".into()),
            f("connected_slaves", "0".into()),
        ],
    );
    section(
        "proxy",
        "Proxy",
        vec![
            f("backends", topology.backends.len().to_string()),
            f(
                "backends_up",
                topology
                    .backends
                    .iter()
                    .filter(|b| b.is_up())
                    .count()
                    .to_string(),
            ),
            f("refused_keys", load(&stats.refused_keys)),
            f(
                "config_generation",
                shared.generation.load(Ordering::Relaxed).to_string(),
            ),
            f(
                "draining",
                u8::from(shared.draining.load(Ordering::Relaxed)).to_string(),
            ),
            f("slowlog_len", shared.slowlog.len().to_string()),
        ],
    );
    let backends = topology
        .config
        .backends
        .iter()
        .zip(&topology.backends)
        .map(|(spec, backend)| {
            let endpoint = backend
                .endpoint
                .borrow()
                .as_ref()
                .map(|e| e.to_string())
                .unwrap_or_else(|| "none".into());
            let value = format!(
                "weight={},endpoint={},status={},connections={},sentinels={}",
                spec.weight,
                endpoint,
                if backend.is_up() { "up" } else { "down" },
                backend.connected(),
                backend.sentinels_known()
            );
            (format!("backend_{}", spec.id), value)
        })
        .collect();
    if !restricted {
        section("backends", "Backends", backends);
    }
    out
}
