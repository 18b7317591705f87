//! Connections a client holds for a while (WATCH, blocking commands,
//! subscribers), counted against `[pool] max_held_connections`.

use super::job::Job;
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// A connection counted against `[pool] max_held_connections` until dropped.
#[derive(Debug)]
pub struct Reserved {
    pub(super) _ticket: Ticket,
}

/// A connection held for one client; it closes when this is dropped.
#[derive(Debug)]
pub struct Held {
    pub(super) queue: mpsc::UnboundedSender<Job>,
    /// The server's client id of the connection (0: not known yet).
    pub(super) server_id: Arc<AtomicU64>,
    pub(super) _ticket: Ticket,
}

impl Held {
    /// The server's client id of this connection, as it said after the
    /// handshake (CLIENT UNBLOCK names it); 0 when not known.
    pub fn server_id(&self) -> Arc<AtomicU64> {
        self.server_id.clone()
    }
}

/// Whose connection a held one is: a named user and its share of `[pool]
/// max_held_connections` on each backend, or `None` for the default user
/// (held to the pool's limit only).
pub type Share<'a> = Option<(&'a Bytes, usize)>;

/// Why no connection could be held for a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldRefused {
    /// `[pool] max_held_connections` are held already.
    Pool,
    /// The user holds its share already.
    User(usize),
    /// A Redis Cluster backend holds no connection for one client.
    Cluster,
}

impl HoldRefused {
    /// The client's error, for `what` the connection was wanted for.
    pub fn message(self, backend: &str, user: Option<&Bytes>, what: &str) -> String {
        match self {
            HoldRefused::Pool | HoldRefused::Cluster => format!(
                "ERR backend '{backend}' has [pool] max_held_connections held already: no connection for {what}"
            ),
            HoldRefused::User(limit) => format!(
                "ERR user '{}' holds {limit} connections to backend '{backend}' already, its share ([[users]] max_held_connections): no connection for {what}",
                String::from_utf8_lossy(user.map_or(&b""[..], |u| &u[..]))
            ),
        }
    }
}

/// Connections held for single clients on one backend: in all, and per
/// named user.
#[derive(Debug, Default)]
pub(super) struct HeldCount {
    pub(super) total: AtomicUsize,
    pub(super) by_user: std::sync::Mutex<std::collections::HashMap<Bytes, usize>>,
}

/// One held connection's place in [`HeldCount`], given back when dropped.
#[derive(Debug)]
pub(super) struct Ticket {
    pub(super) count: Arc<HeldCount>,
    pub(super) user: Option<Bytes>,
}

pub(super) trait TakeHeld {
    /// Counts one more held connection for `share`, within `max` in all;
    /// the ticket and how many were held before it.
    fn take(&self, share: Share<'_>, max: usize) -> Result<(Ticket, usize), HoldRefused>;
}

impl TakeHeld for Arc<HeldCount> {
    fn take(&self, share: Share<'_>, max: usize) -> Result<(Ticket, usize), HoldRefused> {
        let count = self.total.fetch_add(1, Ordering::AcqRel);
        if count >= max {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(HoldRefused::Pool);
        }
        if let Some((user, limit)) = share {
            let mut by_user = self.by_user.lock().unwrap_or_else(|e| e.into_inner());
            let mine = by_user.entry(user.clone()).or_default();
            if *mine >= limit {
                drop(by_user);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(HoldRefused::User(limit));
            }
            *mine += 1;
        }
        let ticket = Ticket {
            count: self.clone(),
            user: share.map(|(u, _)| u.clone()),
        };
        Ok((ticket, count))
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(user) = &self.user {
            let mut by_user = self.count.by_user.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(mine) = by_user.get_mut(user) {
                *mine -= 1;
                if *mine == 0 {
                    by_user.remove(user);
                }
            }
        }
        self.count.total.fetch_sub(1, Ordering::AcqRel);
    }
}
