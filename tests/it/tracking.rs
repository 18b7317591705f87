//! CLIENT TRACKING through the proxy (issue 32): the subcommands' replies
//! and the invalidation messages byte-compared with a Redis directly, in
//! RESP3 and in RESP2 with REDIRECT; invalidation whoever writes (another
//! client of the proxy, another proxy, a client of the backend itself);
//! the flush when the proxy cannot vouch for what a client cached (a
//! backend restart, a reload that moves keys); the table's limit.

use std::time::Duration;

use crate::common::{wait_until, Differential, RawClient, Redis};

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Sends `args` to both and compares the replies.
fn same(proxy: &mut RawClient, direct: &mut RawClient, args: &[&str]) -> String {
    let (a, b) = (text(proxy.cmd(args)), text(direct.cmd(args)));
    assert_eq!(a, b, "reply to {args:?}");
    a
}

/// The next frame each side sends unasked (an invalidation), compared.
fn same_push(proxy: &mut RawClient, direct: &mut RawClient, what: &str) -> String {
    let (a, b) = (text(proxy.read_reply()), text(direct.read_reply()));
    assert_eq!(a, b, "{what}");
    a
}

/// `PING` answered with nothing before it: no invalidation was owed.
fn nothing_owed(client: &mut RawClient, what: &str) {
    let reply = text(client.cmd(&["PING"]));
    assert!(reply.ends_with("PONG\r\n"), "{what}: got {reply:?}");
}

#[test]
fn tracking_subcommands_reply_as_redis_does() {
    let d = Differential::start(2, "");
    for resp3 in [false, true] {
        let (mut p, mut r) = crate::common::pair(&d.proxy, &d.reference, resp3);
        for line in [
            "CLIENT TRACKINGINFO",
            "CLIENT GETREDIR",
            "CLIENT TRACKING on",
            "CLIENT TRACKINGINFO",
            "CLIENT GETREDIR",
            "CLIENT TRACKING on BCAST",
            "CLIENT TRACKING off",
            "CLIENT TRACKINGINFO",
            "CLIENT TRACKING on BCAST PREFIX b PREFIX a",
            "CLIENT TRACKINGINFO",
            "CLIENT TRACKING on BCAST PREFIX ab",
            "CLIENT TRACKING on BCAST PREFIX c PREFIX cd",
            "CLIENT TRACKING on BCAST PREFIX c",
            "CLIENT TRACKINGINFO",
            "CLIENT TRACKING off",
            "CLIENT TRACKING on OPTIN",
            "CLIENT CACHING yes",
            "CLIENT TRACKINGINFO",
            "CLIENT CACHING no",
            "CLIENT CACHING maybe",
            "CLIENT TRACKING on OPTOUT",
            "CLIENT TRACKING off",
            "CLIENT CACHING yes",
            "CLIENT TRACKING on PREFIX a",
            "CLIENT TRACKING on REDIRECT 999999",
            "CLIENT TRACKING on REDIRECT abc",
            "CLIENT TRACKING maybe",
            "CLIENT TRACKING on BCAST OPTIN",
            "CLIENT TRACKING on OPTIN OPTOUT",
            "CLIENT TRACKING on NOLOOP OPTOUT",
            "CLIENT CACHING no",
            "CLIENT TRACKINGINFO",
            "CLIENT TRACKING on nonsense",
            "CLIENT TRACKING",
            "CLIENT GETREDIR extra",
            "RESET",
            "CLIENT TRACKINGINFO",
        ] {
            let args: Vec<&str> = line.split(' ').collect();
            same(&mut p, &mut r, &args);
        }
    }
}

#[test]
fn invalidations_match_redis_in_resp3() {
    let d = Differential::start(3, "");
    let (mut p, mut r) = crate::common::pair(&d.proxy, &d.reference, true);
    let (mut pw, mut rw) = crate::common::pair(&d.proxy, &d.reference, false);
    same(&mut p, &mut r, &["CLIENT", "TRACKING", "on"]);
    same(&mut pw, &mut rw, &["SET", "s1", "v1"]);
    same(&mut p, &mut r, &["GET", "s1"]);
    same(&mut pw, &mut rw, &["SET", "s1", "v2"]);
    same_push(&mut p, &mut r, "a string read, then written");
    same(&mut p, &mut r, &["GET", "s1"]);
    // A hash session, read whole then changed.
    same(&mut pw, &mut rw, &["HSET", "h", "user", "1", "seen", "2"]);
    same(&mut p, &mut r, &["HGETALL", "h"]);
    same(&mut pw, &mut rw, &["HSET", "h", "seen", "3"]);
    same_push(&mut p, &mut r, "a hash read, then written");
    // Several keys in one read (split over backends by the proxy).
    same(&mut p, &mut r, &["MGET", "a", "b", "c"]);
    same(&mut pw, &mut rw, &["DEL", "b"]);
    nothing_owed(&mut pw, "b did not exist: DEL changed nothing");
    nothing_owed(&mut rw, "b did not exist: DEL changed nothing");
    same(&mut pw, &mut rw, &["SET", "c", "x"]);
    same_push(&mut p, &mut r, "one key of an MGET written");
    same(&mut pw, &mut rw, &["SET", "c", "y"]);
    same(&mut p, &mut r, &["PING"]);
    // Told once: a key not read again is not told of again.
    same(&mut pw, &mut rw, &["SET", "s1", "v3"]);
    same(&mut pw, &mut rw, &["SET", "s1", "v4"]);
    same_push(&mut p, &mut r, "s1, read again after its first change");
    same(&mut p, &mut r, &["PING"]);
    // Expiry tells too.
    same(&mut pw, &mut rw, &["SET", "e", "v", "PX", "30"]);
    same(&mut p, &mut r, &["GET", "e"]);
    same_push(&mut p, &mut r, "an expired key");
    // A key read in RESP3 and changed by the same client (no NOLOOP).
    same(&mut p, &mut r, &["GET", "own"]);
    p.send(&[b"SET", b"own", b"1"]);
    r.send(&[b"SET", b"own", b"1"]);
    let (mut a, mut b) = (vec![text(p.read_reply())], vec![text(r.read_reply())]);
    a.push(text(p.read_reply()));
    b.push(text(r.read_reply()));
    a.sort();
    b.sort();
    assert_eq!(a, b, "a key the client itself changed");
}

#[test]
fn bcast_optin_and_noloop_match_redis() {
    let d = Differential::start(2, "");
    let (mut pw, mut rw) = crate::common::pair(&d.proxy, &d.reference, false);
    // BCAST with prefixes: every key under them, read or not.
    let (mut p, mut r) = crate::common::pair(&d.proxy, &d.reference, true);
    same(
        &mut p,
        &mut r,
        &[
            "CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "user:", "PREFIX", "cart:",
        ],
    );
    same(&mut pw, &mut rw, &["SET", "user:1", "x"]);
    same_push(&mut p, &mut r, "a key under a BCAST prefix");
    same(&mut pw, &mut rw, &["SET", "other", "x"]);
    same(&mut pw, &mut rw, &["SET", "cart:9", "x"]);
    same_push(&mut p, &mut r, "the next key under a prefix, not the other");
    // OPTIN: only the read after CLIENT CACHING yes is remembered.
    let (mut p, mut r) = crate::common::pair(&d.proxy, &d.reference, true);
    same(&mut p, &mut r, &["CLIENT", "TRACKING", "on", "OPTIN"]);
    same(&mut p, &mut r, &["GET", "k1"]);
    same(&mut p, &mut r, &["CLIENT", "CACHING", "yes"]);
    same(&mut p, &mut r, &["GET", "k2"]);
    same(&mut p, &mut r, &["GET", "k3"]);
    for key in ["k1", "k2", "k3"] {
        same(&mut pw, &mut rw, &["SET", key, "v"]);
    }
    same_push(&mut p, &mut r, "the one key read after CACHING yes");
    same(&mut p, &mut r, &["PING"]);
    // NOLOOP: a client is not told of its own writes.
    let (mut p, mut r) = crate::common::pair(&d.proxy, &d.reference, true);
    same(&mut p, &mut r, &["CLIENT", "TRACKING", "on", "NOLOOP"]);
    same(&mut p, &mut r, &["GET", "n1"]);
    same(&mut p, &mut r, &["GET", "n2"]);
    same(&mut p, &mut r, &["SET", "n1", "mine"]);
    same(&mut pw, &mut rw, &["SET", "n2", "theirs"]);
    same_push(&mut p, &mut r, "another client's write under NOLOOP");
    same(&mut pw, &mut rw, &["SET", "n1", "theirs"]);
    same(&mut p, &mut r, &["PING"]);
}

#[test]
fn redirect_in_resp2_matches_redis() {
    let d = Differential::start(2, "");
    let (mut pw, mut rw) = crate::common::pair(&d.proxy, &d.reference, false);
    let (mut p_sub, mut r_sub) = crate::common::pair(&d.proxy, &d.reference, false);
    let p_id = text(p_sub.cmd(&["CLIENT", "ID"]));
    let r_id = text(r_sub.cmd(&["CLIENT", "ID"]));
    let id = |reply: &str| reply.trim_start_matches(':').trim().to_string();
    same(
        &mut p_sub,
        &mut r_sub,
        &["SUBSCRIBE", "__redis__:invalidate"],
    );
    let (mut p, mut r) = crate::common::pair(&d.proxy, &d.reference, false);
    assert_eq!(
        text(p.cmd(&["CLIENT", "TRACKING", "on", "REDIRECT", &id(&p_id)])),
        text(r.cmd(&["CLIENT", "TRACKING", "on", "REDIRECT", &id(&r_id)])),
    );
    assert_eq!(
        text(p.cmd(&["CLIENT", "GETREDIR"])),
        format!(":{}\r\n", id(&p_id))
    );
    same(&mut p, &mut r, &["GET", "s"]);
    same(&mut p, &mut r, &["HGET", "h", "f"]);
    same(&mut pw, &mut rw, &["SET", "s", "1"]);
    same_push(&mut p_sub, &mut r_sub, "a redirected invalidation");
    same(&mut pw, &mut rw, &["HSET", "h", "f", "1"]);
    same_push(
        &mut p_sub,
        &mut r_sub,
        "a redirected invalidation of a hash",
    );
    // The target goes: the redirect is broken once an invalidation is due.
    drop(p_sub);
    drop(r_sub);
    let flags = |c: &mut RawClient| {
        let list = text(c.cmd(&["CLIENT", "INFO"]));
        list.split(' ')
            .find(|f| f.starts_with("flags="))
            .unwrap_or_default()
            .to_string()
    };
    same(&mut p, &mut r, &["GET", "s"]);
    std::thread::sleep(Duration::from_millis(50));
    same(&mut pw, &mut rw, &["SET", "s", "2"]);
    wait_until(
        Duration::from_secs(5),
        Duration::from_millis(10),
        "the broken redirect noted",
        || flags(&mut p) == "flags=tR",
    );
    assert_eq!(flags(&mut r), "flags=tR");
    let info = |c: &mut RawClient, id: &str| {
        text(c.cmd(&["CLIENT", "TRACKINGINFO"])).replace(&format!(":{id}\r\n"), ":ID\r\n")
    };
    assert_eq!(info(&mut p, &id(&p_id)), info(&mut r, &id(&r_id)));
}

/// A second proxy and a client of the backend itself write: the proxy's
/// tracking client is told, then reads the new value.
#[test]
fn changes_from_anywhere_invalidate() {
    let servers = [Redis::start(), Redis::start()];
    let proxy = crate::common::proxy_over(&servers, "");
    let other = crate::common::proxy_over(&servers, "");
    let mut reader = proxy.client();
    reader.hello3();
    assert_eq!(text(reader.cmd(&["CLIENT", "TRACKING", "on"])), "+OK\r\n");
    let key = proxy.key_on(1, "session:");
    let push = format!(
        ">2\r\n$10\r\ninvalidate\r\n*1\r\n${}\r\n{key}\r\n",
        key.len()
    );
    let mut writers = [other.client(), servers[1].client(), proxy.client()];
    for (i, writer) in writers.iter_mut().enumerate() {
        reader.cmd(&["GET", &key]);
        let value = format!("v{i}");
        assert_eq!(text(writer.cmd(&["SET", &key, &value])), "+OK\r\n");
        assert_eq!(text(reader.read_reply()), push, "writer {i}");
        assert_eq!(
            text(reader.cmd(&["GET", &key])),
            format!("${}\r\n{value}\r\n", value.len())
        );
        let _ = text(writer.cmd(&["SET", &key, "again"]));
        assert_eq!(text(reader.read_reply()), push, "writer {i}, read again");
    }
}

/// Reads `k` until the read is remembered (the backend's tracking link
/// confirmed): not invalidated right behind its reply.
fn until_remembered(reader: &mut RawClient) {
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        "the read remembered",
        || {
            reader.cmd(&["GET", "k"]);
            let next = text(reader.cmd(&["PING"]));
            if next == "+PONG\r\n" {
                return true;
            }
            assert_eq!(next, ">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n");
            assert_eq!(text(reader.read_reply()), "+PONG\r\n");
            false
        },
    );
}

/// What the proxy cannot vouch for, it flushes: a backend that restarts
/// (its writes while the link was down would be unknown), a reload that
/// adds a backend (keys move).
#[test]
fn a_restart_or_a_reload_flushes() {
    let servers = [Redis::start(), Redis::start()];
    let body = crate::common::backends_toml(&[("a", &servers[0], 1.0)]);
    let running = crate::common::Running::start(&body);
    let mut reader = running.client();
    reader.hello3();
    assert_eq!(text(reader.cmd(&["CLIENT", "TRACKING", "on"])), "+OK\r\n");
    reader.cmd(&["GET", "k"]);
    servers[0].restart();
    assert_eq!(
        text(reader.read_reply()),
        ">2\r\n$10\r\ninvalidate\r\n_\r\n",
        "a flush when the backend restarts"
    );
    // Once the link is back, a read is remembered again.
    until_remembered(&mut reader);
    servers[0].client().cmd(&["SET", "k", "1"]);
    assert_eq!(
        text(reader.read_reply()),
        ">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n",
    );
    reader.cmd(&["GET", "k"]);
    let body = crate::common::backends_toml(&[("a", &servers[0], 1.0), ("b", &servers[1], 1.0)]);
    running.rewrite(&body);
    assert_eq!(running.http("POST", "/reload").0, 200);
    assert_eq!(
        text(reader.read_reply()),
        ">2\r\n$10\r\ninvalidate\r\n_\r\n",
        "a flush when a reload adds a backend"
    );
    drop(running);
}

/// `[limits] tracking_table_keys`: past it, keys are evicted from the
/// table and their clients told, as Redis's tracking-table-max-keys does.
#[test]
fn the_tracking_table_is_bounded() {
    let servers = [Redis::start()];
    let proxy = crate::common::proxy_over(&servers, "[limits]\ntracking_table_keys = 2\n");
    let mut reader = proxy.client();
    reader.hello3();
    assert_eq!(text(reader.cmd(&["CLIENT", "TRACKING", "on"])), "+OK\r\n");
    reader.cmd(&["GET", "a"]);
    reader.cmd(&["GET", "b"]);
    assert_eq!(proxy.shared.tracker.keys(), 2);
    // The eviction is told behind the reply of the read that caused it.
    assert_eq!(text(reader.cmd(&["GET", "c"])), "_\r\n");
    let evicted = text(reader.read_reply());
    assert!(
        evicted == ">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\na\r\n"
            || evicted == ">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nb\r\n",
        "one of the older keys evicted: {evicted:?}"
    );
    assert_eq!(proxy.shared.tracker.keys(), 2);
}

/// What a client library with its cache on saw (see the scripts), through
/// the proxy over two backends with writes by a client of the proxy,
/// another proxy and the key's backend directly, and on a Redis alone
/// with its own clients writing: the same outcome, and the expected one.
fn library_outcomes(run: impl Fn(u16, &str, &str, &str) -> String) {
    let servers = [Redis::start(), Redis::start()];
    let proxy = crate::common::proxy_over(&servers, "");
    let other = crate::common::proxy_over(&servers, "");
    let key = proxy.key_on(1, "session:csc:");
    let backends = format!("{},{}", servers[0].port, servers[1].port);
    let writers = format!("{},{},{}", proxy.port, other.port, servers[1].port);
    let ours = run(proxy.port, &backends, &writers, &key);
    let direct = Redis::start();
    let port = direct.port.to_string();
    let theirs = run(direct.port, &port, &format!("{port},{port},{port}"), &key);
    assert_eq!(ours.trim(), theirs.trim());
    let outcome: serde_json::Value = serde_json::from_str(ours.trim()).unwrap();
    assert_eq!(outcome["get_calls_for_two_reads"], 1, "{ours}");
    assert_eq!(outcome["hgetall_calls_for_two_reads"], 1, "{ours}");
    for i in 0..3 {
        assert_eq!(outcome[format!("writer_{i}_seen")], true, "{ours}");
        assert_eq!(outcome[format!("writer_{i}_then_cached")], 0, "{ours}");
    }
    assert_eq!(outcome["hash_change_seen"], true, "{ours}");
}

#[test]
fn redis_py_client_side_cache_through_the_proxy() {
    library_outcomes(|port, backends, writers, key| {
        crate::common::run_script(
            "venv-redis8",
            "client_side_cache.py",
            &[
                "--port",
                &port.to_string(),
                "--backends",
                backends,
                "--writers",
                writers,
                "--key",
                key,
            ],
        )
    });
}

#[test]
fn node_redis_client_side_cache_through_the_proxy() {
    library_outcomes(|port, backends, writers, key| {
        crate::node_stores::run_script(
            "client_side_cache.cjs",
            &[
                port.to_string(),
                backends.to_string(),
                writers.to_string(),
                key.to_string(),
            ],
        )
    });
}

/// The model check: a client that caches what it reads and drops what it
/// is told changed, against a writer going through two proxies, while the
/// backends' connections are killed and a backend restarts (emptied). No
/// cached read may return a value older than one whose write was
/// acknowledged more than `BOUND` before the read: the news of a change
/// reaches the client within the link's delay, and what the proxy cannot
/// vouch for it flushes.
#[test]
fn cached_reads_are_never_stale_under_faults() {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    const KEYS: usize = 32;
    const BOUND: Duration = Duration::from_millis(250);
    const RUN: Duration = Duration::from_secs(8);
    let servers = Arc::new([Redis::start(), Redis::start()]);
    let proxy = crate::common::proxy_over(&servers[..], "");
    let other = crate::common::proxy_over(&servers[..], "");
    let keys: Vec<String> = (0..KEYS).map(|i| format!("session:m{i}")).collect();
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    // (acknowledged at, key, value) of every write.
    let writes = Arc::new(Mutex::new(Vec::<(Instant, usize, u64)>::new()));
    // (server, when it was back, emptied) of every restart.
    let restarts = Arc::new(Mutex::new(Vec::<(usize, Instant)>::new()));

    let writer = {
        let (stop, writes, keys) = (stop.clone(), writes.clone(), keys.clone());
        let ports = [proxy.port, other.port];
        std::thread::spawn(move || {
            let mut clients: Vec<Option<RawClient>> = vec![None, None];
            let mut value = 0u64;
            while !stop.load(Ordering::Relaxed) && value < 200_000 {
                value += 1;
                // Keys in a scrambled order: some go unwritten for a while.
                let k = (value.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 59) as usize % KEYS;
                let via = value as usize % 2;
                let client = clients[via].get_or_insert_with(|| RawClient::connect(ports[via]));
                let reply = client.cmd(&["SET", &keys[k], &value.to_string()]);
                if reply == b"+OK\r\n" {
                    writes.lock().unwrap().push((Instant::now(), k, value));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let faults = {
        let (stop, servers, restarts) = (stop.clone(), servers.clone(), restarts.clone());
        std::thread::spawn(move || {
            let mut made = 0;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(700));
                let server = &servers[made % 2];
                if made % 3 == 2 {
                    server.restart();
                    restarts.lock().unwrap().push((made % 2, Instant::now()));
                } else {
                    let _ = server.client().cmd(&["CLIENT", "KILL", "TYPE", "normal"]);
                }
                made += 1;
            }
            made
        })
    };

    // The caching client.
    let mut reader = proxy.client();
    reader.hello3();
    assert_eq!(text(reader.cmd(&["CLIENT", "TRACKING", "on"])), "+OK\r\n");
    let mut cache: HashMap<usize, u64> = HashMap::new();
    let mut rng = 0x2545f4914f6cdd1du64;
    // (read began at, key, value) of every read served from the cache.
    let mut cached_reads = Vec::new();
    let (mut fetched, mut flushes) = (0u64, 0u64);
    let take_push = |frame: &[u8], cache: &mut HashMap<usize, u64>, flushes: &mut u64| {
        let frame = String::from_utf8_lossy(frame);
        if frame.ends_with("invalidate\r\n_\r\n") {
            cache.clear();
            *flushes += 1;
        } else {
            for (i, key) in keys.iter().enumerate() {
                if frame.contains(&format!("\r\n{key}\r\n")) {
                    cache.remove(&i);
                }
            }
        }
    };
    while start.elapsed() < RUN {
        // What waits on the socket is taken first, as client libraries do.
        reader
            .stream
            .set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        while let Ok(frame) = reader.try_read_reply() {
            assert_eq!(frame[0], b'>', "only pushes come unasked");
            take_push(&frame, &mut cache, &mut flushes);
        }
        reader
            .stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let k = rng as usize % KEYS;
        let began = Instant::now();
        if let Some(&v) = cache.get(&k) {
            cached_reads.push((began, k, v));
            continue;
        }
        reader.send(&[b"GET", keys[k].as_bytes()]);
        let reply = loop {
            let frame = reader.read_reply();
            if frame[0] == b'>' {
                take_push(&frame, &mut cache, &mut flushes);
                continue;
            }
            break frame;
        };
        fetched += 1;
        let reply = String::from_utf8_lossy(&reply).into_owned();
        if reply.starts_with('$') || reply.starts_with('_') {
            let value = reply
                .lines()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            cache.insert(k, value);
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let made = faults.join().unwrap();

    let writes = writes.lock().unwrap();
    let restarts = restarts.lock().unwrap();
    let mut stale = Vec::new();
    for &(began, k, v) in &cached_reads {
        // A restart empties the server: a value written before it is gone.
        let owner = proxy.owner(&keys[k]);
        let emptied = restarts
            .iter()
            .filter(|&&(server, back)| server == owner && back < began)
            .map(|&(_, back)| back)
            .max();
        let newer = writes
            .iter()
            .filter(|&&(acked, key, value)| key == k && value > v && acked + BOUND < began)
            .filter(|&&(acked, ..)| emptied.is_none_or(|back| acked > back))
            .map(|&(_, _, value)| value)
            .max();
        if let Some(newer) = newer {
            stale.push((began - start, k, v, newer));
        }
    }
    println!(
        "{} cached reads, {fetched} fetched, {} writes, {made} faults, {flushes} flushes",
        cached_reads.len(),
        writes.len()
    );
    assert!(
        stale.is_empty(),
        "stale cached reads: {:?}",
        &stale[..stale.len().min(10)]
    );
    assert!(cached_reads.len() > 100, "the cache served reads");
    assert!(made >= 6, "faults made");
    assert!(flushes >= 2, "flushed");
}

/// A key the backend evicts (maxmemory) is told as changed, as Redis tells
/// its own tracking clients.
#[test]
fn an_evicted_key_is_told() {
    let server = Redis::start_with(&["--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru"]);
    let proxy = crate::common::proxy_over(&[&server], "");
    let mut reader = proxy.client();
    reader.hello3();
    assert_eq!(text(reader.cmd(&["CLIENT", "TRACKING", "on"])), "+OK\r\n");
    let mut writer = server.client();
    assert_eq!(text(writer.cmd(&["SET", "session:old", "x"])), "+OK\r\n");
    assert_eq!(text(reader.cmd(&["GET", "session:old"])), "$1\r\nx\r\n");
    let big = "v".repeat(100_000);
    let push = ">2\r\n$10\r\ninvalidate\r\n*1\r\n$11\r\nsession:old\r\n";
    reader
        .stream
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut told = false;
    for i in 0..400 {
        writer.cmd(&["SET", &format!("filler:{i}"), &big]);
        if let Ok(frame) = reader.try_read_reply() {
            assert_eq!(text(frame), push);
            told = true;
            break;
        }
    }
    assert!(told, "no invalidation while the key was evicted");
    assert_eq!(text(writer.cmd(&["EXISTS", "session:old"])), ":0\r\n");
}

/// CLIENT TRACKING ON with a backend that does not answer: the proxy waits
/// for its link within the request timeout, then says OK (reads there are
/// invalidated behind their replies until the link is up), not a timeout.
#[test]
fn tracking_on_answers_with_a_backend_stopped() {
    let servers = [Redis::start(), Redis::start()];
    let proxy = crate::common::proxy_over(&servers, "");
    servers[1].signal("STOP");
    let mut reader = proxy.client();
    reader.hello3();
    let reply = text(reader.cmd(&["CLIENT", "TRACKING", "on"]));
    servers[1].signal("CONT");
    assert_eq!(reply, "+OK\r\n");
    let key = proxy.key_on(0, "session:");
    assert_eq!(text(reader.cmd(&["GET", &key])), "_\r\n");
}

/// A backend given by host name whose name moves to another server (a
/// managed service's failover, or its endpoint moved): the tracking link
/// follows the name as the pool's connections do (`dns_refresh_s`), and
/// since it cannot vouch for what clients cached from the old server,
/// every tracking client flushes. Before, the link stayed on the old
/// server and nothing was flushed, while reads went to the new one: a
/// client kept the old server's value of a key.
#[test]
fn a_host_name_that_moves_flushes() {
    let port = crate::common::free_port();
    let a = Redis::start_at("127.0.0.1", port, &[]);
    let b = Redis::start_at("127.0.0.2", port, &[]);
    a.client().cmd(&["SET", "k", "a"]);
    b.client().cmd(&["SET", "k", "b"]);
    let hosts = crate::common::HostsFile::naming("cache.redis.test", "127.0.0.1");
    let proxy = crate::common::Proxy::start(&hosts.proxy_config(port, "dns_refresh_s = 1\n"));
    let mut reader = proxy.client();
    reader.hello3();
    assert_eq!(text(reader.cmd(&["CLIENT", "TRACKING", "on"])), "+OK\r\n");
    assert_eq!(text(reader.cmd(&["GET", "k"])), "$1\r\na\r\n");
    until_remembered(&mut reader);
    hosts.point("127.0.0.2");
    assert_eq!(
        text(reader.read_reply()),
        ">2\r\n$10\r\ninvalidate\r\n_\r\n",
        "a flush when the name moves"
    );
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(50),
        "reads to follow the name",
        || {
            let value = text(reader.cmd(&["GET", "k"]));
            if value.starts_with('>') {
                reader.read_reply();
                return false;
            }
            value == "$1\r\nb\r\n"
        },
    );
}
