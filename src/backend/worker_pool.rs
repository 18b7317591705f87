//! One worker thread's connections to a backend: the shared ones, and
//! those ready to be leased to one client (made ahead, or given back by a
//! blocking command).

use std::sync::OnceLock;

use tokio::sync::mpsc;

use super::job::Job;
use super::lease::Line;
use crate::protocol::Proto;

/// One worker thread's connections to a backend (see [`crate::workers`]):
/// a client's jobs go on its own worker's, so they never cross threads.
#[derive(Debug, Default)]
pub(super) struct WorkerPool {
    /// One sender per connection task; the tasks end when every handle is dropped.
    /// Unbounded: what one client can queue is bounded by its pipeline limit
    /// (`limits.max_pipeline`), so all of it by `max_clients` times that.
    pub(super) queues: Vec<mpsc::UnboundedSender<Job>>,
    /// The connection for clients of large replies, started on first use.
    pub(super) bulk: OnceLock<mpsc::UnboundedSender<Job>>,
    /// The same for RESP3 clients: connections speaking RESP3, started on
    /// the first RESP3 request.
    pub(super) queues3: OnceLock<Vec<mpsc::UnboundedSender<Job>>>,
    pub(super) bulk3: OnceLock<mpsc::UnboundedSender<Job>>,
    /// Connections ready for the next client to lease one (WATCH, a
    /// blocking command), per protocol, after the first did: one made
    /// ahead, and those a blocking command gave back (at most `[pool]
    /// max_held_connections`). A leased command then goes out at once, not after
    /// a connect and handshake (a BLPOP reaches the server before the
    /// LPUSH another client sends just after it, as it would on Redis).
    pub(super) spare: std::sync::Mutex<[Vec<Line>; 2]>,
}

impl WorkerPool {
    /// A worker's pool of `size` shared RESP2 connections, started by
    /// `spawn` (given each connection's number); the others start on first
    /// use.
    pub(super) fn start(
        size: usize,
        spawn: impl Fn(usize) -> mpsc::UnboundedSender<Job>,
    ) -> WorkerPool {
        WorkerPool {
            queues: (0..size).map(spawn).collect(),
            ..WorkerPool::default()
        }
    }

    /// A connection ready to lease for `proto`, the last one given back
    /// first, or one made by `spawn`; one more is made ahead (after it)
    /// whenever none is left ready.
    pub(super) fn take_spare(&self, proto: Proto, spawn: impl Fn() -> Line) -> Line {
        self.with_ready(proto, |ready| {
            ready.retain(|line| !line.queue.is_closed());
            // The one taken connects first, then the one made ahead.
            let taken = ready.pop().unwrap_or_else(&spawn);
            if ready.is_empty() {
                ready.push(spawn());
            }
            taken
        })
    }

    /// Keeps a leased connection given back for the next lease, while
    /// fewer than `most` wait; else it closes (its queue is dropped).
    pub(super) fn keep_spare(&self, given: Line, most: usize) {
        self.with_ready(given.proto, |ready| {
            if ready.len() < most {
                ready.push(given);
            }
        })
    }

    /// Runs `f` on the connections ready for `proto`, under their lock.
    fn with_ready<R>(&self, proto: Proto, f: impl FnOnce(&mut Vec<Line>) -> R) -> R {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut spare[usize::from(proto == Proto::Resp3)])
    }
}
