//! redis-rs (the `redis` crate, sync API), unmodified, through the proxy
//! over three backends and directly on Redis: a session's round trip
//! (SETEX, GET, EXISTS, EXPIRE, DEL), a hash session, and `pipe().atomic()`
//! (MULTI ... EXEC) on keys of one backend, results compared; with
//! `split_transactions = false` an atomic pipeline over two backends is
//! refused with CROSSSLOT, nothing of it run.

use crate::common::{proxy_over, Redis};
use redis::Commands;

/// The same steps on one connection; what each gave, as text.
fn steps(con: &mut redis::Connection, a: &str, b: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let _: () = con.set_ex(a, "payload", 300).unwrap();
    seen.push(format!("{:?}", con.get::<_, Option<String>>(a)));
    seen.push(format!("{:?}", con.exists::<_, bool>(a)));
    seen.push(format!("{:?}", con.expire::<_, bool>(a, 600)));
    seen.push(format!("{:?}", con.ttl::<_, i64>(a)));
    let _: () = con
        .hset_multiple(b, &[("user", "alice"), ("count", "1")])
        .unwrap();
    seen.push(format!("{:?}", con.hincr::<_, _, _, i64>(b, "count", 2)));
    let mut all: Vec<(String, String)> = con.hgetall(b).unwrap();
    all.sort();
    seen.push(format!("{all:?}"));
    // A transaction on the keys of one backend.
    let result: redis::RedisResult<(Option<String>, i64)> = redis::pipe()
        .atomic()
        .set(a, "again")
        .ignore()
        .get(a)
        .hlen(b)
        .query(con);
    seen.push(format!("{result:?}"));
    seen.push(format!("{:?}", con.del::<_, i64>(&[a, b])));
    seen.push(format!("{:?}", con.get::<_, Option<String>>(a)));
    seen
}

#[test]
fn redis_rs_sessions_and_atomic_pipelines_match_redis() {
    let servers: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let direct = Redis::start();
    let proxy = proxy_over(&servers, "[keys]\nsplit_transactions = false\n");
    // Two keys on one backend, so the transaction may run there.
    let a = proxy.key_on(1, "session:");
    let b = (0..)
        .map(|i| format!("hash{i}:"))
        .map(|p| proxy.key_on(1, &p))
        .find(|k| *k != a)
        .unwrap();
    let ours = redis::Client::open(format!("redis://127.0.0.1:{}/", proxy.port)).unwrap();
    let theirs = redis::Client::open(format!("redis://{}/", direct.address())).unwrap();
    let through = steps(&mut ours.get_connection().unwrap(), &a, &b);
    let plain = steps(&mut theirs.get_connection().unwrap(), &a, &b);
    assert_eq!(through, plain);
    println!("{through:?}");

    // Keys on two backends, not split: refused as Redis Cluster refuses them.
    let (x, y) = (proxy.key_on(0, "x:"), proxy.key_on(2, "y:"));
    let mut con = ours.get_connection().unwrap();
    let refused: redis::RedisResult<(String, String)> = redis::pipe()
        .atomic()
        .set(&x, "1")
        .ignore()
        .set(&y, "2")
        .ignore()
        .get(&x)
        .get(&y)
        .query(&mut con);
    let error = refused.expect_err("a transaction over two backends");
    assert_eq!(error.kind(), redis::ErrorKind::CrossSlot, "{error}");
    assert_eq!(con.exists::<_, i64>(&[&x, &y]).unwrap(), 0);
}
