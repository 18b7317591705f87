//! One backend's tracking link: a connection of its own in RESP3 with
//! `CLIENT TRACKING ON BCAST`, so Redis tells it of every key changed on
//! that server, by anyone. It reconnects after a loss and moves with the
//! master Sentinel names, or with the backend's host name; whenever it is not confirmed, reads on that
//! backend are not cacheable, and when it is lost every tracking client
//! flushes (see [`super`]). A PING every second shows a silent network.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use redis_protocol::resp3::decode::complete::decode_bytes;
use redis_protocol::resp3::types::BytesFrame;
use tracing::debug;

use super::own_writes::Pings;
use super::Tracker;
use crate::backend::Backend;
use crate::dial::Backoff;
use crate::protocol::reply_extent;

/// How long a link waits before connecting again.
const RETRY: Duration = Duration::from_millis(200);
/// How often a link asks whether the server still hears it.
const PING_EVERY: Duration = Duration::from_secs(1);
/// Ticks of [`PING_EVERY`] with PINGs unanswered and nothing heard
/// before the link counts as lost.
const SILENT_TICKS: u32 = 3;

/// What a frame from the server means for the link.
#[derive(Debug, PartialEq, Eq)]
enum Heard {
    /// These keys changed.
    Keys(Vec<Bytes>),
    /// Everything may have changed (FLUSHALL, FLUSHDB).
    Flush,
    /// A reply to one of the link's commands.
    Reply {
        error: bool,
    },
    Other,
}

fn hear(frame: Bytes) -> Heard {
    let Ok(Some((frame, _))) = decode_bytes(&frame) else {
        return Heard::Other;
    };
    match frame {
        BytesFrame::Push { data, .. } => {
            let invalidate = matches!(data.first(), Some(BytesFrame::BlobString { data, .. }) if &data[..] == b"invalidate");
            match data.get(1) {
                Some(BytesFrame::Null) if invalidate => Heard::Flush,
                Some(BytesFrame::Array { data: keys, .. }) if invalidate => Heard::Keys(
                    keys.iter()
                        .filter_map(|k| match k {
                            BytesFrame::BlobString { data, .. } => Some(data.clone()),
                            BytesFrame::SimpleString { data, .. } => Some(data.clone()),
                            _ => None,
                        })
                        .collect(),
                ),
                _ => Heard::Other,
            }
        }
        BytesFrame::SimpleError { .. } | BytesFrame::BlobError { .. } => {
            Heard::Reply { error: true }
        }
        _ => Heard::Reply { error: false },
    }
}

/// What the tracker reads of a link.
#[derive(Debug, Default)]
pub struct LinkState {
    /// Set while CLIENT TRACKING is confirmed and the connection up.
    pub up: AtomicBool,
    pub pings: Arc<Pings>,
}

/// The link's task; stopped by the tracker when the backend is dropped.
pub async fn run(
    backend: Backend,
    state: Arc<LinkState>,
    tracker: Weak<Tracker>,
    max_frame: usize,
) {
    let up = &state.up;
    let mut master = backend.endpoint.clone();
    let mut backoff = Backoff::new(RETRY, Duration::from_secs(2));
    loop {
        master.borrow_and_update();
        let lost = match session(&backend, &state, &tracker, &mut master, max_frame).await {
            Ok(()) => return,
            Err(lost) => lost,
        };
        // PINGs of the lost connection will not be answered: none keeps a
        // NOLOOP note alive (the flush below tells everyone anyway).
        let sent = state.pings.sent.load(Ordering::Acquire);
        state.pings.answered.store(sent, Ordering::Release);
        debug!(backend = %backend.id, reason = %lost, "tracking link lost");
        if up.swap(false, Ordering::AcqRel) {
            backoff = Backoff::new(RETRY, Duration::from_secs(2));
            match tracker.upgrade() {
                Some(tracker) => tracker.flush_all(),
                None => return,
            }
        }
        tokio::time::sleep(backoff.pause()).await;
    }
}

/// Where one connection's conversation stands.
#[derive(Default)]
struct Talk {
    /// Replies owed before tracking is confirmed: HELLO's, then TRACKING's.
    confirming: u32,
    /// PINGs not answered yet.
    unanswered: u32,
    /// Ticks in a row with PINGs unanswered and nothing heard.
    silent_ticks: u32,
    /// Something was read since the last tick.
    heard: bool,
}

/// Why a session ended: the tracker is gone (`Ok`), or the reason.
type Ended = Result<(), String>;

/// One connection's life: `Ok` when the tracker is gone, else why it ended.
async fn session(
    backend: &Backend,
    state: &LinkState,
    tracker: &Weak<Tracker>,
    master: &mut tokio::sync::watch::Receiver<Option<crate::config::Endpoint>>,
    max_frame: usize,
) -> Ended {
    let (stream, peer) = backend.connect_apart().await.map_err(|e| e.to_string())?;
    let name_moved = backend.name_moved(peer);
    tokio::pin!(name_moved);
    let mut wbuf = BytesMut::new();
    wbuf.extend_from_slice(b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n");
    wbuf.extend_from_slice(b"*4\r\n$6\r\nCLIENT\r\n$8\r\nTRACKING\r\n$2\r\nON\r\n$5\r\nBCAST\r\n");
    let mut talk = Talk {
        confirming: 2,
        ..Talk::default()
    };
    let mut rbuf = BytesMut::new();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        if !wbuf.is_empty() {
            stream
                .write_all(&mut wbuf)
                .await
                .map_err(|e| e.to_string())?;
        }
        tokio::select! {
            changed = master.changed() => {
                changed.map_err(|_| "the backend is gone".to_string())?;
                return Err("the master moved".into());
            }
            () = &mut name_moved => return Err("the name leads elsewhere".into()),
            _ = ping.tick() => {
                talk.silent_ticks = if talk.unanswered > 0 && !talk.heard { talk.silent_ticks + 1 } else { 0 };
                talk.heard = false;
                if talk.silent_ticks >= SILENT_TICKS {
                    return Err("the server stopped answering".into());
                }
                talk.unanswered += 1;
                send_ping(&mut wbuf, &state.pings);
            }
            _ = state.pings.now.notified(), if talk.confirming == 0 => {
                talk.unanswered += 1;
                send_ping(&mut wbuf, &state.pings);
            }
            read = stream.read_some(&mut rbuf) => {
                match read {
                    Ok(0) => return Err("closed by the server".into()),
                    Err(e) => return Err(e.to_string()),
                    Ok(_) => talk.heard = true,
                }
                if let Err(ended) = take_frames(&mut rbuf, max_frame, &mut talk, state, tracker, backend) {
                    return ended;
                }
            }
        }
    }
}

/// Acts on the whole frames read: invalidations to the tracker, replies
/// to the link's own commands. `Err` ends the session, as [`Ended`] says.
fn take_frames(
    rbuf: &mut BytesMut,
    max_frame: usize,
    talk: &mut Talk,
    state: &LinkState,
    tracker: &Weak<Tracker>,
    backend: &Backend,
) -> Result<(), Ended> {
    loop {
        let len = match reply_extent(rbuf, max_frame) {
            Ok(Some(len)) => len,
            Ok(None) => return Ok(()),
            Err(e) => return Err(Err(format!("{e:?}"))),
        };
        let heard = hear(rbuf.split_to(len).freeze());
        let Some(tracker) = tracker.upgrade() else {
            return Err(Ok(()));
        };
        match heard {
            Heard::Keys(keys) => tracker.invalidated(&keys),
            Heard::Flush => tracker.flush_all(),
            Heard::Reply { error: true } if talk.confirming > 0 => {
                return Err(Err("the server refused CLIENT TRACKING".into()));
            }
            Heard::Reply { .. } if talk.confirming > 0 => {
                talk.confirming -= 1;
                if talk.confirming == 0 {
                    state.up.store(true, Ordering::Release);
                    tracker.link_up(backend);
                    debug!(backend = %backend.id, "tracking link up");
                }
            }
            Heard::Reply { .. } => {
                talk.unanswered = talk.unanswered.saturating_sub(1);
                state.pings.answered.fetch_add(1, Ordering::AcqRel);
            }
            Heard::Other => {}
        }
    }
}

fn send_ping(wbuf: &mut BytesMut, pings: &Pings) {
    wbuf.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
    pings.sent.fetch_add(1, Ordering::AcqRel);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hears_invalidations_and_replies() {
        let keys = Bytes::from_static(b">2\r\n$10\r\ninvalidate\r\n*2\r\n$1\r\na\r\n$2\r\nbc\r\n");
        assert_eq!(
            hear(keys),
            Heard::Keys(vec![Bytes::from_static(b"a"), Bytes::from_static(b"bc")])
        );
        assert_eq!(
            hear(Bytes::from_static(b">2\r\n$10\r\ninvalidate\r\n_\r\n")),
            Heard::Flush
        );
        assert_eq!(
            hear(Bytes::from_static(b"+OK\r\n")),
            Heard::Reply { error: false }
        );
        assert_eq!(
            hear(Bytes::from_static(b"-ERR no\r\n")),
            Heard::Reply { error: true }
        );
        assert_eq!(
            hear(Bytes::from_static(
                b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n"
            )),
            Heard::Other
        );
    }
}
