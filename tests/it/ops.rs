//! Running it as a service, against the real binary: Prometheus metrics after
//! known traffic, health and readiness, topology, reload under load (SIGHUP
//! and POST /reload), and draining shutdown on SIGTERM.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{
    backends_toml, router_for, sample, series_of, wait_until, RawClient, Redis, Running,
    READY_LIMIT,
};

#[test]
fn metrics_count_known_traffic() {
    let (a, b) = (Redis::start(), Redis::start());
    let proxy = Running::start(&format!(
        "[keys]\nprefixes = [\"session:\"]\n{}",
        backends_toml(&[("a", &a, 1.0), ("b", &b, 1.0)])
    ));
    let mut client = proxy.client();
    for i in 0..10 {
        assert_eq!(
            client.text(&["SET", &format!("session:{i}"), "v"]),
            "+OK\r\n"
        );
    }
    for i in 0..5 {
        client.cmd(&["GET", &format!("session:{i}")]);
    }
    for _ in 0..3 {
        client.cmd(&["NOSUCH"]);
    }
    for _ in 0..2 {
        client.cmd(&["GET", "other"]);
    }
    let (status, metrics) = proxy.http("GET", "/metrics");
    assert_eq!(status, 200);
    let expect = [
        (
            "session_proxy_requests_total{command=\"set\",outcome=\"ok\"}",
            10.0,
        ),
        (
            "session_proxy_requests_total{command=\"get\",outcome=\"ok\"}",
            5.0,
        ),
        (
            "session_proxy_requests_total{command=\"get\",outcome=\"error\"}",
            2.0,
        ),
        (
            "session_proxy_requests_total{command=\"unknown\",outcome=\"error\"}",
            3.0,
        ),
        ("session_proxy_refused_keys_total", 2.0),
        ("session_proxy_refused_commands_total", 3.0),
        (
            "session_proxy_request_duration_seconds_count{command=\"set\"}",
            10.0,
        ),
        (
            "session_proxy_request_duration_seconds_bucket{command=\"set\",le=\"+Inf\"}",
            10.0,
        ),
        (
            "session_proxy_request_duration_seconds_count{command=\"get\"}",
            7.0,
        ),
        ("session_proxy_client_connections", 1.0),
        ("session_proxy_backend_up{backend=\"a\"}", 1.0),
        ("session_proxy_backend_up{backend=\"b\"}", 1.0),
    ];
    for (series, value) in expect {
        assert_eq!(
            sample(&metrics, series),
            Some(value),
            "{series} in:\n{metrics}"
        );
    }
    let backend_requests = sample(
        &metrics,
        "session_proxy_backend_request_duration_seconds_count{backend=\"a\"}",
    )
    .unwrap_or(0.0)
        + sample(
            &metrics,
            "session_proxy_backend_request_duration_seconds_count{backend=\"b\"}",
        )
        .unwrap_or(0.0);
    assert!(backend_requests >= 1.0, "{metrics}");
    // Every series the proxy exports has its HELP and TYPE, with the type
    // the reference table gives.
    for &(name, kind, _, _) in session_proxy::metrics::CATALOGUE {
        assert!(
            metrics.contains(&format!("# HELP {name} ")),
            "no HELP for {name} in:\n{metrics}"
        );
        assert!(
            metrics.contains(&format!("# TYPE {name} {kind}\n")),
            "no TYPE {kind} for {name} in:\n{metrics}"
        );
    }
    assert!(sample(&metrics, "session_proxy_received_bytes_total").unwrap_or(0.0) > 0.0);
    assert!(sample(&metrics, "session_proxy_sent_bytes_total").unwrap_or(0.0) > 0.0);
    assert_eq!(
        sample(&metrics, "session_proxy_backend_connections{backend=\"a\"}"),
        Some(1.0)
    );

    let (status, body) = proxy.http("GET", "/topology");
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["backends"][0]["id"], "a");
    assert_eq!(json["backends"][1]["endpoint"], b.address());
    assert_eq!(json["backends"][1]["up"], true);
    assert_eq!(proxy.http("GET", "/healthz").0, 200);
}

/// A backend a reload removes: once the keys are moved from it, `/metrics`
/// shows nothing of it. Before, its `session_proxy_backend_up` and
/// connections stayed at their last values for as long as the proxy ran (a
/// backend that was down when it was removed paged for good), and its
/// counters with them.
#[test]
fn a_backend_a_reload_removes_leaves_no_series_behind() {
    let (a, b) = (Redis::start(), Redis::start());
    let settle = "[reload]\nsettle_ms = 0\n";
    let proxy = Running::start(&format!(
        "{settle}{}",
        backends_toml(&[("a", &a, 1.0), ("b", &b, 1.0)])
    ));
    let mut client = proxy.client();
    for i in 0..20 {
        let key = format!("session:{i}");
        assert_eq!(client.text(&["SET", &key, "v"]), "+OK\r\n");
    }
    let before = proxy.http("GET", "/metrics").1;
    let up_b = "session_proxy_backend_up{backend=\"b\"}";
    assert_eq!(sample(&before, up_b), Some(1.0));
    let connects_b = "session_proxy_backend_connects_total{backend=\"b\"}";
    assert!(sample(&before, connects_b) >= Some(1.0), "{before}");
    proxy.rewrite(&format!("{settle}{}", backends_toml(&[("a", &a, 1.0)])));
    proxy.signal("HUP");
    wait_until(READY_LIMIT, Duration::from_millis(10), "reload", || {
        proxy.generation() == 1
    });
    wait_until(
        Duration::from_secs(60),
        Duration::from_millis(50),
        "the move off b never finished",
        || {
            let body = proxy.http("GET", "/topology").1;
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            json["migration"]["state"] == "done"
        },
    );
    let metrics = proxy.http("GET", "/metrics").1;
    let left = series_of(&metrics, "backend=\"b\"");
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(
        sample(&metrics, "session_proxy_backend_up{backend=\"a\"}"),
        Some(1.0)
    );
    for i in 0..20 {
        let got = client.text(&["GET", &format!("session:{i}")]);
        assert_eq!(got, "$1\r\nv\r\n", "session:{i}");
    }
}

#[test]
fn readyz_flips_when_a_backend_goes_down_and_when_draining_starts() {
    let (a, b) = (Redis::start(), Redis::start());
    let mut proxy = Running::start(&format!(
        "[pool]\nhealth_failures = 2\nbackoff_max_ms = 100\n[shutdown]\ngrace_period_ms = 3000\n{}",
        backends_toml(&[("a", &a, 1.0), ("b", &b, 1.0)])
    ));
    assert_eq!(proxy.http("GET", "/readyz").0, 200);
    drop(b);
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "readyz never failed",
        || {
            let (status, body) = proxy.http("GET", "/readyz");
            if status == 503 {
                assert!(body.contains("backends down: b"), "{body}");
            }
            status == 503
        },
    );
    assert_eq!(proxy.http("GET", "/healthz").0, 200);

    // A client in the middle of a request keeps the proxy draining for a while.
    let mut client = proxy.client();
    client.send_raw(b"*2\r\n$3\r\nGET\r\n");
    proxy.signal("TERM");
    wait_until(
        READY_LIMIT,
        Duration::from_millis(10),
        "readyz never reported draining",
        || {
            let (status, body) = proxy.http("GET", "/readyz");
            let draining = body.contains("draining");
            if draining {
                assert_eq!(status, 503);
            }
            draining
        },
    );
    // The grace period ends it, with exit code 0.
    let status = proxy.wait_exit(READY_LIMIT);
    assert!(status.success(), "{status:?}");
}

/// Keys written before a reload, and a load running across it.
struct ReloadLoad {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<(usize, Vec<String>)>>,
}

impl ReloadLoad {
    fn start(port: u16) -> ReloadLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..3)
            .map(|t| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut client = RawClient::connect(port);
                    let mut errors = Vec::new();
                    let started = Instant::now();
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed)
                        && started.elapsed() < Duration::from_secs(60)
                    {
                        let key = format!("session:load:{t}:{n}");
                        for args in [vec!["SETEX", &key, "600", "x"], vec!["GET", &key]] {
                            match client.try_read_reply_after(&args) {
                                Ok(reply) if !reply.starts_with(b"-") => {}
                                Ok(reply) => {
                                    errors.push(String::from_utf8_lossy(&reply).into_owned())
                                }
                                Err(e) => {
                                    errors.push(format!("connection: {e}"));
                                    return (n, errors);
                                }
                            }
                        }
                        n += 1;
                    }
                    (n, errors)
                })
            })
            .collect();
        ReloadLoad { stop, threads }
    }

    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = 0;
        let mut errors = Vec::new();
        for t in self.threads {
            let (n, e) = t.join().unwrap();
            total += n;
            errors.extend(e);
        }
        (total, errors)
    }
}

trait TryCmd {
    fn try_read_reply_after(&mut self, args: &[&str]) -> std::io::Result<Vec<u8>>;
}

impl TryCmd for RawClient {
    fn try_read_reply_after(&mut self, args: &[&str]) -> std::io::Result<Vec<u8>> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.stream.write_all(&RawClient::encode(&args))?;
        self.try_read_reply()
    }
}

#[test]
fn reload_under_load_moves_exactly_the_keys_the_router_says_and_loses_none() {
    let (a, b, c) = (Redis::start(), Redis::start(), Redis::start());
    let before = backends_toml(&[("a", &a, 1.0), ("b", &b, 1.0)]);
    let proxy = Running::start(&before);
    let mut client = proxy.client();
    let keys: Vec<String> = (0..600).map(|i| format!("session:{i}")).collect();
    for key in &keys {
        assert_eq!(client.text(&["SET", key, key]), "+OK\r\n");
    }
    let load = ReloadLoad::start(proxy.port);
    let after = backends_toml(&[("a", &a, 1.0), ("b", &b, 3.0), ("c", &c, 1.0)]);

    // An invalid file is refused and the running config keeps serving.
    proxy.rewrite("[[backends]]\nid = \"a\"\nweight = 0\naddress = \"127.0.0.1:1\"\n");
    let (status, body) = proxy.http("POST", "/reload");
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("backends[0].weight"), "{body}");
    proxy.signal("HUP");
    assert_eq!(proxy.generation(), 0);
    assert_eq!(
        client.text(&["GET", &keys[0]]),
        format!("${}\r\n{}\r\n", keys[0].len(), keys[0])
    );

    // Add a backend and change a weight, by SIGHUP.
    proxy.rewrite(&after);
    proxy.signal("HUP");
    wait_until(
        READY_LIMIT,
        Duration::from_millis(10),
        "reload not applied",
        || proxy.generation() == 1,
    );
    // Some traffic after the reload too.
    for i in 0..200 {
        assert_eq!(
            client.text(&["SET", &format!("session:after:{i}"), "v"]),
            "+OK\r\n"
        );
    }
    let (requests, errors) = load.finish();
    assert!(
        errors.is_empty(),
        "requests failed across the reload: {errors:?}"
    );
    println!("reload under load: {requests} request pairs, 0 errors");

    let (_, old) = router_for(&before);
    let (new_config, new) = router_for(&after);
    // Every key still reads its value: a moved one is brought from its old
    // owner by the read (or the mover got there first).
    for key in &keys {
        assert_eq!(
            client.text(&["GET", key]),
            format!("${}\r\n{}\r\n", key.len(), key)
        );
    }
    wait_until(
        Duration::from_secs(60),
        Duration::from_millis(20),
        "the reload's migration did not finish",
        || {
            proxy
                .http("GET", "/topology")
                .1
                .contains("\"state\":\"done\"")
        },
    );
    // Then each key is on its new owner, and only there.
    let redis = [&a, &b, &c];
    let mut moved = 0;
    for key in &keys {
        let (was, is) = (old.owner(key.as_bytes()), new.owner(key.as_bytes()));
        // Backends a and b keep their indexes.
        if new_config.backends[is].id != ["a", "b"][was] {
            moved += 1;
        }
        for (i, server) in redis.iter().enumerate() {
            let expect = if i == is { ":1\r\n" } else { ":0\r\n" };
            assert_eq!(
                server.client().text(&["EXISTS", key]),
                expect,
                "{key} on {i}"
            );
        }
    }
    println!("{moved} of {} keys moved", keys.len());
    assert!(moved > 0 && moved < keys.len());
    // New writes land where the new router says.
    for i in 0..200 {
        let key = format!("session:after:{i}");
        assert_eq!(
            redis[new.owner(key.as_bytes())]
                .client()
                .text(&["EXISTS", &key]),
            ":1\r\n"
        );
    }
}

#[test]
fn sigterm_under_load_answers_everything_it_accepted() {
    let (a, b) = (Redis::start(), Redis::start());
    let mut proxy = Running::start(&format!(
        "[shutdown]\ngrace_period_ms = 5000\n{}",
        backends_toml(&[("a", &a, 1.0), ("b", &b, 1.0)])
    ));
    // Pipelining clients: each sends bursts of SETs and reads the replies.
    let stop = Arc::new(AtomicBool::new(false));
    let port = proxy.port;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut client = RawClient::connect(port);
                let (mut answered, mut unanswered) = (Vec::new(), Vec::new());
                for burst in 0..100_000 {
                    if stop.load(Ordering::Relaxed) && burst > 0 {
                        break;
                    }
                    let keys: Vec<String> = (0..20)
                        .map(|i| format!("session:{t}:{burst}:{i}"))
                        .collect();
                    let mut bytes = Vec::new();
                    for key in &keys {
                        bytes.extend(RawClient::encode(&[b"SET", key.as_bytes(), b"v"]));
                    }
                    if client.stream.write_all(&bytes).is_err() {
                        unanswered.extend(keys);
                        break;
                    }
                    let mut closed = false;
                    for key in keys {
                        if closed {
                            unanswered.push(key);
                            continue;
                        }
                        match client.try_read_reply() {
                            Ok(reply) => {
                                assert_eq!(reply, b"+OK\r\n");
                                answered.push(key);
                            }
                            Err(_) => {
                                closed = true;
                                unanswered.push(key);
                            }
                        }
                    }
                    if closed {
                        break;
                    }
                }
                (answered, unanswered)
            })
        })
        .collect();
    // Let the load run, then a burst in flight at the moment of SIGTERM.
    let mut last = proxy.client();
    for i in 0..200 {
        assert_eq!(
            last.text(&["SET", &format!("session:warm:{i}"), "v"]),
            "+OK\r\n"
        );
    }
    let burst: Vec<String> = (0..500).map(|i| format!("session:final:{i}")).collect();
    let mut bytes = Vec::new();
    for key in &burst {
        bytes.extend(RawClient::encode(&[b"SET", key.as_bytes(), b"v"]));
    }
    last.send_raw(&bytes);
    proxy.signal("TERM");
    for _ in &burst {
        assert_eq!(
            last.read_reply(),
            b"+OK\r\n",
            "a request sent before SIGTERM went unanswered"
        );
    }
    assert!(last.is_closed(), "an idle client is closed while draining");
    stop.store(true, Ordering::Relaxed);
    let status = proxy.wait_exit(READY_LIMIT);
    assert!(status.success(), "{status:?}");

    let (mut answered, mut unanswered) = (0, 0);
    let redis = [&a, &b];
    let mut direct: Vec<RawClient> = redis.iter().map(|r| r.client()).collect();
    let exists = |direct: &mut Vec<RawClient>, key: &str| {
        direct
            .iter_mut()
            .any(|c| c.text(&["EXISTS", key]) == ":1\r\n")
    };
    for t in threads {
        let (yes, no) = t.join().unwrap();
        answered += yes.len();
        unanswered += no.len();
        // Every answered write is stored; no unanswered one was executed.
        for key in yes.iter().step_by(7) {
            assert!(
                exists(&mut direct, key),
                "{key} was acknowledged but is missing"
            );
        }
        for key in &no {
            assert!(
                !exists(&mut direct, key),
                "{key} was executed but its reply was lost"
            );
        }
    }
    println!("SIGTERM under load: {answered} answered, {unanswered} sent after the proxy closed (not executed)");
    assert!(answered > 0);
}
