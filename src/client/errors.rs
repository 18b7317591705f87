//! The errors the proxy answers clients itself, in Redis's words where
//! Redis has them: one place for their wording.

use bytes::Bytes;

use crate::protocol::spec::arity_fits;
use crate::protocol::{RedisError, Reply};

pub(in crate::client) fn noperm_command(name: &str) -> Reply {
    RedisError::NoPermCommand(name.to_string()).reply()
}

/// Redis's reply to a command it does not have, byte for byte: arguments are
/// echoed as C strings (up to a NUL byte), 128 bytes in all, other bytes kept
/// as they are (not made UTF-8).
pub(in crate::client) fn unknown_command(args: &[Bytes]) -> Reply {
    let mut listed: Vec<u8> = Vec::new();
    for arg in &args[1..] {
        if listed.len() >= 128 {
            break;
        }
        let room = 128 - listed.len();
        listed.push(b'\'');
        listed.extend_from_slice(c_str(arg, room));
        listed.extend_from_slice(b"' ");
    }
    let mut msg = b"ERR unknown command '".to_vec();
    msg.extend_from_slice(c_str(&args[0], 128));
    msg.extend_from_slice(b"', with args beginning with: ");
    msg.extend_from_slice(&listed);
    Reply::error(msg)
}

/// What C's `%.*s` prints of `arg`: up to its first NUL, at most `max` bytes.
pub(in crate::client) fn c_str(arg: &[u8], max: usize) -> &[u8] {
    let end = arg.iter().position(|&b| b == 0).unwrap_or(arg.len());
    &arg[..end.min(max)]
}

/// Redis's commands refused after MULTI (flagged `no-multi`), with their
/// arity. The proxy runs none of them, and answers them as unknown; after
/// MULTI, as Redis does.
const NO_MULTI: [(&str, i32); 4] = [("save", 1), ("shutdown", -1), ("sync", 1), ("psync", -3)];

/// What Redis answers a `no-multi` command after MULTI (its arity's error,
/// else "not allowed"), with the command's name; `None` for any other.
pub(in crate::client) fn refused_in_multi(args: &[Bytes]) -> Option<(&'static str, Reply)> {
    let name = args.first()?;
    let &(known, arity) = NO_MULTI
        .iter()
        .find(|(known, _)| name.eq_ignore_ascii_case(known.as_bytes()))?;
    let reply = if arity_fits(arity, args.len()) {
        RedisError::NoMulti.reply()
    } else {
        arity_error(known)
    };
    Some((known, reply))
}

pub(in crate::client) fn arity_error(name: &str) -> Reply {
    RedisError::Arity(name.to_string()).reply()
}

pub(in crate::client) fn unknown_subcommand(sub: &[u8], command: &str) -> Reply {
    let mut msg = b"ERR unknown subcommand '".to_vec();
    msg.extend_from_slice(c_str(sub, 128));
    msg.extend_from_slice(format!("'. Try {command} HELP.").as_bytes());
    Reply::error(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_errors_read_as_redis_writes_them() {
        let text = |e: RedisError| match e.reply() {
            Reply::Error(bytes) => String::from_utf8(bytes.to_vec()).unwrap(),
            other => panic!("not an error: {other:?}"),
        };
        assert_eq!(text(RedisError::NoAuth), "NOAUTH Authentication required.");
        assert_eq!(
            text(RedisError::CrossSlot),
            "CROSSSLOT Keys in request don't hash to the same slot"
        );
        assert_eq!(
            arity_error("get"),
            Reply::error("ERR wrong number of arguments for 'get' command")
        );
        assert_eq!(
            noperm_command("flushall"),
            Reply::error("NOPERM this user has no permissions to run the 'flushall' command")
        );
        assert_eq!(
            text(RedisError::TransactionTooLarge {
                commands: 3,
                bytes: 10
            }),
            "ERR transaction too large for session-proxy: at most 3 commands and 10 bytes ([limits] max_pipeline, max_request_bytes)"
        );
        assert_eq!(
            unknown_subcommand(b"NOPE\0X", "CLIENT"),
            Reply::error("ERR unknown subcommand 'NOPE'. Try CLIENT HELP.")
        );
    }
}
