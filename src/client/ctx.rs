//! What carrying out one request needs, in one place: the state every
//! connection shares, the topology the request runs on, the client's state
//! and its batcher, the request, its command's spec and the user it runs
//! as, and the clock reading of the pass that decoded it.

use std::sync::Arc;
use std::time::Instant;

use crate::client::batcher::Batcher;
use crate::client::plan::Policy;
use crate::client::State;
use crate::config::User;
use crate::protocol::{Request, Spec};
use crate::shared::{Shared, Topology};

pub(in crate::client) struct Ctx<'a> {
    pub(in crate::client) shared: &'a Shared,
    pub(in crate::client) topo: &'a Arc<Topology>,
    pub(in crate::client) state: &'a mut State,
    pub(in crate::client) batcher: &'a mut Batcher,
    pub(in crate::client) spec: &'a Spec,
    pub(in crate::client) request: &'a Request,
    /// The client's named user (`None`: the default user).
    pub(in crate::client) user: Option<&'a User>,
    pub(in crate::client) now: Instant,
}

impl<'a> Ctx<'a> {
    /// Sends what the client gathered: those commands came before this one.
    pub(in crate::client) fn flush(&mut self) {
        self.batcher.flush(self.topo, self.state.origin());
    }

    /// What the config and the user allow, for `plan`.
    #[inline]
    pub(in crate::client) fn policy(&self) -> Policy<'a> {
        let topo: &'a Topology = self.topo;
        let keys = &topo.config.keys;
        Policy {
            prefixes: &keys.prefixes,
            user_prefixes: self.user.map_or(&[][..], |u| &u.prefixes[..]),
            scripts: &keys.scripts,
            backends: topo.backends.len(),
            allow_flush: keys.allow_flush,
            split_transactions: keys.split_transactions,
            clusters: &topo.clusters,
            channels: None,
            max_scan_count: topo.config.limits.max_scan_count,
            hash_tag: keys.hash_tag(),
        }
    }
}
