//! A connected socket, TCP, unix or TLS over TCP, used through readiness
//! and non-blocking reads and writes so that one task can read and write it
//! at once without splitting it.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::Interest;
use tokio::net::{TcpStream, UnixStream};

use crate::tls_stream::TlsStream;

/// Bytes reserved in a client's read buffer when it runs low.
pub const CLIENT_READ: usize = 16 * 1024;
/// The same for a backend connection: a batch of replies (say 200 values of
/// 400 bytes) comes back in one or two reads instead of five or more.
pub const BACKEND_READ: usize = 128 * 1024;
/// What an empty, never used buffer gets first: a client that connects, says
/// PING and sits idle does not hold a full chunk.
const FIRST_READ: usize = 1024;

/// Makes room for a read: `chunk` whenever less than a quarter of it is free,
/// less the first time.
fn reserve(buf: &mut BytesMut, chunk: usize) {
    if buf.capacity() == 0 {
        buf.reserve(chunk.min(FIRST_READ));
    } else if buf.capacity() - buf.len() < chunk / 4 {
        buf.reserve(chunk);
    }
}

#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<TlsStream>),
}

/// A socket taken off its runtime's reactor, to be handed to another
/// worker's (see [`crate::workers`]): a tokio socket is woken by the runtime
/// that registered it, so one handed over as is would cross threads on
/// every event.
#[derive(Debug)]
pub enum Detached {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl Detached {
    /// Registers the socket with the runtime this runs on.
    pub fn attach(self) -> io::Result<Stream> {
        Ok(match self {
            Detached::Tcp(s) => Stream::Tcp(TcpStream::from_std(s)?),
            Detached::Unix(s) => Stream::Unix(UnixStream::from_std(s)?),
        })
    }
}

impl Stream {
    /// Takes the socket off this runtime's reactor (still non-blocking).
    /// A TLS session is negotiated on the worker that serves it, and
    /// never handed over.
    pub fn detach(self) -> io::Result<Detached> {
        Ok(match self {
            Stream::Tcp(s) => Detached::Tcp(s.into_std()?),
            Stream::Unix(s) => Detached::Unix(s.into_std()?),
            Stream::Tls(_) => return Err(io::ErrorKind::Unsupported.into()),
        })
    }

    /// Waits until the socket may have data to read.
    ///
    /// Through `poll_read_ready`: the socket keeps one waker per direction,
    /// which a re-poll overwrites in place. `readable()` would instead queue
    /// a waiter on the socket's list, and take it off again, every time a
    /// `select!` loop comes round. Only the task that owns the stream waits
    /// on it, so one waker per direction is all it needs.
    pub async fn readable(&self) -> io::Result<()> {
        poll_fn(|cx| match self {
            Stream::Tcp(s) => s.poll_read_ready(cx),
            Stream::Unix(s) => s.poll_read_ready(cx),
            Stream::Tls(s) => s.poll_read_ready(cx),
        })
        .await
    }

    /// Waits until the socket may take more bytes; see [`Stream::readable`].
    pub async fn writable(&self) -> io::Result<()> {
        poll_fn(|cx| match self {
            Stream::Tcp(s) => s.poll_write_ready(cx),
            Stream::Unix(s) => s.poll_write_ready(cx),
            Stream::Tls(s) => s.poll_write_ready(cx),
        })
        .await
    }

    /// Bytes written earlier still wait to go out (TLS records the socket
    /// did not take): wait until it is [`Stream::writable`], then
    /// [`Stream::flush`].
    pub fn wants_write(&self) -> bool {
        match self {
            Stream::Tls(s) => s.wants_write(),
            Stream::Tcp(_) | Stream::Unix(_) => false,
        }
    }

    /// Sends what waits from earlier writes; `WouldBlock` if the socket
    /// fills first. Nothing waits on a plain socket.
    pub fn flush(&self) -> io::Result<()> {
        match self {
            Stream::Tls(s) => s.flush(),
            Stream::Tcp(_) | Stream::Unix(_) => Ok(()),
        }
    }

    /// Reads what is available into `buf`. `Ok(0)` is end of stream.
    ///
    /// A read that leaves spare room in `buf` has drained the socket, so the
    /// readiness is cleared right away (by answering `WouldBlock` to `try_io`
    /// after the data is taken): the next wait goes to epoll instead of costing
    /// one more `recv` that would only say `EAGAIN`. Data arriving later raises
    /// a new readiness event, which that clearing does not erase.
    ///
    /// `chunk` is reserved whenever less than a quarter of it is free.
    pub fn try_read_buf(&self, buf: &mut BytesMut, chunk: usize) -> io::Result<usize> {
        if let Stream::Tls(s) = self {
            return s.try_read_buf(buf, chunk, false);
        }
        reserve(buf, chunk);
        let spare = buf.capacity() - buf.len();
        let mut got = None;
        let mut read = || {
            let n = match self {
                Stream::Tcp(s) => s.try_read_buf(buf)?,
                Stream::Unix(s) => s.try_read_buf(buf)?,
                Stream::Tls(_) => unreachable!("TLS is read above"),
            };
            got = Some(n);
            if n > 0 && n < spare {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        };
        let result = match self {
            Stream::Tcp(s) => s.try_io(Interest::READABLE, &mut read),
            Stream::Unix(s) => s.try_io(Interest::READABLE, &mut read),
            Stream::Tls(_) => unreachable!("TLS is read above"),
        };
        match (result, got) {
            (Ok(n), _) => Ok(n),
            (Err(e), Some(n)) if e.kind() == io::ErrorKind::WouldBlock && n > 0 => Ok(n),
            (Err(e), _) => Err(e),
        }
    }

    /// Reads what the kernel holds for this socket now, `WouldBlock` if
    /// nothing. Unlike [`Stream::try_read_buf`] it asks the kernel, not the
    /// runtime's readiness, which lags behind until the runtime next polls
    /// epoll: bytes a client sent a moment ago can be in the socket while the
    /// readiness still says "nothing". For the one place where trusting it
    /// would lose requests: the last look before closing a draining client.
    pub fn read_now(&self, buf: &mut BytesMut, chunk: usize) -> io::Result<usize> {
        use std::io::Read;
        reserve(buf, chunk);
        let socket = match self {
            Stream::Tcp(s) => socket2::SockRef::from(s),
            Stream::Unix(s) => socket2::SockRef::from(s),
            Stream::Tls(s) => return s.try_read_buf(buf, chunk, true),
        };
        let start = buf.len();
        buf.resize(buf.capacity(), 0);
        let read = (&*socket).read(&mut buf[start..]);
        buf.truncate(start + *read.as_ref().unwrap_or(&0));
        read
    }

    /// Makes the close that follows a reset (`SO_LINGER` 0): the kernel
    /// drops what it still holds to send instead of delivering it later.
    /// For a connection given up with commands unanswered: a command whose
    /// client was told it failed must not reach the server once the
    /// network comes back. (What the server's kernel has already taken
    /// still runs.) A Unix socket has nothing in flight to drop.
    pub fn abort(&self) {
        let tcp = match self {
            Stream::Tcp(s) => s,
            Stream::Tls(s) => s.tcp(),
            Stream::Unix(_) => return,
        };
        let _ = socket2::SockRef::from(tcp).set_linger(Some(std::time::Duration::ZERO));
    }

    /// Turns TCP keepalive on with Redis's probes for `period` (see
    /// [`crate::keepalive`]); nothing for a Unix socket or a zero period.
    pub fn keep_alive(&self, period: std::time::Duration) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => crate::keepalive::set(s, period),
            Stream::Tls(s) => crate::keepalive::set(s.tcp(), period),
            Stream::Unix(_) => Ok(()),
        }
    }

    pub fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_write_vectored(bufs),
            Stream::Unix(s) => s.try_write_vectored(bufs),
            Stream::Tls(s) => s.try_write_vectored(bufs),
        }
    }

    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_write(buf),
            Stream::Unix(s) => s.try_write(buf),
            Stream::Tls(s) => s.try_write_vectored(&[IoSlice::new(buf)]),
        }
    }

    /// Writes as much of `buf` as the socket takes now, removing it from `buf`.
    /// Returns an error only for a broken socket, never for `WouldBlock`.
    pub fn write_some(&self, buf: &mut BytesMut) -> io::Result<()> {
        if !flushed(self)? {
            return Ok(());
        }
        while !buf.is_empty() {
            match taken(self.try_write(buf))? {
                Some(n) => buf.advance(n),
                None => return Ok(()),
            }
        }
        Ok(())
    }

    /// Writes all of `buf`, waiting for the socket as needed.
    pub async fn write_all(&self, buf: &mut BytesMut) -> io::Result<()> {
        loop {
            self.write_some(buf)?;
            if buf.is_empty() && !self.wants_write() {
                return Ok(());
            }
            self.writable().await?;
        }
    }

    /// Reads once, waiting for data. `Ok(0)` is end of stream.
    pub async fn read_some(&self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            self.readable().await?;
            match self.try_read_buf(buf, CLIENT_READ) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }
}

/// What one non-blocking write attempt took: `Some(bytes)` (0 when it was
/// interrupted and may be retried), `None` when the socket is full, or the
/// error of a broken socket.
fn taken(attempt: io::Result<usize>) -> io::Result<Option<usize>> {
    match attempt {
        Ok(0) => Err(io::ErrorKind::WriteZero.into()),
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Some(0)),
        Err(e) => Err(e),
    }
}

/// Sends what earlier writes left waiting: whether all of it went (false:
/// the socket is full), or the error of a broken socket.
fn flushed(stream: &Stream) -> io::Result<bool> {
    match stream.flush() {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    }
}

/// Pieces shorter than this are copied together into one buffer; longer ones
/// are written as they are.
const GATHER_BELOW: usize = 1024;
/// Most pieces handed to one `writev`.
const MAX_SLICES: usize = 64;

/// Bytes waiting to be written to a socket, in order. A piece that comes as
/// `Bytes` (a client's batch of commands) is written from where it is, with
/// `writev`, instead of being copied into one buffer first; small pieces and
/// encoded commands are gathered into one buffer between them.
#[derive(Debug, Default)]
pub struct Outbox {
    chunks: VecDeque<Bytes>,
    /// Small pieces after the last of `chunks`, not yet sealed into a chunk.
    small: BytesMut,
    len: usize,
}

impl Outbox {
    /// Bytes not yet written.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn push(&mut self, bytes: Bytes) {
        if bytes.len() < GATHER_BELOW {
            self.gather(|small| small.extend_from_slice(&bytes));
        } else {
            self.seal();
            self.len += bytes.len();
            self.chunks.push_back(bytes);
        }
    }

    /// Appends what `write` puts in a buffer (an encoded command, say).
    pub fn gather(&mut self, write: impl FnOnce(&mut BytesMut)) {
        if self.small.capacity() == 0 {
            self.small.reserve(4096);
        }
        let before = self.small.len();
        write(&mut self.small);
        self.len += self.small.len() - before;
    }

    fn seal(&mut self) {
        if !self.small.is_empty() {
            self.chunks.push_back(self.small.split().freeze());
        }
    }

    /// Writes as much as the socket takes now. Returns an error only for a
    /// broken socket, never for `WouldBlock`.
    pub fn write_to(&mut self, stream: &Stream) -> io::Result<()> {
        if !flushed(stream)? {
            return Ok(());
        }
        self.seal();
        while !self.chunks.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            for (slice, chunk) in slices.iter_mut().zip(&self.chunks) {
                *slice = IoSlice::new(chunk);
                count += 1;
            }
            match taken(stream.try_write_vectored(&slices[..count]))? {
                Some(written) => self.consume(written),
                None => return Ok(()),
            }
        }
        Ok(())
    }

    fn consume(&mut self, mut written: usize) {
        self.len = self.len.saturating_sub(written);
        while written > 0 {
            let Some(front) = self.chunks.front_mut() else {
                return;
            };
            if front.len() <= written {
                written -= front.len();
                self.chunks.pop_front();
            } else {
                front.advance(written);
                written = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a one-thread runtime the I/O driver runs only when the task
    /// yields: bytes already in the socket are invisible to readiness until
    /// then, and `read_now` still finds them.
    #[tokio::test(flavor = "current_thread")]
    async fn read_now_finds_bytes_the_readiness_has_not_seen() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (socket, _) = listener.accept().await.unwrap();
        let stream = Stream::Tcp(socket);
        // A first read drains the socket and clears the readiness.
        std::io::Write::write_all(&mut peer, b"PING\r\n").unwrap();
        let mut buf = BytesMut::new();
        assert_eq!(stream.try_read_buf(&mut buf, CLIENT_READ).unwrap(), 6);
        buf.clear();
        // The next bytes come while the task has not yielded.
        std::io::Write::write_all(&mut peer, b"PING\r\n").unwrap();
        let stale = stream.try_read_buf(&mut buf, CLIENT_READ);
        assert_eq!(
            stale.map_err(|e| e.kind()),
            Err(io::ErrorKind::WouldBlock),
            "the readiness has not seen the bytes yet"
        );
        assert_eq!(stream.read_now(&mut buf, CLIENT_READ).unwrap(), 6);
        assert_eq!(&buf[..], b"PING\r\n");
        assert_eq!(
            stream.read_now(&mut buf, CLIENT_READ).map_err(|e| e.kind()),
            Err(io::ErrorKind::WouldBlock)
        );
        drop(peer);
        assert_eq!(stream.read_now(&mut buf, CLIENT_READ).unwrap(), 0);
    }

    #[test]
    fn an_outbox_keeps_order_across_gathered_and_whole_pieces() {
        let mut outbox = Outbox::default();
        let big = Bytes::from(vec![b'x'; GATHER_BELOW]);
        outbox.push(Bytes::from_static(b"a"));
        outbox.gather(|b| b.extend_from_slice(b"b"));
        outbox.push(big.clone());
        outbox.push(Bytes::from_static(b"c"));
        outbox.push(big.clone());
        assert_eq!(outbox.len(), 3 + 2 * GATHER_BELOW);
        outbox.seal();
        let mut all = Vec::new();
        for chunk in &outbox.chunks {
            all.extend_from_slice(chunk);
        }
        let mut expected = b"ab".to_vec();
        expected.extend_from_slice(&big);
        expected.push(b'c');
        expected.extend_from_slice(&big);
        assert_eq!(all, expected);
        // Partial writes take bytes off the front, across pieces.
        for step in [1, 2, GATHER_BELOW - 2, 3] {
            outbox.consume(step);
            expected.drain(..step);
            let rest: Vec<u8> = outbox.chunks.iter().flat_map(|c| c.to_vec()).collect();
            assert_eq!(rest, expected);
            assert_eq!(outbox.len(), expected.len());
        }
        outbox.consume(outbox.len());
        assert!(outbox.is_empty() && outbox.chunks.is_empty());
    }

    #[tokio::test]
    async fn an_outbox_survives_partial_writes_to_a_full_socket() {
        let (near, far) = UnixStream::pair().expect("socket pair");
        let stream = Stream::Unix(near);
        let mut outbox = Outbox::default();
        let mut expected = Vec::new();
        for i in 0..600usize {
            let piece: Vec<u8> = if i.is_multiple_of(3) {
                (0..GATHER_BELOW * 4 + i)
                    .map(|j| (i * 7 + j) as u8)
                    .collect()
            } else {
                format!("piece {i};").into_bytes()
            };
            expected.extend_from_slice(&piece);
            if i.is_multiple_of(5) {
                outbox.gather(|buf| buf.extend_from_slice(&piece));
            } else {
                outbox.push(Bytes::from(piece));
            }
        }
        let mut got = Vec::new();
        let mut stalled = false;
        let mut chunk = vec![0u8; 64 * 1024];
        while got.len() < expected.len() {
            outbox.write_to(&stream).expect("write");
            stalled |= !outbox.is_empty();
            // Like a backend connection: read the far side, or wait for room.
            tokio::select! {
                ready = far.readable() => {
                    ready.expect("readable");
                    match far.try_read(&mut chunk) {
                        Ok(n) => got.extend_from_slice(&chunk[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => panic!("read: {e}"),
                    }
                }
                ready = stream.writable(), if !outbox.is_empty() => ready.expect("writable"),
            }
        }
        assert!(stalled, "the socket never filled up");
        assert!(outbox.is_empty());
        assert!(got == expected, "the bytes arrived changed");
    }
}
