//! No input from a client or a backend can crash or bloat the proxy: hostile
//! backends (a small fake server playing one), client limits counted over
//! every listener, output and memory limits that close only the offender,
//! idle clients, and request headers that announce more than they send.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{
    backends_toml, config_for, wait_until, Proxy, RawClient, Redis, Running, READY_LIMIT,
};

/// A fake backend: answers the proxy's handshake with `+OK`, then answers
/// whatever comes next with `payload`, sent in `repeat` writes (an endless
/// stream is a large `repeat`; it stops when the proxy hangs up).
struct Hostile {
    port: u16,
}

impl Hostile {
    fn start(head: Vec<u8>, tail: Vec<u8>, repeat: usize) -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (head, tail) = (head.clone(), tail.clone());
                std::thread::spawn(move || serve_hostile(stream, &head, &tail, repeat));
            }
        });
        Hostile { port }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn serve_hostile(mut stream: TcpStream, head: &[u8], tail: &[u8], repeat: usize) {
    let mut buf = [0u8; 4096];
    // The handshake (SELECT) gets an honest answer.
    if !matches!(stream.read(&mut buf), Ok(n) if n > 0) {
        return;
    }
    if stream.write_all(b"+OK\r\n").is_err() {
        return;
    }
    // The first client command gets the hostile reply.
    if !matches!(stream.read(&mut buf), Ok(n) if n > 0) {
        return;
    }
    if stream.write_all(head).is_err() {
        return;
    }
    for _ in 0..repeat {
        if stream.write_all(tail).is_err() {
            return;
        }
    }
    // Keep the socket open until the proxy closes it.
    let _ = stream.read(&mut buf);
}

#[test]
fn hostile_backend_replies_fail_that_backend_only() {
    let redis = Redis::start();
    let cases: Vec<(&str, Vec<u8>, Vec<u8>, usize)> = vec![
        (
            "deeply nested",
            b"*1\r\n".repeat(50_000),
            b":1\r\n".to_vec(),
            1,
        ),
        (
            "endless array",
            b"*4000000000\r\n".to_vec(),
            b":1\r\n".repeat(1024),
            100_000,
        ),
        ("huge bulk header", b"$100000000000\r\n".to_vec(), vec![], 0),
        ("garbage", b"hello world\r\n".to_vec(), vec![], 0),
    ];
    for (name, head, tail, repeat) in cases {
        let hostile = Hostile::start(head, tail, repeat);
        let proxy = Proxy::start(&config_for(
            &[
                ("good", redis.address(), 1.0),
                ("bad", hostile.address(), 1.0),
            ],
            "[limits]\nmax_reply_bytes = 1048576\n[pool]\nrequest_timeout_ms = 5000",
        ));
        let on_good = proxy.key_on(0, "session:");
        let on_bad = proxy.key_on(1, "session:");
        let mut good = proxy.client();
        assert_eq!(good.text(&["SET", &on_good, "v"]), "+OK\r\n", "{name}");
        let mut victim = proxy.client();
        let reply = victim.text(&["GET", &on_bad]);
        assert!(
            reply.starts_with("-ERR backend 'bad' connection lost: bad reply"),
            "{name}: {reply}"
        );
        // The proxy is alive, the client that met the bad reply too, and
        // the other backend's clients saw nothing.
        assert_eq!(victim.text(&["PING"]), "+PONG\r\n", "{name}");
        assert_eq!(good.text(&["GET", &on_good]), "$1\r\nv\r\n", "{name}");
        assert_eq!(proxy.client().text(&["PING"]), "+PONG\r\n", "{name}");
    }
}

#[test]
fn max_clients_counts_every_listener_and_answers_like_redis() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("proxy.sock");
    let extra = format!(
        "unix_socket = \"{}\"\n[limits]\nmax_clients = 3",
        socket.display()
    );
    let proxy = Proxy::start(&config_for(&[("a", redis.address(), 1.0)], &extra));
    let mut tcp1 = proxy.client();
    let mut tcp2 = proxy.client();
    assert_eq!(tcp1.text(&["PING"]), "+PONG\r\n");
    assert_eq!(tcp2.text(&["PING"]), "+PONG\r\n");
    let mut unix = UnixStream::connect(&socket).unwrap();
    unix.set_read_timeout(Some(READY_LIMIT)).unwrap();
    unix.write_all(b"PING\r\n").unwrap();
    let mut got = [0u8; 7];
    unix.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"+PONG\r\n");
    // A fourth, on either listener, is told and closed.
    let mut fourth = proxy.client();
    assert_eq!(
        fourth.try_read_reply().unwrap(),
        b"-ERR max number of clients reached\r\n"
    );
    assert!(fourth.is_closed());
    let mut over = UnixStream::connect(&socket).unwrap();
    over.set_read_timeout(Some(READY_LIMIT)).unwrap();
    let mut text = Vec::new();
    over.read_to_end(&mut text).unwrap();
    assert_eq!(text, b"-ERR max number of clients reached\r\n");
    // The three served are unaffected; once one leaves, a newcomer is served.
    assert_eq!(tcp1.text(&["PING"]), "+PONG\r\n");
    drop(tcp2);
    wait_until(
        READY_LIMIT,
        Duration::from_millis(10),
        "a slot never freed",
        || {
            let mut c = proxy.client();
            c.cmd(&["PING"]) == b"+PONG\r\n"
        },
    );
}

/// Sends `count` pipelined GETs of `key` and never reads the replies.
fn flood(port: u16, key: &str, count: usize) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let packet = RawClient::encode(&[b"GET", key.as_bytes()]).repeat(count);
    // The proxy stops reading a client whose replies pile up, so the write
    // may block: let a thread finish it (or fail once the proxy closes it).
    std::thread::spawn(move || {
        let _ = writer.write_all(&packet);
    });
    stream
}

/// Whether the proxy has closed `stream`: reading what is there reaches
/// the end (or a reset) within the limit.
fn closed_by_proxy(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(READY_LIMIT)).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// A proxy with `extra` config over one Redis, and a client that has stored
/// a 100 KB value under `session:big` through it.
fn with_big_value(extra: &str) -> (Redis, Proxy, RawClient) {
    let redis = Redis::start();
    let proxy = Proxy::start(&config_for(&[("a", redis.address(), 1.0)], extra));
    let mut client = proxy.client();
    let value = "x".repeat(100_000);
    assert_eq!(client.text(&["SET", "session:big", &value]), "+OK\r\n");
    (redis, proxy, client)
}

#[test]
fn the_output_limit_closes_only_the_client_that_does_not_read() {
    let (_redis, proxy, mut normal) = with_big_value("[limits]\nclient_output_bytes = 524288");
    let mut heavy = flood(proxy.port, "session:big", 400);
    // Before the heavy client's fate is read, the normal one keeps working.
    for i in 0..50 {
        let key = format!("session:n{i}");
        assert_eq!(normal.text(&["SET", &key, "v"]), "+OK\r\n");
        assert_eq!(normal.text(&["GET", &key]), "$1\r\nv\r\n");
    }
    assert!(closed_by_proxy(&mut heavy), "the heavy client stays open");
    assert_eq!(normal.text(&["PING"]), "+PONG\r\n");
}

#[test]
fn max_memory_closes_the_client_holding_the_most() {
    let (_redis, proxy, mut normal) =
        with_big_value("[limits]\nclient_output_bytes = 0\nmax_memory_bytes = 8388608");
    let mut heavy = flood(proxy.port, "session:big", 1000);
    // Not read meanwhile: a reader could keep up with the replies, which
    // the backend connection paces (see backend/lanes.rs).
    wait_until(
        READY_LIMIT,
        Duration::from_millis(10),
        "the heavy client stays open",
        || {
            normal
                .text(&["INFO", "clients"])
                .contains("connected_clients:1\r\n")
        },
    );
    assert!(closed_by_proxy(&mut heavy), "the heavy client stays open");
    assert_eq!(normal.text(&["GET", "session:big"]).len(), 100_011);
    wait_until(
        READY_LIMIT,
        Duration::from_millis(10),
        "memory not given back",
        || proxy.shared.memory.total() < 8 << 20,
    );
}

#[test]
fn idle_clients_are_closed_after_the_idle_timeout() {
    let redis = Redis::start();
    let proxy = Proxy::start(&config_for(
        &[("a", redis.address(), 1.0)],
        "[limits]\nidle_timeout_s = 1",
    ));
    let mut idle = proxy.client();
    assert_eq!(idle.text(&["PING"]), "+PONG\r\n");
    assert!(idle.is_closed());
}

/// The open files limit of process `pid`: soft and hard, `None` for
/// unlimited.
fn nofile_of(pid: &str) -> (Option<u64>, Option<u64>) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files");
    let mut values = line["Max open files".len()..]
        .split_whitespace()
        .map(|v| v.parse().ok());
    (values.next().flatten(), values.next().flatten())
}

/// The proxy's `maxclients`, as `CONFIG GET` answers it to `client`.
fn maxclients(client: &mut RawClient) -> usize {
    let said = client.text(&["CONFIG", "GET", "maxclients"]);
    said.lines()
        .nth(4)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{said}"))
}

/// The open files a shell or service manager gives a process (often 1024
/// soft) are raised at start to what `[limits] max_clients` needs, as
/// Redis raises its own; where the hard limit is too low, clients are
/// capped below it (Redis lowers its maxclients), so the client over the
/// cap gets Redis's error and the backends' connections keep their files.
/// Before, under a soft limit of 128 the hundredth-odd client waited
/// unanswered in the accept queue, and so did every one after it.
#[test]
fn the_open_files_limit_makes_room_for_max_clients() {
    let redis = Redis::start();
    let body = backends_toml(&[("b0", &redis, 1.0)]);
    let hard = nofile_of("self").1.unwrap_or(4096).min(4096);
    let roomy = Running::start_limited(&body, &[], Some(&format!("128:{hard}")));
    let mut clients: Vec<RawClient> = (0..300).map(|_| roomy.client()).collect();
    for client in &mut clients {
        assert_eq!(client.text(&["PING"]), "+PONG\r\n");
    }
    let pid = roomy.pid().to_string();
    assert_eq!(
        nofile_of(&pid),
        (Some(hard), Some(hard)),
        "raised to the hard limit"
    );
    drop(clients);
    // A hard limit of 200: fewer clients than max_clients, and said so.
    let tight = Running::start_limited(&body, &[], Some("200:200"));
    let mut first = tight.client();
    let cap = maxclients(&mut first);
    assert!(cap > 20 && cap < 200, "{cap}");
    let mut clients: Vec<RawClient> = (1..cap).map(|_| tight.client()).collect();
    for client in &mut clients {
        assert_eq!(client.text(&["PING"]), "+PONG\r\n");
    }
    let mut over = tight.client();
    assert_eq!(
        over.text(&["PING"]),
        "-ERR max number of clients reached\r\n"
    );
    // The backend's connections still find files: a lease (a blocking
    // command's) is made, and the shared connection serves.
    assert_eq!(first.text(&["BLPOP", "queue", "0.01"]), "*-1\r\n");
    assert_eq!(clients[0].text(&["SET", "k", "v"]), "+OK\r\n");
    // A reload adjusts again: fewer held connections leave more clients.
    tight.rewrite(&format!("{body}[pool]\nmax_held_connections = 8\n"));
    assert_eq!(tight.http("POST", "/reload").0, 200);
    let now = maxclients(&mut first);
    assert!(now > cap, "{now} after the reload, {cap} before");
}

/// A cluster backend's servers count towards the open files as the masters
/// its slot map names once that is more than the seeds its config names:
/// a proxy given one seed of a three-master cluster comes to the same
/// clients cap as one given all three. Before, it kept room for one
/// server, and the other masters' connections took files the cap had
/// left to clients.
#[test]
fn a_cluster_grown_past_its_seeds_counts_its_masters_files() {
    let cluster = crate::common::Cluster::start(3, 0);
    let body = |seeds: usize| {
        let seeds: Vec<String> = cluster.nodes[..seeds]
            .iter()
            .map(|n| format!("\"{}\"", n.address()))
            .collect();
        format!(
            "[[backends]]\nid = \"c\"\ncluster = {{ seeds = [{}] }}\n",
            seeds.join(", ")
        )
    };
    let every = Running::start_limited(&body(3), &[], Some("400:400"));
    let one = Running::start_limited(&body(1), &[], Some("400:400"));
    let (mut every, mut one) = (every.client(), one.client());
    for client in [&mut every, &mut one] {
        wait_until(
            READY_LIMIT,
            Duration::from_millis(20),
            "no slot map",
            || client.text(&["SET", "k", "v"]) == "+OK\r\n",
        );
    }
    let cap = maxclients(&mut every);
    assert!(cap > 1 && cap < 400, "{cap}");
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "the one seed's proxy never counted the other masters",
        || maxclients(&mut one) == cap,
    );
}

/// Established TCP sockets of this machine (`/proc/net/tcp`) from
/// `local` to `remote` ports (either may be any): the keepalive timer's
/// time left for each, `None` where no keepalive is pending.
fn keepalive_timers(local: Option<u16>, remote: Option<u16>) -> Vec<Option<Duration>> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let port = |address: &str| u16::from_str_radix(address.rsplit(':').next()?, 16).ok();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (from, to, state, timer) = (fields[1], fields[2], fields[3], fields[5]);
            let wanted = |want: Option<u16>, address| want.is_none() || want == port(address);
            (state == "01" && wanted(local, from) && wanted(remote, to)).then_some(timer)
        })
        .map(|timer| {
            // `tr:tm->when`: timer 2 is the socket's keepalive, in 1/100 s.
            let (kind, when) = timer.split_once(':').expect("tr:when");
            let left = u64::from_str_radix(when, 16).expect("hex");
            (kind == "02").then(|| Duration::from_millis(left * 10))
        })
        .collect()
}

/// Clients' and backends' connections carry TCP keepalive, as Redis's
/// `tcp-keepalive` sets it (`[listen]` and `[pool] tcp_keepalive_s`): a
/// peer that vanished without a reset (its host down, a network cut) is
/// noticed. Before, nothing was: a client blocked in BLPOP 0 through the
/// proxy whose host died kept its lease blocked on the server for good,
/// ready to take the next element for nobody, and a blocking command or a
/// subscriber's link on a backend that vanished waited for ever.
#[test]
fn connections_probe_for_a_peer_that_vanished() {
    let redis = Redis::start();
    let port: u16 = redis.address().rsplit(':').next().unwrap().parse().unwrap();
    let extra = "tcp_keepalive_s = 200\n[pool]\ntcp_keepalive_s = 50\n";
    let proxy = Proxy::start(&config_for(&[("b0", redis.address(), 1.0)], extra));
    let mut client = proxy.client();
    assert_eq!(client.text(&["SET", "k", "v"]), "+OK\r\n");
    client.send(&[b"BLPOP", b"queue", b"0"]);
    // The shared connection, the blocked lease (and maybe one made ahead).
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        "the backend connections probed within 50 s",
        || {
            let timers = keepalive_timers(None, Some(port));
            timers.len() >= 2
                && timers
                    .iter()
                    .all(|t| t.is_some_and(|t| t <= Duration::from_secs(50)))
        },
    );
    let accepted = keepalive_timers(Some(proxy.port), None);
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    let left = accepted[0].expect("the client's connection is probed");
    assert!(
        left > Duration::from_secs(100) && left <= Duration::from_secs(200),
        "{left:?}"
    );
    // 0 turns it off.
    let off = Proxy::start(&config_for(
        &[("b0", redis.address(), 1.0)],
        "tcp_keepalive_s = 0\n",
    ));
    let mut unprobed = off.client();
    assert_eq!(unprobed.text(&["PING"]), "+PONG\r\n");
    assert_eq!(keepalive_timers(Some(off.port), None), vec![None]);
    redis.client().text(&["RPUSH", "queue", "job"]);
    assert_eq!(client.read_reply(), b"*2\r\n$5\r\nqueue\r\n$3\r\njob\r\n");
}

#[test]
fn a_bulk_header_reserves_nothing_until_its_bytes_come() {
    let redis = Redis::start();
    let proxy = Proxy::start(&config_for(&[("a", redis.address(), 1.0)], ""));
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut c = proxy.client();
        c.send_raw(b"*3\r\n$3\r\nSET\r\n$9\r\nsession:k\r\n$60000000\r\nabc");
        clients.push(c);
    }
    // Every header has been read (a PING behind them on a fresh client is
    // answered, and each client's few bytes are accounted).
    assert_eq!(proxy.client().text(&["PING"]), "+PONG\r\n");
    wait_until(
        READY_LIMIT,
        Duration::from_millis(10),
        "headers not read",
        || proxy.shared.memory.total() > 0,
    );
    let total = proxy.shared.memory.total();
    assert!(total < 4 << 20, "20 headers of 60 MB hold {total} bytes");
}

#[test]
fn a_hostile_backend_does_not_stop_subscribers() {
    let redis = Redis::start();
    for (name, head) in [
        ("deeply nested", b"*1\r\n".repeat(50_000)),
        ("huge bulk header", b"$100000000000\r\n".to_vec()),
        ("garbage", b"hello world\r\n".to_vec()),
    ] {
        let hostile = Hostile::start(head, vec![], 0);
        let proxy = Proxy::start(&config_for(
            &[
                ("good", redis.address(), 1.0),
                ("bad", hostile.address(), 1.0),
            ],
            "[limits]\nmax_reply_bytes = 1048576\n",
        ));
        let mut sub = proxy.client();
        sub.send(&[b"SUBSCRIBE", b"news"]);
        assert_eq!(
            sub.read_reply(),
            b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n",
            "{name}"
        );
        wait_until(
            READY_LIMIT,
            std::time::Duration::from_millis(10),
            name,
            || {
                redis
                    .client()
                    .text(&["PUBSUB", "NUMSUB", "news"])
                    .ends_with(":1\r\n")
            },
        );
        redis.client().text(&["PUBLISH", "news", "hi"]);
        assert_eq!(
            sub.read_reply(),
            b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n",
            "{name}"
        );
        assert_eq!(proxy.client().text(&["PING"]), "+PONG\r\n", "{name}");
    }
}

/// A fake Redis Cluster node of one shard (itself, every slot), hostile
/// in one way: every GET is answered `-MOVED` to a node never named
/// before (`127.0.0.N:port`, where nothing listens), and after the first
/// slot map it answers no more (the proxy keeps the map it has, with the
/// nodes it started for redirections).
struct MovingNode {
    port: u16,
}

impl MovingNode {
    fn start() -> MovingNode {
        let maps = AtomicUsize::new(0);
        let moves = AtomicUsize::new(0);
        let port = fake_server(move |args, port| {
            answer_as_moving_node(args, port, &maps, &moves).into_bytes()
        });
        MovingNode { port }
    }
}

/// A fake server on a loopback port of its own (returned): a thread per
/// connection answers each command with `answer(args, port)`.
fn fake_server(answer: impl Fn(&[String], u16) -> Vec<u8> + Send + Sync + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let answer = Arc::new(answer);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
                let mut writer = stream;
                while let Some(args) = read_command(&mut reader) {
                    if writer.write_all(&answer(&args, port)).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// One RESP command of bulk strings, upper-cased; `None` at the end.
fn read_command(reader: &mut impl std::io::BufRead) -> Option<Vec<String>> {
    let mut line = String::new();
    reader.read_line(&mut line).ok().filter(|&n| n > 0)?;
    let count: usize = line.trim_end().strip_prefix('*')?.parse().ok()?;
    let mut args = Vec::with_capacity(count);
    for _ in 0..count {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let len: usize = line.trim_end().strip_prefix('$')?.parse().ok()?;
        let mut arg = vec![0u8; len + 2];
        reader.read_exact(&mut arg).ok()?;
        arg.truncate(len);
        args.push(String::from_utf8_lossy(&arg).to_uppercase());
    }
    Some(args)
}

fn answer_as_moving_node(
    args: &[String],
    port: u16,
    maps: &AtomicUsize,
    moves: &AtomicUsize,
) -> String {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["CLUSTER", "SLOTS"] if maps.fetch_add(1, Relaxed) == 0 => {
            format!("*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$9\r\n127.0.0.1\r\n:{port}\r\n")
        }
        ["CLUSTER", ..] => "-ERR not now\r\n".into(),
        ["PING", ..] => "+PONG\r\n".into(),
        ["CLIENT", "ID"] => ":7\r\n".into(),
        ["INFO", ..] => {
            let info = "# Server\r\nredis_version:7.0.15\r\n";
            format!("${}\r\n{info}\r\n", info.len())
        }
        ["GET", ..] => {
            let n = moves.fetch_add(1, Relaxed);
            format!("-MOVED {n} 127.0.{}.{}:{port}\r\n", n / 250, n % 250 + 2)
        }
        _ => "+OK\r\n".into(),
    }
}

/// A cluster node that redirects every request to a new address makes the
/// proxy start at most a few backends for those addresses until the next
/// slot map: 1 + 16 node backends here for 60 redirections (without the
/// bound, 61). Every request is answered, the proxy goes on.
#[test]
fn a_cluster_node_cannot_make_the_proxy_start_a_node_per_redirection() {
    let node = MovingNode::start();
    let proxy = Running::start(&format!(
        "[[backends]]\nid = \"c\"\ncluster = {{ seeds = [\"127.0.0.1:{}\"] }}\n\
         [pool]\nrequest_timeout_ms = 500\nconnect_timeout_ms = 300\n",
        node.port
    ));
    let mut client = proxy.client();
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "the slot map (a first redirection)",
        || client.text(&["GET", "session:first"]).starts_with('-'),
    );
    let requests = 60;
    for i in 0..requests {
        client.send(&[b"GET", format!("session:{i}").as_bytes()]);
    }
    for _ in 0..requests {
        let reply = client.read_reply();
        assert!(
            reply.starts_with(b"-"),
            "{}",
            String::from_utf8_lossy(&reply)
        );
    }
    let metrics = proxy.http("GET", "/metrics").1;
    let nodes = metrics
        .lines()
        .filter(|l| l.starts_with("session_proxy_backend_up{backend=\"c\",node="))
        .count();
    assert!(nodes <= 17, "{nodes} node backends:\n{metrics}");
    assert_eq!(client.text(&["PING"]), "+PONG\r\n");
}

/// A fake sentinel of master `m` (a real Redis at `master_port`), hostile
/// in one way: each `SENTINEL SENTINELS` names 50 sentinels never named
/// before (`127.0.N.M:26379`, where nothing listens). Its port, and how
/// many it named so far.
fn naming_sentinel(master_port: u16) -> (u16, Arc<AtomicUsize>) {
    let named = Arc::new(AtomicUsize::new(0));
    let count = named.clone();
    let port = fake_server(move |args, _| answer_as_naming_sentinel(args, master_port, &named));
    (port, count)
}

fn answer_as_naming_sentinel(args: &[String], master_port: u16, named: &AtomicUsize) -> Vec<u8> {
    let array = |items: &[String]| {
        let mut out = format!("*{}\r\n", items.len()).into_bytes();
        for item in items {
            out.extend(format!("${}\r\n{item}\r\n", item.len()).into_bytes());
        }
        out
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["SENTINEL", "GET-MASTER-ADDR-BY-NAME", _] => {
            array(&["127.0.0.1".into(), master_port.to_string()])
        }
        ["SENTINEL", "MASTER", _] => {
            let fields = ["name", "m", "ip", "127.0.0.1", "flags", "master"];
            let mut fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
            fields.extend(["port".into(), master_port.to_string()]);
            fields.extend(["config-epoch".into(), "0".into()]);
            array(&fields)
        }
        ["SENTINEL", "SENTINELS", _] => {
            let first = named.fetch_add(50, Relaxed);
            let mut out = b"*50\r\n".to_vec();
            for n in first..first + 50 {
                let ip = format!("127.0.{}.{}", 1 + n / 250, n % 250 + 2);
                let fields = ["name", &format!("s{n}"), "ip", &ip, "port", "26379"];
                let fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
                out.extend(array(&fields));
            }
            out
        }
        ["SUBSCRIBE", ..] => b"*3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n".to_vec(),
        ["PING", ..] => b"+PONG\r\n".to_vec(),
        _ => b"+OK\r\n".to_vec(),
    }
}

/// A sentinel that names ever new sentinels cannot grow the list the
/// monitor asks and subscribes to: it stays at most 16 (without the
/// bound, 50 more at every check), and the master it names is followed.
#[test]
fn a_sentinel_cannot_make_the_proxy_know_ever_more_sentinels() {
    let redis = Redis::start();
    let (sentinel, named) = naming_sentinel(redis.port);
    let proxy = Running::start(&format!(
        "[pool]\nconnect_timeout_ms = 300\nsentinel_recheck_ms = 100\n\
         [[backends]]\nid = \"s\"\nsentinel = {{ master = \"m\", addresses = [\"127.0.0.1:{sentinel}\"] }}\n"
    ));
    let mut client = proxy.client();
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "the master the sentinel names",
        || client.text(&["SET", "session:s", "v"]) == "+OK\r\n",
    );
    let known = || {
        let metrics = proxy.http("GET", "/metrics").1;
        crate::common::sample(&metrics, "session_proxy_sentinels_known{backend=\"s\"}")
    };
    // Five checks, each naming 50 new ones.
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "five checks",
        || named.load(Relaxed) >= 250,
    );
    let now = known();
    assert_eq!(now, Some(16.0), "sentinels known");
    assert_eq!(client.text(&["GET", "session:s"]), "$1\r\nv\r\n");
}

/// A fake Redis Cluster node of one shard (itself, every slot), slow in
/// one way: it answers each connection's handshake (SELECT) after
/// `handshake`. It counts the SETs it is sent.
fn slow_node(handshake: Duration, sets: Arc<AtomicUsize>) -> u16 {
    fake_server(move |args, port| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let reply = match args.as_slice() {
            ["CLUSTER", "SLOTS"] => {
                format!("*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$9\r\n127.0.0.1\r\n:{port}\r\n")
            }
            ["CLUSTER", ..] => "-ERR unknown subcommand\r\n".into(),
            ["SELECT", ..] => {
                std::thread::sleep(handshake);
                "+OK\r\n".into()
            }
            ["SET", ..] => {
                sets.fetch_add(1, Relaxed);
                "+OK\r\n".into()
            }
            ["GET", ..] => "$-1\r\n".into(),
            ["PING", ..] => "+PONG\r\n".into(),
            ["CLIENT", "ID"] => ":7\r\n".into(),
            _ => "+OK\r\n".into(),
        };
        reply.into_bytes()
    })
}

/// A write to a cluster node that its client gave up on (the request
/// timeout passed while the node's connection was still being made) is
/// not sent once the connection is up, as on a plain backend: the client
/// was told it failed, and a retry of it may have been acknowledged since.
#[test]
fn a_cluster_write_its_client_gave_up_on_is_not_sent_later() {
    let sets = Arc::new(AtomicUsize::new(0));
    let node = slow_node(Duration::from_millis(1500), sets.clone());
    let proxy = Running::start(&format!(
        "[pool]\nrequest_timeout_ms = 300\nconnect_timeout_ms = 5000\n\
         [[backends]]\nid = \"c\"\ncluster = {{ seeds = [\"127.0.0.1:{node}\"] }}\n"
    ));
    let mut client = proxy.client();
    let set = client.text(&["SET", "session:late", "v"]);
    assert!(set.starts_with('-'), "{set}");
    // Once a GET is answered, the node's connection is up and every job
    // queued before it was sent or dropped.
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "the node's connection",
        || client.text(&["GET", "session:late"]) == "$-1\r\n",
    );
    assert_eq!(sets.load(Relaxed), 0, "the SET given up on was sent");
}
