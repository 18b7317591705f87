//! Redis Cluster behind the proxy (issue 15), against real cluster nodes
//! made by `redis-cli --cluster create`: the proxy's hash slot of a key is
//! Redis Cluster's (CLUSTER KEYSLOT, hash tags included), its reading of
//! CLUSTER SHARDS covers every slot; sessions through a cluster backend land
//! on their slot's master, CROSSSLOT as Redis Cluster answers it, a live
//! reshard and a manual failover under load lose nothing, and a topology
//! mixes a cluster with plain backends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{
    blpop_gets_what_is_pushed_on, blpop_on_a_thread, run_script, series_of, until_blocks_one,
    wait_until, Cluster, Proxy, RawClient, Redis, READY_LIMIT,
};
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use session_proxy::cluster::{parse_shards, parse_slots, slot, SlotMap, SLOTS};
use session_proxy::protocol::Reply;

#[test]
fn slots_and_shards_match_a_real_cluster() {
    let cluster = Cluster::start(3, 1);
    let mut node = cluster.nodes[0].client();
    let mut rng = StdRng::seed_from_u64(15);
    for i in 0..2000 {
        let mut key = format!("session:{i}:{}", rng.random_range(0..1_000_000));
        match i % 4 {
            1 => key = format!("{{user{}}}.{key}", rng.random_range(0..50)),
            2 => key = format!("x{{}}{key}"),
            3 => key = format!("{key}{{tag{}", i % 7),
            _ => {}
        }
        let reply = node.text(&["CLUSTER", "KEYSLOT", &key]);
        assert_eq!(reply, format!(":{}\r\n", slot(key.as_bytes())), "{key}");
    }
    let raw = node.cmd(&["CLUSTER", "SHARDS"]);
    let shards = parse_shards(&Reply::Raw(Bytes::from(raw)).parsed()).expect("CLUSTER SHARDS");
    assert_eq!(shards.len(), 3);
    let mut covered = vec![false; SLOTS as usize];
    for shard in &shards {
        assert_eq!(shard.replicas.len(), 1, "{shard:?}");
        assert!(cluster.nodes.iter().any(|n| n.address() == shard.master));
        for &(start, end) in &shard.ranges {
            for s in start..=end {
                assert!(!covered[s as usize], "slot {s} twice");
                covered[s as usize] = true;
            }
        }
    }
    assert!(covered.iter().all(|&c| c), "every slot has a master");
    // CLUSTER SLOTS (the fallback for servers before Redis 7) gives the
    // same map.
    let raw = node.cmd(&["CLUSTER", "SLOTS"]);
    let from_slots = parse_slots(&Reply::Raw(Bytes::from(raw)).parsed()).expect("CLUSTER SLOTS");
    let (a, b) = (
        SlotMap::from_shards(&shards),
        SlotMap::from_shards(&from_slots),
    );
    for s in 0..SLOTS {
        assert_eq!(a.master_of_slot(s), b.master_of_slot(s), "slot {s}");
    }
    // (Its replicas may come a little later than CLUSTER SHARDS's: they
    // are not used for routing.)
}

#[test]
fn the_slot_map_follows_a_failover() {
    let cluster = Cluster::start(3, 1);
    let seeds: Vec<String> = cluster.nodes.iter().map(|n| n.address()).collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fetch = || {
        runtime
            .block_on(session_proxy::cluster::fetch(
                &seeds,
                None,
                None,
                None,
                std::time::Duration::from_secs(5),
            ))
            .expect("a slot map")
            .map
    };
    let map = fetch();
    assert!(map.is_complete());
    let key = b"session:abc";
    let master = map.master_of(key).unwrap().to_string();
    // The master's replica takes over; a fresh map names it.
    let master_port: u16 = master.rsplit(':').next().unwrap().parse().unwrap();
    let replica = cluster.replica_of(master_port);
    assert_eq!(replica.client().text(&["CLUSTER", "FAILOVER"]), "+OK\r\n");
    crate::common::wait_until(
        crate::common::READY_LIMIT,
        std::time::Duration::from_millis(50),
        "new master in the map",
        || fetch().master_of(key) == Some(replica.address().as_str()),
    );
    // Seeds that do not answer are skipped.
    let mut with_dead = vec!["127.0.0.1:1".to_string()];
    with_dead.extend(seeds.clone());
    let map = runtime
        .block_on(session_proxy::cluster::fetch(
            &with_dead,
            None,
            None,
            None,
            std::time::Duration::from_secs(5),
        ))
        .unwrap();
    assert!(map.map.is_complete());
    assert!(!map.from.contains(&with_dead[0]), "{:?}", map.from);
}

#[test]
fn a_frozen_node_holds_up_no_slot_map() {
    let cluster = Cluster::start(3, 1);
    let mut seeds: Vec<String> = cluster.nodes.iter().map(|n| n.address()).collect();
    let frozen = &cluster.nodes[0];
    // First in the list, a node that takes connections and never answers
    // (a master being failed over), with no timeout to give up on it: the
    // map comes from the nodes asked beside it.
    seeds.retain(|s| *s != frozen.address());
    seeds.insert(0, frozen.address());
    frozen.signal("STOP");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fetched = runtime.block_on(async {
        // The test's own bound, so that a fetch waiting on the frozen node
        // fails the test instead of hanging it.
        tokio::time::timeout(
            crate::common::READY_LIMIT,
            session_proxy::cluster::fetch(
                &seeds,
                None,
                None,
                None,
                std::time::Duration::from_secs(3600),
            ),
        )
        .await
    });
    frozen.signal("CONT");
    let view = fetched
        .expect("a slot map while one node is frozen")
        .expect("a slot map");
    // Described by nodes that answered, the frozen one not among them.
    assert!(!view.from.is_empty() && !view.from.contains(&frozen.address()));
    let map = view.map;
    assert!(map.is_complete());
}

/// What SETEXs of keys on the other masters got through the proxy while
/// one master of `cluster` was frozen, from the freeze until its replica
/// had taken over: (acknowledged, errors).
fn others_while_a_master_is_frozen(cluster: &Cluster) -> (usize, Vec<String>) {
    let proxy = Proxy::start(&config_over(cluster, &[]));
    let mut client = ready_client(&proxy);
    let frozen = master_of(cluster, "session:frozen");
    let watcher = cluster
        .nodes
        .iter()
        .find(|n| n.port != frozen.port)
        .unwrap();
    let others: Vec<String> = (0..1000)
        .map(|i| format!("session:other:{i}"))
        .filter(|k| master_of(cluster, k).port != frozen.port)
        .take(20)
        .collect();
    // Taken over: a node that is not frozen names another master of the
    // frozen master's slot.
    let slot = slot(b"session:frozen");
    let promoted = || {
        let shards = watcher.client().cmd(&["CLUSTER", "SHARDS"]);
        let shards = parse_shards(&Reply::Raw(Bytes::from(shards)).parsed()).unwrap_or_default();
        shards.iter().any(|s| {
            s.ranges.iter().any(|&(a, b)| a <= slot && slot <= b)
                && !s.master.ends_with(&format!(":{}", frozen.port))
        })
    };
    frozen.signal("STOP");
    let (mut acknowledged, mut errors) = (0, Vec::new());
    let started = std::time::Instant::now();
    while started.elapsed() < READY_LIMIT && !promoted() {
        for key in &others {
            match client.text(&["SET", key, "v", "EX", "60"]).as_str() {
                "+OK\r\n" => acknowledged += 1,
                other => errors.push(other.trim().to_string()),
            }
        }
    }
    frozen.signal("CONT");
    assert!(promoted(), "the frozen master's replica never took over");
    (acknowledged, errors)
}

/// With Redis's default `cluster-require-full-coverage yes`, every node
/// refuses every key (`-CLUSTERDOWN The cluster is down`) from when a
/// master is taken for failed until its replica is promoted, so a frozen
/// master costs the sessions of every master; with `no`, as docs/cluster.md
/// advises, only its own slots: the other masters' keys go on through the
/// proxy without an error.
#[test]
fn with_partial_coverage_a_frozen_master_costs_only_its_own_slots() {
    let partial = Cluster::start_with(3, 1, &["--cluster-require-full-coverage", "no"]);
    let (acknowledged, errors) = others_while_a_master_is_frozen(&partial);
    assert!(
        errors.is_empty(),
        "{} errors: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(acknowledged > 0);
    drop(partial);
    let full = Cluster::start(3, 1);
    let (_, errors) = others_while_a_master_is_frozen(&full);
    assert!(
        errors
            .iter()
            .any(|e| e == "-CLUSTERDOWN The cluster is down"),
        "{errors:?}"
    );
}

/// Config text for a proxy whose backend "c" is `cluster`, after `plain`
/// backends (id, address).
fn config_over(cluster: &Cluster, plain: &[(&str, String)]) -> String {
    let seeds: Vec<String> = cluster
        .nodes
        .iter()
        .take(2)
        .map(|n| format!("\"{}\"", n.address()))
        .collect();
    let mut text = String::from("[listen]\naddress = \"127.0.0.1:0\"\n");
    for (id, address) in plain {
        text.push_str(&format!(
            "[[backends]]\nid = \"{id}\"\naddress = \"{address}\"\n"
        ));
    }
    text.push_str(&format!(
        "[[backends]]\nid = \"c\"\ncluster = {{ seeds = [{}] }}\n",
        seeds.join(", ")
    ));
    text
}

/// The node that is master of `key`'s slot now, asked of the cluster.
fn master_of<'a>(cluster: &'a Cluster, key: &str) -> &'a Redis {
    let slot = slot(key.as_bytes());
    let shards = cluster.nodes[0].client().cmd(&["CLUSTER", "SHARDS"]);
    let shards = parse_shards(&Reply::Raw(Bytes::from(shards)).parsed()).unwrap();
    let shard = shards
        .iter()
        .find(|s| s.ranges.iter().any(|&(a, b)| a <= slot && slot <= b))
        .expect("a shard serves the slot");
    // By port: a cluster that announces host names names its nodes so.
    let port = shard.master.rsplit(':').next().unwrap();
    cluster
        .nodes
        .iter()
        .find(|n| n.port.to_string() == port)
        .unwrap()
}

/// CLUSTER FAILOVER on `replica`; returns once the cluster names it the
/// master of `key`'s slot.
fn promote(cluster: &Cluster, replica: &Redis, key: &str) {
    assert_eq!(replica.client().text(&["CLUSTER", "FAILOVER"]), "+OK\r\n");
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "the replica promoted",
        || master_of(cluster, key).port == replica.port,
    );
}

/// Redirections the proxy followed for cluster backend "c": MOVED, ASK.
fn redirects(proxy: &Proxy) -> (u64, u64) {
    let topology = proxy.shared.topology();
    let backend = topology.backends.iter().find(|b| &*b.id == "c").unwrap();
    let cluster = backend.cluster().expect("a cluster backend");
    (
        cluster.moved.load(Ordering::Relaxed),
        cluster.asked.load(Ordering::Relaxed),
    )
}

/// A client of the proxy once a command has been answered through the cluster.
fn ready_client(proxy: &Proxy) -> RawClient {
    let mut client = proxy.client();
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "the slot map",
        || client.cmd(&["SET", "session:probe", "1"]) == b"+OK\r\n",
    );
    client
}

#[test]
fn sessions_go_to_their_slots_master_and_crossslot_is_redis_clusters() {
    let cluster = Cluster::start(3, 1);
    let proxy = Proxy::start(&config_over(&cluster, &[]));
    let mut client = ready_client(&proxy);
    for i in 0..300 {
        let key = format!("session:{i}");
        assert_eq!(
            client.text(&["SETEX", &key, "600", &format!("data{i}")]),
            "+OK\r\n"
        );
    }
    for i in 0..300 {
        let key = format!("session:{i}");
        let data = format!("data{i}");
        assert_eq!(
            client.text(&["GET", &key]),
            format!("${}\r\n{data}\r\n", data.len())
        );
        // On the master of its slot, as a cluster client would have put it.
        let mut node = master_of(&cluster, &key).client();
        node.send(&[b"READONLY"]);
        node.read_reply();
        assert_eq!(
            node.text(&["GET", &key]),
            format!("${}\r\n{data}\r\n", data.len()),
            "{key}"
        );
    }
    // What /topology and the status page show of it.
    let report = proxy.shared.topology().backends[0]
        .cluster()
        .unwrap()
        .report();
    let masters = report["masters"].as_array().unwrap();
    assert_eq!(masters.len(), 3, "{report}");
    let slots: u64 = masters.iter().map(|m| m["slots"].as_u64().unwrap()).sum();
    assert_eq!(slots, 16384);
    assert!(masters.iter().all(|m| m["up"] == true), "{report}");
    assert!(proxy.shared.ready().is_ok());
    assert_eq!(client.text(&["EXISTS", "session:1"]), ":1\r\n");
    assert_eq!(client.text(&["DEL", "session:1"]), ":1\r\n");
    assert_eq!(client.text(&["GET", "session:1"]), "$-1\r\n");
    // Multi-key commands the proxy splits over backends are split over
    // slots too, answered as one Redis answers them; the rest need their
    // keys in one slot and get Redis Cluster's error, byte for byte.
    let plain = Redis::start();
    let mut single = plain.client();
    for i in 2..6 {
        single.cmd(&["SET", &format!("session:{i}"), &format!("data{i}")]);
    }
    for args in [
        vec!["MGET", "session:2", "session:3", "nosuch", "session:5"],
        vec!["EXISTS", "session:2", "session:3", "nosuch", "session:2"],
        vec!["MSET", "session:x", "1", "session:y", "2", "session:z", "3"],
        vec!["MGET", "session:x", "session:y", "session:z"],
        vec!["DEL", "session:4", "session:5", "session:x", "nosuch"],
        vec!["MGET", "session:4", "session:5", "session:x", "session:y"],
    ] {
        assert_eq!(client.cmd(&args), single.cmd(&args), "{args:?}");
    }
    let mut direct = cluster.nodes[0].client();
    for args in [
        vec!["SINTERSTORE", "a", "b", "c"],
        vec!["EVAL", "return 1", "2", "x", "y"],
        vec!["RENAME", "session:2", "session:3"],
    ] {
        let expected = direct.cmd(&args);
        assert!(expected.starts_with(b"-CROSSSLOT"), "{args:?}");
        assert_eq!(client.cmd(&args), expected, "{args:?}");
    }
    assert_eq!(
        client.text(&["MSET", "{u7}a", "1", "{u7}b", "2"]),
        "+OK\r\n"
    );
    assert_eq!(
        client.text(&["MGET", "{u7}a", "{u7}b"]),
        "*2\r\n$1\r\n1\r\n$1\r\n2\r\n"
    );
    assert_eq!(client.text(&["RENAME", "{u7}a", "{u7}c"]), "+OK\r\n");
    // A transaction's keys must be in one slot, as on a cluster.
    assert_eq!(client.text(&["MULTI"]), "+OK\r\n");
    assert_eq!(client.text(&["SET", "{a}x", "1"]), "+QUEUED\r\n");
    assert!(client.text(&["SET", "{b}x", "1"]).starts_with("-CROSSSLOT"));
    assert!(client.text(&["EXEC"]).starts_with("-EXECABORT"));
    // Pipelined GETs of many slots, answered in order.
    let mut burst = Vec::new();
    for i in 6..200 {
        burst.extend(RawClient::encode(&[
            b"GET",
            format!("session:{i}").as_bytes(),
        ]));
    }
    client.send_raw(&burst);
    for i in 6..200 {
        let data = format!("data{i}");
        assert_eq!(
            client.read_reply(),
            format!("${}\r\n{data}\r\n", data.len()).into_bytes()
        );
    }
    // A transaction of one slot's keys runs (MULTI .. EXEC go together).
    assert_eq!(client.text(&["MULTI"]), "+OK\r\n");
    assert_eq!(client.text(&["SET", "session:9", "y"]), "+QUEUED\r\n");
    assert_eq!(client.text(&["EXPIRE", "session:9", "60"]), "+QUEUED\r\n");
    assert_eq!(client.text(&["EXEC"]), "*2\r\n+OK\r\n:1\r\n");
    assert_eq!(client.text(&["GET", "session:9"]), "$1\r\ny\r\n");
}

/// A WATCH holds a connection of its own to the master of the watched
/// key's slot, and the transaction after it runs there: a change by
/// another client aborts EXEC, as on Redis, byte for byte as the slot's
/// master answers the same steps directly. A blocking command waits on
/// that master until another client pushes. Keys of several slots get
/// Redis Cluster's CROSSSLOT.
#[test]
fn watch_and_blocking_commands_run_on_the_slots_master() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(&config_over(&cluster, &[]));
    let key = "session:watched";
    let node = master_of(&cluster, key);
    let steps = |proto: &str, client: &mut RawClient, other: &mut RawClient| -> Vec<String> {
        client.cmd(&["HELLO", proto]);
        other.cmd(&["HELLO", proto]);
        let mut seen = vec![
            client.text(&["SET", key, "v0"]),
            client.text(&["WATCH", key]),
        ];
        seen.push(other.text(&["SET", key, "changed"]));
        for args in [
            vec!["MULTI"],
            vec!["SET", key, "mine"],
            vec!["EXEC"],
            vec!["GET", key],
            vec!["WATCH", key],
            vec!["GET", key],
            vec!["MULTI"],
            vec!["SET", key, "mine"],
            vec!["EXPIRE", key, "60"],
            vec!["EXEC"],
            vec!["GET", key],
            vec!["WATCH", "{a}x", "{b}x"],
            vec!["BLPOP", "{a}x", "{b}x", "1"],
            vec!["BLPOP", "session:none", "0.01"],
        ] {
            seen.push(client.text(&args));
        }
        seen
    };
    let mut client = ready_client(&proxy);
    let mut other = proxy.client();
    for (proto, null) in [("3", "_\r\n"), ("2", "*-1\r\n")] {
        let direct = steps(proto, &mut node.client(), &mut node.client());
        assert_eq!(direct[5], null, "the lost race: {direct:?}");
        assert!(direct[14].starts_with("-CROSSSLOT"), "{direct:?}");
        assert_eq!(steps(proto, &mut client, &mut other), direct, "RESP{proto}");
    }
    // Later WATCHes, and the transaction after them, stay in the slot.
    assert_eq!(client.text(&["WATCH", "{u1}a"]), "+OK\r\n");
    assert!(client.text(&["WATCH", "{u2}b"]).starts_with("-CROSSSLOT"));
    assert_eq!(client.text(&["WATCH", "{u1}c"]), "+OK\r\n");
    assert_eq!(client.text(&["MULTI"]), "+OK\r\n");
    assert!(client
        .text(&["SET", "{u2}b", "1"])
        .starts_with("-CROSSSLOT"));
    assert!(client.text(&["EXEC"]).starts_with("-EXECABORT"));
    assert_eq!(client.text(&["WATCH", "{u1}a"]), "+OK\r\n");
    assert_eq!(client.text(&["MULTI"]), "+OK\r\n");
    assert_eq!(client.text(&["SET", "{u1}c", "1"]), "+QUEUED\r\n");
    assert_eq!(client.text(&["EXEC"]), "*1\r\n+OK\r\n");
    // A BLPOP waits on the queue's master until a push.
    let queue = "session:queue";
    let port = proxy.port;
    let blocked = std::thread::spawn(move || {
        let mut waiter = RawClient::connect(port);
        waiter.text(&["BLPOP", queue, "30"])
    });
    let server = master_of(&cluster, queue);
    wait_until(
        READY_LIMIT,
        Duration::from_millis(10),
        "the BLPOP blocked on the slot's master",
        || {
            server
                .client()
                .text(&["INFO", "clients"])
                .contains("blocked_clients:1")
        },
    );
    assert_eq!(other.text(&["LPUSH", queue, "job"]), ":1\r\n");
    assert_eq!(
        blocked.join().unwrap(),
        format!("*2\r\n${}\r\n{queue}\r\n$3\r\njob\r\n", queue.len())
    );
    // CLIENT UNBLOCK reaches the node the client is blocked on.
    let mut blocked = proxy.client();
    let id = blocked.text(&["CLIENT", "ID"]);
    let id = id.trim_start_matches(':').trim_end().to_string();
    blocked.send(&[b"BLPOP", queue.as_bytes(), b"0"]);
    wait_until(
        READY_LIMIT,
        Duration::from_millis(5),
        "the client is blocked",
        || {
            other
                .text(&["CLIENT", "LIST", "ID", &id])
                .contains("flags=b")
        },
    );
    assert_eq!(other.text(&["CLIENT", "UNBLOCK", &id]), ":1\r\n");
    assert_eq!(blocked.read_reply(), b"*-1\r\n");
}

/// redis-py's optimistic transaction helper (WATCH, a read, MULTI/EXEC,
/// again after another client's change) and BLPOP through the proxy over a
/// cluster backend, as directly on the keys' master
/// (tests/python/watch_and_block.py).
#[test]
fn redis_py_transactions_and_blpop_behave_the_same_over_a_cluster() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(&config_over(&cluster, &[]));
    ready_client(&proxy);
    let direct = master_of(&cluster, "{py}").port.to_string();
    let port = proxy.port.to_string();
    let ours = run_script("venv-redis8", "watch_and_block.py", &["--port", &port]);
    let theirs = run_script("venv-redis8", "watch_and_block.py", &["--port", &direct]);
    assert_eq!(ours, theirs);
    println!("{ours}");
    // The first try lost the race and the second won it, both protocols.
    assert_eq!(ours.matches("\"tries\": [10, 15]").count(), 2, "{ours}");
    assert_eq!(ours.matches("\"final\": \"16\"").count(), 2, "{ours}");
}

/// A slot moved by hand behind the proxy's back: a command on a connection
/// of its own (a WATCH) gets the old master's `-MOVED`, which corrects the
/// proxy's slot map, so the client's next WATCH runs on the new master; a
/// transaction without WATCH refused whole by the old master (its commands
/// MOVED, EXEC aborted, nothing run) goes again to the new one, and one
/// after a WATCH answers EXEC's null array, as for a changed key.
#[test]
fn a_moved_answer_on_a_connection_of_its_own_corrects_the_slot_map() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(&config_over(&cluster, &[]));
    let mut client = ready_client(&proxy);
    let (watched, written) = ("{moved}watched", "{moved}written");
    assert_eq!(client.text(&["SET", watched, "before"]), "+OK\r\n");
    let (source, target) = master_and_another(&cluster, watched);
    move_slot(&cluster, watched, source, target);
    // The proxy's map still names `source` (it refreshes every 5 s): the
    // first WATCH goes there, unless a refresh came first.
    let first = client.text(&["WATCH", watched]);
    assert!(first == "+OK\r\n" || first.starts_with("-MOVED"), "{first}");
    assert_eq!(client.text(&["UNWATCH"]), "+OK\r\n");
    assert_eq!(client.text(&["WATCH", watched]), "+OK\r\n");
    assert_eq!(client.text(&["MULTI"]), "+OK\r\n");
    assert_eq!(client.text(&["SET", watched, "after"]), "+QUEUED\r\n");
    assert_eq!(client.text(&["EXEC"]), "*1\r\n+OK\r\n");
    assert_eq!(target.client().text(&["GET", watched]), "$5\r\nafter\r\n");
    // Moved back behind the proxy's back: a plain transaction of the slot
    // finds the old master refusing it, and goes again to the new one.
    move_slot(&cluster, watched, target, source);
    assert_eq!(client.text(&["MULTI"]), "+OK\r\n");
    assert_eq!(client.text(&["SET", written, "1"]), "+QUEUED\r\n");
    assert_eq!(client.text(&["INCR", written]), "+QUEUED\r\n");
    assert_eq!(client.text(&["EXEC"]), "*2\r\n+OK\r\n:2\r\n");
    assert_eq!(source.client().text(&["GET", written]), "$1\r\n2\r\n");
    assert_eq!(client.text(&["GET", watched]), "$5\r\nafter\r\n");
    // Moved on between a WATCH and its EXEC: the node that heard the WATCH
    // refuses the transaction (nothing runs), and the EXEC aborts as for a
    // changed key, where it answered -EXECABORT; the next WATCH goes to
    // the slot's master now. (`move_slot` moves the watched key only.)
    assert_eq!(client.text(&["DEL", written]), ":1\r\n");
    assert_eq!(client.text(&["WATCH", watched]), "+OK\r\n");
    move_slot(&cluster, watched, source, target);
    assert_eq!(client.text(&["MULTI"]), "+OK\r\n");
    assert_eq!(client.text(&["SET", watched, "lost"]), "+QUEUED\r\n");
    assert_eq!(client.text(&["EXEC"]), "*-1\r\n");
    assert_eq!(target.client().text(&["GET", watched]), "$5\r\nafter\r\n");
    assert_eq!(client.text(&["WATCH", watched]), "+OK\r\n");
    assert_eq!(client.text(&["MULTI"]), "+OK\r\n");
    assert_eq!(client.text(&["SET", watched, "again"]), "+QUEUED\r\n");
    assert_eq!(client.text(&["EXEC"]), "*1\r\n+OK\r\n");
    assert_eq!(target.client().text(&["GET", watched]), "$5\r\nagain\r\n");
}

/// A blocking command refused by a node that does not serve its slot ran
/// nothing there; a cluster client would send it again where the node
/// says, and so does the proxy, for the time the command has left to
/// block: the client gets the element pushed on the slot's master, not a
/// redirection. Three ways: the slot moved behind the proxy's back (the
/// old master answers `-MOVED` at once), the slot moved while the command
/// was blocked (Redis unblocks it with `-MOVED`), and the slot half way
/// through a migration (`-ASK`, followed with ASKING on the importing node).
#[test]
fn a_blocking_command_follows_its_slot_where_a_node_redirects_it() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(&config_over(&cluster, &[]));
    ready_client(&proxy);
    let queue = "{blocked}queue";
    let (source, target) = master_and_another(&cluster, queue);
    let port = proxy.port;
    let blpop =
        move || std::thread::spawn(move || RawClient::connect(port).text(&["BLPOP", queue, "30"]));
    let popped = |item: &str| {
        format!(
            "*2\r\n${}\r\n{queue}\r\n${}\r\n{item}\r\n",
            queue.len(),
            item.len()
        )
    };
    // Moved behind the proxy's back: its map still names `source`.
    hand_over(&cluster, queue, source, target);
    let blocked = blpop();
    blocked_on(target);
    assert_eq!(target.client().text(&["LPUSH", queue, "one"]), ":1\r\n");
    assert_eq!(blocked.join().unwrap(), popped("one"));
    // Moved while blocked: sent again with the time it had left.
    let blocked = blpop();
    blocked_on(target);
    let mut monitor = source.client();
    assert_eq!(monitor.text(&["MONITOR"]), "+OK\r\n");
    hand_over(&cluster, queue, target, source);
    blocked_on(source);
    let again = loop {
        let line = String::from_utf8(monitor.read_reply()).unwrap();
        if line.contains("\"BLPOP\"") {
            break line;
        }
    };
    let left: f64 = again
        .trim_end()
        .rsplit('"')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        left > 0.0 && left < 30.0,
        "sent again with {left} s left: {again}"
    );
    assert_eq!(source.client().text(&["LPUSH", queue, "two"]), ":1\r\n");
    assert_eq!(blocked.join().unwrap(), popped("two"));
    // Half way through a migration: `-ASK` from `source`, which lacks the
    // key; ASKING and the command on `target`, which imports the slot.
    set_slot(target, queue, "IMPORTING", &Cluster::id_of(source));
    set_slot(source, queue, "MIGRATING", &Cluster::id_of(target));
    let blocked = blpop();
    blocked_on(target);
    let mut pusher = target.client();
    assert_eq!(pusher.text(&["ASKING"]), "+OK\r\n");
    assert_eq!(pusher.text(&["LPUSH", queue, "three"]), ":1\r\n");
    assert_eq!(blocked.join().unwrap(), popped("three"));
}

/// A blocking command on a master that a CLUSTER FAILOVER demotes: Redis
/// unblocks it unserved (`-UNBLOCKED force unblock from blocking
/// operation, instance state changed (master -> replica?)`). The proxy
/// sends it again to the slot's master (the old one, a replica now,
/// answers `-MOVED` to it first), with the time it has left, so the client
/// gets the element pushed on the new master, and the failover does not
/// show.
#[test]
fn a_blocking_command_follows_a_cluster_failover() {
    let cluster = Cluster::start(3, 1);
    let proxy = Proxy::start(&config_over(&cluster, &[]));
    ready_client(&proxy);
    let queue = "{failover}queue";
    let old = master_of(&cluster, queue);
    let replica = cluster.replica_of(old.port);
    let port = proxy.port;
    let blocked =
        std::thread::spawn(move || RawClient::connect(port).text(&["BLPOP", queue, "30"]));
    blocked_on(old);
    promote(&cluster, replica, queue);
    blocked_on(replica);
    assert_eq!(replica.client().text(&["LPUSH", queue, "job"]), ":1\r\n");
    let popped = format!("*2\r\n${}\r\n{queue}\r\n$3\r\njob\r\n", queue.len());
    assert_eq!(blocked.join().unwrap(), popped);
}

/// Hands `key`'s slot, which holds no key, from `source` to `target`, and
/// tells every node (the proxy is not told).
fn hand_over(cluster: &Cluster, key: &str, source: &Redis, target: &Redis) {
    set_slot(target, key, "IMPORTING", &Cluster::id_of(source));
    set_slot(source, key, "MIGRATING", &Cluster::id_of(target));
    let target_id = Cluster::id_of(target);
    for node in &cluster.nodes {
        set_slot(node, key, "NODE", &target_id);
    }
}

/// Waits until one client is blocked on `node`.
fn blocked_on(node: &Redis) {
    wait_until(
        READY_LIMIT,
        Duration::from_millis(10),
        &format!("a client blocked on :{}", node.port),
        || {
            node.client()
                .text(&["INFO", "clients"])
                .contains("blocked_clients:1\r\n")
        },
    );
}

/// A WATCH that a node refuses for a slot it no longer serves (the proxy's
/// map was behind) watched nothing. The client gets `+OK`, as from Redis,
/// and its EXEC aborts with the null array, nothing sent, as Redis aborts
/// a transaction whose watched key moved away; the optimistic-locking
/// loop's next try watches on the slot's new master and goes through.
/// Before, the WATCH answered the node's `-MOVED`, an error to a client
/// that is not a cluster client.
#[test]
fn a_watch_refused_for_its_slot_answers_ok_and_aborts_its_exec() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(&config_over(&cluster, &[]));
    let mut client = ready_client(&proxy);
    let key = "{refused}watched";
    let (mut source, mut target) = master_and_another(&cluster, key);
    assert_eq!(client.text(&["SET", key, "v0"]), "+OK\r\n");
    let moved = |node: &Redis| errors(node, "MOVED");
    let transaction = |client: &mut RawClient, value: &str| {
        assert_eq!(client.text(&["WATCH", key]), "+OK\r\n");
        assert_eq!(client.text(&["MULTI"]), "+OK\r\n");
        assert_eq!(client.text(&["SET", key, value]), "+QUEUED\r\n");
        client.text(&["EXEC"])
    };
    // The proxy asks for the map every 5 s: within a few tries a WATCH
    // reaches the old master before the proxy has heard of the move.
    let mut refused = false;
    for round in 0..5 {
        move_slot(&cluster, key, source, target);
        let before = moved(source);
        let exec = transaction(&mut client, &format!("lost{round}"));
        if moved(source) > before {
            refused = true;
            assert_eq!(exec, "*-1\r\n", "round {round}");
            assert_eq!(target.client().text(&["GET", key]), "$2\r\nv0\r\n");
            assert_eq!(transaction(&mut client, "won"), "*1\r\n+OK\r\n");
            assert_eq!(target.client().text(&["GET", key]), "$3\r\nwon\r\n");
            break;
        }
        assert_eq!(exec, "*1\r\n+OK\r\n", "round {round}");
        assert_eq!(client.text(&["SET", key, "v0"]), "+OK\r\n");
        std::mem::swap(&mut source, &mut target);
    }
    assert!(refused, "no WATCH reached the old master in 5 tries");
}

/// The master of `key`'s slot, and another master.
fn master_and_another<'a>(cluster: &'a Cluster, key: &str) -> (&'a Redis, &'a Redis) {
    let source = master_of(cluster, key);
    let target = cluster
        .nodes
        .iter()
        .find(|n| n.port != source.port)
        .unwrap();
    (source, target)
}

/// `CLUSTER SETSLOT <key's slot> how id` on `node`.
fn set_slot(node: &Redis, key: &str, how: &str, id: &str) {
    let the_slot = slot(key.as_bytes()).to_string();
    assert_eq!(
        node.client()
            .text(&["CLUSTER", "SETSLOT", &the_slot, how, id]),
        "+OK\r\n"
    );
}

/// Begins moving `key`'s slot from `source` to `target` by hand, as
/// `redis-cli --cluster reshard` does, and moves `key`: the slot is then
/// half way, `key` answered `-ASK` by `source`.
fn begin_move(key: &str, source: &Redis, target: &Redis) {
    set_slot(target, key, "IMPORTING", &Cluster::id_of(source));
    set_slot(source, key, "MIGRATING", &Cluster::id_of(target));
    let port = target.port.to_string();
    assert_eq!(
        source
            .client()
            .text(&["MIGRATE", "127.0.0.1", &port, key, "0", "5000"]),
        "+OK\r\n"
    );
}

/// Moves `key`'s slot, with `key`, from `source` to `target` by hand, and
/// tells every node (the proxy is not told).
fn move_slot(cluster: &Cluster, key: &str, source: &Redis, target: &Redis) {
    begin_move(key, source, target);
    let target_id = Cluster::id_of(target);
    for node in &cluster.nodes {
        set_slot(node, key, "NODE", &target_id);
    }
}

/// What a load saw: errors, the round each key was last acknowledged in,
/// and the slowest request.
struct Seen {
    errors: Vec<String>,
    written: Vec<u64>,
    slowest: Duration,
}

/// Runs SETEX then GET of `keys` session keys, over and over, through the
/// proxy until `stop` (100,000 rounds at most).
fn session_load(port: u16, keys: usize, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Seen> {
    std::thread::spawn(move || {
        let mut client = RawClient::connect(port);
        let mut seen = Seen {
            errors: Vec::new(),
            written: vec![0u64; keys],
            slowest: Duration::ZERO,
        };
        let mut round = 0u64;
        while !stop.load(Ordering::Relaxed) && round < 100_000 {
            round += 1;
            for (i, last) in seen.written.iter_mut().enumerate() {
                let key = format!("session:{i}");
                let value = format!("r{round}");
                let started = std::time::Instant::now();
                let set = client.text(&["SETEX", &key, "600", &value]);
                seen.slowest = seen.slowest.max(started.elapsed());
                if set != "+OK\r\n" {
                    seen.errors.push(format!("SETEX {key}: {set}"));
                    continue;
                }
                *last = round;
                let started = std::time::Instant::now();
                let got = client.text(&["GET", &key]);
                seen.slowest = seen.slowest.max(started.elapsed());
                if got != format!("${}\r\n{value}\r\n", value.len()) {
                    seen.errors.push(format!("GET {key}: {got}"));
                }
            }
        }
        seen
    })
}

/// No acknowledged write is lost: every key holds the value of the round
/// it was last acknowledged in, or of a later one (a write the client got
/// an error for may still have run, as on Redis).
fn check_written(client: &mut RawClient, written: &[u64]) {
    for (i, &round) in written.iter().enumerate() {
        let got = client.text(&["GET", &format!("session:{i}")]);
        let found: u64 = got
            .lines()
            .nth(1)
            .and_then(|v| v.strip_prefix('r'))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("session:{i} is gone: {got}"));
        assert!(
            found >= round,
            "session:{i} holds r{found}, r{round} was acknowledged"
        );
    }
}

#[test]
fn a_live_reshard_under_load_loses_nothing_and_shows_no_redirection() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(&config_over(&cluster, &[]));
    let mut client = ready_client(&proxy);
    let stop = Arc::new(AtomicBool::new(false));
    let load = session_load(proxy.port, 200, stop.clone());
    // Move 2,000 slots (and their keys) between two masters while it runs.
    let (from, to) = (
        Cluster::id_of(&cluster.nodes[0]),
        Cluster::id_of(&cluster.nodes[1]),
    );
    let out = std::process::Command::new("redis-cli")
        .args([
            "--cluster",
            "reshard",
            &cluster.nodes[0].address(),
            "--cluster-from",
            &from,
            "--cluster-to",
            &to,
            "--cluster-slots",
            "2000",
            "--cluster-yes",
            "--cluster-pipeline",
            "10",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "reshard: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    stop.store(true, Ordering::Relaxed);
    let seen = load.join().unwrap();
    let (moved, asked) = redirects(&proxy);
    println!(
        "reshard of 2000 slots: {} errors, slowest request {:?}; followed {moved} MOVED, {asked} ASK",
        seen.errors.len(),
        seen.slowest
    );
    assert!(moved + asked > 0, "the load met the slots as they moved");
    assert!(seen.written.iter().all(|&r| r > 0), "the load ran");
    assert_eq!(
        seen.errors,
        Vec::<String>::new(),
        "client errors during the reshard"
    );
    check_written(&mut client, &seen.written);
    // The keys of moved slots are on their new master.
    let moved = (0..200)
        .map(|i| format!("session:{i}"))
        .filter(|k| master_of(&cluster, k).port == cluster.nodes[1].port)
        .count();
    assert!(moved > 0);
}

/// With `request_timeout_ms` above the time the old master pauses its
/// clients (Redis does that during CLUSTER FAILOVER until its replica took
/// over; then they get `-MOVED`, which the proxy follows), requests are
/// held through the failover: no error, and no acknowledged write lost.
#[test]
fn a_manual_failover_under_load_loses_no_acknowledged_write() {
    let cluster = Cluster::start(3, 1);
    let proxy = Proxy::start(&format!(
        "{}[pool]\nrequest_timeout_ms = 5000\n",
        config_over(&cluster, &[])
    ));
    let mut client = ready_client(&proxy);
    let stop = Arc::new(AtomicBool::new(false));
    let load = session_load(proxy.port, 100, stop.clone());
    // The replica of session:0's master takes over.
    let master = master_of(&cluster, "session:0");
    let replica = cluster.replica_of(master.port);
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "load under way",
        || master.client().text(&["DBSIZE"]) != ":0\r\n",
    );
    promote(&cluster, replica, "session:0");
    // Some rounds after the switch.
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let seen = load.join().unwrap();
    let (moved, _) = redirects(&proxy);
    println!(
        "CLUSTER FAILOVER: {} errors, slowest request {:?}; followed {moved} MOVED",
        seen.errors.len(),
        seen.slowest
    );
    assert_eq!(
        seen.errors,
        Vec::<String>::new(),
        "client errors during the failover"
    );
    check_written(&mut client, &seen.written);
}

/// A cluster whose nodes announce a host name, as a managed service's
/// cluster mode does (`cluster-announce-hostname`,
/// `cluster-preferred-endpoint-type hostname`): the proxy's slot map names
/// the nodes by it, as MOVED does, and reaches them through it ("localhost"
/// here, seeds included; it may lead to ::1 before 127.0.0.1, where the
/// nodes listen: the addresses are tried in order). Sessions land on their
/// slot's master, and a CLUSTER FAILOVER under load costs no error.
#[test]
fn a_cluster_announcing_host_names_is_reached_by_them() {
    let cluster = Cluster::start_with(
        3,
        1,
        &[
            "--cluster-announce-hostname",
            "localhost",
            "--cluster-preferred-endpoint-type",
            "hostname",
        ],
    );
    let seeds: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("\"localhost:{}\"", n.port))
        .collect();
    let proxy = Proxy::start(&format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[pool]\nrequest_timeout_ms = 5000\n\
         [[backends]]\nid = \"c\"\ncluster = {{ seeds = [{}] }}\n",
        seeds.join(", ")
    ));
    let mut client = ready_client(&proxy);
    let topology = proxy.shared.topology();
    let backend = topology.backends.iter().find(|b| &*b.id == "c").unwrap();
    let masters = backend.cluster().unwrap().map().unwrap().masters.clone();
    assert!(
        masters.iter().all(|m| m.starts_with("localhost:")),
        "{masters:?}"
    );
    for i in 0..40 {
        let key = format!("session:named:{i}");
        assert_eq!(client.text(&["SET", &key, &i.to_string()]), "+OK\r\n");
        let value = format!("${}\r\n{i}\r\n", i.to_string().len());
        assert_eq!(
            master_of(&cluster, &key).client().text(&["GET", &key]),
            value
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let load = session_load(proxy.port, 100, stop.clone());
    let master = master_of(&cluster, "session:0");
    let replica = cluster.replica_of(master.port);
    promote(&cluster, replica, "session:0");
    let moved_before = redirects(&proxy).0;
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "the proxy following it",
        || {
            redirects(&proxy).0 > moved_before
                || backend.cluster().unwrap().maps.load(Ordering::Relaxed) > 1
        },
    );
    stop.store(true, Ordering::Relaxed);
    let seen = load.join().unwrap();
    assert_eq!(
        seen.errors,
        Vec::<String>::new(),
        "errors during the failover"
    );
    check_written(&mut client, &seen.written);
}

#[test]
fn a_topology_mixes_a_cluster_and_plain_backends() {
    let cluster = Cluster::start(3, 0);
    let (a, b) = (Redis::start(), Redis::start());
    let proxy = Proxy::start(&config_over(
        &cluster,
        &[("a", a.address()), ("b", b.address())],
    ));
    let mut client = ready_client(&proxy);
    client.cmd(&["DEL", "session:probe"]);
    for i in 0..300 {
        assert_eq!(
            client.text(&["SET", &format!("session:{i}"), "x"]),
            "+OK\r\n"
        );
    }
    // Rendezvous picks the backend, the slot map the node: each key is on
    // exactly one server, and each backend has some.
    let on_plain = |r: &Redis| {
        r.client().text(&["DBSIZE"]).trim()[1..]
            .parse::<usize>()
            .unwrap()
    };
    let in_cluster: usize = cluster
        .nodes
        .iter()
        .map(|n| {
            n.client().text(&["DBSIZE"]).trim()[1..]
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    let (in_a, in_b) = (on_plain(&a), on_plain(&b));
    assert_eq!(in_a + in_b + in_cluster, 300);
    assert!(
        in_a > 0 && in_b > 0 && in_cluster > 0,
        "{in_a} {in_b} {in_cluster}"
    );
    for i in 0..300 {
        assert_eq!(
            client.text(&["GET", &format!("session:{i}")]),
            "$1\r\nx\r\n"
        );
    }
}

/// Django's two session engines (django-redis-sessions and the cache
/// engine, redis-py 8.1) through a proxy whose only backend is a cluster:
/// 40 users log in, a master fails over (CLUSTER FAILOVER) and a range of
/// slots moves, and every user is still logged in and can still change the
/// session.
#[test]
fn django_sessions_live_through_a_failover_and_a_reshard_of_the_cluster() {
    let cluster = Cluster::start(3, 1);
    let proxy = Proxy::start(&format!(
        "{}[keys]\nprefixes = [\"session:\"]\n[pool]\nrequest_timeout_ms = 5000\n",
        config_over(&cluster, &[])
    ));
    ready_client(&proxy);
    let dir = tempfile::tempdir().unwrap();
    let phase = |phase: &str, expect: &str| {
        crate::common::django_phase(proxy.port, dir.path(), phase, expect)
    };
    phase("create", "\"created\": 40");
    let master = cluster
        .nodes
        .iter()
        .find(|n| n.client().text(&["ROLE"]).contains("master"))
        .unwrap();
    let replica = cluster.replica_of(master.port);
    assert_eq!(replica.client().text(&["CLUSTER", "FAILOVER"]), "+OK\r\n");
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "the replica promoted",
        || replica.client().text(&["ROLE"]).contains("master"),
    );
    phase("verify", "\"verified\": 40");
    let out = std::process::Command::new("redis-cli")
        .args([
            "--cluster",
            "rebalance",
            &replica.address(),
            "--cluster-weight",
            &format!("{}=3", Cluster::id_of(replica)),
            "--cluster-yes",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rebalance: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    phase("verify", "\"verified\": 40");
}

/// A master killed under load: its slots fail fast until the cluster has
/// promoted its replica (`cluster-node-timeout` 2 s here) and the proxy has
/// the new map; the window is printed. Nothing acknowledged is lost from
/// the other masters' slots, and every key is readable afterwards.
#[test]
fn a_killed_master_is_followed_to_its_promoted_replica() {
    let mut cluster = Cluster::start(3, 1);
    let proxy = Proxy::start(&format!(
        "{}[pool]\nrequest_timeout_ms = 500\nconnect_timeout_ms = 300\n",
        config_over(&cluster, &[])
    ));
    let mut client = ready_client(&proxy);
    let stop = Arc::new(AtomicBool::new(false));
    let load = session_load(proxy.port, 100, stop.clone());
    let victim = master_of(&cluster, "session:0").port;
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "load under way",
        || client.text(&["EXISTS", "session:99"]) == ":1\r\n",
    );
    let replica = cluster.replica_of(victim).port;
    let killed_at = std::time::Instant::now();
    let index = cluster.nodes.iter().position(|n| n.port == victim).unwrap();
    drop(cluster.nodes.remove(index));
    let mut promoted = None;
    wait_until(
        Duration::from_secs(30),
        Duration::from_millis(20),
        "a write through the proxy on the new master",
        || {
            let node = cluster.nodes.iter().find(|n| n.port == replica).unwrap();
            if promoted.is_none() && node.client().text(&["ROLE"]).contains("master") {
                promoted = Some(killed_at.elapsed());
            }
            // A key of session:0's slot that the load does not use: its
            // GETs of session:0 must not see this write.
            client.text(&["SET", "{session:0}:after", "after"]) == "+OK\r\n"
        },
    );
    let window = killed_at.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let seen = load.join().unwrap();
    println!(
        "master killed: error window {window:?} (kill to first write on the new master; the \
         cluster promoted the replica after {promoted:?}), {} errors",
        seen.errors.len()
    );
    // Fast errors only: the node is down, or its slots have no master yet.
    assert!(
        seen.errors
            .iter()
            .all(|e| e.contains("-ERR backend") || e.contains("-CLUSTERDOWN")),
        "{:?}",
        seen.errors
    );
    for i in 0..100 {
        let got = client.text(&["GET", &format!("session:{i}")]);
        assert!(
            got.starts_with('$') && got != "$-1\r\n",
            "session:{i}: {got}"
        );
    }
}

/// A master killed and replaced by its replica: once the proxy's slot map
/// names the replica, `/metrics` shows nothing of the killed node. Before,
/// its `session_proxy_backend_up` (and connections) stayed at their last
/// values for as long as the proxy ran: at 0 once the node was marked down,
/// so `config/alerts.yml`'s SessionProxyBackendDown paged for good; and its
/// counters stayed, a scrape growing with every node address ever seen.
#[test]
fn a_replaced_master_leaves_no_series_behind() {
    let mut cluster = Cluster::start(3, 1);
    let body = config_over(&cluster, &[]).replacen("[listen]\naddress = \"127.0.0.1:0\"\n", "", 1);
    let proxy = crate::common::Running::start(&format!(
        "{body}[pool]\nrequest_timeout_ms = 500\nconnect_timeout_ms = 300\n"
    ));
    let mut client = proxy.client();
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "the slot map",
        || client.text(&["SET", "session:0", "v"]) == "+OK\r\n",
    );
    let victim = master_of(&cluster, "session:0").port;
    let replica = cluster.replica_of(victim).port;
    // A node's series end with its label, `node="host:port"`.
    let of = |port: u16| format!(":{port}\"}}");
    let up = |metrics: &str, port: u16| -> Vec<String> {
        series_of(metrics, &of(port))
            .into_iter()
            .filter(|l| l.starts_with("session_proxy_backend_up{"))
            .map(|l| l.rsplit(' ').next().unwrap_or_default().to_string())
            .collect()
    };
    let before = proxy.http("GET", "/metrics").1;
    assert_eq!(up(&before, victim), ["1"], "{before}");
    let index = cluster.nodes.iter().position(|n| n.port == victim).unwrap();
    drop(cluster.nodes.remove(index));
    wait_until(
        Duration::from_secs(30),
        Duration::from_millis(20),
        "a write through the proxy on the new master",
        || client.text(&["SET", "session:0", "after"]) == "+OK\r\n",
    );
    let mut metrics = String::new();
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(50),
        "the killed master's series gone from /metrics",
        || {
            metrics = proxy.http("GET", "/metrics").1;
            series_of(&metrics, &of(victim)).is_empty()
        },
    );
    assert_eq!(up(&metrics, replica), ["1"], "{metrics}");
}

/// A BLPOP (no timeout) blocked on a cluster master that freezes: its
/// replica takes over (`cluster-node-timeout` 2 s here), and the frozen
/// node can neither redirect the command (`-MOVED`, as a node that is up
/// does) nor close. Once the proxy's slot map has named the new master for
/// a request timeout, the command goes again there, where the element
/// pushed after the failover reaches the client. Before, the client stayed
/// blocked on the frozen node for ever while pushes went to the new master.
#[test]
fn a_blocking_command_left_on_a_frozen_master_follows_its_slot() {
    let cluster = Cluster::start(3, 1);
    let proxy = Proxy::start(&format!(
        "{}[pool]\nrequest_timeout_ms = 500\nconnect_timeout_ms = 300\n",
        config_over(&cluster, &[])
    ));
    ready_client(&proxy);
    let queue = "session:queue";
    let frozen = master_of(&cluster, queue);
    let replica = cluster.replica_of(frozen.port);
    let blocked = blpop_on_a_thread(proxy.port, queue, "0");
    until_blocks_one(frozen, "the BLPOP blocked on the master");
    frozen.signal("STOP");
    blpop_gets_what_is_pushed_on(blocked, replica, queue);
    frozen.signal("CONT");
}

/// A slot half way through a migration, made by hand as `redis-cli
/// --cluster reshard` makes it: a key already moved is answered `-ASK` by
/// its old node, which the proxy follows with ASKING to the new one; so is
/// a new key of that slot.
#[test]
fn ask_is_followed_for_a_slot_being_migrated() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(&config_over(&cluster, &[]));
    let mut client = ready_client(&proxy);
    let key = "session:asked";
    assert_eq!(client.text(&["SET", key, "here"]), "+OK\r\n");
    let (source, target) = master_and_another(&cluster, key);
    begin_move(key, source, target);
    let the_slot = slot(key.as_bytes());
    let (_, asked_before) = redirects(&proxy);
    assert_eq!(client.text(&["GET", key]), "$4\r\nhere\r\n");
    // A new key of the migrating slot is written on the importing node.
    let other = (0..100_000)
        .map(|i| format!("session:{i}"))
        .find(|k| slot(k.as_bytes()) == the_slot)
        .unwrap();
    assert_eq!(client.text(&["SET", &other, "new"]), "+OK\r\n");
    let mut on_target = target.client();
    on_target.send(&[b"ASKING"]);
    on_target.read_reply();
    assert_eq!(on_target.text(&["GET", &other]), "$3\r\nnew\r\n");
    let (_, asked) = redirects(&proxy);
    assert_eq!(
        asked - asked_before,
        2,
        "both requests were asked elsewhere"
    );
}

/// A transaction on a key whose slot is half way through a migration,
/// the key already moved: the old node refuses it whole (`-ASK` for the
/// queued command, EXEC `-EXECABORT`, nothing ran), so the proxy sends it
/// again, after ASKING, to the importing node, where it runs; a key of
/// that slot not moved yet runs its transaction on the old node.
#[test]
fn a_transaction_on_a_key_already_migrated_follows_ask() {
    let cluster = Cluster::start(3, 0);
    let proxy = Proxy::start(&config_over(&cluster, &[]));
    let mut client = ready_client(&proxy);
    let key = "session:tx-asked";
    let the_slot = slot(key.as_bytes());
    let stays = (0..100_000)
        .map(|i| format!("session:{i}"))
        .find(|k| slot(k.as_bytes()) == the_slot)
        .unwrap();
    assert_eq!(client.text(&["SET", key, "1"]), "+OK\r\n");
    assert_eq!(client.text(&["SET", &stays, "1"]), "+OK\r\n");
    let (source, target) = master_and_another(&cluster, key);
    begin_move(key, source, target);
    let transaction = |client: &mut RawClient, key: &str| {
        assert_eq!(client.text(&["MULTI"]), "+OK\r\n");
        assert_eq!(client.text(&["INCR", key]), "+QUEUED\r\n");
        assert_eq!(client.text(&["EXPIRE", key, "60"]), "+QUEUED\r\n");
        client.text(&["EXEC"])
    };
    for proto in ["3", "2"] {
        client.text(&["HELLO", proto]);
        let n = if proto == "3" { 2 } else { 3 };
        let expected = format!("*2\r\n:{n}\r\n:1\r\n");
        assert_eq!(transaction(&mut client, key), expected, "RESP{proto}");
        assert_eq!(transaction(&mut client, &stays), expected, "RESP{proto}");
    }
    let mut on_target = target.client();
    on_target.send(&[b"ASKING"]);
    on_target.read_reply();
    assert_eq!(on_target.text(&["GET", key]), "$1\r\n3\r\n");
    assert_eq!(source.client().text(&["GET", &stays]), "$1\r\n3\r\n");
}

/// How many `-TRYAGAIN` answers `node` has given (its INFO errorstats).
fn try_agains(node: &Redis) -> u64 {
    errors(node, "TRYAGAIN")
}

/// How many errors of `kind` (`MOVED`, `TRYAGAIN`) `node` has answered.
fn errors(node: &Redis, kind: &str) -> u64 {
    let info = node.client().text(&["INFO", "errorstats"]);
    let prefix = format!("errorstat_{kind}:count=");
    info.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .map_or(0, |count| count.trim().parse().unwrap())
}

/// A command or a transaction whose keys a slot's migration has split
/// between its two nodes gets `-TRYAGAIN` from Redis Cluster, which a
/// cluster client sends again; a client of the proxy is none, so the proxy
/// sends it again a moment later, and once the migration has brought the
/// keys together the client gets the answer, not the error. A transaction
/// runs once.
#[test]
fn keys_split_by_a_migration_are_answered_once_they_are_together() {
    let cluster = Cluster::start(3, 0);
    let mut config = config_over(&cluster, &[]);
    config.push_str("[pool]\nrequest_timeout_ms = 10000\n");
    let proxy = Proxy::start(&config);
    let mut client = ready_client(&proxy);
    for proto in ["3", "2"] {
        client.text(&["HELLO", proto]);
        for transaction in [false, true] {
            let tag = format!("{{split-{proto}-{transaction}}}");
            let (moved, stays) = (format!("session:{tag}:a"), format!("session:{tag}:b"));
            assert_eq!(client.text(&["SET", &moved, "1"]), "+OK\r\n");
            assert_eq!(client.text(&["SET", &stays, "2"]), "+OK\r\n");
            let (source, target) = master_and_another(&cluster, &moved);
            begin_move(&moved, source, target);
            let refused = try_agains(source) + try_agains(target);
            if transaction {
                assert_eq!(client.text(&["MULTI"]), "+OK\r\n");
                assert_eq!(client.text(&["INCR", &moved]), "+QUEUED\r\n");
                assert_eq!(client.text(&["INCR", &stays]), "+QUEUED\r\n");
                client.send(&[b"EXEC"]);
            } else {
                client.send(&[b"MGET", moved.as_bytes(), stays.as_bytes()]);
            }
            // A node has refused it for the split keys: now the rest moves.
            wait_until(
                READY_LIMIT,
                Duration::from_millis(5),
                "a -TRYAGAIN for the split keys",
                || try_agains(source) + try_agains(target) > refused,
            );
            let port = target.port.to_string();
            let migrate = ["MIGRATE", "127.0.0.1", &port, &stays, "0", "5000"];
            assert_eq!(source.client().text(&migrate), "+OK\r\n");
            for node in &cluster.nodes {
                set_slot(node, &moved, "NODE", &Cluster::id_of(target));
            }
            let reply = String::from_utf8_lossy(&client.read_reply()).into_owned();
            let mut direct = target.client();
            direct.text(&["HELLO", proto]);
            if transaction {
                assert_eq!(reply, "*2\r\n:2\r\n:3\r\n", "RESP{proto}");
                let values = direct.text(&["MGET", &moved, &stays]);
                assert_eq!(values, "*2\r\n$1\r\n2\r\n$1\r\n3\r\n", "ran once");
            } else {
                assert_eq!(reply, direct.text(&["MGET", &moved, &stays]), "RESP{proto}");
                assert_eq!(reply, "*2\r\n$1\r\n1\r\n$1\r\n2\r\n");
            }
        }
    }
}

/// SCAN, KEYS, DBSIZE, SCRIPT LOAD and FLUSHDB reach every master of a
/// cluster backend: a connect-redis style listing sees every session, a
/// loaded script runs by its SHA on whichever node a key is on.
#[test]
fn commands_about_every_key_reach_every_master() {
    let cluster = Cluster::start(3, 0);
    let plain = Redis::start();
    let proxy = Proxy::start(&format!(
        "{}[keys]\nallow_flush = true\n",
        config_over(&cluster, &[("a", plain.address())])
    ));
    let mut client = ready_client(&proxy);
    client.cmd(&["DEL", "session:probe"]);
    for i in 0..150 {
        assert_eq!(
            client.text(&["SET", &format!("session:{i}"), "x"]),
            "+OK\r\n"
        );
    }
    let mut cursor = "0".to_string();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..10_000 {
        let reply = Reply::Raw(Bytes::from(client.cmd(&["SCAN", &cursor, "COUNT", "20"]))).parsed();
        let Reply::Array(parts) = reply else {
            panic!("SCAN: {reply:?}")
        };
        let (Reply::Bulk(next), Reply::Array(keys)) = (&parts[0], &parts[1]) else {
            panic!("SCAN: {parts:?}")
        };
        for key in keys {
            if let Reply::Bulk(k) = key {
                seen.insert(k.clone());
            }
        }
        cursor = String::from_utf8_lossy(next).into_owned();
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(
        seen.len(),
        150,
        "SCAN lists every session once the cursor is back at 0"
    );
    assert_eq!(client.text(&["DBSIZE"]), ":150\r\n");
    let keys = Reply::Raw(Bytes::from(client.cmd(&["KEYS", "session:*"]))).parsed();
    assert!(
        matches!(&keys, Reply::Array(k) if k.len() == 150),
        "{keys:?}"
    );
    let sha = client.text(&["SCRIPT", "LOAD", "return redis.call('GET', KEYS[1])"]);
    let sha = sha.lines().nth(1).unwrap().to_string();
    for i in 0..150 {
        assert_eq!(
            client.text(&["EVALSHA", &sha, "1", &format!("session:{i}")]),
            "$1\r\nx\r\n"
        );
    }
    assert_eq!(client.text(&["FLUSHDB"]), "+OK\r\n");
    assert_eq!(client.text(&["DBSIZE"]), ":0\r\n");
}

/// `min_replicas_ack` works per node: a write is acknowledged once the
/// master of its slot has it on a replica, and without a replica it gets
/// -NOREPLICAS rather than OK.
#[test]
fn min_replicas_ack_waits_for_the_slots_masters_replica() {
    // WAIT is given half the request timeout: with a replica, long enough
    // for a loaded machine; without, short, as every write waits it out.
    for (replicas, expected, timeout_ms) in [
        (1, "+OK\r\n", 4000),
        (0, "-NOREPLICAS Not enough good replicas to write.\r\n", 400),
    ] {
        let cluster = Cluster::start(3, replicas);
        let config = config_over(&cluster, &[])
            .replace("cluster = {", "min_replicas_ack = 1\ncluster = {")
            + &format!("[pool]\nrequest_timeout_ms = {timeout_ms}\n");
        let proxy = Proxy::start(&config);
        let mut client = proxy.client();
        wait_until(
            READY_LIMIT,
            Duration::from_millis(20),
            "the slot map",
            || client.text(&["GET", "session:x"]) == "$-1\r\n",
        );
        for i in 0..20 {
            assert_eq!(
                client.text(&["SET", &format!("session:{i}"), "v"]),
                expected,
                "{replicas} replicas"
            );
        }
    }
}

/// A cluster no seed of which answers: requests wait for a slot map (and
/// time out), as many as `[pool] max_pending`; beyond that they are
/// answered at once, so memory does not grow with what clients send.
#[test]
fn requests_waiting_for_a_first_slot_map_are_bounded() {
    let dead = crate::common::free_port();
    let proxy = Proxy::start(&format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[pool]\nmax_pending = 4\nrequest_timeout_ms = 300\n\
         [[backends]]\nid = \"c\"\ncluster = {{ seeds = [\"127.0.0.1:{dead}\"] }}\n"
    ));
    let mut client = proxy.client();
    // The first request alone (a client's first reply sizes it), then ten
    // at once.
    assert!(client
        .text(&["GET", "session:a"])
        .contains("did not answer"));
    let burst = RawClient::encode(&[b"GET", b"session:a"]).repeat(10);
    client.send_raw(&burst);
    let replies: Vec<String> = (0..10)
        .map(|_| String::from_utf8_lossy(&client.read_reply()).into_owned())
        .collect();
    let refused = replies
        .iter()
        .filter(|r| r.starts_with("-CLUSTERDOWN no slot map"))
        .count();
    let timed_out = replies
        .iter()
        .filter(|r| r.contains("did not answer"))
        .count();
    assert_eq!((timed_out, refused), (4, 6), "{replies:?}");
    assert!(
        proxy.shared.ready().is_err(),
        "not ready without a slot map"
    );
}

/// Credentials go to every node, and a node that refuses CLUSTER SHARDS
/// (an older Redis has none; here an ACL user without it) is asked CLUSTER
/// SLOTS instead.
#[test]
fn a_user_without_cluster_shards_gets_the_map_from_cluster_slots() {
    let cluster = Cluster::start(3, 0);
    for node in &cluster.nodes {
        let set = node.client().text(&[
            "ACL",
            "SETUSER",
            "proxy",
            "on",
            ">proxy-pw",
            "~*",
            "&*",
            "+@all",
            "-cluster|shards",
        ]);
        assert_eq!(set, "+OK\r\n");
    }
    let config = config_over(&cluster, &[]).replace(
        "cluster = { seeds = [",
        "cluster = { username = \"proxy\", password = \"proxy-pw\", seeds = [",
    );
    let proxy = Proxy::start(&config);
    let mut client = ready_client(&proxy);
    for i in 0..50 {
        assert_eq!(
            client.text(&["SET", &format!("session:{i}"), "v"]),
            "+OK\r\n"
        );
    }
    for i in 0..50 {
        assert_eq!(
            client.text(&["GET", &format!("session:{i}")]),
            "$1\r\nv\r\n"
        );
    }
    let report = proxy.shared.topology().backends[0]
        .cluster()
        .unwrap()
        .report();
    assert_eq!(report["slots_served"], 16384, "{report}");
    // Every master was reached as the ACL user (a default-user connection
    // would not show up under "proxy").
    for node in &cluster.nodes {
        let clients = node.client().text(&["CLIENT", "LIST"]);
        assert!(clients.contains("user=proxy"), "{clients}");
    }
}

/// A node that stops being a master keeps its backend (and connections) a
/// while, twice the request timeout: requests still on them get their
/// answers (a demoted master's `-MOVED`, followed) instead of a closed
/// connection's error when the new map drops that node. (Without it, a
/// SETEX under load once got "connection lost" during `CLUSTER FAILOVER`.)
#[test]
fn a_demoted_master_is_kept_until_its_requests_are_answered() {
    let cluster = Cluster::start(3, 1);
    let proxy = Proxy::start(&format!(
        "{}[pool]\nrequest_timeout_ms = 10000\n",
        config_over(&cluster, &[])
    ));
    let mut client = ready_client(&proxy);
    let key = "session:held";
    assert_eq!(client.text(&["SET", key, "v"]), "+OK\r\n");
    let master = master_of(&cluster, key);
    let replica = cluster.replica_of(master.port);
    assert_eq!(replica.client().text(&["CLUSTER", "FAILOVER"]), "+OK\r\n");
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "the old master demoted",
        || master.client().text(&["ROLE"]).contains("slave"),
    );
    // A request meets the MOVED; the proxy asks for the map again.
    let report = || {
        proxy.shared.topology().backends[0]
            .cluster()
            .unwrap()
            .report()
    };
    assert_eq!(client.text(&["GET", key]), "$1\r\nv\r\n");
    // Once a map without the old master is in, its backend is retired, not
    // dropped. Both are read from one report: a refresh between two reports
    // may take the map from a node that has not yet heard of the failover
    // (the next map retires the old master's backend again, so at least
    // one).
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "the old master retired and out of the map",
        || {
            let report = report();
            report["retired_nodes"].as_u64() >= Some(1)
                && report["masters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|m| m["address"] != master.address().as_str())
        },
    );
}

/// A reload that adds a plain backend beside a Redis Cluster moves keys
/// out of the cluster: the move's lock shares the key's slot (the scripts
/// that read and delete the old copy take both), so no read or write of a
/// moving key gets CROSSSLOT, and every key is found with its value
/// (found by the nemesis: "moving a key: CROSSSLOT").
#[test]
fn keys_move_out_of_a_cluster_on_a_reload_without_crossslot() {
    let cluster = Cluster::start(3, 0);
    let plain = Redis::start();
    let seeds: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("\"{}\"", n.address()))
        .collect();
    let only = format!(
        "[reload]\nsettle_ms = 0\n[[backends]]\nid = \"c\"\ncluster = {{ seeds = [{}] }}\n",
        seeds.join(", ")
    );
    let proxy = crate::common::Running::start(&only);
    let mut client = proxy.client();
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "the slot map",
        || client.text(&["SET", "session:0", "v0"]) == "+OK\r\n",
    );
    for i in 0..60 {
        let (key, value) = (format!("session:{i}"), format!("v{i}"));
        assert_eq!(client.text(&["SET", &key, &value]), "+OK\r\n");
    }
    proxy.rewrite(&format!(
        "{only}[[backends]]\nid = \"p\"\naddress = \"{}\"\n",
        plain.address()
    ));
    proxy.signal("HUP");
    wait_until(READY_LIMIT, Duration::from_millis(10), "reload", || {
        proxy.generation() == 1
    });
    // Read before the mover is done: each read of a key moving to the
    // plain backend moves it first.
    for i in 0..60 {
        let key = format!("session:{i}");
        let value = format!("v{i}");
        let want = format!("${}\r\n{value}\r\n", value.len());
        assert_eq!(client.text(&["GET", &key]), want, "{key}");
    }
    let moved = plain.client().text(&["DBSIZE"]);
    assert_ne!(moved, ":0\r\n", "no key moved to the plain backend");
}

/// A migration out of a Redis Cluster finishes: the mover sizes and scans
/// the cluster in its one database, not in every database the proxy
/// accepts (`SELECT` is refused in cluster mode).
#[test]
fn a_migration_out_of_a_cluster_finishes() {
    let cluster = Cluster::start(3, 0);
    let plain = Redis::start();
    let seeds: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("\"{}\"", n.address()))
        .collect();
    let only = format!(
        "[reload]\nsettle_ms = 0\n[[backends]]\nid = \"c\"\ncluster = {{ seeds = [{}] }}\n",
        seeds.join(", ")
    );
    let proxy = crate::common::Running::start(&only);
    let mut client = proxy.client();
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "the slot map",
        || client.text(&["SET", "session:0", "v0"]) == "+OK\r\n",
    );
    for i in 0..60 {
        let (key, value) = (format!("session:{i}"), format!("v{i}"));
        assert_eq!(client.text(&["SET", &key, &value]), "+OK\r\n");
    }
    proxy.rewrite(&format!(
        "{only}[[backends]]\nid = \"p\"\naddress = \"{}\"\n",
        plain.address()
    ));
    proxy.signal("HUP");
    wait_until(READY_LIMIT, Duration::from_millis(10), "reload", || {
        proxy.generation() == 1
    });
    let migration = || {
        let (status, body) = proxy.http("GET", "/topology");
        assert_eq!(status, 200, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        json["migration"].clone()
    };
    wait_until(
        Duration::from_secs(60),
        Duration::from_millis(50),
        "the migration out of the cluster never finished",
        || migration()["state"] == "done",
    );
    assert_ne!(plain.client().text(&["DBSIZE"]), ":0\r\n", "no key moved");
    for i in 0..60 {
        let value = format!("v{i}");
        let want = format!("${}\r\n{value}\r\n", value.len());
        assert_eq!(client.text(&["GET", &format!("session:{i}")]), want);
    }
}

/// The day a site that ran on a Redis Cluster moves onto the proxy over
/// plain servers, `[migration] from` naming the cluster: every session
/// written on the cluster (on its slot's master, as a cluster client puts
/// it) reads back through the proxy with its TTL, a logout holds, and the
/// mover empties the cluster's masters into the new servers.
#[test]
fn sessions_move_in_from_a_redis_cluster_without_a_logout() {
    let cluster = Cluster::start(3, 0);
    // The site's cluster client, as it wrote before the move.
    let site = Proxy::start(&config_over(&cluster, &[]));
    let mut before = ready_client(&site);
    assert_eq!(before.text(&["DEL", "session:probe"]), ":1\r\n");
    for i in 0..300 {
        let (key, data) = (format!("session:{i}"), format!("data{i}"));
        assert_eq!(before.text(&["SETEX", &key, "3600", &data]), "+OK\r\n");
    }
    drop(site);
    let new: Vec<Redis> = (0..2).map(|_| Redis::start()).collect();
    let seeds: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("\"{}\"", n.address()))
        .collect();
    let proxy = Proxy::start(&format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n\
         [[backends]]\nid = \"a\"\naddress = \"{}\"\n\
         [[backends]]\nid = \"b\"\naddress = \"{}\"\n\
         [migration]\nkeys_per_second = 200\n\
         from = [ {{ id = \"old\", cluster = {{ seeds = [{}] }} }} ]\n",
        new[0].address(),
        new[1].address(),
        seeds.join(", ")
    ));
    let mut client = proxy.client();
    for i in 0..100 {
        let data = format!("data{i}");
        let got = client.text(&["GET", &format!("session:{i}")]);
        assert_eq!(got, format!("${}\r\n{data}\r\n", data.len()), "session:{i}");
    }
    for i in 100..120 {
        assert_eq!(client.text(&["DEL", &format!("session:{i}")]), ":1\r\n");
    }
    let report = || {
        let topology = proxy.shared.topology();
        topology.migration.as_ref().expect("a migration").report()
    };
    wait_until(
        Duration::from_secs(90),
        Duration::from_millis(20),
        "the mover done",
        || report().state == "done",
    );
    let keys = |redis: &Redis| {
        let size = redis.client().text(&["DBSIZE"]);
        size.trim_start_matches(':')
            .trim()
            .parse::<usize>()
            .unwrap()
    };
    assert_eq!(cluster.nodes.iter().map(keys).sum::<usize>(), 0);
    assert_eq!(new.iter().map(keys).sum::<usize>(), 280);
    for i in 0..300 {
        let got = client.text(&["GET", &format!("session:{i}")]);
        let want = match i {
            100..120 => "$-1\r\n".to_string(),
            _ => format!("${}\r\ndata{i}\r\n", format!("data{i}").len()),
        };
        assert_eq!(got, want, "session:{i}");
    }
    let ttl = client.text(&["TTL", "session:299"]);
    let ttl: u64 = ttl.trim_start_matches(':').trim().parse().unwrap();
    assert!((3000..=3600).contains(&ttl), "{ttl}");
}

/// CLIENT TRACKING over a topology mixing a Redis Cluster backend and a
/// plain one (issue 32): reads from both are kept, and a change on either
/// is told, in default and BCAST modes. Before 84c816d the proxy had no
/// link on a cluster's nodes and invalidated each read from a cluster
/// right behind its reply.
#[test]
fn tracking_over_a_cluster_and_a_plain_backend_keeps_reads_of_both() {
    let cluster = Cluster::start(3, 0);
    let plain = Redis::start();
    let proxy = Proxy::start(&config_over(&cluster, &[("a", plain.address())]));
    let mut reader = ready_client(&proxy);
    reader.hello3();
    assert_eq!(reader.text(&["CLIENT", "TRACKING", "on"]), "+OK\r\n");
    let on_plain = proxy.key_on(0, "session:p");
    let on_cluster = proxy.key_on(1, "session:c");
    for key in [&on_plain, &on_cluster] {
        assert_eq!(reader.text(&["GET", key]), "_\r\n");
        assert_eq!(reader.text(&["PING"]), "+PONG\r\n", "{key}'s read kept");
    }
    let mut bcast = proxy.client();
    bcast.hello3();
    assert_eq!(
        bcast.text(&["CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "session:"]),
        "+OK\r\n"
    );
    let mut writer = proxy.client();
    for key in [&on_cluster, &on_plain] {
        assert_eq!(writer.text(&["SET", key, "v"]), "+OK\r\n");
        let told = format!(
            ">2\r\n$10\r\ninvalidate\r\n*1\r\n${}\r\n{key}\r\n",
            key.len()
        );
        assert_eq!(String::from_utf8_lossy(&reader.read_reply()), told);
        assert_eq!(String::from_utf8_lossy(&bcast.read_reply()), told);
    }
}

/// The ports of the cluster's masters now.
fn masters_now(cluster: &Cluster) -> Vec<u16> {
    cluster
        .nodes
        .iter()
        .filter(|n| n.client().text(&["ROLE"]).contains("master"))
        .map(|n| n.port)
        .collect()
}

/// A key `session:{n}` of each master's, in the order of `masters`.
fn a_key_on_each(cluster: &Cluster, masters: &[u16]) -> Vec<String> {
    masters
        .iter()
        .map(|port| {
            (0..)
                .map(|n| format!("session:{n}"))
                .find(|key| master_of(cluster, key).port == *port)
                .unwrap()
        })
        .collect()
}

/// The `set` event of `key`, as a subscriber to `__keyevent@0__:*` reads it.
fn set_event(key: &str) -> String {
    format!(
        "*4\r\n$8\r\npmessage\r\n$16\r\n__keyevent@0__:*\r\n$18\r\n__keyevent@0__:set\r\n${}\r\n{key}\r\n",
        key.len()
    )
}

/// Pub/Sub through a cluster backend, as on one Redis (before, SUBSCRIBE
/// was refused when the topology had a cluster): a keyspace notification
/// reaches the subscriber from whichever master holds its key (the proxy
/// links to every master), a message published through the proxy reaches
/// it once although the cluster sends it to every node, a shard channel's
/// message comes from its slot's master, and after a failover the promoted
/// master's notifications reach it too, the old master's link gone.
#[test]
fn subscribers_hear_every_master_of_a_cluster_once() {
    let cluster = Cluster::start(3, 1);
    for node in &cluster.nodes {
        let set = node
            .client()
            .text(&["CONFIG", "SET", "notify-keyspace-events", "E$"]);
        assert_eq!(set, "+OK\r\n");
    }
    let proxy = Proxy::start(&config_over(&cluster, &[]));
    let mut publisher = ready_client(&proxy);
    let masters = masters_now(&cluster);
    let keys = a_key_on_each(&cluster, &masters);
    let mut subscriber = proxy.client();
    let events = b"__keyevent@0__:*";
    subscriber.send(&[b"PSUBSCRIBE", events]);
    let confirmed = "*3\r\n$10\r\npsubscribe\r\n$16\r\n__keyevent@0__:*\r\n:1\r\n";
    assert_eq!(
        String::from_utf8(subscriber.read_reply()).unwrap(),
        confirmed
    );
    // Every node has dispatched "hi" to its subscribers (the proxy's links
    // among them) before it runs the SET that follows: a duplicate would
    // come before that node's event.
    let mut direct: Vec<RawClient> = masters
        .iter()
        .map(|port| {
            let node = cluster.nodes.iter().find(|n| n.port == *port).unwrap();
            let mut client = node.client();
            client.cmd(&["SUBSCRIBE", "news"]);
            client
        })
        .collect();
    subscriber.send(&[b"SUBSCRIBE", b"news"]);
    let confirmed = "*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:2\r\n";
    assert_eq!(
        String::from_utf8(subscriber.read_reply()).unwrap(),
        confirmed
    );
    assert_eq!(publisher.text(&["PUBLISH", "news", "hi"]), ":2\r\n");
    let hi = "*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n";
    for client in &mut direct {
        assert_eq!(String::from_utf8(client.read_reply()).unwrap(), hi);
    }
    for key in &keys {
        assert_eq!(publisher.text(&["SET", key, "v"]), "+OK\r\n");
    }
    let mut heard: Vec<String> = (0..4)
        .map(|_| String::from_utf8(subscriber.read_reply()).unwrap())
        .collect();
    heard.sort();
    let mut expected: Vec<String> = keys.iter().map(|k| set_event(k)).collect();
    expected.push(hi.to_string());
    expected.sort();
    assert_eq!(heard, expected, "each event once, and the message once");
    // A shard channel: on its slot's master.
    subscriber.send(&[b"SSUBSCRIBE", b"{s}orders"]);
    let confirmed = "*3\r\n$10\r\nssubscribe\r\n$9\r\n{s}orders\r\n:1\r\n";
    assert_eq!(
        String::from_utf8(subscriber.read_reply()).unwrap(),
        confirmed
    );
    assert_eq!(publisher.text(&["SPUBLISH", "{s}orders", "o1"]), ":1\r\n");
    let o1 = "*3\r\n$8\r\nsmessage\r\n$9\r\n{s}orders\r\n$2\r\no1\r\n";
    assert_eq!(String::from_utf8(subscriber.read_reply()).unwrap(), o1);
    // A failover: the promoted master's events reach the subscriber.
    let old = master_of(&cluster, &keys[0]);
    let replica = cluster.replica_of(old.port);
    promote(&cluster, replica, &keys[0]);
    let linked = |node: &Redis| node.client().text(&["PUBSUB", "NUMPAT"]) == ":1\r\n";
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "a link on the new master",
        || linked(replica),
    );
    wait_until(
        READY_LIMIT,
        Duration::from_millis(20),
        "the old master's link gone",
        || !linked(old),
    );
    assert_eq!(publisher.text(&["SET", &keys[0], "w"]), "+OK\r\n");
    assert_eq!(
        String::from_utf8(subscriber.read_reply()).unwrap(),
        set_event(&keys[0])
    );
    // In RESP3 a subscriber through the proxy gets what Redis sends, byte
    // for byte: against direct RESP3 subscribers on a master, and on the
    // shard channel's master.
    let mut ours = proxy.client();
    ours.hello3();
    let mut theirs = master_of(&cluster, &keys[1]).client();
    theirs.hello3();
    let mut shard = master_of(&cluster, "{s}orders").client();
    shard.hello3();
    let steps: [(&[&[u8]], &[&str]); 2] = [
        (&[b"SUBSCRIBE", b"news"], &["PUBLISH", "news", "hi3"]),
        (
            &[b"SSUBSCRIBE", b"{s}orders"],
            &["SPUBLISH", "{s}orders", "o3"],
        ),
    ];
    for (subscribe, publish) in steps {
        let direct = if subscribe[0] == b"SUBSCRIBE" {
            &mut theirs
        } else {
            &mut shard
        };
        ours.send(subscribe);
        direct.send(subscribe);
        assert_eq!(ours.read_reply(), direct.read_reply(), "{publish:?}");
        assert!(publisher.text(publish).starts_with(':'));
        let got = String::from_utf8(ours.read_reply()).unwrap();
        assert_eq!(got, String::from_utf8(direct.read_reply()).unwrap());
        assert!(got.starts_with(">3\r\n"), "{got}");
    }
}

/// Client-side caching through a cluster backend: a tracking link on
/// every master, so a read is remembered and a change on its node, by
/// anyone, is told (before, every read through a cluster backend was
/// invalidated right behind its reply: nothing could be cached). After a
/// failover, what changed on the new master before its link came up was
/// not heard: the keys of its slots are invalidated, and only those (the
/// others stay cached; before, every client flushed its whole cache); a
/// BCAST client, whose keys the proxy does not list, flushes.
#[test]
fn tracking_clients_cache_what_they_read_from_a_cluster() {
    let cluster = Cluster::start(3, 1);
    let proxy = Proxy::start(&config_over(&cluster, &[]));
    let mut writer = ready_client(&proxy);
    let masters = masters_now(&cluster);
    let keys = a_key_on_each(&cluster, &masters);
    for key in &keys {
        assert_eq!(writer.text(&["SET", key, "v0"]), "+OK\r\n");
    }
    let mut reader = proxy.client();
    reader.hello3();
    assert_eq!(reader.text(&["CLIENT", "TRACKING", "on"]), "+OK\r\n");
    for key in &keys {
        assert_eq!(reader.text(&["GET", key]), "$2\r\nv0\r\n");
        assert_eq!(
            reader.text(&["PING"]),
            "+PONG\r\n",
            "{key}'s read remembered"
        );
    }
    for key in &keys {
        let node = master_of(&cluster, key);
        assert_eq!(node.client().text(&["SET", key, "v1"]), "+OK\r\n");
        let told = format!(
            ">2\r\n$10\r\ninvalidate\r\n*1\r\n${}\r\n{key}\r\n",
            key.len()
        );
        assert_eq!(String::from_utf8(reader.read_reply()).unwrap(), told);
    }
    // Read again, remembered again.
    for key in &keys {
        assert_eq!(reader.text(&["GET", key]), "$2\r\nv1\r\n");
    }
    assert_eq!(reader.text(&["PING"]), "+PONG\r\n");
    let mut bcast = proxy.client();
    bcast.hello3();
    assert_eq!(
        bcast.text(&["CLIENT", "TRACKING", "on", "BCAST"]),
        "+OK\r\n"
    );
    let old = master_of(&cluster, &keys[0]);
    let replica = cluster.replica_of(old.port);
    promote(&cluster, replica, &keys[0]);
    let told = |key: &str| {
        format!(
            ">2\r\n$10\r\ninvalidate\r\n*1\r\n${}\r\n{key}\r\n",
            key.len()
        )
    };
    assert_eq!(
        String::from_utf8(reader.read_reply()).unwrap(),
        told(&keys[0])
    );
    let flush = ">2\r\n$10\r\ninvalidate\r\n_\r\n";
    assert_eq!(String::from_utf8(bcast.read_reply()).unwrap(), flush);
    // The other masters' keys are still remembered: a change is told.
    assert_eq!(reader.text(&["PING"]), "+PONG\r\n", "nothing else told");
    for key in &keys[1..] {
        let node = master_of(&cluster, key);
        assert_eq!(node.client().text(&["SET", key, "v2"]), "+OK\r\n");
        assert_eq!(String::from_utf8(reader.read_reply()).unwrap(), told(key));
    }
}
