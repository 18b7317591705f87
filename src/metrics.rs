//! Prometheus metrics, through the `metrics` crate.
//!
//! Every handle is created once (per command, per backend) and kept in a
//! struct field; nothing is looked up by name per request. Without an
//! installed recorder (the library used in tests) the handles are no-ops.

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

use crate::protocol::command::TABLE;

/// Bucket bounds for every `_seconds` histogram: 50 µs to 2.5 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5,
];

/// Per-command handles.
pub struct CommandMetrics {
    pub ok: Counter,
    pub error: Counter,
    /// Client-observed latency: request decoded to reply encoded.
    pub latency: Histogram,
}

/// The proxy-wide handles.
pub struct Metrics {
    /// Indexed like the command table; the extra last entry is unknown commands.
    pub commands: Vec<CommandMetrics>,
    pub client_connections: Gauge,
    pub received_bytes: Counter,
    pub sent_bytes: Counter,
    pub refused_keys: Counter,
    pub refused_commands: Counter,
    pub reloads_ok: Counter,
    pub reloads_failed: Counter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let names = TABLE
            .iter()
            .map(|spec| spec.name)
            .chain(std::iter::once("unknown"));
        let commands = names
            .map(|name| CommandMetrics {
                ok: counter!("session_proxy_requests_total", "command" => name, "outcome" => "ok"),
                error: counter!("session_proxy_requests_total", "command" => name, "outcome" => "error"),
                latency: histogram!("session_proxy_request_duration_seconds", "command" => name),
            })
            .collect();
        Metrics {
            commands,
            client_connections: gauge!("session_proxy_client_connections"),
            received_bytes: counter!("session_proxy_received_bytes_total"),
            sent_bytes: counter!("session_proxy_sent_bytes_total"),
            refused_keys: counter!("session_proxy_refused_keys_total"),
            refused_commands: counter!("session_proxy_refused_commands_total"),
            reloads_ok: counter!("session_proxy_reloads_total", "outcome" => "ok"),
            reloads_failed: counter!("session_proxy_reloads_total", "outcome" => "error"),
        }
    }

    /// The handles for a command-table index (`TABLE.len()` for unknown).
    pub fn command(&self, index: usize) -> Option<&CommandMetrics> {
        self.commands.get(index)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Per-backend handles, shared by its connection tasks and its Sentinel monitor.
#[derive(Debug)]
pub struct BackendMetrics {
    /// Time from writing a command to reading its reply.
    pub latency: Histogram,
    /// Connections currently established.
    pub connections: Gauge,
    /// 1 while the backend is considered up.
    pub up: Gauge,
    pub errors: Counter,
    pub sentinel_switches: Counter,
    /// Sentinels the monitor knows of (configured and learned); 0 for a fixed backend.
    pub sentinels_known: Gauge,
    /// The same count, readable here for INFO and /topology.
    pub sentinels: std::sync::atomic::AtomicUsize,
}

impl BackendMetrics {
    pub fn new(id: &str) -> BackendMetrics {
        let id = id.to_string();
        let up = gauge!("session_proxy_backend_up", "backend" => id.clone());
        up.set(1.0);
        BackendMetrics {
            latency: histogram!("session_proxy_backend_request_duration_seconds", "backend" => id.clone()),
            connections: gauge!("session_proxy_backend_connections", "backend" => id.clone()),
            up,
            errors: counter!("session_proxy_backend_errors_total", "backend" => id.clone()),
            sentinel_switches: counter!("session_proxy_sentinel_switches_total", "backend" => id.clone()),
            sentinels_known: gauge!("session_proxy_sentinels_known", "backend" => id),
            sentinels: std::sync::atomic::AtomicUsize::new(0),
        }
    }
}
