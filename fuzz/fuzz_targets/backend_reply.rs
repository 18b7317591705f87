//! Backend bytes through the reply framing: never a panic or a stack
//! overflow; whatever `reply_extent` accepts and `redis-protocol` decodes
//! (it refuses status and error lines that are not UTF-8, which the proxy
//! passes through as bytes) has the same length, and every framed reply
//! re-encodes for RESP2 and RESP3 clients.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use session_proxy::protocol::{reply_extent, Proto, Reply, ReplyEncoder};
use tokio_util::codec::Encoder;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some(len)) = reply_extent(rest, 1 << 20) {
        let frame = &rest[..len];
        match redis_protocol::resp2::decode::decode(frame) {
            Ok(Some((_, decoded))) => assert_eq!(decoded, len),
            Ok(None) => panic!("a framed reply is complete"),
            Err(_) => {}
        }
        let _ = Reply::Raw(Bytes::copy_from_slice(frame)).parsed();
        for proto in [Proto::Resp2, Proto::Resp3] {
            let mut out = BytesMut::new();
            let raw = Reply::Raw(Bytes::copy_from_slice(frame));
            let _ = ReplyEncoder { proto }.encode(raw, &mut out);
        }
        rest = &rest[len..];
    }
});
