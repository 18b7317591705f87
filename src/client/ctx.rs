//! What carrying out one request needs, in one place: the state every
//! connection shares, the topology the request runs on, the client's state
//! and its batcher, the request and its command's spec, and the clock
//! reading of the pass that decoded it.

use std::sync::Arc;
use std::time::Instant;

use crate::client::batcher::Batcher;
use crate::client::State;
use crate::protocol::{Request, Spec};
use crate::shared::{Shared, Topology};

pub(in crate::client) struct Ctx<'a> {
    pub(in crate::client) shared: &'a Shared,
    pub(in crate::client) topo: &'a Arc<Topology>,
    pub(in crate::client) state: &'a mut State,
    pub(in crate::client) batcher: &'a mut Batcher,
    pub(in crate::client) spec: &'a Spec,
    pub(in crate::client) request: &'a Request,
    pub(in crate::client) now: Instant,
}

impl Ctx<'_> {
    /// Sends what the client gathered: those commands came before this one.
    pub(in crate::client) fn flush(&mut self) {
        self.batcher.flush(self.topo, self.state.origin());
    }
}
