//! COMMAND: COUNT, INFO, LIST and the table behind them.

use crate::client::*;

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
