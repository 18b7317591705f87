//! MULTI / EXEC / DISCARD through the proxy, step by step against a direct
//! Redis with the same commands: replies byte for byte, queuing errors and
//! EXECABORT, runtime errors inside EXEC, RESP3; then what only the proxy
//! has: keys on two backends (one transaction per backend by default, or
//! with `split_transactions = false` CROSSSLOT and nothing runs), atomicity against
//! another client, and a transaction on a key a migration still holds.

use crate::common::{self, proxy_over, wait_until, Proxy, RawClient, Redis, READY_LIMIT};
use std::time::Duration;

fn same(ours: &mut RawClient, theirs: &mut RawClient, steps: &[&[&str]]) {
    for args in steps {
        assert_eq!(ours.text(args), theirs.text(args), "{args:?}");
    }
}

#[test]
fn transactions_answer_like_redis() {
    let servers: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let refs: Vec<&Redis> = servers.iter().collect();
    let proxy = proxy_over(&refs, "");
    let direct_redis = Redis::start();
    let mut ours = proxy.client();
    let mut theirs = direct_redis.client();
    let k = proxy.key_on(1, "t:");
    let n = proxy.key_on(1, "n:");
    let steps: Vec<Vec<&str>> = vec![
        vec!["EXEC"],
        vec!["DISCARD"],
        vec!["UNWATCH"],
        vec!["MULTI"],
        vec!["MULTI"],
        vec!["SET", &k, "1"],
        vec!["INCR", &k],
        vec!["GET", &k],
        vec!["PING"],
        vec!["ECHO", "hi"],
        vec!["SET", &n, "x"],
        vec!["INCR", &n],
        vec!["UNWATCH"],
        vec!["WATCH", &k],
        vec!["EXEC"],
        vec!["GET", &k],
        // A queuing error aborts the transaction.
        vec!["MULTI"],
        vec!["SET", &k, "2"],
        vec!["NOSUCHCOMMAND"],
        vec!["GET"],
        vec!["EXEC"],
        vec!["GET", &k],
        // DISCARD drops what was queued.
        vec!["MULTI"],
        vec!["SET", &k, "3"],
        vec!["DISCARD"],
        vec!["GET", &k],
        // An empty transaction; MSET's own arity is checked when it runs.
        vec!["MULTI"],
        vec!["EXEC"],
        vec!["MULTI"],
        vec!["MSET", &k],
        vec!["MSET", &k, "4", &n],
        vec!["EXEC"],
        // RESET ends a transaction.
        vec!["MULTI"],
        vec!["RESET"],
        vec!["EXEC"],
        // Commands Redis refuses after MULTI (`no-multi`), which the proxy
        // does not run at all: Redis's errors, and EXECABORT.
        vec!["MULTI"],
        vec!["SET", &k, "6"],
        vec!["SAVE"],
        vec!["SAVE", "x"],
        vec!["SHUTDOWN", "NOSAVE"],
        vec!["SYNC"],
        vec!["PSYNC", "?"],
        vec!["PSYNC", "?", "-1"],
        vec!["EXEC"],
        vec!["GET", &k],
    ];
    let steps: Vec<&[&str]> = steps.iter().map(Vec::as_slice).collect();
    same(&mut ours, &mut theirs, &steps);
    // In RESP3 too: every step again, and a null inside EXEC's reply.
    ours.hello3();
    theirs.hello3();
    same(&mut ours, &mut theirs, &steps);
    let missing = proxy.key_on(1, "missing:");
    same(
        &mut ours,
        &mut theirs,
        &[&["MULTI"], &["GET", &missing], &["SET", &k, "5"], &["EXEC"]],
    );
}

#[test]
fn keys_on_two_backends_abort_and_nothing_runs() {
    let servers: Vec<Redis> = (0..2).map(|_| Redis::start()).collect();
    let refs: Vec<&Redis> = servers.iter().collect();
    let proxy = proxy_over(
        &refs,
        "[keys]\nprefixes = [\"t\"]\nsplit_transactions = false",
    );
    let mut client = proxy.client();
    let (a, b) = (proxy.key_on(0, "t:"), proxy.key_on(1, "t:"));
    assert_eq!(client.text(&["MULTI"]), "+OK\r\n");
    assert_eq!(client.text(&["SET", &a, "1"]), "+QUEUED\r\n");
    assert_eq!(
        client.text(&["SET", &b, "1"]),
        "-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    );
    assert!(client.text(&["SET", "other", "1"]).starts_with("-NOPERM"));
    assert!(client.text(&["SELECT", "1"]).contains("inside MULTI"));
    assert_eq!(
        client.text(&["EXEC"]),
        "-EXECABORT Transaction discarded because of previous errors.\r\n"
    );
    assert_eq!(client.text(&["EXISTS", &a, &b]), ":0\r\n");
    // The same keys in two transactions, each on its backend, run.
    for key in [&a, &b] {
        assert_eq!(client.text(&["MULTI"]), "+OK\r\n");
        assert_eq!(client.text(&["SET", key, "1"]), "+QUEUED\r\n");
        assert_eq!(client.text(&["EXEC"]), "*1\r\n+OK\r\n");
    }
}

#[test]
fn a_transaction_is_atomic_against_other_clients() {
    let server = Redis::start();
    let proxy = proxy_over(&[&server], "");
    let port = proxy.port;
    // One client moves a unit between two keys in transactions while others
    // read both in transactions: the sum is always the same.
    let mut setup = proxy.client();
    setup.text(&["MSET", "left", "1000", "right", "0"]);
    let mover = std::thread::spawn(move || {
        let mut client = RawClient::connect(port);
        for _ in 0..500 {
            client.text(&["MULTI"]);
            client.text(&["DECR", "left"]);
            client.text(&["INCR", "right"]);
            let reply = client.text(&["EXEC"]);
            assert!(reply.starts_with("*2\r\n:"), "{reply}");
        }
    });
    let readers: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(move || {
                let mut client = RawClient::connect(port);
                for _ in 0..300 {
                    client.text(&["MULTI"]);
                    client.text(&["GET", "left"]);
                    client.text(&["GET", "right"]);
                    let reply = client.text(&["EXEC"]);
                    let numbers: Vec<i64> = reply
                        .split("\r\n")
                        .filter(|l| !l.is_empty() && !l.starts_with(['*', '$']))
                        .map(|l| l.parse().unwrap())
                        .collect();
                    assert_eq!(numbers.iter().sum::<i64>(), 1000, "{reply}");
                }
            })
        })
        .collect();
    mover.join().unwrap();
    for reader in readers {
        reader.join().unwrap();
    }
    assert_eq!(setup.text(&["GET", "right"]), "$3\r\n500\r\n");
}

#[test]
fn a_transaction_on_a_key_still_on_the_old_server_finds_it() {
    let old = Redis::start();
    let new = Redis::start();
    old.client().text(&["SET", "s:1", "10"]);
    let proxy = Proxy::start(&format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[[backends]]\nid = \"a\"\naddress = \"{}\"\n\
         [migration]\nkeys_per_second = 1\nfrom = [ {{ id = \"old\", address = \"{}\" }} ]\n",
        new.address(),
        old.address()
    ));
    let mut client = proxy.client();
    assert_eq!(client.text(&["MULTI"]), "+OK\r\n");
    assert_eq!(client.text(&["INCR", "s:1"]), "+QUEUED\r\n");
    assert_eq!(client.text(&["EXEC"]), "*1\r\n:11\r\n");
    assert_eq!(old.client().text(&["EXISTS", "s:1"]), ":0\r\n");
}

/// WATCH on a key a migration still holds on its old server: the key is
/// brought to its owner before the WATCH, so its move aborts nothing, and
/// EXEC runs as on Redis, where no one changed the key (HELLO 2 and 3,
/// against a direct Redis holding the same keys).
#[test]
fn watch_on_a_key_still_on_the_old_server_is_not_aborted_by_its_move() {
    let old = Redis::start();
    let new = Redis::start();
    let direct_redis = Redis::start();
    for server in [&old, &direct_redis] {
        server.client().text(&["MSET", "s:2", "10", "s:3", "20"]);
    }
    // The proxy's user on the old server may not SCAN: its background
    // mover moves nothing, and the keys stay there until a command's
    // settle brings them.
    assert_eq!(
        old.client()
            .text(&["ACL", "SETUSER", "mover", "on", ">pw", "~*", "+@all", "-scan"]),
        "+OK\r\n"
    );
    let proxy = Proxy::start(&format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[[backends]]\nid = \"a\"\naddress = \"{}\"\n\
         [migration]\nfrom = [ {{ id = \"old\", url = \"redis://mover:pw@{}\" }} ]\n",
        new.address(),
        old.address()
    ));
    let mut ours = proxy.client();
    let mut theirs = direct_redis.client();
    for (proto, key) in [("2", "s:2"), ("3", "s:3")] {
        let hello = ["HELLO", proto];
        let (watch, get, incr) = (["WATCH", key], ["GET", key], ["INCR", key]);
        let steps: [&[&str]; 6] = [&watch, &get, &["MULTI"], &incr, &["EXEC"], &get];
        ours.text(&hello);
        theirs.text(&hello);
        same(&mut ours, &mut theirs, &steps);
    }
    assert_eq!(old.client().text(&["EXISTS", "s:2", "s:3"]), ":0\r\n");
}

#[test]
fn watch_aborts_exec_when_a_watched_key_changed_as_on_redis() {
    let servers: Vec<Redis> = (0..2).map(|_| Redis::start()).collect();
    let refs: Vec<&Redis> = servers.iter().collect();
    let proxy = proxy_over(&refs, "[pool]\nmax_held_connections = 1");
    let direct_redis = Redis::start();
    let (mut ours, mut ours_other) = (proxy.client(), proxy.client());
    let (mut theirs, mut theirs_other) = (direct_redis.client(), direct_redis.client());
    let k = proxy.key_on(1, "w:");
    let j = proxy.key_on(1, "j:");
    // Each step: (by the watching client?, command).
    let steps: Vec<(bool, Vec<&str>)> = vec![
        (true, vec!["SET", &k, "1"]),
        // Unchanged: EXEC runs.
        (true, vec!["WATCH", &k, &j]),
        (true, vec!["GET", &k]),
        (true, vec!["MULTI"]),
        (true, vec!["INCR", &k]),
        (true, vec!["EXEC"]),
        // Changed by another client: EXEC answers a null array.
        (true, vec!["WATCH", &k]),
        (false, vec!["SET", &k, "changed"]),
        (true, vec!["MULTI"]),
        (true, vec!["SET", &k, "mine"]),
        (true, vec!["EXEC"]),
        (true, vec!["GET", &k]),
        // EXEC ended the WATCH: the next transaction runs.
        (false, vec!["SET", &k, "again"]),
        (true, vec!["MULTI"]),
        (true, vec!["SET", &k, "mine"]),
        (true, vec!["EXEC"]),
        // UNWATCH and DISCARD end it too.
        (true, vec!["WATCH", &k]),
        (true, vec!["UNWATCH"]),
        (false, vec!["SET", &k, "x"]),
        (true, vec!["MULTI"]),
        (true, vec!["GET", &k]),
        (true, vec!["EXEC"]),
        (true, vec!["WATCH", &k]),
        (true, vec!["MULTI"]),
        (true, vec!["DISCARD"]),
        (false, vec!["SET", &k, "y"]),
        (true, vec!["MULTI"]),
        (true, vec!["GET", &k]),
        (true, vec!["EXEC"]),
    ];
    for (watcher, args) in &steps {
        let (a, b) = if *watcher {
            (&mut ours, &mut theirs)
        } else {
            (&mut ours_other, &mut theirs_other)
        };
        assert_eq!(a.text(args), b.text(args), "{args:?}");
    }
    // Keys on two backends cannot be watched together.
    let other_backend = proxy.key_on(0, "w:");
    assert_eq!(
        ours.text(&["WATCH", &k, &other_backend]),
        "-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    );
    // One held connection per backend here: a second watcher waits its turn.
    assert_eq!(ours.text(&["WATCH", &k]), "+OK\r\n");
    let refused = ours_other.text(&["WATCH", &j]);
    assert!(refused.contains("max_held_connections"), "{refused}");
    assert_eq!(ours.text(&["UNWATCH"]), "+OK\r\n");
    assert_eq!(ours_other.text(&["WATCH", &j]), "+OK\r\n");
    // A transaction after WATCH keeps to the watched backend.
    assert_eq!(ours_other.text(&["MULTI"]), "+OK\r\n");
    assert_eq!(
        ours_other.text(&["SET", &other_backend, "1"]),
        "-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    );
    assert!(ours_other.text(&["EXEC"]).starts_with("-EXECABORT"));
}

/// A WATCH's connection, once the server answered its EXEC, serves the
/// next lease: a client saving a session under WATCH, transaction after
/// transaction, connects to the server once, not once per transaction (on
/// a managed service, a TLS handshake each). Nothing of one transaction
/// stays on it for the next: a key an earlier one watched, changed since,
/// aborts nothing; a key the next one watches still aborts its EXEC when
/// changed; and each runs in its client's database, in either protocol
/// (HELLO 2 and 3 against a direct Redis).
#[test]
fn a_watchs_connection_serves_the_next_transaction() {
    let redis = Redis::start();
    let proxy = proxy_over(std::slice::from_ref(&redis), "");
    let direct_redis = Redis::start();
    let mut direct = redis.client();
    let mut other = proxy.client();
    for hello in ["2", "3"] {
        let (mut ours, mut theirs) = (proxy.client(), direct_redis.client());
        for client in [&mut ours, &mut theirs] {
            assert!(client.text(&["HELLO", hello]).contains("proto"));
        }
        let save = |client: &mut RawClient, key: &str, db: &str| {
            let mut replies = vec![client.text(&["SELECT", db]), client.text(&["WATCH", key])];
            replies.push(client.text(&["GET", key]));
            replies.push(transaction(client, &[&["SET", key, db], &["GET", key]]));
            replies
        };
        // The first lease connects.
        assert_eq!(
            save(&mut ours, "s:first", "0"),
            save(&mut theirs, "s:first", "0")
        );
        let before = common::connections_received(&mut direct);
        for i in 0..20 {
            let (key, db) = (format!("s:{hello}:{i}"), ["0", "1"][i % 2]);
            assert_eq!(
                save(&mut ours, &key, db),
                save(&mut theirs, &key, db),
                "{key}"
            );
        }
        let made = common::connections_received(&mut direct) - before;
        assert!(
            made <= 1,
            "{made} connections made for 20 transactions under WATCH"
        );
        // Each ran in its own database.
        assert_eq!(direct.text(&["SELECT", "1"]), "+OK\r\n");
        assert_eq!(
            direct.text(&["GET", &format!("s:{hello}:19")]),
            "$1\r\n1\r\n"
        );
        assert_eq!(direct.text(&["SELECT", "0"]), "+OK\r\n");
        assert_eq!(
            direct.text(&["GET", &format!("s:{hello}:18")]),
            "$1\r\n0\r\n"
        );
        // A key an earlier transaction watched, changed since, aborts nothing...
        assert_eq!(ours.text(&["SELECT", "0"]), theirs.text(&["SELECT", "0"]));
        assert_eq!(
            other.text(&["SET", &format!("s:{hello}:18"), "x"]),
            "+OK\r\n"
        );
        let key = format!("s:{hello}:next");
        assert_eq!(ours.text(&["WATCH", &key]), "+OK\r\n");
        let exec = transaction(&mut ours, &[&["SET", &key, "1"]]);
        assert_eq!(exec, transaction(&mut theirs, &[&["SET", &key, "1"]]));
        assert!(exec.ends_with("+OK\r\n"), "{exec}");
        // ...and a watched key changed still aborts its EXEC.
        assert_eq!(ours.text(&["WATCH", &key]), "+OK\r\n");
        assert_eq!(other.text(&["SET", &key, "changed"]), "+OK\r\n");
        let exec = transaction(&mut ours, &[&["SET", &key, "mine"]]);
        let null = if hello == "3" { "_\r\n" } else { "*-1\r\n" };
        assert_eq!(exec, null);
    }
}

/// UNWATCH, and DISCARD after WATCH, clear the server's watches with an
/// UNWATCH on the WATCH's connection, which then serves the next lease
/// rather than close: the server sees the UNWATCH on a connection that
/// stays open, and a key watched before it, changed since, aborts no
/// later transaction on that connection.
#[test]
fn unwatch_and_discard_give_the_watchs_connection_back() {
    let redis = Redis::start();
    let proxy = proxy_over(std::slice::from_ref(&redis), "");
    let mut client = proxy.client();
    let mut other = proxy.client();
    // The server's connections whose last command was an UNWATCH.
    let unwatched = || common::last_ran(&redis, "unwatch");
    for discard in [false, true] {
        let key = format!("w:{discard}");
        assert_eq!(client.text(&["WATCH", &key]), "+OK\r\n");
        if discard {
            assert_eq!(client.text(&["MULTI"]), "+OK\r\n");
            assert_eq!(client.text(&["SET", &key, "x"]), "+QUEUED\r\n");
            assert_eq!(client.text(&["DISCARD"]), "+OK\r\n");
        } else {
            assert_eq!(client.text(&["UNWATCH"]), "+OK\r\n");
        }
        wait_until(
            Duration::from_secs(10),
            Duration::from_millis(10),
            "the WATCH's connection unwatched and kept",
            || unwatched() == 1,
        );
        // Changed after the UNWATCH: the next transaction is not aborted.
        assert_eq!(other.text(&["SET", &key, "changed"]), "+OK\r\n");
        let next = format!("n:{discard}");
        assert_eq!(client.text(&["WATCH", &next]), "+OK\r\n");
        assert_eq!(
            transaction(&mut client, &[&["SET", &next, "1"]]),
            "*1\r\n+OK\r\n"
        );
        assert_eq!(client.text(&["GET", &key]), "$7\r\nchanged\r\n");
    }
}

#[test]
fn by_default_keys_on_several_backends_run_one_transaction_each() {
    let servers: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let refs: Vec<&Redis> = servers.iter().collect();
    // The default: no [keys] split_transactions line.
    let proxy = proxy_over(&refs, "");
    let direct_redis = Redis::start();
    let mut ours = proxy.client();
    let mut theirs = direct_redis.client();
    let keys: Vec<String> = (0..3).map(|b| proxy.key_on(b, "m:")).collect();
    let mut steps: Vec<Vec<&str>> = vec![vec!["MULTI"]];
    for (i, key) in keys.iter().enumerate().rev() {
        steps.push(vec!["SET", key, ["a", "b", "c"][i]]);
    }
    steps.push(vec!["PING"]);
    for key in &keys {
        steps.push(vec!["GET", key]);
        steps.push(vec!["INCR", key]);
    }
    steps.push(vec!["EXEC"]);
    let steps: Vec<&[&str]> = steps.iter().map(Vec::as_slice).collect();
    same(&mut ours, &mut theirs, &steps);
    // Each backend got its own keys.
    for (b, key) in keys.iter().enumerate() {
        assert_eq!(servers[b].client().text(&["EXISTS", key]), ":1\r\n");
    }
    // After a WATCH, keys must stay on the watched backend.
    assert_eq!(ours.text(&["WATCH", &keys[0]]), "+OK\r\n");
    assert_eq!(ours.text(&["MULTI"]), "+OK\r\n");
    assert_eq!(
        ours.text(&["GET", &keys[1]]),
        "-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    );
    assert!(ours.text(&["EXEC"]).starts_with("-EXECABORT"));
}

/// MULTI, the commands (each answered +QUEUED) and EXEC's reply.
fn transaction(client: &mut RawClient, commands: &[&[&str]]) -> String {
    assert_eq!(client.text(&["MULTI"]), "+OK\r\n");
    for command in commands {
        assert_eq!(client.text(command), "+QUEUED\r\n", "{command:?}");
    }
    client.text(&["EXEC"])
}

/// `min_replicas_ack` holds a transaction that writes to the promise a
/// single write has: a WAIT after it decides its EXEC's reply. Without a
/// replica its EXEC gets -NOREPLICAS, as a SETEX does (it ran on the
/// master, which no replica copies); a transaction that only reads, or
/// one aborted at queue time, is answered as it came. With a replica in
/// sync, the EXEC's own reply, and the replica has the writes.
#[test]
fn min_replicas_ack_confirms_a_transaction_as_a_write() {
    let master = Redis::start();
    let proxy = Proxy::start(&format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[pool]\nrequest_timeout_ms = 1000\n\
         [[backends]]\nid = \"a\"\naddress = \"{}\"\nmin_replicas_ack = 1\n",
        master.address()
    ));
    let mut client = proxy.client();
    let no_replicas = "-NOREPLICAS Not enough good replicas to write.\r\n";
    assert_eq!(client.text(&["SETEX", "session:t", "60", "v"]), no_replicas);
    let write = ["SETEX", "session:t", "60", "w"];
    for proto in ["2", "3"] {
        assert!(client.text(&["HELLO", proto]).starts_with(['*', '%']));
        assert_eq!(
            transaction(&mut client, &[&write, &["GET", "session:t"]]),
            no_replicas,
            "RESP{proto}"
        );
    }
    client.text(&["HELLO", "2"]);
    assert_eq!(
        transaction(&mut client, &[&["GET", "session:t"]]),
        "*1\r\n$1\r\nw\r\n"
    );
    assert_eq!(client.text(&["MULTI"]), "+OK\r\n");
    assert!(client
        .text(&["SETEX", "session:t"])
        .starts_with("-ERR wrong number"));
    assert_eq!(
        client.text(&["EXEC"]),
        "-EXECABORT Transaction discarded because of previous errors.\r\n"
    );

    let replica = Redis::start_with(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
    // Ready once the replica has loaded its copy and has a write made
    // after it: a replica just synced is sent the later writes only from
    // its first ACK on, which may come a second later.
    let mut on_replica = replica.client();
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "the replica's copy",
        || {
            on_replica
                .text(&["INFO", "replication"])
                .contains("master_link_status:up")
        },
    );
    let mut on_master = master.client();
    let mut n = 0;
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "writes streamed to the replica",
        || {
            n += 1;
            on_master.text(&["SET", "ready", &n.to_string()]);
            on_replica.text(&["GET", "ready"]) == format!("${}\r\n{n}\r\n", n.to_string().len())
        },
    );
    assert_eq!(
        transaction(
            &mut client,
            &[
                &["SETEX", "session:t", "60", "x"],
                &["SET", "session:u", "y"]
            ]
        ),
        "*2\r\n+OK\r\n+OK\r\n"
    );
    assert_eq!(
        on_replica.text(&["MGET", "session:t", "session:u"]),
        "*2\r\n$1\r\nx\r\n$1\r\ny\r\n"
    );
}
