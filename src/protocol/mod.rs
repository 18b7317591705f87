//! The wire: client request framing, the command table, replies and their encoding.

pub mod command;
pub mod reply;
pub mod request;

pub use command::{lookup, Cmd, Merge, Route, Spec};
pub use reply::{encode_args, encode_command, Proto, Reply, ReplyEncoder};
pub use request::{ProtocolError, Request, RequestDecoder};

use bytes::BytesMut;
use redis_protocol::resp2::types::BytesFrame as Resp2Frame;
use tokio_util::codec::Decoder;

/// Decodes the RESP2 replies a backend sends, zero-copy, with `redis-protocol`.
#[derive(Debug, Default, Clone, Copy)]
pub struct BackendReplyDecoder;

impl Decoder for BackendReplyDecoder {
    type Item = Resp2Frame;
    type Error = redis_protocol::error::RedisProtocolError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Resp2Frame>, Self::Error> {
        if buf.is_empty() {
            return Ok(None);
        }
        Ok(redis_protocol::resp2::decode::decode_bytes_mut(buf)?.map(|(frame, _, _)| frame))
    }
}
