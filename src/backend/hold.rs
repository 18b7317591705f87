//! A Sentinel group's failover as one backend session sees it: the flag,
//! and what a turn of the session loop may send while it is on.

use tokio::sync::watch;

use super::session::Session;

/// A Sentinel group's failover flag as one session sees it: while it is
/// on, no new write goes out (reads do, see [`Send`]); when it comes on,
/// the writes in flight are doubted (see [`Session::doubt_writes`]).
pub(super) struct FailoverFlag {
    rx: Option<watch::Receiver<bool>>,
    pub(super) on: bool,
}

impl FailoverFlag {
    pub(super) fn new(mut rx: Option<watch::Receiver<bool>>) -> FailoverFlag {
        let on = rx.as_mut().is_some_and(|f| *f.borrow_and_update());
        FailoverFlag { rx, on }
    }

    /// Reads the flag again if it moved: an atomic load, not the
    /// channel's lock, on every turn.
    pub(super) fn look(&mut self, s: &mut Session) {
        if let Some(rx) = self.rx.as_mut() {
            if rx.has_changed().unwrap_or(false) {
                let now = *rx.borrow_and_update();
                self.set(now, s);
            }
        }
    }

    pub(super) fn set(&mut self, now: bool, s: &mut Session) {
        if now && !self.on {
            s.doubt_writes();
        }
        self.on = now;
    }

    /// The flag's next value (never, without a Sentinel group or once its
    /// monitor is gone, which only happens when the proxy stops).
    pub(super) async fn changed(&mut self) -> bool {
        match self.rx.as_mut() {
            Some(rx) => match rx.changed().await {
                Ok(()) => *rx.borrow_and_update(),
                Err(_) => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }
}

/// What a turn of the session loop may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Send {
    All,
    /// A failover holds writes: only jobs of reads, each at the head of its
    /// client's lane (see [`super::lanes::Lanes::pop_if`]).
    Reads,
    Nothing,
}

impl Send {
    /// While a failover holds writes, reads still go to the master; once
    /// a new master is published, nothing more goes here.
    pub(super) fn now(failing_over: bool, moved: bool) -> Send {
        match (failing_over, moved) {
            (_, true) => Send::Nothing,
            (true, false) => Send::Reads,
            (false, false) => Send::All,
        }
    }
}
