//! The connection commands the proxy answers itself: PING, RESET, SELECT,
//! and TIME from the proxy's clock.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::client::pubsub::subscribed_ping;
use crate::client::State;
use crate::protocol::request::string_to_i64;
use crate::protocol::RedisError;
use crate::protocol::{Proto, Reply};
use crate::shared::Topology;

/// PING: in subscribed mode as Redis answers there, else PONG or the
/// message.
pub(in crate::client) fn ping(state: &State, args: &[Bytes]) -> Reply {
    let plain = || match args.get(1) {
        None => Reply::status("PONG"),
        Some(msg) => Reply::Bulk(msg.clone()),
    };
    if state.subscriber.is_some() {
        return subscribed_ping(state, args).unwrap_or_else(plain);
    }
    plain()
}

/// RESET: the connection as a new one finds it.
pub(in crate::client) fn reset(topo: &Topology, state: &mut State) -> Reply {
    if let Some(subscriber) = state.subscriber.take() {
        drop(subscriber);
        for n in &state.card.subscriptions {
            n.store(0, Ordering::Relaxed);
        }
    }
    state.multi = None;
    state.watching = None;
    state.proto = Proto::Resp2;
    state.db = 0;
    state.name = None;
    state.authenticated = topo.config.open_by_default();
    state.user = None;
    Reply::status("RESET")
}

/// SELECT, within `[listen] databases`.
pub(in crate::client) fn select(topo: &Topology, state: &mut State, args: &[Bytes]) -> Reply {
    match string_to_i64(&args[1]) {
        None => RedisError::NotAnInteger.reply(),
        Some(db) if db < 0 || db >= topo.config.listen.databases as i64 => {
            RedisError::DbIndex.reply()
        }
        Some(db) => {
            state.db = db as u32;
            Reply::ok()
        }
    }
}

/// TIME from the proxy's clock: the backends' may differ by a little, and
/// no one of them is the client's server.
pub(in crate::client) fn time() -> Reply {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Reply::Array(vec![
        Reply::bulk(now.as_secs().to_string()),
        Reply::bulk(now.subsec_micros().to_string()),
    ])
}
