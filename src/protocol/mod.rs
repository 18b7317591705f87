//! The wire: client request framing, the command table, replies and their encoding.

pub mod backend_reply;
pub mod command;
pub mod keyed;
pub mod keys;
pub mod learned;
mod redis_error;
pub mod reply;
pub mod request;
pub mod spec;

pub use backend_reply::{reply_extent, BackendReplyDecoder, ReplyError};
pub use command::{lookup, Cmd, Merge, Route, Spec};
pub use redis_error::RedisError;
pub use reply::{encode_args, encode_command, Proto, Reply, ReplyEncoder};
pub use request::{ProtocolError, Request, RequestDecoder};
