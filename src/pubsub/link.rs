//! One subscribing client's connection to one backend: subscribes what the
//! client wants there (again after every reconnect, so a subscriber lives
//! through a backend restart or a failover), sends its (un)subscribes on,
//! tells it when Redis has confirmed a subscribe, and hands it the messages.
//! When Sentinel names a new master, or the backend's host name leads
//! elsewhere (`[pool] dns_refresh_s`), the link moves to it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use super::{classify, is_shard_message, notification_key, Incoming, Kind, Wanted};
use crate::backend::Backend;
use crate::dial::Backoff;
use crate::protocol::{encode_command, reply_extent};

/// How long a link waits before connecting again.
const RETRY: Duration = Duration::from_millis(500);

/// A command for a link: (un)subscribe `names`; `ack` once Redis has
/// confirmed every one of them (or the backend cannot be reached: the
/// link subscribes them when it connects).
pub struct Order {
    pub kind: Kind,
    pub subscribing: bool,
    pub names: Vec<Bytes>,
    pub ack: Option<oneshot::Sender<()>>,
}

/// Whether a shard channel (its name, and the index of the backend that
/// owns it) is subscribed on a link.
pub type ShardHere = Box<dyn Fn(&[u8], usize) -> bool + Send + Sync>;

/// Which of a client's subscriptions a link carries, and which messages it
/// passes on.
pub struct Scope {
    /// Whether a shard channel, subscribed on the backend of that index,
    /// is subscribed on this link.
    pub shard_here: ShardHere,
    /// `None`: every message. Else every message while set, and while not
    /// only keyspace notifications and shard channels' messages (a cluster
    /// node's link: a client's PUBLISH reaches every node, a notification
    /// only its key's; see [`super::cluster_link`]).
    pub every_message: Option<Arc<AtomicBool>>,
}

impl Scope {
    /// A backend's link: the shard channels that backend owns, and every
    /// message.
    pub fn backend(index: usize) -> Scope {
        Scope {
            shard_here: Box::new(move |_, owner| owner == index),
            every_message: None,
        }
    }

    /// Whether `frame`, a message, goes on to the client.
    fn passes(&self, frame: &[u8]) -> bool {
        self.every_message
            .as_ref()
            .is_none_or(|every| every.load(Ordering::Relaxed))
            || notification_key(frame).is_some()
            || is_shard_message(frame)
    }
}

/// Confirmations owed, in order: how many, and who waits for them.
type Owed = VecDeque<(usize, Option<oneshot::Sender<()>>)>;

/// Why a link's session ended.
enum End {
    /// The client is gone: the link ends.
    Gone,
    /// The connection is lost: the link connects again.
    Lost(String),
}

/// The link's task; ends when the client drops its sender.
pub async fn run(
    backend: Backend,
    scope: Scope,
    wanted: Arc<Mutex<Wanted>>,
    mut orders: mpsc::UnboundedReceiver<Order>,
    messages: mpsc::Sender<Bytes>,
    max_frame: usize,
) {
    // The master the backend follows (Sentinel): a link on the old one
    // would miss what happens on the new one (its keyspace events).
    let mut master = backend.endpoint.clone();
    let mut backoff = Backoff::fixed(RETRY);
    loop {
        master.borrow_and_update();
        // Orders wait while connecting (at most the connect timeout): the
        // subscription is made on connect, from `wanted`, and they are
        // confirmed then.
        let (stream, peer) = match backend.connect_apart().await {
            Ok(reached) => reached,
            Err(error) => {
                debug!(backend = %backend.id, %error, "subscription link cannot connect");
                if !wait_out(&mut orders, backoff.pause()).await {
                    return;
                }
                continue;
            }
        };
        let mut owed = Owed::new();
        let mut wbuf = BytesMut::new();
        resubscribe(&wanted, &scope, &mut owed, &mut wbuf);
        let mut rbuf = BytesMut::new();
        // A managed service's failover moves its name, not a Sentinel master.
        let name_moved = backend.name_moved(peer);
        tokio::pin!(name_moved);
        let lost = 'session: loop {
            if !wbuf.is_empty() {
                if let Err(e) = stream.write_all(&mut wbuf).await {
                    break 'session e.to_string();
                }
            }
            tokio::select! {
                changed = master.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    break 'session "the master moved".to_string();
                }
                () = &mut name_moved => break 'session "the name leads elsewhere".to_string(),
                order = orders.recv() => {
                    let Some(order) = order else { return };
                    take_order(order, &mut owed, &mut wbuf);
                }
                read = stream.read_some(&mut rbuf) => {
                    match read {
                        Ok(0) => break 'session "closed by the server".to_string(),
                        Err(e) => break 'session e.to_string(),
                        Ok(_) => {}
                    }
                    match take_frames(&mut rbuf, max_frame, (&messages, &scope), &mut owed).await {
                        Ok(()) => {}
                        Err(End::Gone) => return,
                        Err(End::Lost(reason)) => break 'session reason,
                    }
                }
            }
        };
        debug!(backend = %backend.id, reason = %lost, "subscription link lost; reconnecting");
        // Whoever waits is told: the subscription is made again on connect.
        for (_, ack) in owed.drain(..) {
            if let Some(ack) = ack {
                let _ = ack.send(());
            }
        }
    }
}

/// Not connected: what the client orders now is subscribed on connect, so
/// it is acknowledged at once, not kept waiting for that. Waits `pause`;
/// `false` once the client is gone.
async fn wait_out(orders: &mut mpsc::UnboundedReceiver<Order>, pause: Duration) -> bool {
    let wait = tokio::time::sleep(pause);
    tokio::pin!(wait);
    loop {
        tokio::select! {
            _ = &mut wait => return true,
            order = orders.recv() => match order {
                Some(order) => acknowledge(order),
                None => return false,
            },
        }
    }
}

/// On connect: subscribes again to everything the client wants of this
/// backend (its shard channels only those its scope carries).
fn resubscribe(wanted: &Mutex<Wanted>, scope: &Scope, owed: &mut Owed, wbuf: &mut BytesMut) {
    let wanted = wanted.lock().unwrap_or_else(|e| e.into_inner());
    let shards: Vec<Bytes> = wanted
        .shards
        .iter()
        .filter(|(name, owner)| (scope.shard_here)(name, **owner))
        .map(|(name, _)| name.clone())
        .collect();
    let channels = wanted.channels.iter().cloned().collect::<Vec<_>>();
    let patterns = wanted.patterns.iter().cloned().collect();
    for (kind, names) in [
        (Kind::Channel, channels),
        (Kind::Pattern, patterns),
        (Kind::Shard, shards),
    ] {
        if !names.is_empty() {
            owed.push_back((names.len(), None));
            write_order(wbuf, kind, true, &names);
        }
    }
}

/// Writes a client's order; a subscription is acknowledged once the
/// server confirms it, the rest at once.
fn take_order(order: Order, owed: &mut Owed, wbuf: &mut BytesMut) {
    if order.names.is_empty() && order.subscribing {
        acknowledge(order);
        return;
    }
    write_order(wbuf, order.kind, order.subscribing, &order.names);
    if order.subscribing {
        owed.push_back((order.names.len(), order.ack));
    } else {
        acknowledge(order);
    }
}

/// Takes the whole frames read: messages go to the client, confirmations
/// settle what is owed.
async fn take_frames(
    rbuf: &mut BytesMut,
    max_frame: usize,
    (messages, scope): (&mpsc::Sender<Bytes>, &Scope),
    owed: &mut Owed,
) -> Result<(), End> {
    loop {
        let len = match reply_extent(rbuf, max_frame) {
            Ok(Some(len)) => len,
            Ok(None) => return Ok(()),
            Err(e) => return Err(End::Lost(format!("{e:?}"))),
        };
        let frame = rbuf.split_to(len).freeze();
        match classify(&frame) {
            Incoming::Message if !scope.passes(&frame) => {}
            Incoming::Message => {
                if messages.send(frame).await.is_err() {
                    return Err(End::Gone);
                }
            }
            Incoming::Confirmed => {
                if let Some(front) = owed.front_mut() {
                    front.0 = front.0.saturating_sub(1);
                    if front.0 == 0 || frame.first() == Some(&b'-') {
                        if let Some((_, Some(ack))) = owed.pop_front() {
                            let _ = ack.send(());
                        }
                    }
                }
            }
            Incoming::Other => {}
        }
    }
}

fn acknowledge(order: Order) {
    if let Some(ack) = order.ack {
        let _ = ack.send(());
    }
}

fn write_order(wbuf: &mut BytesMut, kind: Kind, subscribing: bool, names: &[Bytes]) {
    let mut args = Vec::with_capacity(names.len() + 1);
    args.push(Bytes::from_static(kind.command(subscribing)));
    args.extend(names.iter().cloned());
    encode_command(&args, wbuf);
}
