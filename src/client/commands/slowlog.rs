//! SLOWLOG: GET, LEN, RESET, HELP.

use bytes::Bytes;

use crate::client::errors::{arity_error, unknown_subcommand};
use crate::client::State;
use crate::protocol::request::string_to_i64;
use crate::protocol::RedisError;
use crate::protocol::Reply;
use crate::shared::{Shared, Topology};
use crate::slowlog::Viewer;

/// Redis 7's SLOWLOG HELP text, line for line.
pub(in crate::client) const SLOWLOG_HELP: &[&str] = &[
    "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GET [<count>]",
    "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
    "    Entries are made of:",
    "    id, timestamp, time in microseconds, arguments array, client IP and port,",
    "    client name",
    "LEN",
    "    Return the length of the slowlog.",
    "RESET",
    "    Reset the slowlog.",
    "HELP",
    "    Prints this help.",
];

/// SLOWLOG GET [count] | LEN | RESET | HELP, over the entries the caller
/// sees: a named user its own, the default user (or an admin) every one.
pub(in crate::client) fn slowlog_command(
    shared: &Shared,
    topo: &Topology,
    state: &State,
    args: &[Bytes],
) -> Reply {
    let user = state.user.as_ref().and_then(|n| topo.config.user(n));
    let viewer = match (&state.user, user) {
        (Some(name), Some(u)) if !u.admin => Viewer::User(name),
        _ => Viewer::All,
    };
    let sub = args[1].to_ascii_uppercase();
    match (&sub[..], args.len()) {
        (b"GET", 2) => shared.slowlog.get(10, viewer),
        (b"GET", 3) => match string_to_i64(&args[2]) {
            Some(n) if n < 0 => shared.slowlog.get(usize::MAX, viewer),
            Some(n) => shared.slowlog.get(n as usize, viewer),
            None => RedisError::NotAnInteger.reply(),
        },
        (b"GET", _) => arity_error("slowlog|get"),
        (b"LEN", 2) => Reply::Int(shared.slowlog.len_for(viewer) as i64),
        (b"LEN", _) => arity_error("slowlog|len"),
        (b"RESET", 2) => {
            shared.slowlog.reset(viewer);
            Reply::ok()
        }
        (b"RESET", _) => arity_error("slowlog|reset"),
        (b"HELP", 2) => Reply::Array(
            SLOWLOG_HELP
                .iter()
                .map(|line| Reply::status(line))
                .collect(),
        ),
        (b"HELP", _) => arity_error("slowlog|help"),
        _ => unknown_subcommand(&args[1], "SLOWLOG"),
    }
}
