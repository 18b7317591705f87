//! CLIENT UNBLOCK of a leased connection's command, asked so that a write
//! pause cannot bring the server down.
//!
//! A write pause (`CLIENT PAUSE ... WRITE`, a FAILOVER, a cluster's manual
//! failover) holds a blocking command that arrives during it, to run it
//! again when the pause ends (`BLOCKED_POSTPONE`). Redis 7.0's CLIENT
//! UNBLOCK does not know such a command apart: its TIMEOUT form panics the
//! server (`Unknown btype in replyToBlockedClientTimedOut()`), its ERROR
//! form answers the command and runs it again later all the same, a second
//! reply on that connection (Valkey answers 0 since valkey-io/valkey#2117).
//!
//! So the UNBLOCK runs in a transaction beside a `PUBLISH`, which a write
//! pause holds (it may replicate): `MULTI`, then `PUBLISH`, and only once
//! both are queued, `CLIENT UNBLOCK` and `EXEC`. A pause holds the
//! `PUBLISH` as it is queued (Redis 7.0) or the `EXEC` (later versions), so
//! the UNBLOCK runs with no pause on, after the commands the pause held
//! before it have run again (and blocked on their keys, or ended). A pause
//! that outlasts the patience given ends the wait: the connection is
//! closed, and the UNBLOCK, queued or never sent, never runs (0). A server
//! that refuses the `PUBLISH` (the proxy's user may not publish on the
//! channel) is not asked at all (0, and a warning).

use bytes::Bytes;
use tokio::time::{timeout_at, Instant};
use tracing::warn;

use crate::config::Target;
use crate::dial::{call, open_and_call, DialError};
use crate::protocol::Reply;

use super::ServerAt;

/// The channel of the `PUBLISH` a write pause holds (nobody listens).
const CHANNEL: &[u8] = b"__session-proxy__:unblock";

/// How a CLIENT UNBLOCK is asked: of which server, with which credentials,
/// and for how long at most, connection included.
pub(super) struct Asking<'a> {
    pub at: &'a ServerAt,
    pub target: &'a Target,
    pub hosts_file: Option<&'a std::path::Path>,
    pub patience: std::time::Duration,
}

/// CLIENT UNBLOCK `server_id` TIMEOUT (ERROR when `error`), run when no
/// write pause is on: the server's answer (`:1` when the connection was
/// blocked and is no longer), or `:0` when it could not be run in time (a
/// pause held it past the patience) or at all (the `PUBLISH` was refused).
/// A server that does not even take the MULTI in time (frozen, or paused
/// for every command, when it would hold a CLIENT UNBLOCK itself) is an
/// error.
pub(super) async fn ask(
    asking: Asking<'_>,
    server_id: u64,
    error: bool,
) -> Result<Reply, DialError> {
    let deadline = Instant::now() + asking.patience;
    let at = (&asking.at.endpoint, asking.at.peer);
    let begun = open_and_call(at, asking.target, asking.hosts_file, vec![multi()]);
    let silent = || {
        let waited = format!("no answer within {} ms", asking.patience.as_millis());
        DialError::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, waited))
    };
    let (stream, mut rbuf, multi) = timeout_at(deadline, begun).await.map_err(|_| silent())??;
    let held = async {
        let published = call(&stream, &mut rbuf, &[publish()]).await?;
        let queued: Vec<Reply> = multi.into_iter().chain(published).collect();
        if let Err(refusal) = both_queued(&queued) {
            warn!(
                refusal = %String::from_utf8_lossy(&refusal),
                "CLIENT UNBLOCK not asked: the server refused the transaction with a PUBLISH that keeps it from a paused command (the proxy's backend user needs MULTI, EXEC and PUBLISH on any channel)"
            );
            return Ok(Reply::Int(0));
        }
        let done = call(&stream, &mut rbuf, &unblock(server_id, error)).await?;
        Ok(unblocked(done))
    };
    match timeout_at(deadline, held).await {
        Ok(answer) => answer,
        // Held by a pause: the transaction goes with the connection.
        Err(_) => Ok(Reply::Int(0)),
    }
}

/// The transaction's start.
fn multi() -> Vec<Bytes> {
    vec![Bytes::from_static(b"MULTI")]
}

/// The command a write pause holds.
fn publish() -> Vec<Bytes> {
    vec![
        Bytes::from_static(b"PUBLISH"),
        Bytes::from_static(CHANNEL),
        Bytes::from_static(b"0"),
    ]
}

/// The UNBLOCK, queued, and the transaction run.
fn unblock(server_id: u64, error: bool) -> [Vec<Bytes>; 2] {
    let reason: &'static [u8] = if error { b"ERROR" } else { b"TIMEOUT" };
    [
        vec![
            Bytes::from_static(b"CLIENT"),
            Bytes::from_static(b"UNBLOCK"),
            Bytes::from(server_id.to_string()),
            Bytes::from_static(reason),
        ],
        vec![Bytes::from_static(b"EXEC")],
    ]
}

/// How long a CLIENT UNBLOCK may take, connection included: the connect
/// timeout, and half the request timeout at most, so that a pause ends
/// the wait well before the client's request times out.
pub(super) fn patience(settings: &super::PoolSettings) -> std::time::Duration {
    settings.connect_timeout.min(settings.request_timeout / 2)
}

/// Whether MULTI and the `PUBLISH` were both taken (`+OK`, `+QUEUED`);
/// else the server's refusal.
fn both_queued(replies: &[Reply]) -> Result<(), Bytes> {
    match replies {
        [Reply::Status(ok), Reply::Status(queued)]
            if &ok[..] == b"OK" && &queued[..] == b"QUEUED" =>
        {
            Ok(())
        }
        _ => Err(replies
            .iter()
            .find_map(|reply| reply.error_line().map(Bytes::copy_from_slice))
            .unwrap_or_else(|| Bytes::from_static(b"an unexpected reply"))),
    }
}

/// The UNBLOCK's answer, from the replies to it and to EXEC: the second
/// of EXEC's replies; the refusal when the UNBLOCK was not queued or the
/// transaction not run.
fn unblocked(replies: Vec<Reply>) -> Reply {
    let mut replies = replies.into_iter();
    let (queued, exec) = (replies.next(), replies.next());
    match (queued, exec) {
        (Some(refused @ Reply::Error(_)), _) => refused,
        (_, Some(Reply::Array(mut results))) if results.len() == 2 => {
            results.pop().unwrap_or(Reply::Int(0))
        }
        (_, Some(refused @ Reply::Error(_))) => refused,
        _ => Reply::Int(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(s: &'static str) -> Reply {
        Reply::Status(Bytes::from_static(s.as_bytes()))
    }

    /// The UNBLOCK is sent only after MULTI and the PUBLISH were queued.
    #[test]
    fn the_unblock_waits_for_the_publish_to_be_queued() {
        assert_eq!(both_queued(&[status("OK"), status("QUEUED")]), Ok(()));
        let refused = Reply::error(
            "NOPERM this user has no permissions to access one of the channels used as arguments",
        );
        assert_eq!(
            both_queued(&[status("OK"), refused]),
            Err(Bytes::from_static(
                b"NOPERM this user has no permissions to access one of the channels used as arguments"
            ))
        );
        assert!(both_queued(&[status("OK")]).is_err());
        assert!(both_queued(&[status("OK"), Reply::Int(0)]).is_err());
    }

    /// The answer is the UNBLOCK's own result inside EXEC's reply.
    #[test]
    fn the_answer_is_the_unblocks_result_in_the_transaction() {
        let exec = |second| Reply::Array(vec![Reply::Int(0), second]);
        assert_eq!(
            unblocked(vec![status("QUEUED"), exec(Reply::Int(1))]),
            Reply::Int(1)
        );
        assert_eq!(
            unblocked(vec![status("QUEUED"), exec(Reply::Int(0))]),
            Reply::Int(0)
        );
        let noperm =
            Reply::error("NOPERM this user has no permissions to run the 'client|unblock' command");
        let aborted = Reply::error("EXECABORT Transaction discarded because of previous errors.");
        assert_eq!(unblocked(vec![noperm.clone(), aborted.clone()]), noperm);
        assert_eq!(unblocked(vec![status("QUEUED"), aborted.clone()]), aborted);
        assert_eq!(
            unblocked(vec![status("QUEUED"), Reply::Null]),
            Reply::Int(0)
        );
        assert_eq!(unblocked(vec![]), Reply::Int(0));
    }
}
