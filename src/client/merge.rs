//! How the replies of a request split over several backends become the
//! one reply the client gets, keeping to what the client may see.

use bytes::Bytes;

use crate::protocol::RedisError;
use crate::protocol::Reply;
use crate::pubsub::policy::ChannelPolicy;

/// How split replies become the one reply the client gets.
#[derive(Debug, PartialEq)]
pub(in crate::client) enum MergeHow {
    /// Integers added up (DEL, EXISTS, ...).
    Sum,
    /// `+OK` once every part said so (MSET).
    AllOk,
    /// For each key of the original command: (part, index within the
    /// part's reply) (MGET).
    InKeyOrder(Vec<(usize, usize)>),
    /// Every part gave the same reply, which is the client's (SCRIPT LOAD).
    Same,
    /// Arrays of 0 and 1: 1 where every part says 1 (SCRIPT EXISTS: a
    /// script is there only if every backend has it).
    EveryHas,
    /// Arrays put end to end, keeping the keys the filter allows (KEYS).
    Concat(KeyFilter),
    /// One of the parts' non-null replies the filter allows, at random
    /// (RANDOMKEY).
    AnyOne(KeyFilter),
    /// Arrays merged without repeats, in first-seen order, keeping the
    /// channels the client may see (PUBSUB CHANNELS).
    Union(ChannelFilter),
    /// The largest integer (PUBSUB NUMPAT: every backend has the patterns).
    Max,
    /// PUBSUB NUMSUB: for each channel, the count its owner backend (the
    /// index, in backend order) gives; 0 for a channel the client may not
    /// see.
    NumSub(Vec<usize>, ChannelFilter),
    /// COMMAND DOCS from a backend, kept to the commands the proxy has (an
    /// empty map when the backend cannot answer).
    Docs,
    /// A SCAN step on backend `index` of `backends`: the client's cursor
    /// goes on to the next backend once this one's is done.
    ScanStep {
        index: usize,
        backends: usize,
        filter: KeyFilter,
    },
}

/// Channels a client may see in PUBSUB's answers: those its channel policy
/// allows, and of keyspace notifications only those of its keys.
#[derive(Debug, Clone, PartialEq, Default)]
pub(in crate::client) struct ChannelFilter {
    pub(in crate::client) policy: ChannelPolicy,
    pub(in crate::client) keys: KeyFilter,
}

impl ChannelFilter {
    fn shows(&self, channel: &[u8]) -> bool {
        let key_shown = match channel
            .strip_prefix(b"__keyspace@".as_slice())
            .and_then(|rest| {
                rest.windows(3)
                    .position(|w| w == b"__:")
                    .map(|i| &rest[i + 3..])
            }) {
            Some(key) => self.keys.allows(key),
            None => true,
        };
        key_shown && self.policy.allows_channel(channel)
    }
}

/// Keys a client may see: under both prefix lists.
#[derive(Debug, Clone, PartialEq, Default)]
pub(in crate::client) struct KeyFilter {
    pub(in crate::client) prefixes: Vec<String>,
    pub(in crate::client) user_prefixes: Vec<String>,
    /// The client's own KEYS or SCAN MATCH pattern, when the backend was
    /// asked with a wider one (its prefix pushed down).
    pub(in crate::client) pattern: Option<Bytes>,
}

impl KeyFilter {
    /// SCAN MATCH patterns that cover every key the filter allows (the
    /// config's prefixes, else the user's; `*` when neither is set).
    pub(in crate::client) fn patterns(&self) -> Vec<Bytes> {
        let list = if self.prefixes.is_empty() {
            &self.user_prefixes
        } else {
            &self.prefixes
        };
        if list.is_empty() {
            return vec![Bytes::from_static(b"*")];
        }
        list.iter()
            .map(|prefix| Bytes::from(crate::glob::prefix_pattern(prefix.as_bytes())))
            .collect()
    }

    /// Whether a key is shown: under both prefix lists, and not one of the
    /// proxy's own (a move lock, a tombstone, a key being renamed).
    pub(in crate::client) fn allows(&self, key: &[u8]) -> bool {
        let under =
            |list: &[String]| list.is_empty() || list.iter().any(|p| key.starts_with(p.as_bytes()));
        let internal = crate::own_keys::is_own(key);
        let matched = self
            .pattern
            .as_ref()
            .is_none_or(|p| crate::glob::matches(p, key, crate::glob::Case::Exact));
        !internal && under(&self.prefixes) && under(&self.user_prefixes) && matched
    }
}

/// SCAN's cursor: the backend's index in the low bits, its own cursor
/// above them.
pub(in crate::client) const SCAN_INDEX_BITS: u32 = 16;

/// The client's reply from the parts' replies, in part order: the first
/// error if any part failed, else the merge `how` says.
pub(in crate::client) fn merge(how: &MergeHow, parts: Vec<Reply>) -> Reply {
    if let Some(error) = parts
        .iter()
        .find(|r| r.is_error())
        .filter(|_| *how != MergeHow::Docs)
    {
        return error.clone();
    }
    match how {
        MergeHow::Sum => fold_ints(&parts, 0, i64::saturating_add),
        MergeHow::Max => fold_ints(&parts, 0, i64::max),
        MergeHow::AllOk => Reply::ok(),
        MergeHow::Docs => docs(parts),
        MergeHow::InKeyOrder(positions) => in_key_order(positions, &parts),
        MergeHow::Same => match parts.split_first() {
            Some((first, rest)) if rest.iter().all(|p| p == first) => first.clone(),
            _ => RedisError::BackendsDiffer.reply(),
        },
        MergeHow::Union(filter) => union(filter, parts),
        MergeHow::NumSub(owners, filter) => numsub(owners, filter, &parts),
        MergeHow::EveryHas => every_has(&parts),
        MergeHow::Concat(filter) => concat(filter, parts),
        MergeHow::AnyOne(filter) => {
            let found: Vec<Reply> = parts.into_iter().filter(|k| allowed(filter, k)).collect();
            if found.is_empty() {
                return Reply::Null;
            }
            found[rand::random_range(0..found.len())].clone()
        }
        MergeHow::ScanStep {
            index,
            backends,
            filter,
        } => scan_step(*index, *backends, filter, parts),
    }
}

/// What a backend's reply of an unexpected shape becomes.
fn unexpected() -> Reply {
    RedisError::UnexpectedReply.reply()
}

/// Integer replies folded into one (a sum, a maximum).
fn fold_ints(parts: &[Reply], start: i64, step: fn(i64, i64) -> i64) -> Reply {
    let mut total = start;
    for part in parts {
        match part {
            Reply::Int(n) => total = step(total, *n),
            _ => return unexpected(),
        }
    }
    Reply::Int(total)
}

/// One array in the order of the request's keys, each taken from the part
/// and place `positions` give (MGET over several backends).
fn in_key_order(positions: &[(usize, usize)], parts: &[Reply]) -> Reply {
    let mut out = Vec::with_capacity(positions.len());
    for &(part, index) in positions {
        match parts.get(part) {
            Some(Reply::Array(items)) => out.push(items.get(index).cloned().unwrap_or(Reply::Null)),
            _ => return unexpected(),
        }
    }
    Reply::Array(out)
}

/// Every channel once, of those the filter shows (PUBSUB CHANNELS).
fn union(filter: &ChannelFilter, parts: Vec<Reply>) -> Reply {
    let mut out: Vec<Reply> = Vec::new();
    for part in parts {
        let Reply::Array(items) = part else {
            return unexpected();
        };
        for item in items {
            let shown = matches!(&item, Reply::Bulk(c) if filter.shows(c));
            if shown && !out.contains(&item) {
                out.push(item);
            }
        }
    }
    Reply::Array(out)
}

/// Each channel's count from the backend that owns it, 0 for one the
/// filter hides (PUBSUB NUMSUB).
fn numsub(owners: &[usize], filter: &ChannelFilter, parts: &[Reply]) -> Reply {
    let mut out = Vec::with_capacity(owners.len() * 2);
    for (i, owner) in owners.iter().enumerate() {
        let Some(Reply::Array(items)) = parts.get(*owner) else {
            return unexpected();
        };
        match (items.get(2 * i), items.get(2 * i + 1)) {
            (Some(channel), Some(count)) => {
                let shown = matches!(channel, Reply::Bulk(c) if filter.shows(c));
                out.push(channel.clone());
                out.push(if shown { count.clone() } else { Reply::Int(0) });
            }
            _ => return unexpected(),
        }
    }
    Reply::Array(out)
}

/// 1 where every part says 1 (SCRIPT EXISTS over every backend).
fn every_has(parts: &[Reply]) -> Reply {
    let mut all: Option<Vec<i64>> = None;
    for part in parts {
        let Reply::Array(items) = part else {
            return unexpected();
        };
        let ones: Vec<i64> = items
            .iter()
            .map(|i| if *i == Reply::Int(1) { 1 } else { 0 })
            .collect();
        all = Some(match all {
            None => ones,
            Some(so_far) => so_far.iter().zip(&ones).map(|(a, b)| a & b).collect(),
        });
    }
    Reply::Array(
        all.unwrap_or_default()
            .into_iter()
            .map(Reply::Int)
            .collect(),
    )
}

/// The keys of every part the filter allows, each once: a key may be on an
/// old server of a migration and, newer, on its owner (KEYS).
fn concat(filter: &KeyFilter, parts: Vec<Reply>) -> Reply {
    let mut keys = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for part in parts {
        let Reply::Array(items) = part else {
            return unexpected();
        };
        for key in items.into_iter().filter(|k| allowed(filter, k)) {
            let new = match &key {
                Reply::Bulk(name) => seen.insert(name.clone()),
                _ => true,
            };
            if new {
                keys.push(key);
            }
        }
    }
    Reply::Array(keys)
}

/// One backend's SCAN reply as a step of the proxy's SCAN: the cursor
/// carries the backend's index in its low bits, and moves to the next
/// backend when this one is done.
fn scan_step(index: usize, backends: usize, filter: &KeyFilter, parts: Vec<Reply>) -> Reply {
    let Some(Reply::Array(mut reply)) = parts.into_iter().next() else {
        return unexpected();
    };
    let (Some(Reply::Array(keys)), Some(Reply::Bulk(cursor))) = (reply.pop(), reply.pop()) else {
        return unexpected();
    };
    let Some(cursor) = std::str::from_utf8(&cursor)
        .ok()
        .and_then(|c| c.parse::<u64>().ok())
        .filter(|c| c.leading_zeros() >= SCAN_INDEX_BITS)
    else {
        return unexpected();
    };
    let next = if cursor != 0 {
        cursor << SCAN_INDEX_BITS | index as u64
    } else if index + 1 < backends {
        (index + 1) as u64
    } else {
        0
    };
    let keys = keys.into_iter().filter(|k| allowed(filter, k)).collect();
    Reply::Array(vec![
        Reply::Bulk(Bytes::from(next.to_string())),
        Reply::Array(keys),
    ])
}

/// The pairs of a backend's COMMAND DOCS for commands in the table.
fn docs(parts: Vec<Reply>) -> Reply {
    // RESP2's flat array, or RESP3's map.
    let entries: Vec<(Reply, Reply)> = match parts.into_iter().next() {
        Some(Reply::Array(flat)) => {
            let mut items = flat.into_iter();
            std::iter::from_fn(|| Some((items.next()?, items.next()?))).collect()
        }
        Some(Reply::Map(entries)) => entries,
        _ => return Reply::Map(Vec::new()),
    };
    let mut pairs = Vec::new();
    for (name, doc) in entries {
        let known = matches!(&name, Reply::Bulk(n) if crate::protocol::lookup(n).is_some());
        if known {
            pairs.push((name, doc));
        }
    }
    Reply::Map(pairs)
}

/// Whether a key in a reply is one the filter allows (nulls never are).
fn allowed(filter: &KeyFilter, key: &Reply) -> bool {
    match key {
        Reply::Bulk(key) => filter.allows(key),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(Bytes::from(s.to_string()))
    }

    #[test]
    fn merges_like_redis_would_have_answered() {
        assert_eq!(
            merge(&MergeHow::Sum, vec![Reply::Int(2), Reply::Int(1)]),
            Reply::Int(3)
        );
        assert_eq!(
            merge(&MergeHow::AllOk, vec![Reply::ok(), Reply::ok()]),
            Reply::ok()
        );
        let mget = MergeHow::InKeyOrder(vec![(0, 0), (1, 0), (0, 1)]);
        let parts = vec![
            Reply::Array(vec![Reply::Bulk(Bytes::from("1")), Reply::Null]),
            Reply::Array(vec![Reply::Bulk(Bytes::from("2"))]),
        ];
        assert_eq!(
            merge(&mget, parts),
            Reply::Array(vec![
                Reply::Bulk(Bytes::from("1")),
                Reply::Bulk(Bytes::from("2")),
                Reply::Null
            ])
        );
        // The first error wins; a reply of the wrong shape is an error too.
        let error = Reply::error("ERR backend 'b' did not answer within 300 ms");
        assert_eq!(
            merge(&MergeHow::Sum, vec![Reply::Int(1), error.clone()]),
            error
        );
        assert!(merge(&MergeHow::Sum, vec![Reply::ok()]).is_error());
        assert!(merge(&mget, vec![Reply::Int(1), Reply::Int(2)]).is_error());
    }

    #[test]
    fn every_backend_must_have_a_script_and_agree_on_loading_it() {
        let exists = vec![
            Reply::Array(vec![Reply::Int(1), Reply::Int(1), Reply::Int(0)]),
            Reply::Array(vec![Reply::Int(1), Reply::Int(0), Reply::Int(0)]),
        ];
        assert_eq!(
            merge(&MergeHow::EveryHas, exists),
            Reply::Array(vec![Reply::Int(1), Reply::Int(0), Reply::Int(0)])
        );
        let sha = bulk("e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
        assert_eq!(merge(&MergeHow::Same, vec![sha.clone(), sha.clone()]), sha);
        assert_eq!(
            merge(&MergeHow::Same, vec![sha, bulk("other")]),
            RedisError::BackendsDiffer.reply()
        );
        assert_eq!(
            merge(
                &MergeHow::Max,
                vec![Reply::Int(2), Reply::Int(5), Reply::Int(3)]
            ),
            Reply::Int(5)
        );
    }

    #[test]
    fn channels_merge_once_each_and_numsub_takes_each_owners_count() {
        let all = ChannelFilter::default();
        let parts = vec![
            Reply::Array(vec![bulk("a"), bulk("b")]),
            Reply::Array(vec![bulk("b"), bulk("c")]),
        ];
        assert_eq!(
            merge(&MergeHow::Union(all.clone()), parts),
            Reply::Array(vec![bulk("a"), bulk("b"), bulk("c")])
        );
        // Channel x is owned by backend 1, channel y by backend 0.
        let parts = vec![
            Reply::Array(vec![bulk("x"), Reply::Int(0), bulk("y"), Reply::Int(4)]),
            Reply::Array(vec![bulk("x"), Reply::Int(7), bulk("y"), Reply::Int(0)]),
        ];
        assert_eq!(
            merge(&MergeHow::NumSub(vec![1, 0], all), parts),
            Reply::Array(vec![bulk("x"), Reply::Int(7), bulk("y"), Reply::Int(4)])
        );
    }

    #[test]
    fn keys_merge_once_each_and_hide_what_the_filter_does_not_allow() {
        let filter = KeyFilter {
            prefixes: vec!["s:".into()],
            ..KeyFilter::default()
        };
        let parts = vec![
            Reply::Array(vec![
                bulk("s:1"),
                bulk("other"),
                bulk("__session-proxy-moving:s:2"),
            ]),
            Reply::Array(vec![bulk("s:1"), bulk("s:2")]),
        ];
        assert_eq!(
            merge(&MergeHow::Concat(filter.clone()), parts),
            Reply::Array(vec![bulk("s:1"), bulk("s:2")])
        );
        assert_eq!(
            merge(&MergeHow::AnyOne(filter), vec![Reply::Null, bulk("other")]),
            Reply::Null
        );
    }
}
