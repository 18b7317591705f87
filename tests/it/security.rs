//! Attacks by a user with a password, each as the test: `alice`, held to
//! `session:alice:`, tries to write, delete or read other users' keys, read
//! their secrets, crash a backend or exhaust what everyone shares; each
//! attempt is refused and the backends themselves show nothing happened.

use crate::common::{proxy_over, Proxy, RawClient, Redis};

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
    for (command, name) in [
        (vec!["SCRIPT", "FLUSH"], "script"),
        (vec!["CONFIG", "SET", "maxmemory", "1"], "config"),
    ] {
        assert_eq!(
            reader.text(&command),
            format!("-NOPERM this user has no permissions to run the '{name}' command\r\n")
        );
    }
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

#[test]
fn channels_follow_each_users_policy_and_notifications_cannot_be_forged() {
    let servers: Vec<Redis> = (0..2).map(|_| Redis::start()).collect();
    for r in &servers {
        assert_eq!(
            r.client()
                .text(&["CONFIG", "SET", "notify-keyspace-events", "KEA"]),
            "+OK\r\n"
        );
    }
    let config = format!(
        "{USERS}\n[[users]]\nname = \"carol\"\npassword = \"carol-pw\"\nprefixes = [\"session:carol:\"]\nchannels = [\"chat:carol:*\"]\n"
    );
    let proxy = proxy_over(&servers, &config);
    let mut bob = login(&proxy, "bob", "bob-pw");
    let own = "__keyspace@0__:session:bob:1";
    assert!(bob
        .text(&["SUBSCRIBE", own])
        .starts_with("*3\r\n$9\r\nsubscribe"));
    let mut bob_events = login(&proxy, "bob", "bob-pw");
    assert!(bob_events
        .text(&["SUBSCRIBE", "__keyevent@0__:expired"])
        .starts_with("*3\r\n$9\r\nsubscribe"));

    let mut alice = login(&proxy, "alice", "alice-pw");
    // A forged expiry event for bob's session: refused to everyone.
    let forged = alice.text(&["PUBLISH", "__keyevent@0__:expired", "session:bob:canary"]);
    assert!(
        forged.starts_with("-NOPERM keyspace and keyevent"),
        "{forged}"
    );
    let mut admin = login(&proxy, "default", "admin");
    let forged = admin.text(&["SPUBLISH", "__keyspace@0__:session:bob:1", "del"]);
    assert!(
        forged.starts_with("-NOPERM keyspace and keyevent"),
        "{forged}"
    );
    // Other users' channels and anything beyond alice's keys' notifications.
    const NOPERM_CHANNEL: &str =
        "-NOPERM this user has no permissions to access one of the channels used as arguments\r\n";
    assert_eq!(alice.text(&["SUBSCRIBE", own]), NOPERM_CHANNEL);
    assert_eq!(alice.text(&["PSUBSCRIBE", "*"]), NOPERM_CHANNEL);
    assert_eq!(alice.text(&["SUBSCRIBE", "news"]), NOPERM_CHANNEL);
    assert_eq!(alice.text(&["PUBLISH", "news", "x"]), NOPERM_CHANNEL);
    // PUBSUB shows alice nothing of bob's.
    let channels = alice.text(&["PUBSUB", "CHANNELS", "*"]);
    assert!(!channels.contains("session:bob"), "{channels}");
    assert_eq!(
        alice.text(&["PUBSUB", "NUMSUB", own]),
        format!("*2\r\n${}\r\n{own}\r\n:0\r\n", own.len())
    );
    assert_eq!(
        admin.text(&["PUBSUB", "NUMSUB", own]),
        format!("*2\r\n${}\r\n{own}\r\n:1\r\n", own.len())
    );
    assert!(admin.text(&["PUBSUB", "CHANNELS", "*"]).contains(own));
    // The read-only user publishes nothing.
    let mut reader = login(&proxy, "reader", "reader-pw");
    assert_eq!(
        reader.text(&["PUBLISH", "news", "x"]),
        "-NOPERM this user has no permissions to run the 'publish' command\r\n"
    );
    // A user with channels of its own uses them.
    let mut carol = login(&proxy, "carol", "carol-pw");
    assert_eq!(carol.text(&["PUBLISH", "chat:carol:1", "hi"]), ":0\r\n");
    assert_eq!(carol.text(&["SUBSCRIBE", "chat:alice:1"]), NOPERM_CHANNEL);
    assert!(carol
        .text(&["SUBSCRIBE", "chat:carol:1"])
        .starts_with("*3\r\n$9\r\nsubscribe"));
    // Bob's subscribers heard nothing forged.
    bob.stream
        .set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    assert!(bob.try_read_reply().is_err(), "bob got a message");
}

#[test]
fn one_user_cannot_take_every_held_connection() {
    let servers: Vec<Redis> = (0..2).map(|_| Redis::start()).collect();
    let config = format!("{USERS}\n[pool]\nmax_held_connections = 8\n");
    let proxy = proxy_over(&servers, &config);
    // Each subscriber holds a link to every backend; alice's share is a
    // quarter of 8: two subscribers.
    let mut subscribers = Vec::new();
    for i in 0..2 {
        let mut c = login(&proxy, "alice", "alice-pw");
        let channel = format!("__keyspace@0__:session:alice:{i}");
        assert!(c.text(&["SUBSCRIBE", &channel]).starts_with("*3"), "{i}");
        subscribers.push(c);
    }
    let mut third = login(&proxy, "alice", "alice-pw");
    let refused = third.text(&["SUBSCRIBE", "__keyspace@0__:session:alice:x"]);
    assert!(
        refused.starts_with("-ERR user 'alice' holds 2 connections to backend"),
        "{refused}"
    );
    // bob's WATCH and blocking pop still get theirs.
    let mut bob = login(&proxy, "bob", "bob-pw");
    assert_eq!(bob.text(&["WATCH", "session:bob:w"]), "+OK\r\n");
    assert_eq!(bob.text(&["UNWATCH"]), "+OK\r\n");
    assert_eq!(bob.text(&["BLPOP", "session:bob:list", "0.01"]), "*-1\r\n");
    // A share set for the user.
    drop((subscribers, third, proxy));
    let config = format!(
        "{}
[pool]
max_held_connections = 8
",
        USERS.replace(
            "prefixes = [\"session:alice:\"]",
            "prefixes = [\"session:alice:\"]\nmax_held_connections = 3"
        )
    );
    assert!(config.contains("max_held_connections = 3"));
    let proxy = proxy_over(&servers, &config);
    // WATCH holds a connection on the key's backend: four keys of one.
    let on_first: Vec<String> = (0..)
        .map(|i| format!("session:alice:{i}"))
        .filter(|k| proxy.owner(k) == 0)
        .take(4)
        .collect();
    let mut held = Vec::new();
    for key in &on_first[..3] {
        let mut c = login(&proxy, "alice", "alice-pw");
        assert_eq!(c.text(&["WATCH", key]), "+OK\r\n");
        held.push(c);
    }
    let mut fourth = login(&proxy, "alice", "alice-pw");
    let refused = fourth.text(&["WATCH", &on_first[3]]);
    assert!(
        refused.starts_with("-ERR user 'alice' holds 3 connections"),
        "{refused}"
    );
}

#[test]
fn a_limited_users_keys_and_scan_walk_its_own_keys_only() {
    let servers: Vec<Redis> = (0..2).map(|_| Redis::start()).collect();
    for r in &servers {
        let mut c = r.client();
        assert_eq!(
            c.text(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]),
            "+OK\r\n"
        );
        for i in 0..300 {
            c.text(&["SET", &format!("session:bob:{i}"), "v"]);
        }
    }
    let proxy = proxy_over(&servers, USERS);
    let mut alice = login(&proxy, "alice", "alice-pw");
    for i in 0..5 {
        assert_eq!(
            alice.text(&["SET", &format!("session:alice:{i}"), "v"]),
            "+OK\r\n"
        );
    }
    for r in &servers {
        r.client().text(&["SLOWLOG", "RESET"]);
    }
    let keys = alice.text(&["KEYS", "*"]);
    assert!(keys.starts_with("*5\r\n"), "{keys}");
    assert_eq!(
        alice.text(&["KEYS", "*:3"]),
        "*1\r\n$15\r\nsession:alice:3\r\n"
    );
    let scan = alice.text(&["SCAN", "0", "COUNT", "100000000"]);
    assert!(!scan.contains("session:bob"), "{scan}");
    let logged: String = servers
        .iter()
        .map(|r| r.client().text(&["SLOWLOG", "GET", "-1"]))
        .collect();
    assert!(logged.contains("session:alice:*"), "{logged}");
    assert!(
        !logged.contains("100000000"),
        "SCAN's COUNT went through: {logged}"
    );
    assert!(logged.contains("$4\r\n1000\r\n"), "{logged}");
}

#[test]
fn a_backend_acl_user_holds_scripts_to_the_proxys_refusals() {
    // The ACL README's Security section recommends for the proxy's own
    // user on each backend (without [keys] allow_flush).
    let acl = "user proxy on >proxy-pw ~* &* +@all -flushall -flushdb -swapdb -debug -shutdown -monitor -acl -module -config|set -config|rewrite -config|resetstat -replicaof -slaveof -failover -save -bgsave -bgrewriteaof -migrate -sync -psync";
    let dir = tempfile::tempdir().unwrap();
    let users = crate::common::write_file(
        dir.path(),
        "users.acl",
        &format!("{acl}\nuser default on nopass ~* &* +@all\n"),
    );
    let servers: Vec<Redis> = (0..2)
        .map(|_| Redis::start_with(&["--aclfile", users.to_str().unwrap()]))
        .collect();
    let mut text = "[listen]\naddress = \"127.0.0.1:0\"\n".to_string();
    for (i, r) in servers.iter().enumerate() {
        text.push_str(&format!(
            "[[backends]]\nid = \"b{i}\"\naddress = \"{}\"\nusername = \"proxy\"\npassword = \"proxy-pw\"\n",
            r.address()
        ));
    }
    let proxy = Proxy::start(&text);
    let mut c = proxy.client();
    let key = proxy.key_on(0, "session:");
    assert_eq!(c.text(&["SET", &key, "v"]), "+OK\r\n");
    assert_eq!(c.text(&["GET", &key]), "$1\r\nv\r\n");
    assert!(c.text(&["SCAN", "0"]).starts_with("*2"));
    assert!(c.text(&["KEYS", "*"]).contains(&key));
    assert!(c.text(&["INFO"]).contains("redis_version"));
    assert_eq!(
        c.text(&["EVAL", "return redis.call('get', KEYS[1])", "1", &key]),
        "$1\r\nv\r\n"
    );
    for body in [
        "return redis.call('flushall')",
        "return redis.call('flushdb')",
        "return redis.call('swapdb', 0, 1)",
    ] {
        let refused = c.text(&["EVAL", body, "1", &key]);
        assert!(
            refused.contains("can't run this command"),
            "{body}: {refused}"
        );
    }
    assert_eq!(
        c.text(&["GET", &key]),
        "$1\r\nv\r\n",
        "the data is still there"
    );
}

#[test]
fn client_setinfo_cannot_forge_client_list_lines() {
    let servers: Vec<Redis> = (0..1).map(|_| Redis::start()).collect();
    let proxy = proxy_over(&servers, "");
    let mut c = proxy.client();
    assert_eq!(
        c.text(&["CLIENT", "SETINFO", "lib-name", "x\nid=1 addr=evil"]),
        "-ERR lib-name cannot contain spaces, newlines or special characters.\r\n"
    );
    assert_eq!(
        c.text(&["CLIENT", "SETINFO", "LIB-VER", "1 2"]),
        "-ERR LIB-VER cannot contain spaces, newlines or special characters.\r\n"
    );
    assert_eq!(
        c.text(&["CLIENT", "SETINFO", "lib-name", "redis-py"]),
        "+OK\r\n"
    );
    assert!(c.text(&["CLIENT", "INFO"]).contains(" lib-name=redis-py "));
}

#[test]
fn password_guessing_is_slowed_and_cut_off() {
    let recorder = crate::common::recorder();
    let servers: Vec<Redis> = (0..1).map(|_| Redis::start()).collect();
    let config = format!("{USERS}\n[limits]\nauth_failures_per_address = 30\n");
    let proxy = proxy_over(&servers, &config);
    // One connection: closed at its tenth wrong password.
    let mut guesser = proxy.client();
    for n in 1..=10 {
        assert!(
            guesser
                .text(&["AUTH", "alice", &format!("guess{n}")])
                .starts_with("-WRONGPASS"),
            "{n}"
        );
    }
    assert!(guesser.is_closed(), "still open after 10 wrong passwords");
    // One address, many connections: cut off past 30 in the minute, even
    // with the right password then.
    for n in 0..21 {
        let mut c = proxy.client();
        assert!(c
            .text(&["AUTH", "alice", &format!("g{n}")])
            .starts_with("-WRONGPASS"));
    }
    let mut late = proxy.client();
    let refused = late.text(&["AUTH", "alice", "alice-pw"]);
    assert!(
        refused.starts_with("-ERR too many wrong passwords"),
        "{refused}"
    );
    assert!(late.is_closed());
    let text = recorder.render();
    assert!(
        crate::common::sample(&text, "session_proxy_auth_failures_total").unwrap_or(0.0) >= 30.0
    );
    assert!(
        crate::common::sample(
            &text,
            "session_proxy_clients_closed_total{reason=\"auth_failures\"}"
        )
        .unwrap_or(0.0)
            >= 2.0
    );
}

#[test]
fn the_admin_token_guards_every_endpoint_but_the_probes() {
    let redis = Redis::start();
    let running = crate::common::Running::start(&format!(
        "token = \"s3cret\"\n{}",
        crate::common::backends_toml(&[("a", &redis, 1.0)])
    ));
    for path in ["/", "/status", "/metrics", "/topology"] {
        assert_eq!(running.http("GET", path).0, 401, "{path}");
        assert_eq!(
            running.http("GET", &format!("{path}?token=wrong")).0,
            401,
            "{path}"
        );
        assert_eq!(
            running.http("GET", &format!("{path}?token=s3cret")).0,
            200,
            "{path}"
        );
    }
    assert_eq!(running.http("POST", "/reload").0, 401);
    assert_eq!(running.http("POST", "/reload?token=s3cret").0, 200);
    assert_eq!(running.http("GET", "/healthz").0, 200);
    assert_eq!(running.http("GET", "/readyz").0, 200);
}

/// The proxy's peak resident memory (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kib| kib.parse::<u64>().ok())
        .unwrap()
        * 1024
}

#[test]
fn no_request_takes_the_proxy_past_its_memory_limit() {
    const LIMIT: u64 = 256 << 20;
    let servers: Vec<Redis> = (0..2).map(|_| Redis::start()).collect();
    let running = crate::common::Running::start(&format!(
        "[limits]\nmax_memory_bytes = {LIMIT}\n{}",
        crate::common::backends_toml(&[("a", &servers[0], 1.0), ("b", &servers[1], 1.0)])
    ));
    // Four clients at once, each with a 58 MB MGET of 2.5 million keys.
    let keys: Vec<Vec<u8>> = (0..2_500_000)
        .map(|i| format!("session:{i:08}").into_bytes())
        .collect();
    let mut words: Vec<&[u8]> = vec![b"MGET"];
    words.extend(keys.iter().map(Vec::as_slice));
    let request = std::sync::Arc::new(RawClient::encode(&words));
    let attackers: Vec<_> = (0..4)
        .map(|_| {
            let (request, port) = (request.clone(), running.port);
            std::thread::spawn(move || {
                let mut c = RawClient::connect(port);
                c.send_raw(&request);
                c.try_read_reply()
                    .map(|r| String::from_utf8_lossy(&r[..r.len().min(64)]).into_owned())
                    .unwrap_or_else(|_| "closed".into())
            })
        })
        .collect();
    // Meanwhile another client's session reads are served.
    let mut other = running.client();
    let key = "session:other";
    assert_eq!(other.text(&["SET", key, "v"]), "+OK\r\n");
    while !attackers.iter().all(|a| a.is_finished()) {
        assert_eq!(other.text(&["GET", key]), "$1\r\nv\r\n");
    }
    for attacker in attackers {
        let reply = attacker.join().unwrap();
        assert!(
            reply.starts_with("-OOM command not allowed") || reply == "closed",
            "{reply}"
        );
    }
    // A large request that fits is served.
    let mut words: Vec<&[u8]> = vec![b"MGET"];
    words.extend(keys[..100_000].iter().map(Vec::as_slice));
    other.send(&words);
    assert!(other.read_reply().starts_with(b"*100000\r\n"));
    let peak = peak_rss(running.pid());
    assert!(peak < LIMIT, "peak RSS {} MiB", peak >> 20);
}
