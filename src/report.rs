//! One report per backend, read once from the topology and rendered by
//! INFO's Backends section, the admin `/topology` and `/status`, so the
//! three cannot tell different stories about the same backend.

use serde::Serialize;

use crate::metrics::Switch;
use crate::shared::Topology;

/// What an operator sees of one backend.
#[derive(Debug, Clone, Serialize)]
pub struct BackendReport {
    pub id: String,
    pub weight: f64,
    /// The backend's part of the total weight (0 to 1).
    pub share: f64,
    /// The address its connections use now: the fixed one, or the master
    /// Sentinel names (none before one is known).
    pub endpoint: Option<String>,
    /// The address the last connection reached (what a host name led to),
    /// and how often that changed.
    pub resolved: Option<String>,
    pub address_changes: u64,
    pub up: bool,
    /// Connections open now, over every worker.
    pub connections: usize,
    pub min_replicas_ack: u32,
    pub sentinel: Option<SentinelReport>,
    /// A Redis Cluster backend's masters and slots.
    pub cluster: Option<serde_json::Value>,
    pub replies_total: u64,
    pub errors_total: u64,
    pub latency_counts: Vec<u64>,
    /// The master switches it followed, the latest last.
    pub switches: Vec<Switch>,
}

/// A Sentinel backend's group.
#[derive(Debug, Clone, Serialize)]
pub struct SentinelReport {
    /// The name the sentinels monitor.
    pub master: String,
    /// The sentinels it knows of (configured and learned).
    pub sentinels: Vec<String>,
    /// How many of them answered the last check.
    pub known: usize,
}

impl BackendReport {
    /// Every backend of the topology, in its order.
    pub fn all(topology: &Topology) -> Vec<BackendReport> {
        let config = &topology.config;
        let total_weight: f64 = config.backends.iter().map(|b| b.weight).sum();
        config
            .backends
            .iter()
            .zip(&topology.backends)
            .map(|(spec, backend)| {
                let metrics = backend.metrics();
                BackendReport {
                    id: spec.id.clone(),
                    weight: spec.weight,
                    share: if total_weight > 0.0 {
                        spec.weight / total_weight
                    } else {
                        0.0
                    },
                    endpoint: backend.endpoint.borrow().as_ref().map(|e| e.to_string()),
                    resolved: metrics
                        .resolved
                        .lock()
                        .ok()
                        .and_then(|r| r.map(|a| a.to_string())),
                    address_changes: metrics.address_changes.get(),
                    up: backend.is_up(),
                    connections: backend.connected(),
                    min_replicas_ack: spec.min_replicas_ack,
                    sentinel: spec.sentinel.as_ref().map(|sentinel| SentinelReport {
                        master: sentinel.master.clone(),
                        sentinels: metrics
                            .sentinel_list
                            .lock()
                            .map(|l| l.clone())
                            .unwrap_or_default(),
                        known: backend.sentinels_known(),
                    }),
                    cluster: backend.cluster().map(|c| c.report()),
                    replies_total: metrics.replies.get(),
                    errors_total: metrics.failed.get(),
                    latency_counts: metrics.latency.counts(),
                    switches: metrics
                        .switches
                        .lock()
                        .map(|s| s.iter().cloned().collect())
                        .unwrap_or_default(),
                }
            })
            .collect()
    }

    /// INFO's `backend_<id>` line: `weight=...,endpoint=...,status=...`.
    pub fn info_line(&self) -> (String, String) {
        let value = format!(
            "weight={},endpoint={},status={},connections={},sentinels={}",
            self.weight,
            self.endpoint.as_deref().unwrap_or("none"),
            if self.up { "up" } else { "down" },
            self.connections,
            self.sentinel.as_ref().map_or(0, |s| s.known),
        );
        (format!("backend_{}", self.id), value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> BackendReport {
        BackendReport {
            id: "a".into(),
            weight: 2.0,
            share: 0.5,
            endpoint: None,
            resolved: None,
            address_changes: 0,
            up: false,
            connections: 0,
            min_replicas_ack: 0,
            sentinel: None,
            cluster: None,
            replies_total: 0,
            errors_total: 0,
            latency_counts: Vec::new(),
            switches: Vec::new(),
        }
    }

    #[test]
    fn the_info_line_names_what_is_missing() {
        let (name, value) = report().info_line();
        assert_eq!(name, "backend_a");
        assert_eq!(
            value,
            "weight=2,endpoint=none,status=down,connections=0,sentinels=0"
        );
        let up = BackendReport {
            endpoint: Some("127.0.0.1:7001".into()),
            up: true,
            connections: 3,
            sentinel: Some(SentinelReport {
                master: "m".into(),
                sentinels: vec!["127.0.0.1:26379".into()],
                known: 1,
            }),
            ..report()
        };
        assert_eq!(
            up.info_line().1,
            "weight=2,endpoint=127.0.0.1:7001,status=up,connections=3,sentinels=1"
        );
    }
}
