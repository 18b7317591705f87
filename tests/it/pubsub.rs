//! Pub/Sub through the proxy (3 backends) against a Redis directly:
//! confirmations and messages byte-compared in RESP2 and RESP3, each
//! message delivered once whether published through the proxy or on a
//! backend, keyspace notifications of every backend, subscribed-mode
//! rules, PUBSUB introspection, and a subscriber that lives through a
//! backend restart.

use std::time::Duration;

use crate::common::{
    proxy_over, try_wait_until, wait_until, Differential, Proxy, RawClient, Redis,
};

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Sends one command to both subscribers and compares every frame of the
/// reply (`frames` of them: one confirmation per channel).
fn same_frames(proxy: &mut RawClient, direct: &mut RawClient, args: &[&str], frames: usize) {
    let words: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    proxy.send(&words);
    direct.send(&words);
    for i in 0..frames {
        assert_eq!(
            text(proxy.read_reply()),
            text(direct.read_reply()),
            "frame {i} of the reply to {args:?}"
        );
    }
}

#[test]
fn messages_arrive_once_and_match_redis_in_resp2_and_resp3() {
    let Differential {
        servers,
        reference,
        proxy,
    } = Differential::start(3, "");
    for resp3 in [false, true] {
        let mut sub = proxy.client();
        let mut direct_sub = reference.client();
        if resp3 {
            sub.hello3();
            direct_sub.hello3();
        }
        same_frames(
            &mut sub,
            &mut direct_sub,
            &["SUBSCRIBE", "news", "sport"],
            2,
        );
        same_frames(&mut sub, &mut direct_sub, &["PSUBSCRIBE", "n*"], 1);
        if resp3 {
            // RESP3 clients run any command while subscribed.
            same_frames(&mut sub, &mut direct_sub, &["GET", "nokey"], 1);
        } else {
            same_frames(&mut sub, &mut direct_sub, &["GET", "nokey"], 1);
            same_frames(&mut sub, &mut direct_sub, &["PING"], 1);
            same_frames(&mut sub, &mut direct_sub, &["PING", "hi"], 1);
        }
        let mut publisher = proxy.client();
        let mut direct_pub = reference.client();
        for i in 0..20 {
            let channel = if i % 2 == 0 { "news" } else { "sport" };
            let message = format!("m{i}");
            // The proxy's subscriber link counts as Redis's subscriber does.
            assert_eq!(
                publisher.text(&["PUBLISH", channel, &message]),
                direct_pub.text(&["PUBLISH", channel, &message]),
            );
            let frames = if channel == "news" { 2 } else { 1 };
            for _ in 0..frames {
                assert_eq!(text(sub.read_reply()), text(direct_sub.read_reply()));
            }
        }
        // Published on a backend directly: still once.
        for server in &servers {
            server.client().text(&["PUBLISH", "sport", "direct"]);
            direct_pub.text(&["PUBLISH", "sport", "direct"]);
            assert_eq!(text(sub.read_reply()), text(direct_sub.read_reply()));
        }
        // (UNSUBSCRIBE with no channel lists them in the order of each
        // server's hash table: compared with names, in one order.)
        same_frames(
            &mut sub,
            &mut direct_sub,
            &["UNSUBSCRIBE", "sport", "news"],
            2,
        );
        same_frames(&mut sub, &mut direct_sub, &["UNSUBSCRIBE"], 1);
        same_frames(&mut sub, &mut direct_sub, &["UNSUBSCRIBE", "gone"], 1);
        same_frames(&mut sub, &mut direct_sub, &["PUNSUBSCRIBE"], 1);
        // Out of subscribed mode: commands run again, and nothing else came.
        same_frames(&mut sub, &mut direct_sub, &["PUBLISH", "news", "late"], 1);
        same_frames(&mut sub, &mut direct_sub, &["PING"], 1);
    }
}

#[test]
fn sharded_channels_live_on_their_owner() {
    let Differential {
        servers,
        reference,
        proxy,
    } = Differential::start(3, "");
    let mut sub = proxy.client();
    let mut direct_sub = reference.client();
    same_frames(&mut sub, &mut direct_sub, &["SSUBSCRIBE", "orders"], 1);
    let mut publisher = proxy.client();
    assert_eq!(publisher.text(&["SPUBLISH", "orders", "o1"]), ":1\r\n");
    reference.client().text(&["SPUBLISH", "orders", "o1"]);
    assert_eq!(text(sub.read_reply()), text(direct_sub.read_reply()));
    let owner = proxy.owner("orders");
    assert_eq!(
        servers[owner]
            .client()
            .text(&["PUBSUB", "SHARDNUMSUB", "orders"]),
        "*2\r\n$6\r\norders\r\n:1\r\n"
    );
    same_frames(&mut sub, &mut direct_sub, &["SUNSUBSCRIBE"], 1);
}

#[test]
fn pubsub_introspection_counts_each_subscriber_once() {
    let servers: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let proxy = proxy_over(&servers, "");
    let mut a = proxy.client();
    let mut b = proxy.client();
    a.send(&[b"SUBSCRIBE", b"c1", b"c2"]);
    a.read_reply();
    a.read_reply();
    b.send(&[b"SUBSCRIBE", b"c1"]);
    b.read_reply();
    b.send(&[b"PSUBSCRIBE", b"p*"]);
    b.read_reply();
    let mut client = proxy.client();
    let channels = client.text(&["PUBSUB", "CHANNELS"]);
    assert!(
        channels.starts_with("*2\r\n") && channels.contains("c1") && channels.contains("c2"),
        "{channels}"
    );
    assert_eq!(
        client.text(&["PUBSUB", "NUMSUB", "c1", "c2", "c3"]),
        "*6\r\n$2\r\nc1\r\n:2\r\n$2\r\nc2\r\n:1\r\n$2\r\nc3\r\n:0\r\n"
    );
    assert_eq!(client.text(&["PUBSUB", "NUMPAT"]), ":1\r\n");
    // CLIENT LIST shows subscribers as Redis does.
    let list = client.text(&["CLIENT", "LIST"]);
    assert!(
        list.contains(" flags=P db=0 sub=2 psub=0 ssub=0 "),
        "{list}"
    );
    assert!(
        list.contains(" flags=P db=0 sub=1 psub=1 ssub=0 "),
        "{list}"
    );
    assert!(
        list.contains(" flags=N db=0 sub=0 psub=0 ssub=0 "),
        "{list}"
    );
    assert_eq!(
        client.text(&["PUBSUB", "NOPE"]),
        "-ERR unknown subcommand 'NOPE'. Try PUBSUB HELP.\r\n"
    );
}

#[test]
fn keyspace_notifications_of_every_backend_arrive_once() {
    let servers: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let refused = proxy_over(&servers, "");
    assert_eq!(
        refused.client().text(&["CONFIG", "SET", "notify-keyspace-events", "Ex"]),
        "-ERR CONFIG SET notify-keyspace-events is refused by session-proxy: set [keys] allow_keyspace_config = true to apply it to every backend\r\n"
    );
    drop(refused);
    // Allowed even with prefixes set (the sessions' keys are under them).
    let proxy = proxy_over(
        &servers,
        "[keys]\nprefixes = [\"session:\"]\nallow_keyspace_config = true\n",
    );
    let mut client = proxy.client();
    assert_eq!(
        client.text(&["CONFIG", "SET", "notify-keyspace-events", "Ex"]),
        "+OK\r\n"
    );
    for server in &servers {
        let got = server
            .client()
            .text(&["CONFIG", "GET", "notify-keyspace-events"]);
        assert!(got.contains("xE") || got.contains("Ex"), "{got}");
    }
    assert!(client
        .text(&["CONFIG", "GET", "notify-keyspace-events"])
        .contains("notify-keyspace-events"));
    let mut sub = proxy.client();
    sub.send(&[b"PSUBSCRIBE", b"__keyevent@*__:expired"]);
    assert!(text(sub.read_reply()).contains("psubscribe"));
    // Sessions on every backend expire; each expiry is told once. A key
    // outside the prefixes expires too, and is not told.
    servers[0]
        .client()
        .text(&["SET", "other:key", "v", "PX", "20"]);
    wait_until(
        Duration::from_secs(10),
        Duration::from_millis(10),
        "expired",
        || servers[0].client().text(&["EXISTS", "other:key"]) == ":0\r\n",
    );
    let keys: Vec<String> = (0..3).map(|b| proxy.key_on(b, "session:")).collect();
    for key in &keys {
        assert_eq!(client.text(&["SET", key, "v", "PX", "30"]), "+OK\r\n");
    }
    let mut seen: Vec<String> = Vec::new();
    while seen.len() < keys.len() {
        let event = text(sub.read_reply());
        assert!(
            event.contains("pmessage") && event.contains(":expired"),
            "{event}"
        );
        let key = keys
            .iter()
            .find(|k| event.ends_with(&format!("{k}\r\n")))
            .expect("one of ours")
            .clone();
        assert!(!seen.contains(&key), "{key} expired twice");
        seen.push(key);
    }
    // Nothing more: the next frame is the reply to PING.
    sub.send(&[b"PING"]);
    assert_eq!(text(sub.read_reply()), "*2\r\n$4\r\npong\r\n$0\r\n\r\n");
}

#[test]
fn a_subscriber_lives_through_a_backend_restart() {
    let mut servers: Vec<Redis> = (0..2).map(|_| Redis::start()).collect();
    let proxy = proxy_over(&servers, "");
    let mut sub = proxy.client();
    sub.send(&[b"SUBSCRIBE", b"events"]);
    assert!(text(sub.read_reply()).contains("subscribe"));
    let port: u16 = servers[1]
        .address()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    servers.pop();
    let restarted = Redis::start_on(port, &[]);
    // Once the link is back, a message published there arrives.
    wait_until(
        Duration::from_secs(20),
        Duration::from_millis(50),
        "resubscribed",
        || {
            restarted
                .client()
                .text(&["PUBSUB", "NUMSUB", "events"])
                .ends_with(":1\r\n")
        },
    );
    restarted.client().text(&["PUBLISH", "events", "after"]);
    assert_eq!(
        text(sub.read_reply()),
        "*3\r\n$7\r\nmessage\r\n$6\r\nevents\r\n$5\r\nafter\r\n"
    );
    // A subscriber that goes away gives its links back.
    drop(sub);
    assert!(try_wait_until(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            restarted
                .client()
                .text(&["PUBSUB", "NUMSUB", "events"])
                .ends_with(":0\r\n")
                && servers[0]
                    .client()
                    .text(&["PUBSUB", "NUMSUB", "events"])
                    .ends_with(":0\r\n")
        }
    ));
}

#[test]
fn a_reload_that_adds_a_backend_reaches_subscribers_at_once() {
    let servers: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let toml = |n: usize| {
        servers[..n]
            .iter()
            .enumerate()
            .map(|(i, r)| {
                format!(
                    "[[backends]]\nid = \"b{i}\"\naddress = \"{}\"\n",
                    r.address()
                )
            })
            .collect::<String>()
    };
    let proxy = crate::common::Running::start(&toml(2));
    let mut sub = proxy.client();
    sub.send(&[b"SUBSCRIBE", b"news"]);
    assert!(text(sub.read_reply()).contains("subscribe"));
    proxy.rewrite(&toml(3));
    proxy.signal("HUP");
    wait_until(
        Duration::from_secs(20),
        Duration::from_millis(20),
        "reload",
        || proxy.generation() == 1,
    );
    // Without a command from the subscriber, its link reaches the new one.
    wait_until(
        Duration::from_secs(20),
        Duration::from_millis(20),
        "subscribed there",
        || {
            servers[2]
                .client()
                .text(&["PUBSUB", "NUMSUB", "news"])
                .ends_with(":1\r\n")
        },
    );
    servers[2].client().text(&["PUBLISH", "news", "new"]);
    assert_eq!(
        text(sub.read_reply()),
        "*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$3\r\nnew\r\n"
    );
    // Through the proxy, once.
    assert_eq!(proxy.client().text(&["PUBLISH", "news", "once"]), ":1\r\n");
    assert_eq!(
        text(sub.read_reply()),
        "*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$4\r\nonce\r\n"
    );
    sub.send(&[b"PING"]);
    assert_eq!(text(sub.read_reply()), "*2\r\n$4\r\npong\r\n$0\r\n\r\n");
}

#[test]
fn subscriptions_per_client_are_bounded_by_the_config() {
    let servers: Vec<Redis> = (0..2).map(|_| Redis::start()).collect();
    let proxy = proxy_over(&servers, "[limits]\nmax_subscriptions = 3\n");
    let mut sub = proxy.client();
    sub.send(&[b"SUBSCRIBE", b"a", b"b"]);
    sub.read_reply();
    sub.read_reply();
    sub.send(&[b"PSUBSCRIBE", b"c*", b"d*"]);
    assert_eq!(
        text(sub.read_reply()),
        "-ERR too many subscriptions for one client: at most 3 ([limits] max_subscriptions)\r\n"
    );
    // Nothing of the refused command was subscribed; one more fits.
    sub.send(&[b"PSUBSCRIBE", b"c*"]);
    assert_eq!(
        text(sub.read_reply()),
        "*3\r\n$10\r\npsubscribe\r\n$2\r\nc*\r\n:3\r\n"
    );
}

#[test]
fn a_subscriber_follows_a_sentinel_failover() {
    let group = crate::common::Group::start("pubsub-group", 1, 1000);
    let old = group.master_address().expect("a master");
    let proxy = Proxy::start(&format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n[[backends]]\nid = \"a\"\nsentinel = {}\n",
        group.sentinel_toml()
    ));
    crate::common::wait_proxy_master(&proxy, 0, &old);
    let mut sub = proxy.client();
    sub.send(&[b"SUBSCRIBE", b"events"]);
    assert!(text(sub.read_reply()).contains("subscribe"));
    group.failover();
    let new = group.wait_new_master(&old);
    crate::common::wait_proxy_master(&proxy, 0, &new);
    // The link moved to the new master (the old one, now a replica, still
    // answers, so only following the switch gets it there).
    let master = group.node(&new).expect("the new master");
    wait_until(
        Duration::from_secs(30),
        Duration::from_millis(20),
        "link on the new master",
        || {
            master
                .client()
                .text(&["PUBSUB", "NUMSUB", "events"])
                .ends_with(":1\r\n")
        },
    );
    assert_eq!(
        proxy.client().text(&["PUBLISH", "events", "after"]),
        ":1\r\n"
    );
    assert_eq!(
        text(sub.read_reply()),
        "*3\r\n$7\r\nmessage\r\n$6\r\nevents\r\n$5\r\nafter\r\n"
    );
}

/// A subscriber through the proxy to a backend given by host name (a
/// managed service's primary endpoint): the name moves to another server,
/// and the subscriber's link follows it as the pool's connections do
/// (`dns_refresh_s`), subscribing there, so what is published there
/// reaches the client. Before, the link stayed on the old server for good:
/// after a managed failover, on a replica that fires no `expired` events,
/// or on a primary gone silent.
#[test]
fn a_subscriber_follows_its_backends_host_name() {
    let port = crate::common::free_port();
    let a = Redis::start_at("127.0.0.1", port, &[]);
    let b = Redis::start_at("127.0.0.2", port, &[]);
    let hosts = crate::common::HostsFile::naming("events.redis.test", "127.0.0.1");
    let proxy = Proxy::start(&hosts.proxy_config(port, "dns_refresh_s = 1\n"));
    let mut subscriber = proxy.client();
    assert_eq!(
        text(subscriber.cmd(&["SUBSCRIBE", "news"])),
        "*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
    );
    let subscribed = |redis: &Redis| redis.client().text(&["PUBSUB", "NUMSUB", "news"]);
    assert_eq!(subscribed(&a), "*2\r\n$4\r\nnews\r\n:1\r\n");
    hosts.point("127.0.0.2");
    wait_until(
        crate::common::READY_LIMIT,
        Duration::from_millis(50),
        "the link to follow the name",
        || subscribed(&b) == "*2\r\n$4\r\nnews\r\n:1\r\n",
    );
    assert_eq!(subscribed(&a), "*2\r\n$4\r\nnews\r\n:0\r\n");
    assert_eq!(b.client().text(&["PUBLISH", "news", "moved"]), ":1\r\n");
    assert_eq!(
        text(subscriber.read_reply()),
        "*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nmoved\r\n"
    );
}
