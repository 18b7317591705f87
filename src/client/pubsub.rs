//! A client's Pub/Sub: (P|S)SUBSCRIBE and (P|S)UNSUBSCRIBE on links of its
//! own to the backends (`crate::pubsub`), the confirmations Redis would
//! send, once every backend has confirmed a subscribe, and Redis's rules
//! for a RESP2 client in subscribed mode.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::backend::{BackendResult, Lease, LeaseFor};
use crate::client::ctx::Ctx;
use crate::client::slot::{Pending, Slot};
use crate::client::State;
use crate::protocol::RedisError;
use crate::protocol::{Cmd, Proto, Reply, Spec};
use crate::pubsub::cluster_link;
use crate::pubsub::link::{self, Order};
use crate::pubsub::{Kind, Wanted};
use crate::shared::Topology;

/// Messages a client's links may hold for it before they wait (and Redis's
/// own output limit for Pub/Sub clients takes over on the backend): each at
/// most `[limits] max_reply_bytes`.
const MESSAGES_QUEUED: usize = 64;

/// A subscribing client's links and what it is subscribed to.
pub(in crate::client) struct Subscriber {
    pub(in crate::client) wanted: Arc<Mutex<Wanted>>,
    links: Vec<Option<Link>>,
    pub(in crate::client) messages: mpsc::Receiver<Bytes>,
    sender: mpsc::Sender<Bytes>,
    /// The user whose share of leased connections the links count against.
    share: Option<(Bytes, usize)>,
}

/// One link: its orders; it counts against `[pool] max_held_connections`
/// (on a cluster backend, its masters' links count on each node).
struct Link {
    orders: mpsc::UnboundedSender<Order>,
    backend: crate::backend::Backend,
    _lease: Option<Lease>,
}

impl Subscriber {
    fn new(share: Option<(Bytes, usize)>) -> Subscriber {
        let (sender, messages) = mpsc::channel(MESSAGES_QUEUED);
        Subscriber {
            wanted: Arc::default(),
            links: Vec::new(),
            messages,
            sender,
            share,
        }
    }

    /// Tells CLIENT LIST how many subscriptions of each kind there are.
    fn show(&self, card: &crate::clients::ClientCard) {
        if let Ok(w) = self.wanted.lock() {
            for (slot, n) in
                card.subscriptions
                    .iter()
                    .zip([w.channels.len(), w.patterns.len(), w.shards.len()])
            {
                slot.store(n as u32, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// Subscriptions in all.
    pub(in crate::client) fn total(&self) -> usize {
        self.wanted.lock().map_or(0, |w| w.total())
    }

    /// Makes sure backend `index` has a link; the error when no more
    /// connections may be held there.
    fn link(&mut self, topo: &Topology, index: usize) -> Result<(), Reply> {
        if self.links.len() <= index {
            self.links.resize_with(index + 1, || None);
        }
        if self.links[index].is_some() {
            return Ok(());
        }
        let backend = &topo.backends[index];
        let share = self.share.as_ref().map(|(u, n)| (u, *n));
        let user = self.share.as_ref().map(|(u, _)| u);
        let (orders, receiver) = mpsc::unbounded_channel();
        let max_frame = topo.config.limits.max_reply_bytes;
        let lease = if backend.cluster().is_some() {
            let leased =
                cluster_link::lease_masters(backend, share).map_err(|(node, refused)| {
                    Reply::error(refused.message(&node, user, "a subscription"))
                })?;
            let client = cluster_link::Client {
                wanted: self.wanted.clone(),
                messages: self.sender.clone(),
                max_frame,
                share: self.share.clone(),
            };
            tokio::spawn(cluster_link::run(
                backend.clone(),
                index,
                client,
                leased,
                receiver,
            ));
            None
        } else {
            let lease = backend.lease(share, LeaseFor::Link).map_err(|refused| {
                Reply::error(refused.message(&backend.id, user, "a subscription"))
            })?;
            tokio::spawn(link::run(
                backend.clone(),
                link::Scope::backend(index),
                self.wanted.clone(),
                receiver,
                self.sender.clone(),
                max_frame,
            ));
            Some(lease)
        };
        self.links[index] = Some(Link {
            orders,
            backend: backend.clone(),
            _lease: lease,
        });
        Ok(())
    }

    /// After a reload: a link to every backend of the new topology (a new
    /// link subscribes what the client wants there when it connects), none
    /// to a backend that went, and shard channels moved to their new owner.
    pub(in crate::client) fn follow(&mut self, topo: &Topology) {
        self.links.truncate(topo.backends.len());
        for (link, backend) in self.links.iter_mut().zip(&topo.backends) {
            if link.as_ref().is_some_and(|l| !l.backend.same_task(backend)) {
                *link = None;
            }
        }
        let (everywhere, moved) = match self.wanted.lock() {
            Ok(mut wanted) => {
                let mut moved = Vec::new();
                for (name, owner) in wanted.shards.iter_mut() {
                    let now = topo.route(name);
                    if now != *owner {
                        moved.push((name.clone(), *owner, now));
                        *owner = now;
                    }
                }
                (
                    !wanted.channels.is_empty() || !wanted.patterns.is_empty(),
                    moved,
                )
            }
            Err(_) => return,
        };
        if everywhere {
            for index in 0..topo.backends.len() {
                let _ = self.link(topo, index);
            }
        }
        for (name, from, to) in moved {
            let order = |subscribing| Order {
                kind: Kind::Shard,
                subscribing,
                names: vec![name.clone()],
                ack: None,
            };
            self.order(from, order(false));
            if self.links.get(to).is_some_and(Option::is_some) {
                self.order(to, order(true));
            } else {
                let _ = self.link(topo, to);
            }
        }
    }

    fn order(&self, index: usize, order: Order) {
        if let Some(Some(link)) = self.links.get(index) {
            let _ = link.orders.send(order);
        }
    }
}

/// The kind and direction of a (un)subscribe command.
pub(in crate::client) fn kind_of(cmd: Cmd) -> Option<(Kind, bool)> {
    Some(match cmd {
        Cmd::Subscribe => (Kind::Channel, true),
        Cmd::PSubscribe => (Kind::Pattern, true),
        Cmd::SSubscribe => (Kind::Shard, true),
        Cmd::Unsubscribe => (Kind::Channel, false),
        Cmd::PUnsubscribe => (Kind::Pattern, false),
        Cmd::SUnsubscribe => (Kind::Shard, false),
        _ => return None,
    })
}

/// Redis's refusal of `spec` for a RESP2 client in subscribed mode.
#[inline]
pub(in crate::client) fn subscribed_refusal(state: &State, spec: &Spec) -> Option<Reply> {
    let subscribed = state.subscriber.as_ref().is_some_and(|s| s.total() > 0);
    if !subscribed || state.proto != Proto::Resp2 {
        return None;
    }
    let allowed =
        kind_of(spec.cmd).is_some() || matches!(spec.cmd, Cmd::Ping | Cmd::Quit | Cmd::Reset);
    (!allowed).then(|| RedisError::Subscribed(spec.name.to_string()).reply())
}

/// PING in subscribed mode (RESP2): `pong` and the message, in an array.
pub(in crate::client) fn subscribed_ping(state: &State, args: &[Bytes]) -> Option<Reply> {
    let subscribed = state.subscriber.as_ref().is_some_and(|s| s.total() > 0);
    (subscribed && state.proto == Proto::Resp2).then(|| {
        Reply::Array(vec![
            Reply::bulk_str("pong"),
            Reply::Bulk(args.get(1).cloned().unwrap_or_default()),
        ])
    })
}

/// Runs a (un)subscribe command of `kind`.
pub(in crate::client) fn subscription(cx: &mut Ctx<'_>, kind: Kind, subscribing: bool) -> Slot {
    let Ctx {
        topo, request, now, ..
    } = *cx;
    let state = &mut *cx.state;
    let proto = state.proto;
    let names: Vec<Bytes> = request.args().split_off(1);
    let share = state.share(topo);
    let subscriber = state
        .subscriber
        .get_or_insert_with(|| Box::new(Subscriber::new(share)));
    let targets = targets(topo, subscriber, kind, subscribing, &names);
    if !subscribing {
        let reply = match unsubscribe(subscriber, &state.card, kind, &names, targets, proto) {
            Ok(confirmations) => confirmations,
            Err(refusal) => return Slot::ready(proto, refusal),
        };
        if subscriber.total() == 0 {
            // Out of subscribed mode: the links close.
            state.subscriber = None;
        }
        return Slot::ready(proto, reply);
    }
    match subscribe(topo, subscriber, &state.card, kind, names, targets, proto) {
        Ok(rx) => Slot::waiting(topo, proto, Pending::One(rx), Arc::from("*"), now),
        Err(refusal) => Slot::ready(proto, refusal),
    }
}

/// The backends each name goes to: every one, or a shard channel's owner
/// (for SUNSUBSCRIBE, the backend it was subscribed on).
fn targets(
    topo: &Topology,
    subscriber: &Subscriber,
    kind: Kind,
    subscribing: bool,
    names: &[Bytes],
) -> Vec<(usize, Vec<Bytes>)> {
    match kind {
        Kind::Shard if subscribing => group_by_owner(names, |n| topo.route(n)),
        Kind::Shard => {
            let wanted = subscriber
                .wanted
                .lock()
                .map(|w| w.shards.clone())
                .unwrap_or_default();
            let chosen: Vec<Bytes> = if names.is_empty() {
                wanted.keys().cloned().collect()
            } else {
                names.to_vec()
            };
            group_by_owner(&chosen, |n| {
                wanted.get(n).copied().unwrap_or_else(|| topo.route(n))
            })
        }
        _ => (0..topo.backends.len())
            .map(|i| (i, names.to_vec()))
            .collect(),
    }
}

/// Orders the links to unsubscribe and returns the confirmations, at once.
fn unsubscribe(
    subscriber: &mut Subscriber,
    card: &crate::clients::ClientCard,
    kind: Kind,
    names: &[Bytes],
    targets: Vec<(usize, Vec<Bytes>)>,
    proto: Proto,
) -> Result<Reply, Reply> {
    let (confirmations, _) = match subscriber.wanted.lock() {
        Ok(mut wanted) => wanted.unsubscribe(kind, names, proto),
        Err(_) => return Err(RedisError::Internal.reply()),
    };
    for (index, names) in targets {
        // With no names, the link unsubscribes every one of the kind.
        let order = Order {
            kind,
            subscribing: false,
            names: if names.is_empty() { Vec::new() } else { names },
            ack: None,
        };
        subscriber.order(index, order);
    }
    subscriber.show(card);
    Ok(Reply::Encoded(confirmations))
}

/// Links to every backend concerned and orders them to subscribe; the
/// confirmations come once every backend has confirmed, so a message
/// published after them reaches this client.
fn subscribe(
    topo: &Topology,
    subscriber: &mut Subscriber,
    card: &crate::clients::ClientCard,
    kind: Kind,
    names: Vec<Bytes>,
    targets: Vec<(usize, Vec<Bytes>)>,
    proto: Proto,
) -> Result<oneshot::Receiver<BackendResult>, Reply> {
    let limit = topo.config.limits.max_subscriptions;
    if subscriber.total() + names.len() > limit {
        return Err(RedisError::TooManySubscriptions(limit).reply());
    }
    for (index, _) in &targets {
        subscriber.link(topo, *index)?;
    }
    let confirmations = match subscriber.wanted.lock() {
        Ok(mut wanted) => wanted.subscribe(kind, &names, proto, |n| topo.route(n)),
        Err(_) => return Err(RedisError::Internal.reply()),
    };
    subscriber.show(card);
    let mut acks = Vec::with_capacity(targets.len());
    for (index, names) in targets {
        let (ack, acked) = oneshot::channel();
        acks.push(acked);
        let order = Order {
            kind,
            subscribing: true,
            names,
            ack: Some(ack),
        };
        subscriber.order(index, order);
    }
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        for acked in acks {
            let _ = acked.await;
        }
        let _ = tx.send(Ok(Reply::Encoded(confirmations)));
    });
    Ok(rx)
}

fn group_by_owner(names: &[Bytes], owner: impl Fn(&[u8]) -> usize) -> Vec<(usize, Vec<Bytes>)> {
    let mut groups: Vec<(usize, Vec<Bytes>)> = Vec::new();
    for name in names {
        let index = owner(name);
        match groups.iter_mut().find(|(i, _)| *i == index) {
            Some((_, list)) => list.push(name.clone()),
            None => groups.push((index, vec![name.clone()])),
        }
    }
    groups
}
