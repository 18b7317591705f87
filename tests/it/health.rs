//! Health probes and fast failure, against real redis-servers: a backend
//! that comes back is up again with no client traffic (so /readyz recovers),
//! a dead idle backend is noticed without a user's request, and once a
//! backend is down its keys get their error at once instead of waiting on a
//! connect attempt.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{config_for, free_port, wait_until, Proxy, Redis, READY_LIMIT};

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
