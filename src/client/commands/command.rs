//! COMMAND: COUNT, INFO, LIST and the table behind them.

use bytes::Bytes;

use crate::client::commands::config::glob_match;
use crate::client::errors::{arity_error, unknown_subcommand};
use crate::protocol::command::TABLE;
use crate::protocol::RedisError;
use crate::protocol::{lookup, Proto, Reply, Request, Route, Spec};

pub(in crate::client) fn command_command(args: &[Bytes], _proto: Proto) -> Reply {
    let Some(sub) = args.get(1) else {
        return Reply::Array(TABLE.iter().copied().map(command_info).collect());
    };
    let sub_upper = sub.to_ascii_uppercase();
    match &sub_upper[..] {
        b"COUNT" if args.len() == 2 => Reply::Int(TABLE.len() as i64),
        b"COUNT" => arity_error("command|count"),
        b"INFO" => {
            if args.len() == 2 {
                return Reply::Array(TABLE.iter().copied().map(command_info).collect());
            }
            Reply::Array(
                args[2..]
                    .iter()
                    .map(|name| lookup(name).map_or(Reply::Null, command_info))
                    .collect(),
            )
        }
        // No documentation is served; redis-cli then simply shows no hints.
        b"DOCS" => Reply::Map(Vec::new()),
        b"GETKEYS" => getkeys(args),
        b"LIST" => list(args),
        _ => unknown_subcommand(sub, "COMMAND"),
    }
}

/// A COMMAND INFO entry in Redis 7's shape.
pub(in crate::client) fn command_info(spec: &'static Spec) -> Reply {
    let mut flags = vec![Reply::status(if spec.write { "write" } else { "readonly" })];
    if spec.route == Route::Local {
        flags = vec![Reply::status("fast")];
        if spec.no_auth {
            flags.push(Reply::status("no_auth"));
        }
    }
    let (first, last, step) = spec.keys;
    Reply::Array(vec![
        Reply::bulk_str(spec.name),
        Reply::Int(spec.arity as i64),
        Reply::Set(flags),
        Reply::Int(first),
        Reply::Int(last),
        Reply::Int(step),
        Reply::Set(Vec::new()),
        Reply::Set(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
    ])
}

/// COMMAND GETKEYS: the keys of a command, as the proxy finds them (the
/// same lookup that routes it), in Redis's words when there are none.
fn getkeys(args: &[Bytes]) -> Reply {
    if args.len() < 4 {
        return arity_error("command|getkeys");
    }
    let Some(spec) = lookup(&args[2]) else {
        return RedisError::InvalidCommand.reply();
    };
    if !spec.arity_ok(args.len() - 2) {
        return RedisError::InvalidArgumentCount.reply();
    }
    let keyed = !matches!(spec.route, Route::Local | Route::AllBackends | Route::Scan);
    if !keyed || (spec.route == Route::Channel) {
        return RedisError::NoKeyArguments.reply();
    }
    let request = Request::Inline(args[2..].to_vec());
    let Ok(positions) = crate::protocol::keys::positions(spec, &request) else {
        return RedisError::InvalidArguments.reply();
    };
    // A script or function may declare no keys (Redis's no-mandatory-keys).
    if positions.len() == 0 && spec.route != Route::Script {
        return RedisError::InvalidArguments.reply();
    }
    Reply::Array(
        positions
            .filter_map(|i| args.get(i + 2).cloned())
            .map(Reply::Bulk)
            .collect(),
    )
}

/// COMMAND LIST [FILTERBY PATTERN glob]: the names of the commands the proxy
/// has.
fn list(args: &[Bytes]) -> Reply {
    let pattern = match args.len() {
        2 => None,
        5 if args[2].eq_ignore_ascii_case(b"FILTERBY")
            && args[3].eq_ignore_ascii_case(b"PATTERN") =>
        {
            Some(&args[4])
        }
        _ => return RedisError::Syntax.reply(),
    };
    Reply::Array(
        TABLE
            .iter()
            .filter(|spec| pattern.is_none_or(|p| glob_match(p, spec.name.as_bytes())))
            .map(|spec| Reply::bulk_str(spec.name))
            .collect(),
    )
}
