//! The command table: what the proxy knows about each command it accepts.
//!
//! One `match` on the upper-cased name yields a `&'static Spec`. Anything not
//! in the table is answered like Redis answers an unknown command, so clients
//! that probe for features (Lettuce, ioredis) fall back as they would on Redis.

/// Which command a request is, for the handler's `match`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    // Routed by key.
    Get,
    Set,
    SetEx,
    PSetEx,
    SetNx,
    GetEx,
    GetDel,
    Del,
    Unlink,
    Exists,
    Touch,
    Expire,
    PExpire,
    ExpireAt,
    PExpireAt,
    Ttl,
    PTtl,
    Persist,
    Type,
    StrLen,
    Incr,
    IncrBy,
    Decr,
    DecrBy,
    MGet,
    MSet,
    // Scripts and functions, routed by their declared keys.
    Eval,
    EvalSha,
    EvalRo,
    EvalShaRo,
    FCall,
    FCallRo,
    // About every backend.
    Script,
    Scan,
    Keys,
    RandomKey,
    FlushDb,
    FlushAll,
    // Transactions, run by the client handler (`client/transaction.rs`).
    Config,
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
    // Answered by the proxy.
    Ping,
    Echo,
    Quit,
    Reset,
    Auth,
    Hello,
    Select,
    Client,
    Command,
    Info,
    DbSize,
    Slowlog,
}

/// How a command reaches the backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Answered by the proxy without a backend.
    Local,
    /// One key, the first argument.
    Key,
    /// Every argument is a key; split per backend and merged.
    Keys(Merge),
    /// Key, value pairs (MSET); split per backend, OK when every part is OK.
    KeyValues,
    /// Scripts and functions: `numkeys` at argument 2, then that many keys;
    /// every key on one backend, or refused with CROSSSLOT.
    Script,
    /// Sent to every backend and merged (DBSIZE, SCRIPT, KEYS, RANDOMKEY).
    AllBackends,
    /// SCAN: one backend at a time, the cursor saying which.
    Scan,
}

/// How the parts of a split command are put back together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// Integer replies are added (DEL, UNLINK, EXISTS, TOUCH).
    Sum,
    /// Array replies are put back in the order of the keys (MGET).
    InKeyOrder,
}

/// What the table says about one command.
#[derive(Debug)]
pub struct Spec {
    pub cmd: Cmd,
    /// Lower-case name, as Redis prints it in errors and COMMAND INFO.
    pub name: &'static str,
    /// Redis's arity: N means exactly N words, -N at least N.
    pub arity: i32,
    pub route: Route,
    /// Whether the command writes (COMMAND INFO flag; later the WAIT option).
    pub write: bool,
    /// Allowed before AUTH when a password is set (AUTH, HELLO, QUIT, RESET).
    pub no_auth: bool,
    /// First key, last key (-1: the last argument) and key step, for COMMAND INFO.
    pub keys: (i64, i64, i64),
}

impl Spec {
    pub fn arity_ok(&self, argc: usize) -> bool {
        let argc = argc as i64;
        let arity = self.arity as i64;
        if arity >= 0 {
            argc == arity
        } else {
            argc >= -arity
        }
    }
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
            keys: $keys,
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
            keys: (0, 0, 0),
        }
    };
}

const ONE: (i64, i64, i64) = (1, 1, 1);
const ALL: (i64, i64, i64) = (1, -1, 1);

/// Every command the proxy accepts, in the order COMMAND lists them.
pub static TABLE: &[Spec] = &[
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
        keys: (0, 0, 0),
    },
    spec!(Slowlog, "slowlog", -2, local, no_auth: false),
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
        keys: (0, 0, 0),
    },
    Spec {
        cmd: Cmd::Scan,
        name: "scan",
        arity: -2,
        route: Route::Scan,
        write: false,
        no_auth: false,
        keys: (0, 0, 0),
    },
    Spec {
        cmd: Cmd::Keys,
        name: "keys",
        arity: 2,
        route: Route::AllBackends,
        write: false,
        no_auth: false,
        keys: (0, 0, 0),
    },
    Spec {
        cmd: Cmd::FlushDb,
        name: "flushdb",
        arity: -1,
        route: Route::AllBackends,
        write: true,
        no_auth: false,
        keys: (0, 0, 0),
    },
    Spec {
        cmd: Cmd::FlushAll,
        name: "flushall",
        arity: -1,
        route: Route::AllBackends,
        write: true,
        no_auth: false,
        keys: (0, 0, 0),
    },
    Spec {
        cmd: Cmd::RandomKey,
        name: "randomkey",
        arity: 1,
        route: Route::AllBackends,
        write: false,
        no_auth: false,
        keys: (0, 0, 0),
    },
];

/// Looks a command up by name, in any case.
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    lookup_index(name).and_then(|i| TABLE.get(i))
}

/// The longest command name in [`TABLE`] (`pexpireat`, `slowlog`, ...).
const NAME_MAX: usize = 12;

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
/// see [`script_keys`].
pub fn key_positions(spec: &Spec, argc: usize) -> std::iter::StepBy<std::ops::Range<usize>> {
    let (first, step, end) = match spec.route {
        Route::Key => (1, 1, 2.min(argc)),
        Route::Keys(_) => (1, 1, argc),
        Route::KeyValues => (1, 2, argc),
        Route::Local | Route::AllBackends | Route::Script | Route::Scan => (0, 1, 0),
    };
    (first..end).step_by(step)
}

/// The positions of a script's keys (EVAL and the like: `numkeys` at
/// argument 2), or Redis's error for a bad `numkeys`.
pub fn script_keys(numkeys: &[u8], argc: usize) -> Result<std::ops::Range<usize>, &'static str> {
    let n: i64 = std::str::from_utf8(numkeys)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or("ERR value is not an integer or out of range")?;
    if n < 0 {
        return Err("ERR Number of keys can't be negative");
    }
    if n as u64 > (argc as u64).saturating_sub(3) {
        return Err("ERR Number of keys can't be greater than number of args");
    }
    Ok(3..3 + n as usize)
}

/// Every key position of `request`, whatever the command's route; a script
/// with a bad `numkeys` has none.
pub fn request_key_positions(spec: &Spec, request: &crate::protocol::Request) -> Vec<usize> {
    if spec.route == Route::Script {
        return request
            .arg(2)
            .and_then(|n| script_keys(n, request.len()).ok())
            .map_or_else(Vec::new, |r| r.collect());
    }
    key_positions(spec, request.len()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_is_found_by_its_own_name_in_any_case() {
        for spec in TABLE {
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
        assert!(lookup(b"HSET").is_none());
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
    fn key_positions_per_route() {
        let pos =
            |name: &[u8], argc| key_positions(lookup(name).unwrap(), argc).collect::<Vec<_>>();
        assert_eq!(pos(b"set", 5), vec![1]);
        assert_eq!(pos(b"del", 4), vec![1, 2, 3]);
        assert_eq!(pos(b"mset", 5), vec![1, 3]);
        assert_eq!(pos(b"ping", 2), Vec::<usize>::new());
    }
}
