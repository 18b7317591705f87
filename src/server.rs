//! Listeners and what every client handler shares.
//!
//! `run` accepts on TCP and/or a unix socket. A semaphore permit is taken
//! before each `accept`, so at most `limits.max_clients` clients are served and
//! further ones wait in the kernel's queue instead of costing memory here.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::backend::{Backend, PoolSettings};
use crate::config::{Config, OnBackendDown};
use crate::net::Stream;
use crate::router::Router;
use crate::shutdown::Shutdown;

/// Counters shown by INFO.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections_received: AtomicU64,
    pub connected_clients: AtomicUsize,
    pub commands: AtomicU64,
    pub refused_keys: AtomicU64,
    pub net_input_bytes: AtomicU64,
}

/// Everything client handlers share; built once at start.
pub struct Shared {
    pub config: Config,
    pub router: Router,
    /// Backends in config order, as the router's indexes refer to them.
    pub backends: Vec<Backend>,
    pub next_client_id: AtomicU64,
    pub stats: Stats,
    pub started: Instant,
    /// The TCP port clients connect to, for INFO.
    pub tcp_port: u16,
}

impl Shared {
    /// Builds the router and starts the backend connection tasks.
    pub fn new(config: Config, tcp_port: u16) -> anyhow::Result<Shared> {
        let router = Router::new(config.route_members())?;
        let settings = Arc::new(PoolSettings::from_config(&config));
        let mut backends = Vec::with_capacity(config.backends.len());
        for (i, backend) in config.backends.iter().enumerate() {
            let target = backend.target(&format!("backends[{i}]"))?;
            backends.push(Backend::start(
                &backend.id,
                target,
                backend.min_replicas_ack,
                settings.clone(),
            ));
        }
        Ok(Shared {
            config,
            router,
            backends,
            next_client_id: AtomicU64::new(1),
            stats: Stats::default(),
            started: Instant::now(),
            tcp_port,
        })
    }
}

impl Shared {
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

/// Serves clients until `shutdown` fires.
pub async fn run(listeners: Listeners, shared: Arc<Shared>, mut shutdown: Shutdown) {
    let limit = Arc::new(Semaphore::new(shared.config.limits.max_clients));
    let tcp = listeners.tcp.map(|listener| {
        let local = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        info!(address = %local, "listening on tcp");
        tokio::spawn(accept_tcp(listener, local, shared.clone(), limit.clone()))
    });
    let unix = listeners.unix.map(|(listener, path)| {
        info!(path = %path.display(), "listening on unix socket");
        let task = tokio::spawn(accept_unix(
            listener,
            path.display().to_string(),
            shared.clone(),
            limit.clone(),
        ));
        (task, path)
    });
    shutdown.recv().await;
    info!("shutting down");
    if let Some(task) = tcp {
        task.abort();
    }
    if let Some((task, path)) = unix {
        task.abort();
        let _ = std::fs::remove_file(path);
    }
}

async fn accept_tcp(
    listener: TcpListener,
    local: String,
    shared: Arc<Shared>,
    limit: Arc<Semaphore>,
) {
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((socket, peer)) => {
                let _ = socket.set_nodelay(true);
                let shared = shared.clone();
                let local = local.clone();
                tokio::spawn(async move {
                    serve(shared, Stream::Tcp(socket), peer.to_string(), local).await;
                    drop(permit);
                });
            }
            Err(e) => accept_error(e).await,
        }
    }
}

async fn accept_unix(
    listener: UnixListener,
    local: String,
    shared: Arc<Shared>,
    limit: Arc<Semaphore>,
) {
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((socket, _)) => {
                let shared = shared.clone();
                let local = local.clone();
                tokio::spawn(async move {
                    serve(shared, Stream::Unix(socket), format!("{local}:0"), local).await;
                    drop(permit);
                });
            }
            Err(e) => accept_error(e).await,
        }
    }
}

/// Out of file descriptors and the like: wait a little rather than spin.
async fn accept_error(e: std::io::Error) {
    warn!(error = %e, "accept failed");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
}

async fn serve(shared: Arc<Shared>, stream: Stream, peer: String, local: String) {
    shared
        .stats
        .connections_received
        .fetch_add(1, Ordering::Relaxed);
    shared
        .stats
        .connected_clients
        .fetch_add(1, Ordering::Relaxed);
    crate::client::serve(shared.clone(), stream, peer, local).await;
    shared
        .stats
        .connected_clients
        .fetch_sub(1, Ordering::Relaxed);
}

/// The INFO reply: Redis's `# Section` / `field:value` text.
pub fn info_text(shared: &Shared, section: Option<&Bytes>) -> String {
    let wanted = section.map(|s| String::from_utf8_lossy(s).to_ascii_lowercase());
    let show = |name: &str| match wanted.as_deref() {
        None | Some("default") | Some("all") | Some("everything") => true,
        Some(w) => w == name,
    };
    let stats = &shared.stats;
    let mut out = String::new();
    let mut section = |name: &str, title: &str, fields: Vec<(&str, String)>| {
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
    section(
        "server",
        "Server",
        vec![
            ("redis_version", crate::REDIS_VERSION.to_string()),
            ("redis_mode", "standalone".into()),
            ("os", std::env::consts::OS.into()),
            ("arch_bits", (usize::BITS).to_string()),
            ("process_id", std::process::id().to_string()),
            ("tcp_port", shared.tcp_port.to_string()),
            (
                "uptime_in_seconds",
                shared.started.elapsed().as_secs().to_string(),
            ),
            ("proxy_name", "session-proxy".into()),
            ("proxy_version", env!("CARGO_PKG_VERSION").into()),
        ],
    );
    section(
        "clients",
        "Clients",
        vec![
            (
                "connected_clients",
                stats.connected_clients.load(Ordering::Relaxed).to_string(),
            ),
            ("maxclients", shared.config.limits.max_clients.to_string()),
        ],
    );
    section("persistence", "Persistence", vec![("loading", "0".into())]);
    section(
        "stats",
        "Stats",
        vec![
            (
                "total_connections_received",
                stats
                    .connections_received
                    .load(Ordering::Relaxed)
                    .to_string(),
            ),
            (
                "total_commands_processed",
                stats.commands.load(Ordering::Relaxed).to_string(),
            ),
            (
                "total_net_input_bytes",
                stats.net_input_bytes.load(Ordering::Relaxed).to_string(),
            ),
        ],
    );
    section(
        "replication",
        "Replication",
        vec![("role", "master".into()), ("connected_slaves", "0".into())],
    );
    let backends: Vec<(&str, String)> = shared
        .config
        .backends
        .iter()
        .map(|b| (b.id.as_str(), format!("weight={}", b.weight)))
        .collect();
    section(
        "proxy",
        "Proxy",
        vec![
            ("backends", shared.backends.len().to_string()),
            (
                "refused_keys",
                stats.refused_keys.load(Ordering::Relaxed).to_string(),
            ),
        ],
    );
    section("backends", "Backends", backends);
    out
}
