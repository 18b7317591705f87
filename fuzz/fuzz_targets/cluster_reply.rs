//! A cluster node's bytes read as the proxy reads them when it fetches the
//! slot map (CLUSTER SHARDS, CLUSTER SLOTS) and follows redirections
//! (`-MOVED`, `-ASK`, `-TRYAGAIN`): never a panic, never work or memory
//! beyond what the slots bound; every slot of a map is served by one of
//! its masters or by none, a redirection names a slot that exists, and a
//! MOVED noted in the map is where that slot then leads.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use session_proxy::cluster::{
    parse_shards, parse_slots, redirect, Redirect, SlotMap, MAX_MASTERS, SLOTS,
};
use session_proxy::protocol::{BackendReplyDecoder, Reply};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut map = SlotMap::from_shards(&[]);
    for _ in 0..16 {
        let Ok(Some(frame)) = BackendReplyDecoder::default().decode(&mut buf) else {
            break;
        };
        let reply = Reply::from_resp2(frame);
        for shards in [parse_shards(&reply), parse_slots(&reply)].into_iter().flatten() {
            assert!(shards.len() <= MAX_MASTERS);
            for shard in &shards {
                assert!(shard.ranges.iter().all(|&(start, end)| start <= end && end < SLOTS));
            }
            map = SlotMap::from_shards(&shards);
            assert_eq!(map.owners.len(), SLOTS as usize);
            assert!(map
                .owners
                .iter()
                .all(|&o| o == u16::MAX || (o as usize) < map.masters.len()));
        }
        match redirect(&reply) {
            Some(Redirect::Moved { slot, node }) => {
                assert!(slot < SLOTS && !node.is_empty());
                let fits = map.masters.len() < MAX_MASTERS || map.masters.contains(&node);
                map.set(slot, &node);
                if fits {
                    assert_eq!(map.master_of_slot(slot), Some(node.as_str()));
                }
            }
            Some(Redirect::Ask { slot, node }) => assert!(slot < SLOTS && !node.is_empty()),
            Some(Redirect::TryAgain) | None => {}
        }
    }
});
