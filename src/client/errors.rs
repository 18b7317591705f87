//! The errors the proxy answers clients itself, in Redis's words where
//! Redis has them: one place for their wording.

use bytes::Bytes;

use crate::protocol::Reply;

pub(in crate::client) const NOAUTH: &str = "NOAUTH Authentication required.";

pub(in crate::client) const WRONGPASS: &str =
    "WRONGPASS invalid username-password pair or user is disabled.";

pub(in crate::client) const NOPERM_KEY: &str =
    "NOPERM this user has no permissions to access one of the keys used as arguments";

/// RESTORE from a client held to key prefixes (see `[keys] allow_restore`).
pub(in crate::client) const NOPERM_RESTORE: &str = "NOPERM RESTORE is refused while key prefixes apply: a crafted payload can crash a backend; set [keys] allow_restore = true once the backends run with sanitize-dump-payload yes";

/// An address that sent too many wrong passwords this minute.
pub(in crate::client) const AUTH_BLOCKED: &str = "ERR too many wrong passwords from this address: try again in a minute ([limits] auth_failures_per_address)";

/// Redis 7.0's reply to a channel an ACL forbids.
pub(in crate::client) const NOPERM_CHANNEL: &str =
    "NOPERM this user has no permissions to access one of the channels used as arguments";

/// PUBLISH to a keyspace or keyevent channel: forged notifications.
pub(in crate::client) const NOPERM_NOTIFICATION: &str = "NOPERM keyspace and keyevent notifications are the server's own: PUBLISH to their channels is refused";

/// Redis 7.0's reply to a command an ACL forbids.
pub(in crate::client) fn noperm_command(name: &str) -> Reply {
    Reply::error(format!(
        "NOPERM this user has no permissions to run the '{name}' command"
    ))
}

/// CONFIG SET notify-keyspace-events while the operator has not allowed it.
pub(in crate::client) const KEYSPACE_CONFIG_REFUSED: &str = "ERR CONFIG SET notify-keyspace-events is refused by session-proxy: set [keys] allow_keyspace_config = true to apply it to every backend";

/// Redis Cluster's error for keys that do not live together.
pub(in crate::client) const CROSSSLOT: &str =
    "CROSSSLOT Keys in request don't hash to the same slot";

/// Redis's reply to EXEC after a queuing error.
pub(in crate::client) const EXECABORT: &str =
    "EXECABORT Transaction discarded because of previous errors.";

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

pub(in crate::client) fn arity_error(name: &str) -> Reply {
    Reply::error(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

pub(in crate::client) fn unknown_subcommand(sub: &[u8], command: &str) -> Reply {
    let mut msg = b"ERR unknown subcommand '".to_vec();
    msg.extend_from_slice(c_str(sub, 128));
    msg.extend_from_slice(format!("'. Try {command} HELP.").as_bytes());
    Reply::error(msg)
}
