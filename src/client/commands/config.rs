//! CONFIG GET: a read-only set of parameters answered from the proxy's own
//! config, in Redis's names (what tools such as redis-benchmark ask for);
//! CONFIG SET and the other changes are refused: the config file is the one
//! place settings change, by reload.

use crate::client::*;

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
        ("maxclients", config.limits.max_clients.to_string()),
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
        b"SET" | b"RESETSTAT" | b"REWRITE" => Reply::error(format!(
            "ERR CONFIG {} is not supported by session-proxy: change its config file and reload it (SIGHUP or POST /reload)",
            String::from_utf8_lossy(&sub)
        )),
        _ => unknown_subcommand(&args[1], "CONFIG"),
    }
}

/// Redis's glob-style match (`*`, `?`, `[...]` with ranges and `^`, `\`
/// escapes), without case, as CONFIG GET matches names. Iterative: the
/// backtracking is over the last `*` only, so it is linear in practice and
/// never recursive.
pub(in crate::client) fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    let lower = |b: u8| b.to_ascii_lowercase();
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => class(pattern, p, lower(name[n])),
            Some(b'\\') if p + 1 < pattern.len() => {
                (lower(pattern[p + 1]) == lower(name[n])).then_some(p + 2)
            }
            Some(&c) => (lower(c) == lower(name[n])).then_some(p + 1),
            None => None,
        };
        match step {
            Some(next) => {
                p = next;
                n += 1;
            }
            None => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A `[...]` class at `pattern[start]` against `c`: the index after it when
/// it matches.
fn class(pattern: &[u8], start: usize, c: u8) -> Option<usize> {
    let mut i = start + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    while i < pattern.len() && pattern[i] != b']' {
        if pattern[i] == b'\\' && i + 1 < pattern.len() {
            matched |= pattern[i + 1].to_ascii_lowercase() == c;
            i += 2;
        } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
            let (a, b) = (
                pattern[i].to_ascii_lowercase(),
                pattern[i + 2].to_ascii_lowercase(),
            );
            matched |= a.min(b) <= c && c <= a.max(b);
            i += 3;
        } else {
            matched |= pattern[i].to_ascii_lowercase() == c;
            i += 1;
        }
    }
    (matched != negate).then_some(i + 1)
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs_match_like_redis() {
        let m = |p: &str, n: &str| glob_match(p.as_bytes(), n.as_bytes());
        assert!(m("*", "maxclients"));
        assert!(m("max*", "maxmemory-policy"));
        assert!(m("MAXCLIENTS", "maxclients"));
        assert!(m("*slower*", "slowlog-log-slower-than"));
        assert!(m("d?tabases", "databases"));
        assert!(m("[a-d]atabases", "databases"));
        assert!(!m("[^d]atabases", "databases"));
        assert!(!m("max", "maxclients"));
        assert!(!m("*x", "maxclients"));
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "axb"));
        assert!(m("*a*a*a*", "aaaa"));
        assert!(!m("*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
    }
}
