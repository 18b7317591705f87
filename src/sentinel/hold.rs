//! A failover's hold on requests, and when it may end (pure: what the
//! sentinels said and what is published in, a decision out).

use std::time::Duration;

use tokio::time::Instant;

use super::answers::Stage;
use crate::config::Endpoint;

/// The longest requests are held for one failover; past it they go to the
/// current master (sentinels that never finish must not stop traffic).
pub(super) const HOLD_MAX: Duration = Duration::from_secs(30);

/// The longest a failover's hold waits, once the new master is published,
/// for it to have the replicas writes wait for (the sentinels reconfigure
/// the other replicas a second or two after the promotion).
pub(super) const REPLICA_WAIT_MAX: Duration = Duration::from_secs(5);

/// Requests held for a failover.
#[derive(Debug)]
pub(super) struct Hold {
    /// The master being failed over: the hold ends once another is
    /// published. `None` only when no master was ever published.
    from: Option<Endpoint>,
    since: Instant,
    /// Begun from a sentinel's `failover_in_progress` flag rather than from
    /// an event: it also ends when no sentinel leads a failover any more.
    flagged: bool,
    /// When the new master was published (the hold then waits for its
    /// replicas, [`REPLICA_WAIT_MAX`] at most).
    published: Option<Instant>,
}

/// The failover stages the responding sentinels report.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Seen {
    /// One leads a failover that has not promoted a replica yet: hold.
    pub(super) failing: bool,
    /// One has promoted a replica and names it: no hold for that one.
    promoted: bool,
}

impl Seen {
    pub(super) fn add(&mut self, stage: Stage) {
        self.failing |= stage == Stage::Failing;
        self.promoted |= stage == Stage::Promoted;
    }

    /// No sentinel leads a failover.
    pub(super) fn calm(&self) -> bool {
        !self.failing && !self.promoted
    }
}

/// What the monitor does with a hold after a look at the sentinels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Requests stay held.
    Keep,
    /// A new master is published (at the instant given): the hold ends
    /// once it has the replicas writes wait for, or [`REPLICA_WAIT_MAX`]
    /// after that instant.
    AwaitReplicas(Instant),
    /// The failover took longer than [`HOLD_MAX`]: requests go to the
    /// master published now.
    GiveUp,
}

impl Hold {
    pub(super) fn new(from: Option<Endpoint>, flagged: bool, now: Instant) -> Hold {
        Hold {
            from,
            since: now,
            flagged,
            published: None,
        }
    }

    /// Whether the hold may end, with `published` the master published now
    /// and `seen` what the sentinels said at the look just taken.
    ///
    /// While a sentinel still leads a failover that has not promoted a
    /// replica, the hold stays whatever is published: the master the
    /// sentinels name then is the one being demoted. Once it answers again
    /// (a freeze that outlasted `down-after-milliseconds`) it takes writes,
    /// and the replica it still feeds acknowledges them, until the
    /// sentinels reconfigure that replica from the promoted one: every such
    /// write is lost. A hold begun before any master was found ends the
    /// same way, not at the first master found.
    pub(super) fn next(&mut self, published: Option<&Endpoint>, seen: Seen, now: Instant) -> Next {
        if now.saturating_duration_since(self.since) >= HOLD_MAX {
            return Next::GiveUp;
        }
        if seen.failing {
            return Next::Keep;
        }
        match published {
            Some(master) if self.from.as_ref() != Some(master) => {
                Next::AwaitReplicas(*self.published.get_or_insert(now))
            }
            _ => Next::Keep,
        }
    }

    /// The failover is over without a switch (the sentinels are calm and
    /// name the master the hold began with): a hold begun from their flag
    /// ends, the old master stays.
    pub(super) fn aborted(&self, found: Option<&Endpoint>, seen: Seen) -> bool {
        seen.calm() && self.flagged && self.from.as_ref() == found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(port: u16) -> Endpoint {
        Endpoint::Tcp(format!("127.0.0.1:{port}"))
    }

    const FAILING: Seen = Seen {
        failing: true,
        promoted: false,
    };
    const PROMOTED: Seen = Seen {
        failing: false,
        promoted: true,
    };

    #[test]
    fn a_new_master_ends_the_hold_once_no_sentinel_is_still_failing_over() {
        let now = Instant::now();
        let (old, new) = (endpoint(7001), endpoint(7002));
        let mut hold = Hold::new(Some(old.clone()), false, now);
        assert_eq!(hold.next(Some(&old), FAILING, now), Next::Keep);
        assert_eq!(hold.next(Some(&old), Seen::default(), now), Next::Keep);
        let later = now + Duration::from_millis(800);
        assert_eq!(
            hold.next(Some(&new), PROMOTED, later),
            Next::AwaitReplicas(later)
        );
        // The replicas' wait counts from the first time it was published.
        let after = later + Duration::from_secs(1);
        assert_eq!(
            hold.next(Some(&new), PROMOTED, after),
            Next::AwaitReplicas(later)
        );
    }

    /// The nemesis's seed 6003725342667586850: a master frozen past
    /// down-after; the hold began while no master answered ROLE (`from`
    /// unknown), and when the frozen master answered again it was taken
    /// for the new one while the leader was still waiting for the
    /// promotion. A write then went to it, the replica it still fed
    /// acknowledged it, and the promoted replica never had it.
    #[test]
    fn the_old_master_answering_again_mid_failover_does_not_end_the_hold() {
        let now = Instant::now();
        let old = endpoint(7001);
        let mut unknown = Hold::new(None, true, now);
        assert_eq!(unknown.next(Some(&old), FAILING, now), Next::Keep);
        let mut known = Hold::new(Some(old.clone()), true, now);
        assert_eq!(known.next(Some(&old), FAILING, now), Next::Keep);
        // A new master published while another failover is led (of the
        // new master) keeps the hold too.
        let mut switched = Hold::new(Some(old), false, now);
        assert_eq!(
            switched.next(Some(&endpoint(7002)), FAILING, now),
            Next::Keep
        );
    }

    #[test]
    fn a_failover_that_never_ends_releases_the_hold_after_hold_max() {
        let now = Instant::now();
        let old = endpoint(7001);
        let mut hold = Hold::new(Some(old.clone()), true, now);
        assert_eq!(hold.next(Some(&old), FAILING, now + HOLD_MAX), Next::GiveUp);
    }

    #[test]
    fn a_flagged_hold_ends_when_the_sentinels_are_calm_and_the_master_is_the_same() {
        let now = Instant::now();
        let old = endpoint(7001);
        let hold = Hold::new(Some(old.clone()), true, now);
        assert!(hold.aborted(Some(&old), Seen::default()));
        assert!(!hold.aborted(Some(&old), FAILING));
        assert!(!hold.aborted(Some(&endpoint(7002)), Seen::default()));
        let from_event = Hold::new(Some(old.clone()), false, now);
        assert!(!from_event.aborted(Some(&old), Seen::default()));
    }
}
