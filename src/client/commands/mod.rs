//! The commands the proxy answers itself, one file per command family.

pub(in crate::client) mod auth;
pub(in crate::client) mod client;
pub(in crate::client) mod command;
pub(in crate::client) mod config;
pub(in crate::client) mod connection;
pub(in crate::client) mod hello;
pub(in crate::client) mod info;
pub(in crate::client) mod slowlog;

use bytes::Bytes;

use crate::client::State;
use crate::protocol::RedisError;
use crate::protocol::{Cmd, Reply, Spec};
use crate::shared::{Shared, Topology};

/// The reply to a command the proxy answers itself.
pub(in crate::client) fn answer(
    shared: &Shared,
    topo: &Topology,
    state: &mut State,
    spec: &Spec,
    args: &[Bytes],
) -> Reply {
    match spec.cmd {
        Cmd::Ping => connection::ping(state, args),
        Cmd::Echo => Reply::Bulk(args[1].clone()),
        Cmd::Quit => Reply::ok(),
        Cmd::Reset => {
            crate::client::tracking::off(shared, state);
            connection::reset(topo, state)
        }
        Cmd::Auth => auth::auth(topo, state, args),
        Cmd::Hello => hello::hello(topo, state, args),
        Cmd::Select => connection::select(topo, state, args),
        Cmd::Client => client::client_command(shared, state, args),
        Cmd::Command => command::command_command(args, state.proto),
        Cmd::Info => {
            // A prefix-restricted client is not shown the backends' addresses.
            let user = state.user.as_ref().and_then(|n| topo.config.user(n));
            let restricted = auth::is_restricted(topo, user);
            Reply::Verbatim(Bytes::from(info::info_text(
                shared,
                topo,
                &args[1..],
                restricted,
            )))
        }
        Cmd::Slowlog => slowlog::slowlog_command(shared, topo, state, args),
        Cmd::Time => connection::time(),
        Cmd::Config => config::config_command(shared, topo, args),
        // A client's writes go over connections it shares with others, so
        // WAIT on any of them would not be about its writes.
        Cmd::Wait => Reply::error(
            "ERR WAIT is not supported by session-proxy: set min_replicas_ack on a backend to have every write acknowledged by its replicas before the client's reply",
        ),
        // Routed commands never reach here.
        _ => RedisError::Routing.reply(),
    }
}
