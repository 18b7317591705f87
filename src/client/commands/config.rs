//! CONFIG GET: a read-only set of parameters answered from the proxy's own
//! config, in Redis's names (what tools such as redis-benchmark ask for);
//! CONFIG SET and the other changes are refused: the config file is the one
//! place settings change, by reload.

use bytes::Bytes;

use crate::client::errors::{arity_error, unknown_subcommand};
use crate::protocol::Reply;
use crate::shared::{Shared, Topology};

/// The parameters CONFIG GET answers, and their values now. `requirepass`
/// is never shown.
fn parameters(shared: &Shared, topo: &Topology) -> Vec<(&'static str, String)> {
    let config = &topo.config;
    let bind = config
        .listen
        .address
        .as_deref()
        .and_then(|a| a.rsplit_once(':'))
        .map_or(String::new(), |(host, _)| host.to_string());
    vec![
        ("databases", config.listen.databases.to_string()),
        (
            "maxclients",
            crate::fd_limit::max_clients(config.limits.max_clients).to_string(),
        ),
        ("tcp-keepalive", config.listen.tcp_keepalive_s.to_string()),
        ("timeout", config.limits.idle_timeout_s.to_string()),
        ("port", shared.tcp_port.to_string()),
        ("bind", bind),
        ("save", String::new()),
        ("appendonly", "no".into()),
        ("maxmemory", "0".into()),
        ("maxmemory-policy", "noeviction".into()),
        ("cluster-enabled", "no".into()),
        ("notify-keyspace-events", String::new()),
        (
            "slowlog-log-slower-than",
            config.slowlog.slower_than_us.to_string(),
        ),
        ("slowlog-max-len", config.slowlog.max_len.to_string()),
        (
            "tracking-table-max-keys",
            config.limits.tracking_table_keys.to_string(),
        ),
        (
            "proto-max-bulk-len",
            config.limits.max_request_bytes.to_string(),
        ),
    ]
}

pub(in crate::client) fn config_command(shared: &Shared, topo: &Topology, args: &[Bytes]) -> Reply {
    let sub = args[1].to_ascii_uppercase();
    match &sub[..] {
        b"GET" if args.len() < 3 => arity_error("config|get"),
        b"GET" => {
            let mut found = Vec::new();
            for (name, value) in parameters(shared, topo) {
                if args[2..].iter().any(|p| glob_match(p, name.as_bytes())) {
                    found.push((Reply::bulk_str(name), Reply::bulk(value)));
                }
            }
            Reply::Map(found)
        }
        // Setting one of the proxy's own parameters to the value it has
        // already changes nothing (test suites save and restore them).
        b"SET"
            if args.len() >= 4
                && args.len().is_multiple_of(2)
                && args[2..].chunks(2).all(|pair| {
                    parameters(shared, topo).iter().any(|(name, value)| {
                        name.as_bytes().eq_ignore_ascii_case(&pair[0])
                            && value.as_bytes() == &pair[1][..]
                    })
                }) =>
        {
            Reply::ok()
        }
        b"SET" | b"RESETSTAT" | b"REWRITE" => Reply::error(format!(
            "ERR CONFIG {} is not supported by session-proxy: change its config file and reload it (SIGHUP or POST /reload); backend parameters listed in [keys] config_set may be set",
            String::from_utf8_lossy(&sub)
        )),
        _ => unknown_subcommand(&args[1], "CONFIG"),
    }
}

/// Redis's glob-style match without case, as CONFIG GET matches names.
pub(in crate::client) fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    crate::glob::matches(pattern, name, crate::glob::Case::Ignore)
}
