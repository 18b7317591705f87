//! Framing of the replies backends (and sentinels) send, RESP2 and RESP3
//! (a backend connection speaks the protocol of the clients it serves),
//! without recursion and within bounds.
//!
//! `redis-protocol`'s decoders recurse once per nesting level with no limit,
//! so a backend answering `*1\r\n` fifty thousand times overflows the stack
//! and takes every client down with it. [`reply_extent`] finds where one
//! reply ends with an explicit stack of element counts, refusing a reply
//! nested deeper than [`MAX_REPLY_DEPTH`] or larger than the caller's byte
//! limit; only a reply that passed it is ever handed to `redis-protocol`.

use bytes::BytesMut;
use redis_protocol::resp2::types::BytesFrame as Resp2Frame;
use tokio_util::codec::Decoder;

// Redis writes every length and integer with ll2string, which string2ll
// reads back, i64::MIN included.
use super::request::string_to_i64;

/// Deepest nesting accepted in a backend reply. Redis's own replies nest a
/// few levels (XINFO STREAM FULL and COMMAND DOCS, the deepest, about six),
/// but a script may return a table that holds itself, which Redis answers
/// nested until Lua's stack ends (7,995 levels in Redis 7.0); such a reply
/// is passed on, never taken apart (see [`MAX_PARSE_DEPTH`]).
pub const MAX_REPLY_DEPTH: usize = 10_000;

/// Deepest reply the proxy decodes into a value (to merge or look into
/// it): `redis-protocol`'s decoders recurse once per level.
pub const MAX_PARSE_DEPTH: usize = 32;

/// Elements still expected by each open aggregate, innermost last: the
/// first levels inline (no allocation for the replies of every day), the
/// rest on the heap.
struct Open {
    inline: [u32; 16],
    depth: usize,
    deeper: Vec<u32>,
    deepest: usize,
    limit: usize,
}

impl Open {
    fn new(limit: usize) -> Open {
        Open {
            inline: [0; 16],
            depth: 0,
            deeper: Vec::new(),
            deepest: 0,
            limit,
        }
    }

    fn push(&mut self, count: u32) -> Result<(), ReplyError> {
        if self.depth >= self.limit {
            return Err(ReplyError::TooDeep);
        }
        match self.inline.get_mut(self.depth) {
            Some(slot) => *slot = count,
            None => self.deeper.push(count),
        }
        self.depth += 1;
        self.deepest = self.deepest.max(self.depth);
        Ok(())
    }

    /// One element of the innermost aggregate is complete: whether that
    /// completes it (it is then closed).
    fn complete_one(&mut self) -> bool {
        let last = match self.depth.checked_sub(1) {
            Some(i) if i < self.inline.len() => &mut self.inline[i],
            Some(_) => match self.deeper.last_mut() {
                Some(last) => last,
                None => return true,
            },
            None => return true,
        };
        *last -= 1;
        if *last > 0 {
            return false;
        }
        if self.depth > self.inline.len() {
            self.deeper.pop();
        }
        self.depth -= 1;
        true
    }
}

/// Largest handshake or Sentinel reply (ROLE, SENTINEL SENTINELS, a
/// `+switch-master` message): they are a few hundred bytes.
pub const MAX_CONTROL_REPLY: usize = 1024 * 1024;

/// Longest integer, status or error line before it counts as garbage.
const MAX_LINE: usize = 64 * 1024;

/// Why bytes from a backend are not a reply the proxy accepts. Any of these
/// ends that backend connection; its clients get an error, nobody crashes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("reply nested too deep")]
    TooDeep,
    #[error("reply larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("invalid reply: {0}")]
    Invalid(&'static str),
}

/// The length of the first complete reply in `buf`, `None` while it is
/// incomplete (and within `max_bytes`).
pub fn reply_extent(buf: &[u8], max_bytes: usize) -> Result<Option<usize>, ReplyError> {
    Ok(reply_shape(buf, max_bytes)?.map(|(len, _)| len))
}

/// The length of the first complete reply in `buf` and how deep it nests,
/// `None` while it is incomplete (and within `max_bytes`).
pub fn reply_shape(buf: &[u8], max_bytes: usize) -> Result<Option<(usize, usize)>, ReplyError> {
    reply_within(buf, max_bytes, MAX_REPLY_DEPTH)
}

/// [`reply_shape`], refusing a reply nested deeper than `max_depth`.
fn reply_within(
    buf: &[u8],
    max_bytes: usize,
    max_depth: usize,
) -> Result<Option<(usize, usize)>, ReplyError> {
    let mut open = Open::new(max_depth);
    let mut pos = 0;
    loop {
        let Some(&kind) = buf.get(pos) else {
            return incomplete(buf, max_bytes);
        };
        let Some((line_end, next)) = line(buf, pos + 1)? else {
            return incomplete(buf, max_bytes);
        };
        pos = match kind {
            // RESP2's simple types, and RESP3's: null, boolean, double, big number.
            b'+' | b'-' | b'_' | b'#' | b',' | b'(' => next,
            b':' => {
                string_to_i64(&buf[pos + 1..line_end]).ok_or(ReplyError::Invalid("bad integer"))?;
                next
            }
            // Bulk string; RESP3's blob error and verbatim string.
            b'$' | b'!' | b'=' => match string_to_i64(&buf[pos + 1..line_end]) {
                Some(-1) if kind == b'$' => next,
                Some(len) if len >= 0 => {
                    let len = len as usize;
                    if len > max_bytes {
                        return Err(ReplyError::TooLarge { limit: max_bytes });
                    }
                    let end = next + len;
                    if buf.len() < end + 2 {
                        return incomplete(buf, max_bytes);
                    }
                    if &buf[end..end + 2] != b"\r\n" {
                        return Err(ReplyError::Invalid("bulk string without CRLF"));
                    }
                    end + 2
                }
                _ => return Err(ReplyError::Invalid("bad bulk length")),
            },
            // Aggregates: array; RESP3's set, push, map (two elements per
            // entry) and attribute (a map before the reply it is about).
            b'*' | b'~' | b'>' | b'%' | b'|' => match string_to_i64(&buf[pos + 1..line_end]) {
                Some(-1) if kind == b'*' => next,
                Some(0) if kind != b'|' => next,
                Some(count) if count >= 0 && count <= i64::from(u32::MAX) => {
                    let elements = match kind {
                        b'%' => count * 2,
                        b'|' => count * 2 + 1,
                        _ => count,
                    };
                    if elements > i64::from(u32::MAX) {
                        return Err(ReplyError::Invalid("bad array length"));
                    }
                    open.push(elements as u32)?;
                    // The aggregate's first element comes next; nothing is complete yet.
                    pos = next;
                    continue;
                }
                _ => return Err(ReplyError::Invalid("bad array length")),
            },
            _ => return Err(ReplyError::Invalid("unknown reply type")),
        };
        // One element is complete: close every aggregate it completes.
        loop {
            if open.depth == 0 {
                return Ok(Some((pos, open.deepest)));
            }
            if !open.complete_one() {
                break;
            }
        }
    }
}

/// The elements of a whole array reply (`*N` then N replies), each its own
/// bytes; `None` for a reply that is not an array (a null, an error).
pub fn split_array(raw: &bytes::Bytes) -> Option<Vec<bytes::Bytes>> {
    let (line_end, mut pos) = line(raw, 1).ok()??;
    if raw.first() != Some(&b'*') {
        return None;
    }
    let count = usize::try_from(string_to_i64(&raw[1..line_end])?).ok()?;
    let mut items = Vec::with_capacity(count.min(raw.len()));
    for _ in 0..count {
        let len = reply_extent(&raw[pos..], raw.len()).ok()??;
        items.push(raw.slice(pos..pos + len));
        pos += len;
    }
    (pos == raw.len()).then_some(items)
}

/// An incomplete reply is fine until it holds more than `max_bytes`.
fn incomplete<T>(buf: &[u8], max_bytes: usize) -> Result<Option<T>, ReplyError> {
    if buf.len() > max_bytes {
        return Err(ReplyError::TooLarge { limit: max_bytes });
    }
    Ok(None)
}

/// The CRLF-terminated line starting at `start`: where its CR is and where
/// the next element starts; `None` while incomplete.
fn line(buf: &[u8], start: usize) -> Result<Option<(usize, usize)>, ReplyError> {
    let rest = buf.get(start..).unwrap_or_default();
    match rest.iter().take(MAX_LINE).position(|&b| b == b'\r') {
        Some(cr) => match rest.get(cr + 1) {
            None => Ok(None),
            Some(b'\n') => Ok(Some((start + cr, start + cr + 2))),
            Some(_) => Err(ReplyError::Invalid("CR without LF")),
        },
        None if rest.len() >= MAX_LINE => Err(ReplyError::Invalid("line too long")),
        None => Ok(None),
    }
}

/// Decodes whole replies for the proxy's own conversations with a server
/// (handshakes, ROLE, Sentinel questions and events), bounded like
/// [`reply_extent`].
#[derive(Debug, Clone, Copy)]
pub struct BackendReplyDecoder {
    pub max_bytes: usize,
}

impl Default for BackendReplyDecoder {
    fn default() -> Self {
        BackendReplyDecoder {
            max_bytes: MAX_CONTROL_REPLY,
        }
    }
}

/// Why [`BackendReplyDecoder`] failed.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Reply(#[from] ReplyError),
    #[error("undecodable reply: {0}")]
    Protocol(#[from] redis_protocol::error::RedisProtocolError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Decoder for BackendReplyDecoder {
    type Item = Resp2Frame;
    type Error = DecodeError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Resp2Frame>, DecodeError> {
        // Decoded into a value: no deeper than the recursive decoder may go.
        let Some((len, _)) = reply_within(buf, self.max_bytes, MAX_PARSE_DEPTH)? else {
            return Ok(None);
        };
        let frame = buf.split_to(len).freeze();
        match redis_protocol::resp2::decode::decode_bytes(&frame)? {
            Some((frame, _)) => Ok(Some(frame)),
            None => Err(ReplyError::Invalid("incomplete after framing").into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIG: usize = 1 << 20;

    #[test]
    fn extents_match_redis_protocol() {
        let cases: &[&[u8]] = &[
            b"+OK\r\n",
            b"-ERR no\r\n",
            b":-12\r\n",
            b":-9223372036854775808\r\n",
            b":9223372036854775807\r\n",
            b"$-1\r\n",
            b"$0\r\n\r\n",
            b"$3\r\nabc\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"*2\r\n$1\r\na\r\n$-1\r\n",
            b"*3\r\n*1\r\n:1\r\n*0\r\n*2\r\n+a\r\n*1\r\n$2\r\nxy\r\n",
        ];
        for &case in cases {
            let mut input = case.to_vec();
            input.extend_from_slice(b"+NEXT\r\n");
            let expected = redis_protocol::resp2::decode::decode(&input)
                .unwrap()
                .unwrap()
                .1;
            assert_eq!(reply_extent(&input, BIG), Ok(Some(case.len())));
            assert_eq!(expected, case.len());
            // Every proper prefix is incomplete, never an error.
            for cut in 0..case.len() {
                assert_eq!(
                    reply_extent(&case[..cut], BIG),
                    Ok(None),
                    "{case:?} at {cut}"
                );
            }
        }
    }

    #[test]
    fn resp3_extents_match_redis_protocol() {
        let cases: &[&[u8]] = &[
            b"_\r\n",
            b"#t\r\n",
            b",1.5\r\n",
            b",inf\r\n",
            b"(3492890328409238509324850943850943825024385\r\n",
            b"!21\r\nSYNTAX invalid syntax\r\n",
            b"=15\r\ntxt:Some string\r\n",
            b"%0\r\n",
            b"%2\r\n+a\r\n:1\r\n$1\r\nb\r\n_\r\n",
            b"~2\r\n$1\r\na\r\n,2\r\n",
            b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n",
            b"*2\r\n%1\r\n+k\r\n~1\r\n#f\r\n,-0.5\r\n",
            b"|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n",
        ];
        for &case in cases {
            let mut input = case.to_vec();
            input.extend_from_slice(b"+NEXT\r\n");
            let expected = redis_protocol::resp3::decode::complete::decode(&input)
                .unwrap()
                .unwrap()
                .1;
            assert_eq!(reply_extent(&input, BIG), Ok(Some(case.len())), "{case:?}");
            assert_eq!(expected, case.len(), "{case:?}");
            for cut in 0..case.len() {
                assert_eq!(
                    reply_extent(&case[..cut], BIG),
                    Ok(None),
                    "{case:?} at {cut}"
                );
            }
        }
    }

    #[test]
    fn an_array_splits_into_its_elements_bytes() {
        let raw = bytes::Bytes::from_static(b"*3\r\n+OK\r\n%1\r\n+a\r\n,1.5\r\n_\r\n");
        let items = split_array(&raw).unwrap();
        assert_eq!(
            items,
            vec![&b"+OK\r\n"[..], b"%1\r\n+a\r\n,1.5\r\n", b"_\r\n"]
        );
        assert_eq!(split_array(&bytes::Bytes::from_static(b"*-1\r\n")), None);
        assert_eq!(split_array(&bytes::Bytes::from_static(b"_\r\n")), None);
        assert_eq!(
            split_array(&bytes::Bytes::from_static(b"*0\r\n")),
            Some(vec![])
        );
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let mut deep = b"*1\r\n".repeat(50_000);
        deep.extend_from_slice(b":1\r\n");
        assert_eq!(reply_extent(&deep, usize::MAX), Err(ReplyError::TooDeep));
        let mut ok = b"*1\r\n".repeat(MAX_REPLY_DEPTH);
        ok.extend_from_slice(b":1\r\n");
        assert_eq!(reply_extent(&ok, BIG), Ok(Some(ok.len())));
        assert_eq!(reply_shape(&ok, BIG), Ok(Some((ok.len(), MAX_REPLY_DEPTH))));
        // A script's table that holds itself: Redis nests it until Lua's
        // stack ends, then an error.
        let mut script = b"*1\r\n".repeat(7995);
        script.extend_from_slice(b"-ERR reached lua stack limit\r\n");
        assert_eq!(reply_extent(&script, BIG), Ok(Some(script.len())));
    }

    #[test]
    fn size_is_bounded() {
        assert_eq!(
            reply_extent(b"$100000\r\n", 1000),
            Err(ReplyError::TooLarge { limit: 1000 })
        );
        // An endless array is refused once it holds more than the limit.
        let mut endless = b"*4000000000\r\n".to_vec();
        endless.extend_from_slice(&b":1\r\n".repeat(300));
        assert_eq!(
            reply_extent(&endless, 1000),
            Err(ReplyError::TooLarge { limit: 1000 })
        );
        assert_eq!(reply_extent(&endless[..900], 1000), Ok(None));
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [
            &b"hello\r\n"[..],
            b"$abc\r\n",
            b"$3\r\nabcd\r\n",
            b"*x\r\n",
            b":1x\r\n",
            b"+a\rb\r\n",
            b"$-2\r\n",
            b"*-5\r\n",
        ] {
            assert!(
                matches!(reply_extent(bad, BIG), Err(ReplyError::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_decoder_refuses_what_the_extent_refuses() {
        let mut deep = BytesMut::from(&b"*1\r\n".repeat(10_000)[..]);
        assert!(BackendReplyDecoder::default().decode(&mut deep).is_err());
        let mut ok = BytesMut::from(&b"*1\r\n$1\r\na\r\n+x"[..]);
        let frame = BackendReplyDecoder::default().decode(&mut ok).unwrap();
        assert!(frame.is_some());
        assert_eq!(&ok[..], b"+x");
    }
}
