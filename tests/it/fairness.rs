//! Fair backend connections, against a real redis-server: clients that
//! pipeline hundreds of large GETs share the backend connection with a
//! normal client, whose requests must all come back within a 100 ms client
//! timeout (django-redis-sessions' socket timeout turns anything slower into
//! a logout); and clients that pipeline and never read cannot make the
//! healthy backend's connection look dead.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::{
    config_for, connections_received, wait_until, Proxy, RawClient, Redis, READY_LIMIT,
};

const BIG: usize = 100 * 1024;
const HEAVY_CLIENTS: usize = 8;
const PIPELINE: usize = 256;
const CLIENT_TIMEOUT: Duration = Duration::from_millis(100);

/// Heavy clients on `port`: each pipelines PIPELINE GETs of the big value,
/// and reads every reply when `read` is set, until `stop` (or 200 rounds).
fn heavy(port: u16, read: bool, stop: &Arc<AtomicBool>) -> Vec<JoinHandle<u64>> {
    (0..HEAVY_CLIENTS)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
                stream.set_read_timeout(Some(READY_LIMIT)).unwrap();
                // A client that never reads is blocked once the proxy stops
                // reading it: the timeout lets it see `stop`.
                stream
                    .set_write_timeout(Some(Duration::from_secs(1)))
                    .unwrap();
                let burst = RawClient::encode(&[b"GET", b"session:big"]).repeat(PIPELINE);
                let reply_len = format!("${BIG}\r\n").len() + BIG + 2;
                let mut replies = vec![0u8; reply_len * PIPELINE];
                let mut rounds = 0;
                while !stop.load(Ordering::Relaxed) && rounds < 200 {
                    if stream.write_all(&burst).is_err() {
                        break;
                    }
                    if read && stream.read_exact(&mut replies).is_err() {
                        break;
                    }
                    rounds += 1;
                }
                rounds
            })
        })
        .collect()
}

/// The normal client: `count` GETs of a small session, one at a time, each
/// with the client timeout. Returns how many failed, and the slowest.
fn normal_client(port: u16, count: usize) -> (usize, Duration) {
    let mut client = RawClient::connect(port);
    client
        .stream
        .set_read_timeout(Some(CLIENT_TIMEOUT))
        .unwrap();
    let (mut failed, mut slowest) = (0, Duration::ZERO);
    for _ in 0..count {
        let started = Instant::now();
        client.send(&[b"GET", b"session:user"]);
        match client.try_read_reply() {
            Ok(reply) if reply == b"$4\r\nuser\r\n" => {}
            _ => {
                failed += 1;
                // A timed-out reply may still come: start afresh.
                client = RawClient::connect(port);
                client
                    .stream
                    .set_read_timeout(Some(CLIENT_TIMEOUT))
                    .unwrap();
            }
        }
        slowest = slowest.max(started.elapsed());
    }
    (failed, slowest)
}

/// A Redis with a small and a big session, a direct client on it, and the
/// proxy (on `threads` worker threads) in front with every worker's
/// connections made: the pool's, and the one for large replies (started by
/// a client of large replies on each worker: clients are handed to the
/// workers in turn); the short one that learns the server's version is over.
fn setup(threads: usize) -> (Redis, RawClient, Proxy) {
    let redis = Redis::start();
    let mut direct = redis.client();
    let big = vec![b'x'; BIG];
    assert_eq!(direct.cmd(&["SET", "session:user", "user"]), b"+OK\r\n");
    direct.send(&[b"SET", b"session:big", &big]);
    assert_eq!(direct.read_reply(), b"+OK\r\n");
    let proxy = Proxy::start_on(&config_for(&[("a", redis.address(), 1.0)], ""), threads);
    let clients: Vec<RawClient> = (0..threads).map(|_| proxy.client()).collect();
    for mut client in clients {
        assert_eq!(client.text(&["GET", "session:user"]), "$4\r\nuser\r\n");
        for _ in 0..4 {
            assert_eq!(client.cmd(&["GET", "session:big"]).len(), 9 + BIG + 2);
        }
    }
    // Its connections made, and the one that asks the version done with.
    wait_until(
        READY_LIMIT,
        Duration::from_millis(10),
        "no connection for large replies",
        || {
            let backend = &proxy.shared.topology().backends[0];
            backend.connected() == 2 * threads && backend.version().is_some()
        },
    );
    (redis, direct, proxy)
}

/// The two tests load the machine: one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// On one runtime thread (the default on two cores or less) and on two. The
/// heavy clients are new: their replies' size is unknown until the first
/// one comes back, and their pipelines must not go on the pool's connection
/// meanwhile (where, 2 MB of big replies ahead of each small GET, 1 to 3 of
/// the normal client's 200 requests took over 100 ms on a 2-core machine in
/// about two runs of three on one thread).
#[test]
fn a_normal_client_is_served_while_heavy_clients_pipeline_large_replies() {
    for threads in [1, 2] {
        normal_client_beside_heavy_ones(threads);
    }
}

fn normal_client_beside_heavy_ones(threads: usize) {
    let _serial = serial();
    let (_redis, mut direct, proxy) = setup(threads);
    let before = connections_received(&mut direct);
    let stop = Arc::new(AtomicBool::new(false));
    let heavy = heavy(proxy.port, true, &stop);
    // Wait until the heavy load is under way.
    wait_until(
        READY_LIMIT,
        Duration::from_millis(10),
        "no heavy load",
        || proxy.shared.topology().backends[0].metrics().replies.get() > 1000,
    );
    let (failed, slowest) = normal_client(proxy.port, 200);
    stop.store(true, Ordering::Relaxed);
    let rounds: u64 = heavy.into_iter().map(|t| t.join().unwrap()).sum();
    println!(
        "{threads} thread(s): normal client: {failed} of 200 failed, slowest {slowest:?}; heavy clients: {rounds} rounds of {PIPELINE} GETs of {BIG} bytes"
    );
    assert!(rounds > 0, "the heavy clients ran");
    assert_eq!(failed, 0, "the normal client's requests timed out");
    assert_eq!(
        connections_received(&mut direct),
        before,
        "the healthy backend's connection was re-made"
    );
}

#[test]
fn clients_that_never_read_cannot_make_a_healthy_backend_look_dead() {
    let _serial = serial();
    let (_redis, mut direct, proxy) = setup(2);
    let before = connections_received(&mut direct);
    let stop = Arc::new(AtomicBool::new(false));
    let heavy = heavy(proxy.port, false, &stop);
    let (failed, _) = normal_client(proxy.port, 200);
    stop.store(true, Ordering::Relaxed);
    for t in heavy {
        t.join().unwrap();
    }
    assert_eq!(failed, 0, "the normal client's requests timed out");
    assert!(proxy.shared.ready().is_ok(), "the backend was marked down");
    assert_eq!(
        connections_received(&mut direct),
        before,
        "the healthy backend's connection was re-made"
    );
}

/// A client that connects and at once pipelines large GETs: only its first
/// request goes before its replies' size is known (on the pool's
/// connection); the rest go on the connection for large replies, which
/// this starts. Without the wait for the first reply the whole pipeline
/// would go on the pool's connection, ahead of everyone's small requests,
/// and no second connection would be made.
#[test]
fn a_new_clients_pipeline_of_large_replies_goes_on_the_connection_for_them() {
    let redis = Redis::start();
    let mut direct = redis.client();
    direct.send(&[b"SET", b"session:big", &vec![b'x'; BIG]]);
    assert_eq!(direct.read_reply(), b"+OK\r\n");
    let proxy = Proxy::start(&config_for(&[("a", redis.address(), 1.0)], ""));
    // One pool connection per worker thread.
    let pool = proxy.shared.worker_clients.len();
    let backend = || proxy.shared.topology().backends[0].clone();
    wait_until(
        READY_LIMIT,
        Duration::from_millis(10),
        "no pool connection",
        || backend().connected() == pool && backend().version().is_some(),
    );
    let mut client = proxy.client();
    let count = 32;
    let burst = RawClient::encode(&[b"GET", b"session:big"]).repeat(count);
    client.stream.write_all(&burst).unwrap();
    for _ in 0..count {
        assert_eq!(
            client.read_reply().len(),
            format!("${BIG}\r\n").len() + BIG + 2
        );
    }
    assert_eq!(
        backend().connected(),
        pool + 1,
        "the pipeline did not move to the connection for large replies"
    );
}
