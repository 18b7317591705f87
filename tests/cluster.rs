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

#[test]
fn the_slot_map_follows_a_failover() {
    let cluster = Cluster::start(3, 1);
    let seeds: Vec<String> = cluster.nodes.iter().map(|n| n.address()).collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fetch = || {
        runtime
            .block_on(session_proxy::cluster::fetch(
                &seeds,
                None,
                None,
                std::time::Duration::from_secs(5),
            ))
            .expect("a slot map")
    };
    let map = fetch();
    assert!(map.is_complete());
    let key = b"session:abc";
    let master = map.master_of(key).unwrap().to_string();
    // The master's replica takes over; a fresh map names it.
    let replica = cluster
        .nodes
        .iter()
        .find(|n| {
            n.client().text(&["INFO", "replication"]).contains(&format!(
                "master_port:{}",
                master.rsplit(':').next().unwrap()
            ))
        })
        .expect("the master's replica");
    assert_eq!(replica.client().text(&["CLUSTER", "FAILOVER"]), "+OK\r\n");
    common::wait_until(
        common::READY_LIMIT,
        std::time::Duration::from_millis(50),
        "new master in the map",
        || fetch().master_of(key) == Some(replica.address().as_str()),
    );
    // Seeds that do not answer are skipped.
    let mut with_dead = vec!["127.0.0.1:1".to_string()];
    with_dead.extend(seeds.clone());
    let map = runtime
        .block_on(session_proxy::cluster::fetch(
            &with_dead,
            None,
            None,
            std::time::Duration::from_secs(5),
        ))
        .unwrap();
    assert!(map.is_complete());
}
