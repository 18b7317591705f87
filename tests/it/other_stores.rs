//! More session stores, unmodified, each through the proxy over three
//! backends and directly on Redis, what each request saw compared:
//! Rack::Session::Redis (Debian's redis-rack with ruby-redis 4), Predis
//! 1.1's PHP session handler, Symfony 5.4's RedisSessionHandler and Laravel
//! 8's session, cache and lock (phpredis and Predis each), Go's
//! gorilla/sessions with redistore and go-redis v5 (built from Debian's
//! packaged sources), and Catalyst's Redis session store (Perl).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{proxy_over, run_checked, Redis};

/// Runs `program` on a script of tests/ with the port and `args`.
fn run(program: &str, script: &str, port: u16, args: &[&str]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    run_checked(
        Command::new(program)
            .arg(root.join("tests").join(script))
            .arg(port.to_string())
            .args(args),
        &format!("{script} {args:?} on {port}"),
    )
}

/// Every one of `expected` is in what the store's program printed.
fn expect_all(printed: &str, expected: &[&str], what: &str) {
    for line in expected {
        assert!(printed.contains(line), "{what}: {line} in {printed}");
    }
}

/// Runs one store's program through the proxy and directly on Redis; both
/// outcomes must be the same. Returns the proxy's.
fn same_both_ways(proxy_port: u16, direct_port: u16, run: impl Fn(u16) -> String) -> String {
    let ours = run(proxy_port);
    let theirs = run(direct_port);
    assert_eq!(ours, theirs, "through the proxy, then directly on Redis");
    ours
}

/// Each backend holds some of the keys: the store's keys were spread.
fn spread(servers: &[Redis], db: &str) {
    let holding = servers
        .iter()
        .filter(|s| {
            let mut c = s.client();
            c.text(&["SELECT", db]);
            c.text(&["DBSIZE"]) != ":0\r\n"
        })
        .count();
    assert!(holding >= 2, "the keys were spread over the backends");
}

#[test]
fn rack_and_predis_sessions_behave_the_same_through_the_proxy() {
    let servers: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let proxy = proxy_over(
        &servers,
        "[keys]\nprefixes = [\"rack:session:\", \"predis:\"]\n",
    );
    let direct = Redis::start();
    let direct_port = direct.port;
    for (program, script) in [
        ("ruby", "ruby/rack_session.rb"),
        ("php", "php/predis_session.php"),
    ] {
        let ours = run(program, script, proxy.port, &[]);
        let theirs = run(program, script, direct_port, &[]);
        assert_eq!(ours, theirs, "{script}");
        assert!(ours.contains("\"count\":2"), "{script}: {ours}");
        println!("{script}: {ours}");
    }
}

/// Symfony 5.4's RedisSessionHandler through NativeSessionStorage, with
/// phpredis and with Predis: start, load, migrate(true), strict mode,
/// invalidate. Symfony's default prefix has no colon: `sf_s`.
#[test]
fn symfony_sessions_behave_the_same_through_the_proxy() {
    let servers: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let proxy = proxy_over(&servers, "[keys]\nprefixes = [\"sf_s\"]\n");
    let direct = Redis::start();
    for client in ["phpredis", "predis"] {
        let ours = same_both_ways(proxy.port, direct.port, |port| {
            run("php", "php/symfony_session.php", port, &[client])
        });
        expect_all(
            &ours,
            &[
                r##"{"step":"migrate","id":"#1","user":"alice","count":2"##,
                r#"{"old id kept":0,"new id stored":1}"#,
                r#"{"attacker id stored":0}"#,
                r#"{"invalidated id stored":0}"#,
            ],
            client,
        );
        println!("symfony with {client}: {ours}");
    }
}

/// Laravel 8's redis session driver, cache and cache lock as its service
/// providers put them together, with phpredis and with Predis. With
/// prefixes set, the lock's release script and the cache's `add` script
/// are named by SHA1; `putMany` is one MULTI over keys of several backends
/// (split per backend by default); `flush` needs allow_flush.
#[test]
fn laravel_session_cache_and_locks_behave_the_same_through_the_proxy() {
    let servers: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let proxy = proxy_over(
        &servers,
        "[keys]\nprefixes = [\"laravel_database_\"]\nallow_flush = true\n\
         scripts = [\"647c65a442733a1aa440f99908d249d13b4d6c4a\", \"a08c9c69b7c07ae2485190873b90d128a23e502d\"]\n",
    );
    let direct = Redis::start();
    for client in ["phpredis", "predis"] {
        let ours = same_both_ways(proxy.port, direct.port, |port| {
            run("php", "php/laravel_session.php", port, &[client])
        });
        expect_all(
            &ours,
            &[
                r##"["regenerate","#1","alice",2]"##,
                r#"{"old id stored":false,"new id stored":true}"#,
                r#"{"putMany":true}"#,
                r#""many":{"a":"one","b":"two","c":"three","d":{"x":4},"missing":null}"#,
                r#"{"first get":true,"second get":false}"#,
                r#"{"release by other":false,"still held":true}"#,
                r#"{"release by owner":true,"taken again":true}"#,
                r#"{"flush":true,"b after flush":null}"#,
            ],
            client,
        );
        println!("laravel with {client}: {ours}");
    }
}

/// The Go program, built once in GOPATH mode from Debian's packaged
/// sources (no module download): target/go/stores.
fn go_stores() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = root.join("target/go");
    let binary = out.join("stores");
    run_checked(
        Command::new("go")
            .args(["build", "-o"])
            .arg(&binary)
            .arg("./tests/go/stores")
            .current_dir(root)
            .env("GOPATH", "/usr/share/gocode")
            .env("GO111MODULE", "off")
            .env("GOFLAGS", "")
            .env("GOCACHE", out.join("cache")),
        "go build ./tests/go/stores",
    );
    binary
}

/// gorilla/sessions with boj/redistore (redigo) in db 0 and db 1, and
/// go-redis v5: a hash session, a MULTI over keys of several backends, a
/// WATCH that loses a race and one that wins, SCAN.
#[test]
fn go_stores_behave_the_same_through_the_proxy() {
    let binary = go_stores();
    let servers: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let proxy = proxy_over(
        &servers,
        "[keys]\nprefixes = [\"gosession_\", \"gosession:\"]\n",
    );
    let direct = Redis::start();
    let ours = same_both_ways(proxy.port, direct.port, |port| {
        run_checked(
            Command::new(&binary).arg(port.to_string()),
            &format!("go stores on {port}"),
        )
    });
    expect_all(
        &ours,
        &[
            "redistore db1 regenerated: new=true user=alice count=2",
            "redistore db1 old-id: new=true user=<nil>",
            "redistore db0 expired: exists=0",
            "redistore db0 after-logout: new=true user=<nil>",
            "go-redis tx: 3",
            "go-redis watch lost race: true",
            "go-redis watched value: 101",
            "go-redis scan distinct: 50",
        ],
        "go",
    );
    spread(&servers, "0");
    println!("{ours}");
}

/// Catalyst::Plugin::Session::Store::Redis in a Catalyst app driven by
/// Catalyst::Test, db 1: create, count, change_session_id, flash, logout,
/// and Redis::Fast on the same keys. Its keys: `session:`, `expires:`,
/// `flash:`.
#[test]
fn catalyst_sessions_behave_the_same_through_the_proxy() {
    let servers: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let proxy = proxy_over(
        &servers,
        "[keys]\nprefixes = [\"session:\", \"expires:\", \"flash:\"]\n",
    );
    let direct = Redis::start();
    let ours = same_both_ways(proxy.port, direct.port, |port| {
        run("perl", "perl/catalyst_session.pl", port, &[])
    });
    expect_all(
        &ours,
        &[
            "change: user=alice count=2 (session #2)",
            "old id's keys: 0, new id's keys: 2",
            "flash_get: flash=saved",
            "keys after logout: 0",
            "stored by Catalyst, read by Redis::Fast: yes",
        ],
        "catalyst",
    );
    println!("{ours}");
}
