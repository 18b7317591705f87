//! Django end-to-end: Django 5.2 with django-redis-sessions 0.6.2 and with its
//! own cache session engine (RedisCache), under redis-py 8.1 (RESP3 by
//! default) and redis-py 4.5.4 (RESP2), pointed at the proxy binary over TCP,
//! over the unix socket, with `db` 2 and with a password. The Python side is
//! `tests/python/django_e2e.py`; the venvs come from `scripts/setup-python.sh`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{
    binary, django_phase, free_port, python, run_checked, wait_proxy_master, wait_until,
    write_file, Group, Proxy, RawClient, Redis, READY_LIMIT,
};

struct ProxyProcess {
    child: Child,
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Site {
    backends: Vec<Redis>,
    dir: tempfile::TempDir,
    config: PathBuf,
    port: u16,
    socket: PathBuf,
    _proxy: ProxyProcess,
}

impl Site {
    fn start(password: Option<&str>) -> Site {
        let backends: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let socket = dir.path().join("proxy.sock");
        let mut text = format!(
            "[listen]\naddress = \"127.0.0.1:{port}\"\nunix_socket = \"{}\"\n",
            socket.display()
        );
        if let Some(password) = password {
            text.push_str(&format!("password = \"{password}\"\n"));
        }
        text.push_str("[keys]\nprefixes = [\"session:\"]\n");
        for (id, (redis, weight)) in ["a", "b", "c"].iter().zip(backends.iter().zip([1, 2, 1])) {
            text.push_str(&format!(
                "[[backends]]\nid = \"{id}\"\naddress = \"{}\"\nweight = {weight}\n",
                redis.address()
            ));
        }
        let config = write_file(dir.path(), "proxy.toml", &text);
        let child = Command::new(binary())
            .args(["--config", config.to_str().unwrap_or_default()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start session-proxy");
        let proxy = ProxyProcess { child };
        wait_until(
            READY_LIMIT,
            Duration::from_millis(10),
            "proxy did not start",
            || RawClient::try_connect(port).is_ok() && socket.exists(),
        );
        Site {
            backends,
            dir,
            config,
            port,
            socket,
            _proxy: proxy,
        }
    }

    fn run(&self, venv: &str, engine: &str, extra: &[&str]) {
        let mut command = python(venv);
        command
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/django_e2e.py"))
            .args(["--engine", engine])
            .args(["--proxy-bin", binary().to_str().unwrap_or_default()])
            .args(["--config", self.config.to_str().unwrap_or_default()])
            .args(extra)
            .current_dir(self.dir.path());
        for (id, redis) in ["a", "b", "c"].iter().zip(&self.backends) {
            command.args(["--backend", &format!("{id}={}", redis.address())]);
        }
        let stdout = run_checked(&mut command, &format!("{venv} {engine} {extra:?}"));
        println!("{venv} {engine} {extra:?}: {stdout}");
        let resp = if venv == "venv-redis8" {
            "\"resp\": \"3\""
        } else {
            "\"resp\": \"2\""
        };
        assert!(stdout.contains(resp), "expected {resp} in {stdout}");
    }

    fn all_engines(&self, venv: &str, extra: &[&str]) {
        for engine in ["redis_sessions", "cache"] {
            self.run(venv, engine, extra);
        }
    }
}

fn scenarios(venv: &str) {
    let site = Site::start(None);
    let port = site.port.to_string();
    let socket = site.socket.to_str().unwrap_or_default().to_string();
    site.all_engines(venv, &["--port", &port]);
    site.all_engines(venv, &["--unix-socket", &socket]);
    site.all_engines(venv, &["--port", &port, "--db", "2"]);
    drop(site);

    let site = Site::start(Some("django-pw"));
    let port = site.port.to_string();
    site.all_engines(venv, &["--port", &port, "--password", "django-pw"]);
}

#[test]
fn django_with_redis_py_8_resp3() {
    scenarios("venv-redis8");
}

#[test]
fn django_with_redis_py_4_resp2() {
    scenarios("venv-redis4");
}

#[test]
fn django_sessions_survive_a_sentinel_failover() {
    let a = Group::start("shard-a", 1, 1000);
    let b = Group::start("shard-b", 1, 1000);
    let proxy = Proxy::start(&format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[keys]\nprefixes = [\"session:\"]\n\
         [pool]\nrequest_timeout_ms = 90\n\
         [[backends]]\nid = \"a\"\nsentinel = {}\nmin_replicas_ack = 1\n\
         [[backends]]\nid = \"b\"\nsentinel = {}\nmin_replicas_ack = 1\n",
        a.sentinel_toml(),
        b.sentinel_toml()
    ));
    let (old_a, old_b) = (a.master_address().unwrap(), b.master_address().unwrap());
    wait_proxy_master(&proxy, 0, &old_a);
    wait_proxy_master(&proxy, 1, &old_b);
    let dir = tempfile::tempdir().unwrap();
    let phase = |phase: &str, expect: &str| django_phase(proxy.port, dir.path(), phase, expect);
    phase("create", "\"created\": 40");
    // Both shards fail over; Django is pointed at the proxy, not the sentinels.
    // The request timeout stays under django-redis-sessions' 0.1 s socket timeout.
    a.failover();
    b.failover();
    let (new_a, new_b) = (a.wait_new_master(&old_a), b.wait_new_master(&old_b));
    wait_proxy_master(&proxy, 0, &new_a);
    wait_proxy_master(&proxy, 1, &new_b);
    // The old masters rejoin as replicas, so writes can be acknowledged again.
    a.wait_settled();
    b.wait_settled();
    phase("verify", "\"verified\": 40");
}
