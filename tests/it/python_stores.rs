//! Python session stores beyond django-redis-sessions, unmodified:
//! django-redis 5.4 as Django's cache (set_many, get_many, keys, iter_keys,
//! delete_pattern, incr, ttl, clear) with Django's cache and cached_db
//! session engines on it, Flask-Session 0.8 in a Flask app and
//! aiohttp-session 2.12 in an aiohttp app, through the
//! proxy over three backends (key prefix `session`, FLUSHDB allowed, so
//! django-redis's clear sweeps only its own keys; transactions split over
//! backends, as set_many's MULTI spans them) and directly on Redis, the
//! outcomes compared. The Python side is tests/python/cache_stores.py.

use crate::common::{proxy_over, run_script, Redis};

#[test]
fn django_redis_and_flask_session_behave_the_same_through_the_proxy() {
    let servers: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let proxy = proxy_over(
        &servers,
        "[keys]\nprefixes = [\"session\"]\nallow_flush = true\nsplit_transactions = true\n",
    );
    // A key of someone else's on a backend: django-redis's clear() must not
    // take it.
    servers[0].client().text(&["SET", "other:key", "kept"]);
    let direct = Redis::start();
    let direct_port = direct.port.to_string();
    for store in ["django-redis", "flask", "aiohttp"] {
        let port = proxy.port.to_string();
        let ours = run_script(
            "venv-redis8",
            "cache_stores.py",
            &["--store", store, "--port", &port],
        );
        let theirs = run_script(
            "venv-redis8",
            "cache_stores.py",
            &["--store", store, "--port", &direct_port],
        );
        assert_eq!(ours, theirs, "{store}");
        println!("{store}: {ours}");
    }
    assert_eq!(
        servers[0].client().text(&["GET", "other:key"]),
        "$4\r\nkept\r\n"
    );
}

/// redis-py 8.1 in its default protocol (HELLO 3) on a session kept as a
/// hash: dicts, float scores and sets as on Redis, not RESP2's flat lists.
#[test]
fn redis_py_resp3_hash_sessions_behave_the_same_through_the_proxy() {
    let servers: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let proxy = proxy_over(&servers, "");
    let direct = Redis::start();
    let direct_port = direct.port.to_string();
    let port = proxy.port.to_string();
    let ours = run_script("venv-redis8", "resp3_hash_session.py", &["--port", &port]);
    let theirs = run_script(
        "venv-redis8",
        "resp3_hash_session.py",
        &["--port", &direct_port],
    );
    assert_eq!(ours, theirs);
    for expected in [
        "\"protocol\": 3",
        "\"hgetall_type\": \"dict\"",
        "[\"page:a\", 1.5, \"float\"]",
        "\"zscore\": [2.25, \"float\"]",
        "\"smembers\": [\"set\"",
    ] {
        assert!(ours.contains(expected), "{expected}: {ours}");
    }
}
