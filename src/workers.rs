//! Worker threads: thread-per-core.
//!
//! `[runtime] threads = N` runs N threads, each driving a current-thread
//! tokio runtime of its own. A client is served on one worker from accept
//! to close (see `server`), and every backend keeps connections of its own
//! on every worker (see `backend`): a request, its backend job and its
//! reply stay on the thread that read it, with no cross-thread wake-up.
//! What all workers share (the topology, health, Sentinel masters, the
//! drain flag, counters) is behind `Arc`s, atomics and `watch` channels, so
//! a master switch, a reload or a drain reaches every worker.
//!
//! The thread that calls [`run`] is worker 0 and also runs what is not
//! per-client: the admin listener, Sentinel monitors, health probes,
//! reloads.

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;

use tokio::runtime::{Builder, Handle, Runtime};
use tokio_util::sync::CancellationToken;

/// The runtimes of one set of worker threads, indexed by worker.
#[derive(Clone, Debug)]
pub struct Workers {
    handles: Arc<[Handle]>,
}

thread_local! {
    /// This thread's worker set (its address, as an id) and its index in it.
    static CURRENT: Cell<Option<(usize, usize)>> = const { Cell::new(None) };
    /// This thread's worker set itself, for code that starts tasks on every worker.
    static SET: std::cell::RefCell<Option<Workers>> = const { std::cell::RefCell::new(None) };
}

/// This thread's index in its worker set; 0 outside a worker thread.
pub fn index() -> usize {
    CURRENT.with(Cell::get).map_or(0, |(_, index)| index)
}

/// How many workers this thread's set has; 1 outside a worker thread.
pub fn count() -> usize {
    SET.with(|set| set.borrow().as_ref().map_or(1, Workers::len))
}

impl Workers {
    /// The worker set this thread belongs to; outside a worker thread, a
    /// set of one: the runtime the caller is on (tests, tools).
    pub fn current() -> Workers {
        SET.with(|set| set.borrow().clone())
            .unwrap_or_else(|| Workers {
                handles: Arc::from(vec![Handle::current()]),
            })
    }

    /// How many workers there are.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// The worker this thread is, when it is one of this set's; else 0, so
    /// a caller from elsewhere still gets a worker (across threads).
    pub fn here(&self) -> usize {
        if self.handles.len() == 1 {
            return 0;
        }
        self.position().unwrap_or(0)
    }

    /// This thread's index in this set; `None` when it is not one of its
    /// workers.
    pub fn position(&self) -> Option<usize> {
        match CURRENT.with(Cell::get) {
            Some((set, index)) if set == self.id() => Some(index),
            _ => None,
        }
    }

    /// Whether this thread is worker `index` of this set.
    pub fn is_on(&self, index: usize) -> bool {
        self.position() == Some(index)
    }

    /// Runs `task` on worker `index`.
    pub fn spawn_on<F>(&self, index: usize, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handles[index % self.handles.len()].spawn(task)
    }

    fn id(&self) -> usize {
        Arc::as_ptr(&self.handles) as *const Handle as usize
    }

    fn enter(&self, index: usize) {
        CURRENT.with(|c| c.set(Some((self.id(), index))));
        SET.with(|s| *s.borrow_mut() = Some(self.clone()));
    }

    fn leave() {
        CURRENT.with(|c| c.set(None));
        SET.with(|s| *s.borrow_mut() = None);
    }
}

/// Runs `main` on this thread as worker 0 of `threads` workers (at least
/// one), the others on threads of their own; when `main` ends, stops the
/// other workers (dropping their tasks) and waits for their threads.
pub fn run<F, T>(threads: usize, main: impl FnOnce() -> F) -> std::io::Result<T>
where
    F: Future<Output = T>,
{
    let runtimes = (0..threads.max(1))
        .map(|_| Builder::new_current_thread().enable_all().build())
        .collect::<std::io::Result<Vec<Runtime>>>()?;
    let workers = Workers {
        handles: runtimes.iter().map(|r| r.handle().clone()).collect(),
    };
    let stop = CancellationToken::new();
    let mut runtimes = runtimes.into_iter();
    let first = runtimes.next().expect("at least one runtime");
    let mut threads = Vec::new();
    for (index, runtime) in runtimes.enumerate() {
        let (workers, stop) = (workers.clone(), stop.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("worker-{}", index + 1))
                .spawn(move || {
                    workers.enter(index + 1);
                    runtime.block_on(stop.cancelled());
                    drop(runtime);
                    Workers::leave();
                })?,
        );
    }
    workers.enter(0);
    let output = first.block_on(main());
    stop.cancel();
    for thread in threads {
        let _ = thread.join();
    }
    drop(first);
    Workers::leave();
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_run_on_the_worker_they_are_sent_to() {
        let seen = run(3, || async {
            let workers = Workers::current();
            assert_eq!(workers.len(), 3);
            assert_eq!(workers.here(), 0);
            let mut seen = Vec::new();
            for index in 0..3 {
                let set = workers.clone();
                let on = workers
                    .spawn_on(
                        index,
                        async move { (set.here(), Workers::current().here()) },
                    )
                    .await
                    .unwrap();
                seen.push(on);
            }
            seen
        })
        .unwrap();
        assert_eq!(seen, vec![(0, 0), (1, 1), (2, 2)]);
    }

    #[test]
    fn outside_a_worker_thread_the_set_is_the_current_runtime() {
        let runtime = Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let workers = Workers::current();
            assert_eq!(workers.len(), 1);
            assert_eq!(workers.here(), 0);
            assert!(!workers.is_on(0));
        });
    }

    #[test]
    fn the_other_workers_stop_when_main_ends() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        run(2, || async move {
            // A task on worker 1 that never ends holds `tx` until worker 1 stops.
            Workers::current().spawn_on(1, async move {
                let _tx = tx;
                std::future::pending::<()>().await
            });
        })
        .unwrap();
        // Worker 1's runtime was dropped with its task: the sender is gone.
        assert!(rx.recv().is_err());
    }
}
