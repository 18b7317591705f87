//! A RESTORE that lands before a deadline or not at all.
//!
//! A step of a move (a key brought to its owner, a cross-backend RENAME) is
//! a command the proxy sends on behalf of a client. If its backend is slow
//! (frozen, failing over) the client is answered with a timeout, yet the
//! command still sits in the backend's socket and would run when the
//! backend wakes: after the client's next requests, a newer write or a
//! logout, which it would undo. So the write of a move carries its deadline
//! and the backend checks it against its own clock (TIME, in the same
//! script): past it, nothing is written and the reply is `LATE`.
//!
//! The deadline is the proxy's wall clock at the moment the client would be
//! answered (or the move's lock would lapse) less [`CLOCK_ALLOWANCE`]: the
//! backends' clocks must agree with the proxy's within that, as NTP keeps
//! them.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::backend::{Backend, BackendError, Origin};
use crate::migration::call;
use crate::protocol::Reply;

/// How far a backend's clock may be ahead of the proxy's without a late
/// write getting through.
pub const CLOCK_ALLOWANCE: Duration = Duration::from_millis(250);

/// RESTORE KEYS[1] with TTL ARGV[1] and payload ARGV[2] (with REPLACE when
/// ARGV[3] is 1) if the server's clock has not passed ARGV[4] (Unix ms);
/// `LATE` otherwise. RESTORE's own errors (BUSYKEY) come back as they are.
const RESTORE_BEFORE: &str = "local t = redis.call('TIME') \
     if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(ARGV[4]) then \
     return 'LATE' end \
     if ARGV[3] == '1' then \
     return redis.pcall('RESTORE', KEYS[1], ARGV[1], ARGV[2], 'REPLACE') end \
     return redis.pcall('RESTORE', KEYS[1], ARGV[1], ARGV[2])";

/// The Unix time in ms, on the proxy's wall clock, that stands for
/// `deadline` (a monotonic instant), less the clock allowance: the last
/// moment a backend may run a write that must land before `deadline`.
pub fn unix_ms_before(deadline: Instant, now: Instant, wall_now: SystemTime) -> u64 {
    let wall_ms = wall_now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let left = deadline.saturating_duration_since(now);
    (wall_ms + left.as_millis() as u64).saturating_sub(CLOCK_ALLOWANCE.as_millis() as u64)
}

/// What a fenced RESTORE did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// Written.
    Done,
    /// The server's clock had passed the deadline: nothing was written.
    Late,
    /// RESTORE's own error (BUSYKEY when the key exists without REPLACE).
    Refused(Bytes),
    /// Any other reply.
    Unexpected,
}

/// A key's copy to restore: its DUMP payload, its TTL in milliseconds (0:
/// none), and whether it replaces a key already there.
pub struct Dumped<'a> {
    pub key: &'a [u8],
    pub payload: &'a [u8],
    pub ttl_ms: i64,
    pub replace: bool,
}

/// RESTOREs `copy` on `backend` unless the backend runs it after
/// `deadline`.
pub async fn restore_before(
    backend: &Backend,
    origin: Origin,
    db: u32,
    copy: Dumped<'_>,
    deadline: Instant,
) -> Result<Restored, BackendError> {
    let Dumped {
        key,
        payload,
        ttl_ms,
        replace,
    } = copy;
    let fence = unix_ms_before(deadline, Instant::now(), SystemTime::now()).to_string();
    let ttl = ttl_ms.max(0).to_string();
    let replace: &[u8] = if replace { b"1" } else { b"0" };
    let args: [&[u8]; 8] = [
        b"EVAL",
        RESTORE_BEFORE.as_bytes(),
        b"1",
        key,
        ttl.as_bytes(),
        payload,
        replace,
        fence.as_bytes(),
    ];
    Ok(match call(backend, origin, db, &args, true).await? {
        Reply::Status(_) => Restored::Done,
        Reply::Bulk(late) if &late[..] == b"LATE" => Restored::Late,
        Reply::Error(e) => Restored::Refused(e),
        _ => Restored::Unexpected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_is_the_deadline_on_the_wall_clock_less_the_allowance() {
        let now = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_millis(1_000_000);
        let fence = unix_ms_before(now + Duration::from_millis(1500), now, wall);
        assert_eq!(fence, 1_000_000 + 1500 - 250);
        // A deadline already passed fences at the wall clock's now, less
        // the allowance: nothing will land.
        assert_eq!(
            unix_ms_before(now, now + Duration::from_secs(1), wall),
            1_000_000 - 250
        );
    }
}
