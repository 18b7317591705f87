//! Client-side caching through the proxy (CLIENT TRACKING). Redis tracks
//! what each of its connections read, but the proxy's backend connections
//! are shared by many clients, so the proxy keeps the tracking table itself
//! (which of its clients read which key, [`table`]) and learns of every
//! change from the backends: one link per backend in BCAST mode ([`link`])
//! hears of every key changed there, by this proxy, another proxy or a
//! client of the server's own, expiry and eviction included. A Redis
//! Cluster backend has one on each master serving slots, kept as the
//! masters change (`watch_masters`).
//!
//! Exactness rests on three rules:
//! - a key is remembered before its read is sent, and a client is told of a
//!   change behind the replies it has in flight ([`inbox`]), so a read that
//!   Redis ran before a change never reaches the client after the news;
//! - a read on a backend whose link is not confirmed (connecting, lost, a
//!   cluster master not linked yet) is invalidated right behind its reply:
//!   the client may not keep it;
//! - when a link is lost, the master moves (a cluster's masters change) or
//!   a reload moves keys, every
//!   tracking client is told to flush, as Redis tells its clients when a
//!   tracking connection breaks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;

use crate::backend::Backend;
use crate::clients::ClientCard;
use crate::topology::Topology;

pub mod inbox;
pub mod link;
pub mod mode;
pub mod own_writes;
pub mod table;

use inbox::Note;
use link::LinkState;
use own_writes::OwnWrites;
use table::Table;

/// A tracking client, as the tracker needs it.
#[derive(Debug, Clone)]
pub struct Tracked {
    pub card: Arc<ClientCard>,
    /// REDIRECT's target and its id.
    pub redirect: Option<(u64, Weak<ClientCard>)>,
    /// BCAST prefixes; `None` in default, OPTIN and OPTOUT modes.
    pub bcast: Option<Vec<Bytes>>,
    /// NOLOOP: not told of its own writes.
    pub noloop: bool,
    /// The key prefixes the client's user (and `[keys] prefixes`) keep it
    /// to: it is told of no other key. Empty: no restriction.
    pub restricted_to: Vec<Vec<Bytes>>,
}

impl Tracked {
    /// Whether the client may hear of `key`.
    fn may_hear(&self, key: &[u8]) -> bool {
        self.restricted_to
            .iter()
            .all(|list| list.is_empty() || list.iter().any(|p| key.starts_with(p)))
    }

    /// Posts `note` to the client, or to the client it redirects to.
    fn send(&self, note: Note) {
        let Some((id, target)) = &self.redirect else {
            return self.card.inbox.post(note);
        };
        match target.upgrade() {
            Some(target) => target.inbox.post(match note {
                Note::Keys { keys, .. } => Note::Keys {
                    keys,
                    redirected: true,
                },
                Note::Flush { .. } => Note::Flush { redirected: true },
                other => other,
            }),
            None => self.card.inbox.post(Note::RedirectBroken(*id)),
        }
    }
}

/// One backend's link.
struct Link {
    backend: Backend,
    state: Arc<LinkState>,
    task: tokio::task::AbortHandle,
}

impl Link {
    fn is_up(&self) -> bool {
        self.state.up.load(Ordering::Acquire)
    }
}

#[derive(Default)]
struct Inner {
    table: Table,
    clients: HashMap<u64, Tracked>,
    /// The BCAST clients among them, each change being news to all of them.
    bcast: std::collections::BTreeSet<u64>,
    links: Vec<Link>,
    own: OwnWrites,
    /// The topology's backends, whose servers have links.
    backends: Vec<Backend>,
    /// The largest frame a link takes (`[limits] max_reply_bytes`).
    max_frame: usize,
    /// The task that follows the masters of the topology's cluster
    /// backends, while it has one.
    watcher: Option<tokio::task::AbortHandle>,
}

/// The servers that have a link: every backend, and in a Redis Cluster
/// backend's place each master serving slots.
fn linked_servers(backends: &[Backend]) -> Vec<Backend> {
    backends
        .iter()
        .flat_map(|backend| match backend.cluster() {
            Some(cluster) => cluster.masters(),
            None => vec![backend.clone()],
        })
        .collect()
}

/// The proxy's tracking: the table, the tracking clients and the links.
#[derive(Default)]
pub struct Tracker {
    inner: Mutex<Inner>,
    /// A client ever turned tracking on: the links run and follow reloads.
    active: AtomicBool,
    /// Woken when a link comes up.
    links_changed: tokio::sync::Notify,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tracker")
    }
}

impl Tracker {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A client turned tracking on (or changed its mode): the links are
    /// started on first use.
    pub fn register(self: &Arc<Self>, topo: &Topology, id: u64, tracked: Tracked) {
        if !self.active.swap(true, Ordering::AcqRel) {
            self.follow(topo, false);
        }
        let mut inner = self.inner();
        if tracked.bcast.is_some() {
            inner.bcast.insert(id);
        } else {
            inner.bcast.remove(&id);
        }
        inner.clients.insert(id, tracked);
    }

    /// The client turned tracking off or is gone.
    pub fn unregister(&self, id: u64) {
        if self.active.load(Ordering::Acquire) {
            let mut inner = self.inner();
            inner.clients.remove(&id);
            inner.bcast.remove(&id);
            inner.own.forget(id);
        }
    }

    /// A NOLOOP client's write replied (see [`own_writes`]).
    pub fn replied(&self, id: u64) {
        self.inner().own.arm(id);
    }

    /// Client `id` is about to read `keys` (default mode, or OPTIN/OPTOUT
    /// as it asked, or BCAST): where no link covers them, they are
    /// invalidated at once behind the reply (a BCAST client's under its
    /// prefixes); else, outside BCAST, remembered.
    pub fn remember(&self, topo: &Topology, id: u64, keys: &[Bytes]) {
        let limit = topo.config.limits.tracking_table_keys;
        let mut inner = self.inner();
        let bcast = inner.clients.get(&id).and_then(|t| t.bcast.clone());
        let mut uncovered = Vec::new();
        let mut evicted = Vec::new();
        for key in keys {
            let covered = link_for(&inner.links, topo, key).is_some();
            match &bcast {
                None if covered => evicted.extend(inner.table.remember(key, id, limit)),
                None => uncovered.push(key.clone()),
                Some(prefixes) => {
                    if !covered && prefixes.iter().any(|p| key.starts_with(p)) {
                        uncovered.push(key.clone());
                    }
                }
            }
        }
        for (key, ids) in evicted {
            tell(&inner.clients, &ids, &key);
        }
        if let Some(me) = inner.clients.get(&id) {
            for key in uncovered {
                me.send(Note::Keys {
                    keys: vec![key],
                    redirected: false,
                });
            }
        }
    }

    /// Client `id`, tracking with NOLOOP, is about to write `keys`: it is
    /// not told of its own change (see [`own_writes`]).
    pub fn wrote(&self, topo: &Topology, id: u64, keys: &[Bytes]) {
        let mut inner = self.inner();
        let inner = &mut *inner;
        for key in keys {
            if let Some(link) = link_for(&inner.links, topo, key) {
                inner.own.note(key, id, &link.state.pings);
            }
        }
    }

    /// A backend says `keys` changed (in the order it sends them).
    pub fn invalidated(&self, keys: &[Bytes]) {
        let mut inner = self.inner();
        let inner = &mut *inner;
        for key in keys {
            if let Some(mut ids) = inner.table.take(key) {
                ids.retain(|&id| !inner.own.take(key, id));
                tell(&inner.clients, &ids, key);
            }
        }
        for &id in &inner.bcast {
            let Some(tracked) = inner.clients.get(&id) else {
                continue;
            };
            let Some(prefixes) = &tracked.bcast else {
                continue;
            };
            for prefix in prefixes {
                let under: Vec<Bytes> = keys
                    .iter()
                    .filter(|k| k.starts_with(prefix) && tracked.may_hear(k))
                    .filter(|k| !(tracked.noloop && inner.own.take(k, id)))
                    .cloned()
                    .collect();
                if !under.is_empty() {
                    tracked.send(Note::Keys {
                        keys: under,
                        redirected: false,
                    });
                }
            }
        }
    }

    /// The BCAST clients are told to flush: what they cached under their
    /// prefixes, not in the table, cannot be vouched for (a cluster's
    /// masters changed).
    fn flush_bcast(&self) {
        let inner = self.inner();
        for id in &inner.bcast {
            if let Some(tracked) = inner.clients.get(id) {
                tracked.send(Note::Flush { redirected: false });
            }
        }
    }

    /// Every tracking client is told to flush: what it cached cannot be
    /// vouched for (a link lost, a flush on a backend, a reload).
    pub fn flush_all(&self) {
        let mut inner = self.inner();
        inner.table.clear();
        for tracked in inner.clients.values() {
            tracked.send(Note::Flush { redirected: false });
        }
    }

    /// Whether every server of `topo` (each backend, a cluster's masters)
    /// has its link confirmed.
    pub fn ready(&self, topo: &Topology) -> bool {
        let inner = self.inner();
        linked_servers(&topo.backends).iter().all(|server| {
            inner
                .links
                .iter()
                .any(|l| l.backend.same_task(server) && l.is_up())
        })
    }

    /// Waits until [`Tracker::ready`], at most `limit`: CLIENT TRACKING ON
    /// answers once the reads after it can be cached.
    pub async fn wait_ready(&self, topo: &Topology, limit: std::time::Duration) {
        let until = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.links_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.ready(topo) {
                return;
            }
            if tokio::time::timeout_at(until, changed).await.is_err() {
                return;
            }
        }
    }

    /// Links confirmed now.
    pub fn links_up(&self) -> usize {
        let inner = self.inner();
        inner.links.iter().filter(|l| l.is_up()).count()
    }

    /// The link on `server` came up. Where it is a cluster's master
    /// (a failover's, a node given slots), what changed on it before was
    /// not heard: the keys its slots hold, which clients read from the
    /// master before it, are invalidated (only those, not every client's
    /// whole cache).
    fn link_up(&self, server: &Backend) {
        {
            let mut inner = self.inner();
            let inner = &mut *inner;
            // The slots it serves in each cluster, each map read once.
            let served: Vec<_> = inner
                .backends
                .iter()
                .filter_map(Backend::cluster)
                .map(|cluster| cluster.slots_served_by(server))
                .filter(|slots| !slots.is_empty())
                .collect();
            if !served.is_empty() {
                let taken = inner
                    .table
                    .take_where(|key| served.iter().any(|slots| slots.has_key(key)));
                for (key, ids) in taken {
                    tell(&inner.clients, &ids, &key);
                }
            }
        }
        self.links_changed.notify_waiters();
    }

    /// Keys remembered now (INFO's `tracking_total_keys`).
    pub fn keys(&self) -> usize {
        self.inner().table.len()
    }

    /// Client ids remembered over all keys (INFO's `tracking_total_items`).
    pub fn items(&self) -> usize {
        self.inner().table.items()
    }

    /// BCAST prefixes in use, each once (INFO's `tracking_total_prefixes`).
    pub fn prefixes(&self) -> usize {
        let inner = self.inner();
        let all: std::collections::BTreeSet<&Bytes> = inner
            .clients
            .values()
            .filter_map(|t| t.bcast.as_ref())
            .flatten()
            .collect();
        all.len()
    }

    /// Tracking clients now (INFO's `tracking_clients`).
    pub fn clients(&self) -> usize {
        self.inner().clients.len()
    }

    /// A new topology is in force (or tracking starts): a link for every
    /// server of it, those of servers it dropped stopped. `moved`: keys
    /// may be elsewhere now, so every tracking client flushes.
    pub fn follow(self: &Arc<Self>, topo: &Topology, moved: bool) {
        if !self.active.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        {
            let mut inner = self.inner();
            inner.backends = topo.backends.clone();
            inner.max_frame = topo.config.limits.max_reply_bytes;
            // Told of every change from before the links are made.
            let changes: Vec<_> = topo
                .backends
                .iter()
                .filter_map(|b| Some(b.cluster()?.changes()))
                .collect();
            self.link_servers(&mut inner, &runtime);
            if let Some(watcher) = inner.watcher.take() {
                watcher.abort();
            }
            if !changes.is_empty() {
                let watcher = runtime.spawn(watch_masters(Arc::downgrade(self), changes));
                inner.watcher = Some(watcher.abort_handle());
            }
        }
        if moved {
            self.flush_all();
        }
    }

    /// A link to every server of the backends (see [`linked_servers`]),
    /// none to another; whether any was stopped or started.
    fn link_servers(self: &Arc<Self>, inner: &mut Inner, runtime: &tokio::runtime::Handle) -> bool {
        let servers = linked_servers(&inner.backends);
        let mut changed = false;
        let mut kept = Vec::new();
        for link in std::mem::take(&mut inner.links) {
            if servers.iter().any(|s| s.same_task(&link.backend)) {
                kept.push(link);
            } else {
                link.task.abort();
                changed = true;
            }
        }
        for server in servers {
            if kept.iter().any(|l| l.backend.same_task(&server)) {
                continue;
            }
            let state = Arc::new(LinkState::default());
            let run = link::run(
                server.clone(),
                state.clone(),
                Arc::downgrade(self),
                inner.max_frame,
            );
            kept.push(Link {
                backend: server,
                state,
                task: runtime.spawn(run).abort_handle(),
            });
            changed = true;
        }
        inner.links = kept;
        changed
    }
}

/// Follows the masters of the cluster backends, told by their `changes`
/// (see [`crate::backend::Cluster::changes`]): a link on a master that
/// came (a failover's, a node given slots), none on one gone. The changes
/// on a new master before its link came up were not heard: once it is up,
/// the keys its slots hold are invalidated ([`Tracker::link_up`]); BCAST
/// clients, whose keys the table does not hold, flush when it starts.
async fn watch_masters(
    tracker: Weak<Tracker>,
    mut changes: Vec<tokio::sync::watch::Receiver<u64>>,
) {
    loop {
        crate::backend::cluster::any_changed(&mut changes).await;
        let Some(tracker) = tracker.upgrade() else {
            return;
        };
        let runtime = tokio::runtime::Handle::current();
        let changed = {
            let mut inner = tracker.inner();
            tracker.link_servers(&mut inner, &runtime)
        };
        if changed {
            tracker.flush_bcast();
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        let inner = self.inner();
        for link in &inner.links {
            link.task.abort();
        }
        if let Some(watcher) = &inner.watcher {
            watcher.abort();
        }
    }
}

/// Tells the clients `ids` (those still tracking in default mode) that
/// `key` changed.
fn tell(clients: &HashMap<u64, Tracked>, ids: &[u64], key: &Bytes) {
    for id in ids {
        if let Some(tracked) = clients.get(id) {
            if tracked.bcast.is_none() && tracked.may_hear(key) {
                tracked.send(Note::Keys {
                    keys: vec![key.clone()],
                    redirected: false,
                });
            }
        }
    }
}

/// The confirmed link that watches the server serving `key` now (its
/// backend, or a cluster backend's master of its slot).
fn link_for<'a>(links: &'a [Link], topo: &Topology, key: &[u8]) -> Option<&'a Link> {
    let backend = &topo.backends[topo.route(key)];
    let master = backend.serving(&[key], 0);
    let server = master.as_ref().unwrap_or(backend);
    links
        .iter()
        .find(|l| l.backend.same_task(server) && l.is_up())
}
