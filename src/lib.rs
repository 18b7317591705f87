//! session-proxy: a Redis-protocol proxy for web session stores.
//!
//! A request travels through the modules in this order:
//!
//! - [`workers`]: thread-per-core: one current-thread runtime per worker
//!   thread; a client, its requests and their backend connections stay on one.
//! - [`server`]: listeners (TCP, unix socket), the client limit, handing each
//!   client to a worker, draining.
//! - [`shared`]: the state every connection shares (the topology: config,
//!   router, backends; INFO counters, metrics, SLOWLOG), swapped on reload.
//! - [`client`]: one task per client connection: the loop (`client/mod.rs`),
//!   what Redis keeps per connection (`state.rs`), its batcher towards
//!   backends (`batcher.rs`), the reply order (`slot.rs`, `receive.rs`) and
//!   the replies going out (`output.rs`), whether a request may run
//!   (`admit.rs`), what each request becomes, decided once (`decide.rs`,
//!   with the pure routing plan of `plan.rs`) and carried out
//!   (`dispatch.rs`; sent to backends by `forward.rs`; the commands with a
//!   path of their own in `own_path.rs`; split replies merged by
//!   `merge.rs`), transactions (`transaction.rs`), keys a migration still
//!   moves (`migrate.rs`), blocking commands on leased connections
//!   (`leased.rs`), RENAME across backends (`rename.rs`), Pub/Sub
//!   subscriptions (`pubsub.rs`), the counts of what it did (`tally.rs`),
//!   the errors that echo the client's bytes (`errors.rs`),
//!   and the commands answered here, one file per family (`commands/`:
//!   AUTH, HELLO, CLIENT, COMMAND, CONFIG, INFO, SLOWLOG, and the
//!   connection's own: PING, RESET, SELECT, TIME).
//! - [`clients`]: every connected client's card, for CLIENT LIST and KILL.
//! - [`protocol`]: request framing, the command table (its types in
//!   `protocol/spec.rs`; the proxy's own commands in `protocol/command.rs`,
//!   and Redis's keyed ones with their key specs in `protocol/keyed.rs`,
//!   generated from COMMAND INFO), replies and their
//!   RESP2/RESP3 encoding (via `redis-protocol`), and `RedisError`, every
//!   error the proxy answers itself (its Display is the reply's text).
//! - [`pubsub`]: what a subscriber is subscribed to, Redis's confirmations,
//!   and the links that carry a client's subscriptions to every backend.
//! - [`tracking`]: CLIENT TRACKING through the proxy: the modes
//!   (`mode.rs`), the table of who read what (`table.rs`), each client's
//!   waiting invalidations (`inbox.rs`) and one link per backend that hears
//!   of every change there (`link.rs`).
//! - [`router`]: weighted rendezvous hashing of keys to backends, pinned.
//! - [`backend`]: pipelined connections to each Redis server, with timeouts,
//!   reconnection, health and the optional WAIT after writes: the pool handle
//!   in `backend/mod.rs`, `job` (what is asked and its errors), `health`,
//!   `lease` (connections leased to one client), `session` (what a connection owes, no I/O),
//!   `connection` (its task); `backend::lanes` shares a connection fairly
//!   between its clients; `backend::cluster` puts a Redis Cluster behind one
//!   backend (a backend per master, MOVED/ASK).
//! - [`report`]: one report per backend, for INFO, `/topology` and `/status`.
//! - [`resolve`]: where a backend's host name leads (a hosts file, then the
//!   system resolver).
//! - [`cluster`]: Redis Cluster's key space: hash slots, reading the slot map
//!   from CLUSTER SHARDS or SLOTS (`fetch` asks a node), redirections, a job's slot.
//! - [`migration`]: moving keys from an old layout (the topology before a
//!   reload, `[migration] from`, twemproxy's [`ketama`]) without logging
//!   anyone out: read-through on each command, and a background mover, which
//!   sees the topology only through `migration::Owners`; [`own_keys`]: the
//!   keys the proxy writes for itself (move locks, renames under way).
//! - [`sentinel`]: follows a Sentinel group's master and publishes it to the
//!   backend's connections.
//! - [`dial`]: opening a socket to Redis, the handshake, a few commands with
//!   AUTH, typed errors; the pool settings both of the above read.
//! - [`config`]: the TOML file and its defaults (`config/mod.rs`), backends
//!   and their targets (`backend.rs`), `[migration]` (`migration.rs`),
//!   validation (`validate.rs`).
//! - [`admin`]: the HTTP listener (/metrics, /healthz, /readyz, /topology,
//!   /reload); [`metrics`] holds the Prometheus handles, [`slowlog`] SLOWLOG,
//!   [`memory`] every client's buffers against `[limits] max_memory_bytes`.
//! - [`net`], [`shutdown`]: socket and signal plumbing; [`tls`]: rustls on
//!   both sides (configuration and handshakes), [`tls_stream`] the session
//!   carried by the connection's own socket; [`rare`]: futures a client
//!   waits on that almost never come, polled only after they woke it.
//!
//! Errors are typed at each boundary: [`protocol::ProtocolError`] (the client
//! framed a request wrongly), [`backend::BackendError`] (a backend failed),
//! [`dial::DialError`] (talking to a server outside the pipelined path failed),
//! [`config::ConfigError`] (the operator's file is wrong).
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth_guard;
pub mod aws_iam;
pub mod backend;
pub mod client;
pub mod clients;
pub mod cluster;
pub mod config;
pub mod dial;
pub mod errorstats;
pub mod fd_limit;
pub mod glob;
pub mod keepalive;
pub mod ketama;
pub mod memory;
pub mod metrics;
pub mod migration;
pub mod net;
pub mod own_keys;
pub mod protocol;
pub mod pubsub;
pub mod rare;
pub mod reload_state;
pub mod report;
pub mod resolve;
pub mod router;
pub mod sentinel;
pub mod server;
pub mod shared;
pub mod shutdown;
pub mod slowlog;
pub mod switch_time;
pub mod tls;
pub mod tls_stream;
pub mod topology;
pub mod tracking;
pub mod workers;

/// The Redis version the proxy reports in HELLO and INFO: the command
/// semantics it follows are Redis 7's.
pub const REDIS_VERSION: &str = "7.0.0";
