//! NOLOOP: a client is not told of its own changes. The proxy hears of
//! every change from a backend's link, not from whom, so a NOLOOP client's
//! write of a key is noted here when it is sent, and the first news of that
//! key from the link is not passed to that client. A note that no news
//! uses up (the write changed nothing: a DEL of a missing key) lapses once
//! the link has answered a PING sent after the write's reply came: Redis
//! puts the news of a change on the link before anything it answers there
//! later, so a note outliving that would only hide someone else's change.
//! A note lapsing early only tells the client of its own write, which is
//! safe; it is armed (given its PING) when the client's next write reply
//! comes, which may be early for a later write, never late.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Notify;

/// Notes kept at most: past them the oldest go (telling too much is safe).
const MAX_NOTES: usize = 10_000;

/// A link's PINGs, for the notes to know when they lapse.
#[derive(Debug, Default)]
pub struct Pings {
    /// PINGs written to the link.
    pub sent: AtomicU64,
    /// PINGs answered.
    pub answered: AtomicU64,
    /// Asks the link for a PING now.
    pub now: Notify,
}

#[derive(Debug)]
struct Note {
    client: u64,
    pings: Arc<Pings>,
    /// Lapses once this many PINGs are answered; [`UNARMED`] until the
    /// write's reply comes.
    until: u64,
}

const UNARMED: u64 = u64::MAX;

impl Note {
    fn lapsed(&self) -> bool {
        self.pings.answered.load(Ordering::Acquire) >= self.until
    }
}

/// The NOLOOP clients' own writes not heard back yet, by key.
#[derive(Debug, Default)]
pub struct OwnWrites {
    keys: HashMap<Bytes, Vec<Note>>,
    count: usize,
    /// Each client's notes whose write has not replied yet.
    unarmed: HashMap<u64, Vec<Bytes>>,
}

impl OwnWrites {
    /// `client` writes `key`, whose backend's link counts `pings`.
    pub fn note(&mut self, key: &Bytes, client: u64, pings: &Arc<Pings>) {
        if self.count >= MAX_NOTES {
            self.sweep();
        }
        if self.count >= MAX_NOTES {
            self.keys.clear();
            self.unarmed.clear();
            self.count = 0;
        }
        self.keys.entry(key.clone()).or_default().push(Note {
            client,
            pings: pings.clone(),
            until: UNARMED,
        });
        self.unarmed.entry(client).or_default().push(key.clone());
        self.count += 1;
    }

    /// A write of `client` replied: its notes lapse after the next PING of
    /// their link, which is asked for now.
    pub fn arm(&mut self, client: u64) {
        for key in self.unarmed.remove(&client).unwrap_or_default() {
            for note in self.keys.get_mut(&key).into_iter().flatten() {
                if note.client == client && note.until == UNARMED {
                    note.until = note.pings.sent.load(Ordering::Acquire) + 1;
                    note.pings.now.notify_one();
                }
            }
        }
    }

    /// The client is gone: its notes with it.
    pub fn forget(&mut self, client: u64) {
        if self.unarmed.remove(&client).is_none() && self.count == 0 {
            return;
        }
        self.keys.retain(|_, notes| {
            notes.retain(|n| n.client != client);
            !notes.is_empty()
        });
        self.count = self.keys.values().map(Vec::len).sum();
    }

    /// News of `key` came: whether it is `client`'s own write (the note is
    /// used up).
    pub fn take(&mut self, key: &[u8], client: u64) -> bool {
        let Some(notes) = self.keys.get_mut(key) else {
            return false;
        };
        let before = notes.len();
        notes.retain(|n| !n.lapsed());
        let found = notes.iter().position(|n| n.client == client);
        if let Some(i) = found {
            notes.remove(i);
        }
        let after = notes.len();
        self.count -= before - after;
        if notes.is_empty() {
            self.keys.remove(key);
        }
        found.is_some()
    }

    /// Drops the lapsed notes.
    fn sweep(&mut self) {
        self.keys.retain(|_, notes| {
            notes.retain(|n| !n.lapsed());
            !notes.is_empty()
        });
        self.count = self.keys.values().map(Vec::len).sum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_is_used_once_and_lapses_after_a_ping() {
        let pings = Arc::new(Pings::default());
        let mut own = OwnWrites::default();
        let key = Bytes::from_static(b"k");
        own.note(&key, 1, &pings);
        assert!(!own.take(b"k", 2), "another client's");
        assert!(own.take(b"k", 1));
        assert!(!own.take(b"k", 1), "used up");
        // Unarmed, a note outlives any PING; armed, a PING sent before the
        // reply does not end it, the next one does.
        own.note(&key, 1, &pings);
        pings.sent.store(1, Ordering::Release);
        pings.answered.store(1, Ordering::Release);
        own.note(&key, 2, &pings);
        own.arm(2);
        assert!(own.take(b"k", 1), "unarmed: still there");
        own.note(&key, 2, &pings);
        pings.sent.store(2, Ordering::Release);
        pings.answered.store(2, Ordering::Release);
        assert!(own.take(b"k", 2), "the unarmed one is still there");
        own.arm(2);
        pings.sent.store(3, Ordering::Release);
        pings.answered.store(3, Ordering::Release);
        assert!(
            !own.take(b"k", 2),
            "lapsed: a ping after the reply was answered"
        );
        own.note(&key, 3, &pings);
        own.forget(3);
        assert!(!own.take(b"k", 3));
    }
}
