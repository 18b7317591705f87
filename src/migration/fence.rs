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
//!
//! Taking a move's lock is fenced too, by the moment its taker stops
//! waiting for the answer plus the allowance ([`unix_ms_by`]): a lock
//! request that sat in a frozen server and ran when it woke would hold the
//! key's lock for nobody, and every request for that key would wait on it
//! until it lapsed (seconds; a 30-minute nemesis saw a session's writes
//! fail for ten). A late lock costs only that wait, never data, so its
//! fence leans the other way: a server whose clock is ahead never refuses a
//! lock its taker is still waiting for.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::backend::{Backend, BackendError, Origin};
use crate::migration::call;
use crate::protocol::Reply;

/// How far a backend's clock may be ahead of the proxy's without a late
/// write getting through.
pub const CLOCK_ALLOWANCE: Duration = Duration::from_millis(250);

/// The start of a script that answers `LATE`, and does nothing, once the
/// server's clock has passed ARGV[$argv] (Unix ms).
macro_rules! unless_past {
    ($argv:literal) => {
        concat!(
            "local t = redis.call('TIME') \
             if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(ARGV[",
            $argv,
            "]) then return 'LATE' end "
        )
    };
}
pub(crate) use unless_past;

/// The RESTORE of [`RESTORE_BEFORE`], after its checks.
macro_rules! restore {
    () => {
        "if ARGV[3] == '1' then \
         return redis.pcall('RESTORE', KEYS[1], ARGV[1], ARGV[2], 'REPLACE') end \
         return redis.pcall('RESTORE', KEYS[1], ARGV[1], ARGV[2])"
    };
}

/// RESTORE KEYS[1] with TTL ARGV[1] and payload ARGV[2] (with REPLACE when
/// ARGV[3] is 1) if the server's clock has not passed ARGV[4] (Unix ms);
/// `LATE` otherwise. RESTORE's own errors (BUSYKEY) come back as they are.
const RESTORE_BEFORE: &str = concat!(unless_past!("4"), restore!());

/// [`RESTORE_BEFORE`], and `BURIED` (nothing written) while the tombstone
/// KEYS[2] (a set) names ARGV[5], the server the copy comes from.
const RESTORE_UNLESS_BURIED: &str = concat!(
    unless_past!("4"),
    "if redis.call('SISMEMBER', KEYS[2], ARGV[5]) == 1 then return 'BURIED' end ",
    restore!()
);

/// The Unix time in ms, on the proxy's wall clock, that stands for
/// `instant` (a monotonic one; an instant already passed stands for now).
fn unix_ms_at(instant: Instant, now: Instant, wall_now: SystemTime) -> u64 {
    let wall_ms = wall_now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    wall_ms + instant.saturating_duration_since(now).as_millis() as u64
}

/// `unix_ms_at` `deadline`, less the clock allowance: the last moment a
/// backend may run a write that must land before `deadline`.
pub fn unix_ms_before(deadline: Instant, now: Instant, wall_now: SystemTime) -> u64 {
    unix_ms_at(deadline, now, wall_now).saturating_sub(CLOCK_ALLOWANCE.as_millis() as u64)
}

/// `unix_ms_at` `answer_by` (when a request's sender stops waiting for
/// its answer), plus the clock allowance: the last moment a backend may
/// take a move's lock for it.
pub fn unix_ms_by(answer_by: Instant, now: Instant, wall_now: SystemTime) -> u64 {
    unix_ms_at(answer_by, now, wall_now) + CLOCK_ALLOWANCE.as_millis() as u64
}

/// What a fenced RESTORE did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// Written.
    Done,
    /// The server's clock had passed the deadline: nothing was written.
    Late,
    /// A tombstone named the copy's server: nothing was written.
    Buried,
    /// RESTORE's own error (BUSYKEY when the key exists without REPLACE).
    Refused(Bytes),
    /// Any other reply.
    Unexpected,
}

/// A key's copy to restore: its DUMP payload, its TTL in milliseconds (0:
/// none), whether it replaces a key already there, and the tombstone and
/// server name that keep it out (see [`crate::migration::Purpose::Delete`]).
pub struct Dumped<'a> {
    pub key: &'a [u8],
    pub payload: &'a [u8],
    pub ttl_ms: i64,
    pub replace: bool,
    pub unless_buried: Option<(&'a [u8], &'a [u8])>,
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
        unless_buried,
    } = copy;
    let fence = unix_ms_before(deadline, Instant::now(), SystemTime::now()).to_string();
    let ttl = ttl_ms.max(0).to_string();
    let replace: &[u8] = if replace { b"1" } else { b"0" };
    let (script, numkeys) = match unless_buried {
        None => (RESTORE_BEFORE, b"1"),
        Some(_) => (RESTORE_UNLESS_BURIED, b"2"),
    };
    let mut args: Vec<&[u8]> = vec![b"EVAL", script.as_bytes(), numkeys, key];
    args.extend(unless_buried.map(|(tombstone, _)| tombstone));
    args.extend([ttl.as_bytes(), payload, replace, fence.as_bytes()]);
    args.extend(unless_buried.map(|(_, server)| server));
    Ok(match call(backend, origin, db, &args, true).await? {
        Reply::Status(_) => Restored::Done,
        Reply::Bulk(late) if &late[..] == b"LATE" => Restored::Late,
        Reply::Bulk(buried) if &buried[..] == b"BURIED" => Restored::Buried,
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

    #[test]
    fn a_lock_is_fenced_at_its_answer_time_plus_the_allowance() {
        let now = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_millis(1_000_000);
        let fence = unix_ms_by(now + Duration::from_millis(200), now, wall);
        assert_eq!(fence, 1_000_000 + 200 + 250);
        assert_eq!(
            unix_ms_by(now, now + Duration::from_secs(1), wall),
            1_000_250
        );
    }

    #[test]
    fn the_fenced_scripts_check_their_own_argument() {
        assert!(RESTORE_BEFORE.contains("> tonumber(ARGV[4]) then return 'LATE' end if ARGV[3]"));
        assert!(RESTORE_UNLESS_BURIED
            .contains("then return 'LATE' end if redis.call('SISMEMBER', KEYS[2]"));
        assert!(
            RESTORE_UNLESS_BURIED.ends_with(RESTORE_BEFORE.split("end if ARGV[3]").nth(1).unwrap())
        );
    }
}
