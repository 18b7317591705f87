//! Redis Cluster groundwork (issue 15): the proxy's hash slot of a key is
//! Redis Cluster's (CLUSTER KEYSLOT of a real cluster node, hash tags
//! included), and its reading of CLUSTER SHARDS covers every slot with the
//! masters and replicas the cluster has.

mod common;

use bytes::Bytes;
use common::Cluster;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use session_proxy::cluster::{parse_shards, slot, SLOTS};
use session_proxy::protocol::Reply;

#[test]
fn slots_and_shards_match_a_real_cluster() {
    let cluster = Cluster::start(3, 1);
    let mut node = cluster.nodes[0].client();
    let mut rng = StdRng::seed_from_u64(15);
    for i in 0..2000 {
        let mut key = format!("session:{i}:{}", rng.random_range(0..1_000_000));
        match i % 4 {
            1 => key = format!("{{user{}}}.{key}", rng.random_range(0..50)),
            2 => key = format!("x{{}}{key}"),
            3 => key = format!("{key}{{tag{}", i % 7),
            _ => {}
        }
        let reply = node.text(&["CLUSTER", "KEYSLOT", &key]);
        assert_eq!(reply, format!(":{}\r\n", slot(key.as_bytes())), "{key}");
    }
    let raw = node.cmd(&["CLUSTER", "SHARDS"]);
    let shards = parse_shards(&Reply::Raw(Bytes::from(raw)).parsed()).expect("CLUSTER SHARDS");
    assert_eq!(shards.len(), 3);
    let mut covered = vec![false; SLOTS as usize];
    for shard in &shards {
        assert_eq!(shard.replicas.len(), 1, "{shard:?}");
        assert!(cluster.nodes.iter().any(|n| n.address() == shard.master));
        for &(start, end) in &shard.ranges {
            for s in start..=end {
                assert!(!covered[s as usize], "slot {s} twice");
                covered[s as usize] = true;
            }
        }
    }
    assert!(covered.iter().all(|&c| c), "every slot has a master");
}
