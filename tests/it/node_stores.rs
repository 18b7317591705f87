//! Node session stores, unmodified: connect-redis 7 (express-session's
//! store) with node-redis 4 and with ioredis 5, every store call (set, get,
//! touch, all, length, ids, destroy, clear: SCAN and MGET included) through
//! the proxy over three backends and directly on Redis, the outcomes
//! compared; connect-redis 9 behind express-session with node-redis 5 in
//! RESP2 and RESP3, node-redis 5 hashes in RESP3, and ioredis's scripts,
//! pipelines and scanStream, the same way. The packages come from
//! `scripts/setup-node.sh` (target/node).

use std::path::Path;
use std::process::Command;

use crate::common::{proxy_over, run_checked, Redis};

fn run(port: u16, kind: &str) -> String {
    run_script("connect_redis.cjs", &[port.to_string(), kind.to_string()])
}

pub fn run_script(script: &str, args: &[String]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let modules = root.join("target/node/node_modules");
    assert!(
        modules.exists(),
        "{} is missing: run scripts/setup-node.sh (the README's test command does)",
        modules.display()
    );
    run_checked(
        Command::new("node")
            .arg(root.join("tests/node").join(script))
            .args(args)
            .env("NODE_PATH", &modules),
        &format!("{script} {args:?} (node: Debian package nodejs)"),
    )
}

#[test]
fn connect_redis_behaves_the_same_through_the_proxy_as_on_redis() {
    let servers: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let proxy = proxy_over(&servers, "[keys]\nprefixes = [\"sess:\"]\n");
    let direct = Redis::start();
    let direct_port = direct.port;
    for kind in ["redis", "ioredis"] {
        let ours = run(proxy.port, kind);
        let theirs = run(direct_port, kind);
        assert_eq!(ours, theirs, "{kind}");
        assert!(ours.contains("\"length\":40"), "{kind}: {ours}");
        assert!(ours.contains("\"afterClear\":0"), "{kind}: {ours}");
        println!("{kind}: the same outcome through the proxy as on Redis");
        // The sessions were spread over the backends, and are all gone.
        for server in &servers {
            assert_eq!(server.client().text(&["DBSIZE"]), ":0\r\n");
        }
    }
}

/// node-redis 5 with `RESP: 3` on a session kept as a hash: objects and
/// number scores as on Redis (RESP2's shapes would read as wrong data).
#[test]
fn node_redis_5_resp3_behaves_the_same_through_the_proxy() {
    let servers: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let proxy = proxy_over(&servers, "");
    let direct = Redis::start();
    let direct_port = direct.port.to_string();
    let ours = run_script("resp3_hash.cjs", &[proxy.port.to_string()]);
    let theirs = run_script("resp3_hash.cjs", &[direct_port]);
    assert_eq!(ours, theirs);
    for expected in [
        "\"hGetAllIsObject\":true",
        "[\"page:a\",1.5,\"number\"]",
        "\"zScore\":[2.25,\"number\"]",
    ] {
        assert!(ours.contains(expected), "{expected}: {ours}");
    }
}

/// connect-redis 9 behind express-session 1.19 on a small HTTP site, with
/// node-redis 5 speaking RESP2 and RESP3: login, views, regenerate, the
/// store's listing, logout, clear.
#[test]
fn connect_redis_9_with_node_redis_5_behaves_the_same_through_the_proxy() {
    let servers: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let proxy = proxy_over(&servers, "[keys]\nprefixes = [\"sess9:\"]\n");
    let direct = Redis::start();
    for resp in ["2", "3"] {
        let args = |port: u16| vec![port.to_string(), resp.to_string()];
        let ours = run_script("connect_redis9.cjs", &args(proxy.port));
        let theirs = run_script("connect_redis9.cjs", &args(direct.port));
        assert_eq!(ours, theirs, "RESP{resp}");
        for expected in [
            r##"["/view",{"user":"alice","views":3},"#1"]"##,
            r#"{"oldStored":null,"newStored":3,"ttl":true}"#,
            r#""length":2"#,
            r#"{"afterLogout":1},{"afterClear":0}"#,
        ] {
            assert!(ours.contains(expected), "RESP{resp}: {expected} in {ours}");
        }
        println!("RESP{resp}: {ours}");
    }
}

/// ioredis 5 beyond get/set: a hash session, a `defineCommand` script
/// (EVALSHA, then EVAL; named by SHA1 since prefixes are set), a pipeline,
/// a MULTI on hash-tagged keys, scanStream.
#[test]
fn ioredis_hashes_scripts_and_scan_stream_behave_the_same_through_the_proxy() {
    let servers: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let proxy = proxy_over(
        &servers,
        "[keys]\nprefixes = [\"iosess:\"]\nhash_tag = \"{}\"\n\
         scripts = [\"8de21d54778261a4cbdb45d89cc85046731bd655\"]\n",
    );
    let direct = Redis::start();
    let ours = run_script("ioredis_features.cjs", &[proxy.port.to_string()]);
    let theirs = run_script("ioredis_features.cjs", &[direct.port.to_string()]);
    assert_eq!(ours, theirs);
    for expected in [
        r#""hgetall":{"user":"alice","views":"1","theme":"dark"}"#,
        r#""touch":[2,3]"#,
        r#""multi":[[null,1],[null,2],[null,1]]"#,
        r#""scanStream":60"#,
    ] {
        assert!(ours.contains(expected), "{expected} in {ours}");
    }
    println!("{ours}");
}
