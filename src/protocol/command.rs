//! The command table: what the proxy knows about each command it accepts.
//!
//! One `match` on the upper-cased name yields a `&'static Spec`. Anything not
//! in the table is answered like Redis answers an unknown command, so clients
//! that probe for features (Lettuce, ioredis) fall back as they would on Redis.

pub use super::spec::{Begin, Cmd, Find, KeySpec, Merge, Route, Spec, Sub};

/// Subcommands that change what every user shares, though Redis does not
/// flag them as writes: refused to read-only users all the same.
const SHARED_WRITES: &[(&str, &str)] = &[
    ("script", "flush"),
    ("function", "flush"),
    ("function", "delete"),
    ("function", "load"),
    ("function", "restore"),
    ("slowlog", "reset"),
    ("config", "set"),
    ("config", "resetstat"),
    ("config", "rewrite"),
];

/// Whether `request` writes: the command's flag, or its subcommand's (or
/// one of `SHARED_WRITES`).
pub fn writes(spec: &Spec, request: &crate::protocol::Request) -> bool {
    if spec.write {
        return true;
    }
    let sub = request.arg(1).unwrap_or_default();
    if SHARED_WRITES
        .iter()
        .any(|(cmd, s)| *cmd == spec.name && sub.eq_ignore_ascii_case(s.as_bytes()))
    {
        return true;
    }
    if spec.subs.is_empty() {
        return false;
    }
    spec.subs.iter().any(|s| {
        s.write
            && s.name
                .split_once('|')
                .is_some_and(|(_, short)| short.as_bytes().eq_ignore_ascii_case(sub))
    })
}

/// Whether `request` may block on the backend: a blocking command, but
/// XREAD and XREADGROUP only with BLOCK.
pub fn blocks(spec: &Spec, request: &crate::protocol::Request) -> bool {
    if !spec.blocking {
        return false;
    }
    if matches!(spec.name, "xread" | "xreadgroup") {
        return (1..request.len())
            .filter_map(|i| request.arg(i))
            .take_while(|a| !a.eq_ignore_ascii_case(b"STREAMS"))
            .any(|a| a.eq_ignore_ascii_case(b"BLOCK"));
    }
    true
}

/// How long `request` may block on the server: its timeout argument (0,
/// or none readable, counts as forever).
pub fn block_time(spec: &Spec, request: &crate::protocol::Request) -> std::time::Duration {
    const FOREVER: std::time::Duration = std::time::Duration::from_secs(10 * 365 * 86_400);
    block_arg(spec, request).map_or(FOREVER, |(_, time)| time.min(FOREVER))
}

/// Where a blocking command's timeout is: its argument's index, and
/// whether it counts milliseconds (XREAD's BLOCK) rather than seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockArg {
    pub index: usize,
    pub millis: bool,
}

/// `request`'s timeout argument and the time it gives, when it gives one
/// (a positive number; 0 blocks forever).
pub fn block_arg(
    spec: &Spec,
    request: &crate::protocol::Request,
) -> Option<(BlockArg, std::time::Duration)> {
    let positive = |index: usize| {
        request
            .arg(index)
            .and_then(|a| std::str::from_utf8(a).ok())
            .and_then(|a| a.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
    };
    let (index, millis) = match spec.name {
        "xread" | "xreadgroup" => {
            let block = (1..request.len()).find(|&i| {
                request
                    .arg(i)
                    .is_some_and(|a| a.eq_ignore_ascii_case(b"BLOCK"))
            })?;
            (block + 1, true)
        }
        "blmpop" | "bzmpop" => (1, false),
        _ => (request.len().checked_sub(1)?, false),
    };
    let value = positive(index)?;
    let seconds = if millis { value / 1000.0 } else { value };
    let time = std::time::Duration::try_from_secs_f64(seconds).ok()?;
    Some((BlockArg { index, millis }, time))
}

/// A blocking command's arguments again with the timeout at `at` set to
/// `left` (at least a millisecond: 0 would block forever), for the command
/// sent again after it had blocked a while elsewhere.
pub fn with_block_time(args: &mut [bytes::Bytes], at: BlockArg, left: std::time::Duration) {
    let left = left.max(std::time::Duration::from_millis(1));
    let text = if at.millis {
        left.as_millis().to_string()
    } else {
        format!("{}.{:03}", left.as_secs(), left.subsec_millis())
    };
    if let Some(arg) = args.get_mut(at.index) {
        *arg = bytes::Bytes::from(text);
    }
}

/// docs/commands.md's list of the commands routed by key, by data type: the
/// proxy's own keyed entries and Redis's from `keyed.rs` (a unit test keeps
/// docs/commands.md equal to it).
pub fn keyed_list_markdown() -> String {
    const OWN: &[(&str, &str)] = &[
        ("get", "string"),
        ("set", "string"),
        ("setex", "string"),
        ("psetex", "string"),
        ("setnx", "string"),
        ("getex", "string"),
        ("getdel", "string"),
        ("strlen", "string"),
        ("incr", "string"),
        ("incrby", "string"),
        ("decr", "string"),
        ("decrby", "string"),
        ("mget", "string"),
        ("mset", "string"),
        ("del", "keyspace"),
        ("unlink", "keyspace"),
        ("exists", "keyspace"),
        ("touch", "keyspace"),
        ("expire", "keyspace"),
        ("pexpire", "keyspace"),
        ("expireat", "keyspace"),
        ("pexpireat", "keyspace"),
        ("ttl", "keyspace"),
        ("pttl", "keyspace"),
        ("persist", "keyspace"),
        ("type", "keyspace"),
    ];
    let groups = [
        ("string", "Strings"),
        ("hash", "Hashes"),
        ("set", "Sets"),
        ("sortedset", "Sorted sets"),
        ("list", "Lists"),
        ("bitmap", "Bitmaps"),
        ("hyperloglog", "HyperLogLog"),
        ("stream", "Streams"),
        ("geo", "Geo"),
        ("keyspace", "Keys"),
    ];
    let mut out = String::new();
    for (group, title) in groups {
        let mut names: Vec<String> = OWN
            .iter()
            .chain(super::keyed::GROUPS)
            .filter(|(_, g)| *g == group)
            .map(|(name, _)| {
                let spec = lookup(name.as_bytes()).expect("listed commands are in the table");
                let mut shown = name.to_uppercase();
                if !spec.subs.is_empty() {
                    let subs: Vec<String> = spec
                        .subs
                        .iter()
                        .filter_map(|s| s.name.split_once('|'))
                        .map(|(_, sub)| sub.to_uppercase())
                        .collect();
                    shown = format!("{shown} ({})", subs.join(", "));
                }
                if spec.blocking {
                    shown.push('*');
                }
                shown
            })
            .collect();
        names.sort();
        out.push_str(&format!("- {title}: {}\n", names.join(", ")));
    }
    out
}

macro_rules! spec {
    ($cmd:ident, $name:literal, $arity:expr, $route:expr, write: $write:expr, keys: $keys:expr) => {
        Spec {
            cmd: Cmd::$cmd,
            name: $name,
            arity: $arity,
            route: $route,
            write: $write,
            no_auth: false,
            blocking: false,
            keys: $keys,
            specs: &[],
            subs: &[],
        }
    };
    ($cmd:ident, $name:literal, $arity:expr, local, no_auth: $no_auth:expr) => {
        Spec {
            cmd: Cmd::$cmd,
            name: $name,
            arity: $arity,
            route: Route::Local,
            write: false,
            no_auth: $no_auth,
            blocking: false,
            keys: (0, 0, 0),
            specs: &[],
            subs: &[],
        }
    };
}

const ONE: (i64, i64, i64) = (1, 1, 1);
const ALL: (i64, i64, i64) = (1, -1, 1);

/// Every command the proxy accepts, in the order COMMAND lists them: its
/// own (`HAND`), then Redis's keyed commands ([`super::keyed::KEYED`]).
pub static TABLE: std::sync::LazyLock<Vec<&'static Spec>> = std::sync::LazyLock::new(|| {
    let mut table: Vec<&'static Spec> = HAND.iter().collect();
    for spec in super::keyed::KEYED {
        if !HAND.iter().any(|h| h.name == spec.name) {
            table.push(spec);
        }
    }
    table
});

/// The commands the proxy handles itself.
static HAND: &[Spec] = &[
    spec!(Get, "get", 2, Route::Key, write: false, keys: ONE),
    spec!(Set, "set", -3, Route::Key, write: true, keys: ONE),
    spec!(SetEx, "setex", 4, Route::Key, write: true, keys: ONE),
    spec!(PSetEx, "psetex", 4, Route::Key, write: true, keys: ONE),
    spec!(SetNx, "setnx", 3, Route::Key, write: true, keys: ONE),
    spec!(GetEx, "getex", -2, Route::Key, write: true, keys: ONE),
    spec!(GetDel, "getdel", 2, Route::Key, write: true, keys: ONE),
    spec!(Del, "del", -2, Route::Keys(Merge::Sum), write: true, keys: ALL),
    spec!(Unlink, "unlink", -2, Route::Keys(Merge::Sum), write: true, keys: ALL),
    spec!(Exists, "exists", -2, Route::Keys(Merge::Sum), write: false, keys: ALL),
    spec!(Touch, "touch", -2, Route::Keys(Merge::Sum), write: false, keys: ALL),
    spec!(Expire, "expire", -3, Route::Key, write: true, keys: ONE),
    spec!(PExpire, "pexpire", -3, Route::Key, write: true, keys: ONE),
    spec!(ExpireAt, "expireat", -3, Route::Key, write: true, keys: ONE),
    spec!(PExpireAt, "pexpireat", -3, Route::Key, write: true, keys: ONE),
    spec!(Ttl, "ttl", 2, Route::Key, write: false, keys: ONE),
    spec!(PTtl, "pttl", 2, Route::Key, write: false, keys: ONE),
    spec!(Persist, "persist", 2, Route::Key, write: true, keys: ONE),
    spec!(Type, "type", 2, Route::Key, write: false, keys: ONE),
    spec!(StrLen, "strlen", 2, Route::Key, write: false, keys: ONE),
    spec!(Incr, "incr", 2, Route::Key, write: true, keys: ONE),
    spec!(IncrBy, "incrby", 3, Route::Key, write: true, keys: ONE),
    spec!(Decr, "decr", 2, Route::Key, write: true, keys: ONE),
    spec!(DecrBy, "decrby", 3, Route::Key, write: true, keys: ONE),
    spec!(MGet, "mget", -2, Route::Keys(Merge::InKeyOrder), write: false, keys: ALL),
    spec!(MSet, "mset", -3, Route::KeyValues, write: true, keys: (1, -1, 2)),
    spec!(Eval, "eval", -3, Route::Script, write: true, keys: (0, 0, 0)),
    spec!(EvalSha, "evalsha", -3, Route::Script, write: true, keys: (0, 0, 0)),
    spec!(EvalRo, "eval_ro", -3, Route::Script, write: false, keys: (0, 0, 0)),
    spec!(EvalShaRo, "evalsha_ro", -3, Route::Script, write: false, keys: (0, 0, 0)),
    spec!(FCall, "fcall", -3, Route::Script, write: true, keys: (0, 0, 0)),
    spec!(FCallRo, "fcall_ro", -3, Route::Script, write: false, keys: (0, 0, 0)),
    spec!(Ping, "ping", -1, local, no_auth: false),
    spec!(Echo, "echo", 2, local, no_auth: false),
    spec!(Quit, "quit", -1, local, no_auth: true),
    spec!(Reset, "reset", 1, local, no_auth: true),
    spec!(Auth, "auth", -2, local, no_auth: true),
    spec!(Hello, "hello", -1, local, no_auth: true),
    spec!(Select, "select", 2, local, no_auth: false),
    spec!(Client, "client", -2, local, no_auth: false),
    spec!(Command, "command", -1, local, no_auth: false),
    spec!(Info, "info", -1, local, no_auth: false),
    Spec {
        cmd: Cmd::DbSize,
        name: "dbsize",
        arity: 1,
        route: Route::AllBackends,
        write: false,
        no_auth: false,
        blocking: false,
        keys: (0, 0, 0),
        specs: &[],
        subs: &[],
    },
    spec!(Slowlog, "slowlog", -2, local, no_auth: false),
    spec!(Wait, "wait", 3, local, no_auth: false),
    spec!(Time, "time", 1, local, no_auth: false),
    spec!(Subscribe, "subscribe", -2, local, no_auth: false),
    spec!(PSubscribe, "psubscribe", -2, local, no_auth: false),
    spec!(SSubscribe, "ssubscribe", -2, local, no_auth: false),
    spec!(Unsubscribe, "unsubscribe", -1, local, no_auth: false),
    spec!(PUnsubscribe, "punsubscribe", -1, local, no_auth: false),
    spec!(SUnsubscribe, "sunsubscribe", -1, local, no_auth: false),
    spec!(Publish, "publish", 3, Route::Channel, write: false, keys: (0, 0, 0)),
    spec!(SPublish, "spublish", 3, Route::Channel, write: false, keys: (0, 0, 0)),
    Spec {
        cmd: Cmd::PubSub,
        name: "pubsub",
        arity: -2,
        route: Route::AllBackends,
        write: false,
        no_auth: false,
        blocking: false,
        keys: (0, 0, 0),
        specs: &[],
        subs: &[],
    },
    spec!(Config, "config", -2, local, no_auth: false),
    spec!(Multi, "multi", 1, local, no_auth: false),
    spec!(Exec, "exec", 1, local, no_auth: false),
    spec!(Discard, "discard", 1, local, no_auth: false),
    spec!(Watch, "watch", -2, local, no_auth: false),
    spec!(Unwatch, "unwatch", 1, local, no_auth: false),
    Spec {
        cmd: Cmd::Script,
        name: "script",
        arity: -2,
        route: Route::AllBackends,
        write: false,
        no_auth: false,
        blocking: false,
        keys: (0, 0, 0),
        specs: &[],
        subs: &[],
    },
    // SORT: its key and STORE by `keys.rs`; BY and GET patterns checked by
    // `client/plan.rs` (on the key's backend, or refused).
    Spec {
        cmd: Cmd::Keyed,
        name: "sort",
        arity: -2,
        route: Route::Specs,
        write: true,
        no_auth: false,
        blocking: false,
        keys: (1, 1, 1),
        specs: &[],
        subs: &[],
    },
    Spec {
        cmd: Cmd::Keyed,
        name: "sort_ro",
        arity: -2,
        route: Route::Specs,
        write: false,
        no_auth: false,
        blocking: false,
        keys: (1, 1, 1),
        specs: &[],
        subs: &[],
    },
    // FUNCTION LOAD, DELETE, FLUSH, RESTORE on every backend; LIST, STATS,
    // DUMP, HELP from the first (see `client/plan.rs`).
    Spec {
        cmd: Cmd::Function,
        name: "function",
        arity: -2,
        route: Route::AllBackends,
        write: false,
        no_auth: false,
        blocking: false,
        keys: (0, 0, 0),
        specs: &[],
        subs: &[],
    },
    Spec {
        cmd: Cmd::Scan,
        name: "scan",
        arity: -2,
        route: Route::Scan,
        write: false,
        no_auth: false,
        blocking: false,
        keys: (0, 0, 0),
        specs: &[],
        subs: &[],
    },
    Spec {
        cmd: Cmd::Keys,
        name: "keys",
        arity: 2,
        route: Route::AllBackends,
        write: false,
        no_auth: false,
        blocking: false,
        keys: (0, 0, 0),
        specs: &[],
        subs: &[],
    },
    Spec {
        cmd: Cmd::FlushDb,
        name: "flushdb",
        arity: -1,
        route: Route::AllBackends,
        write: true,
        no_auth: false,
        blocking: false,
        keys: (0, 0, 0),
        specs: &[],
        subs: &[],
    },
    Spec {
        cmd: Cmd::FlushAll,
        name: "flushall",
        arity: -1,
        route: Route::AllBackends,
        write: true,
        no_auth: false,
        blocking: false,
        keys: (0, 0, 0),
        specs: &[],
        subs: &[],
    },
    Spec {
        cmd: Cmd::RandomKey,
        name: "randomkey",
        arity: 1,
        route: Route::AllBackends,
        write: false,
        no_auth: false,
        blocking: false,
        keys: (0, 0, 0),
        specs: &[],
        subs: &[],
    },
];

/// Looks a command up by name, in any case.
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    lookup_index(name).and_then(|i| TABLE.get(i).copied())
}

/// The longest command name in [`TABLE`] (`pexpireat`, `slowlog`, ...).
const NAME_MAX: usize = 24;

/// Commands of one name length: (name, index in [`TABLE`]).
type Named = Vec<(&'static [u8], usize)>;

/// [`TABLE`]'s indexes by name length, then name: derived from the table
/// once, so adding a command is one line there and nothing else.
fn by_length() -> &'static [Named] {
    static INDEX: std::sync::OnceLock<Vec<Named>> = std::sync::OnceLock::new();
    INDEX.get_or_init(|| {
        let mut index = vec![Vec::new(); NAME_MAX + 1];
        for (i, spec) in TABLE.iter().enumerate() {
            let name = spec.name.as_bytes();
            assert!(name.len() <= NAME_MAX, "raise NAME_MAX for {}", spec.name);
            index[name.len()].push((name, i));
        }
        index
    })
}

/// The command's position in [`TABLE`], for per-command metrics.
pub fn lookup_index(name: &[u8]) -> Option<usize> {
    // Names are short; anything longer than the longest one is unknown.
    let candidates = by_length().get(name.len())?;
    let mut lower = [0u8; NAME_MAX];
    let lower = lower.get_mut(..name.len())?;
    for (d, s) in lower.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    candidates
        .iter()
        .find(|(candidate, _)| *candidate == &*lower)
        .map(|&(_, i)| i)
}

/// The positions of the keys in a request of this command, given its argument
/// count (arity already checked). A script's keys depend on its `numkeys`:
/// see [`super::keys::script_keys`].
pub fn key_positions(spec: &Spec, argc: usize) -> std::iter::StepBy<std::ops::Range<usize>> {
    let (first, step, end) = match spec.route {
        Route::Key => (1, 1, 2.min(argc)),
        Route::Keys(_) => (1, 1, argc),
        Route::KeyValues => (1, 2, argc),
        Route::Local
        | Route::AllBackends
        | Route::Script
        | Route::Scan
        | Route::Specs
        | Route::Channel => (0, 1, 0),
    };
    (first..end).step_by(step)
}

/// A subcommand of a container command ([`Spec::subs`]) that the request
/// names, or Redis's error: unknown subcommand, or its arity.
pub fn subcommand(spec: &Spec, args: &[&[u8]]) -> Result<Option<&'static Sub>, String> {
    if spec.subs.is_empty() {
        return Ok(None);
    }
    let Some(&name) = args.get(1) else {
        return Err(format!(
            "ERR wrong number of arguments for '{}' command",
            spec.name
        ));
    };
    let found = spec.subs.iter().find(|sub| {
        sub.name
            .split_once('|')
            .is_some_and(|(_, short)| short.as_bytes().eq_ignore_ascii_case(name))
    });
    let Some(sub) = found else {
        let shown = String::from_utf8_lossy(&name[..name.len().min(128)]).into_owned();
        return Err(format!(
            "ERR unknown subcommand '{shown}'. Try {} HELP.",
            spec.name.to_uppercase()
        ));
    };
    if !super::spec::arity_fits(sub.arity, args.len()) {
        return Err(format!(
            "ERR wrong number of arguments for '{}' command",
            sub.name
        ));
    }
    Ok(Some(sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(line: &str) -> crate::protocol::Request {
        crate::protocol::Request::Inline(
            line.split(' ')
                .map(|a| bytes::Bytes::copy_from_slice(a.as_bytes()))
                .collect(),
        )
    }

    /// The timeout of each kind of blocking command is found, and set to
    /// the time left, in its own unit; 0 (forever) and a timeout that does
    /// not parse give none to set.
    #[test]
    fn a_blocking_commands_timeout_is_found_and_set_to_the_time_left() {
        let left = std::time::Duration::from_millis(2_345);
        for (line, index, millis, was, now) in [
            ("BLPOP a b 30", 3, false, 30_000, "BLPOP a b 2.345"),
            ("BZPOPMIN a 0.5", 2, false, 500, "BZPOPMIN a 2.345"),
            (
                "BLMPOP 10 2 a b LEFT",
                1,
                false,
                10_000,
                "BLMPOP 2.345 2 a b LEFT",
            ),
            (
                "XREAD COUNT 2 BLOCK 1500 STREAMS s $",
                4,
                true,
                1_500,
                "XREAD COUNT 2 BLOCK 2345 STREAMS s $",
            ),
        ] {
            let request = request(line);
            let spec = lookup(request.arg(0).unwrap()).unwrap();
            let (at, time) = block_arg(spec, &request).unwrap();
            assert_eq!(at, BlockArg { index, millis }, "{line}");
            assert_eq!(time.as_millis(), was, "{line}");
            assert_eq!(block_time(spec, &request), time, "{line}");
            let mut args = request.args();
            with_block_time(&mut args, at, left);
            assert_eq!(args.join(&b' '), now.as_bytes(), "{line}");
        }
        for line in ["BLPOP a 0", "BLPOP a soon", "XREAD BLOCK 0 STREAMS s $"] {
            let request = request(line);
            let spec = lookup(request.arg(0).unwrap()).unwrap();
            assert_eq!(block_arg(spec, &request), None, "{line}");
            assert!(block_time(spec, &request) > std::time::Duration::from_secs(86_400 * 365));
        }
        // Never 0, which would block forever.
        let request = request("BLPOP a 1");
        let (at, _) = block_arg(lookup(b"blpop").unwrap(), &request).unwrap();
        let mut args = request.args();
        with_block_time(&mut args, at, std::time::Duration::ZERO);
        assert_eq!(&args[2][..], b"0.001");
    }

    #[test]
    fn every_shared_write_writes() {
        for (name, sub) in SHARED_WRITES {
            let spec = lookup(name.as_bytes()).unwrap();
            let request = crate::protocol::Request::Inline(vec![
                bytes::Bytes::from_static(name.as_bytes()),
                bytes::Bytes::from_static(sub.as_bytes()),
            ]);
            assert!(writes(spec, &request), "{name} {sub}");
        }
    }

    #[test]
    fn every_entry_is_found_by_its_own_name_in_any_case() {
        for spec in TABLE.iter() {
            let found = lookup(spec.name.as_bytes()).unwrap();
            assert_eq!(found.name, spec.name);
            let upper = spec.name.to_ascii_uppercase();
            assert_eq!(lookup(upper.as_bytes()).unwrap().cmd, spec.cmd);
            let mixed: String = spec
                .name
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if i % 2 == 0 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect();
            assert_eq!(lookup(mixed.as_bytes()).unwrap().name, spec.name);
        }
        assert!(
            lookup(b"HSET").is_some(),
            "keyed commands come from keyed.rs"
        );
        assert!(lookup(b"SHUTDOWN").is_none());
        assert!(lookup(b"").is_none());
        assert!(lookup(b"averyveryverylongcommand").is_none());
    }

    #[test]
    fn arity_like_redis() {
        let get = lookup(b"get").unwrap();
        assert!(get.arity_ok(2) && !get.arity_ok(1) && !get.arity_ok(3));
        let set = lookup(b"set").unwrap();
        assert!(set.arity_ok(3) && set.arity_ok(9) && !set.arity_ok(2));
    }

    #[test]
    fn containers_check_their_subcommand() {
        let xgroup = lookup(b"xgroup").unwrap();
        let args: Vec<&[u8]> = vec![b"xgroup", b"nosuch", b"k"];
        assert_eq!(
            subcommand(xgroup, &args).unwrap_err(),
            "ERR unknown subcommand 'nosuch'. Try XGROUP HELP."
        );
        let args: Vec<&[u8]> = vec![b"xgroup", b"create", b"k"];
        assert_eq!(
            subcommand(xgroup, &args).unwrap_err(),
            "ERR wrong number of arguments for 'xgroup|create' command"
        );
    }

    #[test]
    fn block_times_come_from_each_commands_own_argument() {
        let time = |words: &str| {
            let args: Vec<bytes::Bytes> = words
                .split(' ')
                .map(|w| bytes::Bytes::copy_from_slice(w.as_bytes()))
                .collect();
            let request = crate::protocol::Request::Inline(args);
            let spec = lookup(request.arg(0).unwrap()).unwrap();
            (blocks(spec, &request), block_time(spec, &request))
        };
        let secs = std::time::Duration::from_secs_f64;
        assert_eq!(time("blpop a b 1.5"), (true, secs(1.5)));
        assert_eq!(time("blmpop 2 1 a left"), (true, secs(2.0)));
        assert_eq!(time("xread block 250 streams s $"), (true, secs(0.25)));
        assert!(
            !time("xread count 1 streams s 0").0,
            "XREAD without BLOCK does not block"
        );
        assert!(
            time("blpop a 0").1 > secs(86_400.0 * 365.0),
            "0 blocks forever"
        );
    }

    #[test]
    fn docs_list_the_keyed_commands_of_the_table() {
        let readme = include_str!("../../docs/commands.md");
        let start = "<!-- keyed commands: generated, see keyed_list_markdown -->\n";
        let end = "<!-- end of keyed commands -->";
        let from = readme.find(start).expect("docs/commands.md has the list") + start.len();
        let to = readme[from..]
            .find(end)
            .expect("docs/commands.md ends the list")
            + from;
        assert_eq!(
            &readme[from..to],
            keyed_list_markdown(),
            "docs/commands.md's list of keyed commands, to paste:\n{}",
            keyed_list_markdown()
        );
    }

    #[test]
    fn key_positions_per_route() {
        let pos =
            |name: &[u8], argc| key_positions(lookup(name).unwrap(), argc).collect::<Vec<_>>();
        assert_eq!(pos(b"set", 5), vec![1]);
        assert_eq!(pos(b"del", 4), vec![1, 2, 3]);
        assert_eq!(pos(b"mset", 5), vec![1, 3]);
        assert_eq!(pos(b"ping", 2), Vec::<usize>::new());
    }
}
