//! The errors the proxy answers itself, in one type.

use super::Reply;

/// An error the proxy answers a client itself. Its Display is the reply's
/// text: Redis's own words where Redis has the error, the proxy's where it
/// does not. (Errors that echo the client's bytes, an unknown command or
/// subcommand, are built in `client::errors` as Redis builds them.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisError {
    #[error("NOAUTH Authentication required.")]
    NoAuth,
    #[error("WRONGPASS invalid username-password pair or user is disabled.")]
    WrongPass,
    #[error("NOPERM this user has no permissions to access one of the keys used as arguments")]
    NoPermKey,
    /// Redis 7.0's reply to a channel an ACL forbids.
    #[error("NOPERM this user has no permissions to access one of the channels used as arguments")]
    NoPermChannel,
    /// Redis 7.0's reply to a command an ACL forbids.
    #[error("NOPERM this user has no permissions to run the '{0}' command")]
    NoPermCommand(String),
    /// Redis Cluster's error for keys that do not live together.
    #[error("CROSSSLOT Keys in request don't hash to the same slot")]
    CrossSlot,
    /// Redis's reply to EXEC after a queuing error.
    #[error("EXECABORT Transaction discarded because of previous errors.")]
    ExecAbort,
    #[error("ERR wrong number of arguments for '{0}' command")]
    Arity(String),
    #[error("ERR syntax error")]
    Syntax,
    #[error("ERR value is not an integer or out of range")]
    NotAnInteger,
    #[error("ERR DB index is out of range")]
    DbIndex,
    #[error("ERR Protocol version is not an integer or out of range")]
    ProtocolVersion,
    #[error("NOPROTO unsupported protocol version")]
    NoProto,
    #[error("ERR MULTI calls can not be nested")]
    NestedMulti,
    #[error("ERR WATCH inside MULTI is not allowed")]
    WatchInMulti,
    #[error("ERR no such key")]
    NoSuchKey,
    #[error("ERR invalid cursor")]
    InvalidCursor,
    #[error("ERR Invalid client ID")]
    InvalidClientId,
    #[error("ERR No such client")]
    NoSuchClient,
    #[error("ERR client-id should be greater than 0")]
    ClientIdNotPositive,
    #[error("NOTBUSY No scripts in execution right now.")]
    NotBusy,
    /// COMMAND GETKEYS's errors.
    #[error("ERR Invalid command specified")]
    InvalidCommand,
    #[error("ERR Invalid number of arguments specified for command")]
    InvalidArgumentCount,
    #[error("ERR The command has no key arguments")]
    NoKeyArguments,
    #[error("ERR Invalid arguments specified for command")]
    InvalidArguments,
    /// RESTORE from a client held to key prefixes (see `[keys] allow_restore`).
    #[error("NOPERM RESTORE is refused while key prefixes apply: a crafted payload can crash a backend; set [keys] allow_restore = true once the backends run with sanitize-dump-payload yes")]
    NoPermRestore,
    /// An address that sent too many wrong passwords this minute.
    #[error("ERR too many wrong passwords from this address: try again in a minute ([limits] auth_failures_per_address)")]
    AuthBlocked,
    /// PUBLISH to a keyspace or keyevent channel: forged notifications.
    #[error("NOPERM keyspace and keyevent notifications are the server's own: PUBLISH to their channels is refused")]
    NoPermNotification,
    /// CONFIG SET notify-keyspace-events while the operator has not allowed it.
    #[error("ERR CONFIG SET notify-keyspace-events is refused by session-proxy: set [keys] allow_keyspace_config = true to apply it to every backend")]
    KeyspaceConfigRefused,
    #[error("ERR internal routing error")]
    Routing,
    #[error("ERR internal error")]
    Internal,
    #[error("ERR unexpected reply from a backend")]
    UnexpectedReply,
    /// Every backend was asked, and they did not agree (SCRIPT LOAD).
    #[error("ERR the backends gave different replies")]
    BackendsDiffer,
    #[error("ERR reply dropped by the proxy")]
    ReplyDropped,
    /// Redis's reply to a write that too few replicas acknowledged.
    #[error("NOREPLICAS Not enough good replicas to write.")]
    NoReplicas,
    #[error("ERR unparsable reply from a backend")]
    UnparsableReply,
    /// A reply the proxy would have to take apart that is nested deeper
    /// than its decoders go.
    #[error("ERR a backend's reply is nested too deep to merge")]
    NestedTooDeep,
    #[error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")]
    AuthWithoutPassword,
    #[error("ERR Client names cannot contain spaces, newlines or special characters.")]
    ClientName,
    /// A command in subscribed mode that Redis 7 refuses there.
    #[error("ERR Can't execute '{0}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context")]
    Subscribed(String),
    #[error("ERR {0} without MULTI")]
    WithoutMulti(String),
    /// SORT with BY or GET from a client held to key prefixes.
    #[error("ERR {0} option of SORT denied due to insufficient ACL permissions.")]
    SortDenied(String),
    /// A request that cannot be framed; the connection closes after it.
    #[error("ERR {0}")]
    Protocol(String),
    /// A command every backend announces but whose keys it does not say.
    #[error(
        "ERR session-proxy cannot route '{0}': the server does not say where all of its keys are"
    )]
    CannotRoute(String),
    #[error("ERR transaction too large for session-proxy: at most {commands} commands and {bytes} bytes ([limits] max_pipeline, max_request_bytes)")]
    TransactionTooLarge { commands: usize, bytes: usize },
    #[error("ERR session-proxy does not run {0} inside MULTI")]
    NotInMulti(String),
    /// Redis's own, for a `no-multi` command after MULTI.
    #[error("ERR Command not allowed inside a transaction")]
    NoMulti,
    #[error("NOPERM a script without keys may touch any key: with [keys] prefixes set, session-proxy runs a script only on its declared keys (numkeys at least 1)")]
    ScriptWithoutKeys,
    #[error("NOPERM script {0} may touch keys it does not declare: with [keys] prefixes set, only scripts listed in [keys] scripts run")]
    ScriptRefused(String),
    #[error("NOPERM functions may touch keys they do not declare: they are not loaded or removed while [keys] prefixes are set")]
    FunctionLoadRefused,
    #[error("NOPERM functions may touch keys they do not declare: they are refused while [keys] prefixes are set")]
    FunctionRefused,
    #[error("ERR {0} is refused by session-proxy: set [keys] allow_flush = true to run it on every backend")]
    FlushRefused(String),
    /// A request of more arguments than `[limits] max_memory_bytes` leaves
    /// room for now.
    #[error("OOM command not allowed: a request of {args} arguments needs about {mib} MiB more than [limits] max_memory_bytes leaves now")]
    RequestTooLarge { args: usize, mib: usize },
    #[error("ERR too many subscriptions for one client: at most {0} ([limits] max_subscriptions)")]
    TooManySubscriptions(usize),
}

impl RedisError {
    /// The error reply the client gets.
    pub fn reply(&self) -> Reply {
        Reply::error(self.to_string())
    }
}
