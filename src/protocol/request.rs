//! Client request framing: RESP multibulk arrays and inline commands.
//!
//! A client request is always a flat array of bulk strings, or an inline line
//! (`PING\r\n` from telnet or redis-benchmark). `redis-protocol` handles every
//! reply type but has no inline mode and decodes arrays recursively without a
//! depth bound, so a hostile `*1\r\n*1\r\n...` could exhaust the stack. This
//! framer therefore accepts only what Redis's own `processMultibulkBuffer` and
//! `processInlineBuffer` accept, with their error wording, and never recurses.
//! Replies (from backends, and to clients) go through `redis-protocol`.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

/// Longest inline line or multibulk header line Redis accepts (PROTO_INLINE_MAX_SIZE).
const MAX_LINE: usize = 64 * 1024;
/// Longest inline line run. Redis refuses a line once 64 KiB have come with
/// no newline, checking after each of its 16 KiB reads: a line sent whole
/// is run up to 80 KiB and refused beyond. The proxy's reads are sized
/// differently, so it applies that effective limit to the line itself.
const INLINE_MAX: usize = MAX_LINE + 16 * 1024;
/// Limits Redis applies before a client has authenticated.
const UNAUTH_MAX_ARGS: usize = 10;
const UNAUTH_MAX_BULK: usize = 16 * 1024;
/// One client request: its command name and arguments.
///
/// A multibulk request keeps its exact bytes and where each argument lies in
/// them, so a command forwarded unchanged to one backend is neither copied
/// argument by argument nor re-encoded. An inline request (`PING\r\n` from
/// telnet) is split into new arguments, its escapes resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Multibulk { raw: Bytes, ranges: Ranges },
    Inline(Vec<Bytes>),
}

impl Request {
    /// The number of arguments, the command name included.
    pub fn len(&self) -> usize {
        match self {
            Request::Multibulk { ranges, .. } => ranges.len(),
            Request::Inline(args) => args.len(),
        }
    }

    /// A blank line or `*0`, which Redis ignores without a reply.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Argument `index` (0 is the command name).
    pub fn arg(&self, index: usize) -> Option<&[u8]> {
        match self {
            Request::Multibulk { raw, ranges } => {
                let (start, end) = ranges.get(index)?;
                raw.get(start..end)
            }
            Request::Inline(args) => args.get(index).map(|a| &a[..]),
        }
    }

    /// Every argument as its own `Bytes` (views into the request's bytes),
    /// for the commands that take them apart.
    pub fn args(&self) -> Vec<Bytes> {
        match self {
            Request::Multibulk { raw, ranges } => ranges
                .iter()
                .map(|(start, end)| raw.slice(start..end))
                .collect(),
            Request::Inline(args) => args.clone(),
        }
    }

    /// The request's exact RESP bytes, when it came as a multibulk array.
    pub fn raw(&self) -> Option<&Bytes> {
        match self {
            Request::Multibulk { raw, .. } => Some(raw),
            Request::Inline(_) => None,
        }
    }

    /// The request as a backend is sent it: its exact bytes when it came as
    /// a multibulk array, else its arguments encoded as one.
    pub fn payload(&self) -> Bytes {
        match self.raw() {
            Some(raw) => raw.clone(),
            None => {
                let mut buf = BytesMut::new();
                super::encode_command(&self.args(), &mut buf);
                buf.freeze()
            }
        }
    }

    /// Frames a multibulk request again from the bytes `raw()` gave.
    pub fn from_raw(raw: &[u8]) -> Option<Request> {
        let mut buf = BytesMut::from(raw);
        RequestDecoder::new(raw.len(), true)
            .decode(&mut buf)
            .ok()
            .flatten()
    }
}

/// A request the client framed wrongly. After one, Redis answers the error and
/// closes the connection; so does the proxy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

impl ProtocolError {
    fn new(msg: impl Into<String>) -> Self {
        ProtocolError(msg.into())
    }
}

impl From<std::io::Error> for ProtocolError {
    fn from(e: std::io::Error) -> Self {
        ProtocolError(e.to_string())
    }
}

/// Where a multibulk request's arguments lie in its bytes: the first few
/// inline, the rest (a long MSET, say) on the heap. Offsets are kept as
/// `u32` (the decoder refuses a request past 4 GiB), which keeps a
/// [`Request`] small enough to move without a `memcpy` call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranges {
    inline: [(u32, u32); 6],
    len: usize,
    more: Vec<(u32, u32)>,
}

/// The largest offset a [`Ranges`] holds.
const MAX_OFFSET: usize = u32::MAX as usize;

impl Ranges {
    /// Both ends are at most [`MAX_OFFSET`] (checked by the decoder).
    fn push(&mut self, (start, end): (usize, usize)) {
        let range = (start as u32, end as u32);
        match self.inline.get_mut(self.len) {
            Some(slot) => *slot = range,
            None => self.more.push(range),
        }
        self.len += 1;
    }

    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, index: usize) -> Option<(usize, usize)> {
        let (start, end) = match self.inline.get(index) {
            Some(&range) if index < self.len => range,
            Some(_) => return None,
            None => *self.more.get(index - self.inline.len())?,
        };
        Some((start as usize, end as usize))
    }

    fn iter(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.inline
            .iter()
            .take(self.len)
            .chain(self.more.iter())
            .map(|&(start, end)| (start as usize, end as usize))
    }
}

/// Requests of at least this many arguments are asked about before their
/// arguments are framed (see [`RequestDecoder::decode_with`]).
pub const LARGE_REQUEST_ARGS: usize = 1024;

/// What the framer found: a request, or one it was told to refuse, whose
/// bytes it has read past without keeping them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framed {
    Request(Request),
    Refused { args: usize },
}

/// Splits a client's byte stream into [`Request`]s.
///
/// A request arriving in pieces is framed as far as it has come and taken
/// up where it stopped when more arrives, so a request of millions of
/// arguments is scanned once, not once per read.
#[derive(Debug, Clone)]
pub struct RequestDecoder {
    /// Largest single request accepted, in bytes (the `[limits] max_request_bytes` setting).
    pub max_request_bytes: usize,
    /// Whether the client has authenticated; before that Redis's tighter limits apply.
    pub authenticated: bool,
    /// The multibulk request framed so far, while the rest is still coming.
    partial: Option<Partial>,
}

/// A multibulk request framed in part.
#[derive(Debug, Clone)]
struct Partial {
    /// Arguments its header announced, and how many are framed.
    count: usize,
    framed: usize,
    /// Where the next argument starts in the buffer.
    pos: usize,
    ranges: Ranges,
    /// Refused: its arguments are read past and dropped as they come.
    refused: bool,
    /// Bytes of a refused request dropped so far.
    dropped: usize,
}

impl RequestDecoder {
    pub fn new(max_request_bytes: usize, authenticated: bool) -> Self {
        RequestDecoder {
            max_request_bytes,
            authenticated,
            partial: None,
        }
    }

    /// The next request in `buf`. A multibulk request of at least
    /// [`LARGE_REQUEST_ARGS`] arguments is first shown to `admit` (its
    /// argument count): refused, its bytes are read past and it comes out
    /// as [`Framed::Refused`].
    pub fn decode_with(
        &mut self,
        buf: &mut BytesMut,
        admit: &mut dyn FnMut(usize) -> bool,
    ) -> Result<Option<Framed>, ProtocolError> {
        if self.partial.is_some() {
            return self.decode_multibulk(buf, admit);
        }
        match buf.first() {
            None => Ok(None),
            Some(b'*') => self.decode_multibulk(buf, admit),
            Some(_) => Ok(self.decode_inline(buf)?.map(Framed::Request)),
        }
    }

    fn decode_multibulk(
        &mut self,
        buf: &mut BytesMut,
        admit: &mut dyn FnMut(usize) -> bool,
    ) -> Result<Option<Framed>, ProtocolError> {
        let mut partial = match self.partial.take() {
            Some(partial) => partial,
            None => match self.begin(buf, admit)? {
                Ok(partial) => partial,
                Err(framed) => return Ok(framed),
            },
        };
        // Ranges first: the buffer is split only once the whole request is
        // here. Typical commands' ranges need no allocation.
        while partial.framed < partial.count {
            let pos = partial.pos;
            match buf.get(pos) {
                None => return self.wait(buf, partial, pos),
                Some(b'$') => {}
                Some(&other) => {
                    return Err(ProtocolError::new(format!(
                        "expected '$', got '{}'",
                        other as char
                    )))
                }
            }
            let Some((len, after)) = read_line_number(buf, pos + 1)? else {
                if buf.len() - pos > MAX_LINE {
                    return Err(ProtocolError::new("too big bulk count string"));
                }
                return self.wait(buf, partial, pos);
            };
            let len = match len {
                Some(len) if len >= 0 && (len as u64) <= self.max_request_bytes as u64 => {
                    len as usize
                }
                _ => return Err(ProtocolError::new("invalid bulk length")),
            };
            if !self.authenticated && len > UNAUTH_MAX_BULK {
                return Err(ProtocolError::new("unauthenticated bulk length"));
            }
            let end = after + len;
            if end + 2 > MAX_OFFSET {
                return Err(ProtocolError::new("too big request"));
            }
            if buf.len() < end + 2 {
                // Nothing is reserved for the announced size: the buffer grows
                // as the bytes arrive, so a header alone costs no memory.
                return self.wait(buf, partial, end + 2);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtocolError::new("invalid bulk length"));
            }
            partial.framed += 1;
            if partial.refused {
                // Dropped as it comes: a refused request holds no memory.
                buf.advance(end + 2);
                partial.dropped += end + 2;
                partial.pos = 0;
            } else {
                partial.ranges.push((after, end));
                partial.pos = end + 2;
            }
        }
        if partial.refused {
            return Ok(Some(Framed::Refused {
                args: partial.count,
            }));
        }
        let raw = buf.split_to(partial.pos).freeze();
        Ok(Some(Framed::Request(Request::Multibulk {
            raw,
            ranges: partial.ranges,
        })))
    }

    /// Reads a multibulk request's header (`*<count>`): what framing it
    /// starts, or (`Err`) what to return at once: nothing yet (the line is
    /// not complete), or an empty request, which Redis skips without a
    /// reply.
    fn begin(
        &self,
        buf: &mut BytesMut,
        admit: &mut dyn FnMut(usize) -> bool,
    ) -> Result<Result<Partial, Option<Framed>>, ProtocolError> {
        let Some((count, pos)) = read_line_number(buf, 1)? else {
            if buf.len() > MAX_LINE {
                return Err(ProtocolError::new("too big mbulk count string"));
            }
            return Ok(Err(None));
        };
        let count = count.ok_or_else(|| ProtocolError::new("invalid multibulk length"))?;
        if count <= 0 {
            buf.advance(pos);
            return Ok(Err(Some(Framed::Request(Request::Inline(Vec::new())))));
        }
        if count > i32::MAX as i64 {
            return Err(ProtocolError::new("invalid multibulk length"));
        }
        if !self.authenticated && count as usize > UNAUTH_MAX_ARGS {
            return Err(ProtocolError::new("unauthenticated multibulk length"));
        }
        let count = count as usize;
        let refused = count >= LARGE_REQUEST_ARGS && !admit(count);
        Ok(Ok(Partial {
            count,
            framed: 0,
            pos,
            ranges: Ranges::default(),
            refused,
            dropped: 0,
        }))
    }

    /// The request is not complete yet: keep what is framed and wait for
    /// more, unless it is already too large.
    fn wait(
        &mut self,
        buf: &BytesMut,
        partial: Partial,
        needed: usize,
    ) -> Result<Option<Framed>, ProtocolError> {
        let size = needed.max(buf.len()) + partial.dropped;
        if size > self.max_request_bytes.saturating_add(MAX_LINE) {
            return Err(ProtocolError::new("too big request"));
        }
        self.partial = Some(partial);
        Ok(None)
    }

    fn decode_inline(&self, buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        // Redis looks for the newline with strchr, which stops at a NUL: a
        // line with a NUL before its newline waits for more, like one with
        // no newline, until it is too big.
        let window = &buf[..buf.len().min(INLINE_MAX + 1)];
        let window = &window[..window.iter().position(|&b| b == 0).unwrap_or(window.len())];
        let Some(newline) = window.iter().position(|&b| b == b'\n') else {
            if buf.len() > INLINE_MAX {
                return Err(ProtocolError::new("too big inline request"));
            }
            return Ok(None);
        };
        let line = buf.split_to(newline + 1);
        let mut line = &line[..newline];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        let args =
            split_args(line).ok_or_else(|| ProtocolError::new("unbalanced quotes in request"))?;
        Ok(Some(Request::Inline(args)))
    }
}

impl Decoder for RequestDecoder {
    type Item = Request;
    type Error = ProtocolError;

    /// Returns the next request, admitting every one; an empty `args` is a
    /// blank line or `*0`, which Redis ignores without a reply.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        match self.decode_with(buf, &mut |_| true)? {
            Some(Framed::Request(request)) => Ok(Some(request)),
            Some(Framed::Refused { .. }) | None => Ok(None),
        }
    }
}

/// Reads a `\r\n`-terminated decimal at `start`. Returns `None` while the line is
/// incomplete, `Some((None, _))` when it is not a number.
#[allow(clippy::type_complexity)]
fn read_line_number(
    buf: &[u8],
    start: usize,
) -> Result<Option<(Option<i64>, usize)>, ProtocolError> {
    let Some(rest) = buf.get(start..) else {
        return Ok(None);
    };
    let window = &rest[..rest.len().min(MAX_LINE)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        return Ok(None);
    };
    if window.len() < cr + 2 {
        return Ok(None);
    }
    Ok(Some((string_to_i64(&window[..cr]), start + cr + 2)))
}

/// Redis's `string2ll`: an optional `-`, then digits with no leading zero (or
/// a lone `0`), nothing else, within `i64`. Stricter than `str::parse`, which
/// also takes `+4` and `04`; Redis calls those invalid lengths.
pub fn string_to_i64(text: &[u8]) -> Option<i64> {
    // LONG_STR_SIZE: 20 characters hold any i64.
    if text.is_empty() || text.len() > 20 {
        return None;
    }
    if text == b"0" {
        return Some(0);
    }
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if !matches!(digits.first(), Some(b'1'..=b'9')) {
        return None;
    }
    let mut value: u64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        value = value
            .checked_mul(10)?
            .checked_add(u64::from(digit - b'0'))?;
    }
    if negative {
        0i64.checked_sub_unsigned(value)
    } else {
        i64::try_from(value).ok()
    }
}

/// Splits an inline command line exactly like Redis's `sdssplitargs`, which
/// works on a C string: a NUL byte ends the line. Blanks (C's `isspace`:
/// space, \t \n \v \f \r) separate arguments, but only space, \t, \n, \r and
/// NUL end an unquoted one. "Double quotes" take \xHH (two hex digits) and a
/// backslash before any other byte (\n \r \t \b \a stand for controls, any
/// other byte for itself: `"\x4"` is `x4`); 'single quotes' take \' only. A
/// closing quote must be followed by a blank or the end. Returns `None` for
/// unbalanced quotes.
pub fn split_args(line: &[u8]) -> Option<Vec<Bytes>> {
    // Everything from the first NUL on is invisible to sdssplitargs.
    let line = &line[..line.iter().position(|&b| b == 0).unwrap_or(line.len())];
    let at = |i: usize| line.get(i).copied();
    let blank = |b: Option<u8>| b.is_some_and(is_c_space);
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while blank(at(i)) {
            i += 1;
        }
        if i >= line.len() {
            return Some(args);
        }
        let mut current = Vec::new();
        let mut in_double = false;
        let mut in_single = false;
        loop {
            let c = at(i);
            if in_double {
                match c {
                    None => return None,
                    Some(b'\\')
                        if at(i + 1) == Some(b'x')
                            && at(i + 2).is_some_and(|h| h.is_ascii_hexdigit())
                            && at(i + 3).is_some_and(|h| h.is_ascii_hexdigit()) =>
                    {
                        current.push(hex_value(line[i + 2]) * 16 + hex_value(line[i + 3]));
                        i += 3;
                    }
                    Some(b'\\') if at(i + 1).is_some() => {
                        i += 1;
                        current.push(match line[i] {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                    }
                    Some(b'"') => {
                        if at(i + 1).is_some() && !blank(at(i + 1)) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    Some(other) => current.push(other),
                }
            } else if in_single {
                match c {
                    None => return None,
                    Some(b'\\') if at(i + 1) == Some(b'\'') => {
                        i += 1;
                        current.push(b'\'');
                    }
                    Some(b'\'') => {
                        if at(i + 1).is_some() && !blank(at(i + 1)) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    Some(other) => current.push(other),
                }
            } else {
                match c {
                    None | Some(b' ' | b'\n' | b'\r' | b'\t') => break,
                    Some(b'"') => in_double = true,
                    Some(b'\'') => in_single = true,
                    Some(other) => current.push(other),
                }
            }
            i += 1;
        }
        args.push(Bytes::from(current));
    }
}

/// C's `isspace` in the C locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<Vec<Vec<Bytes>>, ProtocolError> {
        let mut decoder = RequestDecoder::new(1024 * 1024, true);
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(req) = decoder.decode(&mut buf)? {
            out.push(req.args());
        }
        Ok(out)
    }

    fn large(n: usize) -> (Vec<u8>, Vec<Bytes>) {
        let mut words = vec![Bytes::from_static(b"MGET")];
        words.extend((0..n).map(|i| Bytes::from(format!("key:{i}"))));
        let refs: Vec<&[u8]> = words.iter().map(|w| &w[..]).collect();
        (crate::protocol::encode_args(&refs), words)
    }

    #[test]
    fn a_request_in_pieces_is_taken_up_where_it_stopped() {
        let (bytes, words) = large(5000);
        let mut decoder = RequestDecoder::new(1 << 20, true);
        let mut buf = BytesMut::new();
        let mut found = None;
        for piece in bytes.chunks(7) {
            buf.extend_from_slice(piece);
            if let Some(request) = decoder.decode(&mut buf).unwrap() {
                assert!(found.is_none());
                found = Some(request);
            }
        }
        assert_eq!(found.unwrap().args(), words);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_refused_request_is_read_past_without_keeping_it() {
        let (big, _) = large(LARGE_REQUEST_ARGS + 1);
        let mut input = big.clone();
        input.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        let mut decoder = RequestDecoder::new(1 << 20, true);
        let mut buf = BytesMut::new();
        let mut seen = Vec::new();
        let mut asked = Vec::new();
        for piece in input.chunks(1000) {
            buf.extend_from_slice(piece);
            while let Some(framed) = decoder
                .decode_with(&mut buf, &mut |n| {
                    asked.push(n);
                    false
                })
                .unwrap()
            {
                seen.push(framed);
            }
            // Dropped as it comes: never more than a piece and a line held.
            assert!(buf.len() <= 1000 + 64, "{}", buf.len());
        }
        assert_eq!(asked, vec![LARGE_REQUEST_ARGS + 2]);
        assert_eq!(
            seen,
            vec![
                Framed::Refused {
                    args: LARGE_REQUEST_ARGS + 2
                },
                Framed::Request(Request::Multibulk {
                    raw: Bytes::from_static(b"*1\r\n$4\r\nPING\r\n"),
                    ranges: {
                        let mut r = Ranges::default();
                        r.push((8, 12));
                        r
                    }
                })
            ]
        );
    }

    fn args(list: &[&str]) -> Vec<Bytes> {
        list.iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect()
    }

    #[test]
    fn multibulk_and_raw_bytes() {
        let input = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        let mut buf = BytesMut::from(&input[..]);
        let req = RequestDecoder::new(1024, true)
            .decode(&mut buf)
            .unwrap()
            .unwrap();
        assert_eq!(req.args(), args(&["GET", "k"]));
        assert_eq!(req.len(), 2);
        assert_eq!(req.arg(1), Some(&b"k"[..]));
        assert_eq!(req.arg(2), None);
        assert_eq!(req.raw().map(|r| &r[..]), Some(&input[..]));
        assert_eq!(Request::from_raw(&input[..]), Some(req));
        assert!(buf.is_empty());
    }

    #[test]
    fn several_requests_in_one_packet() {
        let got =
            decode_all(b"*1\r\n$4\r\nPING\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\na\r\n$0\r\n\r\n")
                .unwrap();
        assert_eq!(
            got,
            vec![args(&["PING"]), args(&["PING"]), args(&["SET", "a", ""])]
        );
    }

    #[test]
    fn requests_with_more_arguments_than_kept_inline() {
        for count in [5, 6, 7, 8, 40] {
            let list: Vec<String> = std::iter::once("MSET".to_string())
                .chain((1..count).map(|i| format!("arg{i}")))
                .collect();
            let refs: Vec<&str> = list.iter().map(String::as_str).collect();
            let mut input = format!("*{count}\r\n");
            for arg in &list {
                input.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
            }
            assert_eq!(decode_all(input.as_bytes()).unwrap(), vec![args(&refs)]);
            let mut buf = BytesMut::from(input.as_bytes());
            let req = RequestDecoder::new(1024, true)
                .decode(&mut buf)
                .unwrap()
                .unwrap();
            assert_eq!(req.len(), count);
            for (i, arg) in list.iter().enumerate() {
                assert_eq!(req.arg(i), Some(arg.as_bytes()), "argument {i} of {count}");
            }
            assert_eq!(req.arg(count), None);
        }
    }

    #[test]
    fn incomplete_input_waits_at_every_split_point() {
        let input = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
        for cut in 0..input.len() {
            let mut decoder = RequestDecoder::new(1024, true);
            let mut buf = BytesMut::from(&input[..cut]);
            assert_eq!(decoder.decode(&mut buf).unwrap(), None, "cut at {cut}");
            buf.extend_from_slice(&input[cut..]);
            let req = decoder.decode(&mut buf).unwrap().unwrap();
            assert_eq!(req.args(), args(&["SET", "key", "value"]));
        }
    }

    #[test]
    fn redis_protocol_errors() {
        let err = |input: &[u8]| decode_all(input).unwrap_err().to_string();
        assert_eq!(err(b"*x\r\n"), "Protocol error: invalid multibulk length");
        assert_eq!(
            err(b"*1\r\n+PING\r\n"),
            "Protocol error: expected '$', got '+'"
        );
        assert_eq!(err(b"*1\r\n$-5\r\n"), "Protocol error: invalid bulk length");
        assert_eq!(
            err(b"*1\r\n$2\r\nabcd\r\n"),
            "Protocol error: invalid bulk length"
        );
        assert_eq!(
            err(b"GET \"a\r\n"),
            "Protocol error: unbalanced quotes in request"
        );
        assert_eq!(
            err(b"*1\r\n*1\r\n*1\r\n"),
            "Protocol error: expected '$', got '*'"
        );
        // Lengths are read like Redis's string2ll: no sign but '-', no leading zero.
        for count in ["+1", "01", "-0", " 1", "1 ", ""] {
            let input = format!("*{count}\r\n$4\r\nPING\r\n");
            assert_eq!(
                err(input.as_bytes()),
                "Protocol error: invalid multibulk length",
                "{count:?}"
            );
        }
        for len in ["+4", "04", "-0", " 4", "4 "] {
            let input = format!("*1\r\n${len}\r\nPING\r\n");
            assert_eq!(
                err(input.as_bytes()),
                "Protocol error: invalid bulk length",
                "{len:?}"
            );
        }
    }

    #[test]
    fn numbers_are_read_like_string2ll() {
        assert_eq!(string_to_i64(b"0"), Some(0));
        assert_eq!(string_to_i64(b"7"), Some(7));
        assert_eq!(string_to_i64(b"-7"), Some(-7));
        assert_eq!(string_to_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(string_to_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b"9223372036854775808"[..],
            b"-9223372036854775809",
            b"99999999999999999999",
            b"",
            b"-",
            b"+1",
            b"00",
            b"-0",
            b"1x",
            b"\xff",
        ] {
            assert_eq!(string_to_i64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn sizes_are_bounded_by_configuration() {
        let mut decoder = RequestDecoder::new(10, true);
        let mut buf = BytesMut::from(&b"*1\r\n$11\r\n"[..]);
        assert!(decoder.decode(&mut buf).is_err());
        let mut buf = BytesMut::from(vec![b'a'; INLINE_MAX + 1].as_slice());
        assert!(decoder.decode(&mut buf).is_err());
    }

    #[test]
    fn a_request_past_4_gib_is_refused_whatever_the_limit() {
        // Argument offsets are kept as u32: past them, the request is
        // refused from its header alone, before any of its bytes come.
        let mut decoder = RequestDecoder::new(8 << 30, true);
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$4294967290\r\n"[..]);
        assert_eq!(
            decoder.decode(&mut buf),
            Err(ProtocolError::new("too big request"))
        );
        let mut decoder = RequestDecoder::new(8 << 30, true);
        let mut buf = BytesMut::from(&b"*1\r\n$4294967200\r\n"[..]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
    }

    #[test]
    fn a_request_moves_without_a_memcpy_call() {
        // Larger than 128 bytes, a move of a request becomes a call to
        // memcpy (several per request on the forwarding path).
        assert!(std::mem::size_of::<Request>() <= 128);
    }

    #[test]
    fn a_nul_hides_the_inline_newline_like_strchr() {
        let mut decoder = RequestDecoder::new(1 << 20, true);
        let mut buf = BytesMut::from(&b"ECHO a\0b c\r\n"[..]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        let mut buf = BytesMut::from(&b"ECHO a\0b c\r\n"[..]);
        buf.extend_from_slice(&vec![b'x'; INLINE_MAX]);
        assert!(decoder.decode(&mut buf).is_err());
    }

    #[test]
    fn unauthenticated_limits() {
        let mut decoder = RequestDecoder::new(1 << 20, false);
        let mut buf = BytesMut::from(&b"*11\r\n"[..]);
        assert_eq!(
            decoder.decode(&mut buf).unwrap_err().to_string(),
            "Protocol error: unauthenticated multibulk length"
        );
        let mut buf = BytesMut::from(&b"*2\r\n$4\r\nAUTH\r\n$16385\r\n"[..]);
        assert_eq!(
            decoder.decode(&mut buf).unwrap_err().to_string(),
            "Protocol error: unauthenticated bulk length"
        );
    }

    #[test]
    fn empty_requests_are_skipped() {
        assert_eq!(
            decode_all(b"\r\n*0\r\n").unwrap(),
            vec![Vec::<Bytes>::new(), Vec::new()]
        );
    }

    #[test]
    fn inline_quoting_like_sdssplitargs() {
        assert_eq!(
            split_args(b"  set a  b ").unwrap(),
            args(&["set", "a", "b"])
        );
        assert_eq!(
            split_args(br#"set "a b\n\x41" 'it\'s'"#).unwrap(),
            args(&["set", "a b\nA", "it's"])
        );
        assert_eq!(split_args(br#"set "a"b"#), None);
        assert_eq!(split_args(b"set 'a"), None);
        assert_eq!(split_args(b"").unwrap(), Vec::<Bytes>::new());
        // What Redis 7 answers for these (checked by tests/it/differential.rs).
        assert_eq!(
            split_args(br#"ECHO "\x41\x4""#).unwrap(),
            args(&["ECHO", "Ax4"])
        );
        assert_eq!(
            split_args(br#"ECHO "\x+1""#).unwrap(),
            args(&["ECHO", "x+1"])
        );
        assert_eq!(split_args(br#"ECHO "\xFf\q""#).unwrap()[1], &b"\xffq"[..]);
        assert_eq!(
            split_args(b"ECHO a\x0bb").unwrap(),
            args(&["ECHO", "a\x0bb"])
        );
        assert_eq!(split_args(b"ECHO \x0ba").unwrap(), args(&["ECHO", "a"]));
        assert_eq!(split_args(b"ECHO a\0b c").unwrap(), args(&["ECHO", "a"]));
        assert_eq!(split_args(b"ECHO \"a\"\x0c").unwrap(), args(&["ECHO", "a"]));
        assert_eq!(split_args(b"ECHO \"a\0\""), None);
    }
}
