//! Health probes and fast failure, against real redis-servers: a backend
//! that comes back is up again with no client traffic (so /readyz recovers),
//! a dead idle backend is noticed without a user's request, and once a
//! backend is down its keys get their error at once instead of waiting on a
//! connect attempt.

mod common;

use std::time::Duration;

use common::{config_for, free_port, wait_until, Proxy, Redis, READY_LIMIT};

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

/// The ids of a server's clients other than the one asking (the proxy's).
fn other_clients(redis: &Redis) -> Vec<String> {
    redis
        .client()
        .text(&["CLIENT", "LIST"])
        .lines()
        .filter(|l| !l.contains("cmd=client|list"))
        .filter_map(|l| {
            l.split(' ')
                .find_map(|f| f.strip_prefix("id="))
                .map(String::from)
        })
        .collect()
}

#[test]
fn a_busy_backend_is_not_taken_for_dead() {
    // Eight clients pipeline 400 GETs of 100 KB and do not read: 320 MB
    // of replies stream for far longer than the request timeout. Requests
    // queued behind them are old, but replies keep coming: the connection
    // must stay, and the heavy clients get their own timeouts only.
    let a = Redis::start();
    let proxy = Proxy::start(&config_for(
        &[("a", a.address(), 1.0)],
        "[pool]\nrequest_timeout_ms = 150\n[limits]\nclient_output_bytes = 0\nmax_memory_bytes = 0",
    ));
    let value = "x".repeat(100_000);
    assert_eq!(
        proxy.client().text(&["SET", "session:big", &value]),
        "+OK\r\n"
    );
    let before = other_clients(&a);
    assert!(!before.is_empty());
    let port = proxy.port;
    // 400 GETs fit in one of the proxy's reads: each client's are all read
    // before replies pile up and the proxy stops reading it.
    let packet = common::RawClient::encode(&[b"GET", b"session:big"]).repeat(400);
    let heavy: Vec<std::net::TcpStream> = (0..8)
        .map(|_| {
            let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            let mut writer = stream.try_clone().unwrap();
            let packet = packet.clone();
            std::thread::spawn(move || {
                use std::io::Write;
                let _ = writer.write_all(&packet);
            });
            stream
        })
        .collect();
    // Until every heavy request has been answered by the backend (the
    // replies sit in the proxy, unread), as INFO's command count shows.
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "the GETs never ran",
        || {
            let info = a.client().text(&["INFO", "commandstats"]);
            info.lines()
                .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
                .and_then(|v| v.split(',').next()?.parse::<u64>().ok())
                .is_some_and(|calls| calls >= 8 * 400)
        },
    );
    drop(heavy);
    // The connections the proxy had are the ones it still has.
    let after = other_clients(&a);
    for id in &before {
        assert!(
            after.contains(id),
            "the proxy re-made its connection to a healthy backend ({before:?} -> {after:?})"
        );
    }
}
