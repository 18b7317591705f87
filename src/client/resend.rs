//! When a blocking command goes again, and as what: a server that refused
//! it ran nothing, so it can be sent again where the refusal says, as a
//! cluster client sends it, with the time it has left to block. The
//! decisions only; `leased` leases the connections and sends.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use crate::backend::{refusal, BackendError, BackendResult, CLOSED_BY_THE_SERVER, LEFT_BEHIND};
use crate::cluster::{self, Redirect, MAX_REDIRECTS, TRY_AGAIN_AFTER};
use crate::protocol::command::{block_arg, with_block_time, BlockArg, Spec};
use crate::protocol::keys::request_key_positions;
use crate::protocol::{encode_command, Proto, Request};

/// What Redis answers a command blocked on a master that turns into a
/// replica (a cluster node failed over; a Sentinel failover closes the
/// connection instead, with `CLIENT KILL`): unblocked without being
/// served.
const DEMOTED: &[u8] =
    b"UNBLOCKED force unblock from blocking operation, instance state changed (master -> replica?)";

/// Where a refused command goes again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::client) enum Go {
    /// To the master of its keys now, on a new connection: a cluster's
    /// `-MOVED` (the slot map is corrected by it first), or a master
    /// demoted while the command was blocked, or a server that closed the
    /// connection without answering it (a Sentinel failover's `CLIENT
    /// KILL`, a master killed): the backend follows the new master.
    Master,
    /// After ASKING, to the cluster node at this address (`-ASK`).
    Ask(String),
    /// To the master of its keys, after [`TRY_AGAIN_AFTER`] (`-TRYAGAIN`;
    /// `-READONLY` or `-LOADING`: the connection reached a replica, as in
    /// the moment between a managed failover's demotion and its name's
    /// move, or a server loading its data; the connection that met it
    /// reconnects meanwhile).
    Later,
}

/// A blocking command, as it may be sent again.
pub(in crate::client) struct Resend {
    args: Vec<Bytes>,
    /// Its keys, for the lease of a new connection.
    pub(in crate::client) keys: Vec<Bytes>,
    timeout: Option<BlockArg>,
    /// The client's share of held connections, and its protocol.
    pub(in crate::client) share: Option<(Bytes, usize)>,
    pub(in crate::client) proto: Proto,
    /// Whether it runs on a Redis Cluster, whose redirections it follows
    /// (another server's `-MOVED` is its client's reply).
    cluster: bool,
    hops: u8,
    /// When the first `-TRYAGAIN` (or `-READONLY`, `-LOADING`) came: they
    /// are followed for a request timeout from then.
    tried_since: Option<Instant>,
}

impl Resend {
    pub(in crate::client) fn of(
        spec: &Spec,
        request: &Request,
        share: Option<(Bytes, usize)>,
        proto: Proto,
        cluster: bool,
    ) -> Resend {
        let args = request.args();
        let keys = request_key_positions(spec, request)
            .into_iter()
            .filter_map(|position| args.get(position).cloned())
            .collect();
        Resend {
            args,
            keys,
            timeout: block_arg(spec, request).map(|(at, _)| at),
            share,
            proto,
            cluster,
            hops: 0,
            tried_since: None,
        }
    }

    /// Where `reply` sends the command again, if it is a refusal, or the
    /// server closed the connection without a reply (a reply it wrote
    /// first would have come first, so the command was not served, or was
    /// served and its reply lost by the server itself, whose element the
    /// client would not get either way), or a failover left it on a silent
    /// old master (which answered nothing for a request timeout after the
    /// new master was named: what it might still serve, the client would
    /// not get from a server it cannot reach either), or a replica or a
    /// loading server refused it (it did not run), and within bounds:
    /// [`MAX_REDIRECTS`] moves (demotions and closes count as moves), and
    /// `-TRYAGAIN`, `-READONLY` and `-LOADING` for `timeout` from the
    /// first. Redirections are followed on a cluster only.
    pub(in crate::client) fn follow(
        &mut self,
        reply: &BackendResult,
        now: Instant,
        timeout: Duration,
    ) -> Option<Go> {
        let reply = match reply {
            Ok(reply) => reply,
            Err(BackendError::ConnectionLost { reason, .. })
                if reason == CLOSED_BY_THE_SERVER || reason == LEFT_BEHIND =>
            {
                self.hops += 1;
                return (self.hops <= MAX_REDIRECTS).then_some(Go::Master);
            }
            Err(_) => return None,
        };
        let redirect = self.cluster.then(|| cluster::redirect(reply)).flatten();
        let refused = reply.error_line().is_some_and(refusal);
        let go = match redirect {
            Some(Redirect::TryAgain) => return self.later(now, timeout),
            None if refused => return self.later(now, timeout),
            Some(Redirect::Moved { .. }) => Go::Master,
            Some(Redirect::Ask { node, .. }) => Go::Ask(node),
            None if reply.error_line() == Some(DEMOTED) => Go::Master,
            None => return None,
        };
        self.hops += 1;
        (self.hops <= MAX_REDIRECTS).then_some(go)
    }

    /// Again after [`TRY_AGAIN_AFTER`], while within `timeout` of the first
    /// such answer.
    fn later(&mut self, now: Instant, timeout: Duration) -> Option<Go> {
        let since = *self.tried_since.get_or_insert(now);
        let within = now.duration_since(since) + TRY_AGAIN_AFTER < timeout;
        within.then_some(Go::Later)
    }

    /// The command again, with `left` to block where it has a timeout.
    pub(in crate::client) fn payload(&self, left: Duration) -> Bytes {
        let mut args = self.args.clone();
        if let Some(at) = self.timeout {
            with_block_time(&mut args, at, left);
        }
        let mut buf = BytesMut::new();
        encode_command(&args, &mut buf);
        buf.freeze()
    }
}

/// How often a blocking command waiting on a cluster node looks whether
/// the slot map still names that node for its keys.
pub(in crate::client) const LEFT_CHECK: Duration = Duration::from_millis(500);

/// Whether a blocking command waiting on a cluster node is left behind:
/// the slot map has named another master of its keys for a request
/// timeout, and the node neither redirected the command (`-MOVED`, as a
/// node that is up does once its slot is elsewhere) nor closed: its
/// replica took over while it was frozen or cut off, and it would block
/// there, unserved, while what is pushed goes to the new master. The
/// command then goes again there (see `backend::LEFT_BEHIND`).
#[derive(Debug, Default)]
pub(in crate::client) struct Elsewhere {
    since: Option<Instant>,
}

impl Elsewhere {
    /// Notes whether the map names another master at `now`; true once it
    /// has named one, without a break, for `timeout`.
    pub(in crate::client) fn left_behind(
        &mut self,
        elsewhere: bool,
        now: Instant,
        timeout: Duration,
    ) -> bool {
        if !elsewhere {
            self.since = None;
            return false;
        }
        let since = *self.since.get_or_insert(now);
        now.duration_since(since) >= timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Reply;

    fn resend() -> Resend {
        resend_on(true)
    }

    fn resend_on(cluster: bool) -> Resend {
        let request = Request::Inline(
            ["BLPOP", "q", "30"]
                .iter()
                .map(|a| Bytes::from_static(a.as_bytes()))
                .collect(),
        );
        let spec = crate::protocol::command::lookup(b"blpop").unwrap();
        Resend::of(spec, &request, None, Proto::Resp2, cluster)
    }

    /// Moves, asks, demotions, closes by the server and commands a
    /// failover left on a silent old master are followed
    /// [`MAX_REDIRECTS`] times in all, `-TRYAGAIN` for a request timeout
    /// from the first; anything else (another error, `CLIENT UNBLOCK ...
    /// ERROR`'s, a timeout, the proxy's own close) is the client's reply.
    #[test]
    fn refusals_are_followed_within_bounds() {
        let now = Instant::now();
        let timeout = Duration::from_millis(100);
        let lost = |reason: &str| {
            Err(BackendError::ConnectionLost {
                backend: "a".into(),
                reason: reason.into(),
            })
        };
        let mut moved = resend();
        let line = Ok(Reply::error("MOVED 3999 127.0.0.1:7001"));
        for _ in 0..MAX_REDIRECTS - 3 {
            assert_eq!(moved.follow(&line, now, timeout), Some(Go::Master));
        }
        let demoted = Ok(Reply::error(DEMOTED));
        assert_eq!(moved.follow(&demoted, now, timeout), Some(Go::Master));
        let closed = lost(CLOSED_BY_THE_SERVER);
        assert_eq!(moved.follow(&closed, now, timeout), Some(Go::Master));
        let left = lost(LEFT_BEHIND);
        assert_eq!(moved.follow(&left, now, timeout), Some(Go::Master));
        assert_eq!(moved.follow(&line, now, timeout), None);
        let ask = Ok(Reply::error("ASK 3999 127.0.0.1:7002"));
        let node = "127.0.0.1:7002".to_string();
        assert_eq!(resend().follow(&ask, now, timeout), Some(Go::Ask(node)));
        let mut tried = resend();
        let line = Ok(Reply::error(
            "TRYAGAIN Multiple keys request during rehashing of slot",
        ));
        for _ in 0..10 {
            assert_eq!(tried.follow(&line, now, timeout), Some(Go::Later));
        }
        assert_eq!(tried.follow(&line, now + timeout, timeout), None);
        // A replica's or loading server's refusal, cluster or not.
        for line in [
            "READONLY You can't write against a read only replica.",
            "LOADING Redis is loading the dataset in memory",
        ] {
            let mut refused = resend_on(false);
            let line = Ok(Reply::error(line));
            assert_eq!(refused.follow(&line, now, timeout), Some(Go::Later));
            assert_eq!(refused.follow(&line, now + timeout, timeout), None);
        }
        let unblocked = Reply::error("UNBLOCKED client unblocked via CLIENT UNBLOCK");
        let others = [
            Reply::error("WRONGTYPE x"),
            unblocked,
            Reply::Null,
            Reply::ok(),
        ];
        for other in others {
            assert_eq!(resend().follow(&Ok(other), now, timeout), None);
        }
        let timed_out = Err(BackendError::Timeout {
            backend: "a".into(),
            timeout_ms: 100,
        });
        let own = [
            lost("proxy is shutting down"),
            lost("bad reply: x"),
            timed_out,
        ];
        for other in own {
            assert_eq!(resend().follow(&other, now, timeout), None);
        }
    }

    /// Left behind once the map has named another master for a request
    /// timeout without a break; a map that names the node again starts
    /// the count over.
    #[test]
    fn a_command_is_left_behind_once_its_keys_were_elsewhere_for_a_timeout() {
        let (now, timeout) = (Instant::now(), Duration::from_millis(500));
        let at = |ms: u64| now + Duration::from_millis(ms);
        let mut e = Elsewhere::default();
        assert!(!e.left_behind(false, at(0), timeout));
        assert!(!e.left_behind(true, at(100), timeout));
        assert!(!e.left_behind(true, at(599), timeout));
        assert!(!e.left_behind(false, at(700), timeout), "named again");
        assert!(!e.left_behind(true, at(800), timeout));
        assert!(!e.left_behind(true, at(1299), timeout));
        assert!(e.left_behind(true, at(1300), timeout));
    }

    /// A server that is not a cluster node redirects nothing: its
    /// `-MOVED`, `-ASK` or `-TRYAGAIN` is the client's reply; a demotion
    /// or a close by the server is followed there too.
    #[test]
    fn only_a_cluster_redirects() {
        let now = Instant::now();
        let timeout = Duration::from_millis(100);
        for line in [
            "MOVED 3999 127.0.0.1:7001",
            "ASK 3999 127.0.0.1:7002",
            "TRYAGAIN x",
        ] {
            let reply = Ok(Reply::error(line));
            assert_eq!(resend_on(false).follow(&reply, now, timeout), None);
        }
        let demoted = Ok(Reply::error(DEMOTED));
        assert_eq!(
            resend_on(false).follow(&demoted, now, timeout),
            Some(Go::Master)
        );
        let closed = Err(BackendError::ConnectionLost {
            backend: "a".into(),
            reason: CLOSED_BY_THE_SERVER.into(),
        });
        assert_eq!(
            resend_on(false).follow(&closed, now, timeout),
            Some(Go::Master)
        );
    }

    /// Sent again with the time left, as a RESP array.
    #[test]
    fn the_command_goes_again_with_the_time_left() {
        let payload = resend().payload(Duration::from_millis(12_500));
        assert_eq!(
            &payload[..],
            b"*3\r\n$5\r\nBLPOP\r\n$1\r\nq\r\n$6\r\n12.500\r\n"
        );
    }
}
