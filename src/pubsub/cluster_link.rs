//! A subscribing client's link to a Redis Cluster backend: a link of its
//! own ([`super::link`]) to every master serving slots, kept as the slot
//! map changes (a failover's new master, a master added or gone: told by
//! [`crate::backend::cluster::Cluster::changes`]). Channels
//! and patterns are subscribed on every master, since a keyspace
//! notification is published on its key's node only (Spring Session's
//! `expired` events); a message a client publishes, which the cluster
//! sends to every node, is passed on from one of them only (the first
//! master by address), so it reaches the client once. A shard channel is
//! subscribed on the master of its slot, and again where its slot moves.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::link::{self, Order, Scope};
use super::{Kind, Wanted};
use crate::backend::cluster::any_changed;
use crate::backend::{Backend, Lease, LeaseFor, LeaseRefused};

/// How soon a master that refused a link (its `[pool]
/// max_held_connections` held) is asked again.
const RETRY_AFTER: Duration = Duration::from_millis(250);

/// What the links pass on to, and for whom.
pub struct Client {
    pub wanted: Arc<Mutex<Wanted>>,
    pub messages: mpsc::Sender<Bytes>,
    /// The largest message taken (`[limits] max_reply_bytes`).
    pub max_frame: usize,
    /// The user whose share of each node's held connections the links
    /// count against.
    pub share: Option<(Bytes, usize)>,
}

/// One master's link.
struct NodeLink {
    orders: mpsc::UnboundedSender<Order>,
    /// Passes every message on, not only notifications: the first master's.
    every_message: Arc<AtomicBool>,
    _lease: Lease,
}

/// The masters' links, by node id, and where each shard channel is
/// subscribed.
struct Links {
    /// The cluster backend.
    backend: Backend,
    /// Its index in the topology: the shard channels it owns.
    index: usize,
    client: Client,
    nodes: BTreeMap<Arc<str>, NodeLink>,
    shards_on: HashMap<Bytes, Arc<str>>,
}

/// A lease on each master, or the node that refused one and why.
type Leased = Result<Vec<(Backend, Lease)>, (Arc<str>, LeaseRefused)>;

/// A lease on every master serving slots now (none before the first slot
/// map), taken when the client subscribes so that it is told at once when
/// a node has its `[pool] max_held_connections` held: the node's id and
/// the refusal.
pub fn lease_masters(backend: &Backend, share: Option<(&Bytes, usize)>) -> Leased {
    let masters = backend.cluster().map(|c| c.masters()).unwrap_or_default();
    masters
        .into_iter()
        .map(|node| match node.lease(share, LeaseFor::Link) {
            Ok(lease) => Ok((node, lease)),
            Err(refused) => Err((node.id.clone(), refused)),
        })
        .collect()
}

/// The link's task, with the leases [`lease_masters`] took; ends when the
/// client drops its sender.
pub async fn run(
    backend: Backend,
    index: usize,
    client: Client,
    mut leased: Vec<(Backend, Lease)>,
    mut orders: mpsc::UnboundedReceiver<Order>,
) {
    let mut links = Links {
        backend,
        index,
        client,
        nodes: BTreeMap::new(),
        shards_on: HashMap::new(),
    };
    let mut changes: Vec<_> = links
        .backend
        .cluster()
        .map(|c| c.changes())
        .into_iter()
        .collect();
    // The links are there before the first order, so that it is
    // confirmed once the masters have confirmed it.
    let mut linked = links.follow_map(&mut leased);
    loop {
        let retry = async {
            match linked {
                true => std::future::pending().await,
                false => tokio::time::sleep(RETRY_AFTER).await,
            }
        };
        tokio::select! {
            _ = any_changed(&mut changes) => {
                linked = links.follow_map(&mut leased);
                links.move_shards();
            }
            _ = retry => linked = links.follow_map(&mut leased),
            order = orders.recv() => match order {
                Some(order) => links.dispatch(order),
                None => return,
            },
        }
    }
}

impl Links {
    /// A link to every master serving slots, none to a node that serves
    /// none now; the first master's passes every message on. False where
    /// a master refused one (or no map came yet): asked again soon.
    fn follow_map(&mut self, leased: &mut Vec<(Backend, Lease)>) -> bool {
        let masters = self
            .backend
            .cluster()
            .map(|c| c.masters())
            .unwrap_or_default();
        if masters.is_empty() {
            return false;
        }
        let mut linked = true;
        self.nodes
            .retain(|id, _| masters.iter().any(|master| master.id == *id));
        for (place, master) in masters.iter().enumerate() {
            if !self.nodes.contains_key(&master.id) {
                let taken = leased.iter().position(|(node, _)| node.id == master.id);
                let share = self.client.share.as_ref().map(|(u, n)| (u, *n));
                let lease = match taken {
                    Some(at) => Ok(leased.swap_remove(at).1),
                    None => master.lease(share, LeaseFor::Link),
                };
                match lease {
                    Ok(lease) => self.start(master, lease),
                    Err(refused) => {
                        let user = self.client.share.as_ref().map(|(u, _)| u);
                        let why = refused.message(&master.id, user, "a subscription");
                        warn!(node = %master.id, %why, "no subscription link on a master yet");
                        linked = false;
                        continue;
                    }
                }
            }
            if let Some(link) = self.nodes.get(&master.id) {
                link.every_message.store(place == 0, Ordering::Relaxed);
            }
        }
        leased.clear();
        linked
    }

    /// Starts `master`'s link: it subscribes what the client wants when
    /// it connects, shard channels only those whose slot it serves.
    fn start(&mut self, master: &Backend, lease: Lease) {
        let every_message = Arc::new(AtomicBool::new(false));
        let (cluster, node, index) = (self.backend.clone(), master.clone(), self.index);
        let scope = Scope {
            shard_here: Box::new(move |name, owner| {
                owner == index
                    && cluster
                        .serving(&[name], 0)
                        .is_some_and(|serving| serving.same_task(&node))
            }),
            every_message: Some(every_message.clone()),
        };
        let (orders, receiver) = mpsc::unbounded_channel();
        tokio::spawn(link::run(
            master.clone(),
            scope,
            self.client.wanted.clone(),
            receiver,
            self.client.messages.clone(),
            self.client.max_frame,
        ));
        let link = NodeLink {
            orders,
            every_message,
            _lease: lease,
        };
        self.nodes.insert(master.id.clone(), link);
    }

    /// The master serving `name`'s slot now, by id.
    fn serving(&self, name: &[u8]) -> Option<Arc<str>> {
        self.backend.serving(&[name], 0).map(|node| node.id)
    }

    /// Subscribes each shard channel again on the master of its slot where
    /// that is another than the one it was subscribed on (a node whose
    /// slot moves away unsubscribes the slot's channels).
    fn move_shards(&mut self) {
        let names: Vec<Bytes> = match self.client.wanted.lock() {
            Ok(wanted) => wanted
                .shards
                .iter()
                .filter(|(_, owner)| **owner == self.index)
                .map(|(name, _)| name.clone())
                .collect(),
            Err(_) => return,
        };
        self.shards_on.retain(|name, _| names.contains(name));
        for name in names {
            let Some(now) = self.serving(&name) else {
                continue;
            };
            match self.shards_on.insert(name.clone(), now.clone()) {
                Some(before) if before != now => {}
                _ => continue,
            }
            if let Some(link) = self.nodes.get(&now) {
                let _ = link.orders.send(Order {
                    kind: Kind::Shard,
                    subscribing: true,
                    names: vec![name],
                    ack: None,
                });
            }
        }
    }

    /// Sends a client's order to the masters it concerns (a shard
    /// channel's to its slot's master, the rest to every one); its
    /// acknowledgement once every one of them has acknowledged.
    fn dispatch(&mut self, order: Order) {
        let Order {
            kind,
            subscribing,
            names,
            ack,
        } = order;
        let mut parts: Vec<(Arc<str>, Vec<Bytes>)> = Vec::new();
        match kind {
            Kind::Shard if !names.is_empty() => {
                for name in names {
                    let Some(node) = self.serving(&name) else {
                        continue;
                    };
                    match subscribing {
                        true => self.shards_on.insert(name.clone(), node.clone()),
                        false => self.shards_on.remove(&name),
                    };
                    match parts.iter_mut().find(|(id, _)| *id == node) {
                        Some((_, list)) => list.push(name),
                        None => parts.push((node, vec![name])),
                    }
                }
            }
            _ => {
                parts = self
                    .nodes
                    .keys()
                    .map(|id| (id.clone(), names.clone()))
                    .collect()
            }
        }
        let mut acks = Vec::new();
        for (node, names) in parts {
            let Some(link) = self.nodes.get(&node) else {
                continue;
            };
            let (tx, rx) = match ack {
                Some(_) => {
                    let (tx, rx) = oneshot::channel();
                    (Some(tx), Some(rx))
                }
                None => (None, None),
            };
            let order = Order {
                kind,
                subscribing,
                names,
                ack: tx,
            };
            if link.orders.send(order).is_ok() {
                acks.extend(rx);
            }
        }
        if let Some(ack) = ack {
            tokio::spawn(async move {
                for acked in acks {
                    let _ = acked.await;
                }
                let _ = ack.send(());
            });
        }
    }
}
