//! Requests a server refused without running them, sent again elsewhere.
//!
//! A managed service's failover leaves the old master up as a replica that
//! answers writes with `-READONLY`; a restarted server answers everything
//! with `-LOADING` until its data is in. Neither ran the command, so a
//! connection to a fixed endpoint keeps what it needs to send it again
//! ([`Retry`]) and does so once its endpoint leads to a master that serves.
//! For a batch, only the commands refused go again, and their replies take
//! their places among the others ([`merge`]); a transaction, refused in
//! part, ran none of its commands, and goes again whole.

use super::job::{unless_abandoned, BatchResult, Origin};
use crate::protocol::RedisError;
use crate::protocol::{reply_extent, Reply};
use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;

/// What a command (or batch) needs to be sent again after a refusal.
pub(super) struct Retry {
    pub(super) origin: Origin,
    pub(super) payload: Bytes,
    pub(super) db: u32,
}

/// A reply that says the server did not run the command and another node
/// (or the same, later) will: `-READONLY` (it is a replica now) or
/// `-LOADING` (it is loading its data).
pub(super) fn refused(frame: &[u8]) -> bool {
    frame.strip_prefix(b"-").is_some_and(refusal)
}

/// The same, of an error's line without its `-`.
pub fn refusal(line: &[u8]) -> bool {
    line.starts_with(b"READONLY") || line.starts_with(b"LOADING")
}

fn refused_reply(reply: &Reply) -> bool {
    match reply {
        Reply::Raw(frame) | Reply::Raw3(frame) => refused(frame),
        _ => false,
    }
}

/// A batch answered with some of its commands refused: the retry holding
/// only those (all of a `transaction`'s: refused in part, none of it ran),
/// and where their replies go. `None` when nothing was refused (or the
/// payload does not hold `replies.len()` commands).
pub(super) fn refused_in_batch(
    retry: &Retry,
    replies: &[Reply],
    transaction: bool,
) -> Option<(Bytes, Vec<usize>)> {
    let places: Vec<usize> = (0..replies.len())
        .filter(|&i| refused_reply(&replies[i]))
        .collect();
    if places.is_empty() {
        return None;
    }
    if transaction {
        return Some((retry.payload.clone(), (0..replies.len()).collect()));
    }
    let commands = split_commands(&retry.payload, replies.len())?;
    let mut payload = BytesMut::new();
    for &i in &places {
        payload.extend_from_slice(&commands[i]);
    }
    Some((payload.freeze(), places))
}

/// The `count` commands a batch's payload holds, back to back.
fn split_commands(payload: &Bytes, count: usize) -> Option<Vec<Bytes>> {
    let mut commands = Vec::with_capacity(count);
    let mut at = 0;
    while at < payload.len() {
        let len = reply_extent(&payload[at..], payload.len()).ok()??;
        commands.push(payload.slice(at..at + len));
        at += len;
    }
    (commands.len() == count).then_some(commands)
}

/// Answers a batch once the commands sent again (at `places`) are
/// answered: their replies (or the error that stopped them) in their
/// places, the others as they came. Nothing when the client is gone.
pub(super) async fn merge(
    mut tx: oneshot::Sender<BatchResult>,
    mut replies: Vec<Reply>,
    places: Vec<usize>,
    again: oneshot::Receiver<BatchResult>,
) {
    let Some(answer) = unless_abandoned(again, &mut tx).await else {
        return;
    };
    let fill: Vec<Reply> = match answer {
        Ok(Ok(again)) if again.len() == places.len() => again,
        Ok(Err(e)) => vec![e.to_reply(); places.len()],
        _ => vec![RedisError::ReplyDropped.reply(); places.len()],
    };
    for (place, reply) in places.into_iter().zip(fill) {
        if let Some(slot) = replies.get_mut(place) {
            *slot = reply;
        }
    }
    let _ = tx.send(Ok(replies));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Proto;

    fn retry(payload: &'static [u8]) -> Retry {
        Retry {
            origin: Origin {
                client: 1,
                reply_bytes: 0,
                large_replies: false,
                proto: Proto::Resp2,
            },
            payload: Bytes::from_static(payload),
            db: 0,
        }
    }

    #[test]
    fn only_the_refused_commands_of_a_batch_go_again() {
        let r = retry(b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\n*3\r\n$3\r\nSET\r\n$1\r\nb\r\n$1\r\n2\r\n");
        let ok = |s: &'static [u8]| Reply::Raw(Bytes::from_static(s));
        let replies = [
            ok(b"+OK\r\n"),
            ok(b"$1\r\n1\r\n"),
            ok(b"-READONLY You can't write against a read only replica.\r\n"),
        ];
        let (payload, places) = refused_in_batch(&r, &replies, false).unwrap();
        assert_eq!(places, vec![2]);
        assert_eq!(&payload[..], b"*3\r\n$3\r\nSET\r\n$1\r\nb\r\n$1\r\n2\r\n");
        let none = [ok(b"+OK\r\n"), ok(b"$1\r\n1\r\n"), ok(b"-ERR other\r\n")];
        assert!(refused_in_batch(&r, &none, false).is_none());
        // A payload that does not hold as many commands is sent as it came.
        let loading = [ok(b"-LOADING Redis is loading\r\n")];
        assert!(refused_in_batch(&r, &loading, false).is_none());
    }

    /// A transaction refused at queue time (EXEC then aborts it) ran none
    /// of its commands: all of it goes again, MULTI and EXEC with it, not
    /// the refused command alone outside a transaction.
    #[test]
    fn a_transaction_refused_in_part_goes_again_whole() {
        let r = retry(
            b"*1\r\n$5\r\nMULTI\r\n*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n*1\r\n$4\r\nEXEC\r\n",
        );
        let ok = |s: &'static [u8]| Reply::Raw(Bytes::from_static(s));
        let replies = [
            ok(b"+OK\r\n"),
            ok(b"-READONLY You can't write against a read only replica.\r\n"),
            ok(b"-EXECABORT Transaction discarded because of previous errors.\r\n"),
        ];
        let (payload, places) = refused_in_batch(&r, &replies, true).unwrap();
        assert_eq!(places, vec![0, 1, 2]);
        assert_eq!(payload, r.payload);
        let (partial, _) = refused_in_batch(&r, &replies, false).unwrap();
        assert_ne!(partial, r.payload, "a pipeline sends only the refused");
        let ran = [ok(b"+OK\r\n"), ok(b"+QUEUED\r\n"), ok(b"*1\r\n+OK\r\n")];
        assert!(refused_in_batch(&r, &ran, true).is_none());
    }

    #[tokio::test]
    async fn the_replies_sent_again_take_their_places() {
        let (tx, rx) = oneshot::channel();
        let (again_tx, again_rx) = oneshot::channel();
        let first = vec![Reply::Int(1), Reply::error("LOADING"), Reply::Int(3)];
        let task = tokio::spawn(merge(tx, first, vec![1], again_rx));
        again_tx.send(Ok(vec![Reply::Int(2)])).unwrap();
        task.await.unwrap();
        let merged = rx.await.unwrap().unwrap();
        assert_eq!(merged, vec![Reply::Int(1), Reply::Int(2), Reply::Int(3)]);
    }
}
