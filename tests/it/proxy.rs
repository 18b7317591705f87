//! The proxy's own behaviour against real redis-server backends: routing,
//! pipelining, handshakes, local commands, auth, key policy, databases and
//! backend failures.

use std::io::Read;
use std::time::Duration;

use crate::common::{config_for, wait_until, Proxy, RawClient, Redis, READY_LIMIT};

fn two_backends(extra: &str) -> (Redis, Redis, Proxy) {
    let (a, b) = (Redis::start(), Redis::start());
    let proxy = Proxy::start(&config_for(
        &[("a", a.address(), 1.0), ("b", b.address(), 2.0)],
        extra,
    ));
    (a, b, proxy)
}

#[test]
fn keys_land_on_the_backend_the_router_names() {
    let (a, b, proxy) = two_backends("");
    let mut client = proxy.client();
    let backends = [&a, &b];
    for i in 0..200 {
        let key = format!("session:{i}");
        assert_eq!(client.text(&["SET", &key, "v"]), "+OK\r\n");
        let owner = proxy.owner(&key);
        assert_eq!(backends[owner].client().text(&["EXISTS", &key]), ":1\r\n");
        assert_eq!(
            backends[1 - owner].client().text(&["EXISTS", &key]),
            ":0\r\n"
        );
    }
    // Both backends got a share.
    let sizes: Vec<String> = backends
        .iter()
        .map(|r| r.client().text(&["DBSIZE"]))
        .collect();
    assert!(sizes.iter().all(|s| s != ":0\r\n"), "{sizes:?}");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (_a, _b, proxy) = two_backends("");
    let mut client = proxy.client();
    let mut batch = Vec::new();
    let n = 2000;
    for i in 0..n {
        let key = format!("k{}", i % 50);
        batch.extend(RawClient::encode(&[
            b"SET",
            key.as_bytes(),
            i.to_string().as_bytes(),
        ]));
        batch.extend(RawClient::encode(&[b"GET", key.as_bytes()]));
        if i % 100 == 0 {
            batch.extend(RawClient::encode(&[b"PING"]));
        }
    }
    client.send_raw(&batch);
    for i in 0..n {
        assert_eq!(client.read_reply(), b"+OK\r\n");
        let value = i.to_string();
        assert_eq!(
            client.read_reply(),
            format!("${}\r\n{value}\r\n", value.len()).as_bytes()
        );
        if i % 100 == 0 {
            assert_eq!(client.read_reply(), b"+PONG\r\n");
        }
    }
}

#[test]
fn inline_commands_and_several_commands_per_packet() {
    let (_a, _b, proxy) = two_backends("");
    let mut client = proxy.client();
    client
        .send_raw(b"PING\r\nSET greeting \"hello world\"\r\nGET greeting\r\n*1\r\n$4\r\nPING\r\n");
    assert_eq!(client.read_reply(), b"+PONG\r\n");
    assert_eq!(client.read_reply(), b"+OK\r\n");
    assert_eq!(client.read_reply(), b"$11\r\nhello world\r\n");
    assert_eq!(client.read_reply(), b"+PONG\r\n");
    // A handshake pipelined the way node-redis and redis-rb send it.
    client.send_raw(
        &[
            RawClient::encode(&[b"HELLO", b"3"]),
            RawClient::encode(&[b"CLIENT", b"SETINFO", b"LIB-NAME", b"x"]),
            RawClient::encode(&[b"SELECT", b"1"]),
            RawClient::encode(&[b"GET", b"greeting"]),
        ]
        .concat(),
    );
    client.resp3 = true;
    assert_eq!(client.read_reply()[0], b'%');
    assert_eq!(client.read_reply(), b"+OK\r\n");
    assert_eq!(client.read_reply(), b"+OK\r\n");
    // Database 1 is empty: a RESP3 null.
    assert_eq!(client.read_reply(), b"_\r\n");
}

#[test]
fn resp3_nulls_and_replies_queued_before_hello_keep_their_protocol() {
    let (_a, _b, proxy) = two_backends("");
    let mut client = proxy.client();
    // GET is answered in RESP2 although HELLO 3 follows it in the same packet.
    client.send_raw(
        &[
            RawClient::encode(&[b"GET", b"missing"]),
            RawClient::encode(&[b"HELLO", b"3"]),
        ]
        .concat(),
    );
    assert_eq!(client.read_reply(), b"$-1\r\n");
    client.resp3 = true;
    assert_eq!(client.read_reply()[0], b'%');
    assert_eq!(client.cmd(&["GET", "missing"]), b"_\r\n");
    assert_eq!(
        client.cmd(&["MGET", "missing", "x", "y"]),
        b"*3\r\n_\r\n_\r\n_\r\n"
    );
    assert_eq!(client.cmd(&["CLIENT", "GETNAME"]), b"_\r\n");
    // HELLO 2 switches back.
    client.resp3 = false;
    assert_eq!(client.cmd(&["HELLO", "2"])[0], b'*');
    assert_eq!(client.cmd(&["GET", "missing"]), b"$-1\r\n");
}

#[test]
fn hello_replies_like_redis_7() {
    let (_a, _b, proxy) = two_backends("");
    let mut client = proxy.client();
    client.resp3 = true;
    let reply = String::from_utf8(client.cmd(&["HELLO", "3", "SETNAME", "web1"])).unwrap();
    assert!(
        reply.starts_with("%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$"),
        "{reply}"
    );
    assert!(
        reply.contains("$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:"),
        "{reply}"
    );
    assert!(reply.ends_with("$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n"), "{reply}");
    assert_eq!(client.cmd(&["CLIENT", "GETNAME"]), b"$4\r\nweb1\r\n");
    assert_eq!(
        client.text(&["HELLO", "4"]),
        "-NOPROTO unsupported protocol version\r\n"
    );
    assert_eq!(
        client.text(&["HELLO", "x"]),
        "-ERR Protocol version is not an integer or out of range\r\n"
    );
    assert_eq!(
        client.text(&["HELLO", "3", "FOO"]),
        "-ERR Syntax error in HELLO option 'FOO'\r\n"
    );
}

#[test]
fn client_list_and_kill_see_every_client_of_the_same_user() {
    let (_a, _b, proxy) = two_backends(
        "[[users]]\nname = \"app\"\npassword = \"app-pw\"\nprefixes = [\"s:\"]\n\
         [[users]]\nname = \"ops\"\npassword = \"ops-pw\"\n",
    );
    let mut first = proxy.client();
    let mut second = proxy.client();
    let mut other_user = proxy.client();
    for client in [&mut first, &mut second] {
        assert_eq!(client.text(&["AUTH", "ops", "ops-pw"]), "+OK\r\n");
    }
    assert_eq!(other_user.text(&["AUTH", "app", "app-pw"]), "+OK\r\n");
    first.text(&["CLIENT", "SETNAME", "first"]);
    second.text(&["SELECT", "3"]);
    let id = |c: &mut RawClient| c.text(&["CLIENT", "ID"])[1..].trim().to_string();
    let (first_id, second_id, other_id) = (id(&mut first), id(&mut second), id(&mut other_user));
    // One user's clients see each other, not another user's.
    let list = first.text(&["CLIENT", "LIST"]);
    assert!(list.contains(&format!("id={first_id} ")), "{list}");
    assert!(list.contains("name=first"), "{list}");
    assert!(
        list.contains(&format!("id={second_id} ")) && list.contains("db=3"),
        "{list}"
    );
    assert!(list.contains("cmd=client|list"), "{list}");
    assert!(!list.contains(&format!("id={other_id} ")), "{list}");
    let theirs = other_user.text(&["CLIENT", "LIST"]);
    assert!(theirs.contains(&format!("id={other_id} ")) && theirs.contains("user=app"));
    assert!(!theirs.contains(&format!("id={first_id} ")), "{theirs}");
    let only = first.text(&["CLIENT", "LIST", "ID", &second_id]);
    assert_eq!(only.matches("id=").count(), 1, "{only}");
    // KILL: another user's client cannot be reached; one's own is skipped
    // unless asked; the killed connection closes.
    assert_eq!(first.text(&["CLIENT", "KILL", "ID", &other_id]), ":0\r\n");
    assert_eq!(first.text(&["CLIENT", "KILL", "ID", &first_id]), ":0\r\n");
    assert_eq!(first.text(&["CLIENT", "KILL", "ID", &second_id]), ":1\r\n");
    crate::common::wait_until(
        crate::common::READY_LIMIT,
        std::time::Duration::from_millis(5),
        "the killed client is closed",
        || second.is_closed(),
    );
    assert_eq!(other_user.text(&["PING"]), "+PONG\r\n");
    assert_eq!(
        first.text(&["CLIENT", "KILL", "ID", "0"]),
        "-ERR client-id should be greater than 0\r\n"
    );
    assert_eq!(
        first.text(&["CLIENT", "KILL", "BOGUS", "1"]),
        "-ERR syntax error\r\n"
    );
}

#[test]
fn local_commands() {
    let (a, _b, proxy) = two_backends("");
    let mut client = proxy.client();
    // INFO and HELLO report the backends' (lowest) Redis version once known.
    let line = |text: String| {
        text.lines()
            .find(|l| l.starts_with("redis_version:"))
            .unwrap_or_default()
            .to_string()
    };
    let theirs = line(a.client().text(&["INFO", "server"]));
    assert!(theirs.len() > "redis_version:".len());
    client.text(&["GET", "warm-up"]);
    crate::common::wait_until(
        crate::common::READY_LIMIT,
        std::time::Duration::from_millis(10),
        "backend versions known",
        || {
            proxy
                .shared
                .topology()
                .backends
                .iter()
                .all(|b| b.version().is_some())
        },
    );
    assert_eq!(line(client.text(&["INFO", "server"])), theirs);
    assert_eq!(client.text(&["PING", "hi"]), "$2\r\nhi\r\n");
    assert_eq!(client.text(&["ECHO", "x"]), "$1\r\nx\r\n");
    assert_eq!(
        client.text(&["CLIENT", "SETNAME", "my app"]),
        "-ERR Client names cannot contain spaces, newlines or special characters.\r\n"
    );
    assert_eq!(client.text(&["CLIENT", "SETNAME", "app"]), "+OK\r\n");
    assert_eq!(client.text(&["CLIENT", "GETNAME"]), "$3\r\napp\r\n");
    assert!(client.text(&["CLIENT", "ID"]).starts_with(':'));
    assert!(client.text(&["CLIENT", "INFO"]).contains("name=app"));
    assert!(client.text(&["CLIENT", "LIST"]).contains("name=app"));
    assert_eq!(
        client.text(&["CLIENT", "SETINFO", "LIB-VER", "1.0"]),
        "+OK\r\n"
    );
    assert_eq!(
        client.text(&["CLIENT", "KILL", "x"]),
        "-ERR No such client\r\n"
    );
    assert_eq!(
        client.text(&["CLIENT", "SETNAME"]),
        "-ERR wrong number of arguments for 'client|setname' command\r\n"
    );
    assert_eq!(client.text(&["COMMAND", "COUNT"]), ":213\r\n");
    assert!(client
        .text(&["WAIT", "1", "0"])
        .starts_with("-ERR WAIT is not supported by session-proxy: set min_replicas_ack"));
    assert!(client
        .text(&["COMMAND", "INFO", "get", "nosuch"])
        .starts_with("*2\r\n*10\r\n$3\r\nget\r\n:2\r\n"));
    // COMMAND DOCS: a backend's documentation, of the commands the proxy has.
    let docs = client.text(&["COMMAND", "DOCS", "get", "migrate"]);
    assert!(docs.starts_with("*2\r\n$3\r\nget\r\n"), "{docs}");
    assert!(docs.contains("summary"), "{docs}");
    assert_eq!(client.text(&["COMMAND", "DOCS", "migrate"]), "*0\r\n");
    let all = client.text(&["COMMAND", "DOCS"]);
    assert!(all.contains("\r\nmget\r\n") && all.contains("\r\nhset\r\n"));
    assert!(!all.contains("\r\nmigrate\r\n") && !all.contains("\r\nshutdown\r\n"));
    // CONFIG GET answers what tools ask; CONFIG SET is refused.
    assert_eq!(
        client.text(&["CONFIG", "GET", "save", "appendonly"]),
        "*4\r\n$4\r\nsave\r\n$0\r\n\r\n$10\r\nappendonly\r\n$2\r\nno\r\n"
    );
    assert!(client.text(&["CONFIG", "GET", "*"]).contains("maxclients"));
    assert!(!client.text(&["CONFIG", "GET", "*"]).contains("requirepass"));
    assert_eq!(client.text(&["CONFIG", "GET", "nosuch"]), "*0\r\n");
    assert!(client
        .text(&["CONFIG", "SET", "maxclients", "1"])
        .starts_with("-ERR CONFIG SET is not supported by session-proxy"));
    let info = client.text(&["INFO"]);
    for field in [
        "redis_version:",
        "loading:0",
        "role:master",
        "connected_clients:",
    ] {
        assert!(info.contains(field), "INFO lacks {field}: {info}");
    }
    assert!(!client.text(&["INFO", "server"]).contains("loading:0"));
    assert_eq!(
        client.text(&["SELECT", "16"]),
        "-ERR DB index is out of range\r\n"
    );
    assert_eq!(
        client.text(&["SELECT", "x"]),
        "-ERR value is not an integer or out of range\r\n"
    );
    assert_eq!(client.text(&["RESET"]), "+RESET\r\n");
    assert_eq!(client.text(&["CLIENT", "GETNAME"]), "$-1\r\n");
    assert_eq!(
        client.text(&["MIGRATE", "h", "1", "k", "0", "1"]),
        "-ERR unknown command 'MIGRATE', with args beginning with: 'h' '1' 'k' '0' '1' \r\n"
    );
    assert_eq!(client.text(&["QUIT"]), "+OK\r\n");
    assert!(client.is_closed());
}

#[test]
fn dbsize_is_summed_and_select_picks_the_backend_database() {
    let (a, b, proxy) = two_backends("");
    let mut client = proxy.client();
    assert_eq!(client.text(&["SELECT", "2"]), "+OK\r\n");
    for i in 0..20 {
        client.cmd(&["SET", &format!("session:{i}"), "x"]);
    }
    assert_eq!(client.text(&["DBSIZE"]), ":20\r\n");
    let mut on_backends = 0;
    for redis in [&a, &b] {
        let mut direct = redis.client();
        assert_eq!(direct.text(&["DBSIZE"]), ":0\r\n", "db 0 must stay empty");
        direct.cmd(&["SELECT", "2"]);
        let size = direct.text(&["DBSIZE"]);
        on_backends += size.trim_start_matches(':').trim().parse::<i64>().unwrap();
    }
    assert_eq!(on_backends, 20);
    // Another client on db 0 shares the backend connections but not the database.
    let mut other = proxy.client();
    assert_eq!(other.text(&["GET", "session:1"]), "$-1\r\n");
    assert_eq!(client.text(&["GET", "session:1"]), "$1\r\nx\r\n");
}

#[test]
fn multi_key_commands_are_split_and_merged() {
    let (a, b, proxy) = two_backends("");
    let k0 = proxy.key_on(0, "m");
    let k1 = proxy.key_on(1, "m");
    let k1b = proxy.key_on(1, "n");
    let mut client = proxy.client();
    assert_eq!(
        client.text(&["MSET", &k0, "0", &k1, "1", &k1b, "2"]),
        "+OK\r\n"
    );
    assert_eq!(a.client().text(&["GET", &k0]), "$1\r\n0\r\n");
    assert_eq!(
        b.client().text(&["MGET", &k1, &k1b]),
        "*2\r\n$1\r\n1\r\n$1\r\n2\r\n"
    );
    assert_eq!(
        client.text(&["MGET", &k1, "nokey", &k0, &k1b]),
        "*4\r\n$1\r\n1\r\n$-1\r\n$1\r\n0\r\n$1\r\n2\r\n"
    );
    assert_eq!(client.text(&["EXISTS", &k0, &k1, &k0, "nokey"]), ":3\r\n");
    assert_eq!(client.text(&["TOUCH", &k0, &k1]), ":2\r\n");
    assert_eq!(client.text(&["DEL", &k0, &k1, "nokey"]), ":2\r\n");
    assert_eq!(client.text(&["UNLINK", &k1b, &k0]), ":1\r\n");
    assert_eq!(
        client.text(&["MSET", &k0, "0", &k1]),
        "-ERR wrong number of arguments for 'mset' command\r\n"
    );
}

#[test]
fn key_prefix_policy_refuses_before_any_backend_sees_it() {
    let (a, b, proxy) = two_backends("[keys]\nprefixes = [\"session:\", \"cache:\"]");
    let mut client = proxy.client();
    let noperm =
        "-NOPERM this user has no permissions to access one of the keys used as arguments\r\n";
    assert_eq!(client.text(&["SET", "other", "v"]), noperm);
    assert_eq!(
        client.text(&["MSET", "session:1", "v", "other", "v"]),
        noperm
    );
    assert_eq!(client.text(&["DEL", "session:1", "x"]), noperm);
    assert_eq!(client.text(&["SET", "session:1", "v"]), "+OK\r\n");
    assert_eq!(client.text(&["SET", "cache:1", "v"]), "+OK\r\n");
    let total: i64 = [&a, &b]
        .iter()
        .map(|r| {
            r.client()
                .text(&["DBSIZE"])
                .trim_start_matches(':')
                .trim()
                .parse::<i64>()
                .unwrap()
        })
        .sum();
    assert_eq!(total, 2, "only the allowed keys were written");
}

#[test]
fn password_auth_like_redis() {
    let (_a, _b, proxy) = two_backends("password = \"s3cret\"\nusername = \"web\"");
    let mut client = proxy.client();
    assert_eq!(
        client.text(&["GET", "k"]),
        "-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(
        client.text(&["NOSUCH"]),
        "-ERR unknown command 'NOSUCH', with args beginning with: \r\n"
    );
    assert_eq!(
        client.text(&["AUTH", "wrong"]),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(
        client.text(&["AUTH", "nobody", "s3cret"]),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert!(client
        .text(&["HELLO", "3"])
        .starts_with("-NOAUTH HELLO must be called"));
    assert_eq!(client.text(&["AUTH", "s3cret"]), "+OK\r\n");
    assert_eq!(client.text(&["GET", "k"]), "$-1\r\n");
    // HELLO with AUTH, as redis-py 8 does it, and named users.
    for user in ["default", "web"] {
        let mut c = proxy.client();
        c.resp3 = true;
        assert_eq!(c.cmd(&["HELLO", "3", "AUTH", user, "s3cret"])[0], b'%');
        assert_eq!(c.cmd(&["GET", "k"]), b"_\r\n");
        c.resp3 = false;
        assert_eq!(c.text(&["RESET"]), "+RESET\r\n");
        assert_eq!(
            c.text(&["GET", "k"]),
            "-NOAUTH Authentication required.\r\n"
        );
    }
    // Before AUTH, Redis's limits on request size apply.
    let mut c = proxy.client();
    c.send_raw(b"*20\r\n");
    assert_eq!(
        c.read_reply(),
        b"-ERR Protocol error: unauthenticated multibulk length\r\n"
    );
    assert!(c.is_closed());
}

#[test]
fn auth_without_a_password_configured() {
    let (_a, _b, proxy) = two_backends("");
    let mut client = proxy.client();
    assert!(client
        .text(&["AUTH", "x"])
        .starts_with("-ERR AUTH <password> called without any password configured"));
    assert_eq!(client.text(&["AUTH", "default", "anything"]), "+OK\r\n");
}

#[test]
fn a_protocol_error_closes_only_that_client() {
    let (_a, _b, proxy) = two_backends("");
    let mut good = proxy.client();
    assert_eq!(good.text(&["SET", "k", "v"]), "+OK\r\n");
    let mut bad = proxy.client();
    // The request before the bad one is still answered.
    bad.send_raw(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n+x\r\n");
    assert_eq!(bad.read_reply(), b"$1\r\nv\r\n");
    assert_eq!(
        bad.read_reply(),
        b"-ERR Protocol error: expected '$', got '+'\r\n"
    );
    assert!(bad.is_closed());
    assert_eq!(good.text(&["GET", "k"]), "$1\r\nv\r\n");
    // Deep nesting is refused without recursion.
    let mut nested = proxy.client();
    nested.send_raw(&b"*1\r\n".repeat(100_000));
    assert_eq!(
        nested.read_reply(),
        b"-ERR Protocol error: expected '$', got '*'\r\n"
    );
    assert_eq!(good.text(&["PING"]), "+PONG\r\n");
}

#[test]
fn large_values_survive_any_read_split() {
    let (_a, _b, proxy) = two_backends("");
    let mut client = proxy.client();
    let value = "x".repeat(3 * 1024 * 1024 + 7);
    client.send(&[b"SET", b"big", value.as_bytes()]);
    assert_eq!(client.read_reply(), b"+OK\r\n");
    let reply = client.cmd(&["GET", "big"]);
    assert_eq!(
        reply.len(),
        value.len() + format!("${}\r\n\r\n", value.len()).len()
    );
}

#[test]
fn oversized_requests_are_refused() {
    let (_a, _b, proxy) = two_backends("[limits]\nmax_request_bytes = 1024");
    let mut client = proxy.client();
    client.send_raw(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000\r\n");
    assert_eq!(
        client.read_reply(),
        b"-ERR Protocol error: invalid bulk length\r\n"
    );
    assert!(client.is_closed());
}

#[test]
fn unix_socket_with_file_mode() {
    let (a, b) = (Redis::start(), Redis::start());
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("proxy.sock");
    let extra = format!(
        "unix_socket = \"{}\"\nunix_socket_mode = \"600\"",
        socket.display()
    );
    let _proxy = Proxy::start(&config_for(
        &[("a", a.address(), 1.0), ("b", b.address(), 1.0)],
        &extra,
    ));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    use std::io::Write;
    stream
        .write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\nGET k\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while got.len() < b"+OK\r\n$1\r\nv\r\n".len() {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"+OK\r\n$1\r\nv\r\n");
}

#[test]
fn a_down_backend_fails_fast_and_others_keep_working() {
    let a = Redis::start();
    let dead_port = crate::common::free_port();
    let proxy = Proxy::start(&config_for(
        &[
            ("a", a.address(), 1.0),
            ("b", format!("127.0.0.1:{dead_port}"), 1.0),
        ],
        "[pool]\nconnect_timeout_ms = 200\nrequest_timeout_ms = 300\nbackoff_max_ms = 200",
    ));
    let on_a = proxy.key_on(0, "session:");
    let on_b = proxy.key_on(1, "session:");
    let mut client = proxy.client();
    for _ in 0..5 {
        assert_eq!(client.text(&["SET", &on_a, "v"]), "+OK\r\n");
        let reply = client.text(&["SET", &on_b, "v"]);
        assert!(
            reply.starts_with("-ERR backend 'b' is unavailable"),
            "{reply}"
        );
    }
    // A command split over both reports the error; the healthy part still ran.
    let reply = client.text(&["EXISTS", &on_a, &on_b]);
    assert!(reply.starts_with("-ERR backend 'b'"), "{reply}");

    // The backend comes up on that port: the proxy reconnects by itself.
    let _b = Redis::start_on(dead_port, &[]);
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "never reconnected",
        || client.text(&["SET", &on_b, "v"]) == "+OK\r\n",
    );
    assert_eq!(client.text(&["GET", &on_b]), "$1\r\nv\r\n");
}

#[test]
fn requests_behind_a_timed_out_one_are_told_their_connection_was_lost() {
    // One connection per backend: a request sent while an earlier one waits
    // has not timed out itself when the connection is given up.
    let b = Redis::start();
    let proxy = Proxy::start_on(
        &config_for(
            &[("b", b.address(), 1.0)],
            "[pool]\nconnections = 1\nrequest_timeout_ms = 600\nbackoff_max_ms = 200",
        ),
        1,
    );
    let mut first = proxy.client();
    let mut second = proxy.client();
    assert_eq!(first.text(&["SET", "session:x", "v"]), "+OK\r\n");
    b.signal("STOP");
    first.send_raw(&RawClient::encode(&[b"GET", b"session:x"]));
    // A third of the timeout later (a gap in time is what is tested).
    std::thread::sleep(Duration::from_millis(200));
    second.send_raw(&RawClient::encode(&[b"GET", b"session:x"]));
    let (a, later) = (first.read_reply(), second.read_reply());
    b.signal("CONT");
    assert_eq!(
        String::from_utf8_lossy(&a),
        "-ERR backend 'b' did not answer within 600 ms\r\n"
    );
    assert_eq!(
        String::from_utf8_lossy(&later),
        "-ERR backend 'b' connection lost: closed after an earlier request on it got no reply within 600 ms\r\n"
    );
}

#[test]
fn a_stalled_backend_answers_with_a_timeout_error() {
    let (a, b) = (Redis::start(), Redis::start());
    let proxy = Proxy::start(&config_for(
        &[("a", a.address(), 1.0), ("b", b.address(), 1.0)],
        "[pool]\nconnect_timeout_ms = 200\nrequest_timeout_ms = 300\nbackoff_max_ms = 200",
    ));
    let on_a = proxy.key_on(0, "session:");
    let on_b = proxy.key_on(1, "session:");
    let mut client = proxy.client();
    assert_eq!(client.text(&["SET", &on_b, "v"]), "+OK\r\n");
    b.signal("STOP");
    let reply = client.text(&["GET", &on_b]);
    let mut other = proxy.client();
    let healthy = other.text(&["SET", &on_a, "v"]);
    b.signal("CONT");
    assert_eq!(reply, "-ERR backend 'b' did not answer within 300 ms\r\n");
    assert_eq!(healthy, "+OK\r\n");
    // After SIGCONT the proxy reconnects and serves the key again.
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "never recovered",
        || client.text(&["GET", &on_b]) == "$1\r\nv\r\n",
    );
    // A pipeline to the stalled backend: every command gets the timeout, and
    // the healthy backend's replies in between are not held back or mixed up.
    b.signal("STOP");
    let mut packet = Vec::new();
    for i in 0..5 {
        // Three for b gathered into one job, then a local command and one for a.
        for _ in 0..3 {
            packet.extend(RawClient::encode(&[b"GET", on_b.as_bytes()]));
        }
        packet.extend(RawClient::encode(&[b"ECHO", i.to_string().as_bytes()]));
        packet.extend(RawClient::encode(&[b"GET", on_a.as_bytes()]));
    }
    client.send_raw(&packet);
    for i in 0..5 {
        for _ in 0..3 {
            assert_eq!(
                client.read_reply(),
                b"-ERR backend 'b' did not answer within 300 ms\r\n"
            );
        }
        assert_eq!(client.read_reply(), format!("$1\r\n{i}\r\n").as_bytes());
        assert_eq!(client.read_reply(), b"$1\r\nv\r\n");
    }
    b.signal("CONT");
}

#[test]
fn backend_credentials_are_used() {
    let a = Redis::start_with(&["--requirepass", "backendpw"]);
    let b = Redis::start();
    let text = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[[backends]]\nid = \"a\"\nurl = \"redis://:backendpw@{}\"\n[[backends]]\nid = \"b\"\naddress = \"{}\"\n",
        a.address(),
        b.address()
    );
    let proxy = Proxy::start(&text);
    let on_a = proxy.key_on(0, "session:");
    assert_eq!(proxy.client().text(&["SET", &on_a, "v"]), "+OK\r\n");
}

#[test]
fn backends_over_unix_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let (sock_a, sock_b) = (dir.path().join("a.sock"), dir.path().join("b.sock"));
    let a = Redis::start_with(&["--unixsocket", sock_a.to_str().unwrap()]);
    let b = Redis::start_with(&["--unixsocket", sock_b.to_str().unwrap()]);
    let text = format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[[backends]]\nid = \"a\"\nunix_socket = \"{}\"\n[[backends]]\nid = \"b\"\nurl = \"unix://{}\"\n",
        sock_a.display(),
        sock_b.display()
    );
    let proxy = Proxy::start(&text);
    let mut client = proxy.client();
    for (backend, redis) in [(0, &a), (1, &b)] {
        let key = proxy.key_on(backend, "session:");
        assert_eq!(client.text(&["SET", &key, "v"]), "+OK\r\n");
        assert_eq!(redis.client().text(&["GET", &key]), "$1\r\nv\r\n");
    }
}

#[test]
fn a_client_never_waits_longer_than_the_request_timeout() {
    // A backend that accepts connections but never answers (stopped before the
    // proxy connects): the handshake hangs for the long connect timeout, yet
    // requests get their error at the request timeout.
    let (a, b) = (Redis::start(), Redis::start());
    b.signal("STOP");
    let proxy = Proxy::start(&config_for(
        &[("a", a.address(), 1.0), ("b", b.address(), 1.0)],
        "[pool]\nconnect_timeout_ms = 5000\nrequest_timeout_ms = 200",
    ));
    let on_b = proxy.key_on(1, "session:");
    let on_a = proxy.key_on(0, "session:");
    let mut client = proxy.client();
    client.send_raw(
        &[
            RawClient::encode(&[b"GET", on_b.as_bytes()]),
            RawClient::encode(&[b"MGET", on_a.as_bytes(), on_b.as_bytes()]),
            RawClient::encode(&[b"PING"]),
        ]
        .concat(),
    );
    let first = String::from_utf8(client.read_reply()).unwrap();
    let second = String::from_utf8(client.read_reply()).unwrap();
    b.signal("CONT");
    assert_eq!(first, "-ERR backend 'b' did not answer within 200 ms\r\n");
    assert_eq!(
        second,
        "-ERR backend 'a', 'b' did not answer within 200 ms\r\n"
    );
    assert_eq!(client.read_reply(), b"+PONG\r\n");
}

/// A new client's first request is answered before its pipeline goes on
/// (its reply's size picks the connection, see tests/fairness.rs). A first
/// reply that is not one backend's whole reply (here an MGET merged from two
/// backends) sizes the client too: afterwards its requests go on at once,
/// not each after the one before. Seen here: with backend b stopped, an
/// MGET waits on b, and the SET pipelined behind it still reaches a.
#[test]
fn a_clients_requests_are_not_held_behind_a_merged_first_reply() {
    let (a, b) = (Redis::start(), Redis::start());
    let proxy = Proxy::start(&config_for(
        &[("a", a.address(), 1.0), ("b", b.address(), 1.0)],
        "[pool]\nrequest_timeout_ms = 60000",
    ));
    let (on_a, on_b) = (proxy.key_on(0, "session:"), proxy.key_on(1, "session:"));
    let other_a = proxy.key_on(0, "other:");
    let mut client = proxy.client();
    let mget = ["MGET", on_a.as_str(), on_b.as_str()];
    assert_eq!(client.text(&mget), "*2\r\n$-1\r\n$-1\r\n");
    b.signal("STOP");
    client.send_raw(
        &[
            RawClient::encode(&[b"MGET", on_a.as_bytes(), on_b.as_bytes()]),
            RawClient::encode(&[b"SET", other_a.as_bytes(), b"v"]),
        ]
        .concat(),
    );
    let mut direct = a.client();
    wait_until(
        READY_LIMIT,
        Duration::from_millis(10),
        "the SET behind the MGET ran",
        || direct.text(&["EXISTS", &other_a]) == ":1\r\n",
    );
    b.signal("CONT");
    assert_eq!(client.read_reply(), b"*2\r\n$-1\r\n$-1\r\n");
    assert_eq!(client.read_reply(), b"+OK\r\n");
}

#[test]
fn info_sections_and_slowlog() {
    let (_a, _b, proxy) = two_backends("[slowlog]\nslower_than_us = 0\nmax_len = 5");
    let mut client = proxy.client();
    for i in 0..8 {
        client.cmd(&["SET", &format!("session:{i}"), "v"]);
    }
    // The newest entry is the last SET (a command is logged after it runs).
    let entry = client.text(&["SLOWLOG", "GET", "1"]);
    assert!(entry.starts_with("*1\r\n*6\r\n:"), "{entry}");
    assert!(
        entry.contains("$3\r\nSET\r\n$9\r\nsession:7\r\n"),
        "{entry}"
    );
    let info = client.text(&["INFO"]);
    for needle in [
        "# Server",
        "# Clients",
        "# Stats",
        "# Proxy",
        "# Backends",
        "backend_a:weight=1,endpoint=127.0.0.1:",
        "status=up",
    ] {
        assert!(info.contains(needle), "INFO lacks {needle}: {info}");
    }
    assert!(client.text(&["INFO", "backends"]).starts_with("$"));
    assert!(!client.text(&["INFO", "backends"]).contains("# Server"));
    assert_eq!(client.text(&["SLOWLOG", "LEN"]), ":5\r\n");
    assert_eq!(client.text(&["SLOWLOG", "RESET"]), "+OK\r\n");
    // The RESET itself is logged after it ran, as on Redis.
    assert_eq!(client.text(&["SLOWLOG", "LEN"]), ":1\r\n");
    assert_eq!(
        client.text(&["SLOWLOG", "NOPE"]),
        "-ERR unknown subcommand 'NOPE'. Try SLOWLOG HELP.\r\n"
    );
}

#[test]
fn a_pipeline_keeps_its_order_across_gathered_commands_selects_and_splits() {
    // The proxy gathers a pipeline's commands per backend and sends each group
    // as one job; SELECT, split commands and commands for other backends in
    // between must still see exactly the order the client sent.
    let (_a, _b, proxy) = two_backends("");
    let ka = proxy.key_on(0, "k");
    let kb = proxy.key_on(1, "k");
    let (ka, kb) = (ka.as_str(), kb.as_str());
    let steps: &[(&[&str], &str)] = &[
        (&["SET", ka, "a0"], "+OK\r\n"),
        (&["SET", kb, "b0"], "+OK\r\n"),
        (&["STRLEN", ka], ":2\r\n"),
        (&["SELECT", "1"], "+OK\r\n"),
        (&["GET", ka], "$-1\r\n"),
        (&["SET", ka, "a1"], "+OK\r\n"),
        (&["GET", kb], "$-1\r\n"),
        (&["SELECT", "0"], "+OK\r\n"),
        (&["GET", ka], "$2\r\na0\r\n"),
        (&["MSET", ka, "m1", kb, "m2"], "+OK\r\n"),
        (&["GET", kb], "$2\r\nm2\r\n"),
        (&["MGET", kb, ka], "*2\r\n$2\r\nm2\r\n$2\r\nm1\r\n"),
        (&["SET", ka, "a2"], "+OK\r\n"),
        (&["DEL", ka, kb], ":2\r\n"),
        (&["EXISTS", ka, kb], ":0\r\n"),
        (&["SELECT", "1"], "+OK\r\n"),
        (&["GETDEL", ka], "$2\r\na1\r\n"),
        (&["SELECT", "0"], "+OK\r\n"),
    ];
    let mut client = proxy.client();
    for round in 0..20 {
        let packet: Vec<u8> = steps
            .iter()
            .flat_map(|(args, _)| {
                let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
                RawClient::encode(&args)
            })
            .collect();
        client.send_raw(&packet);
        for (args, expected) in steps {
            let reply = String::from_utf8_lossy(&client.read_reply()).into_owned();
            assert_eq!(reply, *expected, "round {round}, {args:?}");
        }
    }
}

#[test]
fn a_pipelines_replies_from_two_backends_go_out_in_one_write() {
    // Backend b is stopped, so a's reply is ready long before b's: the proxy
    // holds it and sends both together, as Redis sends a pipeline's replies.
    let (a, b) = (Redis::start(), Redis::start());
    let proxy = Proxy::start(&config_for(
        &[("a", a.address(), 1.0), ("b", b.address(), 1.0)],
        "[pool]\nrequest_timeout_ms = 10000",
    ));
    let on_a = proxy.key_on(0, "session:");
    let on_b = proxy.key_on(1, "session:");
    let mut client = proxy.client();
    assert_eq!(client.text(&["SET", &on_a, "a"]), "+OK\r\n");
    assert_eq!(client.text(&["SET", &on_b, "b"]), "+OK\r\n");
    let mut info = proxy.client();
    let mut writes = || {
        let text = info.text(&["INFO", "stats"]);
        text.lines()
            .find_map(|l| l.strip_prefix("total_writes_processed:"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap()
    };
    let gets_on_a = || {
        let text = a.client().text(&["INFO", "commandstats"]);
        text.lines()
            .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
            .and_then(|rest| rest.split(',').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let gets_before = gets_on_a();
    b.signal("STOP");
    let before = writes();
    client.send_raw(
        &[
            RawClient::encode(&[b"GET", on_a.as_bytes()]),
            RawClient::encode(&[b"GET", on_b.as_bytes()]),
        ]
        .concat(),
    );
    wait_until(
        READY_LIMIT,
        Duration::from_millis(5),
        "a never saw the GET",
        || gets_on_a() != gets_before,
    );
    // a has answered; nothing reaches the client while b's reply is missing.
    client
        .stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    let early = client.stream.peek(&mut byte);
    assert!(early.is_err(), "a reply went out early: {early:?}");
    client.stream.set_read_timeout(Some(READY_LIMIT)).unwrap();
    b.signal("CONT");
    assert_eq!(client.read_reply(), b"$1\r\na\r\n");
    assert_eq!(client.read_reply(), b"$1\r\nb\r\n");
    // One write for the pair, plus the one that carried the first INFO reply.
    // A write is counted once it returns, which may be just after the client
    // has read it: poll, discounting the writes of the polls themselves.
    let mut polls = 0;
    wait_until(
        READY_LIMIT,
        Duration::from_millis(5),
        "the pair's write was never counted",
        || {
            let counted = writes() - before - polls;
            polls += 1;
            assert!(
                counted <= 2,
                "{counted} writes for one INFO reply and a pair"
            );
            counted == 2
        },
    );
}

#[test]
fn a_pipeline_deeper_than_the_limit_is_answered_in_full() {
    // With a small pipeline limit most requests wait in the read buffer while
    // earlier ones are answered; every one of them must still be run.
    let (_a, _b, proxy) = two_backends("[limits]\nmax_pipeline = 3");
    let mut client = proxy.client();
    let mut batch = Vec::new();
    for i in 0..500 {
        batch.extend(RawClient::encode(&[b"PING"]));
        batch.extend(RawClient::encode(&[
            b"SET",
            format!("k{i}").as_bytes(),
            b"v",
        ]));
    }
    client.send_raw(&batch);
    for _ in 0..500 {
        assert_eq!(client.read_reply(), b"+PONG\r\n");
        assert_eq!(client.read_reply(), b"+OK\r\n");
    }
    // The same after the client half-closes, with replies that are all ready
    // at once: everything it sent is answered before the connection closes.
    let mut client = proxy.client();
    let pings: Vec<u8> = (0..1000)
        .flat_map(|_| RawClient::encode(&[b"PING"]))
        .collect();
    client.send_raw(&pings);
    client.stream.shutdown(std::net::Shutdown::Write).unwrap();
    for _ in 0..1000 {
        assert_eq!(client.read_reply(), b"+PONG\r\n");
    }
    assert!(client.is_closed());
}

#[test]
fn concurrent_pipelines_of_large_and_small_values_land_intact() {
    // Batches big enough to be written to a backend from where they are
    // (writev) alternate with small ones copied together, from several
    // clients at once: every value must arrive whole and in its place.
    // (Partial writes to a full socket are tested in net.rs.)
    let (a, b, proxy) = two_backends("");
    let value = |client: usize, i: usize| {
        let len = if i.is_multiple_of(2) { 3000 + i } else { 10 };
        format!("{client}:{i}:").repeat(len / 6 + 1)
    };
    let clients: Vec<std::thread::JoinHandle<()>> = (0..4)
        .map(|c| {
            let port = proxy.port;
            std::thread::spawn(move || {
                let mut client = RawClient::connect(port);
                let mut batch = Vec::new();
                for i in 0..300 {
                    let key = format!("s:{c}:{i}");
                    batch.extend(RawClient::encode(&[
                        b"SET",
                        key.as_bytes(),
                        value(c, i).as_bytes(),
                    ]));
                }
                client.send_raw(&batch);
                for i in 0..300 {
                    assert_eq!(client.read_reply(), b"+OK\r\n", "SET {c}:{i}");
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client thread");
    }
    let backends = [&a, &b];
    for c in 0..4 {
        for i in 0..300 {
            let key = format!("s:{c}:{i}");
            let expected = value(c, i);
            let stored = backends[proxy.owner(&key)].client().cmd(&["GET", &key]);
            let want = format!("${}\r\n{expected}\r\n", expected.len());
            assert!(stored == want.as_bytes(), "{key} arrived changed");
        }
    }
}

/// Bytes a client sent just before the drain began may still be unread in
/// its socket, unseen by the runtime: they are answered all the same.
#[test]
fn a_drain_answers_requests_still_unread_in_the_socket() {
    let redis = Redis::start();
    let mut client = redis.client();
    assert_eq!(client.text(&["SET", "session:drain", "v"]), "+OK\r\n");
    // A busy machine: the runtime polls epoll late, so its readiness lags
    // behind the socket (without this the window is too short to hit).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let _stop_busy = StopOnDrop(stop, busy);
    for round in 0..30 {
        let proxy = Proxy::start(&config_for(
            &[("a", redis.address(), 1.0)],
            "[shutdown]\ngrace_period_ms = 5000",
        ));
        let mut client = proxy.client();
        // One request answered first, so the socket's readiness was cleared.
        assert_eq!(client.text(&["GET", "session:drain"]), "$1\r\nv\r\n");
        // One write each, as a client without pipelining support sends
        // them: the proxy reads some while the rest are still coming.
        for _ in 0..100 {
            client.send_raw(&RawClient::encode(&[b"GET", b"session:drain"]));
        }
        proxy.begin_shutdown();
        for n in 0..100 {
            assert_eq!(
                client.try_read_reply().ok().as_deref(),
                Some(&b"$1\r\nv\r\n"[..]),
                "round {round}: request {n} of 100 sent before the drain went unanswered"
            );
        }
        assert!(
            client.is_closed(),
            "an idle client is closed while draining"
        );
    }
}

/// Stops and joins the busy threads when the test ends, passed or failed.
struct StopOnDrop(
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    Vec<std::thread::JoinHandle<()>>,
);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        for thread in self.1.drain(..) {
            let _ = thread.join();
        }
    }
}
