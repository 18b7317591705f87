//! A backend's own series: its counts, state gauges and latency, kept in
//! the backend's [`BackendMetrics`] and rendered at each scrape for the
//! backends in force ([`render_backends`]), never in the recorder. A
//! recorder keeps a series for good once made, so a backend a reload
//! removed, or a cluster master replaced in a failover (a node address
//! that will not come back), would keep its series in every scrape:
//! `session_proxy_backend_up 0` paging for ever, and a scrape growing with
//! every node address ever seen.

use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::{header_of, unix_now, LatencyHistogram, Sharded, BACKEND_DURATION};

/// A count of a backend's, rendered with its labels (see [`render_backends`]).
#[derive(Debug, Default)]
pub struct Count(AtomicU64);

impl Count {
    pub fn increment(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Per-backend handles, shared by its connection tasks and its Sentinel monitor.
#[derive(Debug, Default)]
pub struct BackendMetrics {
    /// Time from writing a command to reading its reply (first reply of a
    /// read); rendered by [`BackendMetrics::render`], read by the status page.
    pub latency: LatencyHistogram,
    /// Replies read from the backend, and requests answered with a backend
    /// error instead (down, timed out, connection lost): the status page's
    /// rates.
    pub replies: Sharded,
    pub failed: Sharded,
    /// The labels of its series, rendered: `backend="a"`, and a cluster
    /// node's `node="host:port"`.
    pub labels: String,
    /// Connections made since start (a healthy backend's count stays put).
    /// Those established now, and whether the backend is up, are its
    /// health's, rendered as gauges at each scrape (see [`render_backends`]).
    pub connects: Count,
    pub errors: Count,
    /// Replies that were not valid, too deep or too large: each ended its connection.
    pub protocol_errors: Count,
    pub sentinel_switches: Count,
    /// Failovers during which the backend's requests were held, and whether
    /// they are now.
    pub failover_holds: Count,
    pub holding: AtomicBool,
    /// Requests that waited for a failover to end, and those of them sent
    /// afterwards (the rest timed out or their client left).
    pub held_requests: Count,
    pub released_requests: Count,
    /// Health probes, by outcome.
    pub probes_ok: Count,
    pub probes_failed: Count,
    /// Requests answered at once because the backend was down.
    pub fast_failures: Count,
    /// Jobs queued from a thread other than the worker whose connections
    /// carry them (0 while every client is served on a worker: see
    /// [`crate::workers`]).
    pub cross_thread: Count,
    /// Sentinels the monitor knows of (configured and learned); 0 for a
    /// fixed backend. Read for INFO, /topology and the gauge.
    pub sentinels: AtomicUsize,
    /// Their addresses, for the status page; kept by the Sentinel monitor.
    pub sentinel_list: Mutex<Vec<String>>,
    /// The last master switches, newest last.
    pub switches: Mutex<VecDeque<Switch>>,
    /// The address the backend's last connection reached (a host name's
    /// resolution), and how often it changed.
    pub resolved: Mutex<Option<std::net::SocketAddr>>,
    pub address_changes: Count,
}

/// A master switch the Sentinel monitor followed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Switch {
    pub at_unix: u64,
    pub from: String,
    pub to: String,
}

/// Switches kept per backend for the status page.
const SWITCHES_KEPT: usize = 10;

impl BackendMetrics {
    pub fn new(id: &str) -> BackendMetrics {
        BackendMetrics::labelled(&[("backend", id)])
    }

    /// A cluster backend's node: its series carry `backend` and `node`.
    pub fn for_node(backend: &str, node: &str) -> BackendMetrics {
        BackendMetrics::labelled(&[("backend", backend), ("node", node)])
    }

    fn labelled(labels: &[(&str, &str)]) -> BackendMetrics {
        BackendMetrics {
            labels: render_labels(labels),
            ..BackendMetrics::default()
        }
    }

    /// A connection to `endpoint` reached `peer`: a change from the last
    /// one reached is counted and logged (a moved host name).
    pub fn reached(&self, endpoint: &impl std::fmt::Display, peer: std::net::SocketAddr) {
        let Ok(mut resolved) = self.resolved.lock() else {
            return;
        };
        if let Some(before) = resolved.replace(peer).filter(|before| *before != peer) {
            self.address_changes.increment(1);
            tracing::info!(%endpoint, from = %before, to = %peer, "backend address changed");
        }
    }

    /// Records a master switch.
    pub fn switched(&self, from: String, to: String) {
        self.sentinel_switches.increment(1);
        if let Ok(mut switches) = self.switches.lock() {
            switches.push_back(Switch {
                at_unix: unix_now(),
                from,
                to,
            });
            while switches.len() > SWITCHES_KEPT {
                switches.pop_front();
            }
        }
    }

    /// The backend's latency histogram in Prometheus text.
    pub fn render(&self, out: &mut String) {
        self.latency.render(BACKEND_DURATION, &self.labels, out);
    }

    /// Its counts, in the order of [`COUNTS`].
    fn counts(&self) -> [u64; COUNTS.len()] {
        [
            &self.connects,
            &self.errors,
            &self.protocol_errors,
            &self.sentinel_switches,
            &self.failover_holds,
            &self.held_requests,
            &self.released_requests,
            &self.probes_ok,
            &self.probes_failed,
            &self.fast_failures,
            &self.cross_thread,
            &self.address_changes,
        ]
        .map(Count::get)
    }

    /// This backend's row of series, given what its health says.
    pub fn row(&self, up: bool, connections: usize) -> BackendRow<'_> {
        let sentinels = self.sentinels.load(Ordering::Relaxed);
        let holding = self.holding.load(Ordering::Relaxed);
        BackendRow {
            labels: &self.labels,
            states: [
                up as u64,
                connections as u64,
                holding as u64,
                sentinels as u64,
            ],
            counts: self.counts(),
        }
    }
}

/// The state gauges, in the order of a [`BackendRow`]'s states: up,
/// connections established now, a failover's hold, sentinels known.
const STATES: [&str; 4] = [
    "session_proxy_backend_up",
    "session_proxy_backend_connections",
    "session_proxy_backend_holding",
    "session_proxy_sentinels_known",
];

/// The counters, in the order of a [`BackendRow`]'s counts: each name
/// with the labels its series has beyond the backend's.
const COUNTS: [(&str, &str); 12] = [
    ("session_proxy_backend_connects_total", ""),
    ("session_proxy_backend_errors_total", ""),
    ("session_proxy_backend_protocol_errors_total", ""),
    ("session_proxy_sentinel_switches_total", ""),
    ("session_proxy_failover_holds_total", ""),
    ("session_proxy_held_requests_total", ""),
    ("session_proxy_released_requests_total", ""),
    ("session_proxy_backend_probes_total", ",outcome=\"ok\""),
    ("session_proxy_backend_probes_total", ",outcome=\"error\""),
    ("session_proxy_backend_fast_failures_total", ""),
    ("session_proxy_backend_cross_thread_jobs_total", ""),
    ("session_proxy_backend_address_changes_total", ""),
];

/// One backend's series at a scrape: its labels, state gauges and counts.
pub struct BackendRow<'a> {
    pub labels: &'a str,
    pub states: [u64; STATES.len()],
    pub counts: [u64; COUNTS.len()],
}

/// The state gauges and counters of the backends in force, in Prometheus
/// text, one family after another. A label set met twice is rendered once,
/// from its first: a scrape with a series twice would be refused whole.
pub fn render_backends<'a>(rows: impl IntoIterator<Item = BackendRow<'a>>, out: &mut String) {
    let mut seen = std::collections::HashSet::new();
    let rows: Vec<BackendRow> = rows.into_iter().filter(|r| seen.insert(r.labels)).collect();
    for (i, name) in STATES.iter().enumerate() {
        header_of(name, out);
        for row in &rows {
            let _ = writeln!(out, "{name}{{{}}} {}", row.labels, row.states[i]);
        }
    }
    for (i, (name, extra)) in COUNTS.iter().enumerate() {
        if i == 0 || COUNTS[i - 1].0 != *name {
            header_of(name, out);
        }
        for row in &rows {
            let _ = writeln!(out, "{name}{{{}{extra}}} {}", row.labels, row.counts[i]);
        }
    }
}

/// Labels as they appear between a series' braces, values escaped as the
/// exporter escapes them.
fn render_labels(labels: &[(&str, &str)]) -> String {
    use metrics_exporter_prometheus::formatting::sanitize_label_value;
    let pairs: Vec<String> = labels
        .iter()
        .map(|(key, value)| format!("{key}=\"{}\"", sanitize_label_value(value)))
        .collect();
    pairs.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_backend_in_force_has_its_series_once_and_no_other_has_any() {
        let a = BackendMetrics::new("a");
        let node = BackendMetrics::for_node("c", "10.0.0.1:7000");
        let again = BackendMetrics::new("a");
        a.holding.store(true, Ordering::Relaxed);
        a.probes_failed.increment(3);
        node.connects.increment(2);
        again.connects.increment(5);
        let mut out = String::new();
        let rows = [a.row(true, 0), node.row(true, 1), again.row(false, 0)];
        render_backends(rows, &mut out);
        let samples: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
        let node_labels = "backend=\"c\",node=\"10.0.0.1:7000\"";
        let expected = [
            "session_proxy_backend_up{backend=\"a\"} 1".to_string(),
            format!("session_proxy_backend_up{{{node_labels}}} 1"),
            "session_proxy_backend_connections{backend=\"a\"} 0".to_string(),
            format!("session_proxy_backend_connections{{{node_labels}}} 1"),
            "session_proxy_backend_holding{backend=\"a\"} 1".to_string(),
            format!("session_proxy_backend_holding{{{node_labels}}} 0"),
            "session_proxy_sentinels_known{backend=\"a\"} 0".to_string(),
            format!("session_proxy_sentinels_known{{{node_labels}}} 0"),
            "session_proxy_backend_connects_total{backend=\"a\"} 0".to_string(),
            format!("session_proxy_backend_connects_total{{{node_labels}}} 2"),
        ];
        assert_eq!(samples[..expected.len()], expected);
        assert_eq!(samples.len(), (STATES.len() + COUNTS.len()) * 2);
        assert!(samples
            .contains(&"session_proxy_backend_probes_total{backend=\"a\",outcome=\"error\"} 3"));
        assert!(out.contains("# TYPE session_proxy_backend_up gauge\n"));
        assert!(out.contains("# TYPE session_proxy_backend_connects_total counter\n"));
        // One header per family, the probes' two outcomes under one.
        assert_eq!(
            out.matches("# TYPE session_proxy_backend_probes_total ")
                .count(),
            1
        );
        // A backend gone is simply not among those rendered.
        let mut out = String::new();
        render_backends([node.row(true, 1)], &mut out);
        assert!(!out.contains("backend=\"a\""), "{out}");
        // Label values escaped as Prometheus wants them.
        let labels = [("backend", "c"), ("node", "x\"y\\z")];
        assert_eq!(render_labels(&labels), "backend=\"c\",node=\"x\\\"y\\\\z\"");
    }
}
