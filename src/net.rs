//! A connected socket, TCP or unix, used through readiness and non-blocking
//! reads and writes so that one task can read and write it at once without
//! splitting it or taking a lock.

use std::future::poll_fn;
use std::io;

use bytes::{Buf, BytesMut};
use tokio::io::Interest;
use tokio::net::{TcpStream, UnixStream};

/// Bytes reserved in a client's read buffer when it runs low.
pub const CLIENT_READ: usize = 16 * 1024;
/// The same for a backend connection: a batch of replies (say 200 values of
/// 400 bytes) comes back in one or two reads instead of five or more.
pub const BACKEND_READ: usize = 128 * 1024;
/// What an empty, never used buffer gets first: a client that connects, says
/// PING and sits idle does not hold a full chunk.
const FIRST_READ: usize = 1024;

#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
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
        })
        .await
    }

    /// Waits until the socket may take more bytes; see [`Stream::readable`].
    pub async fn writable(&self) -> io::Result<()> {
        poll_fn(|cx| match self {
            Stream::Tcp(s) => s.poll_write_ready(cx),
            Stream::Unix(s) => s.poll_write_ready(cx),
        })
        .await
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
        if buf.capacity() == 0 {
            buf.reserve(chunk.min(FIRST_READ));
        } else if buf.capacity() - buf.len() < chunk / 4 {
            buf.reserve(chunk);
        }
        let spare = buf.capacity() - buf.len();
        let mut got = None;
        let mut read = || {
            let n = match self {
                Stream::Tcp(s) => s.try_read_buf(buf)?,
                Stream::Unix(s) => s.try_read_buf(buf)?,
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
        };
        match (result, got) {
            (Ok(n), _) => Ok(n),
            (Err(e), Some(n)) if e.kind() == io::ErrorKind::WouldBlock && n > 0 => Ok(n),
            (Err(e), _) => Err(e),
        }
    }

    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_write(buf),
            Stream::Unix(s) => s.try_write(buf),
        }
    }

    /// Writes as much of `buf` as the socket takes now, removing it from `buf`.
    /// Returns an error only for a broken socket, never for `WouldBlock`.
    pub fn write_some(&self, buf: &mut BytesMut) -> io::Result<()> {
        while !buf.is_empty() {
            match self.try_write(buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    buf.advance(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes all of `buf`, waiting for the socket as needed.
    pub async fn write_all(&self, buf: &mut BytesMut) -> io::Result<()> {
        loop {
            self.write_some(buf)?;
            if buf.is_empty() {
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
