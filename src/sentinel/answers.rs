//! What the sentinels' answers say (pure): one sentinel's view of the
//! master (address, config epoch, how far it has taken a failover, the
//! other sentinels it knows), and the order in which the candidates they
//! name are tried.

use std::collections::HashMap;

use crate::config::Endpoint;
use crate::protocol::Reply;

/// How far a sentinel has taken a failover of the master (`failover_in_progress`
/// among its flags, and its `failover-state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// It leads none.
    Calm,
    /// It leads one that has not promoted a replica yet: the old master is
    /// still named and still a master, and writes there would be lost.
    Failing,
    /// It has promoted the replica and names it (`reconf_slaves` or
    /// `update_config`): writes may go to it while the other replicas are
    /// reconfigured.
    Promoted,
}

/// What one sentinel says of the master it monitors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelView {
    /// The master's address (the promoted replica's once a failover has
    /// reached the reconfiguration of the replicas).
    pub master: Endpoint,
    /// The configuration epoch: higher is newer.
    pub epoch: u64,
    /// How far it has taken a failover of the master.
    pub stage: Stage,
    /// The other sentinels it knows.
    pub others: Vec<String>,
}

/// What one sentinel's three answers say: the master's address, its config
/// epoch and the other sentinels it knows. Pure, so the fuzz target can feed
/// it whatever a sentinel might send.
pub fn read_answers(
    master_name: &str,
    address: &Reply,
    master: &Reply,
    others: &Reply,
) -> Result<SentinelView, String> {
    let (ip, port) = match address {
        Reply::Array(parts) => match parts.as_slice() {
            [Reply::Bulk(ip), Reply::Bulk(port)] => (
                String::from_utf8_lossy(ip).into_owned(),
                String::from_utf8_lossy(port).into_owned(),
            ),
            _ => return Err("unexpected GET-MASTER-ADDR-BY-NAME reply".into()),
        },
        Reply::Error(e) => return Err(String::from_utf8_lossy(e).into_owned()),
        _ => return Err(format!("sentinel does not know master '{master_name}'")),
    };
    let fields = flat_map(master).unwrap_or_default();
    let epoch = fields
        .get("config-epoch")
        .and_then(|e| e.parse().ok())
        .unwrap_or(0);
    let mut learned = Vec::new();
    if let Reply::Array(entries) = others {
        for entry in entries {
            if let Some(f) = flat_map(entry) {
                if let (Some(ip), Some(port)) = (f.get("ip"), f.get("port")) {
                    learned.push(format!("{ip}:{port}"));
                }
            }
        }
    }
    Ok(SentinelView {
        master: Endpoint::Tcp(format!("{ip}:{port}")),
        epoch,
        stage: stage(&fields),
        others: learned,
    })
}

/// The failover stage `SENTINEL MASTER`'s fields say.
fn stage(fields: &HashMap<String, String>) -> Stage {
    let leading = fields
        .get("flags")
        .is_some_and(|flags| flags.split(',').any(|f| f == "failover_in_progress"));
    let promoted = matches!(
        fields.get("failover-state").map(String::as_str),
        Some("reconf_slaves" | "update_config")
    );
    match (leading, promoted) {
        (false, _) => Stage::Calm,
        (true, false) => Stage::Failing,
        (true, true) => Stage::Promoted,
    }
}

/// The order in which the sentinels' answers are tried (each confirmed by
/// ROLE): the newest configuration first, since a config epoch only grows
/// by a failover a majority elected, and the sentinels that have not heard
/// of it yet still name the old master (which stays a master until it is
/// reconfigured: writes there would be lost); then what a majority of the
/// responders name, then the most votes.
pub fn rank_candidates(
    tally: HashMap<Endpoint, (usize, u64)>,
    responders: usize,
) -> Vec<(Endpoint, usize, u64)> {
    let mut candidates: Vec<(Endpoint, usize, u64)> = tally
        .into_iter()
        .map(|(endpoint, (votes, epoch))| (endpoint, votes, epoch))
        .collect();
    let majority = |votes: usize| votes * 2 > responders;
    candidates.sort_by_key(|c| std::cmp::Reverse((c.2, majority(c.1), c.1)));
    candidates
}

/// A RESP2 flat `[field, value, ...]` array as a map.
fn flat_map(reply: &Reply) -> Option<HashMap<String, String>> {
    let Reply::Array(items) = reply else {
        return None;
    };
    let text = |r: &Reply| match r {
        Reply::Bulk(b) | Reply::Status(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    };
    let mut map = HashMap::new();
    for pair in items.chunks(2) {
        if let [k, v] = pair {
            if let (Some(k), Some(v)) = (text(k), text(v)) {
                map.insert(k, v);
            }
        }
    }
    Some(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_maps() {
        let reply = Reply::Array(vec![
            Reply::bulk_str("ip"),
            Reply::bulk_str("127.0.0.1"),
            Reply::bulk_str("port"),
            Reply::bulk_str("7000"),
        ]);
        let map = flat_map(&reply).unwrap();
        assert_eq!(map["ip"], "127.0.0.1");
        assert_eq!(map["port"], "7000");
        assert!(flat_map(&Reply::Null).is_none());
    }

    fn fields(pairs: &[(&str, &str)]) -> Reply {
        Reply::Array(
            pairs
                .iter()
                .flat_map(|(k, v)| [Reply::bulk(k.to_string()), Reply::bulk(v.to_string())])
                .collect(),
        )
    }

    #[test]
    fn a_sentinel_leading_a_failover_says_how_far_it_is() {
        let address = Reply::Array(vec![Reply::bulk_str("127.0.0.1"), Reply::bulk_str("7001")]);
        let stage_of = |pairs: &[(&str, &str)]| {
            read_answers("shard-a", &address, &fields(pairs), &Reply::Null)
                .unwrap()
                .stage
        };
        let leading = fields(&[
            ("name", "shard-a"),
            ("flags", "master,failover_in_progress"),
            ("failover-state", "wait_promotion"),
            ("config-epoch", "3"),
        ]);
        let view = read_answers("shard-a", &address, &leading, &Reply::Array(vec![])).unwrap();
        assert_eq!(view.master, Endpoint::Tcp("127.0.0.1:7001".into()));
        assert_eq!(view.epoch, 3);
        assert_eq!(view.stage, Stage::Failing);
        let flags = "master,failover_in_progress";
        assert_eq!(stage_of(&[("flags", flags)]), Stage::Failing);
        for promoted in ["reconf_slaves", "update_config"] {
            let pairs = [("flags", flags), ("failover-state", promoted)];
            assert_eq!(stage_of(&pairs), Stage::Promoted);
        }
        assert_eq!(stage_of(&[("flags", "master")]), Stage::Calm);
        let odd = [("flags", "master,failover_in_progress_not")];
        assert_eq!(stage_of(&odd), Stage::Calm);
        // A state with no failover flag is no failover.
        let stale = [("flags", "master"), ("failover-state", "reconf_slaves")];
        assert_eq!(stage_of(&stale), Stage::Calm);
    }

    #[test]
    fn a_newer_configuration_outranks_a_stale_majority() {
        let old = Endpoint::Tcp("127.0.0.1:7001".into());
        let new = Endpoint::Tcp("127.0.0.1:7002".into());
        // Two of three sentinels still name the old master at epoch 1; the
        // leader names the promoted replica at epoch 2.
        let tally = HashMap::from([(old.clone(), (2, 1)), (new.clone(), (1, 2))]);
        let ranked: Vec<Endpoint> = rank_candidates(tally, 3).into_iter().map(|c| c.0).collect();
        assert_eq!(ranked, [new.clone(), old.clone()]);
        // At one epoch, the majority first, then the most votes.
        let tally = HashMap::from([(old.clone(), (2, 1)), (new.clone(), (1, 1))]);
        let ranked: Vec<Endpoint> = rank_candidates(tally, 3).into_iter().map(|c| c.0).collect();
        assert_eq!(ranked, [old, new]);
    }
}
