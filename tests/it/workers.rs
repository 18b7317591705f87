//! Thread-per-core (`[runtime] threads`, see `src/workers.rs`): clients are
//! spread over the worker threads, each worker has connections of its own to
//! every backend, no job crosses threads, and what all workers share (a
//! reload, a drain; a Sentinel switch is in tests/sentinel.rs) reaches every
//! worker's clients and connections.

use std::time::Duration;

use crate::common::{
    backends_toml, config_for, router_for, wait_until, Proxy, RawClient, Redis, Running,
    READY_LIMIT,
};

const THREADS: usize = 3;

/// Waits until the proxy serves `per_worker` clients on each worker.
fn wait_spread(proxy: &Proxy, per_worker: usize) {
    wait_until(
        READY_LIMIT,
        Duration::from_millis(5),
        "clients not spread over the workers",
        || proxy.shared.clients_per_worker() == vec![per_worker; THREADS],
    );
}

#[test]
fn every_worker_serves_its_clients_on_connections_of_its_own() {
    let (a, b) = (Redis::start(), Redis::start());
    let proxy = Proxy::start_on(
        &config_for(
            &[("a", a.address(), 1.0), ("b", b.address(), 1.0)],
            "[pool]\nconnections = 2",
        ),
        THREADS,
    );
    let mut clients: Vec<RawClient> = (0..2 * THREADS).map(|_| proxy.client()).collect();
    // Clients are handed to the workers in turn.
    wait_spread(&proxy, 2);
    for (c, client) in clients.iter_mut().enumerate() {
        for i in 0..100 {
            let key = format!("session:{c}:{i}");
            assert_eq!(client.text(&["SET", &key, &key]), "+OK\r\n");
            let value = format!("${}\r\n{key}\r\n", key.len());
            assert_eq!(client.text(&["GET", &key]), value);
        }
        // MGET over both backends: split, sent and merged on the client's worker.
        let mget = client.text(&["MGET", "session:0:0", "session:0:1", "session:0:2"]);
        assert!(mget.starts_with("*3\r\n$11\r\n"), "{mget}");
    }
    for backend in proxy.shared.topology().backends.iter() {
        // `[pool] connections` on every worker: 2 per worker, 3 workers.
        wait_until(
            READY_LIMIT,
            Duration::from_millis(5),
            "every worker's connections",
            || backend.connected() == 2 * THREADS,
        );
        assert_eq!(
            backend.metrics().cross_thread.get(),
            0,
            "a job for backend {} crossed threads",
            backend.id
        );
        assert!(backend.metrics().replies.get() > 0);
    }
}

/// Draining reaches every worker: each client there gets the replies to
/// everything it sent before the drain began, and is then closed.
#[test]
fn a_drain_reaches_every_workers_clients() {
    let redis = Redis::start();
    assert_eq!(
        redis.client().text(&["SET", "session:drain", "v"]),
        "+OK\r\n"
    );
    let proxy = Proxy::start_on(
        &config_for(
            &[("a", redis.address(), 1.0)],
            "[shutdown]\ngrace_period_ms = 5000",
        ),
        THREADS,
    );
    let mut clients: Vec<RawClient> = (0..2 * THREADS).map(|_| proxy.client()).collect();
    wait_spread(&proxy, 2);
    let pipeline = RawClient::encode(&[b"GET", b"session:drain"]).repeat(100);
    for client in &mut clients {
        client.send_raw(&pipeline);
    }
    proxy.begin_shutdown();
    for (c, client) in clients.iter_mut().enumerate() {
        for n in 0..100 {
            assert_eq!(
                client.try_read_reply().ok().as_deref(),
                Some(&b"$1\r\nv\r\n"[..]),
                "client {c}: request {n} of 100 sent before the drain went unanswered"
            );
        }
        assert!(client.is_closed(), "client {c} was not closed by the drain");
    }
}

/// The proxy binary's config body: `[runtime] threads = 3` and these backends.
fn body(list: &[(&str, &Redis, f64)]) -> String {
    format!("[runtime]\nthreads = {THREADS}\n{}", backends_toml(list))
}

fn clients_per_worker(proxy: &Running) -> Vec<u64> {
    let (_, body) = proxy.http("GET", "/status");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    status["clients_per_worker"]
        .as_array()
        .map(|a| a.iter().filter_map(|n| n.as_u64()).collect())
        .unwrap_or_default()
}

/// A reload reaches every worker: after it, each client, whichever worker
/// serves it, routes new keys by the new layout (onto the added backend).
/// The proxy binary with `[runtime] threads = 3`.
#[test]
fn a_reload_reaches_every_workers_clients() {
    let (a, b) = (Redis::start(), Redis::start());
    let proxy = Running::start(&body(&[("a", &a, 1.0)]));
    let mut clients: Vec<RawClient> = (0..2 * THREADS).map(|_| proxy.client()).collect();
    for client in &mut clients {
        assert_eq!(client.text(&["PING"]), "+PONG\r\n");
    }
    wait_until(
        READY_LIMIT,
        Duration::from_millis(10),
        "clients not spread over the workers",
        || clients_per_worker(&proxy) == vec![2; THREADS],
    );
    // One proxy: the reload need not wait for others ([reload] settle_ms).
    let after = format!(
        "[reload]\nsettle_ms = 0\n{}",
        body(&[("a", &a, 1.0), ("b", &b, 3.0)])
    );
    proxy.rewrite(&after);
    let (status, body) = proxy.http("POST", "/reload");
    assert_eq!(status, 200, "{body}");
    let (_, router) = router_for(&after);
    let mut direct_b = b.client();
    for (c, client) in clients.iter_mut().enumerate() {
        let mut on_b = 0;
        for i in 0..40 {
            let key = format!("session:new:{c}:{i}");
            assert_eq!(client.text(&["SET", &key, "v"]), "+OK\r\n");
            if router.owner(key.as_bytes()) == 1 {
                assert_eq!(
                    direct_b.text(&["GET", &key]),
                    "$1\r\nv\r\n",
                    "client {c} did not route by the reloaded layout"
                );
                on_b += 1;
            }
        }
        assert!(
            on_b > 0,
            "client {c}: no key of 40 routed to the new backend"
        );
    }
}
