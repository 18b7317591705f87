//! SLOWLOG: requests slower than a threshold, kept like Redis keeps them:
//! secrets redacted as Redis redacts them (AUTH's and HELLO's credentials,
//! CONFIG SET of a password), and each entry marked with the user that
//! sent it, so a named user sees and resets only its own entries.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::protocol::Reply;

/// Redis keeps at most 32 arguments and 128 bytes of each.
const MAX_ARGS: usize = 32;
const MAX_ARG_BYTES: usize = 128;

/// What Redis writes in place of a secret argument.
const REDACTED: &[u8] = b"(redacted)";

/// Whose entries a SLOWLOG call sees (and resets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewer<'a> {
    /// The default user, or a named one with `admin = true`: every entry.
    All,
    /// A named user: its own entries only.
    User(&'a [u8]),
}

impl Viewer<'_> {
    fn sees(&self, entry: &Entry) -> bool {
        match self {
            Viewer::All => true,
            Viewer::User(name) => entry.user.as_deref() == Some(*name),
        }
    }
}

struct Entry {
    id: u64,
    at_unix: i64,
    micros: i64,
    args: Vec<Bytes>,
    peer: String,
    name: Bytes,
    /// The named user that sent the request; `None` for the default user.
    user: Option<Bytes>,
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
    /// Records a request that `user` (`None`: the default user) sent and
    /// that took `took`; the caller has checked the threshold.
    pub fn record(
        &self,
        max_len: usize,
        took: Duration,
        args: &[Bytes],
        peer: &str,
        name: Option<&Bytes>,
        user: Option<&Bytes>,
    ) {
        if max_len == 0 {
            return;
        }
        let secret = secret_positions(args);
        let mut kept: Vec<Bytes> = args
            .iter()
            .take(MAX_ARGS)
            .enumerate()
            .map(|(i, arg)| {
                if secret.contains(&i) {
                    Bytes::from_static(REDACTED)
                } else {
                    trim(arg)
                }
            })
            .collect();
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
            user: user.map(|u| Bytes::copy_from_slice(u)),
        });
        *next_id += 1;
        entries.truncate(max_len);
    }

    /// Every entry, whoever sent it.
    pub fn len(&self) -> usize {
        self.entries.lock().map_or(0, |g| g.1.len())
    }

    /// The entries `viewer` sees (`SLOWLOG LEN`).
    pub fn len_for(&self, viewer: Viewer<'_>) -> usize {
        self.entries
            .lock()
            .map_or(0, |g| g.1.iter().filter(|e| viewer.sees(e)).count())
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

    /// `SLOWLOG RESET`: the entries `viewer` sees go.
    pub fn reset(&self, viewer: Viewer<'_>) {
        if let Ok(mut guard) = self.entries.lock() {
            guard.1.retain(|e| !viewer.sees(e));
        }
    }

    /// `SLOWLOG GET [count]`: the newest entries `viewer` sees, in Redis's
    /// entry shape.
    pub fn get(&self, count: usize, viewer: Viewer<'_>) -> Reply {
        let Ok(guard) = self.entries.lock() else {
            return Reply::Array(Vec::new());
        };
        Reply::Array(
            guard
                .1
                .iter()
                .filter(|e| viewer.sees(e))
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

/// The arguments Redis would redact in the log: AUTH's user name and
/// password, HELLO's after AUTH, and the value of a password set by CONFIG
/// SET.
fn secret_positions(args: &[Bytes]) -> Vec<usize> {
    let is = |i: usize, word: &str| {
        args.get(i)
            .is_some_and(|a| a.eq_ignore_ascii_case(word.as_bytes()))
    };
    if is(0, "auth") {
        return (1..args.len()).collect();
    }
    if is(0, "hello") {
        return (2..args.len())
            .filter(|&i| is(i, "auth"))
            .flat_map(|i| [i + 1, i + 2])
            .collect();
    }
    if is(0, "config") && is(1, "set") {
        const SENSITIVE: &[&str] = &[
            "requirepass",
            "masterauth",
            "masteruser",
            "tls-key-file-pass",
            "tls-client-key-file-pass",
        ];
        return (2..args.len())
            .step_by(2)
            .filter(|&i| SENSITIVE.iter().any(|name| is(i, name)))
            .map(|i| i + 1)
            .collect();
    }
    Vec::new()
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
            log.record(
                3,
                Duration::from_millis(20),
                &args,
                "127.0.0.1:1",
                None,
                None,
            );
        }
        assert_eq!(log.len(), 3);
        let Reply::Array(entries) = log.get(10, Viewer::All) else {
            panic!()
        };
        let Reply::Array(first) = &entries[0] else {
            panic!()
        };
        assert_eq!(first[0], Reply::Int(4));
        assert_eq!(first[2], Reply::Int(20_000));
        let long = Bytes::from(vec![b'x'; 200]);
        assert!(trim(&long).ends_with(b"... (72 more bytes)"));
        log.reset(Viewer::All);
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
        log.record(
            10,
            Duration::from_millis(20),
            &args,
            "peer",
            Some(&name),
            None,
        );
        drop((args, name));
        assert!(request.is_unique(), "a log entry still holds the request");
        // 3 + 1 + (128 + the note) + name + peer.
        assert!(log.held_bytes() < 200, "{}", log.held_bytes());
    }

    fn words(line: &str) -> Vec<Bytes> {
        line.split(' ')
            .map(|w| Bytes::from(w.to_string()))
            .collect()
    }

    fn logged_args(log: &SlowLog, viewer: Viewer<'_>) -> Vec<String> {
        let Reply::Array(entries) = log.get(usize::MAX, viewer) else {
            panic!()
        };
        entries
            .iter()
            .map(|e| {
                let Reply::Array(fields) = e else { panic!() };
                let Reply::Array(args) = &fields[3] else {
                    panic!()
                };
                args.iter()
                    .map(|a| match a {
                        Reply::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
                        _ => panic!(),
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    #[test]
    fn secrets_are_redacted_as_redis_redacts_them() {
        let log = SlowLog::default();
        let slow = Duration::from_millis(20);
        for line in [
            "AUTH pw",
            "auth bob pw",
            "HELLO 3 AUTH bob pw SETNAME x",
            "CONFIG SET requirepass pw maxmemory 10",
            "GET session:a",
        ] {
            log.record(10, slow, &words(line), "p", None, None);
        }
        assert_eq!(
            logged_args(&log, Viewer::All),
            vec![
                "GET session:a",
                "CONFIG SET requirepass (redacted) maxmemory 10",
                "HELLO 3 AUTH (redacted) (redacted) SETNAME x",
                "auth (redacted) (redacted)",
                "AUTH (redacted)",
            ]
        );
    }

    #[test]
    fn a_named_user_sees_and_resets_its_own_entries() {
        let log = SlowLog::default();
        let slow = Duration::from_millis(20);
        let (alice, bob) = (Bytes::from("alice"), Bytes::from("bob"));
        log.record(10, slow, &words("GET a"), "p", None, Some(&alice));
        log.record(10, slow, &words("GET b"), "p", None, Some(&bob));
        log.record(10, slow, &words("GET d"), "p", None, None);
        assert_eq!(logged_args(&log, Viewer::User(b"alice")), vec!["GET a"]);
        assert_eq!(log.len_for(Viewer::User(b"bob")), 1);
        assert_eq!(log.len_for(Viewer::All), 3);
        log.reset(Viewer::User(b"alice"));
        assert_eq!(logged_args(&log, Viewer::All), vec!["GET d", "GET b"]);
    }
}
