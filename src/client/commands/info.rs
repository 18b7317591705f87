//! INFO: Redis's `# Section` / `field:value` text, from the proxy's counters.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::report::BackendReport;
use crate::shared::{Shared, Topology};

/// Sections INFO shows with no argument (or `default`), in Redis's order,
/// the proxy's own after them.
const DEFAULT: &[&str] = &[
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "replication",
    "cpu",
    "modules",
    "errorstats",
    "cluster",
    "keyspace",
    "proxy",
    "migration",
    "backends",
];

/// Sections `all` adds to the default ones (and `everything` too).
const MORE: &[&str] = &["commandstats", "latencystats"];

/// Which sections INFO's arguments ask for, as Redis 7 reads them: none or
/// `default`, `all` (the default ones and commandstats), `everything`, or
/// section names, any number of them, in any case.
fn wanted_sections(args: &[Bytes]) -> Vec<String> {
    if args.is_empty() {
        return DEFAULT.iter().map(|s| s.to_string()).collect();
    }
    let mut wanted: Vec<String> = Vec::new();
    for arg in args {
        let arg = String::from_utf8_lossy(arg).to_ascii_lowercase();
        let names: Vec<String> = match arg.as_str() {
            "default" => DEFAULT.iter().map(|s| s.to_string()).collect(),
            "all" | "everything" => DEFAULT.iter().chain(MORE).map(|s| s.to_string()).collect(),
            _ => vec![arg],
        };
        for name in names {
            if !wanted.contains(&name) {
                wanted.push(name);
            }
        }
    }
    wanted
}

/// Whether INFO with these arguments shows the memory section, whose
/// script fields come from the backends.
pub(in crate::client) fn wants_memory(args: &[Bytes]) -> bool {
    wanted_sections(args).iter().any(|s| s == "memory")
}

/// What the backends' scripts take, from their `INFO memory`: the memory
/// of their Lua engines and scripts summed, and the most scripts any one
/// holds (SCRIPT LOAD puts a script on every backend: a client counts it
/// once).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(in crate::client) struct ScriptMemory {
    pub used_memory_lua: u64,
    pub used_memory_scripts: u64,
    pub number_of_cached_scripts: u64,
}

impl ScriptMemory {
    /// Adds one backend's `INFO memory` text.
    pub fn add(&mut self, text: &[u8]) {
        for line in text.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let (name, value) = (&line[..colon], &line[colon + 1..]);
            let Some(value) = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
            else {
                continue;
            };
            match name {
                b"used_memory_lua" => self.used_memory_lua += value,
                b"used_memory_scripts" => self.used_memory_scripts += value,
                b"number_of_cached_scripts" => {
                    self.number_of_cached_scripts = self.number_of_cached_scripts.max(value)
                }
                _ => {}
            }
        }
    }

    /// INFO's text with these values in its script fields.
    pub fn fill(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len() + 32);
        for line in text.split_inclusive("\r\n") {
            let value = match line.split_once(':').map(|(name, _)| name) {
                Some("used_memory_lua") => Some(self.used_memory_lua),
                Some("used_memory_scripts") => Some(self.used_memory_scripts),
                Some("number_of_cached_scripts") => Some(self.number_of_cached_scripts),
                _ => None,
            };
            match value {
                Some(value) => {
                    let name = &line[..line.find(':').unwrap_or(0)];
                    out.push_str(&format!("{name}:{value}\r\n"));
                }
                None => out.push_str(line),
            }
        }
        out
    }
}

/// The process's CPU time (user, system), in seconds, from /proc.
fn cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the command name in parentheses: utime is field 14, stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Clock ticks are 100 a second on Linux's every supported platform.
    (ticks(11) / 100.0, ticks(12) / 100.0)
}

/// The process's resident memory, in bytes, from /proc.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm
        .split_whitespace()
        .nth(1)
        .and_then(|pages| pages.parse::<u64>().ok())
        .unwrap_or(0)
        * 4096
}

/// Bytes as Redis shows them in its `_human` fields.
fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.2}G", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.2}M", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.2}K", b as f64 / 1024.0),
        b => format!("{b}B"),
    }
}

/// The INFO reply: Redis's `# Section` / `field:value` text. A `restricted`
/// client (one limited to key prefixes) gets no Backends section: their
/// addresses are the operator's business. Memory and CPU are the proxy's
/// own; what only the backends know (keys, scripts) is not made up.
pub(in crate::client) fn info_text(
    shared: &Shared,
    topology: &Topology,
    args: &[Bytes],
    restricted: bool,
) -> String {
    let wanted = wanted_sections(args);
    let mut out = String::new();
    for &(name, title) in SECTIONS {
        if !wanted.iter().any(|w| w == name) {
            continue;
        }
        let fields = match name {
            "server" => server(shared, topology),
            "clients" => clients(shared, topology),
            "memory" => memory(shared, topology),
            "persistence" => vec![field("loading", 0)],
            "stats" => stats(shared),
            "replication" => vec![
                field("role", "master"),
                field("connected_slaves", 0),
                field("master_repl_offset", 0),
            ],
            "cpu" => cpu(),
            "commandstats" => commandstats(shared),
            "errorstats" => shared.error_codes.fields(),
            "cluster" => vec![field("cluster_enabled", 0)],
            "proxy" => proxy(shared, topology),
            "migration" => match &topology.migration {
                Some(migration) => migration_fields(migration.report()),
                None => continue,
            },
            // A prefix-restricted client is not shown the backends' addresses.
            "backends" if restricted => continue,
            "backends" => BackendReport::all(topology)
                .iter()
                .map(BackendReport::info_line)
                .collect(),
            _ => Vec::new(),
        };
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        out.push_str(&format!("# {title}\r\n"));
        for (k, v) in fields {
            out.push_str(&format!("{k}:{v}\r\n"));
        }
    }
    out
}

/// Every section INFO can show, in the order it shows them: Redis's, then
/// the proxy's own.
const SECTIONS: &[(&str, &str)] = &[
    ("server", "Server"),
    ("clients", "Clients"),
    ("memory", "Memory"),
    ("persistence", "Persistence"),
    ("stats", "Stats"),
    ("replication", "Replication"),
    ("cpu", "CPU"),
    ("modules", "Modules"),
    ("commandstats", "Commandstats"),
    ("errorstats", "Errorstats"),
    ("latencystats", "Latencystats"),
    ("cluster", "Cluster"),
    ("keyspace", "Keyspace"),
    ("proxy", "Proxy"),
    ("migration", "Migration"),
    ("backends", "Backends"),
];

/// A section's `name:value` lines.
type Fields = Vec<(String, String)>;

fn field(name: &str, value: impl ToString) -> (String, String) {
    (name.to_string(), value.to_string())
}

fn server(shared: &Shared, topology: &Topology) -> Fields {
    vec![
        field("redis_version", topology.redis_version()),
        field("redis_mode", "standalone"),
        field("os", std::env::consts::OS),
        field("arch_bits", usize::BITS),
        field("process_id", std::process::id()),
        field("tcp_port", shared.tcp_port),
        field("uptime_in_seconds", shared.started.elapsed().as_secs()),
        field("proxy_name", "session-proxy"),
        field("proxy_version", env!("CARGO_PKG_VERSION")),
    ]
}

fn clients(shared: &Shared, topology: &Topology) -> Fields {
    let stats = &shared.stats;
    vec![
        field(
            "connected_clients",
            stats.connected_clients.load(Ordering::Relaxed),
        ),
        field(
            "maxclients",
            crate::fd_limit::max_clients(topology.config.limits.max_clients),
        ),
        field(
            "blocked_clients",
            stats.blocked_clients.load(Ordering::Relaxed),
        ),
        // CLIENT TRACKING (`crate::tracking`).
        field("tracking_clients", shared.tracker.clients()),
    ]
}

fn memory(shared: &Shared, topology: &Topology) -> Fields {
    let rss = resident_bytes();
    vec![
        field("used_memory", rss),
        field("used_memory_human", human(rss)),
        field("used_memory_rss", rss),
        field("used_memory_rss_human", human(rss)),
        // The backends' (see `ScriptMemory`): 0 here, filled in when they
        // answer.
        field("used_memory_lua", 0),
        field("used_memory_scripts", 0),
        field("number_of_cached_scripts", 0),
        field("mem_clients_normal", shared.memory.total()),
        field("maxmemory_clients", topology.config.limits.max_memory_bytes),
        field("mem_allocator", "libc"),
    ]
}

fn stats(shared: &Shared) -> Fields {
    let stats = &shared.stats;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    vec![
        field(
            "total_connections_received",
            load(&stats.connections_received),
        ),
        field("total_commands_processed", stats.commands.get()),
        field("total_net_input_bytes", stats.net_input_bytes.get()),
        field("total_net_output_bytes", stats.net_output_bytes.get()),
        field("total_reads_processed", stats.reads.get()),
        field("total_writes_processed", stats.writes.get()),
        field("total_error_replies", shared.error_codes.total()),
        field("tracking_total_keys", shared.tracker.keys()),
        field("tracking_total_items", shared.tracker.items()),
        field("tracking_total_prefixes", shared.tracker.prefixes()),
    ]
}

fn cpu() -> Fields {
    let (user, system) = cpu_seconds();
    vec![
        field("used_cpu_sys", format!("{system:.6}")),
        field("used_cpu_user", format!("{user:.6}")),
        field("used_cpu_sys_children", "0.000000"),
        field("used_cpu_user_children", "0.000000"),
    ]
}

/// Redis's `cmdstat_<name>` lines, for the commands called at least once.
fn commandstats(shared: &Shared) -> Fields {
    shared
        .metrics
        .commands
        .iter()
        .filter_map(|m| {
            let (ok, failed) = (m.ok.get(), m.error.get());
            let calls = ok + failed;
            (calls > 0).then(|| {
                let usec = m.latency.sum_nanos() / 1000;
                let value = format!(
                    "calls={calls},usec={usec},usec_per_call={:.2},rejected_calls=0,failed_calls={failed}",
                    usec as f64 / calls as f64
                );
                (format!("cmdstat_{}", m.name), value)
            })
        })
        .collect()
}

fn proxy(shared: &Shared, topology: &Topology) -> Fields {
    let up = topology.backends.iter().filter(|b| b.is_up()).count();
    vec![
        field("backends", topology.backends.len()),
        field("backends_up", up),
        field(
            "refused_keys",
            shared.stats.refused_keys.load(Ordering::Relaxed),
        ),
        field(
            "config_generation",
            shared.generation.load(Ordering::Relaxed),
        ),
        field("draining", u8::from(shared.is_draining())),
        field("slowlog_len", shared.slowlog.len()),
    ]
}

fn migration_fields(r: crate::migration::Report) -> Fields {
    vec![
        field("migration_state", r.state),
        field("migration_keys_moved", r.keys_moved),
        field("migration_keys_stale", r.keys_stale),
        field("migration_keys_buried", r.keys_buried),
        field("migration_misses_served", r.misses_served),
        field("migration_old_location_errors", r.old_location_errors),
        field("migration_old_servers_down", r.old_servers_down.join(",")),
        field("migration_old_servers_gone", r.old_servers_gone.join(",")),
        field("migration_passes", r.passes),
        field("migration_keys_left", r.keys_left),
        field("migration_seconds_left", r.seconds_left),
        field("migration_keys_per_second", r.keys_per_second),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_memory_sums_memory_and_counts_scripts_once() {
        let mut memory = ScriptMemory::default();
        memory.add(b"# Memory\r\nused_memory_lua:31744\r\nused_memory_scripts:200\r\nnumber_of_cached_scripts:3\r\n");
        memory.add(b"# Memory\r\nused_memory_lua:1000\r\nused_memory_scripts:50\r\nnumber_of_cached_scripts:5\r\nbad:x\r\n");
        assert_eq!(
            memory,
            ScriptMemory {
                used_memory_lua: 32744,
                used_memory_scripts: 250,
                number_of_cached_scripts: 5
            }
        );
        let text = "# Memory\r\nused_memory:9\r\nused_memory_lua:0\r\nnumber_of_cached_scripts:0\r\n\r\n# Stats\r\n";
        assert_eq!(
            memory.fill(text),
            "# Memory\r\nused_memory:9\r\nused_memory_lua:32744\r\nnumber_of_cached_scripts:5\r\n\r\n# Stats\r\n"
        );
    }

    #[test]
    fn memory_is_wanted_by_default_all_and_by_name() {
        assert!(wants_memory(&[]));
        assert!(wants_memory(&[Bytes::from_static(b"MEMORY")]));
        assert!(wants_memory(&[Bytes::from_static(b"everything")]));
        assert!(!wants_memory(&[Bytes::from_static(b"stats")]));
    }
}
