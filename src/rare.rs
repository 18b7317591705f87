//! Futures that are rarely ready, polled only after they woke their task.
//!
//! A client's loop waits, at every turn, on its socket and its replies and
//! also on signals that almost never come: CLIENT KILL, invalidations, the
//! drain, an eviction. Each of those is a `tokio::sync::Notify` waiter, and
//! polling a waiter that is still waiting takes the `Notify`'s lock, twice
//! per request at pipeline 1. [`Rare`] polls such a future once, with a
//! waker of its own that counts wake-ups ([`Wakes`]), and after that only
//! when that count moved or the task's waker changed: a turn costs an
//! atomic load and a pointer comparison. (The same trick as
//! `FuturesUnordered`'s per-future wakers.)

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// The wake-ups of one task's rare futures: a count, and the task to wake.
/// One is shared by all the rare futures of a task.
#[derive(Debug, Default)]
pub struct Wakes {
    count: AtomicU64,
    task: Mutex<Option<Waker>>,
}

impl Wakes {
    pub fn new() -> Arc<Wakes> {
        Arc::new(Wakes::default())
    }
}

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.count.fetch_add(1, Ordering::AcqRel);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(task) = task.as_ref() {
            task.wake_by_ref();
        }
    }
}

pin_project_lite::pin_project! {
    /// `inner`, polled again only after a wake-up of its task's [`Wakes`]
    /// (any of them: the rare futures of a task share one) or from another
    /// task's waker.
    pub struct Rare<F> {
        #[pin]
        inner: F,
        wakes: Arc<Wakes>,
        // The wake-up count when `inner` was last polled; `None` before.
        seen: Option<u64>,
        // The task's waker `inner` last saw (through `wakes`).
        task: Option<Waker>,
    }
}

impl<F> Rare<F> {
    pub fn new(inner: F, wakes: &Arc<Wakes>) -> Rare<F> {
        Rare {
            inner,
            wakes: Arc::clone(wakes),
            seen: None,
            task: None,
        }
    }
}

impl<F: Future> Future for Rare<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let count = this.wakes.count.load(Ordering::Acquire);
        let same_task = this.task.as_ref().is_some_and(|t| t.will_wake(cx.waker()));
        if same_task && *this.seen == Some(count) {
            return Poll::Pending;
        }
        if !same_task {
            let mut task = this.wakes.task.lock().unwrap_or_else(|e| e.into_inner());
            *task = Some(cx.waker().clone());
            *this.task = Some(cx.waker().clone());
        }
        // Seen before the poll: a wake-up during it moves the count past
        // this, and the next turn polls again.
        *this.seen = Some(count);
        let waker = Waker::from(Arc::clone(this.wakes));
        this.inner.poll(&mut Context::from_waker(&waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio::sync::Notify;

    /// A future that counts its polls and is ready once `ready` is notified.
    struct Counted<'a> {
        polls: &'a AtomicUsize,
        notified: Pin<Box<tokio::sync::futures::Notified<'a>>>,
    }

    impl Future for Counted<'_> {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            self.notified.as_mut().poll(cx)
        }
    }

    /// Polls `f` once, in the calling task: whether it was ready.
    async fn once<F: Future>(mut f: Pin<&mut F>) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(f.as_mut().poll(cx).is_ready())).await
    }

    #[tokio::test]
    async fn a_rare_future_is_polled_again_only_after_a_wake_up() {
        let notify = Notify::new();
        let polls = AtomicUsize::new(0);
        let wakes = Wakes::new();
        let rare = Rare::new(
            Counted {
                polls: &polls,
                notified: Box::pin(notify.notified()),
            },
            &wakes,
        );
        tokio::pin!(rare);
        for _ in 0..100 {
            assert!(!once(rare.as_mut()).await);
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1);
        notify.notify_one();
        rare.await;
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_wake_up_of_a_sibling_polls_every_rare_future_again() {
        let (first, second) = (Notify::new(), Notify::new());
        let wakes = Wakes::new();
        let a = Rare::new(first.notified(), &wakes);
        let b = Rare::new(second.notified(), &wakes);
        tokio::pin!(a, b);
        assert!(!once(a.as_mut()).await);
        assert!(!once(b.as_mut()).await);
        second.notify_one();
        assert!(!once(a.as_mut()).await);
        assert!(once(b.as_mut()).await);
    }

    #[tokio::test]
    async fn a_notification_wakes_the_task_that_waits() {
        let notify = Arc::new(Notify::new());
        let wakes = Wakes::new();
        let (polled, polled_rx) = tokio::sync::oneshot::channel();
        let waiter = {
            let notify = Arc::clone(&notify);
            tokio::spawn(async move {
                let rare = Rare::new(notify.notified(), &wakes);
                tokio::pin!(rare);
                // Polled (and so waiting) before the notification.
                assert!(!once(rare.as_mut()).await);
                polled.send(()).unwrap();
                rare.await;
            })
        };
        polled_rx.await.unwrap();
        notify.notify_one();
        tokio::time::timeout(std::time::Duration::from_secs(10), waiter)
            .await
            .expect("the waiting task was woken")
            .unwrap();
    }
}
