//! `GET /status`: the operator's view as JSON, which the status page (`GET
//! /`, [`PAGE`]) polls. Counters are totals since start; the page turns them
//! into rates and recent percentiles from the difference between two polls.
//! Nothing secret is in it: no passwords, no keys, and client addresses only
//! with `[admin] show_clients = true`.

use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use crate::metrics::{unix_now, LATENCY_BUCKETS};
use crate::report::BackendReport;
use crate::shared::Shared;

/// The status page: HTML, CSS and plain JavaScript in one file, compiled in.
pub const PAGE: &str = include_str!("status.html");

/// The status as JSON.
pub fn status(shared: &Shared) -> Value {
    let topology = shared.topology();
    let config = &topology.config;
    let backends: Vec<Value> = BackendReport::all(&topology)
        .into_iter()
        .map(|r| {
            let sentinel = match &r.sentinel {
                Some(s) => json!({ "master": s.master, "sentinels": s.sentinels }),
                None => Value::Null,
            };
            json!({
                "id": r.id,
                "weight": r.weight,
                "share": r.share,
                "endpoint": r.endpoint,
                "resolved": r.resolved,
                "address_changes": r.address_changes,
                "sentinel": sentinel,
                "cluster": r.cluster,
                "health": if r.up { "up" } else { "down" },
                // While down, requests fail at once instead of waiting.
                "circuit": if r.up { "closed" } else { "open" },
                "connections": r.connections,
                "pool_connections": config.pool.connections,
                "replies_total": r.replies_total,
                "errors_total": r.errors_total,
                "latency_counts": r.latency_counts,
                "switches": r.switches,
            })
        })
        .collect();
    let listen = &config.listen;
    let tcp = listen
        .address
        .as_ref()
        .map(|address| match address.rsplit_once(':') {
            Some((host, _)) => format!("{host}:{}", shared.tcp_port),
            None => address.clone(),
        });
    let clients = if config.admin.show_clients {
        let list: Vec<Value> = shared
            .memory
            .clients()
            .into_iter()
            .map(|(id, peer, bytes)| json!({ "id": id, "peer": peer, "buffer_bytes": bytes }))
            .collect();
        Value::Array(list)
    } else {
        Value::Null
    };
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "now_unix": unix_now(),
        "uptime_s": shared.started.elapsed().as_secs(),
        "generation": shared.generation.load(Ordering::Relaxed),
        "draining": shared.is_draining(),
        "ready": shared.ready().err(),
        "listeners": {
            "tcp": tcp,
            "unix": listen.unix_socket.as_ref().map(|p| p.display().to_string()),
            "admin": config.admin.address,
        },
        "connected_clients": shared.stats.connected_clients.load(Ordering::Relaxed),
        "max_clients": crate::fd_limit::max_clients(config.limits.max_clients),
        "clients_per_worker": shared.clients_per_worker(),
        "clients": clients,
        "latency_bounds_s": LATENCY_BUCKETS,
        "backends": backends,
        "reloads": shared.reloads.lock().map(|r| r.iter().cloned().collect::<Vec<_>>()).unwrap_or_default(),
        // The page shows a progress bar while this is an object.
        "migration": topology.migration.as_ref().map(|m| m.report()),
    })
}
