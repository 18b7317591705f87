//! What a keyed request becomes, decided without I/O: refused (a key
//! outside the allowed prefixes), forwarded to the one backend holding every
//! key (followed by a WAIT when that backend asks for replica
//! acknowledgements), or split into one sub-command per backend, keys in
//! their original order, with the way to merge the replies ([`merge`]).
//! `dispatch.rs` carries a plan out; both functions are tested here alone.

use bytes::Bytes;

use crate::protocol::command::key_positions;
use crate::protocol::{Merge, Reply, Request, Route, Spec};

/// What to do with a request whose command routes by key.
#[derive(Debug, PartialEq)]
pub(in crate::client) enum Plan {
    /// A key is outside the allowed prefixes (the config's or the user's).
    Refused,
    /// Every key is on `backend` (or there is no key): the request goes as it
    /// came; `wait` when it is a write to a backend with `min_replicas_ack`.
    Forward { backend: usize, wait: bool },
    /// Keys on several backends: a sub-command for each, merged by `how`.
    Split {
        parts: Vec<(usize, Vec<Bytes>)>,
        how: MergeHow,
    },
    /// A command about every backend's data (DBSIZE): the request goes to
    /// each, and their integers are added up.
    Every,
}

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
}

/// Plans `request` for `spec`: `owner` names the backend serving a key,
/// `waits` whether a backend follows writes with WAIT.
pub(in crate::client) fn plan(
    spec: &Spec,
    request: &Request,
    prefixes: &[String],
    user_prefixes: &[String],
    mut owner: impl FnMut(&[u8]) -> usize,
    waits: impl Fn(usize) -> bool,
) -> Plan {
    if spec.route == Route::AllBackends {
        return Plan::Every;
    }
    let allowed = |key: &[u8], list: &[String]| {
        list.is_empty() || list.iter().any(|p| key.starts_with(p.as_bytes()))
    };
    // (arg position, backend index), listed only once there is a second key.
    let mut owners: Vec<(usize, usize)> = Vec::new();
    let mut first = None;
    let mut one_backend = true;
    for pos in key_positions(spec, request.len()) {
        let Some(key) = request.arg(pos) else {
            continue;
        };
        if !allowed(key, prefixes) || !allowed(key, user_prefixes) {
            return Plan::Refused;
        }
        let backend = owner(key);
        match first {
            None => first = Some((pos, backend)),
            Some((first_pos, first_backend)) => {
                if owners.is_empty() {
                    owners.push((first_pos, first_backend));
                }
                owners.push((pos, backend));
                one_backend &= backend == first_backend;
            }
        }
    }
    if one_backend {
        let backend = first.map_or(0, |(_, b)| b);
        return Plan::Forward {
            backend,
            wait: spec.write && waits(backend),
        };
    }
    let args = request.args();
    let mut parts: Vec<(usize, Vec<Bytes>)> = Vec::new();
    let mut positions = Vec::with_capacity(owners.len());
    for &(pos, backend) in &owners {
        let part = match parts.iter().position(|(b, _)| *b == backend) {
            Some(p) => p,
            None => {
                parts.push((backend, vec![args[0].clone()]));
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
    Plan::Split { parts, how }
}

/// The client's reply from the parts' replies, in part order: the first
/// error if any part failed, else the merge `how` says.
pub(in crate::client) fn merge(how: &MergeHow, parts: Vec<Reply>) -> Reply {
    if let Some(error) = parts.iter().find(|r| r.is_error()) {
        return error.clone();
    }
    let unexpected = || Reply::error("ERR unexpected reply from a backend");
    match how {
        MergeHow::Sum => {
            let mut total = 0i64;
            for part in &parts {
                match part {
                    Reply::Int(n) => total = total.saturating_add(*n),
                    _ => return unexpected(),
                }
            }
            Reply::Int(total)
        }
        MergeHow::AllOk => Reply::ok(),
        MergeHow::InKeyOrder(positions) => {
            let mut out = Vec::with_capacity(positions.len());
            for &(part, index) in positions {
                match parts.get(part) {
                    Some(Reply::Array(items)) => {
                        out.push(items.get(index).cloned().unwrap_or(Reply::Null))
                    }
                    _ => return unexpected(),
                }
            }
            Reply::Array(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::command::TABLE;
    use crate::protocol::{lookup, Cmd};

    fn request(args: &[&str]) -> Request {
        Request::Inline(args.iter().map(|a| Bytes::from(a.to_string())).collect())
    }

    /// Keys starting with "a" live on backend 0, the rest on backend 1;
    /// backend 1 waits for replicas.
    fn plan_of(args: &[&str], prefixes: &[&str], user: &[&str]) -> Plan {
        let spec = lookup(args[0].as_bytes()).unwrap();
        let owned = |list: &[&str]| list.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        plan(
            spec,
            &request(args),
            &owned(prefixes),
            &owned(user),
            |key| usize::from(!key.starts_with(b"a")),
            |backend| backend == 1,
        )
    }

    fn bytes(args: &[&str]) -> Vec<Bytes> {
        args.iter().map(|a| Bytes::from(a.to_string())).collect()
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
                how: MergeHow::InKeyOrder(vec![(0, 0), (1, 0), (0, 1), (1, 1)]),
            }
        );
        assert_eq!(
            plan_of(&["DEL", "b1", "a1"], &[], &[]),
            Plan::Split {
                parts: vec![(1, bytes(&["DEL", "b1"])), (0, bytes(&["DEL", "a1"]))],
                how: MergeHow::Sum,
            }
        );
        assert_eq!(
            plan_of(&["MSET", "a1", "x", "b1", "y", "a2", "z"], &[], &[]),
            Plan::Split {
                parts: vec![
                    (0, bytes(&["MSET", "a1", "x", "a2", "z"])),
                    (1, bytes(&["MSET", "b1", "y"]))
                ],
                how: MergeHow::AllOk,
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
        assert_eq!(plan_of(&["DBSIZE"], &[], &[]), Plan::Every);
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
}
