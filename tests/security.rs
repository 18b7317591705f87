//! Attacks by a user with a password, each as the test: `alice`, held to
//! `session:alice:`, tries to write, delete or read other users' keys, read
//! their secrets, crash a backend or exhaust what everyone shares; each
//! attempt is refused and the backends themselves show nothing happened.

mod common;

use common::{proxy_over, Proxy, RawClient, Redis};

const NOPERM_KEY: &str =
    "-NOPERM this user has no permissions to access one of the keys used as arguments\r\n";

/// Users: the default one (password "admin"), alice and bob held to their
/// prefixes, and a read-only user.
const USERS: &str = r#"password = "admin"

[[users]]
name = "alice"
password = "alice-pw"
prefixes = ["session:alice:"]

[[users]]
name = "bob"
password = "bob-pw"
prefixes = ["session:bob:"]

[[users]]
name = "reader"
password = "reader-pw"
read_only = true
"#;

fn login(proxy: &Proxy, user: &str, password: &str) -> RawClient {
    let mut c = proxy.client();
    assert_eq!(c.text(&["AUTH", user, password]), "+OK\r\n");
    c
}

/// Whether any backend holds `key`.
fn anywhere(servers: &[Redis], key: &str) -> bool {
    servers
        .iter()
        .any(|r| r.client().text(&["EXISTS", key]) == ":1\r\n")
}

/// How often `command` ran on any backend (INFO commandstats).
fn calls(servers: &[Redis], command: &str) -> u64 {
    servers
        .iter()
        .map(|r| {
            let info = r.client().text(&["INFO", "commandstats"]);
            info.lines()
                .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
                .and_then(|rest| rest.split(',').next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

#[test]
fn a_limited_user_cannot_write_or_delete_outside_its_keys() {
    let servers: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let proxy = proxy_over(&servers, USERS);
    let mut alice = login(&proxy, "alice", "alice-pw");
    assert_eq!(
        alice.text(&["GEOADD", "session:alice:g", "0", "0", "m"]),
        ":1\r\n"
    );
    // Redis obeys the last STORE; the first one is alice's.
    let attack = [
        "GEORADIUS",
        "session:alice:g",
        "0",
        "0",
        "500",
        "km",
        "STORE",
        "session:alice:d",
        "STORE",
        "session:bob:x",
    ];
    assert_eq!(alice.text(&attack), NOPERM_KEY);
    let by_member = [
        "GEORADIUSBYMEMBER",
        "session:alice:g",
        "m",
        "500",
        "km",
        "STORE",
        "session:alice:d",
        "STOREDIST",
        "session:bob:x",
    ];
    assert_eq!(alice.text(&by_member), NOPERM_KEY);
    // Inside a transaction too.
    assert_eq!(alice.text(&["MULTI"]), "+OK\r\n");
    assert_eq!(alice.text(&attack), NOPERM_KEY);
    assert!(alice.text(&["EXEC"]).starts_with("-EXECABORT"));
    // COMMAND GETKEYS names the key the command would write.
    let mut ask = vec!["COMMAND", "GETKEYS"];
    ask.extend(attack);
    assert_eq!(
        alice.text(&ask),
        "*2\r\n$15\r\nsession:alice:g\r\n$13\r\nsession:bob:x\r\n"
    );
    // Key counts Redis would read otherwise than the proxy, and odd stream
    // lists: refused before any backend sees them.
    let before = calls(&servers, "zunionstore") + calls(&servers, "xread");
    for (request, error) in [
        (
            vec!["ZUNIONSTORE", "session:alice:d", "2 ", "session:alice:a", "session:bob:x"],
            "-ERR value is not an integer or out of range\r\n",
        ),
        (
            vec!["ZUNIONSTORE", "session:alice:d", "0", "session:bob:x"],
            "-ERR at least 1 input key is needed for 'zunionstore' command\r\n",
        ),
        (
            vec!["ZUNIONSTORE", "session:alice:d", "-1", "session:bob:x"],
            "-ERR at least 1 input key is needed for 'zunionstore' command\r\n",
        ),
        (
            vec![
                "ZUNIONSTORE",
                "session:alice:d",
                "99999999999999999999",
                "session:bob:x",
            ],
            "-ERR value is not an integer or out of range\r\n",
        ),
        (
            vec!["XREAD", "STREAMS", "session:alice:s", "session:bob:x", "0"],
            "-ERR Unbalanced XREAD list of streams: for each stream key an ID or '$' must be specified.\r\n",
        ),
    ] {
        assert_eq!(alice.text(&request), error, "{request:?}");
    }
    assert_eq!(
        calls(&servers, "zunionstore") + calls(&servers, "xread"),
        before,
        "a refused request reached a backend"
    );
    assert!(!anywhere(&servers, "session:bob:x"));
    assert!(!anywhere(&servers, "session:alice:d"));
}

/// A script that keeps its backend busy for about `ms` milliseconds.
fn busy_script(ms: u64) -> String {
    format!(
        "local t = redis.call('TIME') local start = t[1] * 1000000 + t[2] \
         while true do local n = redis.call('TIME') \
         if n[1] * 1000000 + n[2] - start > {} then break end end return 1",
        ms * 1000
    )
}

#[test]
fn slowlog_shows_each_user_its_own_entries_without_secrets() {
    let servers: Vec<Redis> = (0..2).map(|_| Redis::start()).collect();
    let config = format!("{USERS}\n[slowlog]\nslower_than_us = 0\nmax_len = 1000\n");
    let proxy = proxy_over(&servers, &config);
    let mut alice = login(&proxy, "alice", "alice-pw");
    assert_eq!(
        alice.text(&["SET", "session:alice:1", "alice-value"]),
        "+OK\r\n"
    );
    let mut bob = login(&proxy, "bob", "bob-pw");
    assert_eq!(
        bob.text(&["SET", "session:bob:1", "bob-secret-value"]),
        "+OK\r\n"
    );
    assert!(bob
        .text(&["HELLO", "2", "AUTH", "bob", "bob-pw"])
        .starts_with('*'));
    let mut reader = login(&proxy, "reader", "reader-pw");
    assert_eq!(
        reader.text(&["GET", "session:bob:1"]),
        "$16\r\nbob-secret-value\r\n"
    );

    let seen = alice.text(&["SLOWLOG", "GET", "-1"]);
    assert!(seen.contains("alice-value"), "{seen}");
    for secret in [
        "bob-secret-value",
        "bob-pw",
        "alice-pw",
        "reader-pw",
        "admin",
    ] {
        assert!(!seen.contains(secret), "alice sees {secret}: {seen}");
    }
    let mut admin = login(&proxy, "default", "admin");
    let all = admin.text(&["SLOWLOG", "GET", "-1"]);
    assert!(all.contains("bob-secret-value") && all.contains("alice-value"));
    assert!(all.contains("(redacted)"), "{all}");
    for secret in ["bob-pw", "alice-pw", "reader-pw"] {
        assert!(!all.contains(secret), "the log keeps {secret}: {all}");
    }
    // alice resets her own entries only; the read-only user resets nothing.
    assert_eq!(
        reader.text(&["SLOWLOG", "RESET"]),
        "-NOPERM this user has no permissions to run the 'slowlog' command\r\n"
    );
    assert_eq!(alice.text(&["SLOWLOG", "RESET"]), "+OK\r\n");
    assert_eq!(
        alice.text(&["SLOWLOG", "LEN"]),
        ":1\r\n",
        "the RESET itself"
    );
    assert!(admin
        .text(&["SLOWLOG", "GET", "-1"])
        .contains("bob-secret-value"));
}

#[test]
fn slowlog_times_a_request_not_the_queue_before_it() {
    let servers: Vec<Redis> = (0..1).map(|_| Redis::start()).collect();
    let config = format!("{USERS}\n[slowlog]\nslower_than_us = 100000\n");
    let proxy = proxy_over(&servers, &config);
    let mut c = login(&proxy, "default", "admin");
    // A 300 ms script, and behind it in the same pipeline an AUTH and a
    // quick GET: only the script was slow.
    let script = busy_script(300);
    let mut pipeline = Vec::new();
    for args in [
        vec!["EVAL", script.as_str(), "1", "k"],
        vec!["AUTH", "bob", "bob-pw"],
        vec!["GET", "session:bob:1"],
    ] {
        let words: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        pipeline.extend(RawClient::encode(&words));
    }
    c.send_raw(&pipeline);
    assert_eq!(c.read_reply(), b":1\r\n");
    assert_eq!(c.read_reply(), b"+OK\r\n");
    assert_eq!(c.read_reply(), b"$-1\r\n");
    let mut admin = login(&proxy, "default", "admin");
    let log = admin.text(&["SLOWLOG", "GET", "-1"]);
    assert_eq!(admin.text(&["SLOWLOG", "LEN"]), ":1\r\n", "{log}");
    assert!(log.contains("redis.call('TIME')"), "{log}");
}

#[test]
fn restore_is_refused_to_limited_users_unless_allowed() {
    let servers: Vec<Redis> = (0..2).map(|_| Redis::start()).collect();
    let proxy = proxy_over(&servers, USERS);
    let mut alice = login(&proxy, "alice", "alice-pw");
    assert_eq!(alice.text(&["HSET", "session:alice:h", "f", "v"]), ":1\r\n");
    alice.send(&[b"DUMP", b"session:alice:h"]);
    let dumped = alice.read_reply();
    let payload =
        dumped[dumped.iter().position(|&b| b == b'\n').unwrap() + 1..dumped.len() - 2].to_vec();
    let restore: [&[u8]; 5] = [b"RESTORE", b"session:alice:h", b"0", &payload, b"REPLACE"];
    alice.send(&restore);
    let refused = String::from_utf8_lossy(&alice.read_reply()).into_owned();
    assert!(
        refused.starts_with("-NOPERM RESTORE is refused"),
        "{refused}"
    );
    assert_eq!(calls(&servers, "restore"), 0);
    // The default user, held to no prefix, may.
    let mut admin = login(&proxy, "default", "admin");
    admin.send(&restore);
    assert_eq!(admin.read_reply(), b"+OK\r\n");
    drop(proxy);

    let allowed = format!("{USERS}\n[keys]\nallow_restore = true\n");
    let proxy = proxy_over(&servers, &allowed);
    let mut alice = login(&proxy, "alice", "alice-pw");
    alice.send(&restore);
    assert_eq!(alice.read_reply(), b"+OK\r\n");
    assert_eq!(alice.text(&["HGET", "session:alice:h", "f"]), "$1\r\nv\r\n");
}
