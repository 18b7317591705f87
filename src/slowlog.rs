//! SLOWLOG: requests slower than a threshold, kept like Redis keeps them.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::protocol::Reply;

/// Redis keeps at most 32 arguments and 128 bytes of each.
const MAX_ARGS: usize = 32;
const MAX_ARG_BYTES: usize = 128;

struct Entry {
    id: u64,
    at_unix: i64,
    micros: i64,
    args: Vec<Bytes>,
    peer: String,
    name: Bytes,
}

/// The log, bounded by `[slowlog] max_len`.
pub struct SlowLog {
    entries: Mutex<(u64, VecDeque<Entry>)>,
}

impl Default for SlowLog {
    fn default() -> Self {
        SlowLog {
            entries: Mutex::new((0, VecDeque::new())),
        }
    }
}

impl SlowLog {
    /// Records a request that took `took`; the caller has checked the threshold.
    pub fn record(
        &self,
        max_len: usize,
        took: Duration,
        args: &[Bytes],
        peer: &str,
        name: Option<&Bytes>,
    ) {
        if max_len == 0 {
            return;
        }
        let mut kept: Vec<Bytes> = args.iter().take(MAX_ARGS).map(trim).collect();
        if args.len() > MAX_ARGS {
            kept.pop();
            kept.push(Bytes::from(format!(
                "... ({} more arguments)",
                args.len() - MAX_ARGS + 1
            )));
        }
        let at_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let Ok(mut guard) = self.entries.lock() else {
            return;
        };
        let (next_id, entries) = &mut *guard;
        entries.push_front(Entry {
            id: *next_id,
            at_unix,
            micros: took.as_micros() as i64,
            args: kept,
            peer: peer.to_string(),
            name: name.map(|n| Bytes::copy_from_slice(n)).unwrap_or_default(),
        });
        *next_id += 1;
        entries.truncate(max_len);
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map_or(0, |g| g.1.len())
    }

    /// Bytes the entries' arguments and names hold: at most `max_len` x
    /// (32 x ~150 + a name).
    pub fn held_bytes(&self) -> usize {
        self.entries.lock().map_or(0, |g| {
            g.1.iter()
                .map(|e| e.name.len() + e.peer.len() + e.args.iter().map(Bytes::len).sum::<usize>())
                .sum()
        })
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn reset(&self) {
        if let Ok(mut guard) = self.entries.lock() {
            guard.1.clear();
        }
    }

    /// `SLOWLOG GET [count]`: newest first, in Redis's entry shape.
    pub fn get(&self, count: usize) -> Reply {
        let Ok(guard) = self.entries.lock() else {
            return Reply::Array(Vec::new());
        };
        Reply::Array(
            guard
                .1
                .iter()
                .take(count)
                .map(|e| {
                    Reply::Array(vec![
                        Reply::Int(e.id as i64),
                        Reply::Int(e.at_unix),
                        Reply::Int(e.micros),
                        Reply::Array(e.args.iter().cloned().map(Reply::Bulk).collect()),
                        Reply::Bulk(Bytes::from(e.peer.clone())),
                        Reply::Bulk(e.name.clone()),
                    ])
                })
                .collect(),
        )
    }
}

/// An argument as the log keeps it: an owned copy of at most
/// `MAX_ARG_BYTES`, never a view into the request (a view would keep the
/// whole request, a 20 MB SET say, alive as long as the entry).
fn trim(arg: &Bytes) -> Bytes {
    if arg.len() <= MAX_ARG_BYTES {
        return Bytes::copy_from_slice(arg);
    }
    let mut out = arg[..MAX_ARG_BYTES].to_vec();
    out.extend_from_slice(format!("... ({} more bytes)", arg.len() - MAX_ARG_BYTES).as_bytes());
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_newest_first_and_trimmed() {
        let log = SlowLog::default();
        for i in 0..5 {
            let args = [Bytes::from("GET"), Bytes::from(format!("k{i}"))];
            log.record(3, Duration::from_millis(20), &args, "127.0.0.1:1", None);
        }
        assert_eq!(log.len(), 3);
        let Reply::Array(entries) = log.get(10) else {
            panic!()
        };
        let Reply::Array(first) = &entries[0] else {
            panic!()
        };
        assert_eq!(first[0], Reply::Int(4));
        assert_eq!(first[2], Reply::Int(20_000));
        let long = Bytes::from(vec![b'x'; 200]);
        assert!(trim(&long).ends_with(b"... (72 more bytes)"));
        log.reset();
        assert!(log.is_empty());
    }

    #[test]
    fn entries_own_their_bytes() {
        // A 1 MB request whose arguments are views into it, as the client
        // handler's are: the log must not keep the request alive.
        let mut raw = b"SET k ".to_vec();
        raw.extend(std::iter::repeat_n(b'v', 1 << 20));
        let request = Bytes::from(raw);
        let args = [request.slice(0..3), request.slice(4..5), request.slice(6..)];
        let name = request.slice(4..5);
        let log = SlowLog::default();
        log.record(10, Duration::from_millis(20), &args, "peer", Some(&name));
        drop((args, name));
        assert!(request.is_unique(), "a log entry still holds the request");
        // 3 + 1 + (128 + the note) + name + peer.
        assert!(log.held_bytes() < 200, "{}", log.held_bytes());
    }
}
