//! Test harness: real `redis-server` processes on free loopback ports in temp
//! dirs (killed on drop), the proxy in-process or as the built binary, and a
//! small raw RESP client that returns reply bytes exactly as sent.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use session_proxy::config::Config;
use session_proxy::server::{self, Listeners};
use session_proxy::shared::Shared;
use session_proxy::shutdown;

/// Longest a test waits for a process to become ready: a safety net against a
/// hung test, not an assertion about speed.
pub const READY_LIMIT: Duration = Duration::from_secs(20);

/// The value of one Prometheus series (`name{labels}`) in `text`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The samples in `text` whose labels contain `label` (a backend's
/// series: its state gauges, counters and latency).
pub fn series_of<'a>(text: &'a str, label: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.starts_with("session_proxy_") && l.contains(label))
        .collect()
}

/// A Prometheus recorder for this test binary, so an in-process proxy's
/// counters can be read. Install it before starting the proxy whose counters
/// a test reads: handles are bound to the recorder in place when made.
pub fn recorder() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("the test binary's only recorder")
    })
}

/// Polls `done` every `every` until it holds; fails the test with `what`
/// once `limit` has passed (a safety net, not an assertion about speed).
pub fn wait_until(limit: Duration, every: Duration, what: &str, done: impl FnMut() -> bool) {
    assert!(try_wait_until(limit, every, done), "{what}");
}

/// Like [`wait_until`], but says whether `done` held instead of failing,
/// for callers that explain a timeout themselves.
pub fn try_wait_until(limit: Duration, every: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
    true
}

/// A client of the proxy at `port` sending `BLPOP key timeout`, on a
/// thread of its own: its reply may take as long as a failover, longer
/// than a reply's usual limit on a loaded host.
pub fn blpop_on_a_thread(
    port: u16,
    key: &'static str,
    timeout: &'static str,
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut client = RawClient::connect(port);
        let limit = Some(Duration::from_secs(90));
        client.stream.set_read_timeout(limit).unwrap();
        client.text(&["BLPOP", key, timeout])
    })
}

/// Whether `node` has one client blocked, polled on a connection of its
/// own, which a failover (the sentinels' `CLIENT KILL TYPE normal`) may
/// close mid-poll: no answer yet.
pub fn blocks_one(node: &Redis) -> bool {
    RawClient::try_once_to(node.ip, node.port, &["INFO", "clients"])
        .is_ok_and(|reply| reply.contains("blocked_clients:1\r\n"))
}

/// Waits until `node` has one client blocked (see [`blocks_one`]).
pub fn until_blocks_one(node: &Redis, what: &str) {
    wait_until(READY_LIMIT, Duration::from_millis(20), what, || {
        blocks_one(node)
    });
}

/// The BLPOP of `key` on `blocked`, given up by the server it blocked on
/// first, blocks on `node` unanswered until an element is pushed there,
/// which it then gets.
pub fn blpop_gets_what_is_pushed_on(
    blocked: std::thread::JoinHandle<String>,
    node: &Redis,
    key: &str,
) {
    let every = Duration::from_millis(20);
    let moved = try_wait_until(Duration::from_secs(60), every, || {
        blocks_one(node) || blocked.is_finished()
    });
    assert!(moved, "BLPOP never blocked on {}", node.address());
    assert!(
        !blocked.is_finished(),
        "the client was answered: {:?}",
        blocked.join()
    );
    assert_eq!(node.client().text(&["LPUSH", key, "job"]), ":1\r\n");
    assert_eq!(
        blocked.join().unwrap(),
        format!("*2\r\n${}\r\n{key}\r\n$3\r\njob\r\n", key.len())
    );
}

/// A hosts file (`[pool] hosts_file`) giving one name one address, which
/// the test moves as a managed service moves its endpoint's name: the file
/// is replaced whole, so no lookup reads it half written.
pub struct HostsFile {
    dir: tempfile::TempDir,
    pub path: PathBuf,
    name: &'static str,
}

impl HostsFile {
    pub fn naming(name: &'static str, ip: &str) -> HostsFile {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        let file = HostsFile { dir, path, name };
        file.point(ip);
        file
    }

    /// A proxy's config with one backend, `named`, reached by this name at
    /// `port`, this file as its `[pool] hosts_file`; `pool` adds the
    /// section's other lines.
    pub fn proxy_config(&self, port: u16, pool: &str) -> String {
        format!(
            "[listen]\naddress = \"127.0.0.1:0\"\n[pool]\n{pool}hosts_file = \"{}\"\n\
             [[backends]]\nid = \"named\"\naddress = \"{}:{port}\"\n",
            self.path.display(),
            self.name
        )
    }

    pub fn point(&self, ip: &str) {
        let next = self.dir.path().join("hosts.next");
        std::fs::write(&next, format!("{ip} {}\n", self.name)).unwrap();
        std::fs::rename(&next, &self.path).unwrap();
    }
}

/// A free loopback port (never 6379), and never one this process handed
/// out before: every test runs in one process, and a port released here
/// may be given again before the server it was meant for binds it.
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind an ephemeral port");
        if port != 6379 && reserve_port(port) {
            return port;
        }
    }
}

/// Marks a port as taken for the rest of the process (a cluster node's bus
/// port too); false if it was already.
pub fn reserve_port(port: u16) -> bool {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    if given.contains(&port) {
        return false;
    }
    given.push(port);
    true
}

/// A real redis-server process.
pub struct Redis {
    pub port: u16,
    /// The loopback address it listens on (127.0.0.1 but for
    /// [`Redis::start_at`]).
    pub ip: &'static str,
    /// Kept for its lifetime: the server's files are removed with it.
    _dir: tempfile::TempDir,
    /// The server process; replaced by [`Redis::restart`].
    child: std::sync::Mutex<Child>,
    /// The arguments it was started with after the usual ones.
    extra: Vec<String>,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// Starts redis-server with extra `--name value` arguments on a free
    /// port. `free_port` releases the port before redis-server binds it, so
    /// another process can take it meanwhile: then redis-server exits, and
    /// another port is tried.
    pub fn start_with(extra: &[&str]) -> Redis {
        for _ in 0..5 {
            if let Some(redis) = Redis::try_start_on(free_port(), extra) {
                return redis;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// A Redis Cluster node on a free port whose cluster bus port (10,000
    /// higher) is free too: Redis refuses a port over 55535 in cluster mode.
    pub fn start_cluster_node(extra: &[&str]) -> Redis {
        for _ in 0..20 {
            let port = free_port();
            let bus_free = port <= 55535
                && reserve_port(port + 10000)
                && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok();
            if bus_free {
                if let Some(redis) = Redis::try_start_on(port, extra) {
                    return redis;
                }
            }
        }
        panic!("no cluster node started on 20 free ports");
    }

    /// Starts redis-server on `ip` (a loopback address such as 127.0.0.2)
    /// and `port`: two servers on two addresses, one port, as a host name
    /// that moves between them would see.
    pub fn start_at(ip: &'static str, port: u16, extra: &[&str]) -> Redis {
        Redis::try_start(ip, port, extra)
            .unwrap_or_else(|| panic!("redis-server did not start on {ip}:{port}"))
    }

    /// Starts redis-server on a given port.
    pub fn start_on(port: u16, extra: &[&str]) -> Redis {
        Redis::try_start_on(port, extra)
            .unwrap_or_else(|| panic!("redis-server did not start on port {port}"))
    }

    /// Starts redis-server on `port` and waits until it answers PING;
    /// `None` if it exits first (the port was taken).
    fn try_start_on(port: u16, extra: &[&str]) -> Option<Redis> {
        Redis::try_start("127.0.0.1", port, extra)
    }

    fn try_start(ip: &'static str, port: u16, extra: &[&str]) -> Option<Redis> {
        let dir = tempfile::tempdir().expect("tempdir");
        let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        let child = Redis::spawn(ip, port, dir.path(), &extra);
        let redis = Redis {
            port,
            ip,
            _dir: dir,
            child: std::sync::Mutex::new(child),
            extra,
        };
        redis.wait_started().then_some(redis)
    }

    fn spawn(ip: &str, port: u16, dir: &Path, extra: &[String]) -> Child {
        // SESSION_PROXY_TEST_SERVER runs the same tests against another
        // server binary (scripts/test.sh runs the differentials on Valkey).
        let server = std::env::var("SESSION_PROXY_TEST_SERVER")
            .unwrap_or_else(|_| "redis-server".to_string());
        Command::new(server)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                ip,
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--dir", dir.to_str().unwrap_or(".")])
            .args(
                server_log("redis", port)
                    .map(|log| ["--logfile".to_string(), log])
                    .into_iter()
                    .flatten(),
            )
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)")
    }

    /// Waits until the server answers PING; false if it exited first.
    fn wait_started(&self) -> bool {
        let mut exited = false;
        let ready = try_wait_until(READY_LIMIT, Duration::from_millis(10), || {
            exited = self
                .child
                .lock()
                .unwrap()
                .try_wait()
                .ok()
                .flatten()
                .is_some();
            exited || self.answers_ping()
        });
        assert!(ready, "redis-server on {} did not start", self.port);
        !exited
    }

    /// Kills the server (SIGKILL) and starts it again on the same port,
    /// directory and arguments: a crashed node coming back, which Sentinel
    /// turns into a replica of the new master. Nothing is saved by the
    /// server itself, but a replica keeps the RDB of its last full sync on
    /// disk and loads it again: it may come back with old data.
    pub fn restart(&self) {
        self.restart_with(&[]);
    }

    /// [`Redis::restart`] with `more` arguments this time only.
    pub fn restart_with(&self, more: &[&str]) {
        let mut args = self.extra.clone();
        args.extend(more.iter().map(|a| a.to_string()));
        let mut child = self.child.lock().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        *child = Redis::spawn(self.ip, self.port, self._dir.path(), &args);
        drop(child);
        assert!(self.wait_started(), "redis-server on {} exited", self.port);
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut client) = RawClient::try_connect_to(self.ip, self.port) else {
            return false;
        };
        if client
            .stream
            .write_all(&RawClient::encode(&[b"PING"]))
            .is_err()
        {
            return false;
        }
        match client.try_read_reply() {
            Ok(reply) => reply == b"+PONG\r\n" || reply.starts_with(b"-NOAUTH"),
            Err(_) => false,
        }
    }

    pub fn address(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap().id()
    }

    /// A client connected straight to this server.
    pub fn client(&self) -> RawClient {
        RawClient::try_connect_to(self.ip, self.port).expect("connect")
    }

    /// Waits (at most `limit`) until the server's `INFO replication`
    /// satisfies `holds`; false if it never did. One connection per look:
    /// the sentinels kill a node's clients when they change its role, and a
    /// look cut short is a "not yet".
    pub fn replication_until(&self, limit: Duration, holds: impl Fn(&str) -> bool) -> bool {
        try_wait_until(limit, Duration::from_millis(20), || {
            RawClient::try_once_to(self.ip, self.port, &["INFO", "replication"])
                .is_ok_and(|i| holds(&i))
        })
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Ok(child) = self.child.get_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The proxy running in this process on its own runtime.
pub struct Proxy {
    pub port: u16,
    pub shared: Arc<Shared>,
    trigger: Option<shutdown::Trigger>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Starts the proxy from config text; `listen.address` should use port 0.
    /// SESSION_PROXY_TEST_THREADS=1 runs it on one thread (as `[runtime]
    /// threads = 1` does), N on N; 2 by default.
    pub fn start(config_text: &str) -> Proxy {
        let threads: usize = std::env::var("SESSION_PROXY_TEST_THREADS")
            .ok()
            .and_then(|t| t.parse().ok())
            .unwrap_or(2);
        Proxy::start_on(config_text, threads)
    }

    /// Starts the proxy on `threads` worker threads, as `[runtime] threads`
    /// does (1, the default on two cores or less, is one current-thread runtime).
    pub fn start_on(config_text: &str, threads: usize) -> Proxy {
        let config = Config::parse(config_text).expect("valid test config");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (trigger, shutdown) = shutdown::channel();
        let thread = std::thread::spawn(move || {
            session_proxy::workers::run(threads, || async move {
                let listeners = Listeners::bind(&config).await.expect("bind");
                let port = listeners.tcp_port();
                let shared = Arc::new(Shared::new(config, port).expect("start backends"));
                ready_tx.send((port, shared.clone())).expect("report ready");
                server::run(listeners, shared, shutdown).await;
            })
            .expect("worker runtimes");
        });
        let (port, shared) = ready_rx.recv_timeout(READY_LIMIT).expect("proxy started");
        Proxy {
            port,
            shared,
            trigger: Some(trigger),
            thread: Some(thread),
        }
    }

    pub fn client(&self) -> RawClient {
        RawClient::connect(self.port)
    }

    /// Starts the drain, as SIGTERM does, without waiting for it to end.
    pub fn begin_shutdown(&self) {
        if let Some(trigger) = &self.trigger {
            trigger.fire();
        }
    }

    /// The first key `{prefix}{n}` that `backend` (an index in the config) owns.
    pub fn key_on(&self, backend: usize, prefix: &str) -> String {
        (0..)
            .map(|i| format!("{prefix}{i}"))
            .find(|k| self.owner(k) == backend)
            .unwrap_or_default()
    }

    /// The index in the config of the backend that owns `key`.
    pub fn owner(&self, key: &str) -> usize {
        self.shared.topology().router.owner(key.as_bytes())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(trigger) = self.trigger.take() {
            trigger.fire();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One `[[backends]]` table.
fn backend_toml(id: &str, address: &str, weight: f64) -> String {
    format!("[[backends]]\nid = \"{id}\"\naddress = \"{address}\"\nweight = {weight}\n")
}

/// Config text for a proxy on a free port in front of `backends` (id, address, weight).
pub fn config_for(backends: &[(&str, String, f64)], extra: &str) -> String {
    let mut text = format!("[listen]\naddress = \"127.0.0.1:0\"\n{extra}\n");
    for (id, address, weight) in backends {
        text.push_str(&backend_toml(id, address, *weight));
    }
    text
}

/// The `[[backends]]` tables for servers started here (id, server,
/// weight): a body for [`Running::start`] and [`router_for`].
pub fn backends_toml(list: &[(&str, &Redis, f64)]) -> String {
    list.iter()
        .map(|(id, redis, weight)| backend_toml(id, &redis.address(), *weight))
        .collect()
}

/// The config and router a proxy would build from `body` (its sections
/// after `[listen]`).
pub fn router_for(body: &str) -> (Config, session_proxy::router::Router) {
    let config = Config::parse(&format!("[listen]\naddress = \"127.0.0.1:1\"\n{body}")).unwrap();
    let router = session_proxy::router::Router::of(&config).unwrap();
    (config, router)
}

/// Connections of `redis` whose last command was `command` (CLIENT LIST's
/// `cmd=`): a leased connection given back stays listed with it.
pub fn last_ran(redis: &Redis, command: &str) -> usize {
    let list = redis.client().text(&["CLIENT", "LIST"]);
    let cmd = format!(" cmd={command} ");
    list.lines().filter(|l| l.contains(&cmd)).count()
}

/// Connections the backend has accepted so far, asked over `direct`.
pub fn connections_received(direct: &mut RawClient) -> u64 {
    let info = direct.text(&["INFO", "stats"]);
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("INFO stats has total_connections_received")
}

/// A proxy on a free port in front of `servers`, with backend ids b0, b1,
/// ... in order, and `extra` config text.
pub fn proxy_over<R: std::borrow::Borrow<Redis>>(servers: &[R], extra: &str) -> Proxy {
    let mut text = format!("[listen]\naddress = \"127.0.0.1:0\"\n{extra}\n");
    for (i, redis) in servers.iter().enumerate() {
        text.push_str(&format!(
            "[[backends]]\nid = \"b{i}\"\naddress = \"{}\"\n",
            redis.borrow().address()
        ));
    }
    Proxy::start(&text)
}

/// The differential set-up: plain Redis servers behind a proxy, and a
/// reference Redis alone, each on a free loopback port.
pub struct Differential {
    pub servers: Vec<Redis>,
    pub reference: Redis,
    pub proxy: Proxy,
}

impl Differential {
    /// `backends` servers behind a proxy whose config has `extra` too.
    pub fn start(backends: usize, extra: &str) -> Differential {
        let servers: Vec<Redis> = (0..backends).map(|_| Redis::start()).collect();
        let reference = Redis::start();
        let proxy = proxy_over(&servers, extra);
        Differential {
            servers,
            reference,
            proxy,
        }
    }

    /// One server per weight behind a proxy (backends `a`, `b`, `c`...).
    pub fn weighted(weights: &[f64], extra: &str) -> Differential {
        let reference = Redis::start();
        let servers: Vec<Redis> = weights.iter().map(|_| Redis::start()).collect();
        let ids: Vec<String> = (b'a'..)
            .take(weights.len())
            .map(|c| char::from(c).to_string())
            .collect();
        let list: Vec<(&str, String, f64)> = servers
            .iter()
            .zip(&ids)
            .zip(weights)
            .map(|((redis, id), weight)| (&id[..], redis.address(), *weight))
            .collect();
        let proxy = Proxy::start(&config_for(&list, extra));
        Differential {
            servers,
            reference,
            proxy,
        }
    }

    /// Empties the reference and every server.
    pub fn flush(&self) {
        for redis in std::iter::once(&self.reference).chain(&self.servers) {
            assert_eq!(redis.client().cmd(&["FLUSHALL"]), b"+OK\r\n");
        }
    }
}

/// A client of the proxy and one of the reference Redis, both after
/// `HELLO 3` when `resp3`.
pub fn pair(proxy: &Proxy, reference: &Redis, resp3: bool) -> (RawClient, RawClient) {
    let (mut through, mut direct) = (proxy.client(), reference.client());
    if resp3 {
        through.hello3();
        direct.hello3();
    }
    (through, direct)
}

/// A blocking RESP client that returns each reply's exact bytes.
pub struct RawClient {
    pub stream: TcpStream,
    buf: BytesMut,
    /// RESP3 replies are framed with the RESP3 decoder.
    pub resp3: bool,
}

impl RawClient {
    pub fn connect(port: u16) -> RawClient {
        RawClient::try_connect(port).expect("connect")
    }

    pub fn try_connect(port: u16) -> std::io::Result<RawClient> {
        RawClient::try_connect_to("127.0.0.1", port)
    }

    pub fn try_connect_to(ip: &str, port: u16) -> std::io::Result<RawClient> {
        let stream = TcpStream::connect((ip, port))?;
        stream.set_read_timeout(Some(READY_LIMIT))?;
        stream.set_nodelay(true)?;
        Ok(RawClient {
            stream,
            buf: BytesMut::new(),
            resp3: false,
        })
    }

    pub fn encode(args: &[&[u8]]) -> Vec<u8> {
        session_proxy::protocol::encode_args(args)
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// One command on a new connection, for a server that may close it
    /// (Sentinel kills a promoted replica's clients): the reply, or the error.
    pub fn try_once(port: u16, args: &[&str]) -> std::io::Result<String> {
        RawClient::try_once_to("127.0.0.1", port, args)
    }

    /// [`RawClient::try_once`] to a server on `ip`.
    pub fn try_once_to(ip: &str, port: u16, args: &[&str]) -> std::io::Result<String> {
        let mut client = RawClient::try_connect_to(ip, port)?;
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        client.stream.write_all(&RawClient::encode(&args))?;
        Ok(String::from_utf8_lossy(&client.try_read_reply()?).into_owned())
    }

    pub fn send(&mut self, args: &[&[u8]]) {
        self.send_raw(&RawClient::encode(args));
    }

    /// Reads one whole reply and returns its bytes.
    pub fn read_reply(&mut self) -> Vec<u8> {
        self.try_read_reply().expect("read reply")
    }

    pub fn try_read_reply(&mut self) -> std::io::Result<Vec<u8>> {
        loop {
            // The proxy's own framing, RESP2 and RESP3: it takes errors that
            // are not UTF-8, as Redis sends them, and sets of maps, which
            // redis-protocol's decoder refuses.
            let framed = session_proxy::protocol::reply_extent(&self.buf, usize::MAX)
                .map_err(|e| format!("{e:?}"));
            match framed {
                Ok(Some(n)) => return Ok(self.buf.split_to(n).to_vec()),
                Ok(None) => {}
                Err(e) => panic!(
                    "undecodable reply {:?}: {e}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends one command and returns its reply's bytes.
    pub fn cmd(&mut self, args: &[&str]) -> Vec<u8> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.send(&args);
        self.read_reply()
    }

    /// `cmd`, with the reply as text for readable assertions.
    pub fn text(&mut self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.cmd(args)).into_owned()
    }

    /// Switches to RESP3 with HELLO 3.
    pub fn hello3(&mut self) {
        self.resp3 = true;
        let reply = self.cmd(&["HELLO", "3"]);
        assert_eq!(
            reply[0],
            b'%',
            "HELLO 3 reply: {:?}",
            String::from_utf8_lossy(&reply)
        );
    }

    /// True once the server has closed the connection.
    pub fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0) | Err(_))
    }
}

/// The built `session-proxy` binary.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_session-proxy"))
}

/// Writes `text` to `name` in `dir` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}

/// A real redis-sentinel process.
/// With `SESSION_PROXY_TEST_LOGS` set to a directory, where a test's
/// redis-server or redis-sentinel on `port` logs (`{kind}-{port}.log`, appended
/// across restarts): the nemesis keeps them beside the proxies' logs.
fn server_log(kind: &str, port: u16) -> Option<String> {
    let dir = std::env::var_os("SESSION_PROXY_TEST_LOGS")?;
    std::fs::create_dir_all(&dir).ok()?;
    let path = Path::new(&dir).join(format!("{kind}-{port}.log"));
    Some(path.to_str()?.to_string())
}

pub struct SentinelProc {
    pub port: u16,
    _dir: tempfile::TempDir,
    child: Child,
}

impl SentinelProc {
    /// Starts a sentinel monitoring `name` at `master_port`, on `port`.
    /// Starts redis-sentinel on `port`, monitoring `name` at `master_port`.
    pub fn start(port: u16, name: &str, master_port: u16, down_after_ms: u64) -> SentinelProc {
        SentinelProc::try_start(port, name, master_port, down_after_ms)
            .unwrap_or_else(|| panic!("redis-sentinel did not start on port {port}"))
    }

    /// Starts redis-sentinel on a free port; another is tried if the port
    /// was taken before the sentinel bound it (as for [`Redis::start_with`]).
    pub fn start_free(name: &str, master_port: u16, down_after_ms: u64) -> SentinelProc {
        (0..5)
            .find_map(|_| SentinelProc::try_start(free_port(), name, master_port, down_after_ms))
            .expect("redis-sentinel did not start on any of 5 free ports")
    }

    /// A sentinel with `extra` lines in its config (TLS settings, say),
    /// on a free plain port besides whatever `extra` opens.
    pub fn start_with(
        name: &str,
        master_port: u16,
        down_after_ms: u64,
        extra: &str,
    ) -> SentinelProc {
        SentinelProc::start_monitoring(name, "127.0.0.1", master_port, down_after_ms, extra)
    }

    /// A sentinel monitoring the master at `host` (a host name, with
    /// `sentinel resolve-hostnames yes` among the `extra` lines).
    pub fn start_monitoring(
        name: &str,
        host: &str,
        master_port: u16,
        down_after_ms: u64,
        extra: &str,
    ) -> SentinelProc {
        (0..5)
            .find_map(|_| {
                let port = free_port();
                SentinelProc::try_start_at(port, name, host, master_port, down_after_ms, extra)
            })
            .expect("redis-sentinel did not start on any of 5 free ports")
    }

    /// `None` if the sentinel exits before answering (its port was taken).
    fn try_start(
        port: u16,
        name: &str,
        master_port: u16,
        down_after_ms: u64,
    ) -> Option<SentinelProc> {
        SentinelProc::try_start_at(port, name, "127.0.0.1", master_port, down_after_ms, "")
    }

    fn try_start_at(
        port: u16,
        name: &str,
        host: &str,
        master_port: u16,
        down_after_ms: u64,
        extra: &str,
    ) -> Option<SentinelProc> {
        let dir = tempfile::tempdir().expect("tempdir");
        // `extra` first: `resolve-hostnames` must come before a monitor of a name.
        let conf = format!(
            "port {port}\nbind 127.0.0.1\ndir {}\n{extra}\nsentinel monitor {name} {host} {master_port} 2\n\
             sentinel down-after-milliseconds {name} {down_after_ms}\nsentinel failover-timeout {name} 5000\n\
             sentinel parallel-syncs {name} 1\n",
            dir.path().display()
        );
        let conf = match server_log("sentinel", port) {
            Some(log) => format!("{conf}logfile {log}\n"),
            None => conf,
        };
        let path = write_file(dir.path(), "sentinel.conf", &conf);
        let child = Command::new("redis-sentinel")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-sentinel must be installed (apt-get install redis-sentinel)");
        let mut sentinel = SentinelProc {
            port,
            _dir: dir,
            child,
        };
        let mut exited = false;
        let ready = try_wait_until(READY_LIMIT, Duration::from_millis(10), || {
            exited = sentinel.child.try_wait().ok().flatten().is_some();
            exited
                || RawClient::try_connect(port).is_ok_and(|mut c| c.cmd(&["PING"]) == b"+PONG\r\n")
        });
        assert!(ready, "redis-sentinel on {port} did not start");
        (!exited).then_some(sentinel)
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn client(&self) -> RawClient {
        RawClient::connect(self.port)
    }

    /// The master this sentinel names now, as "ip:port".
    pub fn master_of(&self, name: &str) -> Option<String> {
        let mut c = RawClient::try_connect(self.port).ok()?;
        let reply = String::from_utf8_lossy(&c.cmd(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", name]))
            .into_owned();
        let parts: Vec<&str> = reply.split("\r\n").collect();
        // *2 $len ip $len port
        match parts.as_slice() {
            [_, _, ip, _, port, ..] => Some(format!("{ip}:{port}")),
            _ => None,
        }
    }

    /// Whether this sentinel sees `name`'s master down or being failed
    /// over now (its flags in SENTINEL MASTER).
    pub fn failing_over(&self, name: &str) -> bool {
        let Ok(mut c) = RawClient::try_connect(self.port) else {
            return false;
        };
        let reply = String::from_utf8_lossy(&c.cmd(&["SENTINEL", "MASTER", name])).into_owned();
        let flags = reply
            .split("\r\n")
            .skip_while(|line| *line != "flags")
            .nth(2)
            .unwrap_or_default();
        flags.contains("failover_in_progress") || flags.contains("s_down")
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SentinelProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Sentinel-managed group: one master, replicas, three sentinels.
pub struct Group {
    pub name: String,
    /// The data nodes; `nodes[0]` starts as the master.
    pub nodes: Vec<Redis>,
    pub sentinels: Vec<SentinelProc>,
}

impl Group {
    pub fn start(name: &str, replicas: usize, down_after_ms: u64) -> Group {
        Group::start_with_sentinels(name, replicas, down_after_ms, None, &[])
    }

    /// A group whose data nodes run with `node_args` too (kept across
    /// their restarts).
    pub fn start_with_node_args(
        name: &str,
        replicas: usize,
        down_after_ms: u64,
        node_args: &[&str],
    ) -> Group {
        Group::start_with_sentinels(name, replicas, down_after_ms, None, node_args)
    }

    /// Starts a group whose sentinels listen on the given ports.
    pub fn start_on(
        name: &str,
        replicas: usize,
        down_after_ms: u64,
        sentinel_ports: Vec<u16>,
    ) -> Group {
        Group::start_with_sentinels(name, replicas, down_after_ms, Some(sentinel_ports), &[])
    }

    /// Sentinels on `sentinel_ports`, or on free ports (retried) when
    /// `None`; data nodes with `node_args`.
    fn start_with_sentinels(
        name: &str,
        replicas: usize,
        down_after_ms: u64,
        sentinel_ports: Option<Vec<u16>>,
        node_args: &[&str],
    ) -> Group {
        let master = Redis::start_with(node_args);
        let mut nodes = vec![master];
        for _ in 0..replicas {
            let port = nodes[0].port.to_string();
            let mut args = vec!["--replicaof", "127.0.0.1", &port];
            args.extend_from_slice(node_args);
            nodes.push(Redis::start_with(&args));
        }
        let master_port = nodes[0].port;
        let sentinels = match sentinel_ports {
            Some(ports) => ports
                .into_iter()
                .map(|port| SentinelProc::start(port, name, master_port, down_after_ms))
                .collect(),
            None => (0..3)
                .map(|_| SentinelProc::start_free(name, master_port, down_after_ms))
                .collect(),
        };
        let group = Group {
            name: name.to_string(),
            nodes,
            sentinels,
        };
        group.wait_settled();
        group
    }

    pub fn sentinel_addresses(&self) -> Vec<String> {
        self.sentinels.iter().map(|s| s.address()).collect()
    }

    /// The sentinels' view as a TOML inline table.
    pub fn sentinel_toml(&self) -> String {
        let list: Vec<String> = self
            .sentinel_addresses()
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect();
        format!(
            "{{ master = \"{}\", addresses = [{}] }}",
            self.name,
            list.join(", ")
        )
    }

    /// Waits until every sentinel knows every replica (in sync) and the other sentinels.
    pub fn wait_settled(&self) {
        let replicas = self.nodes.len() - 1;
        let what = format!("sentinel group {} did not settle", self.name);
        wait_until(
            Duration::from_secs(60),
            Duration::from_millis(50),
            &what,
            || {
                self.sentinels.iter().all(|s| {
                    let mut c = s.client();
                    let reps =
                        String::from_utf8_lossy(&c.cmd(&["SENTINEL", "REPLICAS", &self.name]))
                            .into_owned();
                    let others =
                        String::from_utf8_lossy(&c.cmd(&["SENTINEL", "SENTINELS", &self.name]))
                            .into_owned();
                    reps.matches("master-link-status\r\n$2\r\nok").count() == replicas
                        && !reps.contains("disconnected")
                        && others.starts_with(&format!("*{}\r\n", self.sentinels.len() - 1))
                })
            },
        );
    }

    /// The master the (first reachable) sentinel names.
    pub fn master_address(&self) -> Option<String> {
        self.sentinels.iter().find_map(|s| s.master_of(&self.name))
    }

    /// The data node at an address.
    pub fn node(&self, address: &str) -> Option<&Redis> {
        self.nodes.iter().find(|n| n.address() == address)
    }

    /// Forces a failover and returns once a sentinel accepted it.
    pub fn failover(&self) {
        self.failover_via(0);
    }

    /// Forces a failover through sentinel `index`.
    pub fn failover_via(&self, index: usize) {
        // -NOGOODSLAVE while a replica is not ready yet; -INPROG while one runs.
        let mut reply = String::new();
        let accepted = try_wait_until(Duration::from_secs(60), Duration::from_millis(100), || {
            reply = self.sentinels[index]
                .client()
                .text(&["SENTINEL", "FAILOVER", &self.name]);
            reply == "+OK\r\n"
        });
        assert!(accepted, "SENTINEL FAILOVER kept failing: {reply}");
    }

    /// Waits until every live sentinel names a master other than `old`; returns it.
    /// Whether any live sentinel sees the master down or being failed over.
    pub fn failing_over(&self) -> bool {
        self.sentinels.iter().any(|s| s.failing_over(&self.name))
    }

    pub fn wait_new_master(&self, old: &str) -> String {
        let (mut views, mut new) = (Vec::new(), None);
        let moved = try_wait_until(Duration::from_secs(60), Duration::from_millis(20), || {
            views = self
                .sentinels
                .iter()
                .map(|s| s.master_of(&self.name))
                .collect::<Vec<Option<String>>>();
            let live: Vec<&String> = views.iter().flatten().collect();
            if !live.is_empty() && live.iter().all(|m| m.as_str() != old && *m == live[0]) {
                new = Some(live[0].clone());
            }
            new.is_some()
        });
        assert!(moved, "no failover away from {old}: {views:?}");
        new.unwrap_or_default()
    }
}

/// The master address a proxy backend follows now.
pub fn proxy_master(proxy: &Proxy, backend: usize) -> Option<String> {
    match proxy.shared.topology().backends[backend]
        .endpoint
        .borrow()
        .clone()
    {
        Some(session_proxy::config::Endpoint::Tcp(address)) => Some(address),
        _ => None,
    }
}

/// Waits until a proxy backend follows `master`.
pub fn wait_proxy_master(proxy: &Proxy, backend: usize, master: &str) {
    let follows = try_wait_until(Duration::from_secs(30), Duration::from_millis(10), || {
        proxy_master(proxy, backend).as_deref() == Some(master)
    });
    assert!(
        follows,
        "proxy backend {backend} follows {:?}, not {master}",
        proxy_master(proxy, backend)
    );
}

/// The proxy binary with a config file and an admin listener.
pub struct Running {
    pub port: u16,
    pub admin: u16,
    child: Child,
    config: PathBuf,
    /// Environment variables the process starts with.
    env: Vec<(String, String)>,
    /// Its open files limit, `soft:hard` as `prlimit --nofile` takes it.
    nofile: Option<String>,
    _dir: tempfile::TempDir,
}

impl Running {
    /// Starts the binary with `body` after its own `[listen]` and `[admin]`
    /// sections, on free ports. A port can be taken between `free_port`
    /// and the binary's bind: then the binary exits, and other ports are
    /// tried.
    pub fn start(body: &str) -> Running {
        Running::start_with_env(body, &[])
    }

    /// [`Running::start`], with these environment variables set for the
    /// process.
    pub fn start_with_env(body: &str, env: &[(&str, &str)]) -> Running {
        Running::start_limited(body, env, None)
    }

    /// [`Running::start_with_env`], with the open files limit `nofile`
    /// (`soft:hard`, as `prlimit --nofile` takes it) when given.
    pub fn start_limited(body: &str, env: &[(&str, &str)], nofile: Option<&str>) -> Running {
        for _ in 0..5 {
            if let Some(running) = Running::try_start(body, env, nofile) {
                return running;
            }
        }
        panic!("the proxy did not start on any of 5 pairs of free ports");
    }

    fn try_start(body: &str, env: &[(&str, &str)], nofile: Option<&str>) -> Option<Running> {
        let dir = tempfile::tempdir().unwrap();
        let (port, admin) = (free_port(), free_port());
        let text = format!(
            "[listen]\naddress = \"127.0.0.1:{port}\"\n[admin]\naddress = \"127.0.0.1:{admin}\"\n{body}"
        );
        let config = write_file(dir.path(), "proxy.toml", &text);
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let nofile = nofile.map(str::to_string);
        let mut running = Running {
            child: Running::spawn(&config, &env, nofile.as_deref()),
            port,
            admin,
            config,
            env,
            nofile,
            _dir: dir,
        };
        running.wait_ready().then_some(running)
    }

    /// Starts the binary. With `SESSION_PROXY_TEST_LOGS` set to a
    /// directory, its log goes to a file there named after the config's
    /// directory (the nemesis keeps them beside its history).
    fn spawn(config: &Path, env: &[(String, String)], nofile: Option<&str>) -> Child {
        let log = std::env::var_os("SESSION_PROXY_TEST_LOGS").and_then(|dir| {
            let name = config.parent()?.file_name()?.to_string_lossy().into_owned();
            std::fs::create_dir_all(&dir).ok()?;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(Path::new(&dir).join(format!("proxy{name}.log")))
                .ok()
        });
        let stderr = match log {
            Some(file) => Stdio::from(file),
            None => Stdio::null(),
        };
        let mut command = match nofile {
            Some(limit) => {
                let mut prlimit = Command::new("prlimit");
                prlimit.arg(format!("--nofile={limit}")).arg(binary());
                prlimit
            }
            None => Command::new(binary()),
        };
        command
            .arg("--config")
            .arg(config)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap()
    }

    /// Waits until both ports answer; false if the process exited first.
    fn wait_ready(&mut self) -> bool {
        let mut exited = false;
        let (port, admin) = (self.port, self.admin);
        let ready = try_wait_until(READY_LIMIT, Duration::from_millis(10), || {
            exited = self.child.try_wait().ok().flatten().is_some();
            exited
                || (RawClient::try_connect(port).is_ok()
                    && TcpStream::connect(("127.0.0.1", admin)).is_ok())
        });
        assert!(ready, "the proxy did not start");
        !exited
    }

    /// The config file the proxy runs from.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Stops the proxy by SIGTERM (its drain) and starts it again on the
    /// same config file, directory and ports, as a service manager would.
    pub fn restart(&mut self) {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(30));
        self.child = Running::spawn(&self.config, &self.env, self.nofile.as_deref());
        assert!(self.wait_ready(), "the restarted proxy exited");
    }

    pub fn client(&self) -> RawClient {
        RawClient::connect(self.port)
    }

    /// The proxy process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn http(&self, method: &str, path: &str) -> (u16, String) {
        http(self.admin, method, path)
    }

    /// Rewrites the config file, keeping the listen and admin sections.
    pub fn rewrite(&self, body: &str) {
        let text = format!(
            "[listen]\naddress = \"127.0.0.1:{}\"\n[admin]\naddress = \"127.0.0.1:{}\"\n{body}",
            self.port, self.admin
        );
        std::fs::write(&self.config, text).unwrap();
    }

    pub fn signal(&self, signal: &str) {
        Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
    }

    pub fn generation(&self) -> u64 {
        let (_, body) = self.http("GET", "/topology");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        json["generation"].as_u64().unwrap()
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let mut status = None;
        wait_until(
            limit,
            Duration::from_millis(10),
            "the proxy did not exit",
            || {
                status = self.child.try_wait().unwrap();
                status.is_some()
            },
        );
        status.expect("exited")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 request; returns the status and the body.
pub fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(READY_LIMIT)).unwrap();
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A command running the venv's Python.
pub fn python(venv: &str) -> Command {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("target").join(venv).join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup-python.sh (the README's test command does)",
        python.display()
    );
    Command::new(python)
}

/// Runs one phase of `tests/python/django_sessions.py` (redis-py 8.1) for
/// both Django session engines against the proxy on `port`, and checks its
/// output has `expect`; each engine keeps its sessions' cookies in its own
/// state file in `dir` between the phases.
pub fn django_phase(port: u16, dir: &Path, phase: &str, expect: &str) {
    let port = port.to_string();
    for engine in ["redis_sessions", "cache"] {
        let state = dir.join(format!("{engine}.json"));
        let state = state.to_str().unwrap_or_default();
        let args = [
            "--engine", engine, "--port", &port, "--state", state, "--phase", phase,
        ];
        let out = run_script("venv-redis8", "django_sessions.py", &args);
        assert!(out.contains(expect), "{engine} {phase}: {out}");
    }
}

pub fn run_script(venv: &str, script: &str, args: &[&str]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    run_checked(
        python(venv)
            .arg(root.join("tests/python").join(script))
            .args(args),
        &format!("{script} {args:?}"),
    )
}

/// Runs a program to success and returns what it printed; a failure shows
/// its output and `what` it was.
pub fn run_checked(command: &mut Command, what: &str) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e} (scripts/test.sh installs what the tests run)"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A Redis Cluster made by the test: `masters` masters with `replicas`
/// replicas each (`redis-cli --cluster create`), on free loopback ports,
/// stopped with the value.
pub struct Cluster {
    pub nodes: Vec<Redis>,
}

impl Cluster {
    pub fn start(masters: usize, replicas: usize) -> Cluster {
        Cluster::start_with(masters, replicas, &[])
    }

    /// A cluster whose nodes start with `extra` arguments too.
    pub fn start_with(masters: usize, replicas: usize, extra: &[&str]) -> Cluster {
        let count = masters * (1 + replicas);
        let nodes: Vec<Redis> = (0..count)
            .map(|_| {
                let mut args = vec![
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ];
                args.extend_from_slice(extra);
                Redis::start_cluster_node(&args)
            })
            .collect();
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(Redis::address));
        args.extend([
            "--cluster-replicas".into(),
            replicas.to_string(),
            "--cluster-yes".into(),
        ]);
        run_checked(
            Command::new("redis-cli").args(&args),
            "redis-cli --cluster create",
        );
        let cluster = Cluster { nodes };
        // Every node sees the cluster complete: state ok, every master with
        // its slots and every replica attached (CLUSTER SHARDS lists a
        // replica as a shard of its own until then).
        let roles = |text: &str, role: &str| {
            text.lines()
                .filter(|l| {
                    l.split(' ')
                        .nth(2)
                        .is_some_and(|f| f.split(',').any(|x| x == role))
                })
                .count()
        };
        wait_until(
            READY_LIMIT,
            Duration::from_millis(50),
            "the cluster complete",
            || {
                cluster.nodes.iter().all(|n| {
                    let mut c = n.client();
                    let nodes = c.text(&["CLUSTER", "NODES"]);
                    c.text(&["CLUSTER", "INFO"]).contains("cluster_state:ok")
                        && roles(&nodes, "master") == masters
                        && roles(&nodes, "slave") == masters * replicas
                })
            },
        );
        // Every replica has synced with its master: one that never has
        // cannot be promoted when its master dies (its data counts as too
        // old, see `cluster-replica-validity-factor`).
        wait_until(
            READY_LIMIT,
            Duration::from_millis(50),
            "every replica in sync",
            || {
                cluster.nodes.iter().all(|n| {
                    let info = n.client().text(&["INFO", "replication"]);
                    info.contains("role:master") || info.contains("master_link_status:up")
                })
            },
        );
        cluster
    }

    /// The replica of the master listening on `master_port`.
    pub fn replica_of(&self, master_port: u16) -> &Redis {
        self.nodes
            .iter()
            .find(|n| {
                n.client()
                    .text(&["INFO", "replication"])
                    .contains(&format!("master_port:{master_port}\r\n"))
            })
            .expect("the master's replica")
    }

    /// A node's cluster id (CLUSTER MYID).
    pub fn id_of(node: &Redis) -> String {
        let reply = node.client().text(&["CLUSTER", "MYID"]);
        reply.lines().nth(1).expect("an id").to_string()
    }
}
