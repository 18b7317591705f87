//! TLS carried by the connection's own socket: rustls's state beside the
//! TCP socket, driven through the same readiness and non-blocking reads and
//! writes as a plain socket (see [`crate::net::Stream`]), so no task,
//! socket pair or copy stands between the proxy and its peer, as pingora
//! and linkerd carry it. The handshake is tokio-rustls's; what it leaves
//! (the socket and the rustls connection) is taken over here.

use std::io::{self, IoSlice, Read};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::BytesMut;
use rustls::Connection;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// A TLS session over a TCP socket.
#[derive(Debug)]
pub struct TlsStream {
    tcp: TcpStream,
    /// Only the task that owns the stream uses it: the lock is never
    /// contended, it only lets `&self` methods change rustls's state.
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    conn: Connection,
    /// Plaintext may wait in rustls that the socket's readiness does not
    /// show (what came with the end of the handshake).
    buffered: bool,
}

/// The socket as std's `Read` and `Write`, non-blocking, through tokio's
/// readiness; `raw` reads ask the kernel directly (see
/// [`crate::net::Stream::read_now`]).
struct Io<'a> {
    tcp: &'a TcpStream,
    raw: bool,
}

impl Read for Io<'_> {
    /// A read that leaves room in `buf` has drained the socket: the
    /// readiness is cleared at once (as [`crate::net::Stream::try_read_buf`]
    /// does), so the next read waits for epoll instead of costing a `recv`
    /// that would only say `EAGAIN`.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let socket = socket2::SockRef::from(self.tcp);
        if self.raw {
            return (&*socket).read(buf);
        }
        let room = buf.len();
        let mut got = None;
        let result = self.tcp.try_io(Interest::READABLE, || {
            let n = (&*socket).read(buf)?;
            got = Some(n);
            if n > 0 && n < room {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        match (result, got) {
            (Err(e), Some(n)) if e.kind() == io::ErrorKind::WouldBlock && n > 0 => Ok(n),
            (result, _) => result,
        }
    }
}

impl io::Write for Io<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tcp.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.tcp.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

impl TlsStream {
    /// Takes over a socket whose handshake is done.
    pub fn new(tcp: TcpStream, conn: impl Into<Connection>) -> TlsStream {
        TlsStream {
            tcp,
            state: Mutex::new(State {
                conn: conn.into(),
                buffered: true,
            }),
        }
    }

    /// The TCP socket under the session.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.state().buffered {
            return Poll::Ready(Ok(()));
        }
        self.tcp.poll_read_ready(cx)
    }

    pub fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp.poll_write_ready(cx)
    }

    /// Encrypted bytes wait for the socket: the caller waits until it is
    /// writable and calls [`TlsStream::flush`].
    pub fn wants_write(&self) -> bool {
        self.state().conn.wants_write()
    }

    /// Sends what waits encrypted; `WouldBlock` if the socket fills first.
    pub fn flush(&self) -> io::Result<()> {
        let mut state = self.state();
        self.send(&mut state)
    }

    fn send(&self, state: &mut State) -> io::Result<()> {
        let mut io = Io {
            tcp: &self.tcp,
            raw: false,
        };
        while state.conn.wants_write() {
            state.conn.write_tls(&mut io)?;
        }
        Ok(())
    }

    /// Sends what waits, as far as the socket takes it now.
    fn send_what_fits(&self, state: &mut State) -> io::Result<()> {
        match self.send(state) {
            Err(e) if would_block(&e) => Ok(()),
            other => other,
        }
    }

    /// Encrypts what of `bufs` rustls takes and sends it. Nothing new is
    /// taken while earlier bytes still wait for the socket (`WouldBlock`),
    /// so what waits stays bounded by rustls's buffer.
    pub fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        use std::io::Write;
        let mut state = self.state();
        self.send(&mut state)?;
        let taken = state.conn.writer().write_vectored(bufs)?;
        if taken == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.send_what_fits(&mut state)?;
        Ok(taken)
    }

    /// Reads what plaintext is available into `buf`: `Ok(0)` at the end of
    /// the stream, `WouldBlock` when none is. One `recv` takes as much as
    /// `chunk` bytes of records, through this thread's scratch buffer
    /// (rustls alone asks the socket for 4 KiB at a time: two or three
    /// `recv`s for a batch of replies), and every record in it is
    /// decrypted into `buf` before this returns, so `buf` grows by no more
    /// than a plain read of `chunk` would add.
    pub fn try_read_buf(&self, buf: &mut BytesMut, chunk: usize, raw: bool) -> io::Result<usize> {
        let mut state = self.state();
        let start = buf.len();
        loop {
            let closed = self.decrypt(&mut state, buf)?;
            if buf.len() > start {
                return Ok(buf.len() - start);
            }
            if closed {
                return Ok(0);
            }
            let mut io = Io {
                tcp: &self.tcp,
                raw,
            };
            let read = SCRATCH.with_borrow_mut(|scratch| {
                let want = chunk.clamp(1, MAX_SCRATCH);
                if scratch.len() < want {
                    scratch.resize(want, 0);
                }
                let n = io.read(&mut scratch[..want])?;
                let mut rest = &scratch[..n];
                while !rest.is_empty() {
                    // rustls takes at most 4 KiB a call; every complete
                    // record is decrypted before the next.
                    if state.conn.read_tls(&mut rest)? == 0 {
                        // After the peer's close_notify: nothing more counts.
                        break;
                    }
                    self.decrypt(&mut state, buf)?;
                }
                Ok::<_, io::Error>(n)
            })?;
            if read == 0 {
                // The socket's end: every complete record was decrypted
                // above, before this read.
                return Ok(0);
            }
        }
    }

    /// Decrypts the complete records rustls holds, and moves their
    /// plaintext into `buf`; whether the peer has closed the session.
    fn decrypt(&self, state: &mut State, buf: &mut BytesMut) -> io::Result<bool> {
        let io_state = match state.conn.process_new_packets() {
            Ok(io_state) => io_state,
            Err(e) => {
                // The alert telling the peer why, as far as it goes.
                let _ = self.send_what_fits(state);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        };
        // rustls's own messages (a key update) go out with the reads.
        self.send_what_fits(state)?;
        state.buffered = false;
        let waiting = io_state.plaintext_bytes_to_read();
        if waiting > 0 {
            take_plaintext(&mut state.conn, waiting, buf)?;
        }
        Ok(io_state.peer_has_closed())
    }
}

/// The most one read of records takes: a backend's read size
/// (`BACKEND_READ` in `net`, which this module may not import back).
const MAX_SCRATCH: usize = 128 * 1024;

thread_local! {
    /// Where one `recv` of records lands before rustls takes them: one per
    /// thread, as big as the largest read asked of it (at most
    /// [`MAX_SCRATCH`]); empty again by the time a read returns.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Moves the `waiting` bytes of plaintext rustls holds into `buf`, chunk
/// by chunk from rustls's own buffer (no zeroed room to read into first).
fn take_plaintext(conn: &mut Connection, waiting: usize, buf: &mut BytesMut) -> io::Result<()> {
    use std::io::BufRead;
    buf.reserve(waiting);
    let mut reader = conn.reader();
    let mut taken = 0;
    while taken < waiting {
        let chunk = match reader.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if would_block(&e) => break,
            Err(e) if taken == 0 => return Err(e),
            Err(_) => break,
        };
        if chunk.is_empty() {
            break;
        }
        let n = chunk.len();
        buf.extend_from_slice(chunk);
        reader.consume(n);
        taken += n;
    }
    Ok(())
}
