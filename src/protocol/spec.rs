//! The types of the command table: a command's `Spec`, its `Cmd`, how it
//! is routed and where its keys are. The generated table (`keyed.rs`) and the
//! hand-written one (`command.rs`) are built from them.

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
    Function,
    Scan,
    Keys,
    RandomKey,
    FlushDb,
    FlushAll,
    // Keyed commands of every data type (`keyed.rs`), forwarded by key.
    Keyed,
    Rename,
    RenameNx,
    // Pub/Sub (`client/pubsub.rs`): subscriptions on links of the
    // client's own, PUBLISH to the channel's owner.
    Subscribe,
    PSubscribe,
    SSubscribe,
    Unsubscribe,
    PUnsubscribe,
    SUnsubscribe,
    Publish,
    SPublish,
    PubSub,
    /// Refused with a pointer to `min_replicas_ack` (see `local`).
    Wait,
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
    Time,
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
    /// A channel name at argument 1 (PUBLISH): to the backend owning it,
    /// by the same hash as keys; channels are not keys, so no prefix policy.
    Channel,
    /// Keys where Redis's key specs say ([`Spec::specs`], or a
    /// subcommand's); every key on one backend, or refused with CROSSSLOT.
    Specs,
}

/// Where a key spec starts looking (Redis 7's `begin_search`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    /// At this argument.
    Index(usize),
    /// After this keyword, searched from argument `startfrom` on (from the
    /// end when negative).
    Keyword(&'static str, i32),
}

/// How a key spec finds the keys from there (Redis 7's `find_keys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Find {
    /// Keys up to `last` (0: only the first; negative: counted from the
    /// end, or with `limit`, that fraction of what is left), every `step`.
    Range {
        last: i32,
        step: usize,
        limit: usize,
    },
    /// The key count at `at` after the start, keys from `first` on.
    KeyNum {
        at: usize,
        first: usize,
        step: usize,
    },
}

/// One of a command's key specs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    pub begin: Begin,
    pub find: Find,
}

/// A subcommand of a container command (XINFO STREAM, XGROUP CREATE).
#[derive(Debug)]
pub struct Sub {
    /// `container|sub`, as Redis names it.
    pub name: &'static str,
    pub arity: i32,
    pub write: bool,
    pub specs: &'static [KeySpec],
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
    /// Blocks until data comes (BLPOP, XREAD with BLOCK): runs on a
    /// connection leased to the client.
    pub blocking: bool,
    /// First key, last key (-1: the last argument) and key step, for COMMAND INFO.
    pub keys: (i64, i64, i64),
    /// Redis's key specs, for [`Route::Specs`].
    pub specs: &'static [KeySpec],
    /// Subcommands, for a container command ([`Route::Specs`]).
    pub subs: &'static [Sub],
}

impl Spec {
    pub fn arity_ok(&self, argc: usize) -> bool {
        arity_fits(self.arity, argc)
    }
}

/// Whether `argc` words fit Redis's `arity`: N means exactly N, -N at
/// least N.
pub fn arity_fits(arity: i32, argc: usize) -> bool {
    let (argc, arity) = (argc as i64, arity as i64);
    if arity >= 0 {
        argc == arity
    } else {
        argc >= -arity
    }
}
