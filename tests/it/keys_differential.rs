//! The proxy's idea of a request's keys against a real Redis's, over random
//! and mutated argument lists for every keyed command: where the proxy
//! names keys, Redis's `COMMAND GETKEYS` names the same ones; where the
//! proxy refuses (its key lookup cannot be sure), Redis refuses the
//! command too when it runs it (inside MULTI/EXEC, so nothing blocks).
//!
//! Redis's `COMMAND GETKEYS` is itself wrong in two documented places,
//! where the proxy follows what the command does instead (and
//! `execution_touches_the_keys_the_proxy_names` below proves it on the
//! server): GEORADIUS with several STORE/STOREDIST options (the command
//! obeys the last, GETKEYS names the first), and XREAD/XREADGROUP with an
//! option's value that reads STREAMS (GETKEYS takes it for the keyword).
//! For those, GETKEYS is asked about the request with the confusing part
//! taken out: the earlier STORE options dropped, the option values renamed.
//!
//! Bounded: `SESSION_PROXY_KEYS_CASES` random cases per command (default
//! 150) plus 40 mutations of each seed form.

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use session_proxy::protocol::command::TABLE;
use session_proxy::protocol::keys::positions;
use session_proxy::protocol::{Reply, Request, Route};

use crate::common::{RawClient, Redis};

/// Words random argument lists are made of: key counts Redis reads
/// strictly or loosely, the keywords that move keys, key names.
const WORDS: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "-1",
    "02",
    "+1",
    "1 ",
    "2 ",
    " 2",
    "99999999999999999999",
    "9223372036854775807",
    "STORE",
    "storedist",
    "STREAMS",
    "streams",
    "COUNT",
    "BLOCK",
    "GROUP",
    "NOACK",
    "LIMIT",
    "LEFT",
    "RIGHT",
    "MIN",
    "MAX",
    "WEIGHTS",
    "AGGREGATE",
    "WITHSCORES",
    "WITHDIST",
    "ANY",
    "km",
    "$",
    ">",
    "k1",
    "k2",
    "{t}k3",
    "CREATE",
    "USAGE",
    "STREAM",
    "HELP",
    "",
];

/// Well-formed requests of the commands whose keys move with their
/// arguments, and a few fixed-key ones, to mutate.
const SEEDS: &[&str] = &[
    "zunionstore d 2 k1 k2 WEIGHTS 1 2 AGGREGATE SUM",
    "zinterstore d 1 k1",
    "zdiffstore d 2 k1 k2",
    "zunion 2 k1 k2 WITHSCORES",
    "zinter 2 k1 k2",
    "zdiff 1 k1",
    "zintercard 2 k1 k2 LIMIT 1",
    "sintercard 2 k1 k2 LIMIT 1",
    "lmpop 2 k1 k2 LEFT COUNT 1",
    "blmpop 0 2 k1 k2 RIGHT",
    "zmpop 1 k1 MIN",
    "bzmpop 0 1 k1 MAX COUNT 2",
    "georadius g 0 0 500 km WITHDIST COUNT 1 STORE d",
    "georadiusbymember g m 500 km STOREDIST d",
    "xread COUNT 1 BLOCK 0 STREAMS k1 k2 0 0",
    "xreadgroup GROUP g c NOACK STREAMS k1 >",
    "eval return 2 k1 k2 a",
    "fcall f 1 k1",
    "msetnx k1 1 k2 2",
    "blpop k1 k2 0",
    "lmove k1 k2 LEFT RIGHT",
    "geosearchstore d g FROMMEMBER m BYRADIUS 1 km",
    "xgroup create k1 g $",
    "xinfo stream k1",
    "memory usage k1",
    "pfmerge d k1 k2",
    "bitop and d k1 k2",
];

/// Arguments as Redis reads a reply to COMMAND GETKEYS or EXEC.
fn parse(bytes: Vec<u8>) -> Reply {
    Reply::Raw(Bytes::from(bytes)).parsed()
}

fn getkeys(redis: &mut RawClient, args: &[Vec<u8>]) -> Reply {
    let mut ask: Vec<&[u8]> = vec![b"COMMAND", b"GETKEYS"];
    ask.extend(args.iter().map(Vec::as_slice));
    redis.send(&ask);
    parse(redis.read_reply())
}

/// Runs the request inside MULTI/EXEC: its error, if it gave one (queued
/// or when run).
fn run_error(redis: &mut RawClient, args: &[Vec<u8>]) -> Option<String> {
    let words: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    redis.send(&[b"MULTI"]);
    assert_eq!(redis.read_reply(), b"+OK\r\n");
    redis.send(&words);
    let queued = parse(redis.read_reply());
    redis.send(&[b"EXEC"]);
    let exec = parse(redis.read_reply());
    match (queued, exec) {
        (Reply::Error(e), _) => Some(String::from_utf8_lossy(&e).into_owned()),
        (_, Reply::Array(items)) => match items.first() {
            Some(Reply::Error(e)) => Some(String::from_utf8_lossy(e).into_owned()),
            _ => None,
        },
        (_, Reply::Error(e)) => Some(String::from_utf8_lossy(&e).into_owned()),
        _ => None,
    }
}

/// The request with what confuses Redis's GETKEYS taken out (see the
/// module's comment), or `None` when nothing does.
fn clarified(args: &[Vec<u8>]) -> Option<Vec<Vec<u8>>> {
    let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
    let is = |a: &[u8], w: &str| a.eq_ignore_ascii_case(w.as_bytes());
    match name.as_str() {
        "georadius" | "georadiusbymember" => {
            let base = if name == "georadius" { 6 } else { 5 };
            let stores: Vec<usize> = (base..args.len().saturating_sub(1))
                .filter(|&i| is(&args[i], "store") || is(&args[i], "storedist"))
                .collect();
            if stores.len() < 2 {
                return None;
            }
            // Every option pair before the last STORE goes.
            let last = *stores.last()?;
            let mut out = args[..base].to_vec();
            out.extend(args[last..].iter().cloned());
            Some(out)
        }
        "xread" | "xreadgroup" => {
            let mut out = args.to_vec();
            let mut i = 1;
            let mut changed = false;
            while i < out.len() {
                let more = out.len() - i - 1;
                let skip = if (is(&out[i], "block") || is(&out[i], "count")) && more > 0 {
                    1
                } else if is(&out[i], "group") && more >= 2 {
                    2
                } else if is(&out[i], "streams") {
                    break;
                } else {
                    0
                };
                for value in out.iter_mut().skip(i + 1).take(skip) {
                    if is(value, "streams") {
                        *value = b"x".to_vec();
                        changed = true;
                    }
                }
                i += 1 + skip;
            }
            changed.then_some(out)
        }
        _ => None,
    }
}

fn sorted_names(args: &[Vec<u8>], positions: impl Iterator<Item = usize>) -> Vec<Vec<u8>> {
    let mut names: Vec<Vec<u8>> = positions.map(|i| args[i].clone()).collect();
    names.sort();
    names
}

fn mutate(rng: &mut impl Rng, seed: &str) -> Vec<Vec<u8>> {
    let mut args: Vec<Vec<u8>> = seed.split(' ').map(|w| w.as_bytes().to_vec()).collect();
    for _ in 0..rng.random_range(1..4) {
        let word = WORDS[rng.random_range(0..WORDS.len())].as_bytes().to_vec();
        let at = rng.random_range(1..args.len().max(2));
        match rng.random_range(0..4) {
            0 if at < args.len() => args[at] = word,
            1 => args.insert(at.min(args.len()), word),
            2 if args.len() > 2 && at < args.len() => {
                args.remove(at);
            }
            _ => {
                let from = rng.random_range(1..args.len().max(2)).min(args.len() - 1);
                let copy = args[from..].to_vec();
                args.extend(copy);
            }
        }
    }
    args
}

struct Tally {
    cases: usize,
    keyed: usize,
    refused: usize,
    same_error: usize,
}

fn check(redis: &mut RawClient, args: &[Vec<u8>], tally: &mut Tally) {
    let Some(spec) = session_proxy::protocol::lookup(&args[0]) else {
        return;
    };
    if !spec.arity_ok(args.len()) {
        return;
    }
    tally.cases += 1;
    let request = Request::Inline(args.iter().map(|a| Bytes::from(a.clone())).collect());
    let shown: Vec<String> = args
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    match positions(spec, &request) {
        Ok(found) => {
            tally.keyed += 1;
            let proxy = sorted_names(args, found);
            let asked = clarified(args).unwrap_or_else(|| args.to_vec());
            let redis_keys = match getkeys(redis, &asked) {
                Reply::Array(items) => {
                    let mut names: Vec<Vec<u8>> = items
                        .into_iter()
                        .map(|k| match k {
                            Reply::Bulk(b) => b.to_vec(),
                            other => panic!("{shown:?}: GETKEYS gave {other:?}"),
                        })
                        .collect();
                    names.sort();
                    names
                }
                Reply::Error(e) if e.starts_with(b"ERR The command has no key") => Vec::new(),
                // Redis does not answer when an optional list of keys at
                // the end is empty (PFMERGE dest): asked with one more key,
                // it must name ours and that one.
                Reply::Error(e) if e.starts_with(b"ERR Invalid arguments") => {
                    let mut more = asked.clone();
                    more.push(b"one-more-key".to_vec());
                    let mut expected = proxy.clone();
                    expected.push(b"one-more-key".to_vec());
                    expected.sort();
                    match getkeys(redis, &more) {
                        Reply::Array(items) => {
                            let mut names: Vec<Vec<u8>> = items
                                .into_iter()
                                .filter_map(|k| match k {
                                    Reply::Bulk(b) => Some(b.to_vec()),
                                    _ => None,
                                })
                                .collect();
                            names.sort();
                            assert_eq!(names, expected, "{shown:?}: keys differ from Redis's");
                        }
                        other => panic!(
                            "{shown:?}: the proxy finds keys {proxy:?}, Redis's GETKEYS {other:?}"
                        ),
                    }
                    return;
                }
                other => {
                    panic!("{shown:?}: the proxy finds keys {proxy:?}, Redis's GETKEYS {other:?}")
                }
            };
            assert_eq!(proxy, redis_keys, "{shown:?}: keys differ from Redis's");
        }
        // A container's subcommand the proxy does not route (MEMORY HELP)
        // is refused for what it is, not for its keys.
        Err(error) if error.starts_with("ERR unknown subcommand") => {}
        Err(error) => {
            tally.refused += 1;
            let Some(redis_error) = run_error(redis, args) else {
                panic!("{shown:?}: the proxy refuses ({error}) what Redis runs");
            };
            if redis_error == *error {
                tally.same_error += 1;
            }
        }
    }
}

#[test]
fn key_lookup_agrees_with_redis() {
    let redis = Redis::start();
    let mut client = redis.client();
    let cases: usize = std::env::var("SESSION_PROXY_KEYS_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(300);
    let mut rng = rand::rngs::StdRng::seed_from_u64(
        std::env::var("SESSION_PROXY_KEYS_SEED")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(26),
    );
    let mut tally = Tally {
        cases: 0,
        keyed: 0,
        refused: 0,
        same_error: 0,
    };
    for seed in SEEDS {
        let args: Vec<Vec<u8>> = seed.split(' ').map(|w| w.as_bytes().to_vec()).collect();
        check(&mut client, &args, &mut tally);
        for _ in 0..40 {
            let args = mutate(&mut rng, seed);
            check(&mut client, &args, &mut tally);
        }
    }
    for spec in TABLE.iter() {
        let keyed = matches!(
            spec.route,
            Route::Key | Route::Keys(_) | Route::KeyValues | Route::Script | Route::Specs
        );
        if !keyed {
            continue;
        }
        for _ in 0..cases {
            let argc = rng.random_range(1..9);
            let mut args = vec![spec.name.as_bytes().to_vec()];
            for _ in 1..argc {
                args.push(WORDS[rng.random_range(0..WORDS.len())].as_bytes().to_vec());
            }
            check(&mut client, &args, &mut tally);
        }
    }
    eprintln!(
        "{} requests: {} with keys equal to Redis's, {} refused as Redis refuses them ({} with Redis's own error text)",
        tally.cases, tally.keyed, tally.refused, tally.same_error
    );
    assert!(
        tally.keyed > 1000 && tally.refused > 100,
        "too few cases ran"
    );
}

/// The cases where Redis's GETKEYS is wrong, run on the server: the key
/// the command touches is the one the proxy names.
#[test]
fn execution_touches_the_keys_the_proxy_names() {
    let redis = Redis::start();
    let mut c = redis.client();
    assert_eq!(c.text(&["GEOADD", "g", "0", "0", "m"]), ":1\r\n");
    // The last STORE wins; GETKEYS names the first.
    let store = [
        "GEORADIUS",
        "g",
        "0",
        "0",
        "500",
        "km",
        "STORE",
        "a",
        "STORE",
        "b",
    ];
    assert_eq!(c.text(&store), ":1\r\n");
    assert_eq!(c.text(&["EXISTS", "a"]), ":0\r\n");
    assert_eq!(c.text(&["EXISTS", "b"]), ":1\r\n");
    let mut ask = vec!["COMMAND", "GETKEYS"];
    ask.extend(store);
    assert_eq!(
        c.text(&ask),
        "*2\r\n$1\r\ng\r\n$1\r\na\r\n",
        "Redis's own guess"
    );
    let spec = session_proxy::protocol::lookup(b"georadius").unwrap();
    let request = Request::Inline(store.iter().map(|w| Bytes::from(w.to_string())).collect());
    let found: Vec<usize> = positions(spec, &request).unwrap().collect();
    assert_eq!(found, vec![1, 9]);

    // A consumer called STREAMS after another option: GETKEYS takes it for
    // the keyword; the command reads stream k.
    assert!(c.text(&["XADD", "k", "1-1", "f", "v"]).starts_with('$'));
    assert_eq!(c.text(&["XGROUP", "CREATE", "k", "g", "0"]), "+OK\r\n");
    let read = [
        "XREADGROUP",
        "COUNT",
        "1",
        "GROUP",
        "g",
        "STREAMS",
        "STREAMS",
        "k",
        ">",
    ];
    assert!(c.text(&read).contains("1-1"), "the command read stream k");
    let mut ask = vec!["COMMAND", "GETKEYS"];
    ask.extend(read);
    assert_eq!(c.text(&ask), "*1\r\n$7\r\nSTREAMS\r\n", "Redis's own guess");
    let spec = session_proxy::protocol::lookup(b"xreadgroup").unwrap();
    let request = Request::Inline(read.iter().map(|w| Bytes::from(w.to_string())).collect());
    let found: Vec<usize> = positions(spec, &request).unwrap().collect();
    assert_eq!(found, vec![7]);
}
