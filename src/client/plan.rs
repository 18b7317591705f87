//! What a keyed request becomes, decided without I/O: refused (a key
//! outside the allowed prefixes), forwarded to the one backend holding every
//! key (followed by a WAIT when that backend asks for replica
//! acknowledgements), or split into one sub-command per backend, keys in
//! their original order, with the way to merge the replies
//! ([`crate::client::merge`]).
//! `dispatch.rs` carries a plan out; both functions are tested here alone.

use bytes::Bytes;

use sha1::{Digest, Sha1};

use crate::client::errors::{arity_error, unknown_subcommand};
use crate::client::merge::{ChannelFilter, KeyFilter, MergeHow, SCAN_INDEX_BITS};
use crate::protocol::command::writes;
use crate::protocol::RedisError;
use crate::protocol::{Cmd, Merge, Reply, Request, Route, Spec};
use crate::pubsub::policy::ChannelPolicy;

/// Scripts that run with `[keys] prefixes` set without being listed in
/// `[keys] scripts`: phpredis's session lock release, which touches only
/// its KEYS[1] (`if redis.call("get",KEYS[1]) == ARGV[1] then return
/// redis.call("del",KEYS[1]) else return 0 end`).
pub(in crate::client) const ALWAYS_ALLOWED_SCRIPTS: &[&str] =
    &["b70c2384248f88e6b75b9f89241a180f856ad852"];

/// What to do with a request whose command routes by key.
#[derive(Debug, PartialEq)]
pub(in crate::client) enum Plan {
    /// A key is outside the allowed prefixes (the config's or the user's).
    Refused,
    /// Answered at once with this (an error decided from the request alone).
    Answer(Reply),
    /// Every key is on `backend` (or there is no key): the request goes as it
    /// came; `wait` when it is a write to a backend with `min_replicas_ack`.
    Forward { backend: usize, wait: bool },
    /// Keys on several backends: a sub-command for each, merged by `how`.
    Split {
        parts: Vec<(usize, Vec<Bytes>)>,
        how: Box<MergeHow>,
    },
    /// A command about every backend (DBSIZE, SCRIPT LOAD): the request goes
    /// to each, and their replies are merged by `how`.
    Every { how: Box<MergeHow> },
    /// As `Every`, with these arguments instead of the request's (KEYS with
    /// a restricted client's prefix pushed down into its pattern).
    EveryWith {
        args: Vec<Bytes>,
        how: Box<MergeHow>,
    },
    /// RENAME or RENAMENX whose two keys live on backends `from` and `to`:
    /// the proxy moves the value (`client/rename.rs`).
    Rename { from: usize, to: usize },
    /// FLUSHDB or FLUSHALL (`every_db`) with prefixes set: on every backend,
    /// only the keys the filter allows are deleted (SCAN, then UNLINK).
    Sweep {
        every_db: bool,
        filter: Box<KeyFilter>,
    },
    /// SCRIPT KILL or FUNCTION KILL: sent to every backend on a connection
    /// of its own, since the pool's may be the one the script is running on.
    Kill,
}

/// What the config and the client's user allow, for [`plan`].
pub(in crate::client) struct Policy<'a> {
    /// `[keys] prefixes` and the user's own: a key must match both lists
    /// (an empty list matches every key).
    pub(in crate::client) prefixes: &'a [String],
    pub(in crate::client) user_prefixes: &'a [String],
    /// SHA1s of the scripts that may run while prefixes are set.
    pub(in crate::client) scripts: &'a [String],
    /// How many servers SCAN's cursor counts through: the backends, then a
    /// migration's old servers (added by `routed` for SCAN only).
    pub(in crate::client) backends: usize,
    /// `[limits] max_scan_count`: the largest COUNT a restricted client's
    /// SCAN is sent with.
    pub(in crate::client) max_scan_count: usize,
    /// `[keys] allow_flush`: FLUSHDB and FLUSHALL run at all.
    pub(in crate::client) allow_flush: bool,
    /// `[keys] hash_tag`, for SORT's patterns.
    pub(in crate::client) hash_tag: Option<[u8; 2]>,
    /// The channels the client may use; set for PUBSUB only (`None`: all).
    pub(in crate::client) channels: Option<ChannelPolicy>,
    /// `[keys] split_transactions`: a transaction over several backends
    /// runs as one per backend instead of being refused.
    pub(in crate::client) split_transactions: bool,
    /// Which backends are Redis Clusters (by index; missing: not one). There
    /// a multi-key command is split by hash slot, not only by backend, and
    /// one that cannot be split needs its keys in one slot, as on a cluster.
    pub(in crate::client) clusters: &'a [bool],
}

impl Policy<'_> {
    fn restricted(&self) -> bool {
        !(self.prefixes.is_empty() && self.user_prefixes.is_empty())
    }

    pub(in crate::client) fn filter(&self) -> KeyFilter {
        KeyFilter {
            prefixes: self.prefixes.to_vec(),
            user_prefixes: self.user_prefixes.to_vec(),
            pattern: None,
        }
    }

    /// The one prefix every key a restricted client may touch is under
    /// (its user's, else the config's), when there is exactly one.
    fn narrowing_prefix(&self) -> Option<&str> {
        match (self.user_prefixes, self.prefixes) {
            ([one], _) | ([], [one]) => Some(one),
            _ => None,
        }
    }

    fn channel_filter(&self) -> ChannelFilter {
        ChannelFilter {
            policy: self.channels.clone().unwrap_or_default(),
            keys: self.filter(),
        }
    }
}

/// Plans `request` for `spec` under `policy`: `owner` names the backend
/// serving a key, `waits` whether a backend follows writes with WAIT.
pub(in crate::client) fn plan(
    spec: &Spec,
    request: &Request,
    policy: &Policy<'_>,
    mut owner: impl FnMut(&[u8]) -> usize,
    waits: impl Fn(usize) -> bool,
) -> Plan {
    match spec.route {
        Route::AllBackends if spec.cmd == Cmd::PubSub => {
            return pubsub(request, &mut owner, policy.channel_filter())
        }
        Route::AllBackends => return every(spec, request, policy),
        Route::Channel => {
            return Plan::Forward {
                backend: request.arg(1).map_or(0, &mut owner),
                wait: false,
            }
        }
        Route::Scan => return scan(request, policy),
        _ => {}
    }
    let positions = match crate::protocol::keys::positions(spec, request) {
        Ok(positions) => positions,
        Err(error) => return Plan::Answer(Reply::error(error.as_bytes())),
    };
    if spec.route == Route::Script {
        if let Some(plan) = script_plan(spec, request, policy, positions.len()) {
            return plan;
        }
    }
    let Some(grouped) = group_keys(request, positions, policy, &mut owner) else {
        return Plan::Refused;
    };
    if matches!(spec.name, "sort" | "sort_ro") {
        let key_backend = grouped.first.map(|(_, g)| g.0);
        if let Some(refusal) = sort_refusal(spec, request, policy, key_backend, &mut owner) {
            return Plan::Answer(refusal);
        }
    }
    if !grouped.one_group && matches!(spec.route, Route::Script | Route::Specs) {
        return across_groups(spec, &grouped.owners);
    }
    if grouped.one_group {
        let backend = grouped.first.map_or(0, |(_, (b, _))| b);
        return Plan::Forward {
            backend,
            wait: waits(backend) && writes(spec, request),
        };
    }
    split(spec, request, &grouped.owners)
}

/// Where keys go together: a backend, and for a cluster backend a hash
/// slot too (`u16::MAX` for a plain backend).
type Group = (usize, u16);

/// A request's keys by group.
struct Grouped {
    /// The first key's argument position and group.
    first: Option<(usize, Group)>,
    /// (argument position, group) of every key, listed only once there is
    /// a second key.
    owners: Vec<(usize, Group)>,
    /// Whether every key is in the first key's group.
    one_group: bool,
}

/// The groups of the keys at `positions`; `None` when a key is outside the
/// proxy's or the user's prefixes.
fn group_keys(
    request: &Request,
    positions: impl IntoIterator<Item = usize>,
    policy: &Policy<'_>,
    owner: &mut impl FnMut(&[u8]) -> usize,
) -> Option<Grouped> {
    let allowed = |key: &[u8], list: &[String]| {
        list.is_empty() || list.iter().any(|p| key.starts_with(p.as_bytes()))
    };
    let group = |backend: usize, key: &[u8]| {
        let slot = if policy.clusters.get(backend).copied().unwrap_or(false) {
            crate::cluster::slot(key)
        } else {
            u16::MAX
        };
        (backend, slot)
    };
    let mut grouped = Grouped {
        first: None,
        owners: Vec::new(),
        one_group: true,
    };
    for pos in positions {
        let Some(key) = request.arg(pos) else {
            continue;
        };
        if !allowed(key, policy.prefixes) || !allowed(key, policy.user_prefixes) {
            return None;
        }
        let here = group(owner(key), key);
        match grouped.first {
            None => grouped.first = Some((pos, here)),
            Some((first_pos, first_group)) => {
                if grouped.owners.is_empty() {
                    grouped.owners.push((first_pos, first_group));
                }
                grouped.owners.push((pos, here));
                grouped.one_group &= here == first_group;
            }
        }
    }
    Some(grouped)
}

/// A script's own plan, before its keys are looked at: one without keys
/// runs anywhere (refused under key prefixes), one a restricted client may
/// not run is refused.
fn script_plan(spec: &Spec, request: &Request, policy: &Policy<'_>, keys: usize) -> Option<Plan> {
    if keys == 0 {
        if policy.restricted() {
            return Some(Plan::Answer(RedisError::ScriptWithoutKeys.reply()));
        }
        // No key to route by: any backend, as Redis Cluster runs it
        // on whichever node it is sent to.
        return Some(Plan::Forward {
            backend: rand::random_range(0..policy.backends.max(1)),
            wait: false,
        });
    }
    if policy.restricted() {
        return script_refusal(spec, request, policy.scripts).map(Plan::Answer);
    }
    None
}

/// A script or a command of several keys whose keys are in more than one
/// group: RENAME and RENAMENX over two plain backends are moved by the
/// proxy (not from or to a cluster: the hidden name it uses would be in
/// another slot); anything else is CROSSSLOT.
fn across_groups(spec: &Spec, owners: &[(usize, Group)]) -> Plan {
    let plain = |(_, slot): Group| slot == u16::MAX;
    if matches!(spec.cmd, Cmd::Rename | Cmd::RenameNx)
        && owners.len() == 2
        && plain(owners[0].1)
        && plain(owners[1].1)
    {
        return Plan::Rename {
            from: owners[0].1 .0,
            to: owners[1].1 .0,
        };
    }
    Plan::Answer(RedisError::CrossSlot.reply())
}

/// One sub-command per group, with that group's keys (and their values,
/// for MSET's kind), and how their replies merge.
fn split(spec: &Spec, request: &Request, owners: &[(usize, Group)]) -> Plan {
    let args = request.args();
    let mut parts: Vec<(usize, Vec<Bytes>)> = Vec::new();
    let mut groups: Vec<Group> = Vec::new();
    let mut positions = Vec::with_capacity(owners.len());
    for &(pos, here) in owners {
        let part = match groups.iter().position(|g| *g == here) {
            Some(p) => p,
            None => {
                groups.push(here);
                parts.push((here.0, vec![args[0].clone()]));
                parts.len() - 1
            }
        };
        let sub = &mut parts[part].1;
        positions.push((part, sub.len() - 1));
        sub.push(args[pos].clone());
        if spec.route == Route::KeyValues {
            if let Some(value) = args.get(pos + 1) {
                sub.push(value.clone());
            }
        }
    }
    let how = match spec.route {
        Route::Keys(Merge::Sum) => MergeHow::Sum,
        Route::Keys(Merge::InKeyOrder) => MergeHow::InKeyOrder(positions),
        _ => MergeHow::AllOk,
    };
    Plan::Split {
        parts,
        how: Box::new(how),
    }
}

/// Where a request's keys are: a stepped range, or listed.
fn pubsub(
    request: &Request,
    owner: &mut impl FnMut(&[u8]) -> usize,
    filter: ChannelFilter,
) -> Plan {
    let sub = request.arg(1).unwrap_or_default().to_ascii_uppercase();
    let how = match &sub[..] {
        b"CHANNELS" | b"SHARDCHANNELS" if request.len() <= 3 => MergeHow::Union(filter),
        b"NUMPAT" if request.len() == 2 => MergeHow::Max,
        b"NUMSUB" | b"SHARDNUMSUB" => {
            let owners = (2..request.len())
                .filter_map(|i| request.arg(i))
                .map(&mut *owner)
                .collect();
            MergeHow::NumSub(owners, filter)
        }
        b"HELP" => MergeHow::Same,
        b"CHANNELS" | b"SHARDCHANNELS" | b"NUMPAT" => {
            let name = format!("pubsub|{}", String::from_utf8_lossy(&sub).to_lowercase());
            return Plan::Answer(arity_error(&name));
        }
        _ => {
            return Plan::Answer(unknown_subcommand(
                request.arg(1).unwrap_or_default(),
                "PUBSUB",
            ))
        }
    };
    Plan::Every { how: Box::new(how) }
}

/// A KEYS or SCAN MATCH pattern for the backends that finds no key outside
/// `prefix` and every key under it that `pattern` matches; and whether the
/// proxy must still match `pattern` itself (when the backend's is wider).
fn narrowed(pattern: &[u8], prefix: &str) -> (Bytes, bool) {
    let literal_end = pattern
        .iter()
        .position(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
        .unwrap_or(pattern.len());
    if pattern[..literal_end].starts_with(prefix.as_bytes()) {
        return (Bytes::copy_from_slice(pattern), false);
    }
    let wide = crate::glob::prefix_pattern(prefix.as_bytes());
    (Bytes::from(wide), true)
}

/// One step of SCAN: the backend the cursor names, asked with its own
/// cursor (MATCH, COUNT and TYPE passed on as they came).
fn scan(request: &Request, policy: &Policy<'_>) -> Plan {
    let invalid = || Plan::Answer(RedisError::InvalidCursor.reply());
    let Some(cursor) = request
        .arg(1)
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.parse::<u64>().ok())
    else {
        return invalid();
    };
    let index = (cursor & ((1 << SCAN_INDEX_BITS) - 1)) as usize;
    if index >= policy.backends {
        return invalid();
    }
    let mut args = request.args();
    args[1] = Bytes::from((cursor >> SCAN_INDEX_BITS).to_string());
    let mut filter = policy.filter();
    if policy.restricted() {
        // The backend walks only what the client may see, a bounded count
        // at a time: MATCH narrowed to the prefix, COUNT capped.
        let option = |args: &[Bytes], name: &str| {
            (2..args.len())
                .step_by(2)
                .find(|&i| args[i].eq_ignore_ascii_case(name.as_bytes()) && i + 1 < args.len())
        };
        if let Some(i) = option(&args, "COUNT") {
            let asked = crate::protocol::keys::string2ll(&args[i + 1]).unwrap_or(0);
            if asked > policy.max_scan_count as i64 {
                args[i + 1] = Bytes::from(policy.max_scan_count.to_string());
            }
        }
        if let Some(prefix) = policy.narrowing_prefix() {
            match option(&args, "MATCH") {
                Some(i) => {
                    let (pattern, also) = narrowed(&args[i + 1], prefix);
                    if also {
                        filter.pattern = Some(args[i + 1].clone());
                    }
                    args[i + 1] = pattern;
                }
                None => {
                    args.push(Bytes::from_static(b"MATCH"));
                    args.push(narrowed(b"*", prefix).0);
                }
            }
        }
    }
    Plan::Split {
        parts: vec![(index, args)],
        how: Box::new(MergeHow::ScanStep {
            index,
            backends: policy.backends,
            filter,
        }),
    }
}

/// How a command about every backend is merged, or Redis's error for a
/// subcommand the proxy does not run.
fn every(spec: &Spec, request: &Request, policy: &Policy<'_>) -> Plan {
    match spec.cmd {
        Cmd::Keys => {
            let mut filter = policy.filter();
            let prefix = policy.narrowing_prefix().filter(|_| policy.restricted());
            let Some(prefix) = prefix else {
                return Plan::Every {
                    how: Box::new(MergeHow::Concat(filter)),
                };
            };
            // The backends list only the client's keys: its prefix pushed
            // down into the pattern, the client's pattern matched here when
            // the backends' is wider.
            let asked = request.arg(1).unwrap_or_default();
            let (pattern, also) = narrowed(asked, prefix);
            if also {
                filter.pattern = Some(Bytes::copy_from_slice(asked));
            }
            return Plan::EveryWith {
                args: vec![Bytes::from_static(b"KEYS"), pattern],
                how: Box::new(MergeHow::Concat(filter)),
            };
        }
        Cmd::RandomKey => {
            return Plan::Every {
                how: Box::new(MergeHow::AnyOne(policy.filter())),
            }
        }
        Cmd::FlushDb | Cmd::FlushAll => return flush(spec, request, policy),
        Cmd::Function => return function(request, policy),
        Cmd::Script => {}
        _ => {
            return Plan::Every {
                how: Box::new(MergeHow::Sum),
            }
        }
    }
    let sub = request.arg(1).unwrap_or_default().to_ascii_uppercase();
    let argc = request.len();
    let (how, arity_ok) = match &sub[..] {
        b"LOAD" => (MergeHow::Same, argc == 3),
        b"EXISTS" => (MergeHow::EveryHas, argc >= 3),
        b"FLUSH" => (MergeHow::AllOk, argc <= 3),
        b"KILL" if argc == 2 => return Plan::Kill,
        b"KILL" => (MergeHow::Same, false),
        _ => {
            return Plan::Answer(unknown_subcommand(
                request.arg(1).unwrap_or_default(),
                "SCRIPT",
            ))
        }
    };
    if !arity_ok {
        let name = format!("script|{}", String::from_utf8_lossy(&sub).to_lowercase());
        return Plan::Answer(arity_error(&name));
    }
    Plan::Every { how: Box::new(how) }
}

/// SORT's BY and GET patterns read keys the arguments do not name: refused
/// to a client held to prefixes, in Redis's words for a user without full
/// key access; over several backends, each pattern must carry a hash tag
/// whose keys live with the sorted key, as on a Redis Cluster, else
/// CROSSSLOT.
fn sort_refusal(
    spec: &Spec,
    request: &Request,
    policy: &Policy<'_>,
    key_backend: Option<usize>,
    owner: &mut impl FnMut(&[u8]) -> usize,
) -> Option<Reply> {
    let args: Vec<&[u8]> = (0..request.len()).filter_map(|i| request.arg(i)).collect();
    let sorting = crate::protocol::keys::sort(&args, spec.name == "sort_ro").ok()?;
    let first = *sorting.patterns.first()?;
    if policy.restricted() {
        let option = if args[first - 1].eq_ignore_ascii_case(b"by") {
            "BY"
        } else {
            "GET"
        };
        return Some(RedisError::SortDenied(option.to_string()).reply());
    }
    let several = policy.backends > 1 || policy.clusters.iter().any(|&c| c);
    if !several {
        return None;
    }
    let together = sorting.patterns.iter().all(|&at| {
        let pattern = args[at];
        let key_part = pattern
            .windows(2)
            .position(|w| w == b"->")
            .map_or(pattern, |i| &pattern[..i]);
        policy
            .hash_tag
            .and_then(|tag| crate::router::tag_of(tag, key_part))
            .is_some_and(|tag| !tag.contains(&b'*') && Some(owner(key_part)) == key_backend)
    });
    (!together).then(|| RedisError::CrossSlot.reply())
}

/// FUNCTION: what changes the libraries runs on every backend (each must
/// have them, as scripts must, for FCALL to run wherever its keys are);
/// what reads them asks the first backend, whose reply is the client's.
/// A client held to key prefixes may read them, not change them: a
/// function can touch keys it does not declare.
fn function(request: &Request, policy: &Policy<'_>) -> Plan {
    let sub = request.arg(1).unwrap_or_default().to_ascii_uppercase();
    let argc = request.len();
    let (how, arity_ok) = match &sub[..] {
        b"LOAD" => (MergeHow::Same, (3..=4).contains(&argc)),
        b"DELETE" => (MergeHow::Same, argc == 3),
        b"FLUSH" => (MergeHow::AllOk, argc <= 3),
        b"RESTORE" => (MergeHow::AllOk, (3..=4).contains(&argc)),
        b"KILL" if argc == 2 => return Plan::Kill,
        b"KILL" => (MergeHow::Same, false),
        b"LIST" | b"STATS" | b"DUMP" | b"HELP" => {
            return Plan::Forward {
                backend: 0,
                wait: false,
            }
        }
        _ => {
            return Plan::Answer(unknown_subcommand(
                request.arg(1).unwrap_or_default(),
                "FUNCTION",
            ))
        }
    };
    if !arity_ok {
        let name = format!("function|{}", String::from_utf8_lossy(&sub).to_lowercase());
        return Plan::Answer(arity_error(&name));
    }
    if policy.restricted() && sub != b"KILL".as_slice() {
        return Plan::Answer(RedisError::FunctionLoadRefused.reply());
    }
    Plan::Every { how: Box::new(how) }
}

/// FLUSHDB and FLUSHALL: refused unless allowed; then on every backend, or
/// with prefixes set, a sweep of the keys under them only.
fn flush(spec: &Spec, request: &Request, policy: &Policy<'_>) -> Plan {
    if !policy.allow_flush {
        return Plan::Answer(RedisError::FlushRefused(spec.name.to_uppercase()).reply());
    }
    if !policy.restricted() {
        return Plan::Every {
            how: Box::new(MergeHow::AllOk),
        };
    }
    let mode_ok = match request.len() {
        1 => true,
        2 => {
            let mode = request.arg(1).unwrap_or_default().to_ascii_uppercase();
            mode == b"ASYNC" || mode == b"SYNC"
        }
        _ => false,
    };
    if !mode_ok {
        return Plan::Answer(RedisError::Syntax.reply());
    }
    Plan::Sweep {
        every_db: spec.cmd == Cmd::FlushAll,
        filter: Box::new(policy.filter()),
    }
}

/// With key prefixes set, a script may touch keys it does not declare: it
/// runs only if its SHA1 is allowed. Functions are refused.
fn script_refusal(spec: &Spec, request: &Request, scripts: &[String]) -> Option<Reply> {
    let body = request.arg(1).unwrap_or_default();
    let sha = match spec.cmd {
        Cmd::Eval | Cmd::EvalRo => hex(&Sha1::digest(body)),
        Cmd::EvalSha | Cmd::EvalShaRo => String::from_utf8_lossy(body).to_ascii_lowercase(),
        _ => return Some(RedisError::FunctionRefused.reply()),
    };
    let listed = ALWAYS_ALLOWED_SCRIPTS.contains(&sha.as_str()) || scripts.contains(&sha);
    (!listed).then(|| RedisError::ScriptRefused(sha.to_string()).reply())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::merge::merge;
    use crate::protocol::command::TABLE;
    use crate::protocol::{lookup, Cmd};

    fn request(args: &[&str]) -> Request {
        Request::Inline(args.iter().map(|a| Bytes::from(a.to_string())).collect())
    }

    #[test]
    fn a_plan_and_a_decision_move_without_a_memcpy_call() {
        // The rare plans' merge rules are boxed: past 128 bytes, every move
        // of a plan or a decision on the forwarding path is a memcpy call.
        assert!(std::mem::size_of::<Plan>() <= 48);
        assert!(std::mem::size_of::<crate::client::decide::Decision>() <= 128);
    }

    /// Keys starting with "a" live on backend 0, the rest on backend 1;
    /// backend 1 waits for replicas.
    fn plan_of(args: &[&str], prefixes: &[&str], user: &[&str]) -> Plan {
        let spec = lookup(args[0].as_bytes()).unwrap();
        let owned = |list: &[&str]| list.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        let (prefixes, user) = (owned(prefixes), owned(user));
        let policy = Policy {
            prefixes: &prefixes,
            user_prefixes: &user,
            scripts: &[],
            backends: 2,
            allow_flush: true,
            split_transactions: false,
            clusters: &[],
            channels: None,
            max_scan_count: 1000,
            hash_tag: None,
        };
        plan(
            spec,
            &request(args),
            &policy,
            |key| usize::from(!key.starts_with(b"a")),
            |backend| backend == 1,
        )
    }

    fn bytes(args: &[&str]) -> Vec<Bytes> {
        args.iter().map(|a| Bytes::from(a.to_string())).collect()
    }

    #[test]
    fn a_restricted_clients_prefix_is_pushed_down_into_its_patterns() {
        assert_eq!(narrowed(b"*", "s:a:"), (Bytes::from("s:a:*"), true));
        assert_eq!(narrowed(b"s:a:1*", "s:a:"), (Bytes::from("s:a:1*"), false));
        assert_eq!(narrowed(b"s:*", "s:a:"), (Bytes::from("s:a:*"), true));
        assert_eq!(narrowed(b"x*", "s:a:"), (Bytes::from("s:a:*"), true));
        assert_eq!(narrowed(b"*", "s[1]*"), (Bytes::from("s\\[1\\]\\**"), true));
        // KEYS: the backends are asked for the client's keys only, and the
        // client's pattern is matched here where theirs is wider.
        let Plan::EveryWith { args, how } = plan_of(&["keys", "*:1"], &[], &["s:a:"]) else {
            panic!()
        };
        assert_eq!(args, bytes(&["KEYS", "s:a:*"]));
        let MergeHow::Concat(filter) = *how else {
            panic!()
        };
        assert!(filter.allows(b"s:a:x:1"));
        assert!(!filter.allows(b"s:a:x:2"));
        assert!(!filter.allows(b"s:b:x:1"));
        assert!(matches!(
            plan_of(&["keys", "*"], &[], &[]),
            Plan::Every { .. }
        ));
        // SCAN: MATCH added or narrowed, COUNT capped.
        let scan = |args: &[&str]| match plan_of(args, &[], &["s:a:"]) {
            Plan::Split { mut parts, .. } => parts.remove(0).1,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            scan(&["scan", "0", "COUNT", "100000000"]),
            bytes(&["scan", "0", "COUNT", "1000", "MATCH", "s:a:*"])
        );
        assert_eq!(
            scan(&["scan", "0", "MATCH", "s:a:7*", "COUNT", "10"]),
            bytes(&["scan", "0", "MATCH", "s:a:7*", "COUNT", "10"])
        );
        let unrestricted = match plan_of(&["scan", "0", "COUNT", "100000000"], &[], &[]) {
            Plan::Split { mut parts, .. } => parts.remove(0).1,
            other => panic!("{other:?}"),
        };
        assert_eq!(unrestricted, bytes(&["scan", "0", "COUNT", "100000000"]));
    }

    /// Backend 1 is a Redis Cluster: keys group by slot there.
    fn plan_on_cluster(args: &[&str]) -> Plan {
        let spec = lookup(args[0].as_bytes()).unwrap();
        let policy = Policy {
            prefixes: &[],
            user_prefixes: &[],
            scripts: &[],
            backends: 2,
            allow_flush: true,
            split_transactions: false,
            clusters: &[false, true],
            channels: None,
            max_scan_count: 1000,
            hash_tag: None,
        };
        plan(
            spec,
            &request(args),
            &policy,
            |key| usize::from(!key.starts_with(b"a")),
            |_| false,
        )
    }

    #[test]
    fn on_a_cluster_backend_keys_group_by_slot() {
        // "foo" and "bar" are in different slots; {t}... in one.
        assert_eq!(
            plan_on_cluster(&["MGET", "foo", "bar", "{t}x"]),
            Plan::Split {
                parts: vec![
                    (1, bytes(&["MGET", "foo"])),
                    (1, bytes(&["MGET", "bar"])),
                    (1, bytes(&["MGET", "{t}x"])),
                ],
                how: Box::new(MergeHow::InKeyOrder(vec![(0, 0), (1, 0), (2, 0)])),
            }
        );
        assert_eq!(
            plan_on_cluster(&["DEL", "{t}a", "{t}b"]),
            Plan::Forward {
                backend: 1,
                wait: false
            }
        );
        // A plain backend's keys still go together whatever their slots.
        assert_eq!(
            plan_on_cluster(&["DEL", "afoo", "abar"]),
            Plan::Forward {
                backend: 0,
                wait: false
            }
        );
        for args in [
            &["SINTER", "foo", "bar"][..],
            &["RENAME", "foo", "bar"],
            &["RENAME", "afoo", "bar"],
            &["EVAL", "return 1", "2", "foo", "bar"],
        ] {
            assert_eq!(
                plan_on_cluster(args),
                Plan::Answer(RedisError::CrossSlot.reply()),
                "{args:?}"
            );
        }
        assert_eq!(
            plan_on_cluster(&["RENAME", "afoo", "abar"]),
            Plan::Forward {
                backend: 0,
                wait: false
            }
        );
    }

    #[test]
    fn one_key_goes_to_its_backend_with_a_wait_only_for_writes_there() {
        assert_eq!(
            plan_of(&["GET", "a1"], &[], &[]),
            Plan::Forward {
                backend: 0,
                wait: false
            }
        );
        assert_eq!(
            plan_of(&["GET", "b1"], &[], &[]),
            Plan::Forward {
                backend: 1,
                wait: false
            }
        );
        assert_eq!(
            plan_of(&["SET", "b1", "v"], &[], &[]),
            Plan::Forward {
                backend: 1,
                wait: true
            }
        );
        assert_eq!(
            plan_of(&["SET", "a1", "v"], &[], &[]),
            Plan::Forward {
                backend: 0,
                wait: false
            }
        );
    }

    #[test]
    fn keys_on_one_backend_are_forwarded_whole() {
        assert_eq!(
            plan_of(&["DEL", "a1", "a2", "a3"], &[], &[]),
            Plan::Forward {
                backend: 0,
                wait: false
            }
        );
        assert_eq!(
            plan_of(&["MSET", "b1", "x", "b2", "y"], &[], &[]),
            Plan::Forward {
                backend: 1,
                wait: true
            }
        );
    }

    #[test]
    fn keys_over_backends_are_split_in_their_order() {
        assert_eq!(
            plan_of(&["MGET", "a1", "b1", "a2", "b2"], &[], &[]),
            Plan::Split {
                parts: vec![
                    (0, bytes(&["MGET", "a1", "a2"])),
                    (1, bytes(&["MGET", "b1", "b2"]))
                ],
                how: Box::new(MergeHow::InKeyOrder(vec![(0, 0), (1, 0), (0, 1), (1, 1)])),
            }
        );
        assert_eq!(
            plan_of(&["DEL", "b1", "a1"], &[], &[]),
            Plan::Split {
                parts: vec![(1, bytes(&["DEL", "b1"])), (0, bytes(&["DEL", "a1"]))],
                how: Box::new(MergeHow::Sum),
            }
        );
        assert_eq!(
            plan_of(&["MSET", "a1", "x", "b1", "y", "a2", "z"], &[], &[]),
            Plan::Split {
                parts: vec![
                    (0, bytes(&["MSET", "a1", "x", "a2", "z"])),
                    (1, bytes(&["MSET", "b1", "y"]))
                ],
                how: Box::new(MergeHow::AllOk),
            }
        );
    }

    #[test]
    fn a_key_outside_either_prefix_list_refuses_the_whole_request() {
        assert_eq!(plan_of(&["GET", "a1"], &["b"], &[]), Plan::Refused);
        assert_eq!(plan_of(&["GET", "a1"], &[], &["b"]), Plan::Refused);
        assert_eq!(
            plan_of(&["GET", "a1"], &["a"], &["a1"]),
            Plan::Forward {
                backend: 0,
                wait: false
            }
        );
        assert_eq!(plan_of(&["MGET", "a1", "b1"], &["a"], &[]), Plan::Refused);
        assert_eq!(
            plan_of(&["DEL", "a1", "a2", "x"], &["a"], &[]),
            Plan::Refused
        );
    }

    #[test]
    fn every_keyed_command_of_the_table_is_planned() {
        for spec in TABLE
            .iter()
            .filter(|s| matches!(s.route, Route::Key | Route::Keys(_) | Route::KeyValues))
        {
            let argc = if spec.arity > 0 {
                spec.arity as usize
            } else {
                -spec.arity as usize + 2
            };
            let mut args = vec![spec.name.to_string()];
            args.extend((1..argc).map(|i| format!("{}{i}", if i % 2 == 0 { "b" } else { "a" })));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let planned = plan_of(&args, &[], &[]);
            match spec.route {
                Route::Key => assert!(
                    matches!(planned, Plan::Forward { backend: 0, .. }),
                    "{}: {planned:?}",
                    spec.name
                ),
                _ => assert!(
                    matches!(planned, Plan::Split { .. } | Plan::Forward { .. }),
                    "{}: {planned:?}",
                    spec.name
                ),
            }
            // Refused by a prefix that none of its keys has.
            assert_eq!(
                plan_of(&args, &["zzz"], &[]),
                Plan::Refused,
                "{}",
                spec.name
            );
        }
        assert_eq!(lookup(b"get").unwrap().cmd, Cmd::Get);
    }

    #[test]
    fn a_command_about_every_backend_goes_to_every_backend() {
        assert_eq!(
            plan_of(&["DBSIZE"], &[], &[]),
            Plan::Every {
                how: Box::new(MergeHow::Sum)
            }
        );
        assert_eq!(
            plan_of(&["SCRIPT", "load", "return 1"], &[], &[]),
            Plan::Every {
                how: Box::new(MergeHow::Same)
            }
        );
        assert_eq!(
            plan_of(&["SCRIPT", "EXISTS", "a", "b"], &[], &[]),
            Plan::Every {
                how: Box::new(MergeHow::EveryHas)
            }
        );
        assert_eq!(
            plan_of(&["SCRIPT", "FLUSH", "ASYNC"], &[], &[]),
            Plan::Every {
                how: Box::new(MergeHow::AllOk)
            }
        );
        assert_eq!(plan_of(&["SCRIPT", "KILL"], &[], &[]), Plan::Kill);
        assert_eq!(plan_of(&["FUNCTION", "KILL"], &[], &[]), Plan::Kill);
        assert!(matches!(
            plan_of(&["SCRIPT", "LOAD"], &[], &[]),
            Plan::Answer(_)
        ));
    }

    #[test]
    fn scripts_go_to_the_backend_of_their_keys_or_are_refused() {
        let answer = |args: &[&str], prefixes: &[&str]| match plan_of(args, prefixes, &[]) {
            Plan::Answer(Reply::Error(e)) => String::from_utf8_lossy(&e).into_owned(),
            other => format!("{other:?}"),
        };
        assert_eq!(
            plan_of(&["EVAL", "return 1", "2", "b1", "b2", "x"], &[], &[]),
            Plan::Forward {
                backend: 1,
                wait: true
            }
        );
        assert_eq!(
            plan_of(&["EVAL_RO", "return 1", "1", "b1"], &[], &[]),
            Plan::Forward {
                backend: 1,
                wait: false
            }
        );
        assert_eq!(
            answer(&["EVALSHA", "abc", "2", "a1", "b1"], &[]),
            RedisError::CrossSlot.to_string()
        );
        assert!(matches!(
            plan_of(&["EVAL", "return 1", "0"], &[], &[]),
            Plan::Forward { .. }
        ));
        assert!(answer(&["EVAL", "return 1", "0"], &["a"]).contains("numkeys at least 1"));
        assert_eq!(
            answer(&["EVAL", "return 1", "x"], &[]),
            "ERR value is not an integer or out of range"
        );
        assert_eq!(
            answer(&["EVAL", "return 1", "-1"], &[]),
            "ERR Number of keys can't be negative"
        );
        assert_eq!(
            answer(&["FCALL", "f", "2", "a1"], &[]),
            "ERR Number of keys can't be greater than number of args"
        );
        // Prefixes set: only listed scripts run, keys still checked.
        let unlock = "if redis.call(\"get\",KEYS[1]) == ARGV[1] then return redis.call(\"del\",KEYS[1]) else return 0 end";
        assert!(matches!(
            plan_of(&["EVAL", unlock, "1", "a1_LOCK", "t"], &["a"], &[]),
            Plan::Forward { backend: 0, .. }
        ));
        assert!(matches!(
            plan_of(
                &[
                    "EVALSHA",
                    "B70C2384248F88E6B75B9F89241A180F856AD852",
                    "1",
                    "a1",
                    "t"
                ],
                &["a"],
                &[]
            ),
            Plan::Forward { backend: 0, .. }
        ));
        assert!(answer(&["EVAL", "return 1", "1", "a1"], &["a"])
            .starts_with("NOPERM script e0e1f9fabfc9d4800c877a703b823ac0578ff8db"));
        assert!(answer(&["FCALL_RO", "f", "1", "a1"], &["a"]).starts_with("NOPERM functions"));
        assert_eq!(
            plan_of(&["EVAL", unlock, "1", "b1"], &["a"], &[]),
            Plan::Refused
        );
    }

    #[test]
    fn scan_walks_the_backends_one_cursor_at_a_time() {
        let scan_on = |cursor: &str| plan_of(&["SCAN", cursor, "COUNT", "5"], &[], &[]);
        let step = |index| MergeHow::ScanStep {
            index,
            backends: 2,
            filter: KeyFilter::default(),
        };
        assert_eq!(
            scan_on("0"),
            Plan::Split {
                parts: vec![(0, bytes(&["SCAN", "0", "COUNT", "5"]))],
                how: Box::new(step(0)),
            }
        );
        let cursor = (7u64 << SCAN_INDEX_BITS | 1).to_string();
        assert_eq!(
            scan_on(&cursor),
            Plan::Split {
                parts: vec![(1, bytes(&["SCAN", "7", "COUNT", "5"]))],
                how: Box::new(step(1)),
            }
        );
        assert!(matches!(scan_on("2"), Plan::Answer(_)));
        assert!(matches!(scan_on("-1"), Plan::Answer(_)));
        let reply = |cursor: &str| {
            Reply::Array(vec![
                Reply::Bulk(Bytes::from(cursor.to_string())),
                Reply::Array(vec![Reply::Bulk(Bytes::from("k"))]),
            ])
        };
        let next = |how: &MergeHow, cursor: &str| match merge(how, vec![reply(cursor)]) {
            Reply::Array(parts) => parts[0].clone(),
            other => other,
        };
        // Within a backend, to the next one, and done after the last.
        assert_eq!(next(&step(1), "7"), Reply::Bulk(cursor.into()));
        assert_eq!(next(&step(0), "0"), Reply::Bulk("1".into()));
        assert_eq!(next(&step(1), "0"), Reply::Bulk("0".into()));
    }
}
