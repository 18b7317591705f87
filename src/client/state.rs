//! What Redis keeps per connection (protocol, database, name,
//! authentication, MULTI and WATCH, subscriptions), and what CLIENT INFO
//! shows of it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::backend::Origin;
use crate::client::pubsub::Subscriber;
use crate::client::transaction::{Multi, Watching};
use crate::protocol::Proto;
use crate::shared::Topology;

/// What Redis keeps per connection, and what CLIENT INFO shows of it.
pub(in crate::client) struct State {
    pub(in crate::client) id: u64,
    pub(in crate::client) proto: Proto,
    pub(in crate::client) db: u32,
    pub(in crate::client) name: Option<Bytes>,
    pub(in crate::client) lib_name: Option<Bytes>,
    pub(in crate::client) lib_ver: Option<Bytes>,
    pub(in crate::client) authenticated: bool,
    /// The named user (`[[users]]`) the client authenticated as; `None` for
    /// the default user.
    pub(in crate::client) user: Option<Bytes>,
    pub(in crate::client) peer: String,
    pub(in crate::client) last_command_at: Instant,
    pub(in crate::client) last_command: &'static str,
    /// Set by QUIT or a protocol error: read no further requests.
    pub(in crate::client) closing: bool,
    /// Moving average of the size of this client's replies from backends,
    /// and whether it counts as a client of large replies (see [`Origin`]),
    /// decided afresh only when nothing of its is in flight.
    pub(in crate::client) reply_bytes: u64,
    pub(in crate::client) large_replies: bool,
    /// Commands queued since MULTI, until EXEC or DISCARD.
    pub(in crate::client) multi: Option<Multi>,
    /// The connection WATCH was sent on, leased until EXEC, DISCARD or UNWATCH.
    pub(in crate::client) watching: Option<Watching>,
    /// What CLIENT LIST shows of this client (see `crate::clients`).
    pub(in crate::client) card: Arc<crate::clients::ClientCard>,
    /// Pub/Sub subscriptions and their links, from the first SUBSCRIBE.
    pub(in crate::client) subscriber: Option<Box<Subscriber>>,
    /// Wrong passwords sent on this connection (see `crate::auth_guard`).
    pub(in crate::client) auth_failures: u32,
    /// CLIENT REPLY OFF: no reply is written until CLIENT REPLY ON.
    pub(in crate::client) replies_off: bool,
    /// CLIENT REPLY SKIP: replies not written, this one and the next.
    pub(in crate::client) skip_replies: u8,
    /// CLIENT TRACKING's settings.
    pub(in crate::client) tracking: crate::tracking::mode::Mode,
}

impl State {
    /// Who sends a request, for the backend connection it goes on: one
    /// speaking the client's protocol, so a reply is passed on as it is.
    /// Every request of the client's own goes there, merged ones too: one
    /// connection per backend keeps a pipeline's requests in order (a SET,
    /// then an MGET split over backends, reads the SET). Only steps the
    /// proxy takes alone (a sweep, a migration's reads) use
    /// `origin().resp2()`.
    pub(in crate::client) fn origin(&self) -> Origin {
        Origin {
            client: self.id,
            reply_bytes: self.reply_bytes,
            large_replies: self.large_replies,
            proto: self.proto,
        }
    }

    /// The client's share of leased connections: its named user and that
    /// user's limit, or `None` for the default user.
    pub(in crate::client) fn share(&self, topo: &Topology) -> Option<(Bytes, usize)> {
        let name = self.user.as_ref()?;
        let user = topo.config.user(name)?;
        Some((name.clone(), user.held_share(&topo.config.pool)))
    }

    /// Publishes what CLIENT LIST shows, after a command that may change it.
    pub(in crate::client) fn publish(&self) {
        self.card.set_labels(crate::clients::Labels {
            name: self.name.clone(),
            user: self.user.clone(),
            lib_name: self.lib_name.clone(),
            lib_ver: self.lib_ver.clone(),
        });
        self.card.db.store(self.db, Ordering::Relaxed);
        self.card
            .proto
            .store(self.proto.number() as u8, Ordering::Relaxed);
    }

    /// Notes the size of a backend's reply to this client: the first one
    /// as it is, later ones into a moving average.
    pub(in crate::client) fn replied(&mut self, bytes: usize) {
        self.reply_bytes = if self.reply_bytes == 0 {
            bytes as u64
        } else {
            (self.reply_bytes * 7 + bytes as u64).div_ceil(8)
        };
    }
}
