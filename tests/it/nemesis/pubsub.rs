//! Pub/Sub beside the sessions: a publisher publishes numbered messages on
//! a few channels (each through either proxy at random; the channels hash
//! to different backends), and subscribers (one RESP2, one RESP3) stay
//! subscribed to every channel through one proxy, connecting again, to
//! either, when their connection is lost.
//!
//! The checker: a message received must have been published, on its
//! channel, and never reach one subscriber twice (Redis delivers each
//! message once to each subscribed connection); a violation otherwise.
//! Pub/Sub delivers at most once, so a message published while a fault
//! was in progress may be lost (a subscriber's links are made again after
//! a failover, as a Redis subscriber reconnects); one acknowledged while a
//! subscriber was subscribed and received by it never is counted as an
//! error at its publishing, which only a fault in that time explains.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{pick, write_turns, Ports, Record, Writer};
use crate::common::RawClient;

/// Channels published on, each subscribed by every subscriber.
const CHANNELS: usize = 4;
/// Subscribers: the first speaks RESP2, the second RESP3.
pub const SUBSCRIBERS: usize = 2;
/// The history's user numbers: the publisher's, then the subscribers'.
const FIRST: usize = 3000;
/// How long a subscriber goes on reading after the load stops, for the
/// messages still on their way.
const DRAIN: Duration = Duration::from_secs(2);

fn channel(c: usize) -> String {
    format!("news:{c}")
}

/// Whether a record is the Pub/Sub workload's.
pub fn is_pubsub_op(op: &str) -> bool {
    op.starts_with("PS")
}

/// The publisher: PUBLISH of a message never published before on a random
/// channel, until `stop` or `limit`.
pub fn publisher(seed: u64, ports: Ports, stop: Arc<AtomicBool>, limit: Duration) -> Vec<Record> {
    let writer = Writer {
        user: FIRST,
        op: "PSPUB",
        command: "PUBLISH",
    };
    let rng = StdRng::seed_from_u64(seed ^ 0x9B5B);
    write_turns(writer, rng, &ports, &stop, limit, |rng, n| {
        (channel(rng.random_range(0..CHANNELS)), format!("m{n}"))
    })
}

/// What one frame a subscriber read is.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    /// A message: its channel and payload.
    Message(String, String),
    /// A subscription confirmed.
    Subscribed,
    Other,
}

/// Reads a frame a subscriber was sent (RESP2's array or RESP3's push).
fn frame(reply: &str) -> Frame {
    let lines: Vec<&str> = reply.split("\r\n").collect();
    match (lines.first().and_then(|l| l.get(..1)), lines.get(2)) {
        (Some("*" | ">"), Some(&"message")) if lines.len() >= 7 => {
            Frame::Message(lines[4].to_string(), lines[6].to_string())
        }
        (Some("*" | ">"), Some(&"subscribe")) => Frame::Subscribed,
        _ => Frame::Other,
    }
}

/// Subscriber `s` until `stop` (and [`DRAIN`] after) or `limit`: a record
/// of each subscription made or refused, each connection lost, and each
/// message received.
pub fn subscriber(
    s: usize,
    seed: u64,
    ports: Ports,
    stop: Arc<AtomicBool>,
    limit: Duration,
) -> Vec<Record> {
    let user = FIRST + 1 + s;
    let mut rng = StdRng::seed_from_u64(seed ^ (0x9B5B + s as u64));
    let record = |op, key: String, arg: String, reply: String, port, start| Record {
        user,
        op,
        key,
        arg,
        reply,
        port,
        start,
        end: Instant::now(),
    };
    let mut records = Vec::new();
    let deadline = Instant::now() + limit;
    let mut stopped: Option<Instant> = None;
    let mut client: Option<(RawClient, u16)> = None;
    loop {
        if stopped.is_none() && stop.load(Ordering::Relaxed) {
            stopped = Some(Instant::now());
        }
        if stopped.is_some_and(|at| at.elapsed() > DRAIN) || Instant::now() > deadline {
            break;
        }
        let Some((connected, port)) = client.as_mut() else {
            let port = pick(&ports, &mut rng);
            let start = Instant::now();
            match subscribe(port, s == 1) {
                Ok(subscribed) => {
                    records.push(record(
                        "PSSUB",
                        String::new(),
                        String::new(),
                        "+OK".into(),
                        port,
                        start,
                    ));
                    client = Some((subscribed, port));
                }
                Err(error) => {
                    records.push(record(
                        "PSSUB",
                        String::new(),
                        String::new(),
                        error,
                        port,
                        start,
                    ));
                    std::thread::sleep(Duration::from_millis(rng.random_range(50..100)));
                }
            }
            continue;
        };
        let port = *port;
        match connected.try_read_reply() {
            Ok(reply) => {
                let reply = String::from_utf8_lossy(&reply).into_owned();
                if let Frame::Message(channel, message) = frame(&reply) {
                    let now = Instant::now();
                    records.push(record("PSMSG", channel, message, "+MSG".into(), port, now));
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                let now = Instant::now();
                records.push(record(
                    "PSLOST",
                    String::new(),
                    String::new(),
                    format!("!io {e}"),
                    port,
                    now,
                ));
                client = None;
            }
        }
    }
    if client.is_some() {
        // Subscribed to the end: the session closes here.
        let now = Instant::now();
        records.push(record(
            "PSEND",
            String::new(),
            String::new(),
            "+OK".into(),
            0,
            now,
        ));
    }
    records
}

/// A connection to `port` subscribed to every channel (RESP3 when
/// `resp3`), once each subscription is confirmed; the error otherwise.
fn subscribe(port: u16, resp3: bool) -> Result<RawClient, String> {
    let io = |e: std::io::Error| format!("!io {e}");
    let mut client = RawClient::try_connect(port).map_err(io)?;
    client
        .stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io)?;
    if resp3 {
        client.resp3 = true;
        let hello = RawClient::encode(&[b"HELLO", b"3"]);
        client.stream.write_all(&hello).map_err(io)?;
        let hello = client.try_read_reply().map_err(io)?;
        if !hello.starts_with(b"%") {
            return Err(String::from_utf8_lossy(&hello).into_owned());
        }
    }
    let mut args = vec!["SUBSCRIBE".to_string()];
    args.extend((0..CHANNELS).map(channel));
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    client
        .stream
        .write_all(&RawClient::encode(&args))
        .map_err(io)?;
    let mut confirmed = 0;
    while confirmed < CHANNELS {
        let reply = client.try_read_reply().map_err(io)?;
        let reply = String::from_utf8_lossy(&reply).into_owned();
        match frame(&reply) {
            Frame::Subscribed => confirmed += 1,
            Frame::Message(..) => {}
            Frame::Other if reply.starts_with('-') => return Err(reply),
            Frame::Other => {}
        }
    }
    client
        .stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(io)?;
    Ok(client)
}

/// What the checker found in the Pub/Sub workload.
#[derive(Debug, Default)]
pub struct PubSubVerdict {
    pub violations: Vec<String>,
    pub published: usize,
    pub received: usize,
    /// Messages acknowledged while a subscriber was subscribed that it
    /// never received: records of errors, at the publishing, for the
    /// faults to explain.
    pub lost: Vec<Record>,
    /// Subscriptions made (the first of each subscriber, then one after
    /// each connection lost).
    pub subscriptions: usize,
}

/// The backends each channel is published to, in each of the layouts
/// (config texts, without `[listen]`) the run used: its owner by
/// rendezvous, as the proxy routes PUBLISH.
pub fn owners(layouts: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut owners: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for text in layouts {
        let (config, router) = crate::common::router_for(text);
        for c in 0..CHANNELS {
            let id = &config.backends[router.owner(channel(c).as_bytes())].id;
            let ids = owners.entry(channel(c)).or_default();
            if !ids.contains(id) {
                ids.push(id.clone());
            }
        }
    }
    owners
}

/// Checks the messages (see the module's comment); `owners`: each
/// channel's backends (see [`owners`]), named in a lost message's record
/// so that only a fault of theirs explains it.
pub fn check(records: &[Record], owners: &BTreeMap<String, Vec<String>>) -> PubSubVerdict {
    let published: BTreeMap<&str, &Record> = records
        .iter()
        .filter(|r| r.op == "PSPUB")
        .map(|r| (r.arg.as_str(), r))
        .collect();
    let mut verdict = PubSubVerdict {
        published: published.values().filter(|r| !r.failed()).count(),
        ..PubSubVerdict::default()
    };
    let subscribers: BTreeSet<usize> = records
        .iter()
        .filter(|r| is_pubsub_op(r.op) && r.op != "PSPUB")
        .map(|r| r.user)
        .collect();
    for user in subscribers {
        let mut got = BTreeSet::new();
        // When each subscription held: from confirmed to lost (or the end).
        let mut held: Vec<(Instant, Instant)> = Vec::new();
        let mut since: Option<Instant> = None;
        for r in records.iter().filter(|r| r.user == user) {
            match r.op {
                "PSSUB" if !r.failed() => {
                    verdict.subscriptions += 1;
                    since = Some(r.end);
                }
                "PSLOST" | "PSEND" => held.extend(since.take().map(|from| (from, r.end))),
                "PSMSG" => {
                    verdict.received += 1;
                    match published.get(r.arg.as_str()) {
                        Some(p) if p.key == r.key => {}
                        _ => verdict.violations.push(format!(
                            "subscriber {user}: {:?} on {}, never published there",
                            r.arg, r.key
                        )),
                    }
                    if !got.insert(r.arg.clone()) {
                        verdict.violations.push(format!(
                            "subscriber {user}: {:?} on {} received twice",
                            r.arg, r.key
                        ));
                    }
                }
                _ => {}
            }
        }
        for p in published.values().filter(|p| !p.failed()) {
            let subscribed = held.iter().any(|&(from, to)| from < p.start && p.end < to);
            if subscribed && !got.contains(&p.arg) {
                verdict.lost.push(Record {
                    user,
                    op: "PSLOSTMSG",
                    reply: format!(
                        "-LOST message {} on {} (published to {}), never received by subscriber {user}",
                        p.arg,
                        p.key,
                        published_to(owners, &p.key)
                    ),
                    ..(*p).clone()
                });
            }
        }
    }
    verdict
}

/// A channel's backends as a record names them: `'a' or 'extra'`.
fn published_to(owners: &BTreeMap<String, Vec<String>>, channel: &str) -> String {
    match owners.get(channel) {
        Some(ids) => ids
            .iter()
            .map(|id| format!("'{id}'"))
            .collect::<Vec<_>>()
            .join(" or "),
        None => "an unknown backend".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(
        user: usize,
        op: &'static str,
        key: &str,
        arg: &str,
        reply: &str,
        at: (u64, u64),
    ) -> Record {
        static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let t0 = *T0.get_or_init(Instant::now);
        Record {
            user,
            op,
            key: key.into(),
            arg: arg.into(),
            reply: reply.into(),
            port: 1,
            start: t0 + Duration::from_millis(at.0),
            end: t0 + Duration::from_millis(at.1),
        }
    }

    #[test]
    fn a_subscribers_frames_are_read_in_both_protocols() {
        let resp2 = "*3\r\n$7\r\nmessage\r\n$6\r\nnews:1\r\n$2\r\nm7\r\n";
        let resp3 = ">3\r\n$7\r\nmessage\r\n$6\r\nnews:1\r\n$2\r\nm7\r\n";
        for reply in [resp2, resp3] {
            assert_eq!(frame(reply), Frame::Message("news:1".into(), "m7".into()));
        }
        assert_eq!(
            frame(">3\r\n$9\r\nsubscribe\r\n$6\r\nnews:0\r\n:1\r\n"),
            Frame::Subscribed
        );
        assert_eq!(frame("+PONG\r\n"), Frame::Other);
    }

    /// A message never published (or published on another channel) and
    /// one received twice are violations; one acknowledged while a
    /// subscriber was subscribed and never received is an error at its
    /// publishing; one published while the subscriber was not subscribed,
    /// or given up, is neither.
    #[test]
    fn the_pubsub_checker_finds_messages_never_published_twice_or_lost() {
        let s = FIRST + 1;
        let records = vec![
            record(FIRST, "PSPUB", "news:0", "m1", ":1\r\n", (0, 5)),
            record(s, "PSSUB", "", "", "+OK", (6, 10)),
            record(FIRST, "PSPUB", "news:0", "m2", ":1\r\n", (20, 25)),
            record(s, "PSMSG", "news:0", "m2", "+MSG", (26, 26)),
            record(s, "PSMSG", "news:0", "m2", "+MSG", (27, 27)),
            record(FIRST, "PSPUB", "news:1", "m3", ":1\r\n", (30, 35)),
            record(FIRST, "PSPUB", "news:1", "m4", "!io timed out", (36, 40)),
            record(s, "PSMSG", "news:2", "m3", "+MSG", (41, 41)),
            record(s, "PSMSG", "news:2", "m9", "+MSG", (42, 42)),
            record(FIRST, "PSPUB", "news:1", "m5", ":1\r\n", (50, 55)),
            record(s, "PSLOST", "", "", "!io reset", (60, 60)),
            record(FIRST, "PSPUB", "news:1", "m6", ":0\r\n", (70, 75)),
        ];
        let owners = BTreeMap::from([("news:1".to_string(), vec!["a".into(), "extra".into()])]);
        let verdict = check(&records, &owners);
        assert_eq!(verdict.published, 5);
        assert_eq!(verdict.received, 4);
        assert_eq!(verdict.subscriptions, 1);
        assert_eq!(verdict.violations.len(), 3, "{:?}", verdict.violations);
        assert!(verdict.violations[0].contains("\"m2\" on news:0 received twice"));
        assert!(verdict.violations[1].contains("\"m3\" on news:2, never published there"));
        assert!(verdict.violations[2].contains("\"m9\""));
        // m3 came, on another channel; m5 never did.
        let lost: Vec<&str> = verdict.lost.iter().map(|r| r.arg.as_str()).collect();
        assert_eq!(lost, ["m5"]);
        assert!(verdict.lost.iter().all(Record::failed));
        assert_eq!(verdict.lost[0].start, records[9].start);
        // Only a fault of the channel's backends explains it.
        assert_eq!(verdict.lost[0].backends(), ["a", "extra"]);
    }

    /// Each channel's owner in each layout, as the proxy routes PUBLISH: one
    /// per layout, named once however many layouts name it.
    #[test]
    fn a_channels_owners_are_its_backends_in_each_layout() {
        let layout = |ids: &[&str]| {
            let mut text = String::new();
            for (i, id) in ids.iter().enumerate() {
                text.push_str(&format!(
                    "[[backends]]\nid = \"{id}\"\naddress = \"127.0.0.1:{}\"\n",
                    7000 + i
                ));
            }
            text
        };
        let one = owners(&[layout(&["x", "y"]), layout(&["x", "y"])]);
        assert_eq!(one.len(), CHANNELS);
        assert!(one.values().all(|ids| ids.len() == 1));
        let two = owners(&[layout(&["x", "y"]), layout(&["x", "y", "z"])]);
        for (channel, ids) in &two {
            assert_eq!(ids[0], one[channel][0]);
            assert!(ids.len() == 1 || ids[1] == "z", "{ids:?}");
        }
    }
}
