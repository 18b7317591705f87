//! The state every client handler shares: the [`Topology`] (everything a
//! config file decides: config, router, backends), swapped whole on reload
//! (client handlers pick up the new one at their next request), and the
//! counters, metrics, SLOWLOG, memory account and drain flag that outlive it.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::Config;
use crate::memory::ClientMemory;
use crate::metrics::{render_value, Metrics, Sharded};
use crate::reload_state::{self, ReloadState, Step};
use crate::slowlog::SlowLog;
use crate::switch_time;
use crate::topology::layout_changed;
pub use crate::topology::Topology;

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
    /// CLIENT TRACKING: the proxy's tracking table and its links.
    pub tracker: Arc<crate::tracking::Tracker>,
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
            tracker: Arc::default(),
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
                crate::fd_limit::readjust(&self.topology().config);
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
        // One read: the text kept for the reload's state is the one parsed.
        let (config, text) = Config::load_with_text(path)?;
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
            if current.settling() {
                // It came while another reload settled and puts keys back
                // where the layout in force puts them. Other proxies may
                // have switched to that reload's layout already and stay
                // on it until their own settle of this one ends: a mover
                // taking keys from there now would race their writes (the
                // nemesis lost sessions so). It waits as after any reload.
                next.start_mover_after(settle * 2);
            } else {
                next.start_mover();
            }
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
                // What the task asks, not the topology itself: holding the
                // one replaced would keep its mover running beside the next.
                let asking = switch_time::Asking::of(current, &next);
                let own = Instant::now() + left;
                tokio::spawn(async move {
                    let at = shared.switch_when(asking, settle, own, &text).await;
                    tokio::time::sleep_until(at.into()).await;
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

    /// When to switch: at `own` (this proxy's reload plus the settle), or
    /// with the first proxy to reload the same change, as `asking` finds
    /// (see [`crate::switch_time`]); then a restart goes on from that
    /// moment too (the state file of `text` is moved back by the
    /// difference).
    async fn switch_when(
        &self,
        asking: Option<switch_time::Asking>,
        settle: Duration,
        own: Instant,
        text: &str,
    ) -> Instant {
        let Some(asking) = asking else {
            return own;
        };
        let left = own.saturating_duration_since(Instant::now());
        let ago = match asking.first_reload_ago(settle, left).await {
            Ok(ago) => ago,
            Err(error) => {
                warn!(server = %asking.server.id, %error, "when other proxies reloaded is not known: switching on this proxy's own time");
                return own;
            }
        };
        let at = switch_time::switch_at(own, Instant::now(), ago, settle);
        let sooner = own.saturating_duration_since(at);
        if !sooner.is_zero() {
            info!(
                first_reload_ms_ago = ago.as_millis() as u64,
                sooner_ms = sooner.as_millis() as u64,
                "another proxy reloaded first: switching with it"
            );
            self.move_state_back(text, sooner);
        }
        at
    }

    /// Moves the reload of `text`'s state file back by `by`, so that a
    /// restart goes on from the moment the proxies agreed on.
    fn move_state_back(&self, text: &str, by: Duration) {
        let Some(path) = &self.config_path else {
            return;
        };
        let path = reload_state::path_for(path);
        let Some(mut state) = ReloadState::load(&path).filter(|s| s.next == text) else {
            return;
        };
        let by_ms = by.as_millis() as u64;
        state.reloaded_at_unix_ms = state.reloaded_at_unix_ms.saturating_sub(by_ms);
        if let Err(error) = state.save(&path) {
            warn!(%error, "the reload's state could not be written");
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
        let previous = match self.topology.write() {
            Ok(mut t) => std::mem::replace(&mut *t, topology.clone()),
            Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), topology.clone()),
        };
        // Its mover stops now, not when the last client holding it moves
        // on: it would move keys by a layout no longer in force, beside
        // the next one's mover (the new migration has its layouts).
        if let Some(replaced) = &previous.migration {
            let kept = topology.migration.as_ref();
            if !kept.is_some_and(|m| Arc::ptr_eq(m, replaced)) {
                replaced.stop_mover();
            }
        }
        // Keys that may live elsewhere now: tracking clients flush.
        let moved =
            crate::topology::layout_changed(&previous, &topology.config, &topology.backends);
        self.tracker.follow(&topology, moved);
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
