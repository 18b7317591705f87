//! The failover attempts the subscribers have seen begin and not end, by
//! sentinel, behind the flag that holds a backend's writes.

use std::collections::BTreeSet;
use std::sync::Mutex;

use tokio::sync::watch;

/// Requests are held while any sentinel's attempt is on (or while the
/// monitor holds them itself). Two sentinels can both try in one epoch:
/// the one that is not elected aborts (`-failover-abort-not-elected`) while
/// the other goes on to promote a replica, so one sentinel's abort ends its
/// own attempt only, never another's.
pub(super) struct Attempts {
    on: Mutex<BTreeSet<String>>,
    flag: watch::Sender<bool>,
}

impl Attempts {
    pub(super) fn new() -> (Attempts, watch::Receiver<bool>) {
        let (flag, rx) = watch::channel(false);
        let attempts = Attempts {
            on: Mutex::new(BTreeSet::new()),
            flag,
        };
        (attempts, rx)
    }

    /// `sentinel` began (or advanced) an attempt. Returns whether the flag
    /// came on with it.
    pub(super) fn started(&self, sentinel: &str) -> bool {
        self.lock().insert(sentinel.to_string());
        !self.flag.send_replace(true)
    }

    /// `sentinel` gave its attempt up. Returns whether the flag went off:
    /// only when no other sentinel's attempt is on.
    pub(super) fn aborted(&self, sentinel: &str) -> bool {
        let mut on = self.lock();
        on.remove(sentinel);
        on.is_empty() && self.flag.send_replace(false)
    }

    /// The monitor holds requests of its own accord (a sentinel's flags
    /// said a failover is under way that no event told of).
    pub(super) fn hold(&self) {
        self.flag.send_replace(true);
    }

    /// The monitor ended the hold (the new master is published, or the
    /// failover is over without one): every attempt is over.
    pub(super) fn end(&self) {
        self.lock().clear();
        self.flag.send_replace(false);
    }

    pub(super) fn subscribe(&self) -> watch::Receiver<bool> {
        self.flag.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.on
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_sentinels_abort_does_not_end_anothers_attempt() {
        let (attempts, rx) = Attempts::new();
        assert!(attempts.started("127.0.0.1:26379"));
        assert!(!attempts.started("127.0.0.1:26380"));
        // The first was not elected; the second leads on.
        assert!(!attempts.aborted("127.0.0.1:26379"));
        assert!(*rx.borrow());
        assert!(attempts.aborted("127.0.0.1:26380"));
        assert!(!*rx.borrow());
    }

    #[test]
    fn the_monitors_end_clears_every_attempt() {
        let (attempts, rx) = Attempts::new();
        attempts.started("127.0.0.1:26379");
        attempts.end();
        assert!(!*rx.borrow());
        // An abort that comes after the switch changes nothing.
        assert!(!attempts.aborted("127.0.0.1:26379"));
        attempts.hold();
        assert!(*rx.borrow());
        attempts.end();
        assert!(!*rx.borrow());
    }
}
