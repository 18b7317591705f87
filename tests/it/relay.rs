//! A small fault-injecting TCP relay of the tests' own: it forwards
//! loopback connections to a server and, on demand, delays what it
//! forwards or new connections, holds it (a blackhole: the peer sees a silent network), or cuts
//! every connection open now. Threads and blocking sockets; stopped when
//! dropped.
//!
//! What a blackhole holds is what a real silent network leaves in the
//! sender's kernel, unacknowledged: a sender that resets its connection
//! meanwhile (`SO_LINGER` 0) drops it, so the relay drops it too when the
//! network comes back, and delivers nothing more of that connection.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PASS: u8 = 0;
const DELAY: u8 = 1;
const BLACKHOLE: u8 = 2;

/// How often a held pump looks whether it may go on.
const POLL: Duration = Duration::from_millis(5);

#[derive(Default)]
struct State {
    /// Where new connections go (`retarget` moves it, as a managed
    /// service's name moves to a new master).
    target: Mutex<String>,
    mode: AtomicU8,
    delay_ms: AtomicU64,
    /// New connections wait this long before anything of theirs is
    /// forwarded: a server slow to take connections.
    accept_delay_ms: AtomicU64,
    stopped: AtomicBool,
    /// Both ends of every connection open now, for `cut`, by a number of
    /// its own (a connection's entry goes when both its pumps have ended).
    open: Mutex<std::collections::BTreeMap<u64, [TcpStream; 2]>>,
    /// The next connection's number.
    next: AtomicU64,
    /// Pieces read and neither forwarded nor dropped yet.
    holding: AtomicUsize,
    /// Pieces dropped because their sender reset its connection while the
    /// network was silent.
    dropped: AtomicUsize,
    /// Resets seen from senders while the network was silent.
    resets: AtomicUsize,
}

pub struct Relay {
    pub port: u16,
    state: Arc<State>,
}

impl Relay {
    /// Listens on a free loopback port and forwards to `target` (host:port).
    pub fn start(target: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let port = listener.local_addr().expect("relay address").port();
        let state = Arc::new(State {
            target: Mutex::new(target),
            ..State::default()
        });
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if shared.stopped.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                let wait = shared.accept_delay_ms.load(Ordering::Relaxed);
                if wait > 0 {
                    std::thread::sleep(Duration::from_millis(wait));
                }
                let target = shared.target.lock().unwrap().clone();
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let id = shared.next.fetch_add(1, Ordering::Relaxed);
                if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
                    shared.open.lock().unwrap().insert(id, [c, s]);
                }
                // The pumps still running: the last one to end closes the
                // relay's own copies of the two ends.
                let pumps = Arc::new(AtomicUsize::new(2));
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
                        pumps.fetch_sub(1, Ordering::Relaxed);
                        continue;
                    };
                    let (state, pumps) = (shared.clone(), pumps.clone());
                    std::thread::spawn(move || {
                        pump(from, to, &state);
                        if pumps.fetch_sub(1, Ordering::AcqRel) == 1 {
                            state.open.lock().unwrap().remove(&id);
                        }
                    });
                }
            }
        });
        Relay { port, state }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// New connections go to `target` from now; open ones stay where they are.
    pub fn retarget(&self, target: String) {
        *self.state.target.lock().unwrap() = target;
    }

    /// New connections wait `ms` before they are forwarded (open ones
    /// are not slowed).
    pub fn slow_accept(&self, ms: u64) {
        self.state.accept_delay_ms.store(ms, Ordering::Relaxed);
    }

    /// Forwards as it comes.
    pub fn pass(&self) {
        self.state.mode.store(PASS, Ordering::Relaxed);
    }

    /// Holds each piece `ms` before forwarding it.
    pub fn delay(&self, ms: u64) {
        self.state.delay_ms.store(ms, Ordering::Relaxed);
        self.state.mode.store(DELAY, Ordering::Relaxed);
    }

    /// Forwards nothing until `pass`: connections stay open and silent.
    pub fn blackhole(&self) {
        self.state.mode.store(BLACKHOLE, Ordering::Relaxed);
    }

    /// Waits (at most 5 s) until no piece read is still on its way:
    /// everything held is forwarded or dropped.
    pub fn wait_quiet(&self) {
        let holding = || self.state.holding.load(Ordering::Relaxed) == 0;
        crate::common::wait_until(
            Duration::from_secs(5),
            POLL,
            "the relay to go quiet",
            holding,
        );
    }

    /// Pieces dropped because their sender reset while the network was
    /// silent.
    pub fn dropped(&self) -> usize {
        self.state.dropped.load(Ordering::Relaxed)
    }

    /// Resets seen from senders while the network was silent.
    pub fn resets(&self) -> usize {
        self.state.resets.load(Ordering::Relaxed)
    }

    /// Cuts every connection open now (both ends); new ones are taken.
    pub fn cut(&self) {
        let open = std::mem::take(&mut *self.state.open.lock().unwrap());
        for stream in open.into_values().flatten() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::Relaxed);
        self.pass();
        self.cut();
        // Wakes the accept loop so that it sees `stopped`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies `from` to `to` as the mode allows, until either end closes.
fn pump(mut from: TcpStream, mut to: TcpStream, state: &State) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        state.holding.fetch_add(1, Ordering::Relaxed);
        let mut reset = false;
        loop {
            match state.mode.load(Ordering::Relaxed) {
                BLACKHOLE if !state.stopped.load(Ordering::Relaxed) => {
                    // Looked at while silent, when nothing else touches the
                    // socket: once the network is back, the other direction's
                    // write to a reset peer would take the error first.
                    if matches!(from.take_error(), Ok(Some(_))) {
                        reset = true;
                        state.resets.fetch_add(1, Ordering::Relaxed);
                    }
                    std::thread::sleep(POLL)
                }
                DELAY => {
                    std::thread::sleep(Duration::from_millis(
                        state.delay_ms.load(Ordering::Relaxed),
                    ));
                    break;
                }
                _ => break,
            }
        }
        // The sender reset while the network was silent: what it had not
        // got through is gone, as its kernel dropped it.
        let sent = !reset && to.write_all(&buf[..n]).is_ok();
        if reset {
            state.dropped.fetch_add(1, Ordering::Relaxed);
        }
        state.holding.fetch_sub(1, Ordering::Relaxed);
        if !sent {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

#[test]
fn the_relay_forwards_delays_holds_and_cuts() {
    let redis = crate::common::Redis::start();
    let relay = Relay::start(redis.address());
    let mut client = crate::common::RawClient::connect(relay.port);
    assert_eq!(client.text(&["PING"]), "+PONG\r\n");
    relay.delay(30);
    assert_eq!(client.text(&["PING"]), "+PONG\r\n");
    // Held: no answer within a short read timeout; then it comes.
    relay.blackhole();
    client
        .stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    client.send(&[b"PING"]);
    assert!(client.try_read_reply().is_err(), "a blackhole answered");
    client.stream.set_read_timeout(None).unwrap();
    relay.pass();
    assert_eq!(client.read_reply(), b"+PONG\r\n");
    // Cut: the connection is gone; a new one works.
    relay.cut();
    assert!(client.is_closed());
    let mut again = crate::common::RawClient::connect(relay.port);
    assert_eq!(again.text(&["PING"]), "+PONG\r\n");
}
