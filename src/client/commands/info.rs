//! INFO: Redis's `# Section` / `field:value` text, from the proxy's counters.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::shared::{Shared, Topology};

/// The INFO reply: Redis's `# Section` / `field:value` text. A `restricted`
/// client (one limited to key prefixes) gets no Backends section: their
/// addresses are the operator's business.
pub(in crate::client) fn info_text(
    shared: &Shared,
    topology: &Topology,
    section: Option<&Bytes>,
    restricted: bool,
) -> String {
    let wanted = section.map(|s| String::from_utf8_lossy(s).to_ascii_lowercase());
    let show = |name: &str| match wanted.as_deref() {
        None | Some("default") | Some("all") | Some("everything") => true,
        Some(w) => w == name,
    };
    let stats = &shared.stats;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
    let mut out = String::new();
    let mut section = |name: &str, title: &str, fields: Vec<(String, String)>| {
        if !show(name) {
            return;
        }
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        out.push_str(&format!("# {title}\r\n"));
        for (k, v) in fields {
            out.push_str(&format!("{k}:{v}\r\n"));
        }
    };
    let f = |k: &str, v: String| (k.to_string(), v);
    section(
        "server",
        "Server",
        vec![
            f("redis_version", topology.redis_version()),
            f("redis_mode", "standalone".into()),
            f("os", std::env::consts::OS.into()),
            f("arch_bits", usize::BITS.to_string()),
            f("process_id", std::process::id().to_string()),
            f("tcp_port", shared.tcp_port.to_string()),
            f(
                "uptime_in_seconds",
                shared.started.elapsed().as_secs().to_string(),
            ),
            f("proxy_name", "session-proxy".into()),
            f("proxy_version", env!("CARGO_PKG_VERSION").into()),
        ],
    );
    section(
        "clients",
        "Clients",
        vec![
            f(
                "connected_clients",
                stats.connected_clients.load(Ordering::Relaxed).to_string(),
            ),
            f("maxclients", topology.config.limits.max_clients.to_string()),
        ],
    );
    section("persistence", "Persistence", vec![f("loading", "0".into())]);
    section(
        "stats",
        "Stats",
        vec![
            f(
                "total_connections_received",
                load(&stats.connections_received),
            ),
            f("total_commands_processed", stats.commands.get().to_string()),
            f(
                "total_net_input_bytes",
                stats.net_input_bytes.get().to_string(),
            ),
            f(
                "total_net_output_bytes",
                stats.net_output_bytes.get().to_string(),
            ),
            f("total_reads_processed", stats.reads.get().to_string()),
            f("total_writes_processed", stats.writes.get().to_string()),
        ],
    );
    section(
        "replication",
        "Replication",
        vec![
            f("role", "master".into()),
            f("connected_slaves", "0".into()),
        ],
    );
    section(
        "proxy",
        "Proxy",
        vec![
            f("backends", topology.backends.len().to_string()),
            f(
                "backends_up",
                topology
                    .backends
                    .iter()
                    .filter(|b| b.is_up())
                    .count()
                    .to_string(),
            ),
            f("refused_keys", load(&stats.refused_keys)),
            f(
                "config_generation",
                shared.generation.load(Ordering::Relaxed).to_string(),
            ),
            f("draining", u8::from(shared.is_draining()).to_string()),
            f("slowlog_len", shared.slowlog.len().to_string()),
        ],
    );
    if let Some(migration) = &topology.migration {
        let r = migration.report();
        section(
            "migration",
            "Migration",
            vec![
                f("migration_state", r.state.into()),
                f("migration_keys_moved", r.keys_moved.to_string()),
                f("migration_keys_stale", r.keys_stale.to_string()),
                f("migration_misses_served", r.misses_served.to_string()),
                f(
                    "migration_old_location_errors",
                    r.old_location_errors.to_string(),
                ),
                f("migration_passes", r.passes.to_string()),
                f("migration_keys_left", r.keys_left.to_string()),
                f("migration_seconds_left", r.seconds_left.to_string()),
                f("migration_keys_per_second", r.keys_per_second.to_string()),
            ],
        );
    }
    let backends = topology
        .config
        .backends
        .iter()
        .zip(&topology.backends)
        .map(|(spec, backend)| {
            let endpoint = backend
                .endpoint
                .borrow()
                .as_ref()
                .map(|e| e.to_string())
                .unwrap_or_else(|| "none".into());
            let value = format!(
                "weight={},endpoint={},status={},connections={},sentinels={}",
                spec.weight,
                endpoint,
                if backend.is_up() { "up" } else { "down" },
                backend.connected(),
                backend.sentinels_known()
            );
            (format!("backend_{}", spec.id), value)
        })
        .collect();
    if !restricted {
        section("backends", "Backends", backends);
    }
    out
}
