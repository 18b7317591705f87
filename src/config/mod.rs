//! The TOML configuration: structs, defaults, loading and validation.
//!
//! Every section denies unknown fields, so a typo is an error rather than a
//! silently ignored setting. `validate` runs right after parsing and names the
//! offending field in its message.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod backend;
mod migration;
mod validate;

pub use backend::{
    parse_url, BackendSpec, ClusterSpec, Endpoint, Sentinel, Source, Target, TlsClient,
};
pub use migration::{MigrationConfig, MigrationTuning, OldHash};

/// A config file that cannot be used; the message names the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: Listen,
    #[serde(default)]
    pub keys: Keys,
    #[serde(default)]
    pub pool: Pool,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub admin: Admin,
    #[serde(default)]
    pub slowlog: Slowlog,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    #[serde(default)]
    pub runtime: Runtime,
    #[serde(default)]
    pub reload: ReloadConfig,
    /// Named users besides the default one (`[listen] password`).
    #[serde(default)]
    pub users: Vec<User>,
    pub backends: Vec<BackendSpec>,
    /// Where keys lived before this topology (moving in, across restarts).
    #[serde(default)]
    pub migration: Option<MigrationConfig>,
}

/// `[[users]]`: a named user, limited to its key prefixes and, when
/// read-only, to commands that write nothing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    /// The password itself; or read from `password_file` (its first line)
    /// or the environment variable `password_env` when the config loads,
    /// so it need not sit in the file. Exactly one of the three.
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
    /// Key prefixes this user may touch (besides `[keys] prefixes`, which
    /// apply to everyone); empty: every key the global policy allows.
    #[serde(default)]
    pub prefixes: Vec<String>,
    #[serde(default)]
    pub read_only: bool,
    /// Sees (and resets) every user's SLOWLOG entries, as the default user
    /// does; other named users see their own only.
    #[serde(default)]
    pub admin: bool,
    /// Channels this user may use, on top of `[keys] channels` (glob
    /// patterns, as Redis's ACL `&pattern`); unset: as its `prefixes` imply.
    #[serde(default)]
    pub channels: Option<Vec<String>>,
    /// Connections held for this user's clients at once on each backend
    /// (subscribers, WATCH, blocking commands); unset: a quarter of `[pool]
    /// max_held_connections`, so no one user can take them all.
    #[serde(default)]
    pub max_held_connections: Option<usize>,
}

impl User {
    /// Reads the password from where the config says it is.
    fn resolve(&mut self, field: &str) -> Result<(), ConfigError> {
        let sources = [
            self.password.is_some(),
            self.password_file.is_some(),
            self.password_env.is_some(),
        ];
        if sources.iter().filter(|&&set| set).count() != 1 {
            return Err(invalid(
                field,
                "set exactly one of password, password_file, password_env",
            ));
        }
        if let Some(path) = &self.password_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                invalid(
                    format!("{field}.password_file"),
                    format!("{}: {e}", path.display()),
                )
            })?;
            self.password = Some(text.lines().next().unwrap_or_default().to_string());
        }
        if let Some(var) = &self.password_env {
            let value = std::env::var(var).map_err(|_| {
                invalid(
                    format!("{field}.password_env"),
                    format!("${var} is not set"),
                )
            })?;
            self.password = Some(value);
        }
        if self.password.as_deref().is_none_or(str::is_empty) {
            return Err(invalid(format!("{field}.password"), "must not be empty"));
        }
        Ok(())
    }

    /// How many connections this user's clients may hold on one backend.
    pub fn held_share(&self, pool: &Pool) -> usize {
        self.max_held_connections
            .unwrap_or((pool.max_held_connections / 4).max(1))
    }

    /// The password, once resolved at load.
    pub fn secret(&self) -> &str {
        self.password.as_deref().unwrap_or_default()
    }
}

/// `[runtime]`: the async runtime's threads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    /// Worker threads; 0 picks for the machine: one thread (no cross-thread
    /// wake-ups) on two cores or fewer, one per core above that.
    #[serde(default)]
    pub threads: usize,
}

impl Runtime {
    /// The thread count to use on this machine.
    pub fn threads(&self) -> usize {
        match self.threads {
            0 => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                if cores <= 2 {
                    1
                } else {
                    cores
                }
            }
            n => n,
        }
    }
}

/// `[admin]`: the HTTP listener for /metrics, /healthz, /readyz, /topology, /reload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// `host:port`, or a port alone for that port on loopback; no admin
    /// listener when unset.
    pub address: Option<String>,
    /// Whether the status page (and `/status`) lists clients' addresses.
    #[serde(default)]
    pub show_clients: bool,
    /// A token every endpoint but `/healthz` and `/readyz` then requires
    /// (`Authorization: Bearer <token>`, or `?token=` for the status
    /// page); without one, `POST /reload` is refused unless the listener
    /// is on loopback. Or the first line of `token_file`, read at load.
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
}

impl Admin {
    /// Where the listener binds: `address`, a bare port meaning that port
    /// on loopback.
    pub fn bind_address(&self) -> Option<String> {
        let address = self.address.as_deref()?;
        Some(match address.parse::<u16>() {
            Ok(port) => format!("127.0.0.1:{port}"),
            Err(_) => address.to_string(),
        })
    }

    /// Reads the token from its file.
    fn resolve(&mut self) -> Result<(), ConfigError> {
        if let Some(path) = &self.token_file {
            if self.token.is_some() {
                return Err(invalid(
                    "admin.token_file",
                    "set token or token_file, not both",
                ));
            }
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid("admin.token_file", format!("{}: {e}", path.display())))?;
            self.token = Some(text.lines().next().unwrap_or_default().to_string());
        }
        if self.token.as_deref().is_some_and(str::is_empty) {
            return Err(invalid("admin.token", "must not be empty"));
        }
        Ok(())
    }
}

/// `[slowlog]`: like Redis's slowlog-log-slower-than and slowlog-max-len.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Slowlog {
    /// Requests taking at least this many microseconds are logged (as Redis
    /// does); negative disables.
    pub slower_than_us: i64,
    pub max_len: usize,
}

impl Default for Slowlog {
    fn default() -> Self {
        Slowlog {
            slower_than_us: 10_000,
            max_len: 128,
        }
    }
}

/// `[shutdown]`: draining on SIGTERM/SIGINT.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Longest wait for clients to finish before the proxy exits anyway.
    pub grace_period_ms: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            grace_period_ms: 10_000,
        }
    }
}

/// `[listen]`: where clients connect and how they authenticate.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listen {
    /// A TLS listener beside the plain ones.
    #[serde(default)]
    pub tls: Option<ListenTls>,
    /// TCP `host:port`.
    pub address: Option<String>,
    /// Path of a unix socket to listen on as well (or instead).
    pub unix_socket: Option<PathBuf>,
    /// Octal file mode of the unix socket, as a string ("660").
    pub unix_socket_mode: String,
    /// When set, clients must AUTH (or HELLO ... AUTH) first.
    pub password: Option<String>,
    /// The user name accepted by `AUTH user pass`, besides "default".
    pub username: Option<String>,
    /// How many databases SELECT accepts (0 .. databases-1); each backend must
    /// have at least this many.
    pub databases: u32,
    /// TCP keepalive on clients' connections, as Redis's `tcp-keepalive`
    /// (see [`crate::keepalive`]); 0: off.
    pub tcp_keepalive_s: u64,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            tls: None,
            address: None,
            unix_socket: None,
            unix_socket_mode: "660".into(),
            password: None,
            username: None,
            databases: 16,
            tcp_keepalive_s: 300,
        }
    }
}

/// `[keys]`: which keys clients may touch.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keys {
    /// Allowed key prefixes; empty means every key.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// SHA1s (lower-case hex) of the scripts that may run while prefixes
    /// are set: a script can touch keys it does not declare.
    #[serde(default)]
    pub scripts: Vec<String>,
    /// FLUSHDB and FLUSHALL run (on every backend; with prefixes set, on
    /// the keys under them only). Refused otherwise.
    #[serde(default)]
    pub allow_flush: bool,
    /// A MULTI/EXEC whose keys live on several backends runs as one
    /// transaction per backend (each atomic, not all together) instead of
    /// being refused with CROSSSLOT. On by default: the transactions sites
    /// send over many keys are batches of writes (django-redis's set_many,
    /// Laravel's putMany) that lose nothing split, while a CROSSSLOT leaves
    /// phpredis and Predis inside the MULTI; never after a WATCH.
    #[serde(default = "yes")]
    pub split_transactions: bool,
    /// `CONFIG SET notify-keyspace-events` runs, on every backend (Spring
    /// Session sends it at start-up). Refused otherwise.
    #[serde(default)]
    pub allow_keyspace_config: bool,
    /// RESTORE runs for clients held to key prefixes. Off by default: a
    /// crafted DUMP payload can crash a backend that does not check it
    /// (Redis 7's `sanitize-dump-payload no`), taking every user's
    /// sessions with it. Set it only with backends that sanitize.
    #[serde(default)]
    pub allow_restore: bool,
    /// Channels every client may use (glob patterns, Redis's ACL
    /// `&pattern`); unset: every channel without `prefixes`, only their
    /// keys' notifications with them.
    #[serde(default)]
    pub channels: Option<Vec<String>>,
    /// Two characters, `"{}"` as Redis Cluster and twemproxy use them: a
    /// key with a non-empty part between the first opening one and the
    /// next closing one is routed by that part alone, so related keys stay
    /// together. Off by default (keys route by their whole bytes).
    #[serde(default)]
    pub hash_tag: Option<String>,
    /// Backend parameters clients may CONFIG SET (on every backend) and
    /// CONFIG GET (from the first), in Redis's names; others are refused.
    #[serde(default)]
    pub config_set: Vec<String>,
}

impl Default for Keys {
    fn default() -> Self {
        Keys {
            prefixes: Vec::new(),
            scripts: Vec::new(),
            allow_flush: false,
            split_transactions: true,
            allow_keyspace_config: false,
            allow_restore: false,
            channels: None,
            hash_tag: None,
            config_set: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}

impl Keys {
    /// `hash_tag`'s two characters, once validated.
    pub fn hash_tag(&self) -> Option<[u8; 2]> {
        let tag = self.hash_tag.as_deref()?.as_bytes();
        Some([*tag.first()?, *tag.get(1)?])
    }
}

/// `[reload]`: how a reload that moves keys reaches several proxies.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReloadConfig {
    /// Every proxy in front of the same backends is reloaded within this
    /// long of the first. A reload that changes where keys go first keeps
    /// the old layout for this long, bringing back any key that a proxy
    /// already on the new layout moved; then it switches, and its mover
    /// starts this long after that. 0 for a single proxy: at once.
    pub settle_ms: u64,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig { settle_ms: 5000 }
    }
}

impl ReloadConfig {
    pub fn settle(&self) -> Duration {
        Duration::from_millis(self.settle_ms)
    }
}

/// `[pool]`: backend connections and timeouts, for every backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Pool {
    /// Connections per backend, shared by all clients.
    pub connections: usize,
    pub connect_timeout_ms: u64,
    /// The longest a request waits for its backend's reply.
    pub request_timeout_ms: u64,
    /// First and last reconnect delay; the delay doubles, with jitter.
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    /// Requests written to one backend connection but not yet answered.
    pub max_pending: usize,
    /// What a key's clients get while its backend is down.
    pub on_backend_down: OnBackendDown,
    /// Consecutive failures that mark a backend down, and consecutive
    /// successes that mark it up again.
    pub health_failures: u32,
    pub health_successes: u32,
    /// Timeout of each question to a sentinel (and of the ROLE check).
    pub sentinel_timeout_ms: u64,
    /// How often the master is re-checked even without a `+switch-master` event.
    pub sentinel_recheck_ms: u64,
    /// A backend is probed (PING after the handshake) this often while it
    /// is down or idle, so a returning backend is up without client traffic
    /// and a dead idle one is noticed before a user's request is.
    pub probe_interval_ms: u64,
    /// Connections a backend may have held for single clients at once
    /// (a WATCH until its EXEC), besides the shared ones.
    pub max_held_connections: usize,
    /// A connection given back by a blocking command (or made ahead for
    /// the next lease) that no lease takes for this long closes, but the
    /// last of each worker and protocol (0: never).
    pub spare_idle_s: u64,
    /// A shared backend connection older than this is replaced (0: never):
    /// it takes no new request, its replies come in, and it reconnects,
    /// the requests meanwhile waiting for the new one. For services that
    /// close connections after a while (ElastiCache IAM: 12 hours).
    pub max_connection_age_s: u64,
    /// A backend given by host name has its name resolved again this often
    /// (0: only at each connect); a shared connection whose address is no
    /// longer among the answers is replaced, as an aged one is.
    pub dns_refresh_s: u64,
    /// A hosts file (`address name...` lines) consulted before the system
    /// resolver, read at each lookup: to pin a backend's name without
    /// touching /etc/hosts, and for tests that move a name.
    pub hosts_file: Option<PathBuf>,
    /// TCP keepalive on backend and sentinel connections (see
    /// [`crate::keepalive`]); 0: off.
    pub tcp_keepalive_s: u64,
}

/// `[pool] on_backend_down`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBackendDown {
    /// A fast error; no key moves, so nobody sees a stale or empty session
    /// when the backend returns.
    #[default]
    Error,
    /// The key is served by the next rendezvous candidate while its owner is
    /// down: users get a fresh session instead of an error.
    Next,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            connections: 1,
            connect_timeout_ms: 1000,
            request_timeout_ms: 1000,
            backoff_min_ms: 50,
            backoff_max_ms: 2000,
            max_pending: 16 * 1024,
            on_backend_down: OnBackendDown::default(),
            health_failures: 3,
            health_successes: 2,
            sentinel_timeout_ms: 300,
            sentinel_recheck_ms: 1000,
            probe_interval_ms: 500,
            max_held_connections: 64,
            spare_idle_s: 60,
            max_connection_age_s: 0,
            dns_refresh_s: 30,
            hosts_file: None,
            tcp_keepalive_s: 60,
        }
    }
}

impl Pool {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// `[limits]`: what one client, and all of them together, may cost.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Simultaneous client connections; further ones wait in the accept queue.
    pub max_clients: usize,
    /// Largest request, in bytes.
    pub max_request_bytes: usize,
    /// Requests one client may have in flight before the proxy stops reading it.
    pub max_pipeline: usize,
    /// Largest reply accepted from a backend; a larger one (or one nested
    /// too deep) is a protocol error that re-makes that connection.
    pub max_reply_bytes: usize,
    /// Unread reply bytes one client may let pile up before it is closed
    /// (Redis's client-output-buffer-limit); 0: no limit.
    pub client_output_bytes: usize,
    /// Bytes all clients' buffers may hold together; over it, the client
    /// holding the most is closed (Redis's maxmemory-clients); 0: no limit.
    pub max_memory_bytes: usize,
    /// Seconds a client may stay idle before it is closed (Redis's
    /// `timeout`); 0: never.
    pub idle_timeout_s: u64,
    /// Channels, patterns and shard channels one client may be subscribed
    /// to at once; a (P|S)SUBSCRIBE beyond it is refused.
    pub max_subscriptions: usize,
    /// The largest COUNT a client held to key prefixes sends with SCAN: a
    /// larger one is lowered to it, so one step never walks a backend's
    /// whole keyspace for others' keys.
    pub max_scan_count: usize,
    /// Wrong passwords one connection may send before it is closed (after
    /// the third, each answer waits longer, up to 2 s); 0: no limit.
    pub auth_failures_per_connection: u32,
    /// Wrong passwords one source address may send in a minute; beyond
    /// them its connections are closed at their next try until the minute
    /// is over; 0: no limit.
    pub auth_failures_per_address: u32,
    /// Keys the CLIENT TRACKING table may remember (Redis's
    /// `tracking-table-max-keys`); beyond it, keys are evicted and their
    /// clients told they changed; 0: no limit.
    pub tracking_table_keys: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_clients: 10_000,
            max_request_bytes: 64 * 1024 * 1024,
            max_pipeline: 1024,
            // Redis's proto-max-bulk-len.
            max_reply_bytes: 512 * 1024 * 1024,
            client_output_bytes: 64 * 1024 * 1024,
            max_memory_bytes: 1024 * 1024 * 1024,
            idle_timeout_s: 0,
            max_subscriptions: 100_000,
            max_scan_count: 1000,
            auth_failures_per_connection: 10,
            auth_failures_per_address: 100,
            tracking_table_keys: 1_000_000,
        }
    }
}

/// `[listen] tls = { address, cert, key, client_ca }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenTls {
    /// `host:port` of the TLS listener.
    pub address: String,
    /// PEM certificate chain and private key.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Clients must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
}

impl Config {
    /// A named user.
    pub fn user(&self, name: &[u8]) -> Option<&User> {
        self.users.iter().find(|u| u.name.as_bytes() == name)
    }

    /// The channels a client of `user` (`None`: the default user) may use.
    pub fn channel_policy(&self, user: Option<&User>) -> crate::pubsub::policy::ChannelPolicy {
        crate::pubsub::policy::ChannelPolicy::new(
            (self.keys.channels.as_deref(), &self.keys.prefixes),
            user.map(|u| (u.channels.as_deref(), &u.prefixes[..])),
        )
    }

    /// Whether a client starts authenticated: only when the default user
    /// has no password and no named user is configured (named users would
    /// mean nothing if the default user could do everything unasked).
    pub fn open_by_default(&self) -> bool {
        self.listen.password.is_none() && self.users.is_empty()
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with_text(path).map(|(config, _)| config)
    }

    /// [`Config::load`], with the text it read (a reload keeps it).
    pub fn load_with_text(path: &Path) -> Result<(Config, String), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config = Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })?;
        Ok((config, text))
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<config>"),
            message: e.to_string(),
        })?;
        for (i, user) in config.users.iter_mut().enumerate() {
            user.resolve(&format!("users[{i}]"))?;
        }
        config.admin.resolve()?;
        config.validate()?;
        Ok(config)
    }
    /// The unix socket's file mode, parsed from its octal string.
    pub fn unix_socket_mode(&self) -> Result<u32, ConfigError> {
        let mode = &self.listen.unix_socket_mode;
        u32::from_str_radix(mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                invalid(
                    "listen.unix_socket_mode",
                    format!("'{mode}' is not an octal mode like \"660\""),
                )
            })
    }

    /// The router's view of the backends: `(id, weight)` in config order.
    pub fn route_members(&self) -> impl Iterator<Item = (&str, f64)> {
        self.backends.iter().map(|b| (b.id.as_str(), b.weight))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped example (the issue's example config, with comments).
    const EXAMPLE: &str = include_str!("../../config/example.toml");

    fn err(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn the_issue_example_parses() {
        let config = Config::parse(EXAMPLE).unwrap();
        assert_eq!(config.backends.len(), 2);
        assert_eq!(config.backends[1].weight, 2.0);
        assert_eq!(config.pool.connections, 1);
        assert_eq!(
            config.backends[1].target("b").unwrap().source,
            Source::Fixed(Endpoint::Tcp("127.0.0.1:7002".into()))
        );
    }

    #[test]
    fn the_admin_listener_takes_a_port_on_loopback_and_a_token() {
        let config = Config::parse(&EXAMPLE.replace(
            "address = \"127.0.0.1:9180\"",
            "address = \"9181\"\ntoken = \"t\"",
        ))
        .unwrap();
        assert_eq!(
            config.admin.bind_address().as_deref(),
            Some("127.0.0.1:9181")
        );
        assert_eq!(config.admin.token.as_deref(), Some("t"));
        let dir = std::env::temp_dir().join(format!("sp-token-{}", std::process::id()));
        std::fs::write(&dir, "from-file\nsecond line\n").unwrap();
        let config = Config::parse(&EXAMPLE.replace(
            "address = \"127.0.0.1:9180\"",
            &format!(
                "address = \"127.0.0.1:9180\"\ntoken_file = {:?}",
                dir.display().to_string()
            ),
        ))
        .unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(config.admin.token.as_deref(), Some("from-file"));
        let both = EXAMPLE.replace(
            "address = \"127.0.0.1:9180\"",
            "address = \"127.0.0.1:9180\"\ntoken = \"a\"\ntoken_file = \"/x\"",
        );
        assert!(err(&both).contains("admin.token_file"));
    }

    #[test]
    fn errors_name_the_field() {
        assert!(err(&EXAMPLE.replace("weight = 2", "weight = 0")).contains("backends[1].weight"));
        assert!(err(&EXAMPLE.replace("id = \"b\"", "id = \"a\"")).contains("backends[1].id"));
        assert!(err(&EXAMPLE.replace("weight = 2", "wieght = 2")).contains("wieght"));
        assert!(
            err(&EXAMPLE.replace("redis://127.0.0.1:7002", "http://x")).contains("backends[1].url")
        );
        assert!(err(&EXAMPLE.replace("127.0.0.1:7001", "nowhere")).contains("backends[0].address"));
        assert!(err(&EXAMPLE.replace("\"session:\"", "\"\"")).contains("keys.prefixes[0]"));
        let both = EXAMPLE.replace(
            "address = \"127.0.0.1:7001\"",
            "address = \"127.0.0.1:7001\"\nunix_socket = \"/x\"",
        );
        assert!(err(&both).contains("backends[0]"));
    }

    #[test]
    fn sentinel_backends() {
        let text = EXAMPLE.replace(
            "address = \"127.0.0.1:7001\"",
            "sentinel = { master = \"shard-a\", addresses = [\"127.0.0.1:26379\", \"127.0.0.1:26380\"] }\nmin_replicas_ack = 1",
        );
        let config = Config::parse(&text).unwrap();
        assert_eq!(config.backends[0].min_replicas_ack, 1);
        match config.backends[0].target("a").unwrap().source {
            Source::Sentinel(s) => assert_eq!(s.master, "shard-a"),
            other => panic!("{other:?}"),
        }
        let bad = text.replace("127.0.0.1:26380", "nowhere");
        assert!(err(&bad).contains("backends[0].sentinel.addresses[1]"));
        let both = text.replace("min_replicas_ack = 1", "address = \"127.0.0.1:1\"");
        assert!(err(&both).contains("exactly one of"));
        let policy = format!("{text}\n[pool]\non_backend_down = \"next\"");
        assert_eq!(
            Config::parse(&policy).unwrap().pool.on_backend_down,
            OnBackendDown::Next
        );
        assert!(
            err(&text.replace("[keys]", "[pool]\non_backend_down = \"maybe\"\n[keys]"))
                .contains("on_backend_down")
        );
    }

    #[test]
    fn runtime_threads() {
        let config = Config::parse(EXAMPLE).unwrap();
        let auto = config.runtime.threads();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(auto, if cores <= 2 { 1 } else { cores });
        let fixed = Config::parse(&format!("{EXAMPLE}\n[runtime]\nthreads = 3")).unwrap();
        assert_eq!(fixed.runtime.threads(), 3);
        assert_eq!(config.pool.connections, 1);
    }

    #[test]
    fn urls() {
        let t = parse_url("redis://user:secret@10.0.0.1:7000").unwrap();
        assert_eq!(
            t.source,
            Source::Fixed(Endpoint::Tcp("10.0.0.1:7000".into()))
        );
        assert_eq!(
            (t.username.as_deref(), t.password.as_deref()),
            (Some("user"), Some("secret"))
        );
        let t = parse_url("redis://:secret@host").unwrap();
        assert_eq!(t.source, Source::Fixed(Endpoint::Tcp("host:6379".into())));
        assert_eq!((t.username, t.password.as_deref()), (None, Some("secret")));
        assert_eq!(
            parse_url("unix:///run/redis.sock").unwrap().source,
            Source::Fixed(Endpoint::Unix("/run/redis.sock".into()))
        );
        assert!(parse_url("redis://h:1/3").is_err());
        let tls = parse_url("rediss://:pw@h:6380").unwrap();
        assert_eq!(tls.tls, Some(TlsClient::default()));
        assert_eq!(tls.password.as_deref(), Some("pw"));
        assert_eq!(parse_url("redis://h:1").unwrap().tls, None);
    }

    #[test]
    fn migration_from_takes_backend_fields_and_is_checked() {
        let base = "[listen]\naddress = \"127.0.0.1:1\"\n\
                    [[backends]]\nid = \"a\"\naddress = \"127.0.0.1:2\"\n[migration]\n";
        let config = Config::parse(&format!(
            "{base}from = [ {{ id = \"old\", url = \"redis://:pw@127.0.0.1:3\" }} ]\n"
        ))
        .unwrap();
        let migration = config.migration.unwrap();
        assert_eq!(migration.hash, OldHash::Rendezvous);
        assert_eq!(migration.keys_per_second, 1000);
        let tuning = MigrationTuning::of(Some(&migration));
        assert_eq!(tuning, MigrationTuning::of(None));
        assert_eq!(tuning.gone_after, std::time::Duration::from_secs(30));
        assert_eq!(tuning.tombstone_for.as_secs(), 14 * 24 * 3600);
        assert_eq!(
            migration.from[0].target("f").unwrap().password.as_deref(),
            Some("pw")
        );
        // Without old servers, the section tunes the moves after a reload.
        let tuning_only = Config::parse(&format!("{base}keys_per_second = 7\n")).unwrap();
        let tuning_only = tuning_only.migration.unwrap();
        assert!(tuning_only.from.is_empty());
        assert_eq!(MigrationTuning::of(Some(&tuning_only)).keys_per_second, 7);
        assert!(Config::parse(&format!("{base}from = []\n")).is_ok());
        // A site moving onto the proxy from a Redis Cluster names it so.
        let from_cluster = Config::parse(&format!(
            "{base}from = [ {{ id = \"old\", cluster = {{ seeds = [\"127.0.0.1:7000\"] }} }} ]\n"
        ))
        .unwrap();
        assert!(from_cluster.migration.unwrap().from[0].cluster.is_some());
        assert!(err(&format!(
            "{base}keys_per_second = 0\nfrom = [ {{ id = \"o\", address = \"h:1\" }} ]\n"
        ))
        .contains("migration.keys_per_second"));
        for field in ["gone_after_s", "tombstone_ttl_s"] {
            assert!(err(&format!(
                "{base}{field} = 0\nfrom = [ {{ id = \"o\", address = \"h:1\" }} ]\n"
            ))
            .contains(&format!("migration.{field}")));
        }
        // twemproxy weights are whole numbers.
        assert!(err(&format!(
            "{base}hash = \"ketama\"\nfrom = [ {{ id = \"o\", address = \"h:1\", weight = 1.5 }} ]\n"
        ))
        .contains("migration.from[0].weight"));
        assert!(err(&format!(
            "{base}from = [ {{ id = \"o\", address = \"h:1\" }}, {{ id = \"o\", address = \"h:2\" }} ]\n"
        ))
        .contains("migration.from[1].id"));
        assert!(err(&format!("{base}from = [ {{ id = \"o\" }} ]\n")).contains("migration.from[0]"));
    }

    #[test]
    fn a_cluster_backend_has_seeds_and_shares_credentials_and_tls() {
        let base = "[listen]\naddress = \"127.0.0.1:0\"\n[[backends]]\nid = \"c\"\n";
        let config = Config::parse(&format!(
            "{base}cluster = {{ seeds = [\"10.0.0.1:7000\", \"10.0.0.2:7000\"], password = \"pw\", tls = {{}} }}\n"
        ))
        .unwrap();
        let target = config.backends[0].target("backends[0]").unwrap();
        assert_eq!(
            target.source,
            Source::Cluster(vec!["10.0.0.1:7000".into(), "10.0.0.2:7000".into()])
        );
        assert_eq!(target.password.as_deref(), Some("pw"));
        assert!(target.tls.is_some());
        assert!(err(&format!("{base}cluster = {{ seeds = [] }}\n")).contains("cluster.seeds"));
        assert!(
            err(&format!("{base}cluster = {{ seeds = [\"nohost\"] }}\n"))
                .contains("cluster.seeds[0]")
        );
        assert!(err(&format!(
            "{base}address = \"a:1\"\ncluster = {{ seeds = [\"b:1\"] }}\n"
        ))
        .contains("exactly one of"));
    }
}
