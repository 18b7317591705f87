//! Commands Redis's own test suite needs from a proxy: FUNCTION on every
//! backend, scripts without keys, SCRIPT KILL of a busy script, CONFIG SET
//! of the parameters `[keys] config_set` lists, CONFIG RESETSTAT, TIME,
//! CLIENT REPLY, INFO's sections as Redis names them, a script's
//! self-holding table passed on whole; each against a direct Redis where it
//! has the same answer.

use std::time::Duration;

use crate::common::{proxy_over, wait_until, Differential, RawClient, Redis};

const LIBRARY: &str = "#!lua name=mylib\nredis.register_function('myget', function(keys) return redis.call('get', keys[1]) end)";

#[test]
fn functions_are_loaded_on_every_backend_and_called_by_key() {
    let servers: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let proxy = proxy_over(&servers, "");
    let mut c = proxy.client();
    assert_eq!(c.text(&["FUNCTION", "FLUSH"]), "+OK\r\n");
    assert_eq!(c.text(&["FUNCTION", "LOAD", LIBRARY]), "$5\r\nmylib\r\n");
    for server in &servers {
        assert!(server
            .client()
            .text(&["FUNCTION", "LIST"])
            .contains("myget"));
    }
    for backend in 0..3 {
        let key = proxy.key_on(backend, "f:");
        assert_eq!(c.text(&["SET", &key, "v"]), "+OK\r\n");
        assert_eq!(c.text(&["FCALL", "myget", "1", &key]), "$1\r\nv\r\n");
    }
    assert!(c.text(&["FUNCTION", "LIST"]).contains("mylib"));
    assert!(c
        .text(&["FUNCTION", "LOAD", LIBRARY])
        .starts_with("-ERR Library 'mylib' already exists"));
    assert_eq!(c.text(&["FUNCTION", "DELETE", "mylib"]), "+OK\r\n");
    for server in &servers {
        assert_eq!(server.client().text(&["FUNCTION", "LIST"]), "*0\r\n");
    }
    // A script without keys runs on one backend.
    assert_eq!(c.text(&["EVAL", "return 'k'", "0"]), "$1\r\nk\r\n");
    // Under key prefixes functions change nothing.
    let limited = proxy_over(&servers, "[keys]\nprefixes = [\"f:\"]\n");
    let refused = limited.client().text(&["FUNCTION", "LOAD", LIBRARY]);
    assert!(refused.starts_with("-NOPERM functions"), "{refused}");
}

#[test]
fn script_kill_reaches_a_backend_busy_with_a_script() {
    let servers: Vec<Redis> = (0..1).map(|_| Redis::start()).collect();
    let proxy = proxy_over(
        &servers,
        "[keys]\nconfig_set = [\"busy-reply-threshold\"]\n",
    );
    let mut admin = proxy.client();
    assert_eq!(
        admin.text(&["CONFIG", "SET", "busy-reply-threshold", "10"]),
        "+OK\r\n"
    );
    let mut busy = proxy.client();
    busy.send(&[b"EVAL", b"while true do end", b"0"]);
    // The pool's connection carries the script: SCRIPT KILL goes on one of
    // its own, and the script's client gets Redis's answer.
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(20),
        "SCRIPT KILL killed the script",
        || admin.text(&["SCRIPT", "KILL"]) == "+OK\r\n",
    );
    let answer = String::from_utf8_lossy(&busy.read_reply()).into_owned();
    assert!(answer.contains("killed by user"), "{answer}");
    assert_eq!(
        admin.text(&["SCRIPT", "KILL"]),
        "-NOTBUSY No scripts in execution right now.\r\n"
    );
}

#[test]
fn config_set_of_listed_parameters_reaches_every_backend() {
    let servers: Vec<Redis> = (0..2).map(|_| Redis::start()).collect();
    let proxy = proxy_over(
        &servers,
        "[keys]\nconfig_set = [\"list-max-listpack-size\", \"hash-max-listpack-entries\"]\n",
    );
    let mut c = proxy.client();
    assert_eq!(
        c.text(&[
            "CONFIG",
            "SET",
            "list-max-listpack-size",
            "5",
            "hash-max-listpack-entries",
            "7"
        ]),
        "+OK\r\n"
    );
    for server in &servers {
        assert_eq!(
            server
                .client()
                .text(&["CONFIG", "GET", "hash-max-listpack-entries"]),
            "*2\r\n$25\r\nhash-max-listpack-entries\r\n$1\r\n7\r\n"
        );
    }
    assert_eq!(
        c.text(&["CONFIG", "GET", "list-max-listpack-size"]),
        "*2\r\n$22\r\nlist-max-listpack-size\r\n$1\r\n5\r\n"
    );
    assert!(c
        .text(&["CONFIG", "SET", "list-max-listpack-size"])
        .starts_with("-ERR wrong number of arguments"));
    assert!(c
        .text(&["CONFIG", "SET", "list-max-listpack-size", "abc"])
        .starts_with("-ERR CONFIG SET failed"));
    // Not listed: refused; the proxy's own parameter to its own value: OK.
    assert!(c
        .text(&["CONFIG", "SET", "maxmemory", "1"])
        .starts_with("-ERR CONFIG SET is not supported"));
    assert_eq!(c.text(&["CONFIG", "SET", "save", ""]), "+OK\r\n");
    assert_eq!(c.text(&["CONFIG", "RESETSTAT"]), "+OK\r\n");
}

/// INFO's sections as Redis 7 reads its arguments (default, all, several
/// names, in any case), with the fields clients and Redis's tests read.
#[test]
fn info_sections_are_chosen_as_redis_chooses_them() {
    let Differential {
        servers: _servers,
        reference,
        proxy,
    } = Differential::start(1, "");
    let mut c = proxy.client();
    let mut direct = reference.client();
    c.cmd(&["GET", "x"]);
    c.cmd(&["NOSUCHCOMMAND"]);
    let sections = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("# "))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    for args in [
        vec!["INFO"],
        vec!["INFO", "default"],
        vec!["INFO", "all"],
        vec!["INFO", "cpu"],
        vec!["INFO", "CPU", "memory"],
        vec!["INFO", "commandSTATS"],
        vec!["INFO", "cpu", "all"],
    ] {
        let (ours, theirs) = (c.text(&args), direct.text(&args));
        // Redis's sections come first, in Redis's order; the proxy's own after.
        let (ours, theirs) = (sections(&ours), sections(&theirs));
        let common: Vec<&String> = ours.iter().filter(|s| theirs.contains(s)).collect();
        let expected: Vec<&String> = theirs.iter().filter(|s| ours.contains(s)).collect();
        assert_eq!(common, expected, "{args:?}");
        for section in [
            "# Server",
            "# Clients",
            "# Memory",
            "# CPU",
            "# Commandstats",
        ] {
            assert_eq!(
                ours.iter().any(|s| s == section),
                theirs.iter().any(|s| s == section),
                "{args:?}: {section}"
            );
        }
    }
    let all = c.text(&["INFO", "all"]);
    for field in [
        "used_cpu_user:",
        "used_memory:",
        "blocked_clients:0",
        "mem_allocator:",
        "cmdstat_get:calls=1,",
        "errorstat_ERR:count=1",
        "total_error_replies:1",
    ] {
        assert!(all.contains(field), "{field}: {all}");
    }
}

#[test]
fn info_memory_counts_the_backends_scripts() {
    let servers: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let proxy = proxy_over(&servers, "");
    let mut c = proxy.client();
    let field = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {text}"))
    };
    for proto in ["2", "3"] {
        c.cmd(&["HELLO", proto]);
        assert_eq!(c.text(&["SCRIPT", "FLUSH"]), "+OK\r\n");
        let empty = c.text(&["INFO", "memory"]);
        assert_eq!(field(&empty, "number_of_cached_scripts"), 0);
        for n in 0..3 {
            c.cmd(&["SCRIPT", "LOAD", &format!("return {n}")]);
        }
        // Each script lives on every backend; a client counts it once, as
        // on one Redis, and the memory of all of them.
        for args in [
            vec!["INFO", "memory"],
            vec!["INFO"],
            vec!["INFO", "everything"],
        ] {
            let text = c.text(&args);
            assert_eq!(field(&text, "number_of_cached_scripts"), 3, "{args:?}");
            assert!(field(&text, "used_memory_scripts") > 0, "{args:?}");
            assert!(field(&text, "used_memory_lua") > 0, "{args:?}");
        }
        assert!(!c
            .text(&["INFO", "stats"])
            .contains("number_of_cached_scripts"));
        assert_eq!(c.text(&["SCRIPT", "FLUSH", "ASYNC"]), "+OK\r\n");
        let flushed = c.text(&["INFO", "memory"]);
        assert_eq!(field(&flushed, "number_of_cached_scripts"), 0);
    }
}

#[test]
fn time_client_reply_and_deep_replies() {
    let servers: Vec<Redis> = (0..1).map(|_| Redis::start()).collect();
    let proxy = proxy_over(&servers, "");
    let mut c = proxy.client();
    let time = c.text(&["TIME"]);
    assert!(time.starts_with("*2\r\n$10\r\n"), "{time}");
    // CLIENT REPLY OFF, then ON; SKIP skips the next reply only.
    c.send(&[b"CLIENT", b"REPLY", b"OFF"]);
    c.send(&[b"SET", b"a", b"1"]);
    c.send(&[b"CLIENT", b"REPLY", b"ON"]);
    assert_eq!(c.read_reply(), b"+OK\r\n");
    c.send(&[b"CLIENT", b"REPLY", b"SKIP"]);
    c.send(&[b"GET", b"a"]);
    c.send(&[b"PING"]);
    assert_eq!(c.read_reply(), b"+PONG\r\n");
    // A script's table that holds itself: Redis answers 7,995 nested
    // arrays and an error; passed on whole, the connection lives.
    c.send(&[
        b"EVAL",
        b"local a = {}; local b = {a}; a[1] = b; return a",
        b"0",
    ]);
    let deep = c.read_reply();
    assert!(deep.ends_with(b"-ERR reached lua stack limit\r\n"));
    assert_eq!(deep.len(), 7995 * 4 + 30);
    assert_eq!(c.text(&["GET", "a"]), "$1\r\n1\r\n");
    let mut other = RawClient::connect(proxy.port);
    assert_eq!(other.text(&["PING"]), "+PONG\r\n");
}

/// `COMMAND INFO` of a real Redis, with some commands given names the
/// generated table lacks (as a newer server or a module announces commands
/// of its own), and the key specs of `incomplete` flagged `incomplete` (as
/// SORT's and MIGRATE's are).
fn command_info_changed(
    redis: &Redis,
    renames: &[(&str, &str)],
    incomplete: Option<&str>,
) -> session_proxy::protocol::Reply {
    use session_proxy::protocol::Reply;
    let mut c = redis.client();
    c.send(&[b"COMMAND", b"INFO"]);
    let Reply::Array(mut commands) = Reply::Raw(bytes::Bytes::from(c.read_reply())).parsed() else {
        panic!("COMMAND INFO is an array");
    };
    for command in commands.iter_mut() {
        let Reply::Array(fields) = command else {
            continue;
        };
        if let Some(Reply::Bulk(name)) = fields.first() {
            if let Some((_, to)) = renames
                .iter()
                .find(|(from, _)| name.as_ref() == from.as_bytes())
            {
                fields[0] = Reply::Bulk(bytes::Bytes::from(to.to_string()));
            }
        }
        let named = matches!(fields.first(), Some(Reply::Bulk(n)) if Some(n.as_ref()) == incomplete.map(str::as_bytes));
        if let (true, Some(Reply::Array(specs))) = (named, fields.get_mut(8)) {
            for spec in specs.iter_mut() {
                let Reply::Array(pairs) = spec else { continue };
                if let Some(i) = pairs
                    .iter()
                    .position(|p| matches!(p, Reply::Bulk(k) if k.as_ref() == b"flags"))
                {
                    if let Some(Reply::Array(flags)) = pairs.get_mut(i + 1) {
                        flags.push(Reply::Status(bytes::Bytes::from_static(b"incomplete")));
                    }
                }
            }
        }
    }
    Reply::Array(commands)
}

/// What the backends announce that the generated table lacks is learned
/// when every backend announces it alike: routed by its key specs, or, when
/// its specs do not tell every key (SORT's are incomplete), known but
/// refused; what only some backends know, and what Redis files as
/// dangerous or admin, stays unknown.
#[test]
fn commands_the_backends_announce_are_learned_when_they_all_agree() {
    use session_proxy::protocol::learned::{learn, Learned};
    let redis = Redis::start();
    let renames = [("hget", "xhget"), ("lpush", "xpush"), ("zadd", "xzadd")];
    let renamed = command_info_changed(&redis, &renames, Some("xpush"));
    let plain = command_info_changed(&redis, &renames[..2], Some("xpush"));
    let learned = learn(&[renamed.clone(), plain]);
    let Some(Learned::Routed(spec)) = learned.get("xhget") else {
        panic!("xhget is routed: {:?}", learned.get("xhget"));
    };
    assert_eq!((spec.arity, spec.write), (3, false));
    let args: Vec<&[u8]> = vec![b"xhget", b"k", b"f"];
    assert_eq!(
        session_proxy::protocol::keys::of_args(spec, &args),
        Ok(vec![1])
    );
    assert!(matches!(
        learned.get("xpush"),
        Some(Learned::Unsure("xpush"))
    ));
    assert!(!learned.contains_key("xzadd"), "one backend only");
    for left_out in ["migrate", "restore-asking", "pfdebug", "hget", "config"] {
        assert!(!learned.contains_key(left_out), "{left_out}");
    }
}

/// Through the proxy: a learned command goes to its key's backend, and one
/// that cannot be routed is refused (NOPERM under key prefixes). The
/// backends run HGET as XHGET (`rename-command`); their COMMAND INFO still
/// names it `hget`, so what they teach is given to the proxy here.
#[test]
fn learned_commands_are_routed_to_their_keys_backend() {
    use session_proxy::protocol::learned::{learn, Learned};
    let servers: Vec<Redis> = (0..3)
        .map(|_| Redis::start_with(&["--rename-command", "HGET", "XHGET"]))
        .collect();
    let info = command_info_changed(
        &servers[0],
        &[("hget", "xhget"), ("lpush", "xpush")],
        Some("xpush"),
    );
    let taught = learn(&[info]);
    let proxy = proxy_over(&servers, "");
    let limited = proxy_over(&servers, "[keys]\nprefixes = [\"h:\"]\n");
    for p in [&proxy, &limited] {
        let topology = p.shared.topology();
        wait_until(
            Duration::from_secs(10),
            Duration::from_millis(10),
            "the backends answered COMMAND INFO",
            || {
                topology
                    .learned_once
                    .load(std::sync::atomic::Ordering::Acquire)
            },
        );
        let mut map = topology.learned.write().unwrap();
        map.extend(taught.iter().map(|(k, v)| (k.clone(), *v)));
    }
    assert!(matches!(taught.get("xhget"), Some(Learned::Routed(_))));
    let mut c = proxy.client();
    for backend in 0..3 {
        let key = proxy.key_on(backend, "h:");
        assert_eq!(c.text(&["HSET", &key, "f", "v"]), ":1\r\n");
        assert_eq!(c.text(&["XHGET", &key, "f"]), "$1\r\nv\r\n");
    }
    assert_eq!(
        c.text(&["XHGET", "k"]),
        "-ERR wrong number of arguments for 'xhget' command\r\n"
    );
    assert!(c
        .text(&["XPUSH", "l", "v"])
        .starts_with("-ERR session-proxy cannot route 'xpush'"));
    let mut l = limited.client();
    assert_eq!(
        l.text(&["XHGET", "other", "f"]),
        "-NOPERM this user has no permissions to access one of the keys used as arguments\r\n"
    );
    assert_eq!(
        l.text(&["XPUSH", "h:l", "v"]),
        "-NOPERM this user has no permissions to run the 'xpush' command\r\n"
    );
}

/// CLIENT UNBLOCK: a client of the caller's own user blocked on a server
/// is unblocked there, answered as Redis answers (a timeout's null, or
/// `-UNBLOCKED`), byte for byte with a direct Redis; a client that is not
/// blocked, or another user's, gets `:0`, and bad arguments Redis's errors.
#[test]
fn client_unblock_unblocks_the_callers_own_users_clients() {
    let redis = Redis::start();
    let proxy = proxy_over(std::slice::from_ref(&redis), "");
    let direct_port = redis.port;
    for port in [direct_port, proxy.port] {
        let mut blocked = RawClient::connect(port);
        let id = blocked.text(&["CLIENT", "ID"]);
        let id = id.trim_start_matches(':').trim_end().to_string();
        let mut admin = RawClient::connect(port);
        assert_eq!(unblock(&mut blocked, &mut admin, &id, None), "*-1\r\n");
        assert_eq!(
            unblock(&mut blocked, &mut admin, &id, Some("TIMEOUT")),
            "*-1\r\n"
        );
        assert_eq!(
            unblock(&mut blocked, &mut admin, &id, Some("error")),
            "-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n"
        );
        for (args, answer) in [
            (vec!["CLIENT", "UNBLOCK", &id], ":0\r\n".to_string()),
            (
                vec!["CLIENT", "UNBLOCK", "asd"],
                "-ERR value is not an integer or out of range\r\n".into(),
            ),
            (
                vec!["CLIENT", "UNBLOCK", &id, "nope"],
                "-ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR\r\n".into(),
            ),
            (
                vec!["CLIENT", "UNBLOCK"],
                "-ERR wrong number of arguments for 'client|unblock' command\r\n".into(),
            ),
            (
                vec!["CLIENT", "UNBLOCK", &id, "error", "x"],
                "-ERR unknown subcommand or wrong number of arguments for 'UNBLOCK'. Try CLIENT HELP.\r\n".into(),
            ),
        ] {
            assert_eq!(admin.text(&args), answer, "{args:?}");
        }
        // The client works on, and a RESP3 one gets RESP3's null.
        assert_eq!(blocked.text(&["LPUSH", "unblock:l", "v"]), ":1\r\n");
        assert_eq!(blocked.text(&["LPOP", "unblock:l"]), "$1\r\nv\r\n");
        blocked.hello3();
        assert_eq!(unblock(&mut blocked, &mut admin, &id, None), "_\r\n");
    }
    // Another user's client stays blocked.
    let users = proxy_over(
        std::slice::from_ref(&redis),
        "[[users]]\nname = \"alice\"\npassword = \"alice-pw\"\n\n[[users]]\nname = \"bob\"\npassword = \"bob-pw\"\n",
    );
    let login = |user: &str| {
        let mut c = users.client();
        assert_eq!(c.text(&["AUTH", user, &format!("{user}-pw")]), "+OK\r\n");
        c
    };
    let (mut blocked, mut bob, mut alice) = (login("bob"), login("bob"), login("alice"));
    let id = blocked.text(&["CLIENT", "ID"]);
    let id = id.trim_start_matches(':').trim_end().to_string();
    blocked.send(&[b"BLPOP", b"unblock:l", b"0"]);
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(5),
        "the client is blocked",
        || bob.text(&["CLIENT", "LIST", "ID", &id]).contains("flags=b"),
    );
    assert_eq!(alice.text(&["CLIENT", "UNBLOCK", &id]), ":0\r\n");
    assert_eq!(bob.text(&["CLIENT", "UNBLOCK", &id]), ":1\r\n");
    assert_eq!(blocked.read_reply(), b"*-1\r\n");
}

/// Blocks `blocked` in BLPOP, unblocks it by CLIENT UNBLOCK `id` [reason]
/// from `admin` (answered `:1`), and returns the blocked client's reply.
fn unblock(
    blocked: &mut RawClient,
    admin: &mut RawClient,
    id: &str,
    reason: Option<&str>,
) -> String {
    blocked.send(&[b"BLPOP", b"unblock:l", b"0"]);
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(5),
        "the client is blocked",
        || {
            admin
                .text(&["CLIENT", "LIST", "ID", id])
                .contains("flags=b")
        },
    );
    let mut args = vec!["CLIENT", "UNBLOCK", id];
    args.extend(reason);
    assert_eq!(admin.text(&args), ":1\r\n", "{reason:?}");
    String::from_utf8(blocked.read_reply()).unwrap()
}

/// CLIENT UNBLOCK of a client whose blocking command a write pause holds
/// (`CLIENT PAUSE ... WRITE`, as a FAILOVER pauses): asked of Redis 7.0
/// directly, its TIMEOUT form panics the server (`Unknown btype in
/// replyToBlockedClientTimedOut()`) and its ERROR form answers the command
/// and runs it again later. Through the proxy the UNBLOCK waits for the
/// pause, up to the connect timeout (half the request timeout at most): a
/// pause that outlasts that leaves the
/// command blocked and answers 0, and the server lives on; a pause that ends
/// first lets the command block on its key again, and the UNBLOCK ends it
/// there, once.
#[test]
fn client_unblock_of_a_command_a_write_pause_holds_leaves_the_server_up() {
    let redis = Redis::start();
    let proxy = proxy_over(
        std::slice::from_ref(&redis),
        "[pool]\nconnect_timeout_ms = 3000\nrequest_timeout_ms = 6000\n",
    );
    let mut direct = RawClient::connect(redis.port);
    let mut admin = proxy.client();
    let held = |direct: &mut RawClient, command: &str| {
        wait_until(
            Duration::from_secs(10),
            Duration::from_millis(5),
            "a command is held by the pause",
            || {
                let list = direct.text(&["CLIENT", "LIST"]);
                list.lines().any(|l| {
                    let flags = l.split(' ').find_map(|f| f.strip_prefix("flags="));
                    flags.is_some_and(|f| f.contains('b'))
                        && l.contains(&format!(" cmd={command} "))
                })
            },
        );
    };
    // A pause that outlasts the UNBLOCK's patience.
    let mut blocked = proxy.client();
    let id = blocked.text(&["CLIENT", "ID"]);
    let id = id.trim_start_matches(':').trim_end().to_string();
    assert_eq!(
        direct.text(&["CLIENT", "PAUSE", "60000", "WRITE"]),
        "+OK\r\n"
    );
    blocked.send(&[b"BLPOP", b"pause:l", b"0"]);
    held(&mut direct, "blpop");
    assert_eq!(admin.text(&["CLIENT", "UNBLOCK", &id]), ":0\r\n");
    assert_eq!(direct.text(&["PING"]), "+PONG\r\n");
    assert_eq!(direct.text(&["CLIENT", "UNPAUSE"]), "+OK\r\n");
    assert_eq!(direct.text(&["LPUSH", "pause:l", "v"]), ":1\r\n");
    assert_eq!(blocked.read_reply(), b"*2\r\n$7\r\npause:l\r\n$1\r\nv\r\n");
    // A pause that ends while the UNBLOCK waits.
    assert_eq!(
        direct.text(&["CLIENT", "PAUSE", "60000", "WRITE"]),
        "+OK\r\n"
    );
    blocked.send(&[b"BLPOP", b"pause:l", b"0"]);
    held(&mut direct, "blpop");
    admin.send(&[b"CLIENT", b"UNBLOCK", id.as_bytes(), b"ERROR"]);
    held(&mut direct, "publish");
    assert_eq!(direct.text(&["CLIENT", "UNPAUSE"]), "+OK\r\n");
    assert_eq!(admin.read_reply(), b":1\r\n");
    assert_eq!(
        blocked.read_reply(),
        b"-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n"
    );
    assert_eq!(blocked.text(&["PING"]), "+PONG\r\n");
    assert_eq!(direct.text(&["PING"]), "+PONG\r\n");
}
