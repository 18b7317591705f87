//! A cluster backend: a Redis Cluster behind one backend id. A job goes to
//! the master of its keys' slot ([`crate::cluster`]); each master is a plain
//! [`Backend`] of its own (pooled, fair, health-checked connections, metrics
//! labelled `id@host:port`). A `-MOVED` reply is followed at once (the job
//! is sent again, to the node named, and the slot map refreshed in the
//! background); `-ASK` is followed with ASKING for that one request;
//! `-TRYAGAIN` (keys split by a slot's migration) is sent again a moment
//! later, within the request timeout. At most 16 (`MAX_UNMAPPED`) nodes
//! named only by redirections are started between two maps. The map comes
//! from CLUSTER SHARDS of any node known: at start, after a MOVED, when a
//! node fails, and every `REFRESH_EVERY` (5 s).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, RwLock, Weak};

pub use super::routing::Routing;
use super::routing::Slots;
use super::*;
use crate::cluster::{self, Redirect, SlotMap, Touches, MAX_REDIRECTS, TRY_AGAIN_AFTER};
use crate::config::Source;

mod follow;

/// How often the slot map is asked for when nothing asks sooner.
const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// The least time between two asks (a burst of MOVED asks once).
const REFRESH_GAP: Duration = Duration::from_millis(100);
/// New nodes that redirections (`-MOVED`, `-ASK`) may name between two
/// slot maps: a node that names ever new addresses cannot make the proxy
/// start a backend (connections, series) for each. A job redirected
/// beyond them waits for the next map.
const MAX_UNMAPPED: usize = 16;

/// What a cluster backend knows of its cluster.
pub struct Cluster {
    id: Arc<str>,
    seeds: Vec<String>,
    target: Target,
    min_replicas_ack: u32,
    settings: Arc<PoolSettings>,
    /// `None` until the first map came.
    map: RwLock<Option<Arc<Routing>>>,
    /// A backend per master, by `host:port`, and per node redirected to.
    nodes: Mutex<Nodes>,
    /// Jobs that came before the first map, or were redirected to a node
    /// past [`MAX_UNMAPPED`], sent once the next map comes: each with the
    /// redirections it followed and when it was first sent.
    waiting: Mutex<Vec<(Job, u8, Instant)>>,
    /// Backends of nodes that stopped being masters, kept a while: the
    /// requests they still carry get their answers (a `-MOVED`, followed)
    /// rather than a closed connection's error.
    retired: Mutex<Vec<(Instant, Backend)>>,
    refresh: Arc<Notify>,
    /// Counts the changes of the slot map (a map unlike the last, a
    /// `-MOVED` noted): what follows the masters waits on it
    /// ([`Cluster::changes`]).
    changes: tokio::sync::watch::Sender<u64>,
    /// Redirections followed, and slot maps installed.
    pub moved: AtomicU64,
    pub asked: AtomicU64,
    pub tried_again: AtomicU64,
    pub maps: AtomicU64,
    counters: Counters,
}

/// The backends of a cluster's nodes.
#[derive(Default)]
struct Nodes {
    by_address: HashMap<String, Backend>,
    /// Started for a redirection since the last map.
    unmapped: usize,
    /// Whether a redirection past them was logged since the last map.
    told: bool,
}

/// The cluster's own series in /metrics.
struct Counters {
    moved: metrics::Counter,
    asked: metrics::Counter,
    tried_again: metrics::Counter,
    maps: metrics::Counter,
}

impl Counters {
    fn new(id: &str) -> Counters {
        let labels = |kind: &'static str| [("backend", id.to_string()), ("kind", kind.to_string())];
        Counters {
            moved: metrics::counter!("session_proxy_cluster_redirects_total", &labels("moved")),
            asked: metrics::counter!("session_proxy_cluster_redirects_total", &labels("ask")),
            tried_again: metrics::counter!(
                "session_proxy_cluster_redirects_total",
                &labels("tryagain")
            ),
            maps: metrics::counter!("session_proxy_cluster_slot_maps_total", "backend" => id.to_string()),
        }
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Starts asking for the slot map; `target` carries the credentials and
    /// TLS settings every node is reached with.
    pub(super) fn start(
        id: Arc<str>,
        target: Target,
        min_replicas_ack: u32,
        settings: Arc<PoolSettings>,
    ) -> Arc<Cluster> {
        let seeds = match &target.source {
            Source::Cluster(seeds) => seeds.clone(),
            _ => Vec::new(),
        };
        // Cluster nodes have database 0 only: the handshake checks that one.
        let mut settings = (*settings).clone();
        settings.databases = 1;
        let settings = Arc::new(settings);
        let refresh = Arc::new(Notify::new());
        let cluster = Arc::new(Cluster {
            id: id.clone(),
            seeds,
            target,
            min_replicas_ack,
            settings,
            map: RwLock::new(None),
            nodes: Mutex::new(Nodes::default()),
            waiting: Mutex::new(Vec::new()),
            retired: Mutex::new(Vec::new()),
            refresh: refresh.clone(),
            changes: tokio::sync::watch::channel(0).0,
            moved: AtomicU64::new(0),
            asked: AtomicU64::new(0),
            tried_again: AtomicU64::new(0),
            maps: AtomicU64::new(0),
            counters: Counters::new(&id),
        });
        tokio::spawn(
            refresher(Arc::downgrade(&cluster), refresh)
                .instrument(tracing::info_span!("cluster", backend = %id)),
        );
        cluster
    }

    /// The slot map in force, if one came.
    pub fn map(&self) -> Option<Arc<Routing>> {
        self.map.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The slots `server` serves now (none where it is not one of the
    /// masters).
    pub fn slots_served_by(&self, server: &Backend) -> Slots {
        self.map()
            .map(|routing| routing.served_by(server))
            .unwrap_or_default()
    }

    /// Told of each change of the slot map from now on (a master come or
    /// gone, a slot moved): links that follow the masters (a subscriber's,
    /// the tracker's) wait on it rather than look again and again.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Up when a slot map is known, every slot has a master and every
    /// master's backend is up.
    pub fn is_up(&self) -> bool {
        self.map()
            .is_some_and(|r| r.is_complete() && r.nodes.iter().all(Backend::is_up))
    }

    /// The backend of every master that serves slots now, by address:
    /// where a command about every key (SCAN, KEYS, DBSIZE, SCRIPT LOAD,
    /// FLUSHDB) goes.
    pub fn masters(&self) -> Vec<Backend> {
        let Some(routing) = self.map() else {
            return Vec::new();
        };
        let mut serving: Vec<usize> = routing
            .slots_per_master()
            .iter()
            .enumerate()
            .filter(|(_, &slots)| slots > 0)
            .map(|(i, _)| i)
            .collect();
        serving.sort_by(|&a, &b| routing.masters[a].cmp(&routing.masters[b]));
        serving
            .into_iter()
            .map(|i| routing.nodes[i].clone())
            .collect()
    }

    /// What /topology and the status page show: each master serving slots
    /// (with how many, up or down, connections), and the redirections and
    /// maps so far.
    pub fn report(&self) -> serde_json::Value {
        let map = self.map();
        let masters: Vec<serde_json::Value> = map
            .as_ref()
            .map(|routing| {
                routing
                    .masters
                    .iter()
                    .zip(&routing.nodes)
                    .zip(routing.slots_per_master())
                    .filter(|(_, slots)| *slots > 0)
                    .map(|((address, node), slots)| {
                        serde_json::json!({
                            "address": address,
                            "slots": slots,
                            "up": node.is_up(),
                            "connections": node.connected(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        serde_json::json!({
            "masters": masters,
            "slot_map": map.is_some(),
            "slots_served": map.as_ref().map_or(0, |m| m.owners.iter().filter(|&&o| o != u16::MAX).count()),
            "moved_total": self.moved.load(Ordering::Relaxed),
            "ask_total": self.asked.load(Ordering::Relaxed),
            "tryagain_total": self.tried_again.load(Ordering::Relaxed),
            "slot_maps_total": self.maps.load(Ordering::Relaxed),
            "retired_nodes": self.retired.lock().map_or(0, |r| r.len()),
        })
    }

    /// The lowest version of the nodes' servers known.
    pub fn version(&self) -> Option<crate::dial::Version> {
        self.nodes().iter().filter_map(Backend::version).min()
    }

    /// The backends of the nodes now: the map's masters, and those
    /// redirections named since it came.
    pub fn nodes(&self) -> Vec<Backend> {
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes.by_address.values().cloned().collect()
    }

    /// Sends `job` to the master of its slot (any master for a job without
    /// keys); a job whose keys are in several slots gets `-CROSSSLOT`, as
    /// from Redis Cluster.
    pub(super) fn route(self: &Arc<Self>, job: Job) {
        self.route_from(job, 0, Instant::now());
    }

    /// [`Cluster::route`] for a job that was sent `since` and followed
    /// `hops` redirections already.
    fn route_from(self: &Arc<Self>, job: Job, hops: u8, since: Instant) {
        let slot = match slot_of(cluster::touches(&job.payload), job.db) {
            Ok(slot) => slot,
            Err(line) => return answer(job.reply, line),
        };
        let Some(map) = self.map() else {
            return self.hold(job, hops, since, NO_MAP);
        };
        match map.master_of(slot) {
            Some(node) => self.forward(job, node, hops, since),
            None => {
                // Its master failed and no replica is known to have taken
                // over yet: ask again (a burst of these asks once).
                self.refresh.notify_one();
                answer(job.reply, NOT_SERVED);
            }
        }
    }

    /// Holds `job` until the next map (`hops` and `since` as for
    /// [`Cluster::route_from`]), as many as one connection may have
    /// unanswered (`[pool] max_pending`; those whose client gave up are
    /// dropped first); past them it gets `full`.
    fn hold(&self, job: Job, hops: u8, since: Instant, full: &str) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        if waiting.len() >= self.settings.max_pending {
            waiting.retain(|(j, ..)| !j.reply.is_closed());
        }
        if waiting.len() >= self.settings.max_pending {
            drop(waiting);
            return answer(job.reply, full);
        }
        waiting.push((job, hops, since));
        drop(waiting);
        self.refresh.notify_one();
    }

    /// The master that serves the keys of `payload` now, for a connection
    /// leased to one client there (a WATCH and its transaction, a
    /// blocking command); else the error the client gets, Redis Cluster's
    /// own where it has one.
    pub(super) fn master_for(&self, keys: &[&[u8]], db: u32) -> Result<Backend, &'static str> {
        let slot = slot_of(cluster::keys_touch(keys.iter().copied()), db)?;
        let map = self.map();
        let node = map.as_ref().and_then(|map| map.master_of(slot));
        node.cloned().ok_or_else(|| {
            self.refresh.notify_one();
            if map.is_some() {
                NOT_SERVED
            } else {
                NO_MAP
            }
        })
    }

    /// Notes a reply that came on a connection leased on a node, which
    /// cannot follow it: a `-MOVED` says the map is behind, so that the
    /// client's next try goes to the slot's new master.
    pub(super) fn heard(&self, reply: &Reply) {
        if let Some(Redirect::Moved { slot, node }) = cluster::redirect(reply) {
            match self.redirected_to(&node) {
                Some(backend) => self.moved(slot, &node, &backend),
                None => self.refresh.notify_one(),
            }
        }
    }

    /// The backend of a master of the map, started on first use.
    fn node(&self, address: &str) -> Backend {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(backend) = nodes.by_address.get(address) {
            return backend.clone();
        }
        self.start_node(&mut nodes, address)
    }

    /// The backend of a node a redirection names: started on first use
    /// unless [`MAX_UNMAPPED`] were since the last map.
    pub(super) fn redirected_to(&self, address: &str) -> Option<Backend> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(backend) = nodes.by_address.get(address) {
            return Some(backend.clone());
        }
        if nodes.unmapped >= MAX_UNMAPPED {
            if !std::mem::replace(&mut nodes.told, true) {
                warn!(address, "redirections named more new nodes than {MAX_UNMAPPED} since the last slot map: requests redirected to others wait for the next map");
            }
            return None;
        }
        nodes.unmapped += 1;
        Some(self.start_node(&mut nodes, address))
    }

    fn start_node(&self, nodes: &mut Nodes, address: &str) -> Backend {
        let id: Arc<str> = Arc::from(format!("{}@{address}", self.id));
        let endpoint = Endpoint::Tcp(address.to_string());
        let target = Target {
            source: Source::Fixed(endpoint.clone()),
            username: self.target.username.clone(),
            password: self.target.password.clone(),
            password_file: self.target.password_file.clone(),
            password_env: self.target.password_env.clone(),
            aws_iam: self.target.aws_iam.clone(),
            tls: self.target.tls.clone(),
        };
        let metrics = Arc::new(BackendMetrics::for_node(&self.id, address));
        let backend = Backend::start(
            id,
            target,
            self.min_replicas_ack,
            self.settings.clone(),
            Discovery::cluster_node(endpoint),
            metrics,
        );
        nodes
            .by_address
            .insert(address.to_string(), backend.clone());
        backend
    }

    /// Notes a `-MOVED`: the slot's new master at once, the whole map soon.
    fn moved(&self, slot: u16, node: &str, backend: &Backend) {
        if let Some(routing) = self.map.write().unwrap_or_else(|e| e.into_inner()).as_mut() {
            let routing = Arc::make_mut(routing);
            routing.map.set(slot, node);
            if routing.nodes.len() < routing.map.masters.len() {
                routing.nodes.push(backend.clone());
            }
        }
        self.changes.send_modify(|n| *n += 1);
        self.refresh.notify_one();
    }

    /// A new map: a backend for every master (the others' are dropped;
    /// their connections answer what they carry, then close), and the jobs
    /// that waited for a map sent.
    fn install(self: &Arc<Self>, map: SlotMap) {
        let masters: HashSet<&String> = map.masters.iter().collect();
        let now = Instant::now();
        let mut gone = Vec::new();
        {
            let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
            nodes.unmapped = 0;
            nodes.told = false;
            nodes.by_address.retain(|address, backend| {
                let keep = masters.contains(address);
                if !keep {
                    gone.push((now, backend.clone()));
                }
                keep
            });
        }
        {
            // Kept twice the request timeout: every request they carry has
            // been answered, or has timed out, by then.
            let keep_for = self.settings.request_timeout * 2;
            let mut retired = self.retired.lock().unwrap_or_else(|e| e.into_inner());
            retired.retain(|(since, _)| now.saturating_duration_since(*since) < keep_for);
            retired.extend(gone);
        }
        let nodes = map.masters.iter().map(|m| self.node(m)).collect();
        let changed = self.map().is_none_or(|old| old.map != map);
        let masters = map.masters.len();
        *self.map.write().unwrap_or_else(|e| e.into_inner()) =
            Some(Arc::new(Routing { map, nodes }));
        if changed {
            self.changes.send_modify(|n| *n += 1);
            crate::fd_limit::cluster_masters(&self.id, masters);
        }
        self.maps.fetch_add(1, Ordering::Relaxed);
        self.counters.maps.increment(1);
        let waiting = std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|e| e.into_inner()));
        for (job, hops, since) in waiting {
            self.route_from(job, hops, since);
        }
    }

    /// Where to ask for the map: the masters known, then the seeds.
    fn askable(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self.map().map(|m| m.masters.clone()).unwrap_or_default();
        for seed in &self.seeds {
            if !nodes.contains(seed) {
                nodes.push(seed.clone());
            }
        }
        nodes
    }
}

/// The error a command for a slot without a master gets: its master failed
/// and no replica is known to have taken over yet.
const NOT_SERVED: &str = "CLUSTERDOWN Hash slot not served";
/// The error a command gets that cannot wait for the first slot map.
const NO_MAP: &str = "CLUSTERDOWN no slot map from any node yet";
/// The error a command redirected past [`MAX_UNMAPPED`] gets when it
/// cannot wait for the next map either.
const UNMAPPED: &str = "TRYAGAIN redirected to a node the slot map does not name yet";

/// The one slot of keys that `touch` it (`None`: no key), or Redis
/// Cluster's error: keys in several slots, or a database other than 0.
fn slot_of(touches: Touches, db: u32) -> Result<Option<u16>, &'static str> {
    if db != 0 {
        return Err("ERR SELECT is not allowed in cluster mode");
    }
    match touches {
        Touches::CrossSlot => Err(cluster::CROSSSLOT),
        Touches::Slot(slot) => Ok(Some(slot)),
        Touches::NoKey => Ok(None),
    }
}

/// Answers every reply of `reply` with the error `line`.
fn answer(reply: ReplyTo, line: &str) {
    match reply {
        ReplyTo::One(tx) => {
            let _ = tx.send(Ok(Reply::error(line)));
        }
        ReplyTo::Many { tx, count } => {
            let _ = tx.send(Ok(vec![Reply::error(line); count]));
        }
    }
}

/// Asks for the slot map at start, when told to, and every REFRESH_EVERY,
/// until the cluster backend is gone.
async fn refresher(cluster: Weak<Cluster>, refresh: Arc<Notify>) {
    loop {
        let Some(me) = cluster.upgrade() else {
            return;
        };
        let askable = me.askable();
        let username = me.target.username.clone();
        let target = me.target.clone();
        let tls = me.target.tls.clone();
        let timeout = me.settings.connect_timeout;
        drop(me);
        // Read at each refresh, as at each connect (`password_file`, an
        // IAM token).
        let password = target.password_for_connect().await.ok().flatten();
        let fetched = cluster::fetch(
            &askable,
            username.as_deref(),
            password.as_deref(),
            tls.as_ref(),
            timeout,
        )
        .await;
        let Some(me) = cluster.upgrade() else {
            return;
        };
        match fetched {
            Ok(view) if !view.map.masters.is_empty() => {
                let (map, from) = (view.map, view.from);
                let before = me.map();
                if before.as_deref().map(|r| &r.map) != Some(&map) {
                    debug!(masters = map.masters.len(), ?from, "slot map");
                    let unserved = before.map_or_else(Vec::new, |b| map.unserved_since(&b.map));
                    if let Some(first) = unserved.first() {
                        warn!(slots = unserved.len(), first, ?from, "the slot map names no master for slots it did (their master failed, no replica known to have taken over yet): their requests get CLUSTERDOWN until one does");
                    }
                }
                me.install(map);
            }
            Ok(_) => warn!("the cluster has no master serving slots"),
            Err(error) => warn!(%error, "no slot map from any node"),
        }
        drop(me);
        tokio::time::sleep(REFRESH_GAP).await;
        tokio::select! {
            _ = refresh.notified() => {}
            _ = tokio::time::sleep(REFRESH_EVERY) => {}
        }
    }
}

/// Waits until one of `changes` (see [`Cluster::changes`]) is told of a
/// change; for none, or only clusters gone, for ever.
pub async fn any_changed(changes: &mut [tokio::sync::watch::Receiver<u64>]) {
    let mut waits: Vec<_> = changes
        .iter_mut()
        .map(|rx| {
            Box::pin(async move {
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            })
        })
        .collect();
    std::future::poll_fn(|cx| {
        for wait in &mut waits {
            if std::future::Future::poll(wait.as_mut(), cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::any_changed;
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    use tokio::sync::watch;

    /// Whether `any_changed` is done at its first poll.
    fn told(changes: &mut [watch::Receiver<u64>]) -> bool {
        let mut wait = Box::pin(any_changed(changes));
        let ready = wait.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        ready == Poll::Ready(())
    }

    #[test]
    fn any_changed_is_told_of_a_change_of_any_cluster_once() {
        let (a, ra) = watch::channel(0u64);
        let (b, rb) = watch::channel(0u64);
        let mut changes = vec![ra, rb];
        assert!(!told(&mut changes), "nothing changed yet");
        b.send_modify(|n| *n += 1);
        assert!(told(&mut changes), "b changed");
        assert!(!told(&mut changes), "b's change was seen");
        a.send_modify(|n| *n += 1);
        assert!(told(&mut changes), "a changed");
        // A cluster gone is no change: its waits end never, not at once.
        drop(a);
        assert!(!told(&mut changes));
        assert!(!told(&mut []), "no cluster");
    }
}
