//! Following a node's redirections: `-MOVED` (sent again to the node
//! named, the map noted), `-ASK` (ASKING and the command there), and
//! `-TRYAGAIN` (sent again a moment later); a job whose client gave up is
//! not sent on.

use super::*;
use crate::backend::job::unless_abandoned;

impl Cluster {
    /// Sends `job` to the node at `address`, watching a single command's
    /// reply for a redirection (batches are never made for a cluster
    /// backend, see `crate::client::batcher`; an ASK's pair is our own).
    pub(super) fn forward(
        self: &Arc<Self>,
        mut job: Job,
        backend: &Backend,
        hops: u8,
        since: Instant,
    ) {
        let ReplyTo::One(tx) = job.reply else {
            return backend.submit((job, ()), None);
        };
        let (inner, rx) = oneshot::channel();
        job.reply = ReplyTo::One(inner);
        let again = Again::of(&job, hops, since);
        backend.submit((job, ()), None);
        let cluster = self.clone();
        tokio::spawn(async move {
            let mut tx = tx;
            if let Some(Ok(result)) = unless_abandoned(rx, &mut tx).await {
                cluster.settle(result, tx, again);
            }
        });
    }

    /// A node's answer to a job: passed on, or followed when a redirection.
    fn settle(
        self: &Arc<Self>,
        result: BackendResult,
        tx: oneshot::Sender<BackendResult>,
        again: Again,
    ) {
        match &result {
            Ok(reply) if again.hops < MAX_REDIRECTS => match cluster::redirect(reply) {
                Some(Redirect::Moved { slot, node }) => {
                    self.moved.fetch_add(1, Ordering::Relaxed);
                    self.counters.moved.increment(1);
                    let job = again.job(tx, again.payload.clone());
                    let Some(backend) = self.redirected_to(&node) else {
                        return self.hold(job, again.hops + 1, again.since, UNMAPPED);
                    };
                    self.moved(slot, &node, &backend);
                    return self.forward(job, &backend, again.hops + 1, again.since);
                }
                Some(Redirect::Ask { node, .. }) => {
                    self.asked.fetch_add(1, Ordering::Relaxed);
                    self.counters.asked.increment(1);
                    return self.ask(tx, again, &node);
                }
                Some(Redirect::TryAgain)
                    if again.since.elapsed() + TRY_AGAIN_AFTER < self.settings.request_timeout =>
                {
                    self.tried_again.fetch_add(1, Ordering::Relaxed);
                    self.counters.tried_again.increment(1);
                    return self.try_again(tx, again);
                }
                _ => {}
            },
            Ok(_) => {}
            // A node that fails may be failing over: the map is asked again.
            Err(_) => self.refresh.notify_one(),
        }
        let _ = tx.send(result);
    }

    /// Follows `-ASK`: ASKING and the command, together, to `address`; the
    /// command's reply is the client's (or followed again).
    fn ask(self: &Arc<Self>, tx: oneshot::Sender<BackendResult>, again: Again, address: &str) {
        let Some(backend) = self.redirected_to(address) else {
            let job = again.job(tx, again.payload.clone());
            return self.hold(job, again.hops + 1, again.since, UNMAPPED);
        };
        let (inner, rx) = oneshot::channel();
        let mut job = again.job(tx, cluster::after_asking(&again.payload));
        let ReplyTo::One(tx) = std::mem::replace(
            &mut job.reply,
            ReplyTo::Many {
                tx: inner,
                count: 2,
            },
        ) else {
            return;
        };
        // A batch carries no write that needs a WAIT: an ASK's is sent
        // without one (it happens only while a slot migrates).
        job.write = false;
        backend.submit((job, ()), None);
        let cluster = self.clone();
        let again = Again {
            hops: again.hops + 1,
            ..again
        };
        tokio::spawn(async move {
            let mut tx = tx;
            let Some(Ok(result)) = unless_abandoned(rx, &mut tx).await else {
                return;
            };
            let result = result.map(|mut replies| replies.pop().unwrap_or(Reply::Null));
            cluster.settle(result, tx, again);
        });
    }

    /// Follows `-TRYAGAIN`: the same command again after [`TRY_AGAIN_AFTER`],
    /// to its slot's master then (its redirections counted afresh: the
    /// time since it was first sent bounds it), unless its client has gone.
    fn try_again(self: &Arc<Self>, tx: oneshot::Sender<BackendResult>, again: Again) {
        let cluster = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(TRY_AGAIN_AFTER).await;
            if !tx.is_closed() {
                let job = again.job(tx, again.payload.clone());
                cluster.route_from(job, 0, again.since);
            }
        });
    }
}

/// What sending a job again takes.
pub(super) struct Again {
    origin: Origin,
    payload: Bytes,
    db: u32,
    write: bool,
    hops: u8,
    /// When the client's request was first sent.
    since: Instant,
}

impl Again {
    fn of(job: &Job, hops: u8, since: Instant) -> Again {
        Again {
            origin: job.origin,
            payload: job.payload.clone(),
            db: job.db,
            write: job.write,
            hops,
            since,
        }
    }

    fn job(&self, tx: oneshot::Sender<BackendResult>, payload: Bytes) -> Job {
        Job::new(self.origin, payload, self.db, ReplyTo::One(tx), self.write)
    }
}
