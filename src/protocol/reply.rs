//! Replies, in a protocol-neutral form, and their encoding in RESP2 or RESP3.
//!
//! Backend replies arrive as frames in the protocol of the connection they
//! came on: a RESP3 client's requests go on connections that speak RESP3
//! (HELLO 3), so the server's own RESP3 reply reaches it byte for byte
//! ([`Reply::Raw3`]); the rest, and replies the proxy merges, are RESP2.
//! Local replies are built here. The bytes sent to a client are produced by
//! `redis-protocol`'s encoders, in the protocol that client chose with
//! HELLO, unless they are a backend's own in that protocol already.

use super::RedisError;
use bytes::{Bytes, BytesMut};
use redis_protocol::bytes_utils::Str;
use redis_protocol::resp2::types::BytesFrame as Resp2Frame;
use redis_protocol::resp3::types::{BytesFrame as Resp3Frame, VerbatimStringFormat};
use tokio_util::codec::Encoder;

/// The protocol a client speaks, as set by HELLO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Proto {
    #[default]
    Resp2,
    Resp3,
}

impl Proto {
    pub fn number(self) -> i64 {
        match self {
            Proto::Resp2 => 2,
            Proto::Resp3 => 3,
        }
    }
}

/// A reply to one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK`: a simple string.
    Status(Bytes),
    /// `-ERR ...`: the full error line without the dash, code included.
    Error(Bytes),
    Int(i64),
    Bulk(Bytes),
    /// `$-1` in RESP2, `_` in RESP3.
    Null,
    Array(Vec<Reply>),
    /// A RESP3 map; a flat key, value, key, value array in RESP2.
    Map(Vec<(Reply, Reply)>),
    /// A RESP3 set; an array in RESP2.
    Set(Vec<Reply>),
    /// A RESP3 verbatim `txt` string (INFO, CLIENT INFO); a bulk string in RESP2.
    Verbatim(Bytes),
    /// One whole RESP2 reply exactly as a backend sent it, passed through
    /// without decoding. RESP2 clients get these bytes as they are; RESP3
    /// clients too unless the reply holds a null, which RESP3 spells `_`.
    Raw(Bytes),
    /// One whole RESP3 reply exactly as a backend connection speaking RESP3
    /// sent it, for a RESP3 client: written as it is.
    Raw3(Bytes),
    /// Frames already encoded in the client's protocol by the proxy
    /// (Pub/Sub confirmations, pushes in RESP3), written as they are.
    Encoded(Bytes),
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::Status(Bytes::from_static(b"OK"))
    }

    pub fn status(s: &'static str) -> Reply {
        Reply::Status(Bytes::from_static(s.as_bytes()))
    }

    /// An error reply. `msg` starts with its code (`ERR`, `NOAUTH`, ...); CR and
    /// LF become spaces, as Redis does, so a client's argument echoed in an error
    /// cannot break the framing.
    pub fn error(msg: impl AsRef<[u8]>) -> Reply {
        let clean: Vec<u8> = msg
            .as_ref()
            .iter()
            .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b })
            .collect();
        Reply::Error(Bytes::from(clean))
    }

    pub fn bulk(b: impl Into<Bytes>) -> Reply {
        Reply::Bulk(b.into())
    }

    pub fn bulk_str(s: &'static str) -> Reply {
        Reply::Bulk(Bytes::from_static(s.as_bytes()))
    }

    pub fn is_error(&self) -> bool {
        match self {
            Reply::Error(_) => true,
            Reply::Raw(raw) => raw.first() == Some(&b'-'),
            Reply::Raw3(raw) => matches!(raw.first(), Some(b'-' | b'!')),
            _ => false,
        }
    }

    /// A simple error's line, without its `-` and line end, parsed or as
    /// a backend's raw bytes.
    pub fn error_line(&self) -> Option<&[u8]> {
        match self {
            Reply::Error(line) => Some(&line[..]),
            Reply::Raw(raw) | Reply::Raw3(raw) => raw.strip_prefix(b"-")?.strip_suffix(b"\r\n"),
            _ => None,
        }
    }

    /// A backend's reply whose bytes are passed on, in either protocol.
    pub fn raw_bytes(&self) -> Option<&Bytes> {
        match self {
            Reply::Raw(raw) | Reply::Raw3(raw) => Some(raw),
            _ => None,
        }
    }

    /// Whether a backend's reply is a null (`$-1`, `*-1` or RESP3's `_`).
    pub fn is_null(&self) -> bool {
        match self {
            Reply::Null => true,
            Reply::Raw(raw) | Reply::Raw3(raw) => {
                &raw[..] == b"$-1\r\n" || &raw[..] == b"*-1\r\n" || &raw[..] == b"_\r\n"
            }
            _ => false,
        }
    }

    /// The reply decoded, for the few places that look inside one (merging
    /// split commands, WAIT): a `Raw` reply is parsed, anything else returned.
    pub fn parsed(self) -> Reply {
        // The decoders recurse once per level: a reply nested deeper (a
        // script's self-holding table) is never taken apart.
        if let Some(raw) = self.raw_bytes() {
            let deep = super::backend_reply::reply_shape(raw, usize::MAX)
                .ok()
                .flatten()
                .is_none_or(|(_, depth)| depth > super::backend_reply::MAX_PARSE_DEPTH);
            if deep {
                return RedisError::NestedTooDeep.reply();
            }
        }
        match self {
            Reply::Raw(raw) => match redis_protocol::resp2::decode::decode_bytes(&raw) {
                Ok(Some((frame, _))) => Reply::from_resp2(frame),
                _ => RedisError::UnparsableReply.reply(),
            },
            Reply::Raw3(raw) => match redis_protocol::resp3::decode::complete::decode_bytes(&raw) {
                Ok(Some((frame, _))) => Reply::from_resp3(frame),
                _ => RedisError::UnparsableReply.reply(),
            },
            other => other,
        }
    }

    /// Converts a RESP3 frame read from a backend. Doubles, booleans and big
    /// numbers have no form of their own here: they become what RESP2
    /// says for them (a bulk string, an integer), for the rare reply that
    /// a RESP2 client is given or the proxy looks into.
    pub fn from_resp3(frame: Resp3Frame) -> Reply {
        match frame {
            Resp3Frame::SimpleString { data, .. } => Reply::Status(data),
            Resp3Frame::SimpleError { data, .. } => Reply::Error(data.into_inner()),
            Resp3Frame::BlobError { data, .. } => Reply::Error(data),
            Resp3Frame::Number { data, .. } => Reply::Int(data),
            Resp3Frame::Double { data, .. } => Reply::Bulk(Bytes::from(format_double(data))),
            Resp3Frame::Boolean { data, .. } => Reply::Int(i64::from(data)),
            Resp3Frame::BigNumber { data, .. } => Reply::Bulk(data),
            Resp3Frame::BlobString { data, .. } => Reply::Bulk(data),
            Resp3Frame::VerbatimString { data, .. } => Reply::Verbatim(data),
            Resp3Frame::Null => Reply::Null,
            Resp3Frame::Array { data, .. } | Resp3Frame::Push { data, .. } => {
                Reply::Array(data.into_iter().map(Reply::from_resp3).collect())
            }
            Resp3Frame::Set { data, .. } => {
                Reply::Set(data.into_iter().map(Reply::from_resp3).collect())
            }
            Resp3Frame::Map { data, .. } => Reply::Map(
                data.into_iter()
                    .map(|(k, v)| (Reply::from_resp3(k), Reply::from_resp3(v)))
                    .collect(),
            ),
            Resp3Frame::Hello { .. } | Resp3Frame::ChunkedString(_) => {
                RedisError::UnexpectedReply.reply()
            }
        }
    }

    /// Converts a frame read from a backend.
    pub fn from_resp2(frame: Resp2Frame) -> Reply {
        match frame {
            Resp2Frame::SimpleString(s) => Reply::Status(s),
            Resp2Frame::Error(e) => Reply::Error(e.into_inner()),
            Resp2Frame::Integer(i) => Reply::Int(i),
            Resp2Frame::BulkString(b) => Reply::Bulk(b),
            Resp2Frame::Array(items) => {
                Reply::Array(items.into_iter().map(Reply::from_resp2).collect())
            }
            Resp2Frame::Null => Reply::Null,
        }
    }

    fn into_resp2(self) -> Resp2Frame {
        match self {
            raw @ (Reply::Raw(_) | Reply::Raw3(_)) => raw.parsed().into_resp2(),
            // Only ever a whole reply, written as it is by the encoder.
            Reply::Encoded(_) => Resp2Frame::Null,
            Reply::Status(s) => Resp2Frame::SimpleString(s),
            Reply::Error(e) => Resp2Frame::Error(to_str(e)),
            Reply::Int(i) => Resp2Frame::Integer(i),
            Reply::Bulk(b) | Reply::Verbatim(b) => Resp2Frame::BulkString(b),
            Reply::Null => Resp2Frame::Null,
            Reply::Array(items) | Reply::Set(items) => {
                Resp2Frame::Array(items.into_iter().map(Reply::into_resp2).collect())
            }
            Reply::Map(pairs) => Resp2Frame::Array(
                pairs
                    .into_iter()
                    .flat_map(|(k, v)| [k.into_resp2(), v.into_resp2()])
                    .collect(),
            ),
        }
    }

    fn into_resp3(self) -> Resp3Frame {
        match self {
            raw @ Reply::Raw(_) => raw.parsed().into_resp3(),
            Reply::Raw3(raw) => match redis_protocol::resp3::decode::complete::decode_bytes(&raw) {
                Ok(Some((frame, _))) => frame,
                _ => Resp3Frame::Null,
            },
            Reply::Encoded(_) => Resp3Frame::Null,
            Reply::Status(data) => Resp3Frame::SimpleString {
                data,
                attributes: None,
            },
            Reply::Error(e) => Resp3Frame::SimpleError {
                data: to_str(e),
                attributes: None,
            },
            Reply::Int(data) => Resp3Frame::Number {
                data,
                attributes: None,
            },
            Reply::Bulk(data) => Resp3Frame::BlobString {
                data,
                attributes: None,
            },
            Reply::Verbatim(data) => Resp3Frame::VerbatimString {
                data,
                format: VerbatimStringFormat::Text,
                attributes: None,
            },
            Reply::Null => Resp3Frame::Null,
            Reply::Array(items) => Resp3Frame::Array {
                data: items.into_iter().map(Reply::into_resp3).collect(),
                attributes: None,
            },
            Reply::Set(items) => Resp3Frame::Set {
                data: items.into_iter().map(Reply::into_resp3).collect(),
                attributes: None,
            },
            Reply::Map(pairs) => Resp3Frame::Map {
                data: pairs
                    .into_iter()
                    .map(|(k, v)| (k.into_resp3(), v.into_resp3()))
                    .collect(),
                attributes: None,
            },
        }
    }
}

/// A double as Redis writes it in RESP2 (`%.17g`, with `inf`/`-inf`/`nan`).
fn format_double(value: f64) -> String {
    if value.is_nan() {
        "nan".into()
    } else if value.is_infinite() {
        if value > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        value.to_string()
    }
}

/// Error text must be UTF-8 for the encoder; bytes that are not (from a
/// client's binary argument echoed back) are replaced.
fn to_str(bytes: Bytes) -> Str {
    match Str::from_inner(bytes) {
        Ok(s) => s,
        Err(e) => Str::from(String::from_utf8_lossy(&e.into_inner()).into_owned()),
    }
}

/// Encodes replies for one client in its current protocol.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplyEncoder {
    pub proto: Proto,
}

impl Encoder<Reply> for ReplyEncoder {
    type Error = redis_protocol::error::RedisProtocolError;

    fn encode(&mut self, reply: Reply, dst: &mut BytesMut) -> Result<(), Self::Error> {
        if let Reply::Error(e) = &reply {
            // Written as it is, like Redis: an echoed argument's bytes stay
            // bytes (the encoder's error type would have to be UTF-8).
            dst.reserve(e.len() + 3);
            dst.extend_from_slice(b"-");
            dst.extend_from_slice(e);
            dst.extend_from_slice(b"\r\n");
            return Ok(());
        }
        if let Reply::Encoded(frames) = &reply {
            dst.extend_from_slice(frames);
            return Ok(());
        }
        if let (Reply::Raw3(raw), Proto::Resp3) = (&reply, self.proto) {
            dst.extend_from_slice(raw);
            return Ok(());
        }
        if let Reply::Array(items) = &reply {
            if items.iter().any(|i| i.raw_bytes().is_some()) {
                // Backend replies among the elements (a split EXEC's): each
                // is written as it came when it is in the client's protocol.
                let Reply::Array(items) = reply else {
                    return Ok(());
                };
                dst.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
                for item in items {
                    self.encode(item, dst)?;
                }
                return Ok(());
            }
        }
        if let Reply::Raw(raw) = &reply {
            if self.proto == Proto::Resp2 || !has_resp2_null(raw) {
                dst.extend_from_slice(raw);
                return Ok(());
            }
        }
        match self.proto {
            Proto::Resp2 => {
                redis_protocol::resp2::encode::extend_encode(dst, &reply.into_resp2(), false)?;
            }
            Proto::Resp3 => {
                redis_protocol::resp3::encode::complete::extend_encode(
                    dst,
                    &reply.into_resp3(),
                    false,
                )?;
            }
        }
        Ok(())
    }
}

/// Whether RESP2 bytes may hold a null (`$-1` or `*-1`). Only an array needs a
/// scan (a session value of kilobytes is not read through for one); a match
/// inside a value there is a false positive, which only costs a decode and
/// re-encode.
fn has_resp2_null(raw: &[u8]) -> bool {
    match raw.first() {
        // Simple strings, errors and integers hold no null; a bulk string is
        // null only as a whole.
        Some(b'+' | b'-' | b':') => false,
        Some(b'$') => raw.starts_with(b"$-1"),
        _ => raw
            .windows(3)
            .any(|w| (w[0] == b'$' || w[0] == b'*') && w[1] == b'-' && w[2] == b'1'),
    }
}

/// Encodes a command given as byte slices (tools, benchmarks and tests).
pub fn encode_args(args: &[&[u8]]) -> Vec<u8> {
    let args: Vec<Bytes> = args.iter().map(|a| Bytes::copy_from_slice(a)).collect();
    let mut buf = BytesMut::new();
    encode_command(&args, &mut buf);
    buf.to_vec()
}

/// Encodes a command as a RESP array of bulk strings, the way it is sent to a backend.
pub fn encode_command(args: &[Bytes], dst: &mut BytesMut) {
    let frame = Resp2Frame::Array(args.iter().cloned().map(Resp2Frame::BulkString).collect());
    // Encoding an array of bulk strings into a growable buffer cannot fail.
    let _ = redis_protocol::resp2::encode::extend_encode(dst, &frame, false);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(reply: Reply, proto: Proto) -> Vec<u8> {
        let mut buf = BytesMut::new();
        ReplyEncoder { proto }.encode(reply, &mut buf).unwrap();
        buf.to_vec()
    }

    #[test]
    fn null_depends_on_protocol() {
        assert_eq!(encode(Reply::Null, Proto::Resp2), b"$-1\r\n");
        assert_eq!(encode(Reply::Null, Proto::Resp3), b"_\r\n");
        let mget = Reply::Array(vec![Reply::bulk_str("a"), Reply::Null]);
        assert_eq!(
            encode(mget.clone(), Proto::Resp2),
            b"*2\r\n$1\r\na\r\n$-1\r\n"
        );
        assert_eq!(encode(mget, Proto::Resp3), b"*2\r\n$1\r\na\r\n_\r\n");
    }

    #[test]
    fn maps_keep_order_and_flatten_in_resp2() {
        let map = Reply::Map(vec![
            (Reply::bulk_str("server"), Reply::bulk_str("redis")),
            (Reply::bulk_str("proto"), Reply::Int(3)),
        ]);
        assert_eq!(
            encode(map.clone(), Proto::Resp3),
            b"%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n"
        );
        assert_eq!(
            encode(map, Proto::Resp2),
            b"*4\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n"
        );
    }

    #[test]
    fn pubsub_lookalike_arrays_stay_arrays() {
        // redis-protocol's own RESP2-to-RESP3 conversion would turn this MGET
        // reply into a push frame.
        let mget = Reply::Array(vec![
            Reply::bulk_str("message"),
            Reply::bulk_str("a"),
            Reply::bulk_str("b"),
        ]);
        assert_eq!(encode(mget, Proto::Resp3)[0], b'*');
    }

    #[test]
    fn raw_replies_pass_through_and_nulls_convert() {
        let raw = |b: &'static [u8]| Reply::Raw(Bytes::from_static(b));
        assert_eq!(encode(raw(b"$1\r\na\r\n"), Proto::Resp3), b"$1\r\na\r\n");
        assert_eq!(encode(raw(b"$-1\r\n"), Proto::Resp2), b"$-1\r\n");
        assert_eq!(encode(raw(b"$-1\r\n"), Proto::Resp3), b"_\r\n");
        assert_eq!(
            encode(raw(b"*2\r\n$1\r\na\r\n$-1\r\n"), Proto::Resp3),
            b"*2\r\n$1\r\na\r\n_\r\n"
        );
        // A value that merely contains "$-1" is re-encoded to the same bytes.
        assert_eq!(
            encode(raw(b"$3\r\n$-1\r\n"), Proto::Resp3),
            b"$3\r\n$-1\r\n"
        );
        assert_eq!(encode(raw(b"*-1\r\n"), Proto::Resp3), b"_\r\n");
        assert_eq!(encode(raw(b"+$-1\r\n"), Proto::Resp3), b"+$-1\r\n");
        assert!(has_resp2_null(b"$-1\r\n") && !has_resp2_null(b"$4\r\n*-1x\r\n"));
        assert!(raw(b"-ERR x\r\n").is_error());
        assert_eq!(raw(b":5\r\n").parsed(), Reply::Int(5));
    }

    #[test]
    fn errors_and_verbatim() {
        assert_eq!(
            encode(Reply::error("ERR a\r\nb"), Proto::Resp2),
            b"-ERR a  b\r\n"
        );
        assert_eq!(encode(Reply::error("ERR x"), Proto::Resp3), b"-ERR x\r\n");
        assert_eq!(
            encode(Reply::error(b"ERR \xff\xfe"), Proto::Resp2),
            b"-ERR \xff\xfe\r\n"
        );
        assert_eq!(
            encode(Reply::Verbatim(Bytes::from_static(b"a:1")), Proto::Resp3),
            b"=7\r\ntxt:a:1\r\n"
        );
        assert_eq!(
            encode(Reply::Verbatim(Bytes::from_static(b"a:1")), Proto::Resp2),
            b"$3\r\na:1\r\n"
        );
    }
}
