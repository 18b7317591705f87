//! Leases: a connection one client has to itself for a while (a WATCH
//! until its EXEC, a blocking command, a subscriber's link), counted
//! against `[pool] max_held_connections` and its user's share until the
//! lease is dropped.

use super::job::Job;
use super::Kind;
use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// A leased connection's server and its client id there, as the server
/// said after the connection's last handshake: CLIENT UNBLOCK names it, on
/// that server only (another server's client of that id is another
/// client: the address may lead to a new master since). None before a
/// handshake, and once the connection is closed.
#[derive(Debug, Default)]
pub struct ServerId(std::sync::Mutex<Option<(ServerAt, u64)>>);

/// A server a connection reached: the endpoint it dialled and the address
/// that led to (a host name may lead elsewhere since: a managed service's
/// failover moves it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAt {
    pub endpoint: crate::config::Endpoint,
    pub peer: Option<std::net::SocketAddr>,
}

impl ServerId {
    pub(super) fn set(&self, at: ServerAt, id: u64) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((at, id));
    }

    pub(super) fn forget(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The server and the connection's client id there, if known.
    pub fn get(&self) -> Option<(ServerAt, u64)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What a lease is for: commands on a connection the backend makes for
/// it (speaking the client's protocol), or a link that dials its own
/// connection (Pub/Sub: `crate::pubsub::link`) and only needs counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseFor {
    Commands(crate::protocol::Proto),
    Link,
}

/// A connection leased to one client, counted against `[pool]
/// max_held_connections` until dropped; a lease for commands closes its
/// connection then.
#[derive(Debug)]
pub struct Lease {
    pub(super) line: Option<Line>,
    pub(super) _ticket: Ticket,
}

/// The connection of a lease for commands.
#[derive(Debug)]
pub(super) struct Line {
    pub(super) queue: mpsc::UnboundedSender<Job>,
    /// The server's client id of the connection.
    pub(super) server_id: Arc<ServerId>,
    /// The protocol it speaks to its client.
    pub(super) proto: crate::protocol::Proto,
}

impl Lease {
    /// The server's client id of this lease's connection, as it said
    /// after the handshake (CLIENT UNBLOCK names it); none for a link's
    /// lease.
    pub fn server_id(&self) -> Arc<ServerId> {
        self.line
            .as_ref()
            .map_or_else(Arc::default, |line| line.server_id.clone())
    }

    /// Where jobs for this lease's connection go (`None` for a link's).
    pub(super) fn queue(&self) -> Option<&mpsc::UnboundedSender<Job>> {
        self.line.as_ref().map(|line| &line.queue)
    }

    /// Where jobs for this lease's connection go, for a task that submits
    /// one later (see [`super::Backend::submit_later`]); `None` for a
    /// link's lease.
    pub fn later(&self) -> Option<LeaseQueue> {
        self.queue().cloned().map(LeaseQueue)
    }
}

/// A lease's connection, for a job submitted after the client's turn (a
/// WATCH whose keys a migration settles first). It keeps the connection
/// open while held, so it lives no longer than that one job's task.
#[derive(Debug, Clone)]
pub struct LeaseQueue(pub(super) mpsc::UnboundedSender<Job>);

/// Whose a leased connection is: a named user and its share of `[pool]
/// max_held_connections` on each backend, or `None` for the default user
/// (leasing up to the pool's limit only).
pub type Share<'a> = Option<(&'a Bytes, usize)>;

/// Why no connection could be leased to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseRefused {
    /// `[pool] max_held_connections` are leased already.
    Pool,
    /// The user has its share leased already.
    User(usize),
    /// A Redis Cluster backend leases no connection of its own to one
    /// client: a client's WATCH or blocking command leases one on the
    /// node of its keys ([`super::Backend::lease_for_keys`]), a
    /// subscriber's links one on each master (`crate::pubsub::cluster_link`).
    Cluster,
}

impl LeaseRefused {
    /// The client's error, for `what` the connection was wanted for.
    pub fn message(self, backend: &str, user: Option<&Bytes>, what: &str) -> String {
        match self {
            LeaseRefused::Pool => format!(
                "ERR backend '{backend}' has [pool] max_held_connections held already: no connection for {what}"
            ),
            LeaseRefused::Cluster => format!(
                "ERR backend '{backend}' is a Redis Cluster: no connection of its own for {what} (not supported on it yet)"
            ),
            LeaseRefused::User(limit) => format!(
                "ERR user '{}' holds {limit} connections to backend '{backend}' already, its share ([[users]] max_held_connections): no connection for {what}",
                String::from_utf8_lossy(user.map_or(&b""[..], |u| &u[..]))
            ),
        }
    }
}

/// Why no connection was leased for a client's commands about some keys
/// ([`super::Backend::lease_for_keys`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unleased {
    /// The backend (the node, for a cluster) leases no more.
    Refused(LeaseRefused),
    /// A cluster's own error line: keys in several slots, no master for
    /// their slot, no slot map yet, a database other than 0.
    Cluster(&'static str),
}

impl Unleased {
    /// The client's error, for `what` the connection was wanted for, on
    /// the configured `backend`.
    pub fn message(self, backend: &str, user: Option<&Bytes>, what: &str) -> String {
        match self {
            Unleased::Refused(refused) => refused.message(backend, user, what),
            Unleased::Cluster(line) => line.to_string(),
        }
    }
}

/// Connections leased to single clients on one backend: in all, and per
/// named user.
#[derive(Debug, Default)]
pub(super) struct Leases {
    pub(super) total: AtomicUsize,
    pub(super) by_user: std::sync::Mutex<std::collections::HashMap<Bytes, usize>>,
}

/// One lease's place in [`Leases`], given back when dropped.
#[derive(Debug)]
pub(super) struct Ticket {
    pub(super) count: Arc<Leases>,
    pub(super) user: Option<Bytes>,
}

pub(super) trait TakeLease {
    /// Counts one more lease for `share`, within `max` in all;
    /// the ticket and how many were leased before it.
    fn take(&self, share: Share<'_>, max: usize) -> Result<(Ticket, usize), LeaseRefused>;
}

impl TakeLease for Arc<Leases> {
    fn take(&self, share: Share<'_>, max: usize) -> Result<(Ticket, usize), LeaseRefused> {
        let count = self.total.fetch_add(1, Ordering::AcqRel);
        if count >= max {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(LeaseRefused::Pool);
        }
        if let Some((user, limit)) = share {
            let mut by_user = self.by_user.lock().unwrap_or_else(|e| e.into_inner());
            let mine = by_user.entry(user.clone()).or_default();
            if *mine >= limit {
                drop(by_user);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(LeaseRefused::User(limit));
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

impl super::Backend {
    /// A lease for one client (see [`Lease`]): for commands, a connection
    /// of its own (a WATCH until its EXEC, a blocking command), closed
    /// when the lease is dropped; for a link, only its count. Refused when
    /// `[pool] max_held_connections` are leased already, or the client's
    /// user has its share.
    pub fn lease(&self, share: Share<'_>, to: LeaseFor) -> Result<Lease, LeaseRefused> {
        let Kind::Pool(pool) = &self.kind else {
            return Err(LeaseRefused::Cluster);
        };
        let (ticket, count) = pool.leases.take(share, self.settings.max_held)?;
        let LeaseFor::Commands(proto) = to else {
            return Ok(Lease {
                line: None,
                _ticket: ticket,
            });
        };
        // On the client's own worker, numbered after the pool's.
        let worker = pool.workers.here();
        let number = self.settings.connections + 1 + count;
        let spawn = || {
            let server_id: Arc<ServerId> = Arc::default();
            let queue = (pool.spawn.0)(worker, number, proto, Some(server_id.clone()));
            Line {
                queue,
                server_id,
                proto,
            }
        };
        let line = match pool.pools.get(worker) {
            Some(pool) => pool.take_spare(proto, spawn),
            None => spawn(),
        };
        Ok(Lease {
            line: Some(line),
            _ticket: ticket,
        })
    }

    /// Takes back a lease for commands whose connection is as a new one
    /// would be (a blocking command was answered on it, and nothing but
    /// blocking commands was sent; or a WATCH's transaction, whose EXEC
    /// the server answered): the next client to lease one on this
    /// worker gets it, while fewer than `[pool] max_held_connections` wait
    /// there (so about as many stay connected as its clients held at
    /// once). Else, as for any lease dropped, the connection closes.
    pub fn give_back(&self, lease: Lease) {
        if let Some(line) = lease.line {
            self.keep_spare(line);
        }
    }

    /// Lets `lease` go at once (it no longer counts against `[pool]
    /// max_held_connections`) and gives its connection back as
    /// [`super::Backend::give_back`] does once `clean` says so (the reply of a
    /// command sent on it that leaves it as a new one: UNWATCH); else it
    /// closes.
    pub fn give_back_when(
        &self,
        lease: Lease,
        clean: impl std::future::Future<Output = bool> + Send + 'static,
    ) {
        let Some(line) = lease.line else {
            return;
        };
        let backend = self.clone();
        tokio::spawn(async move {
            if clean.await {
                backend.keep_spare(line);
            }
        });
    }

    fn keep_spare(&self, line: Line) {
        let Kind::Pool(pool) = &self.kind else {
            return;
        };
        if let Some(here) = pool.pools.get(pool.workers.here()) {
            here.keep_spare(line, self.settings.max_held);
        }
    }
}
