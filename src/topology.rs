//! What one config file decides: the [`Topology`] (config, router,
//! backends and the migration of keys an older layout put elsewhere), how
//! one is built from the one before it (reusing the backends that did not
//! change), and the layout a settling reload keeps in force
//! (`Topology::ahead`). `shared.rs` swaps topologies whole.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use crate::backend::{Backend, Discovery};
use crate::config::{Config, MigrationTuning, OldHash, OnBackendDown};
use crate::config::{Source, Target};
use crate::dial::PoolSettings;
use crate::ketama::Ketama;
use crate::metrics::BackendMetrics;
use crate::migration::{Layout, Migration, Owners, Spread};
use crate::router::Router;

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
    pub(crate) fn build(config: Config, previous: Option<&Topology>) -> anyhow::Result<Topology> {
        let router = Router::of(&config)?;
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
    pub(crate) fn ahead(current: &Topology, next: &Topology) -> anyhow::Result<Topology> {
        let mut config = next.config.clone();
        config.backends = current.config.backends.clone();
        config.keys.hash_tag = current.config.keys.hash_tag.clone();
        let router = Router::of(&config)?;
        let mut layouts = vec![Arc::new(Layout {
            spread: Spread::Rendezvous(Router::of(&next.config)?),
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
        let migration = Migration::new(
            layouts,
            locks,
            MigrationTuning::of(config.migration.as_ref()),
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

    /// Whether a reload is settling in this topology: keys are also
    /// brought back from a layout ahead (see [`crate::migration::AHEAD`]),
    /// where proxies that switched already may have put them. Wider than
    /// [`Migration::is_settling`], which is the settling topology alone:
    /// this is also one built from it (a reload that came meanwhile) while
    /// its migration, which still reads the layout ahead, goes on.
    pub(crate) fn settling(&self) -> bool {
        self.active_migration().is_some_and(|m| {
            m.layouts
                .iter()
                .any(|l| l.source == crate::migration::AHEAD)
        })
    }

    /// Starts the mover of this topology's migration, if it has one.
    pub(crate) fn start_mover(self: &Arc<Self>) {
        if let Some(migration) = self.active_migration() {
            migration.start_mover(Arc::downgrade(self) as std::sync::Weak<dyn Owners>);
        }
        self.start_learner();
    }

    /// Starts the mover after `delay`, unless the topology is gone by then:
    /// after a settled reload, so that no proxy still bringing keys back to
    /// the previous layout meets a mover taking them away.
    pub(crate) fn start_mover_after(self: &Arc<Self>, delay: std::time::Duration) {
        self.start_learner();
        let topology = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(topology) = topology.upgrade() {
                if let Some(migration) = topology.active_migration() {
                    migration.start_mover(Arc::downgrade(&topology) as std::sync::Weak<dyn Owners>);
                }
            }
        });
    }

    /// Asks every backend (every master of a cluster backend) for `COMMAND
    /// INFO` until all have answered, and keeps what they announce alike
    /// that the generated table lacks. While the topology is in force: a
    /// reload starts the next one's.
    pub(crate) fn start_learner(self: &Arc<Self>) {
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
pub(crate) fn layout_changed(previous: &Topology, config: &Config, backends: &[Backend]) -> bool {
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

impl Owners for Topology {
    fn databases(&self) -> u32 {
        self.config.listen.databases
    }

    fn owner_of(&self, key: &[u8]) -> Option<&Backend> {
        let prefixes = &self.config.keys.prefixes;
        let allowed = prefixes.is_empty() || prefixes.iter().any(|p| key.starts_with(p.as_bytes()));
        allowed.then(|| &self.backends[self.router.owner(key)])
    }
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
                spread: Spread::Rendezvous(Router::of(&previous.config)?),
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
    if let Some(from) = config.migration.as_ref().filter(|m| !m.from.is_empty()) {
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
    Ok(Some(Arc::new(Migration::new(
        layouts,
        locks,
        MigrationTuning::of(config.migration.as_ref()),
        config.pool.request_timeout(),
    ))))
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
                min_replicas_ack,
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
