//! Every connected client, for CLIENT LIST and CLIENT KILL: each handler
//! registers a card when its client connects (removed when it goes),
//! publishes what CLIENT LIST shows after each command the proxy answers
//! itself (name, user, database, protocol, library), and notes each
//! command's name and time with two relaxed stores.

use std::collections::HashMap;
use std::sync::atomic::{
    AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;

use crate::protocol::command::TABLE;

/// What CLIENT LIST shows of one client.
#[derive(Debug)]
pub struct ClientCard {
    pub id: u64,
    pub peer: String,
    pub local: String,
    pub connected_at: Instant,
    /// Name, user (`None`: default), library name and version.
    pub labels: Mutex<Labels>,
    pub db: AtomicU32,
    pub proto: AtomicU8,
    /// The last command's index in the command table (`usize::MAX`: none).
    pub command: AtomicUsize,
    /// When the last command came, in ms after `connected_at`.
    pub last_ms: AtomicU64,
    killed: AtomicBool,
    /// Pub/Sub subscriptions: channels, patterns, shard channels.
    pub subscriptions: [AtomicU32; 3],
    /// While a blocking command of this client waits on a server: that
    /// backend and the server's client id of the connection (CLIENT
    /// UNBLOCK; `flags=b` in CLIENT LIST). Boxed: a backend handle is
    /// hundreds of bytes, and every client has a card while few block.
    blocked_on: Mutex<Option<Box<BlockedOn>>>,
    /// CLIENT TRACKING's flags for CLIENT LIST (`t`, `R`, `B`: bits 0-2,
    /// see `tracking::mode::Mode::list_flags`) and `redir=`.
    pub tracking: AtomicU8,
    pub redir: AtomicI64,
    /// Invalidations waiting for this client (its own, or those of a
    /// client redirecting to it); its wake-up also tells the handler that
    /// CLIENT KILL picked this client (one wait for both).
    pub inbox: crate::tracking::inbox::Inbox,
}

/// Where a client's blocking command waits: the backend, the server's
/// client id of the connection it holds there, and whether a CLIENT
/// UNBLOCK is aimed at it.
pub type BlockedOn = (
    crate::backend::Backend,
    Arc<crate::backend::ServerId>,
    Arc<Aim>,
);

/// Whether a CLIENT UNBLOCK is aimed at a blocking command's connection,
/// decided once between the UNBLOCK and the command's end: an UNBLOCK that
/// comes later is not sent, and a connection one was aimed at is not given
/// to the next lease, whose command it could otherwise reach.
#[derive(Debug, Default)]
pub struct Aim(AtomicU8);

const WAITING: u8 = 0;
const AIMED: u8 = 1;
const OVER: u8 = 2;

impl Aim {
    /// An UNBLOCK takes aim: whether the command still waits (else it is
    /// over, and the UNBLOCK answers 0 unsent).
    pub fn take(&self) -> bool {
        let aimed = self
            .0
            .compare_exchange(WAITING, AIMED, Ordering::AcqRel, Ordering::Acquire);
        aimed.is_ok()
    }

    /// The command is over: whether no UNBLOCK was aimed at it.
    pub fn end(&self) -> bool {
        self.0.swap(OVER, Ordering::AcqRel) != AIMED
    }
}

/// The text labels of a client.
#[derive(Debug, Default, Clone)]
pub struct Labels {
    pub name: Option<Bytes>,
    pub user: Option<Bytes>,
    pub lib_name: Option<Bytes>,
    pub lib_ver: Option<Bytes>,
}

impl ClientCard {
    pub fn labels(&self) -> Labels {
        self.labels.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn set_labels(&self, labels: Labels) {
        if let Ok(mut l) = self.labels.lock() {
            *l = labels;
        }
    }

    /// Notes a command (its table index) at `now`.
    pub fn noted(&self, command: usize, now: Instant) {
        self.command.store(command, Ordering::Relaxed);
        let ms = now.saturating_duration_since(self.connected_at).as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Asks the handler to close the connection.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Relaxed);
        self.inbox.notify.notify_one();
    }

    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Relaxed)
    }

    /// Notes where the client's blocking command now waits (`None`: it
    /// no longer does).
    pub fn set_blocked_on(&self, on: Option<BlockedOn>) {
        if let Ok(mut blocked) = self.blocked_on.lock() {
            *blocked = on.map(Box::new);
        }
    }

    /// Where the client's blocking command waits, if one does.
    pub fn blocked_on(&self) -> Option<BlockedOn> {
        self.blocked_on
            .lock()
            .ok()
            .and_then(|b| b.as_deref().cloned())
    }

    /// One line of CLIENT LIST / CLIENT INFO, in Redis's format; `command`
    /// names the running command in full (`client|info`) for the caller's
    /// own line.
    pub fn line(&self, command: Option<&str>) -> String {
        let labels = self.labels();
        let show = |b: &Option<Bytes>| {
            b.as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default()
        };
        let last = self.last_ms.load(Ordering::Relaxed);
        let age = self.connected_at.elapsed();
        let idle = age.as_millis().saturating_sub(last as u128) / 1000;
        let subs = self
            .subscriptions
            .each_ref()
            .map(|n| n.load(Ordering::Relaxed));
        let command = command.unwrap_or_else(|| {
            TABLE
                .get(self.command.load(Ordering::Relaxed))
                .map_or("NULL", |s| s.name)
        });
        format!(
            "id={} addr={} laddr={} fd=-1 name={} age={} idle={} flags={} db={} sub={} psub={} ssub={} multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user={} redir={} resp={} lib-name={} lib-ver={}\n",
            self.id,
            self.peer,
            self.local,
            show(&labels.name),
            age.as_secs(),
            idle,
            flags(
                self.blocked_on().is_some(),
                subs.iter().any(|&n| n > 0),
                self.tracking.load(Ordering::Relaxed)
            ),
            self.db.load(Ordering::Relaxed),
            subs[0],
            subs[1],
            subs[2],
            command,
            labels.user.as_ref().map_or("default".into(), |u| String::from_utf8_lossy(u)),
            self.redir.load(Ordering::Relaxed),
            self.proto.load(Ordering::Relaxed),
            show(&labels.lib_name),
            show(&labels.lib_ver),
        )
    }
}

/// CLIENT LIST's flags, in Redis's order: `P` subscribed, `b` blocked,
/// `t` tracking, `R` its redirect broken, `B` broadcasting; else `N`.
fn flags(blocked: bool, subscribed: bool, tracking: u8) -> String {
    let mut flags = String::new();
    for (on, flag) in [
        (subscribed, 'P'),
        (blocked, 'b'),
        (tracking & 1 != 0, 't'),
        (tracking & 2 != 0, 'R'),
        (tracking & 4 != 0, 'B'),
    ] {
        if on {
            flags.push(flag);
        }
    }
    if flags.is_empty() {
        flags.push('N');
    }
    flags
}

/// The connected clients, by id.
#[derive(Debug, Default)]
pub struct Clients {
    cards: Mutex<HashMap<u64, Arc<ClientCard>>>,
}

/// Removes its card from [`Clients`] when the client goes.
pub struct Registered<'a> {
    clients: &'a Clients,
    pub card: Arc<ClientCard>,
}

impl Clients {
    /// Adds a client's card; it stays while the returned guard lives.
    pub fn register(&self, id: u64, peer: &str, local: &str, now: Instant) -> Registered<'_> {
        let card = Arc::new(ClientCard {
            id,
            peer: peer.to_string(),
            local: local.to_string(),
            connected_at: now,
            labels: Mutex::default(),
            db: AtomicU32::new(0),
            proto: AtomicU8::new(2),
            command: AtomicUsize::new(usize::MAX),
            last_ms: AtomicU64::new(0),
            killed: AtomicBool::new(false),
            subscriptions: Default::default(),
            blocked_on: Mutex::new(None),
            tracking: AtomicU8::new(0),
            redir: AtomicI64::new(-1),
            inbox: Default::default(),
        });
        if let Ok(mut cards) = self.cards.lock() {
            cards.insert(id, card.clone());
        }
        Registered {
            clients: self,
            card,
        }
    }

    /// The card of client `id`, while it is connected.
    pub fn get(&self, id: u64) -> Option<Arc<ClientCard>> {
        self.cards.lock().ok()?.get(&id).cloned()
    }

    /// Every card, in id order.
    pub fn all(&self) -> Vec<Arc<ClientCard>> {
        let mut cards: Vec<_> = self
            .cards
            .lock()
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default();
        cards.sort_by_key(|c| c.id);
        cards
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if let Ok(mut cards) = self.clients.cards.lock() {
            cards.remove(&self.card.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_card_stays_small() {
        // Every connected client has one: 10,000 idle clients hold 10,000.
        // A blocking command's backend handle is boxed, not inline.
        assert!(std::mem::size_of::<ClientCard>() <= 400);
    }

    /// Of an UNBLOCK and the command's end, the first decides: an UNBLOCK
    /// first keeps the connection from the next lease; the end first
    /// leaves the UNBLOCK nothing to aim at.
    #[test]
    fn an_unblock_and_the_end_of_its_command_are_ordered_once() {
        let aim = Aim::default();
        assert!(aim.take());
        assert!(!aim.take());
        assert!(!aim.end());
        let aim = Aim::default();
        assert!(aim.end());
        assert!(!aim.take());
        assert!(aim.end());
    }
}
