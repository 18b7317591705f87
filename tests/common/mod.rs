//! Test harness: real `redis-server` processes on free loopback ports in temp
//! dirs (killed on drop), the proxy in-process or as the built binary, and a
//! small raw RESP client that returns reply bytes exactly as sent.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use session_proxy::config::Config;
use session_proxy::server::{self, Listeners, Shared};
use session_proxy::shutdown;

/// Longest a test waits for a process to become ready: a safety net against a
/// hung test, not an assertion about speed.
pub const READY_LIMIT: Duration = Duration::from_secs(20);

/// A free loopback port (never 6379).
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind an ephemeral port");
        if port != 6379 {
            return port;
        }
    }
}

/// A real redis-server process.
pub struct Redis {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// Starts redis-server with extra `--name value` arguments.
    pub fn start_with(extra: &[&str]) -> Redis {
        Redis::start_on(free_port(), extra)
    }

    /// Starts redis-server on a given port.
    pub fn start_on(port: u16, extra: &[&str]) -> Redis {
        let dir = tempfile::tempdir().expect("tempdir");
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--dir", dir.path().to_str().unwrap_or(".")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        let redis = Redis { port, dir, child };
        redis.wait_ready();
        redis
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            if let Ok(mut c) = RawClient::try_connect(self.port) {
                let reply = c.cmd(&["PING"]);
                if reply == b"+PONG\r\n" || reply.starts_with(b"-NOAUTH") {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A client connected straight to this server.
    pub fn client(&self) -> RawClient {
        RawClient::connect(self.port)
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
        let _ = self.child.kill();
        let _ = self.child.wait();
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
    pub fn start(config_text: &str) -> Proxy {
        let config = Config::parse(config_text).expect("valid test config");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (trigger, shutdown) = shutdown::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listeners = Listeners::bind(&config).await.expect("bind");
                let port = listeners.tcp_port();
                let shared = Arc::new(Shared::new(config, port).expect("start backends"));
                ready_tx.send((port, shared.clone())).expect("report ready");
                server::run(listeners, shared, shutdown).await;
            });
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

    /// The index in the config of the backend that owns `key`.
    pub fn owner(&self, key: &str) -> usize {
        self.shared.router.owner(key.as_bytes())
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

/// Config text for a proxy on a free port in front of `backends` (id, address, weight).
pub fn config_for(backends: &[(&str, String, f64)], extra: &str) -> String {
    let mut text = format!("[listen]\naddress = \"127.0.0.1:0\"\n{extra}\n");
    for (id, address, weight) in backends {
        text.push_str(&format!(
            "[[backends]]\nid = \"{id}\"\naddress = \"{address}\"\nweight = {weight}\n"
        ));
    }
    text
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
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(READY_LIMIT))?;
        stream.set_nodelay(true)?;
        Ok(RawClient {
            stream,
            buf: BytesMut::new(),
            resp3: false,
        })
    }

    pub fn encode(args: &[&[u8]]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
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
            let framed = if self.resp3 {
                redis_protocol::resp3::decode::complete::decode(&self.buf)
                    .map(|r| r.map(|(_, n)| n))
            } else {
                redis_protocol::resp2::decode::decode(&self.buf).map(|r| r.map(|(_, n)| n))
            };
            match framed {
                Ok(Some(n)) => return Ok(self.buf.split_to(n).to_vec()),
                Ok(None) => {}
                Err(e) => panic!(
                    "undecodable reply {:?}: {e:?}",
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
