//! Work queues beside the sessions: for each queue a producer pushes
//! numbered items (LPUSH) and a consumer takes them with a blocking pop
//! (BRPOP, one second), each through either proxy at random, so that a
//! consumer is mostly blocked when a fault comes (a failover, a frozen
//! master, a reload moving the queue's key). At the end each queue is read
//! whole (LRANGE). Beside each consumer, an unblocker sends `CLIENT
//! UNBLOCK` now and then, through the proxy the consumer is connected to,
//! aimed at its connection (the id `CLIENT ID` gave there): a pop it ends
//! answers nil, and one whose item the server had taken at that moment
//! must still hand the item over.
//!
//! The checker: an item taken must have been pushed (acknowledged, or
//! failed and so perhaps run), never another queue's; an acknowledged push
//! is taken, or left in the queue, or taken by a pop that failed (which
//! may have run: at most one item each); anything else is a violation, an
//! item lost. An item taken twice is counted apart: a pop is not followed
//! by `WAIT` (a pop confirmed to no replica would leave its client an
//! error for an item already gone), so a failover may bring back an item
//! already taken, as with Redis itself; and while the two proxies are a
//! reload's step apart, a key used by two clients at once may be moved
//! between a settle and the command after it (docs/migration.md).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{ask, Ports, Record};
use crate::common::RawClient;

/// Queues, each with one producer and one consumer.
pub const QUEUES: usize = 3;
/// The history's user number of queue `q`'s producer (its consumer's is
/// the next): after the sessions' users.
const FIRST: usize = 1000;

/// The history's user number of queue `q`'s unblocker.
const UNBLOCKERS: usize = 1100;

/// Where each queue's consumer is blocked, or about to be: the proxy's
/// port and the id of its connection there.
pub type Blocked = Arc<Mutex<Vec<Option<(u16, String)>>>>;

/// Nobody blocked yet.
pub fn blocked() -> Blocked {
    Arc::new(Mutex::new(vec![None; QUEUES]))
}

/// Queue `q`'s key.
pub fn key(q: usize) -> String {
    format!("queue:{q}")
}

/// Whether a record is a queue's (not a session's).
pub fn is_queue_op(op: &str) -> bool {
    matches!(op, "LPUSH" | "BRPOP" | "LRANGE" | "UNBLOCK")
}

/// Queue `q`'s producer (`consumer` false) or consumer, until `stop` or
/// `limit`.
pub fn worker(
    q: usize,
    consumer: bool,
    seed: u64,
    (ports, blocked): (Ports, Blocked),
    stop: Arc<AtomicBool>,
    limit: Duration,
) -> Vec<Record> {
    let user = FIRST + 2 * q + usize::from(consumer);
    let mut rng = StdRng::seed_from_u64(seed ^ (user as u64).wrapping_mul(0x9E37_79B9));
    let mut clients = BTreeMap::new();
    // The id of the consumer's connection to each proxy.
    let mut ids: BTreeMap<u16, String> = BTreeMap::new();
    let (key, mut n) = (key(q), 0u64);
    let mut records = Vec::new();
    let deadline = Instant::now() + limit;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        n += 1;
        let (op, args) = if consumer {
            ("BRPOP", vec!["BRPOP".to_string(), key.clone(), "1".into()])
        } else {
            let item = format!("q{q}:{n}");
            ("LPUSH", vec!["LPUSH".to_string(), key.clone(), item])
        };
        let port = {
            let ports = ports.lock().unwrap();
            ports[rng.random_range(0..ports.len())]
        };
        if consumer {
            let id = client_id(&mut clients, &mut ids, port);
            blocked.lock().unwrap()[q] = id.map(|id| (port, id));
        }
        let start = Instant::now();
        let reply = ask(&mut clients, port, &args).unwrap_or_else(|e| {
            clients.remove(&port);
            ids.remove(&port);
            format!("!io {e}")
        });
        if consumer {
            blocked.lock().unwrap()[q] = None;
        }
        let failed = reply.starts_with('-') || reply.starts_with("!io");
        records.push(Record {
            user,
            op,
            key: key.clone(),
            arg: if consumer {
                String::new()
            } else {
                args[2].clone()
            },
            reply,
            port,
            start,
            end: Instant::now(),
        });
        if !consumer {
            // Slower than the consumer: it waits, blocked, most of the time.
            std::thread::sleep(Duration::from_millis(rng.random_range(5..40)));
        } else if failed {
            // A worker backs off after an error rather than spin on it.
            std::thread::sleep(Duration::from_millis(rng.random_range(50..100)));
        }
    }
    records
}

/// The id of the connection to `port` (`CLIENT ID` on a new one), if it
/// answers.
fn client_id(
    clients: &mut BTreeMap<u16, RawClient>,
    ids: &mut BTreeMap<u16, String>,
    port: u16,
) -> Option<String> {
    if !clients.contains_key(&port) {
        ids.remove(&port);
    }
    if let Some(id) = ids.get(&port) {
        return Some(id.clone());
    }
    let args = ["CLIENT".to_string(), "ID".into()];
    match ask(clients, port, &args) {
        Ok(reply) if reply.starts_with(':') => {
            let id = reply.trim_start_matches(':').trim_end().to_string();
            ids.insert(port, id.clone());
            Some(id)
        }
        _ => {
            clients.remove(&port);
            None
        }
    }
}

/// Queue `q`'s unblocker: every 0.3-1.5 s a `CLIENT UNBLOCK` (its
/// TIMEOUT form: the pop answers nil) aimed at the consumer's connection,
/// through the proxy it is connected to, until `stop` or `limit`.
pub fn unblocker(
    q: usize,
    seed: u64,
    blocked: Blocked,
    stop: Arc<AtomicBool>,
    limit: Duration,
) -> Vec<Record> {
    let user = UNBLOCKERS + q;
    let mut rng = StdRng::seed_from_u64(seed ^ (user as u64).wrapping_mul(0x9E37_79B9));
    let mut clients = BTreeMap::new();
    let mut records = Vec::new();
    let deadline = Instant::now() + limit;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(rng.random_range(300..1500)));
        let Some((port, id)) = blocked.lock().unwrap()[q].clone() else {
            continue;
        };
        let args = ["CLIENT".to_string(), "UNBLOCK".into(), id.clone()];
        let start = Instant::now();
        // A connection kept since before a restart of that proxy is closed
        // (its next use reads the end of file at once, maybe after the
        // restart's window): it is made again and the UNBLOCK sent once
        // more, as a client library does with a pooled connection.
        let kept = clients.contains_key(&port);
        let mut reply = ask(&mut clients, port, &args);
        if kept && reply.is_err() {
            clients.remove(&port);
            reply = ask(&mut clients, port, &args);
        }
        let reply = reply.unwrap_or_else(|e| {
            clients.remove(&port);
            format!("!io {e}")
        });
        records.push(Record {
            user,
            op: "UNBLOCK",
            key: key(q),
            arg: id,
            reply,
            port,
            start,
            end: Instant::now(),
        });
    }
    records
}

/// Each queue read whole, last.
pub fn read_all(client: &mut RawClient, port: u16) -> Vec<Record> {
    (0..QUEUES)
        .map(|q| {
            let start = Instant::now();
            let reply = client.text(&["LRANGE", &key(q), "0", "-1"]);
            Record {
                user: FIRST + 2 * q,
                op: "LRANGE",
                key: key(q),
                arg: String::new(),
                reply,
                port,
                start,
                end: Instant::now(),
            }
        })
        .collect()
}

/// What the checker found in the queues.
#[derive(Debug, Default)]
pub struct QueueVerdict {
    pub violations: Vec<String>,
    /// Items taken twice.
    pub again: Vec<String>,
    pub pushed: usize,
    pub taken: usize,
    pub left: usize,
    /// Pops a `CLIENT UNBLOCK` ended (it answered 1).
    pub unblocked: usize,
}

/// The items of an array reply (a pop's `[key, item]`, LRANGE's list).
fn items(reply: &str) -> Vec<String> {
    reply
        .split("\r\n")
        .filter(|line| !line.is_empty())
        .skip(1)
        .collect::<Vec<_>>()
        .chunks(2)
        .filter_map(|pair| pair.get(1).map(|item| item.to_string()))
        .collect()
}

/// Checks every queue's history (see the module's comment).
pub fn check(records: &[Record]) -> QueueVerdict {
    let mut verdict = QueueVerdict::default();
    for q in 0..QUEUES {
        let key = key(q);
        let ours: Vec<&Record> = records.iter().filter(|r| r.key == key).collect();
        let pushes = ours.iter().filter(|r| r.op == "LPUSH");
        let acked: BTreeSet<&str> = pushes
            .clone()
            .filter(|r| !r.failed())
            .map(|r| r.arg.as_str())
            .collect();
        let maybe: BTreeSet<&str> = pushes.map(|r| r.arg.as_str()).collect();
        let pops = ours.iter().filter(|r| r.op == "BRPOP");
        let failed_pops = pops.clone().filter(|r| r.failed()).count();
        let mut taken: BTreeMap<String, usize> = BTreeMap::new();
        for pop in pops.filter(|r| !r.failed()) {
            for item in items(&pop.reply).into_iter().skip(1) {
                *taken.entry(item).or_default() += 1;
            }
        }
        let left: BTreeSet<String> = ours
            .iter()
            .filter(|r| r.op == "LRANGE")
            .flat_map(|r| items(&r.reply))
            .collect();
        for (item, times) in &taken {
            if !maybe.contains(item.as_str()) {
                verdict
                    .violations
                    .push(format!("{key}: taken {item:?}, never pushed"));
            }
            if *times > 1 {
                verdict
                    .again
                    .push(format!("{key}: {item} taken {times} times"));
            }
        }
        let lost: Vec<&&str> = acked
            .iter()
            .filter(|item| !taken.contains_key(**item) && !left.contains(**item))
            .collect();
        if lost.len() > failed_pops {
            verdict.violations.push(format!(
                "{key}: {} acknowledged items neither taken nor left, {failed_pops} failed pops, e.g. {:?}",
                lost.len(),
                &lost[..lost.len().min(5)]
            ));
        }
        verdict.unblocked += ours
            .iter()
            .filter(|r| r.op == "UNBLOCK" && r.reply == ":1\r\n")
            .count();
        verdict.pushed += acked.len();
        verdict.taken += taken.len();
        verdict.left += left.len();
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(user: usize, op: &'static str, arg: &str, reply: &str) -> Record {
        let now = Instant::now();
        Record {
            user,
            op,
            key: key(0),
            arg: arg.into(),
            reply: reply.into(),
            port: 1,
            start: now,
            end: now,
        }
    }

    fn popped(item: &str) -> String {
        format!("*2\r\n$7\r\nqueue:0\r\n${}\r\n{item}\r\n", item.len())
    }

    /// An item lost, one never pushed, one taken twice; and a loss that a
    /// failed pop explains. A pop ended by CLIENT UNBLOCK is counted (an
    /// UNBLOCK that found nothing blocked is not).
    #[test]
    fn the_queue_checker_finds_a_lost_item_and_one_never_pushed() {
        let records = vec![
            record(FIRST, "LPUSH", "q0:1", ":1\r\n"),
            record(FIRST, "LPUSH", "q0:2", ":2\r\n"),
            record(FIRST, "LPUSH", "q0:3", ":3\r\n"),
            record(
                FIRST,
                "LPUSH",
                "q0:4",
                "-ERR backend 'a' did not answer\r\n",
            ),
            record(FIRST + 1, "BRPOP", "", &popped("q0:1")),
            record(FIRST + 1, "BRPOP", "", &popped("q0:1")),
            record(FIRST + 1, "BRPOP", "", &popped("q0:9")),
            record(FIRST + 1, "BRPOP", "", &popped("q0:4")),
            record(FIRST + 1, "BRPOP", "", "*-1\r\n"),
            record(UNBLOCKERS, "UNBLOCK", "7", ":1\r\n"),
            record(UNBLOCKERS, "UNBLOCK", "7", ":0\r\n"),
            record(FIRST, "LRANGE", "", "*1\r\n$4\r\nq0:3\r\n"),
        ];
        let verdict = check(&records);
        assert_eq!(verdict.unblocked, 1);
        assert_eq!(verdict.again, vec!["queue:0: q0:1 taken 2 times"]);
        assert_eq!(verdict.violations.len(), 2, "{:?}", verdict.violations);
        assert!(verdict.violations[0].contains("\"q0:9\", never pushed"));
        assert!(verdict.violations[1].contains("1 acknowledged items"));
        let mut explained = records;
        explained.push(record(FIRST + 1, "BRPOP", "", "!io timed out"));
        assert_eq!(check(&explained).violations.len(), 1);
    }
}
