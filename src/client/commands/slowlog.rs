//! SLOWLOG: GET, LEN, RESET, HELP.

use crate::client::*;

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

/// SLOWLOG GET [count] | LEN | RESET | HELP.
pub(in crate::client) fn slowlog_command(shared: &Shared, args: &[Bytes]) -> Reply {
    let sub = args[1].to_ascii_uppercase();
    match (&sub[..], args.len()) {
        (b"GET", 2) => shared.slowlog.get(10),
        (b"GET", 3) => match parse_int(&args[2]) {
            Some(n) if n < 0 => shared.slowlog.get(usize::MAX),
            Some(n) => shared.slowlog.get(n as usize),
            None => Reply::error("ERR value is not an integer or out of range"),
        },
        (b"GET", _) => arity_error("slowlog|get"),
        (b"LEN", 2) => Reply::Int(shared.slowlog.len() as i64),
        (b"LEN", _) => arity_error("slowlog|len"),
        (b"RESET", 2) => {
            shared.slowlog.reset();
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
