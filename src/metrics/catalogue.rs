//! The series the proxy exports, in one table (see [`CATALOGUE`]).

use super::{BACKEND_DURATION, MIGRATION_MISSES, MIGRATION_MOVED, REQUEST_DURATION};

/// Every series the proxy exports: name, type, labels, meaning. `describe`
/// gives the exporter each HELP line from here, the proxy's own histograms
/// print theirs from here, and a test keeps docs/operations.md's reference table equal
/// to it.
pub const CATALOGUE: &[(&str, &str, &str, &str)] = &[
    (
        "session_proxy_requests_total",
        "counter",
        "command, outcome",
        "Requests answered, by command and outcome (ok or error).",
    ),
    (
        REQUEST_DURATION,
        "histogram",
        "command",
        "Client-observed request latency: request decoded to reply ready, in seconds.",
    ),
    (
        BACKEND_DURATION,
        "histogram",
        "backend",
        "Backend round trip: command written to its reply read, in seconds.",
    ),
    (
        "session_proxy_client_connections",
        "gauge",
        "",
        "Client connections open now.",
    ),
    (
        "session_proxy_worker_client_connections",
        "gauge",
        "worker",
        "Client connections open now, by the worker thread serving them.",
    ),
    (
        "session_proxy_received_bytes_total",
        "counter",
        "",
        "Bytes read from clients.",
    ),
    (
        "session_proxy_sent_bytes_total",
        "counter",
        "",
        "Bytes written to clients.",
    ),
    (
        "session_proxy_refused_keys_total",
        "counter",
        "",
        "Requests refused because a key is outside the allowed prefixes.",
    ),
    (
        MIGRATION_MOVED,
        "counter",
        "",
        "Keys moved from an old location to their owner (read-through and background mover).",
    ),
    (
        MIGRATION_MISSES,
        "counter",
        "",
        "Client requests whose key was missing on its owner and found at its old location.",
    ),
    (
        "session_proxy_refused_commands_total",
        "counter",
        "",
        "Requests refused: unknown command, or not permitted to the user.",
    ),
    (
        "session_proxy_auth_failures_total",
        "counter",
        "",
        "Wrong passwords (AUTH, HELLO AUTH) from clients.",
    ),
    (
        "session_proxy_rejected_clients_total",
        "counter",
        "",
        "Connections refused because max_clients were connected.",
    ),
    (
        "session_proxy_clients_closed_total",
        "counter",
        "reason",
        "Clients closed by a limit: output_limit, max_memory, idle_timeout or auth_failures.",
    ),
    (
        "session_proxy_reloads_total",
        "counter",
        "outcome",
        "Config reloads, by outcome (ok or error).",
    ),
    (
        "session_proxy_backend_up",
        "gauge",
        "backend",
        "1 while the backend is considered up, 0 while down.",
    ),
    (
        "session_proxy_backend_connections",
        "gauge",
        "backend",
        "Connections to the backend established now.",
    ),
    (
        "session_proxy_backend_connects_total",
        "counter",
        "backend",
        "Connections made to the backend since start (client connections only, not probes): it stays put while the backend is healthy.",
    ),
    (
        "session_proxy_backend_address_changes_total",
        "counter",
        "backend",
        "Times a backend's connection reached another address than the one before: a host name that moved (a managed service's failover, a DNS change followed by `[pool] dns_refresh_s`).",
    ),
    (
        "session_proxy_backend_errors_total",
        "counter",
        "backend",
        "Failed connects, lost connections, timeouts and failed probes.",
    ),
    (
        "session_proxy_backend_protocol_errors_total",
        "counter",
        "backend",
        "Backend replies refused as invalid, too deep or too large (each re-makes its connection).",
    ),
    (
        "session_proxy_backend_probes_total",
        "counter",
        "backend, outcome",
        "Health probes (PING) of a down or idle backend, by outcome.",
    ),
    (
        "session_proxy_backend_cross_thread_jobs_total",
        "counter",
        "backend",
        "Backend jobs queued from another thread than the worker whose connection carries them (0 when every request stays on its thread).",
    ),
    (
        "session_proxy_backend_fast_failures_total",
        "counter",
        "backend",
        "Requests answered at once with an error because the backend was down.",
    ),
    (
        "session_proxy_sentinel_switches_total",
        "counter",
        "backend",
        "Master switches followed for a Sentinel backend.",
    ),
    (
        "session_proxy_failover_holds_total",
        "counter",
        "backend",
        "Sentinel failovers during which the backend's requests were held (none reach a master being demoted).",
    ),
    (
        "session_proxy_held_requests_total",
        "counter",
        "backend",
        "Requests that reached the backend's connection while a failover held it, and waited; for a fixed endpoint, also the commands it refused (-READONLY, -LOADING) and that wait to go again.",
    ),
    (
        "session_proxy_released_requests_total",
        "counter",
        "backend",
        "Held requests sent once the failover ended (to the new master, or the old one if it aborted).",
    ),
    (
        "session_proxy_backend_holding",
        "gauge",
        "backend",
        "1 while a failover holds the backend's requests, 0 otherwise.",
    ),
    (
        "session_proxy_sentinels_known",
        "gauge",
        "backend",
        "Sentinels known for a Sentinel backend (configured and learned).",
    ),
];
