//! Client-side caching beside the sessions: a writer sets a few keys
//! (through either proxy at random), and readers keep them in a cache of
//! their own as a client library does (RESP3, CLIENT TRACKING ON on a
//! proxy: a value read is kept until an invalidation push names its key,
//! or a null push says flush everything; a lost connection drops the whole
//! cache). Each reader's turn is a PING, so the pushes before its reply are
//! taken, then a key: served from the cache where held (a hit), else read
//! with GET and kept. The readers track in each of Redis's three ways: by
//! default (the keys read), OPTIN (`CLIENT CACHING YES` before each read
//! kept) and BCAST (every key under the workload's prefix).
//!
//! The checker: a hit must serve a value that was written (or the key's
//! absence before any write); and at the end, once the faults are over
//! and the writer stopped, every value a reader holds must come to equal
//! what the key holds (within [`SETTLE`]): a value held past that is a
//! change the proxy never told, a violation. A hit whose value a write
//! acknowledged before the hit's PING had replaced is counted apart with
//! its lag: the proxy learns of changes through its links, a moment after
//! the writer's acknowledgement, as a client of Redis does.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{ask, pick, write_turns, Ports, Record, Writer};
use crate::common::RawClient;

/// Keys set and cached.
const KEYS: usize = 24;
/// Readers, each with a cache of its own, and how each tracks.
pub const READERS: usize = 3;
const MODES: [Mode; READERS] = [Mode::Default, Mode::Optin, Mode::Bcast];

/// How a reader asks to be told of changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `CLIENT TRACKING ON`: the keys it reads.
    Default,
    /// `CLIENT TRACKING ON OPTIN`: the keys read right after
    /// `CLIENT CACHING YES`.
    Optin,
    /// `CLIENT TRACKING ON BCAST PREFIX cache:`: every key under the prefix.
    Bcast,
}

impl Mode {
    fn tracking(self) -> &'static [&'static str] {
        match self {
            Mode::Default => &["CLIENT", "TRACKING", "ON"],
            Mode::Optin => &["CLIENT", "TRACKING", "ON", "OPTIN"],
            Mode::Bcast => &["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", "cache:"],
        }
    }
}
/// The history's user numbers: the writer's, then the readers'.
const FIRST: usize = 2000;
/// How long a value held at the end may take to be told of.
const SETTLE: Duration = Duration::from_secs(15);

fn key(k: usize) -> String {
    format!("cache:{k}")
}

/// Whether a record is the cache workload's.
pub fn is_cache_op(op: &str) -> bool {
    op.starts_with('C')
}

/// The writer: SET of a random key to a value never written before, until
/// `stop` or `limit`.
pub fn writer(seed: u64, ports: Ports, stop: Arc<AtomicBool>, limit: Duration) -> Vec<Record> {
    let writer = Writer {
        user: FIRST,
        op: "CSET",
        command: "SET",
    };
    let rng = StdRng::seed_from_u64(seed ^ 0xCAC4E);
    write_turns(writer, rng, &ports, &stop, limit, |rng, n| {
        (key(rng.random_range(0..KEYS)), format!("w{n}"))
    })
}

/// A value as a GET reply gives it (`None`: absent); `Err` for an error.
fn value(reply: &str) -> Result<Option<String>, ()> {
    match reply.as_bytes().first() {
        Some(b'$') if reply.starts_with("$-1") => Ok(None),
        Some(b'_') => Ok(None),
        Some(b'$') => Ok(reply.split("\r\n").nth(1).map(str::to_string)),
        _ => Err(()),
    }
}

/// A reader's connection and what it holds.
struct Reader {
    user: usize,
    mode: Mode,
    port: u16,
    client: Option<RawClient>,
    cache: HashMap<String, Option<String>>,
}

impl Reader {
    /// Connects (RESP3, tracking on) where there is no connection; the
    /// cache starts empty, as a library's does on a new connection.
    fn connect(&mut self, port: u16) -> Result<(), String> {
        if self.client.is_some() {
            return Ok(());
        }
        self.cache.clear();
        self.port = port;
        let client = RawClient::try_connect(port).map_err(|e| format!("!io {e}"))?;
        client
            .stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| format!("!io {e}"))?;
        self.client = Some(client);
        let hello = self.command(&["HELLO", "3"])?;
        if !hello.starts_with('%') {
            return Err(self.lost(hello));
        }
        match self.command(self.mode.tracking())? {
            ok if ok == "+OK\r\n" => Ok(()),
            refused => Err(self.lost(refused)),
        }
    }

    /// Drops the connection and the cache; `why` back.
    fn lost(&mut self, why: String) -> String {
        self.client = None;
        self.cache.clear();
        why
    }

    /// Sends a command and reads its reply, taking the pushes before it
    /// (each drops the keys it names from the cache, a null push all).
    fn command(&mut self, args: &[&str]) -> Result<String, String> {
        let Some(client) = self.client.as_mut() else {
            return Err("!io not connected".into());
        };
        let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let read = client
            .stream
            .write_all(&RawClient::encode(&bytes))
            .and_then(|()| loop {
                let reply = String::from_utf8_lossy(&client.try_read_reply()?).into_owned();
                if !reply.starts_with('>') {
                    return Ok(reply);
                }
                let lines: Vec<&str> = reply.split("\r\n").collect();
                if lines.get(2) != Some(&"invalidate") {
                    continue;
                }
                match lines.get(3) {
                    Some(&"_") => self.cache.clear(),
                    _ => lines.iter().skip(5).step_by(2).for_each(|key| {
                        self.cache.remove(*key);
                    }),
                }
            });
        read.map_err(|e| self.lost(format!("!io {e}")))
    }

    /// A GET whose value is kept: after `CLIENT CACHING YES` for OPTIN
    /// (an error there is the read's).
    fn read(&mut self, key: &str) -> Result<String, String> {
        if self.mode == Mode::Optin {
            let yes = self.command(&["CLIENT", "CACHING", "YES"])?;
            if yes != "+OK\r\n" {
                return Ok(yes);
            }
        }
        self.command(&["GET", key])
    }

    /// One turn on `key`: the record of its hit or its read.
    fn turn(&mut self, key: String, port: u16) -> Record {
        let start = Instant::now();
        let (op, reply) = match self.connect(port).and_then(|()| self.command(&["PING"])) {
            Err(error) => ("CPING", error),
            Ok(_) if self.cache.contains_key(&key) => ("CHIT", "+HIT".to_string()),
            Ok(_) => match self.read(&key) {
                Ok(reply) => {
                    if let Ok(held) = value(&reply) {
                        self.cache.insert(key.clone(), held);
                    }
                    ("CGET", reply)
                }
                Err(error) => ("CGET", error),
            },
        };
        let arg = match op {
            "CHIT" => self.cache[&key].clone().unwrap_or_default(),
            _ => value(&reply).ok().flatten().unwrap_or_default(),
        };
        let port = self.port;
        Record {
            user: self.user,
            op,
            key,
            arg,
            reply,
            port,
            start,
            end: Instant::now(),
        }
    }

    /// At the end: the values held that the keys do not hold, once every
    /// push so far is taken; none once they agree within [`SETTLE`], or
    /// the connection is lost (the cache goes with it). A key whose GET
    /// fails is counted apart: what it holds is not known.
    fn held_stale(&mut self) -> Held {
        let deadline = Instant::now() + SETTLE;
        let mut fresh = BTreeMap::new();
        loop {
            if self.command(&["PING"]).is_err() {
                return Held::default();
            }
            let mut seen = Held::default();
            let held: Vec<(String, Option<String>)> = self
                .cache
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for (key, held) in held {
                let args = ["GET".to_string(), key.clone()];
                let now = ask(&mut fresh, self.port, &args).ok();
                seen.compare(&key, &held, now.as_deref());
            }
            if seen.stale.is_empty() || Instant::now() > deadline {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// What a reader held at the end: values the keys no longer hold, and how
/// many keys could not be read.
#[derive(Debug, Default)]
pub struct Held {
    pub stale: Vec<String>,
    pub unreadable: usize,
}

impl Held {
    /// Notes `key`'s value `held` against the reply to a GET of it (none:
    /// the connection failed).
    fn compare(&mut self, key: &str, held: &Option<String>, reply: Option<&str>) {
        match reply.map(value) {
            Some(Ok(now)) if &now != held => self
                .stale
                .push(format!("{key}: held {held:?}, the key holds {now:?}")),
            Some(Ok(_)) => {}
            Some(Err(())) | None => self.unreadable += 1,
        }
    }
}

/// Reader `r`, until `stop` or `limit`; then what it still holds that the
/// keys do not (violations).
pub fn reader(
    r: usize,
    seed: u64,
    ports: Ports,
    stop: Arc<AtomicBool>,
    limit: Duration,
) -> (Vec<Record>, Held) {
    let mut rng = StdRng::seed_from_u64(seed ^ (0xCAC4E + r as u64));
    let mut reader = Reader {
        user: FIRST + 1 + r,
        mode: MODES[r],
        port: 0,
        client: None,
        cache: HashMap::new(),
    };
    let mut records = Vec::new();
    let deadline = Instant::now() + limit;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let port = pick(&ports, &mut rng);
        let record = reader.turn(key(rng.random_range(0..KEYS)), port);
        let failed = record.failed();
        records.push(record);
        let pause = if failed { 50..100 } else { 5..20 };
        std::thread::sleep(Duration::from_millis(rng.random_range(pause)));
    }
    let mut held = reader.held_stale();
    for s in &mut held.stale {
        *s = format!(
            "cache reader {r} ({:?}): a change never told: {s}",
            MODES[r]
        );
    }
    (records, held)
}

/// What the checker found in the cache workload.
#[derive(Debug, Default)]
pub struct CacheVerdict {
    pub violations: Vec<String>,
    pub hits: usize,
    pub reads: usize,
    /// Hits of a value a write acknowledged before them had replaced, and
    /// the longest such lag.
    pub behind: usize,
    pub longest_behind: Duration,
    /// Values held at the end that the keys no longer held.
    pub held_stale: usize,
    /// Keys held at the end whose GET failed (not judged).
    pub unreadable: usize,
}

/// Checks the hits (see the module's comment); `held`: what the readers
/// held at the end.
pub fn check(records: &[Record], held: Held) -> CacheVerdict {
    let mut verdict = CacheVerdict {
        held_stale: held.stale.len(),
        violations: held.stale,
        unreadable: held.unreadable,
        ..CacheVerdict::default()
    };
    // Each key's writes, so a long run's check is not hits times writes.
    let mut writes: HashMap<&str, Vec<&Record>> = HashMap::new();
    for w in records.iter().filter(|r| r.op == "CSET") {
        writes.entry(w.key.as_str()).or_default().push(w);
    }
    for hit in records.iter().filter(|r| r.op == "CHIT") {
        verdict.hits += 1;
        let of_key = writes.get(hit.key.as_str()).into_iter().flatten();
        let wrote = of_key.clone().find(|w| w.arg == hit.arg);
        if !hit.arg.is_empty() && wrote.is_none() {
            verdict.violations.push(format!(
                "{}: a hit on {:?}, never written",
                hit.key, hit.arg
            ));
            continue;
        }
        // The last write acknowledged before the hit's PING.
        let before = of_key
            .clone()
            .filter(|w| !w.failed() && w.end < hit.start)
            .max_by_key(|w| w.end);
        let Some(before) = before else { continue };
        // Explained where the value held is that write's or one that may
        // have run after it (begun after it began).
        let explained = before.arg == hit.arg || wrote.is_some_and(|w| w.start > before.start);
        if !explained {
            verdict.behind += 1;
            verdict.longest_behind = verdict
                .longest_behind
                .max(hit.start.saturating_duration_since(before.end));
        }
    }
    verdict.reads = records.iter().filter(|r| r.op == "CGET").count();
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(op: &'static str, arg: &str, reply: &str, at: (u64, u64)) -> Record {
        static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let t0 = *T0.get_or_init(Instant::now);
        Record {
            user: FIRST,
            op,
            key: key(0),
            arg: arg.into(),
            reply: reply.into(),
            port: 1,
            start: t0 + Duration::from_millis(at.0),
            end: t0 + Duration::from_millis(at.1),
        }
    }

    /// A hit of a value never written is a violation; one of a value a
    /// write acknowledged before it replaced is counted behind, with its
    /// lag; one a write begun later may explain is not; what readers held
    /// at the end is a violation each.
    #[test]
    fn the_cache_checker_finds_a_value_never_written_and_counts_hits_behind() {
        let records = vec![
            record("CSET", "w1", "+OK\r\n", (0, 10)),
            record("CHIT", "w1", "+HIT", (20, 21)),
            record("CSET", "w2", "+OK\r\n", (30, 40)),
            // Behind: w2 was acknowledged 60 ms before.
            record("CHIT", "w1", "+HIT", (100, 101)),
            // A write given up may have run after w2.
            record("CSET", "w3", "!io timed out", (110, 2000)),
            record("CHIT", "w3", "+HIT", (2100, 2101)),
            record("CHIT", "w9", "+HIT", (2200, 2201)),
            // Absent, before any write acknowledged: not behind.
            record("CHIT", "", "+HIT", (5, 6)),
        ];
        let held = Held {
            stale: vec!["held at the end".into()],
            unreadable: 2,
        };
        let verdict = check(&records, held);
        assert_eq!(verdict.hits, 5);
        assert_eq!(verdict.behind, 1);
        assert_eq!(verdict.longest_behind, Duration::from_millis(60));
        assert_eq!((verdict.held_stale, verdict.unreadable), (1, 2));
        assert_eq!(verdict.violations.len(), 2, "{:?}", verdict.violations);
        assert!(verdict.violations[1].contains("\"w9\", never written"));
    }

    /// A value held that the key no longer holds is stale; a key whose GET
    /// fails (an error, a lost connection) is unreadable, not stale.
    #[test]
    fn a_key_that_cannot_be_read_at_the_end_is_not_held_stale() {
        let mut held = Held::default();
        let v1 = Some("v1".to_string());
        held.compare("k", &v1, Some("$2\r\nv1\r\n"));
        held.compare("k", &None, Some("$-1\r\n"));
        held.compare("k", &v1, Some("$2\r\nv2\r\n"));
        held.compare("k", &v1, Some("_\r\n"));
        held.compare("k", &v1, Some("-ERR backend 'm' is down\r\n"));
        held.compare("k", &v1, None);
        assert_eq!(held.stale.len(), 2, "{:?}", held.stale);
        assert_eq!(held.unreadable, 2);
    }
}
