//! The state every client handler shares: the [`Topology`] (everything a
//! config file decides: config, router, backends), swapped whole on reload
//! (client handlers pick up the new one at their next request), and the
//! counters, metrics, SLOWLOG, memory account and drain flag that outlive it.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::backend::{Backend, Discovery};
use crate::config::{Config, OldHash, OnBackendDown};
use crate::config::{Source, Target};
use crate::dial::PoolSettings;
use crate::ketama::Ketama;
use crate::memory::ClientMemory;
use crate::metrics::{render_value, BackendMetrics, Metrics, Sharded};
use crate::migration::{Layout, Migration, Spread};
use crate::reload_state::{self, ReloadState, Step};
use crate::router::Router;
use crate::slowlog::SlowLog;

/// Counters shown by INFO, and by /metrics from the same atomics (see
/// [`Stats::render`]): each is counted once.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections_received: AtomicU64,
    pub connected_clients: AtomicUsize,
    /// Clients waiting in a blocking command (BLPOP, XREAD BLOCK) now;
    /// each blocking request's task holds a count (`client/leased.rs`).
    pub blocked_clients: Arc<AtomicUsize>,
    pub refused_keys: AtomicU64,
    /// Counted on every request, by every worker: sharded.
    pub commands: Sharded,
    pub net_input_bytes: Sharded,
    pub net_output_bytes: Sharded,
    /// Reads from, and writes to, client sockets that moved data.
    pub reads: Sharded,
    pub writes: Sharded,
}

impl Stats {
    /// The Prometheus lines of the counts /metrics shows from here.
    pub fn render(&self, out: &mut String) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let clients = self.connected_clients.load(Ordering::Relaxed) as u64;
        render_value("session_proxy_client_connections", clients, out);
        render_value(
            "session_proxy_received_bytes_total",
            self.net_input_bytes.get(),
            out,
        );
        render_value(
            "session_proxy_sent_bytes_total",
            self.net_output_bytes.get(),
            out,
        );
        render_value(
            "session_proxy_refused_keys_total",
            load(&self.refused_keys),
            out,
        );
    }
}

/// What one config file decides: settings, router and backends.
pub struct Topology {
    pub config: Config,
    pub router: Router,
    /// Backends in config order, as the router's indexes refer to them.
    pub backends: Vec<Backend>,
    /// Where keys may still be from an older layout; `None` when no
    /// migration was ever on.
    pub migration: Option<Arc<Migration>>,
    /// For each backend, whether it is a Redis Cluster (see `Policy`).
    pub clusters: Vec<bool>,
    /// Commands the backends announce that the generated table lacks
    /// (`protocol::learned`), replaced once every backend has answered.
    pub learned: Arc<
        std::sync::RwLock<std::collections::HashMap<String, crate::protocol::learned::Learned>>,
    >,
    /// Set once this topology's backends have all answered COMMAND INFO.
    pub learned_once: Arc<std::sync::atomic::AtomicBool>,
}

impl Topology {
    /// Builds the router and the backends, reusing the running backends of
    /// `previous` whose id, address, credentials and pool settings are
    /// unchanged, so their connections stay up.
    fn build(config: Config, previous: Option<&Topology>) -> anyhow::Result<Topology> {
        let router = Router::new(config.route_members())?.with_hash_tag(config.keys.hash_tag());
        let settings = Arc::new(PoolSettings::from_config(&config));
        let mut backends = Vec::with_capacity(config.backends.len());
        for (i, spec) in config.backends.iter().enumerate() {
            let target = spec.target(&format!("backends[{i}]"))?;
            let reused = previous
                .and_then(|p| p.backends.iter().find(|b| *b.id == *spec.id))
                .filter(|b| b.same_as(&target, spec.min_replicas_ack, &settings));
            backends.push(match reused {
                Some(backend) => backend.clone(),
                None => start_backend(&spec.id, target, spec.min_replicas_ack, &settings),
            });
        }
        let migration = migration_for(&config, &backends, &settings, previous)?;
        let clusters = backends.iter().map(|b| b.cluster().is_some()).collect();
        // What the previous backends taught stays known until these answer.
        let learned = previous
            .and_then(|p| p.learned.read().ok().map(|l| l.clone()))
            .unwrap_or_default();
        Ok(Topology {
            config,
            router,
            backends,
            migration,
            clusters,
            learned: Arc::new(std::sync::RwLock::new(learned)),
            learned_once: Arc::default(),
        })
    }

    /// The topology in force while a reload that moves keys settles: keys
    /// still go where `current` put them, `next`'s settings are in force,
    /// and a key is first brought back from where `next` puts it (a proxy
    /// already on `next` may have moved it there), or from any older
    /// location `next` still reads. See [`crate::config::ReloadConfig`].
    fn ahead(current: &Topology, next: &Topology) -> anyhow::Result<Topology> {
        let mut config = next.config.clone();
        config.backends = current.config.backends.clone();
        config.keys.hash_tag = current.config.keys.hash_tag.clone();
        let router = Router::new(config.route_members())?.with_hash_tag(config.keys.hash_tag());
        let mut layouts = vec![Arc::new(Layout {
            spread: Spread::Rendezvous(
                Router::new(next.config.route_members())?
                    .with_hash_tag(next.config.keys.hash_tag()),
            ),
            servers: next.backends.clone(),
            source: crate::migration::AHEAD,
        })];
        let locks = match &next.migration {
            Some(migration) => {
                layouts.extend(migration.layouts.iter().cloned());
                migration.locks.clone()
            }
            None => Arc::default(),
        };
        let keys_per_second = config
            .migration
            .as_ref()
            .map_or(1000, |m| m.keys_per_second);
        let migration = Migration::new(
            layouts,
            locks,
            keys_per_second,
            config.pool.request_timeout(),
        );
        Ok(Topology {
            config,
            router,
            backends: current.backends.clone(),
            migration: Some(Arc::new(migration)),
            clusters: current.clusters.clone(),
            learned: current.learned.clone(),
            learned_once: current.learned_once.clone(),
        })
    }

    /// The Redis version the proxy reports (INFO, HELLO): the lowest of the
    /// backends' that are known, so a client never assumes a command the
    /// oldest backend lacks; the version the proxy follows until one is.
    pub fn redis_version(&self) -> String {
        self.backends
            .iter()
            .filter_map(Backend::version)
            .min()
            .map_or_else(|| crate::REDIS_VERSION.to_string(), |v| v.to_string())
    }

    /// Servers a migration still reads that are not backends now (`[migration]
    /// from`), in a fixed order: SCAN and KEYS go on to them after the
    /// backends, so keys not moved yet are seen.
    pub fn old_servers(&self) -> Vec<&Backend> {
        let mut out: Vec<&Backend> = Vec::new();
        if let Some(migration) = self.active_migration() {
            for layout in &migration.layouts {
                for server in &layout.servers {
                    let known = self
                        .backends
                        .iter()
                        .chain(out.iter().copied())
                        .any(|b| b.same_server(server));
                    if !known {
                        out.push(server);
                    }
                }
            }
        }
        out
    }

    /// Every server a command about every key (SCAN, KEYS, DBSIZE, SCRIPT
    /// LOAD, FLUSHDB) goes to: each backend, a cluster backend by the
    /// masters serving its slots now (by address).
    pub fn servers(&self) -> Vec<Backend> {
        let mut out = Vec::with_capacity(self.backends.len());
        for backend in &self.backends {
            match backend.cluster() {
                Some(cluster) => out.extend(cluster.masters()),
                None => out.push(backend.clone()),
            }
        }
        out
    }

    /// How many servers SCAN's cursor counts through before a migration's
    /// old servers: the backends, a cluster's masters in its place.
    pub fn scan_servers(&self) -> usize {
        self.servers().len()
    }

    /// Where SCAN's cursor index `index` points: a server of `servers`,
    /// then an old server of a migration.
    pub fn scan_target(&self, index: usize) -> Option<Backend> {
        let servers = self.servers();
        match servers.get(index) {
            Some(server) => Some(server.clone()),
            None => self
                .old_servers()
                .get(index - servers.len())
                .copied()
                .cloned(),
        }
    }

    /// The migration reads look at, while it is on.
    pub fn active_migration(&self) -> Option<&Arc<Migration>> {
        self.migration.as_ref().filter(|m| m.is_active())
    }

    /// Starts the mover of this topology's migration, if it has one.
    fn start_mover(self: &Arc<Self>) {
        if let Some(migration) = self.active_migration() {
            migration.start_mover(Arc::downgrade(self));
        }
        self.start_learner();
    }

    /// Starts the mover after `delay`, unless the topology is gone by then:
    /// after a settled reload, so that no proxy still bringing keys back to
    /// the previous layout meets a mover taking them away.
    fn start_mover_after(self: &Arc<Self>, delay: std::time::Duration) {
        self.start_learner();
        let topology = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(topology) = topology.upgrade() {
                if let Some(migration) = topology.active_migration() {
                    migration.start_mover(Arc::downgrade(&topology));
                }
            }
        });
    }

    /// Asks every backend (every master of a cluster backend) for `COMMAND
    /// INFO` until all have answered, and keeps what they announce alike
    /// that the generated table lacks. While the topology is in force: a
    /// reload starts the next one's.
    fn start_learner(self: &Arc<Self>) {
        const AGAIN: std::time::Duration = std::time::Duration::from_secs(2);
        let topology = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(servers) = topology.upgrade().map(|t| t.servers()) else {
                    return;
                };
                let mut replies = Vec::with_capacity(servers.len());
                for server in &servers {
                    let ask = vec![Bytes::from_static(b"COMMAND"), Bytes::from_static(b"INFO")];
                    match server.ask_apart(ask).await {
                        Ok(reply) if !reply.is_error() => replies.push(reply),
                        other => {
                            tracing::debug!(backend = %server.id, answer = ?other.map(|_| ()), "COMMAND INFO not read yet");
                            break;
                        }
                    }
                }
                if replies.len() == servers.len() {
                    let learned = crate::protocol::learned::learn(&replies);
                    if let Some(t) = topology.upgrade() {
                        if let Ok(mut map) = t.learned.write() {
                            *map = learned;
                        }
                        t.learned_once.store(true, Ordering::Release);
                    }
                    return;
                }
                drop(servers);
                tokio::time::sleep(AGAIN).await;
            }
        });
    }

    /// A command the backends taught the proxy (`protocol::learned`).
    pub fn learned(&self, name: &[u8]) -> Option<crate::protocol::learned::Learned> {
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        self.learned.read().ok()?.get(&name).copied()
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

/// Whether keys go elsewhere under `config` (with its started `backends`)
/// than under `previous`: other backends or weights, another hash tag, a
/// backend at another address.
fn layout_changed(previous: &Topology, config: &Config, backends: &[Backend]) -> bool {
    previous.backends.len() != backends.len()
        || previous
            .config
            .backends
            .iter()
            .zip(&config.backends)
            .any(|(a, b)| a.id != b.id || a.weight != b.weight)
        || previous.config.keys.hash_tag() != config.keys.hash_tag()
        || previous
            .backends
            .iter()
            .zip(backends)
            .any(|(a, b)| !a.same_server(b))
}

/// The old layouts a new topology's migration looks at, newest first: the
/// previous topology when a reload changed where keys go, the layouts of a
/// migration it had not finished, and `[migration] from`.
fn migration_for(
    config: &Config,
    backends: &[Backend],
    settings: &Arc<PoolSettings>,
    previous: Option<&Topology>,
) -> anyhow::Result<Option<Arc<Migration>>> {
    let mut layouts: Vec<Arc<Layout>> = Vec::new();
    let unfinished = previous.and_then(|p| p.active_migration());
    if let Some(previous) = previous {
        if layout_changed(previous, config, backends) {
            layouts.push(Arc::new(Layout {
                spread: Spread::Rendezvous(
                    Router::new(previous.config.route_members())?
                        .with_hash_tag(previous.config.keys.hash_tag()),
                ),
                servers: previous.backends.clone(),
                source: "reload",
            }));
        }
        if let Some(old) = unfinished {
            // Older reloads' layouts, and a layout that was ahead while a
            // reload settled (other proxies may have moved keys there).
            layouts.extend(old.layouts.iter().filter(|l| l.source != "config").cloned());
        }
    }
    if let Some(from) = &config.migration {
        let mut servers = Vec::with_capacity(from.from.len());
        for (i, spec) in from.from.iter().enumerate() {
            let target = spec.target(&format!("migration.from[{i}]"))?;
            // An old server still being moved from keeps its connections.
            let running = unfinished
                .iter()
                .flat_map(|m| m.layouts.iter())
                .filter(|l| l.source == "config")
                .flat_map(|l| l.servers.iter())
                .find(|s| *s.id == *spec.id && s.same_as(&target, 0, settings))
                .cloned();
            servers.push(running.unwrap_or_else(|| start_backend(&spec.id, target, 0, settings)));
        }
        let spread = match (from.from.len(), from.hash) {
            (1, _) => Spread::Single,
            (_, OldHash::Rendezvous) => Spread::Rendezvous(Router::new(
                from.from.iter().map(|s| (s.id.as_str(), s.weight)),
            )?),
            (_, OldHash::Ketama) => Spread::Ketama(
                Ketama::new(from.from.iter().map(|s| (s.id.as_str(), s.weight as u32)))
                    .ok_or_else(|| anyhow::anyhow!("migration.from: no server with a weight"))?,
            ),
        };
        layouts.push(Arc::new(Layout {
            spread,
            servers,
            source: "config",
        }));
    }
    if layouts.is_empty() {
        return Ok(None);
    }
    let locks = previous
        .and_then(|p| p.migration.as_ref())
        .map(|m| m.locks.clone())
        .unwrap_or_default();
    let keys_per_second = config
        .migration
        .as_ref()
        .map_or(1000, |m| m.keys_per_second);
    Ok(Some(Arc::new(Migration::new(
        layouts,
        locks,
        keys_per_second,
        config.pool.request_timeout(),
    ))))
}

/// Everything client handlers share.
pub struct Shared {
    /// The current topology; replaced whole by `reload`.
    topology: RwLock<Arc<Topology>>,
    /// Bumped on every reload, so clients notice without taking the lock.
    pub generation: AtomicU64,
    /// Where the config came from, for reloads; `None` when built from text.
    pub config_path: Option<PathBuf>,
    /// The config text whose layout is in force (a settling reload's is
    /// the one before it), for [`crate::reload_state`].
    layout_text: Mutex<Option<String>>,
    pub next_client_id: AtomicU64,
    pub stats: Stats,
    pub metrics: Metrics,
    pub slowlog: SlowLog,
    /// Every client's buffer memory, for `[limits] max_memory_bytes`.
    pub memory: Arc<ClientMemory>,
    pub started: Instant,
    /// The TCP port clients connect to, for INFO.
    pub tcp_port: u16,
    /// True once shutdown starts: /readyz fails and each client handler,
    /// watching it, closes its client once idle. The one drain flag.
    pub drain: watch::Sender<bool>,
    /// The generation, told to whoever must act on a reload at once (a
    /// subscriber's links to the backends).
    pub reloaded: watch::Sender<u64>,
    /// The last reloads, newest last, for the status page.
    pub reloads: Mutex<VecDeque<ReloadEvent>>,
    /// Error replies sent to clients by error code, for INFO's errorstats
    /// (at most 128 codes, as Redis keeps).
    pub error_codes: crate::errorstats::ErrorStats,
    /// Every connected client, for CLIENT LIST and CLIENT KILL.
    pub clients: crate::clients::Clients,
    /// Wrong passwords per source address, for `[limits]
    /// auth_failures_per_address`.
    pub auth_guard: crate::auth_guard::AuthGuard,
    /// `[listen] tls`'s acceptor, its certificates re-read on reload.
    tls: RwLock<Option<tokio_rustls::TlsAcceptor>>,
    /// Clients served now by each worker thread (see [`crate::workers`]).
    pub worker_clients: Box<[AtomicUsize]>,
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
        let tls = acceptor_for(&config)?;
        let topology = Arc::new(Topology::build(config, None)?);
        topology.start_mover();
        let (drain, _) = watch::channel(false);
        let (reloaded, _) = watch::channel(0);
        Ok(Shared {
            topology: RwLock::new(topology),
            generation: AtomicU64::new(0),
            config_path: None,
            layout_text: Mutex::new(None),
            next_client_id: AtomicU64::new(1),
            stats: Stats::default(),
            metrics: Metrics::new(),
            slowlog: SlowLog::default(),
            memory: Arc::default(),
            started: Instant::now(),
            tcp_port,
            drain,
            reloaded,
            reloads: Mutex::new(VecDeque::new()),
            error_codes: Default::default(),
            clients: Default::default(),
            auth_guard: Default::default(),
            tls: RwLock::new(tls),
            worker_clients: (0..crate::workers::Workers::current().len())
                .map(|_| AtomicUsize::new(0))
                .collect(),
        })
    }

    pub fn with_config_path(mut self, path: PathBuf) -> Shared {
        self.layout_text = Mutex::new(std::fs::read_to_string(&path).ok());
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
    pub fn reload(self: &Arc<Self>) -> anyhow::Result<String> {
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

    fn try_reload(self: &Arc<Self>) -> anyhow::Result<String> {
        let path = self
            .config_path
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no config file to reload"))?;
        let text = std::fs::read_to_string(path)?;
        let config = Config::load(path)?;
        let current = self.topology();
        if config.listen.address != current.config.listen.address
            || config.listen.unix_socket != current.config.listen.unix_socket
            || config.admin != current.config.admin
        {
            warn!("listen and admin addresses change only on restart");
        }
        let tls = acceptor_for(&config)?;
        let next = Topology::build(config, Some(&current))?;
        if let Ok(mut current) = self.tls.write() {
            *current = tls;
        }
        let reused = next
            .backends
            .iter()
            .filter(|b| current.backends.iter().any(|c| c.same_task(b)))
            .count();
        let mut summary = format!(
            "{} backends ({} kept running, {} started)",
            next.backends.len(),
            reused,
            next.backends.len() - reused
        );
        let settle = next.config.reload.settle();
        if layout_changed(&current, &next.config, &next.backends) {
            // Remembered beside the config, so a restart goes on from here.
            let previous = self.layout_text.lock().ok().and_then(|t| t.clone());
            if let Some(previous) = previous {
                let state = ReloadState {
                    reloaded_at_unix_ms: reload_state::unix_ms(SystemTime::now()),
                    previous,
                    next: text.clone(),
                };
                if let Err(error) = state.save(&reload_state::path_for(path)) {
                    warn!(%error, "the reload's state could not be written: a restart before its mover is done starts on the new layout alone");
                }
            }
            if !settle.is_zero() {
                summary.push_str(&format!(
                    "; keys go by the new layout in {} ms, when every proxy has it",
                    settle.as_millis()
                ));
            }
        }
        self.change_to(&current, next, text, Duration::ZERO);
        Ok(summary)
    }

    /// Goes on with a reload that a restart interrupted, from the state
    /// file beside the config (see [`crate::reload_state`]). Call once, at
    /// start, after [`Shared::with_config_path`].
    pub fn resume_reload(self: &Arc<Self>) -> anyhow::Result<Option<String>> {
        let Some(path) = &self.config_path else {
            return Ok(None);
        };
        let state_path = reload_state::path_for(path);
        let Some(state) = ReloadState::load(&state_path) else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)?;
        if state.next != text {
            // The file changed since: that reload is not this config's.
            let _ = std::fs::remove_file(&state_path);
            return Ok(None);
        }
        let current = self.topology();
        // Only the layout comes from the config before the reload.
        let before = Config::parse(&state.previous)?;
        let mut config = current.config.clone();
        config.backends = before.backends;
        config.keys.hash_tag = before.keys.hash_tag;
        let previous = Arc::new(Topology::build(config, Some(&current))?);
        let next = Topology::build(current.config.clone(), Some(&previous))?;
        let elapsed = state.elapsed(SystemTime::now());
        if let Ok(mut layout) = self.layout_text.lock() {
            *layout = Some(state.previous.clone());
        }
        self.change_to(&previous, next, text, elapsed);
        Ok(Some(format!(
            "went on with the reload of {} ms ago",
            elapsed.as_millis()
        )))
    }

    /// Puts `next` in force after `current`, a reload `elapsed` ago: at
    /// once when keys go where they went, else in the steps of
    /// [`crate::reload_state::step`] (see [`crate::config::ReloadConfig`]).
    fn change_to(
        self: &Arc<Self>,
        current: &Arc<Topology>,
        next: Topology,
        text: String,
        elapsed: Duration,
    ) {
        let settle = next.config.reload.settle();
        let next = Arc::new(next);
        if !layout_changed(current, &next.config, &next.backends) {
            next.start_mover();
            self.install(next, Some(text));
            return;
        }
        let shared = self.clone();
        match reload_state::step(elapsed, settle) {
            Step::Settling { left } => {
                // Other proxies may not have this file yet: keep the layout
                // in force, bringing back what a proxy on the new one moved.
                let ahead = match Topology::ahead(current, &next) {
                    Ok(ahead) => Arc::new(ahead),
                    Err(error) => {
                        warn!(%error, "no settling layout; switching at once");
                        next.start_mover_after(settle);
                        self.install(next.clone(), Some(text));
                        tokio::spawn(async move { shared.forget_when_moved(next).await });
                        return;
                    }
                };
                ahead.start_learner();
                self.install(ahead.clone(), None);
                tokio::spawn(async move {
                    tokio::time::sleep(left).await;
                    if !Arc::ptr_eq(&shared.topology(), &ahead) {
                        // A newer reload replaced it, with a settle of its own.
                        return;
                    }
                    next.start_mover_after(settle);
                    shared.install(next.clone(), Some(text));
                    info!("reload settled: keys go by the new layout now");
                    shared.forget_when_moved(next).await;
                });
            }
            Step::Switched { mover_in } => {
                next.start_mover_after(mover_in);
                self.install(next.clone(), Some(text));
                tokio::spawn(async move { shared.forget_when_moved(next).await });
            }
        }
    }

    /// Removes the reload's state file once `topology`'s migration is done
    /// (or leaves it to a newer reload that replaced the topology).
    async fn forget_when_moved(self: Arc<Self>, topology: Arc<Topology>) {
        let Some(path) = &self.config_path else {
            return;
        };
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if !Arc::ptr_eq(&self.topology(), &topology) {
                return;
            }
            if topology.active_migration().is_none() {
                let _ = std::fs::remove_file(reload_state::path_for(path));
                return;
            }
        }
    }

    /// Puts `topology` in force and tells whoever watches; `layout_text`
    /// is the config text whose layout it routes by, when that changes.
    fn install(&self, topology: Arc<Topology>, layout_text: Option<String>) {
        if let Some(text) = layout_text {
            if let Ok(mut layout) = self.layout_text.lock() {
                *layout = Some(text);
            }
        }
        match self.topology.write() {
            Ok(mut t) => *t = topology,
            Err(poisoned) => *poisoned.into_inner() = topology,
        }
        let generation = self.generation.fetch_add(1, Ordering::Release) + 1;
        self.reloaded.send_replace(generation);
    }

    /// The TLS listener's acceptor in force.
    pub fn tls_acceptor(&self) -> Option<tokio_rustls::TlsAcceptor> {
        self.tls.read().ok().and_then(|t| t.clone())
    }

    /// Client connections per worker, in Prometheus text.
    pub fn render_workers(&self, out: &mut String) {
        use std::fmt::Write;
        let name = "session_proxy_worker_client_connections";
        crate::metrics::header_of(name, out);
        for (worker, clients) in self.worker_clients.iter().enumerate() {
            let clients = clients.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{worker=\"{worker}\"}} {clients}");
        }
    }

    /// Clients served now by each worker.
    pub fn clients_per_worker(&self) -> Vec<usize> {
        self.worker_clients
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// Whether shutdown has started.
    pub fn is_draining(&self) -> bool {
        *self.drain.borrow()
    }

    /// Whether the proxy should get traffic: not draining, and every backend up.
    pub fn ready(&self) -> Result<(), String> {
        if self.is_draining() {
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

/// `[listen] tls`'s acceptor, its files read now; a bad file is an error.
fn acceptor_for(config: &Config) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    config
        .listen
        .tls
        .as_ref()
        .map(|tls| crate::tls::acceptor(tls).map_err(|e| anyhow::anyhow!("listen.tls: {e}")))
        .transpose()
}

/// Starts a backend's connections, and for a Sentinel backend the monitor
/// that tells them the master: the topology owns discovery, the backend only
/// follows what it is told.
fn start_backend(
    id: &str,
    target: Target,
    min_replicas_ack: u32,
    settings: &Arc<PoolSettings>,
) -> Backend {
    let id: Arc<str> = Arc::from(id);
    let metrics = Arc::new(BackendMetrics::new(&id));
    let discovery = match &target.source {
        Source::Cluster(_) => {
            return Backend::start_cluster(id, target, min_replicas_ack, settings.clone(), metrics)
        }
        Source::Fixed(endpoint) => Discovery::fixed(endpoint.clone()),
        Source::Sentinel(sentinel) => {
            let (master, recheck, failover) = crate::sentinel::start(
                id.clone(),
                sentinel.clone(),
                &target,
                settings.clone(),
                metrics.clone(),
            );
            Discovery::sentinel(master, recheck, failover)
        }
    };
    Backend::start(
        id,
        target,
        min_replicas_ack,
        settings.clone(),
        discovery,
        metrics,
    )
}
