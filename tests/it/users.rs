//! Named users (`[[users]]`): passwords from the file, a password file or an
//! environment variable; each user held to its key prefixes and, when
//! read-only, to reads; prefix-restricted users learn nothing about other
//! keys (DBSIZE) or the backends (INFO). Error texts are Redis 7.0's ACL ones.

use crate::common::{config_for, Proxy, Redis};

const NOPERM_KEY: &str =
    "-NOPERM this user has no permissions to access one of the keys used as arguments\r\n";

const WRONGPASS: &str = "-WRONGPASS invalid username-password pair or user is disabled.\r\n";

fn noperm(command: &str) -> String {
    format!("-NOPERM this user has no permissions to run the '{command}' command\r\n")
}

fn users_config(redis: &Redis, dir: &std::path::Path, default_password: bool) -> String {
    let file = crate::common::write_file(dir, "rw_app.pass", "p-file\nignored second line\n");
    std::env::set_var("SESSION_PROXY_TEST_RO_ALL", "p-env");
    let listen = if default_password {
        "password = \"admin\"\n"
    } else {
        ""
    };
    let users = format!(
        r#"
[[users]]
name = "rw_all"
password = "p1"

[[users]]
name = "ro_all"
password_env = "SESSION_PROXY_TEST_RO_ALL"
read_only = true

[[users]]
name = "rw_app"
password_file = "{}"
prefixes = ["app:"]

[[users]]
name = "ro_app"
password = "p4"
prefixes = ["app:"]
read_only = true
"#,
        file.display()
    );
    let mut text = config_for(&[("a", redis.address(), 1.0)], listen);
    text.push_str(&users);
    text
}

#[test]
fn every_prefix_and_read_only_combination() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(&users_config(&redis, dir.path(), true));
    let mut admin = proxy.client();
    assert_eq!(admin.text(&["AUTH", "admin"]), "+OK\r\n");
    assert_eq!(admin.text(&["SET", "app:1", "v"]), "+OK\r\n");
    assert_eq!(admin.text(&["SET", "other:1", "w"]), "+OK\r\n");

    // (user, password, may write, limited to app:)
    let users = [
        ("rw_all", "p1", true, false),
        ("ro_all", "p-env", false, false),
        ("rw_app", "p-file", true, true),
        ("ro_app", "p4", false, true),
    ];
    for (name, password, writes, limited) in users {
        assert_eq!(admin.text(&["SET", "other:1", "w"]), "+OK\r\n");
        let mut c = proxy.client();
        assert_eq!(
            c.text(&["GET", "app:1"]),
            "-NOAUTH Authentication required.\r\n"
        );
        assert_eq!(c.text(&["AUTH", name, "wrong"]), WRONGPASS);
        assert_eq!(c.text(&["AUTH", name, password]), "+OK\r\n", "{name}");
        assert!(c
            .text(&["CLIENT", "INFO"])
            .contains(&format!(" user={name} ")));

        assert_eq!(c.text(&["GET", "app:1"]), "$1\r\nv\r\n", "{name}");
        let set = c.text(&["SET", "app:2", "x"]);
        assert_eq!(
            set,
            if writes {
                "+OK\r\n".into()
            } else {
                noperm("set")
            },
            "{name}"
        );
        let del = c.text(&["DEL", "app:2"]);
        let expected_del = if writes {
            ":1\r\n".into()
        } else {
            noperm("del")
        };
        assert_eq!(del, expected_del, "{name}");

        let other = c.text(&["GET", "other:1"]);
        let expected = if limited { NOPERM_KEY } else { "$1\r\nw\r\n" };
        assert_eq!(other, expected, "{name}");
        // A key check comes after the write check, as in Redis.
        let write_other = c.text(&["SET", "other:1", "z"]);
        let expected = match (writes, limited) {
            (false, _) => noperm("set"),
            (true, true) => NOPERM_KEY.into(),
            (true, false) => "+OK\r\n".into(),
        };
        assert_eq!(write_other, expected, "{name}");
        // MGET over an allowed and a forbidden key: nothing is read.
        let mget = c.text(&["MGET", "app:1", "other:1"]);
        assert_eq!(mget.starts_with("-NOPERM"), limited, "{name}: {mget}");

        let dbsize = c.text(&["DBSIZE"]);
        assert_eq!(dbsize.starts_with(':'), !limited, "{name}: {dbsize}");
        if limited {
            assert_eq!(dbsize, noperm("dbsize"));
        }
        let info = c.text(&["INFO"]);
        assert_eq!(info.contains("# Backends"), !limited, "{name}");
        assert_eq!(info.contains(&redis.address()), !limited, "{name}");
        // RESET forgets the user.
        assert_eq!(c.text(&["RESET"]), "+RESET\r\n");
        assert_eq!(
            c.text(&["GET", "app:1"]),
            "-NOAUTH Authentication required.\r\n"
        );
    }
    // HELLO AUTH with a user name, RESP3.
    let mut c = proxy.client();
    c.resp3 = true;
    let hello = c.text(&["HELLO", "3", "AUTH", "ro_app", "p4"]);
    assert!(hello.starts_with('%'), "{hello}");
    assert_eq!(c.text(&["SET", "app:1", "x"]), noperm("set"));
    let mut c = proxy.client();
    assert_eq!(c.text(&["HELLO", "3", "AUTH", "nobody", "p4"]), WRONGPASS);
}

#[test]
fn named_users_turn_the_open_default_user_off() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(&users_config(&redis, dir.path(), false));
    let mut c = proxy.client();
    assert_eq!(c.text(&["PING"]), "-NOAUTH Authentication required.\r\n");
    assert_eq!(c.text(&["AUTH", "default", "anything"]), WRONGPASS);
    assert_eq!(c.text(&["AUTH", "rw_all", "p1"]), "+OK\r\n");
    assert_eq!(c.text(&["PING"]), "+PONG\r\n");
}

#[test]
fn user_config_errors_name_the_field() {
    let bad = [
        (
            "[[users]]\nname = \"u\"\npassword = \"a\"\npassword_env = \"B\"\n",
            "users[0]",
        ),
        ("[[users]]\nname = \"u\"\n", "users[0]"),
        (
            "[[users]]\nname = \"u\"\npassword_env = \"SESSION_PROXY_TEST_UNSET_VAR\"\n",
            "users[0].password_env",
        ),
        (
            "[[users]]\nname = \"default\"\npassword = \"a\"\n",
            "users[0].name",
        ),
        (
            "[[users]]\nname = \"u\"\npassword = \"a\"\n[[users]]\nname = \"u\"\npassword = \"b\"\n",
            "users[1].name",
        ),
    ];
    for (users, field) in bad {
        let text = format!(
            "[listen]\naddress = \"127.0.0.1:0\"\n[[backends]]\nid = \"a\"\naddress = \"127.0.0.1:1\"\n{users}"
        );
        let error = session_proxy::config::Config::parse(&text)
            .expect_err(users)
            .to_string();
        assert!(error.contains(field), "{users}: {error}");
    }
}

/// CLIENT TRACKING keeps to a user's keys (issue 32): a user held to
/// `app:` tracking in BCAST mode with no prefix hears of changes to its
/// own keys only, and cannot redirect its invalidations to another user's
/// client (which does not exist for it, as in CLIENT LIST).
#[test]
fn tracking_tells_a_user_of_its_own_keys_only() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(&users_config(&redis, dir.path(), true));
    let mut app = proxy.client();
    assert_eq!(app.text(&["AUTH", "rw_app", "p-file"]), "+OK\r\n");
    app.hello3();
    let mut other = proxy.client();
    assert_eq!(other.text(&["AUTH", "rw_all", "p1"]), "+OK\r\n");
    let other_id = other.text(&["CLIENT", "ID"]);
    let other_id = other_id.trim().trim_start_matches(':');
    assert_eq!(
        app.text(&["CLIENT", "TRACKING", "on", "REDIRECT", other_id]),
        "-ERR The client ID you want redirect to does not exist\r\n"
    );
    assert_eq!(app.text(&["CLIENT", "TRACKING", "on", "BCAST"]), "+OK\r\n");
    assert_eq!(other.text(&["SET", "secret:1", "x"]), "+OK\r\n");
    assert_eq!(other.text(&["SET", "app:1", "x"]), "+OK\r\n");
    // The link hears of secret:1 first: were it passed on, it would come
    // first.
    assert_eq!(
        String::from_utf8_lossy(&app.read_reply()),
        ">2\r\n$10\r\ninvalidate\r\n*1\r\n$5\r\napp:1\r\n",
        "only the key under the user's prefix"
    );
}
