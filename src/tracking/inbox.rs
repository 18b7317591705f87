//! What waits to be told to one client: invalidations of its own keys, or
//! of another client's that redirects to it, and a broken redirect. The
//! tracker posts from any thread; the client's task takes them and writes
//! them behind the replies it has in flight, so a reply read before a
//! change is never delivered after the news of the change. Bounded: past
//! [`MAX_KEYS`] keys waiting, everything becomes one flush, which tells
//! the client no less.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::Notify;

use crate::protocol::Proto;

/// Keys that may wait for one client before they become a flush.
pub const MAX_KEYS: usize = 10_000;

/// One thing to tell a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// These keys may have changed; `redirected`: on behalf of another
    /// client (CLIENT TRACKING REDIRECT).
    Keys { keys: Vec<Bytes>, redirected: bool },
    /// Everything this client cached may have changed.
    Flush { redirected: bool },
    /// The client this one redirects to is gone.
    RedirectBroken(u64),
}

#[derive(Debug, Default)]
struct Waiting {
    notes: VecDeque<Note>,
    keys: usize,
}

/// One client's waiting notes, and the wake-up of its task.
#[derive(Debug, Default)]
pub struct Inbox {
    waiting: Mutex<Waiting>,
    pub notify: Notify,
}

impl Inbox {
    /// Adds `note` and wakes the client.
    pub fn post(&self, note: Note) {
        {
            let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            let keys = match &note {
                Note::Keys { keys, .. } => keys.len(),
                _ => 0,
            };
            if w.keys + keys > MAX_KEYS {
                let redirected = matches!(
                    note,
                    Note::Keys {
                        redirected: true,
                        ..
                    }
                );
                w.notes.clear();
                w.keys = 0;
                w.notes.push_back(Note::Flush { redirected });
            } else {
                w.keys += keys;
                w.notes.push_back(note);
            }
        }
        self.notify.notify_one();
    }

    /// Everything waiting, oldest first.
    pub fn take(&self) -> VecDeque<Note> {
        let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        w.keys = 0;
        std::mem::take(&mut w.notes)
    }
}

/// The bytes Redis sends a client for `note` (`tracking.c`'s
/// `sendTrackingMessage`): a RESP3 push, or for a RESP2 client that is
/// redirected to and subscribed, a message on `__redis__:invalidate`;
/// nothing for any other RESP2 client.
pub fn frame(note: &Note, proto: Proto, subscribed: bool) -> Option<Bytes> {
    let (redirected, keys) = match note {
        Note::Keys { keys, redirected } => (*redirected, Some(keys)),
        Note::Flush { redirected } => (*redirected, None),
        Note::RedirectBroken(id) => {
            if proto != Proto::Resp3 {
                return None;
            }
            let mut out = BytesMut::new();
            out.put_slice(b">2\r\n$21\r\ntracking-redir-broken\r\n");
            out.put_slice(format!(":{id}\r\n").as_bytes());
            return Some(out.freeze());
        }
    };
    let mut out = BytesMut::new();
    if proto == Proto::Resp3 {
        out.put_slice(b">2\r\n$10\r\ninvalidate\r\n");
    } else if redirected && subscribed {
        out.put_slice(b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n");
    } else {
        return None;
    }
    match keys {
        Some(keys) => {
            out.put_slice(format!("*{}\r\n", keys.len()).as_bytes());
            for key in keys {
                out.put_slice(format!("${}\r\n", key.len()).as_bytes());
                out.put_slice(key);
                out.put_slice(b"\r\n");
            }
        }
        None if proto == Proto::Resp3 => out.put_slice(b"_\r\n"),
        None => out.put_slice(b"$-1\r\n"),
    }
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> Note {
        Note::Keys {
            keys: k
                .iter()
                .map(|s| Bytes::copy_from_slice(s.as_bytes()))
                .collect(),
            redirected: false,
        }
    }

    #[test]
    fn frames_as_redis_sends_them() {
        assert_eq!(
            frame(&keys(&["a"]), Proto::Resp3, false).unwrap(),
            &b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\na\r\n"[..]
        );
        assert_eq!(
            frame(&Note::Flush { redirected: false }, Proto::Resp3, false).unwrap(),
            &b">2\r\n$10\r\ninvalidate\r\n_\r\n"[..]
        );
        assert_eq!(frame(&keys(&["a"]), Proto::Resp2, true), None);
        let redirected = Note::Keys {
            keys: vec![Bytes::from_static(b"ab")],
            redirected: true,
        };
        assert_eq!(
            frame(&redirected, Proto::Resp2, true).unwrap(),
            &b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n*1\r\n$2\r\nab\r\n"[..]
        );
        assert_eq!(frame(&redirected, Proto::Resp2, false), None);
        assert_eq!(
            frame(&Note::Flush { redirected: true }, Proto::Resp2, true).unwrap(),
            &b"*3\r\n$7\r\nmessage\r\n$20\r\n__redis__:invalidate\r\n$-1\r\n"[..]
        );
        assert_eq!(
            frame(&Note::RedirectBroken(7), Proto::Resp3, false).unwrap(),
            &b">2\r\n$21\r\ntracking-redir-broken\r\n:7\r\n"[..]
        );
    }

    #[test]
    fn too_many_keys_become_a_flush() {
        let inbox = Inbox::default();
        for i in 0..MAX_KEYS + 1 {
            inbox.post(keys(&[&i.to_string()]));
        }
        let notes = inbox.take();
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0], Note::Flush { redirected: false });
        assert!(inbox.take().is_empty());
    }
}
