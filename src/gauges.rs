//! The gauges of a backend's state (up, connections, a failover's hold):
//! kept in atomics beside its other metrics (`crate::metrics`) and rendered
//! at each scrape from the backends in force (`crate::admin`), so a backend
//! gone has no series left. A gauge of the recorder outlives its backend at
//! its last value: after a reload that drops a backend, or a cluster's
//! master replaced in a failover, `session_proxy_backend_up 0` would stay
//! and page for good (`config/alerts.yml`).

use std::sync::atomic::{AtomicI64, Ordering};

use metrics_exporter_prometheus::formatting::sanitize_label_value;

/// One gauge's value.
#[derive(Debug, Default)]
pub struct Level(AtomicI64);

impl Level {
    pub fn new(value: i64) -> Level {
        Level(AtomicI64::new(value))
    }

    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }

    pub fn add(&self, delta: i64) {
        self.0.fetch_add(delta, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Labels as they appear between a series' braces, values escaped.
pub fn render_labels(labels: &[metrics::Label]) -> String {
    let pairs: Vec<String> = labels
        .iter()
        .map(|l| format!("{}=\"{}\"", l.key(), sanitize_label_value(l.value())))
        .collect();
    pairs.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_moves_and_labels_are_escaped_as_prometheus_wants() {
        let level = Level::new(1);
        level.add(2);
        level.add(-1);
        assert_eq!(level.get(), 2);
        level.set(0);
        assert_eq!(level.get(), 0);
        let labels = [
            metrics::Label::new("backend", "c"),
            metrics::Label::new("node", "x\"y\\z"),
        ];
        assert_eq!(render_labels(&labels), "backend=\"c\",node=\"x\\\"y\\\\z\"");
    }
}
