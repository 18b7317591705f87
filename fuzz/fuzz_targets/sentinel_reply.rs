//! Sentinel bytes: framed by the bounded decoder, then read as the answers
//! to GET-MASTER-ADDR-BY-NAME, MASTER and SENTINELS and as pub/sub messages
//! (`+switch-master` and the failover events). Never a panic, never a
//! recursion without bound.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use session_proxy::protocol::{BackendReplyDecoder, Reply};
use session_proxy::sentinel::{failover_event, read_answers};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut replies = Vec::new();
    while let Ok(Some(frame)) = BackendReplyDecoder::default().decode(&mut buf) {
        let reply = Reply::from_resp2(frame);
        let _ = failover_event(&reply, "shard-a");
        replies.push(reply);
        if replies.len() >= 16 {
            break;
        }
    }
    let null = Reply::Null;
    let at = |i: usize| replies.get(i).unwrap_or(&null);
    let _ = read_answers("shard-a", at(0), at(1), at(2));
});
