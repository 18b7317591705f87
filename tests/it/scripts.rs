//! Scripts through the proxy: EVAL, EVALSHA and the read-only forms on the
//! backend owning their keys, replies (NOSCRIPT included) as Redis gives
//! them, SCRIPT LOAD / EXISTS / FLUSH on every backend, CROSSSLOT, the
//! `[keys] scripts` allow-list, and phpredis's native session handler with
//! locking on (two overlapping requests to one session), through the proxy
//! and directly on Redis.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::{wait_until, Proxy, Redis, READY_LIMIT};

fn three_backends(extra: &str) -> (Vec<Redis>, Proxy) {
    let servers: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let mut text = format!("[listen]\naddress = \"127.0.0.1:0\"\n{extra}\n");
    for (id, redis) in ["a", "b", "c"].iter().zip(&servers) {
        text.push_str(&format!(
            "[[backends]]\nid = \"{id}\"\naddress = \"{}\"\n",
            redis.address()
        ));
    }
    let proxy = Proxy::start(&text);
    (servers, proxy)
}

const SET_SCRIPT: &str = "return redis.call('SET', KEYS[1], ARGV[1])";

#[test]
fn scripts_run_on_the_backend_of_their_keys_and_answer_like_redis() {
    let (servers, proxy) = three_backends("");
    let direct_redis = Redis::start();
    let mut direct = direct_redis.client();
    let mut client = proxy.client();
    // The same steps on Redis and through the proxy give the same bytes.
    let keys: Vec<String> = (0..3).map(|b| proxy.key_on(b, "s:")).collect();
    let sha = {
        let loaded = direct.text(&["SCRIPT", "LOAD", SET_SCRIPT]);
        direct.text(&["SCRIPT", "FLUSH"]);
        loaded.lines().nth(1).unwrap().to_string()
    };
    for args in [
        vec!["EVALSHA", &sha, "1", &keys[0], "v"],
        vec!["EVAL", SET_SCRIPT, "1", &keys[0], "v"],
        vec![
            "EVAL_RO",
            "return redis.call('GET', KEYS[1])",
            "1",
            &keys[0],
        ],
        vec!["EVAL_RO", SET_SCRIPT, "1", &keys[0], "w"],
        vec!["EVAL", "return 1", "x"],
        vec!["EVAL", "return 1", "-1"],
        vec!["EVAL", "return 1", "3", "k"],
        vec!["EVAL", "return {1, 'two', false}", "1", &keys[1]],
        vec!["EVAL", "return redis.error_reply('MY own')", "1", &keys[1]],
        vec!["SCRIPT", "LOAD", SET_SCRIPT],
        vec![
            "SCRIPT",
            "EXISTS",
            &sha,
            "0000000000000000000000000000000000000000",
        ],
        vec!["EVALSHA", &sha, "1", &keys[2], "x"],
        vec!["SCRIPT", "FLUSH"],
        vec!["SCRIPT", "EXISTS", &sha],
        vec!["EVALSHA", &sha, "1", &keys[2], "x"],
        vec!["SCRIPT", "LOAD"],
        vec!["EVAL"],
    ] {
        let expect = direct.text(&args);
        assert_eq!(client.text(&args), expect, "{args:?}");
    }
    // SCRIPT LOAD through the proxy reaches every backend, so EVALSHA works
    // whichever backend a key is on.
    assert_eq!(
        client.text(&["SCRIPT", "LOAD", SET_SCRIPT]),
        format!("$40\r\n{sha}\r\n")
    );
    for (b, key) in keys.iter().enumerate() {
        assert_eq!(
            client.text(&["EVALSHA", &sha, "1", key, "loaded"]),
            "+OK\r\n"
        );
        assert_eq!(servers[b].client().text(&["GET", key]), "$6\r\nloaded\r\n");
    }
    // A script whose keys are on two backends, or that names none, is
    // refused before it reaches any.
    assert_eq!(
        client.text(&["EVAL", SET_SCRIPT, "2", &keys[0], &keys[1], "v"]),
        "-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    );
    // A script without keys runs on one backend, as on a Redis Cluster.
    assert_eq!(client.text(&["EVAL", "return 7", "0"]), ":7\r\n");
    // Only one backend has a script: SCRIPT EXISTS says it is not there.
    servers[0].client().text(&["SCRIPT", "FLUSH"]);
    assert_eq!(client.text(&["SCRIPT", "EXISTS", &sha]), "*1\r\n:0\r\n");
}

#[test]
fn with_prefixes_only_listed_scripts_run() {
    let other = "return redis.call('GET', KEYS[1])";
    let other_sha = "d3c21d0c2b9ca22f82737626a27bcaf5d288f99f";
    let (_servers, proxy) = three_backends(&format!(
        "[keys]\nprefixes = [\"s:\"]\nscripts = [\"{other_sha}\"]"
    ));
    let mut client = proxy.client();
    assert_eq!(client.text(&["EVAL", other, "1", "s:1"]), "$-1\r\n");
    let refused = client.text(&["EVAL", SET_SCRIPT, "1", "s:1", "v"]);
    assert!(refused.starts_with("-NOPERM script"), "{refused}");
    // Keys are still checked against the prefixes.
    assert!(client
        .text(&["EVAL", other, "1", "x:1"])
        .starts_with("-NOPERM"));
    assert!(client
        .text(&["FCALL", "f", "1", "s:1"])
        .starts_with("-NOPERM functions"));
}

fn php(port: u16, id: &str, sleep_ms: u64) -> std::process::Child {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/php/session_lock.php");
    Command::new("php")
        .arg(script)
        .args([port.to_string(), id.to_string(), sleep_ms.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("php (Debian packages php-cli php-redis)")
}

fn succeeded(output: Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "php failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Two overlapping requests to one session: the second waits for the
/// first's lock; both counts are kept and the lock is released.
fn overlapping_requests(port: u16, mut exists: impl FnMut(&str) -> bool) {
    let id = "lockedsession1";
    let lock = format!("PHPREDIS_SESSION:{id}_LOCK");
    let first = php(port, id, 400);
    wait_until(
        READY_LIMIT,
        std::time::Duration::from_millis(5),
        "lock taken",
        || exists(&lock),
    );
    let second = php(port, id, 0);
    assert_eq!(succeeded(first.wait_with_output().unwrap()), "count=1\n");
    assert_eq!(succeeded(second.wait_with_output().unwrap()), "count=2\n");
    assert!(!exists(&lock), "the lock was not released");
    assert_eq!(
        succeeded(php(port, id, 0).wait_with_output().unwrap()),
        "count=3\n"
    );
}

#[test]
fn phpredis_session_locking_works_through_the_proxy_as_on_redis() {
    let direct = Redis::start();
    let port: u16 = direct
        .address()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    overlapping_requests(port, |key| {
        direct.client().text(&["EXISTS", key]) == ":1\r\n"
    });
    let (_servers, proxy) = three_backends("[keys]\nprefixes = [\"PHPREDIS_SESSION:\"]");
    overlapping_requests(proxy.port, |key| {
        proxy.client().text(&["EXISTS", key]) == ":1\r\n"
    });
}
