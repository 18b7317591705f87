//! SCAN, KEYS and RANDOMKEY over several backends: a full SCAN sees every
//! key that is there all along and none deleted before it started, with
//! keys added and deleted during the iteration; MATCH, COUNT and TYPE pass
//! on; KEYS merges; with prefixes set, none of them shows another key.

use std::collections::HashSet;

use crate::common::{proxy_over, RawClient, Redis};

/// The keys of an array reply, as strings.
fn keys_of(reply: &str) -> Vec<String> {
    let mut lines = reply.split("\r\n");
    let mut out = Vec::new();
    while let Some(line) = lines.next() {
        if line.starts_with('$') && line != "$-1" {
            out.push(lines.next().unwrap_or_default().to_string());
        }
    }
    out
}

/// One SCAN call: the next cursor and the keys.
fn scan(client: &mut RawClient, args: &[&str]) -> (String, Vec<String>) {
    let reply = client.text(args);
    assert!(reply.starts_with("*2\r\n$"), "{reply}");
    let mut keys = keys_of(&reply);
    let cursor = keys.remove(0);
    (cursor, keys)
}

#[test]
fn a_full_scan_keeps_redis_guarantees_while_keys_come_and_go() {
    let servers: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let proxy = proxy_over(&servers, "");
    let mut client = proxy.client();
    for i in 0..600 {
        client.text(&["SET", &format!("keep:{i}"), "v"]);
    }
    for i in 0..200 {
        client.text(&["SET", &format!("gone:{i}"), "v"]);
        client.text(&["SET", &format!("late:{i}"), "v"]);
    }
    for i in 0..200 {
        client.text(&["DEL", &format!("gone:{i}")]);
    }
    let mut seen = HashSet::new();
    let mut cursor = "0".to_string();
    let mut steps = 0;
    loop {
        let (next, keys) = scan(&mut client, &["SCAN", &cursor, "COUNT", "50"]);
        seen.extend(keys);
        // Keys come and go meanwhile.
        client.text(&["SET", &format!("new:{steps}"), "v"]);
        client.text(&["DEL", &format!("late:{steps}")]);
        steps += 1;
        assert!(steps < 10_000, "SCAN does not end");
        if next == "0" {
            break;
        }
        cursor = next;
    }
    for i in 0..600 {
        assert!(seen.contains(&format!("keep:{i}")), "keep:{i} not returned");
    }
    assert!(!seen.iter().any(|k| k.starts_with("gone:")));
    println!(
        "{steps} SCAN steps over 3 backends, {} keys seen",
        seen.len()
    );
    assert!(steps > 3);
}

#[test]
fn match_type_keys_and_randomkey_answer_like_one_redis() {
    let servers: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let proxy = proxy_over(&servers, "");
    let direct_redis = Redis::start();
    let mut direct = direct_redis.client();
    let mut client = proxy.client();
    // Empty: the same answers.
    for args in [
        vec!["RANDOMKEY"],
        vec!["KEYS", "*"],
        vec!["SCAN", "abc"],
        vec!["SCAN"],
    ] {
        assert_eq!(client.text(&args), direct.text(&args), "{args:?}");
    }
    for i in 0..300 {
        for c in [&mut client, &mut direct] {
            c.text(&["SET", &format!("s:{i}"), "v"]);
        }
    }
    // A backend's data seen whole: KEYS gives the same set as Redis.
    for pattern in ["*", "s:1*", "nothing*"] {
        let mut ours = keys_of(&client.text(&["KEYS", pattern]));
        let mut theirs = keys_of(&direct.text(&["KEYS", pattern]));
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs, "KEYS {pattern}");
    }
    // MATCH and TYPE are passed on.
    let full = |client: &mut RawClient, extra: &[&str]| {
        let mut seen = Vec::new();
        let mut cursor = "0".to_string();
        loop {
            let mut args = vec!["SCAN", cursor.as_str()];
            args.extend_from_slice(extra);
            let (next, keys) = scan(client, &args);
            seen.extend(keys);
            if next == "0" {
                break;
            }
            cursor = next;
        }
        seen.sort();
        seen.dedup();
        seen
    };
    assert_eq!(
        full(&mut client, &["MATCH", "s:2?", "COUNT", "7"]),
        full(&mut direct, &["MATCH", "s:2?", "COUNT", "7"])
    );
    assert!(full(&mut client, &["TYPE", "hash"]).is_empty());
    assert_eq!(full(&mut client, &["TYPE", "string"]).len(), 300);
    let random = keys_of(&client.text(&["RANDOMKEY"]));
    assert!(random[0].starts_with("s:"), "{random:?}");
    // A cursor naming no backend is Redis's invalid cursor.
    assert_eq!(client.text(&["SCAN", "65535"]), "-ERR invalid cursor\r\n");
}

#[test]
fn with_prefixes_set_no_other_key_is_shown() {
    let servers: Vec<Redis> = (0..2).map(|_| Redis::start()).collect();
    for (i, server) in servers.iter().enumerate() {
        let mut direct = server.client();
        for n in 0..50 {
            direct.text(&["SET", &format!("s:{i}:{n}"), "v"]);
            direct.text(&["SET", &format!("other:{i}:{n}"), "v"]);
        }
    }
    let proxy = proxy_over(&servers, "[keys]\nprefixes = [\"s:\"]");
    let mut client = proxy.client();
    let keys = keys_of(&client.text(&["KEYS", "*"]));
    assert_eq!(keys.len(), 100);
    assert!(keys.iter().all(|k| k.starts_with("s:")));
    let mut cursor = "0".to_string();
    let mut seen = 0;
    loop {
        let (next, keys) = scan(&mut client, &["SCAN", &cursor, "COUNT", "20"]);
        assert!(keys.iter().all(|k| k.starts_with("s:")), "{keys:?}");
        seen += keys.len();
        if next == "0" {
            break;
        }
        cursor = next;
    }
    assert!(seen >= 100);
    for _ in 0..50 {
        let reply = client.text(&["RANDOMKEY"]);
        assert!(
            reply == "$-1\r\n" || keys_of(&reply)[0].starts_with("s:"),
            "{reply}"
        );
    }
}

fn dbsize(redis: &Redis, db: &str) -> String {
    let mut client = redis.client();
    client.text(&["SELECT", db]);
    client.text(&["DBSIZE"])
}

#[test]
fn flush_is_refused_unless_allowed_and_then_keeps_to_the_prefixes() {
    let servers: Vec<Redis> = (0..2).map(|_| Redis::start()).collect();
    let fill = || {
        for server in &servers {
            let mut direct = server.client();
            for n in 0..30 {
                direct.text(&["SET", &format!("s:{n}"), "v"]);
                direct.text(&["SET", &format!("a*b:{n}"), "v"]);
                direct.text(&["SET", &format!("other:{n}"), "v"]);
            }
            direct.text(&["SELECT", "2"]);
            direct.text(&["SET", "s:in-db-2", "v"]);
        }
    };
    fill();
    // By default: refused, naming the setting; nothing deleted.
    let proxy = proxy_over(&servers, "");
    let mut client = proxy.client();
    for command in ["FLUSHDB", "FLUSHALL"] {
        let refused = client.text(&[command]);
        assert!(refused.contains("[keys] allow_flush"), "{refused}");
    }
    assert_eq!(dbsize(&servers[0], "0"), ":90\r\n");
    drop(proxy);

    // Allowed, with prefixes: only the keys under them, in the client's
    // database (FLUSHDB) or in all (FLUSHALL).
    let proxy = proxy_over(
        &servers,
        "[keys]\nprefixes = [\"s:\", \"a*b:\"]\nallow_flush = true",
    );
    let mut client = proxy.client();
    assert_eq!(client.text(&["FLUSHDB", "NOW"]), "-ERR syntax error\r\n");
    assert_eq!(client.text(&["FLUSHDB", "ASYNC"]), "+OK\r\n");
    for server in &servers {
        assert_eq!(dbsize(server, "0"), ":30\r\n");
        assert_eq!(dbsize(server, "2"), ":1\r\n");
        assert_eq!(server.client().text(&["EXISTS", "other:3"]), ":1\r\n");
    }
    assert_eq!(client.text(&["FLUSHALL"]), "+OK\r\n");
    for server in &servers {
        assert_eq!(dbsize(server, "2"), ":0\r\n");
        assert_eq!(dbsize(server, "0"), ":30\r\n");
    }
    drop(proxy);

    // Allowed, no prefixes: the command runs on every backend.
    fill();
    let proxy = proxy_over(&servers, "[keys]\nallow_flush = true");
    let mut client = proxy.client();
    assert_eq!(client.text(&["FLUSHDB"]), "+OK\r\n");
    for server in &servers {
        assert_eq!(dbsize(server, "0"), ":0\r\n");
        assert_eq!(dbsize(server, "2"), ":1\r\n");
    }
    assert_eq!(client.text(&["FLUSHALL", "SYNC"]), "+OK\r\n");
    for server in &servers {
        assert_eq!(dbsize(server, "2"), ":0\r\n");
    }
}
