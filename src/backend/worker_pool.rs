//! One worker thread's connections to a backend: the shared ones, and
//! those ready to be leased to one client (made ahead, or given back by a
//! blocking command).

use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::job::Job;
use super::lease::Line;
use crate::protocol::Proto;

/// A connection ready to lease, and since when it waits.
#[derive(Debug)]
pub(super) struct Idle {
    line: Line,
    since: Instant,
}

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
    /// max_held_connections`), the longest waiting first. A leased command
    /// then goes out at once, not after a connect and handshake (a BLPOP
    /// reaches the server before the LPUSH another client sends just after
    /// it, as it would on Redis). Those that wait `[pool] spare_idle_s`
    /// close, but the last of each protocol ([`sweep_every`]).
    pub(super) spare: std::sync::Mutex<[Vec<Idle>; 2]>,
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

    /// Each of `workers` threads' pool of `size` shared RESP2 connections
    /// (`spawn` given the worker and the connection's number), and their
    /// sweep when `spare_idle` is set.
    pub(super) fn start_all(
        workers: usize,
        size: usize,
        spare_idle: Option<Duration>,
        spawn: impl Fn(usize, usize) -> mpsc::UnboundedSender<Job>,
    ) -> Arc<[WorkerPool]> {
        let pools: Arc<[WorkerPool]> = (0..workers)
            .map(|worker| WorkerPool::start(size, |conn| spawn(worker, conn)))
            .collect::<Vec<_>>()
            .into();
        if let Some(idle) = spare_idle {
            sweep_every(Arc::downgrade(&pools), idle);
        }
        pools
    }

    /// A connection ready to lease for `proto`, the last one given back
    /// first, or one made by `spawn`; one more is made ahead (after it)
    /// whenever none is left ready.
    pub(super) fn take_spare(&self, proto: Proto, spawn: impl Fn() -> Line) -> Line {
        self.with_ready(proto, |ready| {
            ready.retain(|idle| !idle.line.queue.is_closed());
            // The one taken connects first, then the one made ahead.
            let taken = ready.pop().map_or_else(&spawn, |idle| idle.line);
            if ready.is_empty() {
                ready.push(Idle::now(spawn()));
            }
            taken
        })
    }

    /// Keeps a leased connection given back for the next lease, while
    /// fewer than `most` wait; else it closes (its queue is dropped).
    pub(super) fn keep_spare(&self, given: Line, most: usize) {
        self.with_ready(given.proto, |ready| {
            if ready.len() < most {
                ready.push(Idle::now(given));
            }
        })
    }

    /// Closes the connections that have waited `idle` or longer at `now`,
    /// but the last of each protocol (the next lease goes out at once):
    /// how many closed.
    pub(super) fn sweep(&self, idle: Duration, now: Instant) -> usize {
        let mut closed = 0;
        for proto in [Proto::Resp2, Proto::Resp3] {
            self.with_ready(proto, |ready| {
                let stale = ready[..ready.len().saturating_sub(1)]
                    .iter()
                    .take_while(|waiting| now.duration_since(waiting.since) >= idle)
                    .count();
                ready.drain(..stale);
                closed += stale;
            });
        }
        closed
    }

    /// Runs `f` on the connections ready for `proto`, under their lock.
    fn with_ready<R>(&self, proto: Proto, f: impl FnOnce(&mut Vec<Idle>) -> R) -> R {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut spare[usize::from(proto == Proto::Resp3)])
    }
}

impl Idle {
    fn now(line: Line) -> Idle {
        Idle {
            line,
            since: Instant::now(),
        }
    }
}

/// Sweeps `pools` (see [`WorkerPool::sweep`]) every half `idle`, until
/// their backend is dropped.
fn sweep_every(pools: Weak<[WorkerPool]>, idle: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval((idle / 2).max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(pools) = pools.upgrade() else {
                return;
            };
            let now = Instant::now();
            for pool in pools.iter() {
                pool.sweep(idle, now);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc::error::TryRecvError;

    fn line() -> (Line, mpsc::UnboundedReceiver<Job>) {
        let (queue, jobs) = mpsc::unbounded_channel();
        let server_id = Arc::default();
        let proto = Proto::Resp2;
        (
            Line {
                queue,
                server_id,
                proto,
            },
            jobs,
        )
    }

    #[test]
    fn connections_waiting_too_long_close_but_the_last() {
        let pool = WorkerPool::default();
        let (lines, mut jobs): (Vec<_>, Vec<_>) = (0..3).map(|_| line()).unzip();
        for given in lines {
            pool.keep_spare(given, 8);
        }
        let idle = Duration::from_secs(60);
        assert_eq!(pool.sweep(idle, Instant::now()), 0, "none waited long");
        let later = Instant::now() + idle;
        assert_eq!(pool.sweep(idle, later), 2);
        let closed = |jobs: &mut mpsc::UnboundedReceiver<Job>| {
            matches!(jobs.try_recv(), Err(TryRecvError::Disconnected))
        };
        assert!(closed(&mut jobs[0]) && closed(&mut jobs[1]));
        assert!(!closed(&mut jobs[2]), "the last given back stays");
        assert_eq!(pool.sweep(idle, later), 0);
    }
}
