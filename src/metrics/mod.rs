//! Prometheus metrics, through the `metrics` crate.
//!
//! Every handle is created once (per command, per backend) and kept in a
//! struct field; nothing is looked up by name per request. Without an
//! installed recorder (the library used in tests) the handles are no-ops.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{counter, Counter};

use crate::protocol::command::TABLE;

mod backend;
mod catalogue;

/// Bucket bounds for every `_seconds` histogram: 50 µs to 2.5 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5,
];

/// The client-observed latency histogram's name.
const REQUEST_DURATION: &str = "session_proxy_request_duration_seconds";
/// The migration counters' names.
pub const MIGRATION_MOVED: &str = "session_proxy_migration_keys_moved_total";
pub const MIGRATION_MISSES: &str = "session_proxy_migration_misses_served_total";
/// The backend round-trip histogram's name.
pub const BACKEND_DURATION: &str = "session_proxy_backend_request_duration_seconds";

pub use backend::{render_backends, BackendMetrics, BackendRow, Count, Switch};
pub use catalogue::CATALOGUE;

/// Gives the installed recorder the HELP text of every series it exports.
pub fn describe() {
    for &(name, kind, _, help) in CATALOGUE {
        match kind {
            "counter" => metrics::describe_counter!(name, help),
            "gauge" => metrics::describe_gauge!(name, help),
            // The histograms are rendered here, with their HELP.
            _ => {}
        }
    }
}

/// The `# HELP` and `# TYPE` lines of one of the proxy's own histograms.
pub fn histogram_header(name: &str, out: &mut String) {
    header(name, "histogram", out);
}

fn header(name: &str, kind: &str, out: &mut String) {
    let help = CATALOGUE
        .iter()
        .find(|entry| entry.0 == name)
        .map_or("", |entry| entry.3);
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The `# HELP` and `# TYPE` lines of a series of the catalogue rendered
/// by hand (one kept in atomics elsewhere).
pub fn header_of(name: &str, out: &mut String) {
    let kind = CATALOGUE
        .iter()
        .find(|entry| entry.0 == name)
        .map_or("untyped", |entry| entry.1);
    header(name, kind, out);
}

/// One unlabelled counter or gauge kept elsewhere (INFO's counters, which
/// are the one count of what they count), with its HELP and TYPE lines.
pub fn render_value(name: &str, value: u64, out: &mut String) {
    header_of(name, out);
    let _ = writeln!(out, "{name} {value}");
}

/// Shards a count may be split into (see [`Sharded`]): a count shared by
/// more workers than this has workers sharing a line again.
const MAX_SHARDS: usize = 64;

/// Shards for a count made now: one per worker of this thread's set.
fn shard_count() -> usize {
    crate::workers::count().clamp(1, MAX_SHARDS)
}

/// The shard this thread counts into, of `shards`: no thread-local lookup
/// with one (a single worker).
fn shard_of(shards: usize) -> usize {
    if shards == 1 {
        0
    } else {
        crate::workers::index() % shards
    }
}

/// One cache line of a sharded count.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Line(AtomicU64);

/// A count every worker thread adds to in a cache line of its own (see
/// [`crate::workers`]), read as the sum: workers counting at once do not
/// pass one line between their cores on every request.
#[derive(Debug)]
pub struct Sharded {
    lines: Box<[Line]>,
}

impl Default for Sharded {
    fn default() -> Self {
        Sharded {
            lines: (0..shard_count()).map(|_| Line::default()).collect(),
        }
    }
}

impl Sharded {
    pub fn add(&self, n: u64) {
        let line = &self.lines[shard_of(self.lines.len())];
        line.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.lines.iter().map(|l| l.0.load(Ordering::Relaxed)).sum()
    }
}

/// A histogram over [`LATENCY_BUCKETS`] kept as counters. Recording costs two
/// atomic adds and its memory is fixed: the exporter's own histograms keep
/// every sample until the next upkeep, which at a million requests a second
/// is tens of megabytes and grows with the request rate, not the config.
#[derive(Debug)]
pub struct LatencyHistogram {
    /// One set of counts per worker (see [`Sharded`]).
    shards: Box<[HistogramShard]>,
}

/// A worker's counts: per bucket (not cumulative; the last is above every
/// bound), and the sum, in lines of their own.
#[derive(Debug)]
#[repr(align(128))]
struct HistogramShard {
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        let shard = || HistogramShard {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        };
        LatencyHistogram {
            shards: (0..shard_count()).map(|_| shard()).collect(),
        }
    }
}

impl LatencyHistogram {
    /// Records `count` requests that each took `took`.
    pub fn record(&self, took: Duration, count: u64) {
        let shard = &self.shards[shard_of(self.shards.len())];
        let seconds = took.as_secs_f64();
        let bucket = LATENCY_BUCKETS.partition_point(|&bound| bound < seconds);
        if let Some(counter) = shard.counts.get(bucket) {
            counter.fetch_add(count, Ordering::Relaxed);
        }
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        shard
            .sum_nanos
            .fetch_add(nanos.saturating_mul(count), Ordering::Relaxed);
    }

    /// Requests per bucket so far (not cumulative; the last is above every
    /// bound), for the status page's percentiles.
    pub fn counts(&self) -> Vec<u64> {
        (0..=LATENCY_BUCKETS.len())
            .map(|bucket| {
                self.shards
                    .iter()
                    .map(|s| s.counts[bucket].load(Ordering::Relaxed))
                    .sum()
            })
            .collect()
    }

    /// Requests recorded so far.
    pub fn total(&self) -> u64 {
        self.counts().iter().sum()
    }

    /// Time recorded so far, in nanoseconds.
    pub fn sum_nanos(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.sum_nanos.load(Ordering::Relaxed))
            .sum()
    }

    /// Appends the Prometheus text lines (buckets, sum, count) for one series.
    pub fn render(&self, name: &str, labels: &str, out: &mut String) {
        let mut cumulative = 0u64;
        for (i, count) in self.counts().into_iter().enumerate() {
            cumulative += count;
            let le = match LATENCY_BUCKETS.get(i) {
                Some(bound) => bound.to_string(),
                None => "+Inf".to_string(),
            };
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_nanos() as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// Per-command handles.
pub struct CommandMetrics {
    pub name: &'static str,
    /// `session_proxy_requests_total`, by outcome: counted by every worker,
    /// so sharded and rendered here (see [`Metrics::render`]).
    pub ok: Sharded,
    pub error: Sharded,
    /// Client-observed latency: request decoded to reply encoded.
    pub latency: LatencyHistogram,
}

/// The proxy-wide handles.
pub struct Metrics {
    /// Indexed like the command table; the extra last entry is unknown commands.
    pub commands: Vec<CommandMetrics>,
    pub refused_commands: Counter,
    /// Clients refused at accept because `max_clients` were connected.
    pub rejected_clients: Counter,
    /// Clients closed by a limit, by which: output, memory, idle.
    pub closed_output: Counter,
    pub closed_memory: Counter,
    pub closed_idle: Counter,
    pub closed_auth: Counter,
    /// Wrong passwords.
    pub auth_failures: Counter,
    pub reloads_ok: Counter,
    pub reloads_failed: Counter,
    /// Migrations count into these (see `migration`); made here so the
    /// series exist, at 0, before any migration.
    pub migration_moved: Counter,
    pub migration_misses: Counter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let names = TABLE
            .iter()
            .map(|spec| spec.name)
            .chain(std::iter::once("unknown"));
        let commands = names
            .map(|name| CommandMetrics {
                name,
                ok: Sharded::default(),
                error: Sharded::default(),
                latency: LatencyHistogram::default(),
            })
            .collect();
        Metrics {
            commands,
            refused_commands: counter!("session_proxy_refused_commands_total"),
            migration_moved: counter!(MIGRATION_MOVED),
            migration_misses: counter!(MIGRATION_MISSES),
            rejected_clients: counter!("session_proxy_rejected_clients_total"),
            closed_output: counter!("session_proxy_clients_closed_total", "reason" => "output_limit"),
            closed_memory: counter!("session_proxy_clients_closed_total", "reason" => "max_memory"),
            closed_idle: counter!("session_proxy_clients_closed_total", "reason" => "idle_timeout"),
            closed_auth: counter!("session_proxy_clients_closed_total", "reason" => "auth_failures"),
            auth_failures: counter!("session_proxy_auth_failures_total"),
            reloads_ok: counter!("session_proxy_reloads_total", "outcome" => "ok"),
            reloads_failed: counter!("session_proxy_reloads_total", "outcome" => "error"),
        }
    }

    /// The handles for a command-table index (`TABLE.len()` for unknown).
    pub fn command(&self, index: usize) -> Option<&CommandMetrics> {
        self.commands.get(index)
    }

    /// The Prometheus text of what is kept here rather than in the recorder:
    /// the per-command request counts and latency histograms.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let requests = "session_proxy_requests_total";
        header_of(requests, &mut out);
        for command in &self.commands {
            for (outcome, count) in [("ok", &command.ok), ("error", &command.error)] {
                let _ = writeln!(
                    out,
                    "{requests}{{command=\"{}\",outcome=\"{outcome}\"}} {}",
                    command.name,
                    count.get()
                );
            }
        }
        histogram_header(REQUEST_DURATION, &mut out);
        // Only commands that have run: the table has some 200.
        for command in self.commands.iter().filter(|c| c.latency.total() > 0) {
            let labels = format!("command=\"{}\"", command.name);
            command.latency.render(REQUEST_DURATION, &labels, &mut out);
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Seconds since the epoch, for event times.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_and_the_dashboard_use_only_exported_series() {
        let files = [
            include_str!("../../config/alerts.yml"),
            include_str!("../../config/grafana-dashboard.json"),
        ];
        let mut used = 0;
        for text in files {
            for (at, _) in text.match_indices("session_proxy_") {
                let name: String = text[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                let base = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(&name);
                assert!(
                    CATALOGUE.iter().any(|entry| entry.0 == base),
                    "{name} is not a series the proxy exports"
                );
                used += 1;
            }
        }
        assert!(used > 10);
    }

    #[test]
    fn the_docs_reference_table_is_the_catalogue() {
        let readme = include_str!("../../docs/operations.md");
        for &(name, kind, labels, help) in CATALOGUE {
            let row = format!("| `{name}` | {kind} | {labels} | {help} |");
            assert!(
                readme.contains(&row),
                "docs/operations.md lacks the row {row}"
            );
        }
        let rows = readme
            .lines()
            .filter(|l| l.starts_with("| `session_proxy_"))
            .count();
        assert_eq!(
            rows,
            CATALOGUE.len(),
            "docs/operations.md lists series the proxy does not export"
        );
    }

    #[test]
    fn sharded_counts_keep_each_workers_adds_apart_and_sum_them() {
        let (counter, histogram) = crate::workers::run(3, || async {
            let both = std::sync::Arc::new((Sharded::default(), LatencyHistogram::default()));
            let workers = crate::workers::Workers::current();
            for worker in 0..3 {
                let both = both.clone();
                workers
                    .spawn_on(worker, async move {
                        both.0.add(worker as u64 + 1);
                        both.1.record(Duration::from_micros(30), 1);
                    })
                    .await
                    .unwrap();
            }
            std::sync::Arc::try_unwrap(both).unwrap()
        })
        .unwrap();
        assert_eq!(counter.lines.len(), 3);
        let per_line: Vec<u64> = counter
            .lines
            .iter()
            .map(|l| l.0.load(Ordering::Relaxed))
            .collect();
        assert_eq!(per_line, vec![1, 2, 3]);
        assert_eq!(counter.get(), 6);
        assert_eq!(histogram.total(), 3);
        assert_eq!(histogram.counts()[0], 3);
        // Outside a worker thread: one line.
        assert_eq!(Sharded::default().lines.len(), 1);
    }

    #[test]
    fn latency_histogram_renders_cumulative_buckets_sum_and_count() {
        let histogram = LatencyHistogram::default();
        histogram.record(Duration::from_micros(30), 2); // first bucket
        histogram.record(Duration::from_micros(100), 1); // on a bound: that bucket
        histogram.record(Duration::from_secs(3), 1); // above every bound
        let mut out = String::new();
        histogram.render("x_seconds", "command=\"get\"", &mut out);
        let line = |series: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
                .map(str::to_string)
        };
        assert_eq!(
            line("x_seconds_bucket{command=\"get\",le=\"0.00005\"}").as_deref(),
            Some("2")
        );
        assert_eq!(
            line("x_seconds_bucket{command=\"get\",le=\"0.0001\"}").as_deref(),
            Some("3")
        );
        assert_eq!(
            line("x_seconds_bucket{command=\"get\",le=\"2.5\"}").as_deref(),
            Some("3")
        );
        assert_eq!(
            line("x_seconds_bucket{command=\"get\",le=\"+Inf\"}").as_deref(),
            Some("4")
        );
        assert_eq!(
            line("x_seconds_count{command=\"get\"}").as_deref(),
            Some("4")
        );
        assert_eq!(
            line("x_seconds_sum{command=\"get\"}").as_deref(),
            Some("3.00016")
        );
    }
}
