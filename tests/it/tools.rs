//! The command-line: `session-proxy` itself (check-config, route, --version,
//! exit codes), and Redis's own tools against the proxy: redis-cli (one-shot,
//! -e, and interactive through a terminal) and redis-benchmark.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{
    binary, config_for, try_wait_until, write_file, Proxy, Redis, Running, READY_LIMIT,
};
use session_proxy::config::Config;
use session_proxy::router::Router;

/// The shipped example config, as a user would start from it.
const EXAMPLE: &str = include_str!("../../config/example.toml");

/// Runs the binary with one flag or subcommand and a file.
fn run_with_file(flag: &str, file: &std::path::Path) -> std::process::Output {
    Command::new(binary()).arg(flag).arg(file).output().unwrap()
}

#[test]
fn check_config_accepts_good_files_and_names_the_bad_field() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_file(dir.path(), "good.toml", EXAMPLE);
    let out = run_with_file("check-config", &good);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = write_file(
        dir.path(),
        "bad.toml",
        &EXAMPLE.replace("weight = 2", "weight = -2"),
    );
    let out = run_with_file("check-config", &bad);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("backends[1].weight"), "{stderr}");

    // Running with a bad config exits 64 too, before binding anything.
    let out = run_with_file("--config", &bad);
    assert_eq!(out.status.code(), Some(64));
    let missing = dir.path().join("missing.toml");
    let out = run_with_file("check-config", &missing);
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn shipped_example_configs_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen >= 2, "expected example configs in config/");
}

/// What `session-proxy route` prints for `keys` with the config `text`.
fn route(text: &str, keys: &[String]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "c.toml", text);
    let out = Command::new(binary())
        .arg("route")
        .arg("--config")
        .arg(&file)
        .args(keys)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn route_prints_the_router_owner_of_each_key() {
    let keys: Vec<String> = (0..50).map(|i| format!("session:{i}")).collect();
    let stdout = route(EXAMPLE, &keys);
    let config = Config::parse(EXAMPLE).unwrap();
    let router = Router::new(config.route_members()).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), keys.len());
    for (line, key) in lines.iter().zip(&keys) {
        let want = &config.backends[router.owner(key.as_bytes())].id;
        assert_eq!(*line, format!("{key}\t{want}"));
    }
}

/// With `[keys] hash_tag`, `route` answers for the tag: every key of one
/// tag on the backend that owns the tag itself.
#[test]
fn route_follows_the_hash_tag() {
    let tagged = EXAMPLE.replace("[keys]\n", "[keys]\nhash_tag = \"{}\"\n");
    let tags: Vec<String> = (0..20).map(|i| format!("user{i}")).collect();
    let keys: Vec<String> = tags
        .iter()
        .flat_map(|tag| {
            [
                format!("session:{{{tag}}}:a"),
                format!("session:{{{tag}}}:b"),
            ]
        })
        .collect();
    let stdout = route(&tagged, &keys);
    let config = Config::parse(&tagged).unwrap();
    let router = Router::new(config.route_members()).unwrap();
    let owners: Vec<&str> = stdout
        .lines()
        .map(|l| l.split('\t').nth(1).unwrap())
        .collect();
    assert_eq!(owners.len(), keys.len());
    for (i, tag) in tags.iter().enumerate() {
        let want = &config.backends[router.owner(tag.as_bytes())].id;
        assert_eq!(
            (owners[2 * i], owners[2 * i + 1]),
            (want.as_str(), want.as_str()),
            "{tag}"
        );
    }
    // Not every tag on one backend: the tag, not the whole key, decided.
    assert!(owners.iter().any(|o| *o != owners[0]));
}

#[test]
fn version_flag() {
    let out = Command::new(binary()).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

fn started() -> (Redis, Redis, Proxy) {
    let (a, b) = (Redis::start(), Redis::start());
    let proxy = Proxy::start(&config_for(
        &[("a", a.address(), 1.0), ("b", b.address(), 2.0)],
        "",
    ));
    (a, b, proxy)
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli must be installed (apt-get install redis-tools)");
    assert!(
        out.status.success(),
        "redis-cli {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn redis_cli_one_shot_matches_redis() {
    let (a, _b, proxy) = started();
    let reference = Redis::start();
    let port = proxy.port;
    assert_eq!(redis_cli(port, &["SET", "session:x", "hello"]), "OK\n");
    assert_eq!(redis_cli(port, &["GET", "session:x"]), "hello\n");
    assert_eq!(redis_cli(port, &["-e", "GET", "session:x"]), "hello\n");
    // The same invocations print the same through the proxy as from Redis.
    redis_cli(reference.port, &["SET", "session:x", "hello"]);
    for args in [
        &["-3", "GET", "session:none"][..],
        &["-3", "MGET", "session:x", "session:none"],
        &["--no-raw", "EXISTS", "session:x", "session:none"],
        &["--no-raw", "TTL", "session:x"],
        &["-n", "3", "DBSIZE"],
        &["NOSUCH", "a"],
    ] {
        assert_eq!(
            redis_cli(port, args),
            redis_cli(reference.port, args),
            "redis-cli {args:?}"
        );
    }
    // -e makes an error reply fail the command, as on Redis.
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "-e", "NOSUCH"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("unknown command"), "{printed}");
    assert!(redis_cli(port, &["INFO"]).contains("redis_version:"));
    drop(a);
}

/// Drives an interactive redis-cli in a pseudo-terminal (via `script`): types
/// each line only once the prompt is shown, as a person would.
struct Terminal {
    child: std::process::Child,
    output: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Terminal {
    fn start(command: &str) -> Terminal {
        let mut child = Command::new("script")
            .args(["-qec", command, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("script (util-linux) must be installed");
        let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut stdout = child.stdout.take().unwrap();
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut stdout, &mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Terminal { child, output }
    }

    fn text(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits until `needle` appears in the output at or after byte `from`;
    /// returns where it ends. Counting from a position, not counting
    /// occurrences: the line editor redraws the prompt at every keystroke and
    /// its hints repeat words of the command (HELLO's hint says "protover").
    fn wait_from(&mut self, from: usize, needle: &str) -> usize {
        let mut end = None;
        let shown = try_wait_until(READY_LIMIT, Duration::from_millis(10), || {
            let text = self.text();
            end = text
                .get(from..)
                .and_then(|rest| rest.find(needle))
                .map(|at| from + at + needle.len());
            end.is_some()
        });
        if !shown {
            let _ = self.child.kill();
            panic!(
                "waited for {needle:?} after byte {from}; terminal shows:\n{}",
                self.text()
            );
        }
        end.unwrap()
    }

    /// Types `line`, waits for `reply` in what follows and then for the next
    /// prompt after the reply, so the next line is typed only to a ready editor.
    fn exchange(&mut self, line: &str, reply: &str, prompt: &str) {
        let from = self.text().len();
        self.type_line(line);
        let replied = self.wait_from(from, reply);
        self.wait_from(replied, prompt);
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(format!("{line}\r").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn redis_cli_interactive_session() {
    let (_a, _b, proxy) = started();
    let prompt = format!("127.0.0.1:{}>", proxy.port);
    // A window size, so that the line editor need not ask the terminal for one.
    let mut term = Terminal::start(&format!(
        "stty cols 200 rows 50; redis-cli -h 127.0.0.1 -p {}",
        proxy.port
    ));
    term.wait_from(0, &prompt);
    let steps = [
        ("SET session:i 1", "OK"),
        ("INCR session:i", "(integer) 2"),
        ("GET session:i", "\"2\""),
        ("HELLO 3", "\"proto\" => (integer) 3"),
        ("GET session:none", "(nil)"),
        ("FOO bar", "unknown command 'FOO'"),
    ];
    for (line, reply) in steps {
        term.exchange(line, reply, &prompt);
    }
    // SELECT shows in the prompt, as with Redis.
    let selected = format!("127.0.0.1:{}[2]>", proxy.port);
    term.exchange("SELECT 2", "OK", &selected);
    term.exchange("GET session:i", "(nil)", &selected);
    term.type_line("quit");
    let status = term.child.wait().unwrap();
    assert!(status.success(), "{}", term.text());
}

#[test]
fn redis_benchmark_runs_without_errors() {
    let (_a, _b, proxy) = started();
    for pipeline in ["1", "16"] {
        let out = Command::new("redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &proxy.port.to_string()])
            .args([
                "-t",
                "ping,set,get,mset",
                "-n",
                "20000",
                "-c",
                "20",
                "-P",
                pipeline,
                "-q",
                "-r",
                "1000",
            ])
            .output()
            .expect("redis-benchmark must be installed (apt-get install redis-tools)");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert!(
            !stdout.to_lowercase().contains("error") && !stderr.to_lowercase().contains("error"),
            "{stdout}\n{stderr}"
        );
        for test in [
            "PING_INLINE:",
            "PING_MBULK:",
            "SET:",
            "GET:",
            "MSET (10 keys):",
        ] {
            assert!(stdout.contains(test), "no {test} result in:\n{stdout}");
        }
    }
    // Everything it wrote went through the proxy and is readable.
    let mut client = proxy.client();
    assert!(client.text(&["DBSIZE"]).starts_with(':'));
    assert_eq!(client.text(&["PING"]), "+PONG\r\n");
}

#[test]
fn the_binary_serves_until_sigterm() {
    let a = Redis::start();
    let mut proxy = Running::start(&format!(
        "[[backends]]\nid = \"a\"\naddress = \"{}\"\n",
        a.address()
    ));
    assert_eq!(proxy.client().text(&["SET", "k", "v"]), "+OK\r\n");
    proxy.signal("TERM");
    let status = proxy.wait_exit(READY_LIMIT);
    assert!(status.success(), "{status:?}");
}
