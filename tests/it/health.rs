//! Health probes and fast failure, against real redis-servers: a backend
//! that comes back is up again with no client traffic (so /readyz recovers),
//! a dead idle backend is noticed without a user's request, and once a
//! backend is down its keys get their error at once instead of waiting on a
//! connect attempt.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use session_proxy::metrics::{BackendMetrics, Count};

use crate::common::{
    blocks_one, blpop_gets_what_is_pushed_on, blpop_on_a_thread, config_for, free_port,
    until_blocks_one, wait_until, HostsFile, Proxy, RawClient, Redis, READY_LIMIT,
};

const FAST: &str = "[pool]\nprobe_interval_ms = 100\nconnect_timeout_ms = 300\nrequest_timeout_ms = 300\nbackoff_min_ms = 50\nbackoff_max_ms = 200";

#[test]
fn a_returning_backend_is_up_again_without_client_traffic() {
    let port = free_port();
    let a = Redis::start_on(port, &[]);
    let b = Redis::start();
    let proxy = Proxy::start(&config_for(
        &[("a", a.address(), 1.0), ("b", b.address(), 1.0)],
        FAST,
    ));
    assert_eq!(proxy.shared.ready(), Ok(()));
    // Stopped while idle: noticed with no client request at all.
    drop(a);
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "a dead idle backend was not noticed",
        || proxy.shared.ready().is_err(),
    );
    assert_eq!(proxy.shared.ready(), Err("backends down: a".to_string()));
    // Back on the same port: probes alone bring it up, and readiness with it.
    let _a = Redis::start_on(port, &[]);
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "the returning backend stayed down without traffic",
        || proxy.shared.ready().is_ok(),
    );
}

#[test]
fn requests_for_a_down_backend_fail_at_once() {
    let (a, b) = (Redis::start(), Redis::start());
    let proxy = Proxy::start(&config_for(
        &[("a", a.address(), 1.0), ("b", b.address(), 1.0)],
        FAST,
    ));
    let on_a = proxy.key_on(0, "session:");
    let on_b = proxy.key_on(1, "session:");
    let mut client = proxy.client();
    assert_eq!(client.text(&["SET", &on_a, "v"]), "+OK\r\n");
    // Frozen, not gone: connects hang rather than fail.
    a.signal("STOP");
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "the frozen backend was never marked down",
        || !proxy.shared.topology().backends[0].is_up(),
    );
    // Now every request for its keys gets the fast error, never a timeout
    // or a connect error (which would mean it waited on the backend).
    for _ in 0..20 {
        assert_eq!(
            client.text(&["GET", &on_a]),
            "-ERR backend 'a' is unavailable: down; probed every 100 ms\r\n"
        );
        assert_eq!(client.text(&["SET", &on_b, "w"]), "+OK\r\n");
    }
    a.signal("CONT");
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "the thawed backend never came back",
        || client.text(&["GET", &on_a]) == "$1\r\nv\r\n",
    );
}

/// A slow but steady backend: answers the proxy's handshake at once, then
/// every command with `+OK`, one reply every `every`, on every connection it
/// accepts; counts the connections (not the one that asks INFO, answered
/// at once with a version).
fn slow_backend(every: Duration) -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let counter = counter.clone();
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buf = [0u8; 64 * 1024];
                let mut handshake = true;
                loop {
                    let n = match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if handshake {
                        if buf[..n].windows(4).any(|w| w == b"INFO") {
                            let info = "redis_version:7.0.0\r\n";
                            let reply = format!("${}\r\n{info}\r\n", info.len());
                            let _ = stream.write_all(reply.as_bytes());
                            return;
                        }
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    // One reply per command: commands start with '*'.
                    let commands = buf[..n].iter().filter(|&&b| b == b'*').count();
                    for _ in 0..commands {
                        if !handshake {
                            std::thread::sleep(every);
                        }
                        if stream.write_all(b"+OK\r\n").is_err() {
                            return;
                        }
                    }
                    handshake = false;
                }
            });
        }
    });
    (address, accepted)
}

#[test]
fn a_busy_backend_is_not_taken_for_dead() {
    // 60 pipelined commands answered one every 20 ms: the last waits 1.2 s
    // behind the others, longer than the 300 ms request timeout, but bytes
    // keep coming, so the connection is alive and must stay. (The client
    // gets its own timeout; that is right.)
    let (address, accepted) = slow_backend(Duration::from_millis(20));
    let proxy = Proxy::start(&config_for(
        &[("slow", address, 1.0)],
        "[pool]\nrequest_timeout_ms = 300\nprobe_interval_ms = 60000",
    ));
    let mut client = proxy.client();
    let packet = crate::common::RawClient::encode(&[b"SET", b"session:k", b"v"]).repeat(60);
    client.send_raw(&packet);
    for _ in 0..60 {
        // The 60 travel as one batch, answered together after 1.2 s: the
        // client has had its own timeout by then. Never a lost connection.
        let reply = client.read_reply();
        assert!(
            reply == b"+OK\r\n"
                || reply.starts_with(b"-ERR backend 'slow' did not answer within 300 ms"),
            "{}",
            String::from_utf8_lossy(&reply)
        );
    }
    // Once the backend has answered all 60, a new request goes over the same
    // connection.
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "never answered again",
        || client.text(&["SET", "session:k", "w"]) == "+OK\r\n",
    );
    // One connection per worker thread, none re-made.
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        proxy.shared.worker_clients.len(),
        "the proxy re-made its connection to a backend that kept answering"
    );
}

/// A backend password from the environment (`password_env`, a secret an
/// orchestrator injects), read at each connect: the proxy logs in with it;
/// a variable that is not set refuses the config at load, naming it.
#[test]
fn a_backend_password_comes_from_the_environment() {
    let redis = Redis::start_with(&["--requirepass", "from-env"]);
    let body = format!(
        "[[backends]]\nid = \"a\"\naddress = \"{}\"\npassword_env = \"SESSION_PROXY_BACKEND_PASSWORD\"\n",
        redis.address()
    );
    let running = crate::common::Running::start_with_env(
        &body,
        &[("SESSION_PROXY_BACKEND_PASSWORD", "from-env")],
    );
    let mut client = running.client();
    assert_eq!(client.text(&["SET", "session:e", "1"]), "+OK\r\n");
    assert_eq!(client.text(&["GET", "session:e"]), "$1\r\n1\r\n");
    let unset = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[[backends]]\nid = \"a\"\naddress = \"{}\"\npassword_env = \"SESSION_PROXY_SURELY_UNSET_PASSWORD\"\n",
        redis.address()
    );
    let error = match session_proxy::config::Config::parse(&unset) {
        Err(error) => error.to_string(),
        Ok(_) => panic!("a config naming an unset variable was accepted"),
    };
    assert!(
        error.contains("password_env") && error.contains("SESSION_PROXY_SURELY_UNSET_PASSWORD"),
        "{error}"
    );
    let both = unset.replace("password_env", "password = \"x\"\npassword_env");
    assert!(session_proxy::config::Config::parse(&both).is_err());
}

/// A backend password that rotates (a token a sidecar writes to a file):
/// `password_file` is read again at every connect, so once the server takes
/// only the new password and the connections are replaced, the proxy
/// reconnects with it, with no reload. The old connections stay logged in
/// until then, as Redis keeps them.
#[test]
fn a_rotated_password_file_is_read_at_the_next_connect() {
    let redis = Redis::start_with(&["--requirepass", "first"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backend.password");
    std::fs::write(&file, "first\n").unwrap();
    let proxy = Proxy::start(&format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n{FAST}\n\
         [[backends]]\nid = \"a\"\naddress = \"{}\"\npassword_file = \"{}\"\n",
        redis.address(),
        file.display()
    ));
    let mut client = proxy.client();
    assert_eq!(client.text(&["SET", "session:r", "1"]), "+OK\r\n");
    // Rotated: the server takes only the new password; the file says it.
    let mut admin = redis.client();
    admin.text(&["AUTH", "first"]);
    assert_eq!(
        admin.text(&["ACL", "SETUSER", "default", "resetpass", ">second"]),
        "+OK\r\n"
    );
    std::fs::write(&file, "second\n").unwrap();
    // Every connection of the proxy's is cut: it must log in again.
    admin.text(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]);
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "the proxy never logged in with the rotated password",
        || client.text(&["GET", "session:r"]) == "$1\r\n1\r\n",
    );
    // A file that cannot be read refuses the config at load, not later.
    let missing = dir.path().join("missing");
    let text = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[[backends]]\nid = \"a\"\naddress = \"{}\"\npassword_file = \"{}\"\n",
        redis.address(),
        missing.display()
    );
    let error = match session_proxy::config::Config::parse(&text) {
        Err(error) => error.to_string(),
        Ok(config) => config.backends[0]
            .target("backends[0]")
            .unwrap_err()
            .to_string(),
    };
    assert!(error.contains("password_file"), "{error}");
}

/// One of the in-process proxy's backends' metrics, read with `count`
/// (0 for a backend it does not have).
fn count_of(proxy: &Proxy, backend: &str, count: fn(&BackendMetrics) -> &Count) -> f64 {
    let topology = proxy.shared.topology();
    let found = topology.backends.iter().find(|b| &*b.id == backend);
    found.map_or(0, |b| count(b.metrics()).get()) as f64
}

/// Connections the in-process proxy made to `backend` so far
/// (`session_proxy_backend_connects_total`).
fn connects_of(proxy: &Proxy, backend: &str) -> f64 {
    count_of(proxy, backend, |m| &m.connects)
}

/// A backend's held requests so far: for a fixed endpoint, the commands it
/// refused (-READONLY, -LOADING) that the proxy holds to send again.
fn refused_replies(proxy: &Proxy, backend: &str) -> f64 {
    count_of(proxy, backend, |m| &m.held_requests)
}

/// `[pool] max_connection_age_s`: under a steady load, shared connections
/// are replaced as they age (the connects counter climbs) and no request
/// fails for it: an aged connection takes nothing new, its replies come in,
/// and the requests meanwhile wait for the new one.
#[test]
fn connections_aged_out_under_load_fail_no_request() {
    let redis = Redis::start();
    let proxy = Proxy::start(&format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[pool]\nmax_connection_age_s = 1\n\
         [[backends]]\nid = \"aging\"\naddress = \"{}\"\n",
        redis.address()
    ));
    let connects = || connects_of(&proxy, "aging");
    let mut client = proxy.client();
    assert_eq!(client.text(&["SET", "session:age", "0"]), "+OK\r\n");
    let before = connects();
    let started = std::time::Instant::now();
    let mut n = 0u64;
    // Bounded: 3.5 s or 200,000 requests.
    while started.elapsed() < Duration::from_millis(3500) && n < 200_000 {
        n += 1;
        let value = n.to_string();
        assert_eq!(client.text(&["SET", "session:age", &value]), "+OK\r\n");
        let read = client.text(&["GET", "session:age"]);
        assert_eq!(
            read,
            format!("${}\r\n{value}\r\n", value.len()),
            "request {n}"
        );
    }
    let after = connects();
    println!("{n} request pairs; connects {before} -> {after}");
    assert!(
        after >= before + 2.0,
        "connections were not replaced: {before} -> {after}"
    );
}

/// An aged connection's replacement is made before it is let go: with a
/// server that takes 600 ms to answer a new connection and a request
/// timeout of 300 ms, requests would time out each time a connection was
/// replaced if they waited for the new one; none does.
#[test]
fn an_aged_connection_is_replaced_before_it_is_let_go() {
    let redis = Redis::start();
    let relay = crate::relay::Relay::start(redis.address());
    relay.slow_accept(600);
    let proxy = Proxy::start(&format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[pool]\nmax_connection_age_s = 1\n\
         request_timeout_ms = 300\nconnect_timeout_ms = 3000\n\
         [[backends]]\nid = \"slow-to-open\"\naddress = \"{}\"\n",
        relay.address()
    ));
    let connects = || connects_of(&proxy, "slow-to-open");
    let mut client = proxy.client();
    // The first connection is slow to come: wait for it.
    wait_until(
        READY_LIMIT,
        Duration::from_millis(50),
        "the first connection",
        || client.text(&["SET", "session:slow", "0"]) == "+OK\r\n",
    );
    let before = connects();
    let started = std::time::Instant::now();
    let mut n = 0u64;
    // Bounded: 3.5 s or 100,000 requests.
    while started.elapsed() < Duration::from_millis(3500) && n < 100_000 {
        n += 1;
        let value = n.to_string();
        assert_eq!(
            client.text(&["SET", "session:slow", &value]),
            "+OK\r\n",
            "request {n}"
        );
    }
    let after = connects();
    println!("{n} requests; connects {before} -> {after}");
    assert!(
        after >= before + 2.0,
        "connections were not replaced: {before} -> {after}"
    );
}

/// A managed service's failover (ElastiCache, Azure): the service promotes
/// the replica and moves the endpoint's name to it, and the old master,
/// still up, answers writes with -READONLY. The proxy, told READONLY,
/// reconnects to where the endpoint leads now, so writes work again
/// instead of failing until something breaks the connection. The name's
/// move is played by a relay sending new connections to the new master.
#[test]
fn a_moved_endpoint_is_followed_after_readonly() {
    let a = Redis::start();
    let b = Redis::start_with(&["--replicaof", "127.0.0.1", &a.port.to_string()]);
    let relay = crate::relay::Relay::start(a.address());
    let proxy = Proxy::start(&format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n{FAST}\n\
         [[backends]]\nid = \"moving\"\naddress = \"{}\"\n",
        relay.address()
    ));
    let mut client = proxy.client();
    assert_eq!(client.text(&["SET", "session:m", "v1"]), "+OK\r\n");
    let mut replica = b.client();
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "the replica in sync",
        || replica.text(&["GET", "session:m"]) == "$2\r\nv1\r\n",
    );
    // The failover: b is the master, a its replica; the name moves to b.
    fail_over(&a, &b);
    relay.retarget(b.address());
    let mut refused = 0;
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "writes to the new master",
        || {
            let reply = client.text(&["SET", "session:m", "v2"]);
            if reply.starts_with("-READONLY") {
                refused += 1;
            }
            reply == "+OK\r\n"
        },
    );
    println!("{refused} writes refused with READONLY before the proxy followed");
    assert_eq!(replica.text(&["GET", "session:m"]), "$2\r\nv2\r\n");
    assert_eq!(client.text(&["GET", "session:m"]), "$2\r\nv2\r\n");
}

/// Redis's own FAILOVER from `master` to its replica `to`, as a managed
/// service makes it: done once `to` is master and `master` its replica.
/// (FAILOVER refuses until the master counts its replica online.)
fn fail_over(master: &Redis, to: &Redis) {
    let port = to.port.to_string();
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "FAILOVER taken",
        || {
            master
                .client()
                .text(&["FAILOVER", "TO", "127.0.0.1", &port])
                == "+OK\r\n"
        },
    );
    let role = |redis: &Redis| redis.client().text(&["ROLE"]);
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "the failover",
        || role(to).contains("master") && role(master).contains("slave"),
    );
}

/// A transaction sent to a master just demoted by a managed failover is
/// refused at queue time (-READONLY, then EXEC's -EXECABORT): none of it
/// ran, so all of it goes again, as one transaction, once the endpoint
/// leads to the new master; its client gets EXEC's reply from there. Sent
/// again in part, the refused write would run alone, outside MULTI, and
/// the client would be told EXECABORT for a write that ran.
#[test]
fn a_transaction_refused_by_a_demoted_master_runs_whole_on_the_new_one() {
    let a = Redis::start();
    let b = Redis::start_with(&["--replicaof", "127.0.0.1", &a.port.to_string()]);
    let relay = crate::relay::Relay::start(a.address());
    let proxy = Proxy::start(&format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n\
         [pool]\nrequest_timeout_ms = 4000\nconnect_timeout_ms = 300\nbackoff_min_ms = 50\nbackoff_max_ms = 200\n\
         [[backends]]\nid = \"demoted\"\naddress = \"{}\"\n",
        relay.address()
    ));
    let mut client = proxy.client();
    assert_eq!(client.text(&["SET", "session:n", "1"]), "+OK\r\n");
    // The failover, the name still leading to the old master (a replica now).
    fail_over(&a, &b);
    let exec = std::thread::scope(|scope| {
        // The name moves once the proxy holds what the old master refused.
        scope.spawn(|| {
            wait_until(
                READY_LIMIT,
                Duration::from_millis(5),
                "the transaction held",
                || refused_replies(&proxy, "demoted") > 0.0,
            );
            relay.retarget(b.address());
        });
        assert_eq!(client.text(&["MULTI"]), "+OK\r\n");
        assert_eq!(client.text(&["INCR", "session:n"]), "+QUEUED\r\n");
        assert_eq!(client.text(&["SET", "session:m", "v"]), "+QUEUED\r\n");
        client.text(&["EXEC"])
    });
    assert_eq!(exec, "*2\r\n:2\r\n+OK\r\n");
    assert_eq!(
        b.client().text(&["MGET", "session:n", "session:m"]),
        "*2\r\n$1\r\n2\r\n$1\r\nv\r\n"
    );
}

/// Four clients writing sessions through a proxy until stopped: two one
/// command at a time (SETEX, then GET), two pipelining (two SETEX and a
/// GET in one write, which the proxy sends to the backend as one batch).
/// What each key was last acknowledged with, and every error with when its
/// request began.
struct SessionLoad {
    stop: Arc<std::sync::atomic::AtomicBool>,
    writes: Arc<AtomicUsize>,
    writers: Vec<std::thread::JoinHandle<LoadOutcome>>,
}

#[derive(Default)]
struct LoadOutcome {
    acknowledged: Vec<(String, u64)>,
    errors: Vec<(std::time::Instant, String)>,
}

impl SessionLoad {
    fn start(port: u16) -> SessionLoad {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writes = Arc::new(AtomicUsize::new(0));
        let writers = (0..4)
            .map(|w| {
                let (stop, writes) = (stop.clone(), writes.clone());
                std::thread::spawn(move || {
                    let mut client = crate::common::RawClient::connect(port);
                    let keys: Vec<String> = (0..10).map(|i| format!("session:mv{w}:{i}")).collect();
                    let mut acked = vec![0u64; keys.len()];
                    let mut errors = Vec::new();
                    let mut seq = 0u64;
                    let pipelined = w % 2 == 1;
                    while !stop.load(Ordering::Relaxed) {
                        seq += 1;
                        let i = (seq as usize) % keys.len();
                        let began = std::time::Instant::now();
                        let mut written = vec![i];
                        let replies = if pipelined {
                            let j = (i + 1) % keys.len();
                            written.push(j);
                            let value = seq.to_string();
                            for args in [
                                &["SETEX", &keys[i], "600", &value][..],
                                &["SETEX", &keys[j], "600", &value],
                                &["GET", &keys[i]],
                            ] {
                                let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
                                client.send(&args);
                            }
                            (0..3)
                                .map(|_| String::from_utf8_lossy(&client.read_reply()).into_owned())
                                .collect()
                        } else {
                            let set = client.text(&["SETEX", &keys[i], "600", &seq.to_string()]);
                            vec![set, client.text(&["GET", &keys[i]])]
                        };
                        let (read, sets) = replies.split_last().unwrap();
                        for (&key, reply) in written.iter().zip(sets) {
                            if reply == "+OK\r\n" {
                                acked[key] = seq;
                                writes.fetch_add(1, Ordering::Relaxed);
                            } else {
                                errors.push((began, reply.clone()));
                            }
                        }
                        if read.starts_with('-') {
                            errors.push((began, read.clone()));
                        }
                    }
                    LoadOutcome {
                        acknowledged: keys.into_iter().zip(acked).collect(),
                        errors,
                    }
                })
            })
            .collect();
        SessionLoad {
            stop,
            writes,
            writers,
        }
    }

    fn acknowledged(&self) -> usize {
        self.writes.load(Ordering::Relaxed)
    }

    /// Stops the clients; checks against `servers` (each key's latest value
    /// among them: where the writes went before and after a move) that no
    /// acknowledged write is lost, that no client saw a refusal the proxy should have
    /// sent again (-READONLY, -LOADING), and that no request begun after
    /// `calm` failed. Returns the errors seen.
    fn stop_and_check(self, servers: &mut [RawClient], calm: std::time::Instant) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        let outcomes: Vec<LoadOutcome> = self
            .writers
            .into_iter()
            .map(|w| w.join().unwrap())
            .collect();
        let mut lost = Vec::new();
        let mut errors = Vec::new();
        let mut late = Vec::new();
        for outcome in &outcomes {
            for (key, seq) in &outcome.acknowledged {
                let found: Vec<String> =
                    servers.iter_mut().map(|s| s.text(&["GET", key])).collect();
                let value = found
                    .iter()
                    .filter_map(|got| got.lines().nth(1).and_then(|v| v.parse::<u64>().ok()))
                    .max()
                    .unwrap_or(0);
                if value < *seq {
                    lost.push(format!("{key}: acknowledged {seq}, found {found:?}"));
                }
            }
            for (began, reply) in &outcome.errors {
                errors.push(reply.clone());
                if *began > calm {
                    late.push(reply.clone());
                }
            }
        }
        assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
        assert!(
            !errors
                .iter()
                .any(|e| e.starts_with("-READONLY") || e.starts_with("-LOADING")),
            "clients saw -READONLY or -LOADING: {errors:?}"
        );
        assert!(late.is_empty(), "errors after things settled: {late:?}");
        errors
    }
}

/// Redis's FAILOVER from `old` to `new` (the replica), once `old` counts
/// its replica online; returns when the roles have switched.
fn failover(old: &Redis, new: &Redis) {
    let (ip, port) = (new.ip, new.port.to_string());
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "FAILOVER taken",
        || old.client().text(&["FAILOVER", "TO", ip, &port]) == "+OK\r\n",
    );
    let role = |redis: &Redis| redis.client().text(&["ROLE"]);
    wait_until(
        READY_LIMIT,
        Duration::from_millis(5),
        "the failover",
        || role(new).contains("master") && role(old).contains("slave"),
    );
}

/// A managed failover under a session load: Redis's FAILOVER demotes the
/// master, the endpoint (a relay playing the DNS name) moves to the new
/// one. Writes the old master refused with -READONLY did not run, so the
/// proxy sends them again once its reconnection reaches a master (ROLE),
/// holding them meanwhile: no client sees -READONLY, no acknowledged write
/// is lost, and every write begun two request timeouts after the move
/// succeeds.
#[test]
fn a_managed_failover_under_load_loses_no_write_and_shows_no_readonly() {
    let a = Redis::start();
    let b = Redis::start_with(&["--replicaof", "127.0.0.1", &a.port.to_string()]);
    let relay = crate::relay::Relay::start(a.address());
    // Longer than the write pause of Redis's FAILOVER (up to a second,
    // while the old master waits for its replica's offset).
    let timeout = Duration::from_millis(2000);
    let proxy = Proxy::start(&format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n\
         [pool]\nrequest_timeout_ms = {}\nconnect_timeout_ms = 300\nbackoff_min_ms = 50\nbackoff_max_ms = 200\n\
         [[backends]]\nid = \"managed\"\naddress = \"{}\"\n",
        timeout.as_millis(),
        relay.address()
    ));
    let load = SessionLoad::start(proxy.port);
    let mut replica = b.client();
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "load and sync",
        || load.acknowledged() > 200 && replica.text(&["DBSIZE"]) == ":40\r\n",
    );
    failover(&a, &b);
    relay.retarget(b.address());
    let moved = std::time::Instant::now();
    let before = load.acknowledged();
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "writes after the move",
        || {
            moved.elapsed() > 2 * timeout + Duration::from_millis(500)
                && load.acknowledged() > before + 200
        },
    );
    let errors = load.stop_and_check(&mut [b.client()], moved + 2 * timeout);
    println!("errors: {errors:?}");
}

/// A managed node replaced under a session load: the name (a relay here)
/// moves to a new node that is still loading its data, and the old
/// connections are cut. The new node answers -LOADING until its data is
/// in, which the proxy does not pass on: the commands refused (pipelined
/// ones among them) wait and go again once it serves (PING answers),
/// within a request timeout. Only the cut costs errors (what was in
/// flight, and the backoff after it); no client sees -LOADING, none is
/// failed for the loading, and no acknowledged write is lost.
#[test]
fn a_node_still_loading_its_data_holds_requests_instead_of_refusing_them() {
    let a = Redis::start();
    // About a second and a half of loading: 1,000 keys at 1 ms each.
    let c = Redis::start_with(&[
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--key-load-delay",
        "1000",
        // Clients are answered (-LOADING) every KB loaded, not every 2 MB.
        "--loading-process-events-interval-bytes",
        "1024",
        "--enable-debug-command",
        "local",
    ]);
    let mut admin = c.client();
    assert_eq!(
        admin.text(&["DEBUG", "POPULATE", "1000", "filler"]),
        "+OK\r\n"
    );
    admin.text(&["BGREWRITEAOF"]);
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "the AOF rewrite",
        || {
            let info = admin.text(&["INFO", "persistence"]);
            info.contains("aof_rewrite_in_progress:0") && info.contains("aof_rewrite_scheduled:0")
        },
    );
    let relay = crate::relay::Relay::start(a.address());
    let timeout = Duration::from_millis(4000);
    let proxy = Proxy::start(&format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n\
         [pool]\nrequest_timeout_ms = {}\nconnect_timeout_ms = 300\nbackoff_min_ms = 50\nbackoff_max_ms = 200\n\
         [[backends]]\nid = \"replaced\"\naddress = \"{}\"\n",
        timeout.as_millis(),
        relay.address()
    ));
    let load = SessionLoad::start(proxy.port);
    wait_until(READY_LIMIT, Duration::from_millis(20), "the load", || {
        load.acknowledged() > 200
    });
    let loading = || {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(c.address()) else {
            return false;
        };
        let mut reply = [0u8; 8];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read(&mut reply).is_ok()
            && reply.starts_with(b"-LOADING")
    };
    let loaded = std::thread::scope(|scope| {
        // `restart` returns once the node answers PING again: loaded.
        let restart = scope.spawn(|| {
            c.restart();
            std::time::Instant::now()
        });
        wait_until(
            READY_LIMIT,
            Duration::from_millis(5),
            "the node loading",
            loading,
        );
        relay.retarget(c.address());
        relay.cut();
        let cut = std::time::Instant::now();
        let loaded = restart.join().unwrap();
        println!("loaded {:?} after the cut", loaded - cut);
        loaded
    });
    let before = load.acknowledged();
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "writes after loading",
        || load.acknowledged() > before + 200,
    );
    // Writes before the cut are on a, those after on c.
    let errors = load.stop_and_check(&mut [a.client(), c.client()], loaded + timeout);
    // What failed, failed at the cut (the connection lost, and the backoff
    // after it): nothing for the loading itself.
    let for_loading: Vec<_> = errors.iter().filter(|e| e.contains("loading")).collect();
    assert!(
        for_loading.is_empty(),
        "failed for the loading: {for_loading:?}"
    );
    // The proxy did meet the node loading, and held what it refused.
    assert!(
        refused_replies(&proxy, "replaced") > 0.0,
        "no -LOADING reached the proxy: the test saw no loading"
    );
    println!(
        "{} errors, from the cut: {:?}",
        errors.len(),
        errors.first()
    );
}

/// A primary on 127.0.0.1 and its replica on 127.0.0.2, one port (the
/// two servers a managed service's primary endpoint leads to in turn).
fn primary_and_replica() -> (u16, Redis, Redis) {
    let port = free_port();
    let primary = Redis::start_at("127.0.0.1", port, &[]);
    let replica = Redis::start_at(
        "127.0.0.2",
        port,
        &[
            "--replicaof",
            "127.0.0.1",
            &port.to_string(),
            // Its connection to the primary comes from 127.0.0.1: FAILOVER
            // TO names the replica by the address it announces.
            "--replica-announce-ip",
            "127.0.0.2",
        ],
    );
    (port, primary, replica)
}

/// The same with a host name (an ElastiCache primary endpoint, an Azure
/// host name): two servers on 127.0.0.1 and 127.0.0.2, one port, the name
/// pinned by `[pool] hosts_file` and moved by the test after FAILOVER.
/// Then, without any fault, the name moves again to a server of its own:
/// the periodic lookup (`dns_refresh_s`) follows it, and the status shows
/// the address each time.
#[test]
fn a_host_name_is_followed_through_a_failover_and_when_it_moves() {
    let (port, a, b) = primary_and_replica();
    let hosts = HostsFile::naming("sessions.redis.test", "127.0.0.1");
    let timeout = Duration::from_millis(2000);
    let proxy = Proxy::start(&hosts.proxy_config(
        port,
        &format!(
            "request_timeout_ms = {}\nconnect_timeout_ms = 300\nbackoff_min_ms = 50\nbackoff_max_ms = 200\n\
             dns_refresh_s = 1\n",
            timeout.as_millis()
        ),
    ));
    let resolved = || {
        let report = session_proxy::report::BackendReport::all(&proxy.shared.topology());
        (report[0].resolved.clone(), report[0].address_changes)
    };
    let load = SessionLoad::start(proxy.port);
    let mut replica = b.client();
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "load and sync",
        || load.acknowledged() > 200 && replica.text(&["DBSIZE"]) == ":40\r\n",
    );
    assert_eq!(resolved(), (Some(format!("127.0.0.1:{port}")), 0));
    failover(&a, &b);
    hosts.point("127.0.0.2");
    let moved = std::time::Instant::now();
    let before = load.acknowledged();
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "writes after the move",
        || {
            moved.elapsed() > 2 * timeout + Duration::from_millis(500)
                && load.acknowledged() > before + 200
        },
    );
    let errors = load.stop_and_check(&mut [b.client()], moved + 2 * timeout);
    println!("failover: errors {errors:?}");
    assert_eq!(resolved(), (Some(format!("127.0.0.2:{port}")), 1));

    // No fault now: the name moves to a server of its own on 127.0.0.3.
    let c = Redis::start_at("127.0.0.3", port, &[]);
    let mut client = proxy.client();
    assert_eq!(client.text(&["SET", "session:where", "b"]), "+OK\r\n");
    hosts.point("127.0.0.3");
    wait_until(
        READY_LIMIT,
        Duration::from_millis(50),
        "the lookup to follow the name",
        || resolved().0 == Some(format!("127.0.0.3:{port}")),
    );
    // Each connection looks the name up on its own timer: this client's
    // may follow a little after the first one did.
    let mut c_client = c.client();
    wait_until(
        READY_LIMIT,
        Duration::from_millis(50),
        "this client's connection to follow the name",
        || {
            client.text(&["SET", "session:probe", "c"]) == "+OK\r\n"
                && c_client.text(&["GET", "session:probe"]) == "$1\r\nc\r\n"
        },
    );
    assert_eq!(client.text(&["SET", "session:where", "c"]), "+OK\r\n");
    assert_eq!(c.client().text(&["GET", "session:where"]), "$1\r\nc\r\n");
    assert_eq!(b.client().text(&["GET", "session:where"]), "$1\r\nb\r\n");
    assert_eq!(resolved().1, 2);
    // (`session_proxy_backend_address_changes_total`, as the status says.)
    assert_eq!(count_of(&proxy, "named", |m| &m.address_changes), 2.0);
}

/// A BLPOP (no timeout) through the proxy blocks on a managed service's
/// primary, reached by host name, which freezes; its replica is promoted
/// and the name moves to it, as the service does at a failover. The
/// frozen server can neither answer `-UNBLOCKED` nor close the
/// connection: the leased connection looks the name up as a shared one
/// does (`dns_refresh_s`), and a request timeout after it led elsewhere
/// gives the silent server up and sends the command again where the name
/// leads, where the element pushed reaches the client. Before, the client
/// stayed blocked on the frozen server for ever.
#[test]
fn a_blocking_command_on_a_primary_gone_silent_follows_its_host_name() {
    let (port, a, b) = primary_and_replica();
    let hosts = HostsFile::naming("queues.redis.test", "127.0.0.1");
    let proxy = Proxy::start(&hosts.proxy_config(
        port,
        "request_timeout_ms = 1000\nconnect_timeout_ms = 300\nbackoff_min_ms = 50\nbackoff_max_ms = 200\n\
         dns_refresh_s = 1\n",
    ));
    let blocked = blpop_on_a_thread(proxy.port, "queue", "0");
    until_blocks_one(&a, "BLPOP blocked on the primary");
    a.signal("STOP");
    assert_eq!(b.client().text(&["REPLICAOF", "NO", "ONE"]), "+OK\r\n");
    hosts.point("127.0.0.2");
    blpop_gets_what_is_pushed_on(blocked, &b, "queue");
    a.signal("CONT");
}

/// A blocking command sent in the moment a managed failover has demoted
/// the primary and not yet moved its name: the old primary, a replica now,
/// refuses it (-READONLY: it did not run), and the proxy sends it again,
/// every 20 ms within a request timeout, until the name leads to the new
/// primary, where the element pushed reaches the client. Before, the
/// client got the -READONLY (the nemesis's queue consumers met it).
#[test]
fn a_blocking_command_refused_by_a_demoted_primary_goes_where_its_name_moves() {
    let (port, a, b) = primary_and_replica();
    let hosts = HostsFile::naming("queues.redis.test", "127.0.0.1");
    let proxy = Proxy::start(&hosts.proxy_config(port, "request_timeout_ms = 5000\n"));
    wait_until(READY_LIMIT, Duration::from_millis(20), "the sync", || {
        b.client()
            .text(&["INFO", "replication"])
            .contains("master_link_status:up")
    });
    failover(&a, &b);
    let blocked = blpop_on_a_thread(proxy.port, "queue", "0");
    let refused = || {
        let stats = a.client().text(&["INFO", "commandstats"]);
        stats
            .lines()
            .find(|line| line.starts_with("cmdstat_blpop:"))
            .is_some_and(|line| !line.contains("rejected_calls=0,"))
    };
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "the demoted primary to refuse the BLPOP",
        refused,
    );
    hosts.point("127.0.0.2");
    blpop_gets_what_is_pushed_on(blocked, &b, "queue");
}

/// CLIENT UNBLOCK of a client whose BLPOP waits on a server reached by a
/// host name that has moved since (the command not given up there yet:
/// the request timeout is long) asks the server the command waits on, at
/// the address its connection reached, not where the name leads now: that
/// server unblocks it (the client gets a nil, as from Redis), and the new
/// one sees no CLIENT UNBLOCK. Before, it was asked where the name led, as
/// the system's resolver has it (the hosts file unread).
#[test]
fn client_unblock_after_a_host_name_moved_asks_the_server_the_command_waits_on() {
    let port = free_port();
    let a = Redis::start_at("127.0.0.1", port, &[]);
    let b = Redis::start_at("127.0.0.2", port, &[]);
    let hosts = HostsFile::naming("queues.redis.test", "127.0.0.1");
    let proxy =
        Proxy::start(&hosts.proxy_config(port, "request_timeout_ms = 30000\ndns_refresh_s = 1\n"));
    let mut blocked = proxy.client();
    let id = blocked.text(&["CLIENT", "ID"]);
    let id = id.trim_start_matches(':').trim_end().to_string();
    blocked.send(&[b"BLPOP", b"queue", b"0"]);
    until_blocks_one(&a, "BLPOP blocked");
    hosts.point("127.0.0.2");
    let resolved = || {
        session_proxy::report::BackendReport::all(&proxy.shared.topology())[0]
            .resolved
            .clone()
    };
    wait_until(
        READY_LIMIT,
        Duration::from_millis(50),
        "the proxy to follow the name",
        || resolved() == Some(format!("127.0.0.2:{port}")),
    );
    assert!(blocks_one(&a), "the BLPOP left the old server already");
    assert_eq!(proxy.client().text(&["CLIENT", "UNBLOCK", &id]), ":1\r\n");
    assert_eq!(blocked.read_reply(), b"*-1\r\n");
    let unblocks = |redis: &Redis| {
        redis
            .client()
            .text(&["INFO", "commandstats"])
            .contains("cmdstat_client|unblock:calls=1,")
    };
    assert!(unblocks(&a));
    assert!(!unblocks(&b));
}

/// A blocking command left behind where its backend no longer leads (here
/// a host name moved, its old server up and still blocking it) goes again
/// where the name leads, and that is not the backend failing: before, the
/// left-behind session counted as one of the backend's consecutive
/// failures, so a few consumers left behind at once (here one, with
/// `health_failures = 1`) marked the whole backend down, and every key
/// on it got `backend is unavailable` until it was seen up again.
#[test]
fn a_blocking_command_left_behind_is_not_the_backend_failing() {
    let port = free_port();
    let a = Redis::start_at("127.0.0.1", port, &[]);
    let b = Redis::start_at("127.0.0.2", port, &[]);
    let hosts = HostsFile::naming("consumers.redis.test", "127.0.0.1");
    let pool = "request_timeout_ms = 500\ndns_refresh_s = 1\nhealth_failures = 1\nhealth_successes = 1000\n";
    let proxy = Proxy::start(&hosts.proxy_config(port, pool));
    let mut consumer = proxy.client();
    consumer.send(&[b"BLPOP", b"queue", b"0"]);
    until_blocks_one(&a, "BLPOP blocked");
    hosts.point("127.0.0.2");
    until_blocks_one(&b, "BLPOP blocked on b");
    let up = session_proxy::report::BackendReport::all(&proxy.shared.topology())[0].up;
    assert!(up, "the backend was marked down");
    assert_eq!(proxy.client().text(&["SET", "k", "v"]), "+OK\r\n");
    assert_eq!(b.client().text(&["RPUSH", "queue", "job"]), ":1\r\n");
    assert_eq!(consumer.read_reply(), b"*2\r\n$5\r\nqueue\r\n$3\r\njob\r\n");
}

/// A WATCH through the proxy holds a leased connection to the server a
/// host name leads to; the name moves to another server. The leased
/// connection looks the name up as a shared one does and ends its lease,
/// so the EXEC is aborted (nil, as for a watched key that changed) and the
/// client's retry writes where the name leads now. Before, the EXEC ran
/// on the old server, which the site no longer reads from: the write was
/// as good as lost.
#[test]
fn a_watch_held_across_a_host_name_move_aborts_its_exec() {
    let port = free_port();
    let a = Redis::start_at("127.0.0.1", port, &[]);
    let b = Redis::start_at("127.0.0.2", port, &[]);
    let hosts = HostsFile::naming("sessions.redis.test", "127.0.0.1");
    let proxy = Proxy::start(&hosts.proxy_config(port, "dns_refresh_s = 1\n"));
    let mut client = proxy.client();
    let watching = |redis: &Redis| {
        redis
            .client()
            .text(&["CLIENT", "LIST"])
            .contains("cmd=watch")
    };
    assert_eq!(client.text(&["WATCH", "session:k"]), "+OK\r\n");
    assert!(watching(&a));
    hosts.point("127.0.0.2");
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "the leased connection to leave the old server",
        || !watching(&a),
    );
    let transaction = |client: &mut RawClient| {
        assert_eq!(client.text(&["MULTI"]), "+OK\r\n");
        assert_eq!(client.text(&["SET", "session:k", "v"]), "+QUEUED\r\n");
        client.text(&["EXEC"])
    };
    assert_eq!(transaction(&mut client), "*-1\r\n");
    assert_eq!(client.text(&["WATCH", "session:k"]), "+OK\r\n");
    assert_eq!(transaction(&mut client), "*1\r\n+OK\r\n");
    assert_eq!(b.client().text(&["GET", "session:k"]), "$1\r\nv\r\n");
    assert_eq!(a.client().text(&["EXISTS", "session:k"]), ":0\r\n");
}

/// ElastiCache/MemoryDB IAM authentication: tokens as the AWS SDK makes
/// them (botocore's RequestSigner, the way AWS's documentation generates
/// them: tests/python/aws_iam_token.py) for the same credentials at the same
/// frozen time, byte for byte; and a proxy with `aws_iam` and credentials
/// in its environment logs in as the IAM user (Redis stands for the
/// service: the user takes any password there, so what is checked is that
/// the proxy makes a token and AUTHs as that user).
#[cfg(feature = "aws-iam")]
#[test]
fn aws_iam_tokens_are_the_sdks_and_the_proxy_logs_in_with_one() {
    use session_proxy::aws_iam::{token, AwsIam, IamService};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("target/venv-redis8/bin/python");
    let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    for (cluster, region, serverless, at, session) in [
        (
            "my-cluster",
            "us-east-1",
            false,
            1_700_000_000u64,
            Some("SESSION/TOKEN+x"),
        ),
        ("sessions-cache", "eu-west-1", true, 1_764_000_123, None),
        (
            "replication-group-7",
            "ap-southeast-2",
            false,
            1_800_000_000,
            None,
        ),
    ] {
        let mut args = vec![
            cluster.to_string(),
            "iam-user".into(),
            region.into(),
            if serverless { "1" } else { "0" }.into(),
            at.to_string(),
            "AKIDEXAMPLE".into(),
            secret.into(),
        ];
        args.extend(session.map(String::from));
        let output = std::process::Command::new(&python)
            .arg(root.join("tests/python/aws_iam_token.py"))
            .args(&args)
            .output()
            .expect("target/venv-redis8 (scripts/setup-python.sh)");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let sdk = String::from_utf8_lossy(&output.stdout).trim().to_string();
        let iam = AwsIam {
            region: region.into(),
            cluster_id: cluster.into(),
            user: "iam-user".into(),
            service: IamService::Elasticache,
            serverless,
        };
        let credentials = aws_credential_types::Credentials::new(
            "AKIDEXAMPLE",
            secret,
            session.map(String::from),
            None,
            "test",
        );
        let at = std::time::UNIX_EPOCH + Duration::from_secs(at);
        assert_eq!(token(&iam, credentials, at).unwrap(), sdk, "{cluster}");
    }

    logs_in_as_the_iam_user(
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", secret),
            // Nothing beyond loopback: no instance metadata.
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
        || (),
    );
}

/// IAM credentials from a container's credentials endpoint (ECS, EKS Pod
/// Identity: `AWS_CONTAINER_CREDENTIALS_FULL_URI`), asked over HTTP by the
/// client the proxy gives aws-config: with nothing else in its environment,
/// the proxy asks the endpoint and logs in as the IAM user. (The endpoint is
/// played by a loopback listener answering what the ECS agent answers.)
#[cfg(feature = "aws-iam")]
#[test]
fn aws_iam_credentials_come_from_a_containers_endpoint() {
    use std::io::{Read, Write};
    let endpoint = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let uri = format!("http://{}/v2/credentials", endpoint.local_addr().unwrap());
    let (asked, requests) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // A few requests at most: the proxy asks once per renewal.
        for stream in endpoint.incoming().take(8) {
            let mut stream = stream.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let body = r#"{"AccessKeyId":"AKIDCONTAINER","SecretAccessKey":"secret","Token":"session-token","Expiration":"2099-01-01T00:00:00Z"}"#;
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes());
            let line = String::from_utf8_lossy(&head)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            if asked.send(line).is_err() {
                break;
            }
        }
    });
    logs_in_as_the_iam_user(
        &[
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI", &uri),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
        || {
            let first = requests
                .recv_timeout(READY_LIMIT)
                .expect("the proxy never asked the container's endpoint");
            assert_eq!(first, "GET /v2/credentials HTTP/1.1");
        },
    );
}

/// A proxy with `aws_iam` and `env` in its environment, in front of a Redis
/// whose `iam-user` takes any password (standing for the service: what is
/// checked is that the proxy makes a token and AUTHs as that user): a
/// session write goes through, `then` runs, and the server names the IAM
/// user among its clients.
#[cfg(feature = "aws-iam")]
fn logs_in_as_the_iam_user(env: &[(&str, &str)], then: impl FnOnce()) {
    let redis = Redis::start();
    let mut admin = redis.client();
    assert_eq!(
        admin.text(&["ACL", "SETUSER", "iam-user", "on", "nopass", "~*", "&*", "+@all"]),
        "+OK\r\n"
    );
    let body = format!(
        "[[backends]]\nid = \"elasticache\"\naddress = \"{}\"\n\
         aws_iam = {{ region = \"us-east-1\", cluster_id = \"sessions\", user = \"iam-user\" }}\n",
        redis.address()
    );
    let running = crate::common::Running::start_with_env(&body, env);
    let mut client = running.client();
    assert_eq!(client.text(&["SET", "session:iam", "1"]), "+OK\r\n");
    then();
    let list = admin.text(&["CLIENT", "LIST"]);
    assert!(
        list.lines().any(|l| l.contains("user=iam-user")),
        "the proxy did not log in as the IAM user: {list}"
    );
}

/// A backend password rotated during a session load, as a managed
/// service's rotation goes: the server takes the new password beside the
/// old (Redis ACL keeps both), the file the proxy reads is changed, the
/// connections are replaced as they age (`max_connection_age_s`), and the
/// old password is removed: no request fails at any step.
#[test]
fn a_password_rotated_under_load_fails_no_request() {
    let redis = Redis::start_with(&["--requirepass", "first"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backend.password");
    std::fs::write(&file, "first\n").unwrap();
    let proxy = Proxy::start(&format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[pool]\nmax_connection_age_s = 1\n\
         [[backends]]\nid = \"rotating\"\naddress = \"{}\"\npassword_file = \"{}\"\n",
        redis.address(),
        file.display()
    ));
    let connects = || connects_of(&proxy, "rotating");
    let load = SessionLoad::start(proxy.port);
    let mut admin = redis.client();
    admin.text(&["AUTH", "first"]);
    wait_until(READY_LIMIT, Duration::from_millis(20), "the load", || {
        load.acknowledged() > 200
    });
    // The new password beside the old one, then the file.
    assert_eq!(
        admin.text(&["ACL", "SETUSER", "default", ">second"]),
        "+OK\r\n"
    );
    std::fs::write(&file, "second\n").unwrap();
    // Every connection replaced since (each made with the new password),
    // then the old password goes.
    let after_file = connects();
    wait_until(
        READY_LIMIT,
        Duration::from_millis(50),
        "connections replaced",
        || connects() >= after_file + 4.0,
    );
    assert_eq!(
        admin.text(&["ACL", "SETUSER", "default", "<first"]),
        "+OK\r\n"
    );
    let before = load.acknowledged();
    wait_until(
        READY_LIMIT,
        Duration::from_millis(50),
        "more connections and writes",
        || connects() >= after_file + 8.0 && load.acknowledged() > before + 200,
    );
    let mut checker = redis.client();
    checker.text(&["AUTH", "second"]);
    let errors = load.stop_and_check(&mut [checker], std::time::Instant::now());
    assert!(
        errors.is_empty(),
        "requests failed during the rotation: {errors:?}"
    );
    // The server takes only the new password now.
    assert!(crate::common::RawClient::connect(redis.port)
        .text(&["AUTH", "first"])
        .starts_with("-WRONGPASS"));
}

/// A write sent into a silent network and given up (its client told it
/// failed, its connection declared dead after the request timeout) does
/// not reach the server when the network comes back: the proxy resets the
/// connection, so its kernel drops what it had not got through. Before, the
/// write landed after the user's next one and undid it (found by the
/// nemesis: a session logged out came back).
#[test]
fn a_write_given_up_in_a_silent_network_does_not_land_later() {
    let redis = Redis::start();
    let relay = crate::relay::Relay::start(redis.address());
    let proxy = Proxy::start(&format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n\
         [pool]\nconnections = 1\nrequest_timeout_ms = 300\nconnect_timeout_ms = 300\n\
         [[backends]]\nid = \"silent\"\naddress = \"{}\"\n",
        relay.address()
    ));
    let mut client = proxy.client();
    assert_eq!(client.text(&["SET", "session:g", "first"]), "+OK\r\n");
    relay.blackhole();
    let given_up = client.text(&["SET", "session:g", "given-up"]);
    assert!(given_up.starts_with("-ERR"), "{given_up}");
    // The proxy gives up on the connection (a moment after its client's
    // own deadline, which counts from when the request came, not from when
    // it was sent) and resets it.
    wait_until(
        READY_LIMIT,
        Duration::from_millis(5),
        "the proxy to reset the connection it gave up on",
        || relay.resets() >= 1,
    );
    // The user's next write, acknowledged elsewhere meanwhile.
    assert_eq!(
        redis.client().text(&["SET", "session:g", "next"]),
        "+OK\r\n"
    );
    relay.pass();
    relay.wait_quiet();
    assert_eq!(redis.client().text(&["GET", "session:g"]), "$4\r\nnext\r\n");
    assert!(relay.dropped() >= 1, "the relay dropped nothing");
    // The backend serves again through the proxy.
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "the backend back",
        || client.text(&["GET", "session:g"]) == "$4\r\nnext\r\n",
    );
}
