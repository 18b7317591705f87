//! RENAME and RENAMENX whose two keys live on different backends: the
//! proxy moves the value, in an order that never loses it and never leaves
//! both names readable:
//!
//! 1. on the source backend, one script reads the value and its TTL (DUMP,
//!    PTTL) and renames the key to a hidden name beside it
//!    ([`HIDDEN_PREFIX`]): from then on the old name reads as gone, as after
//!    Redis's RENAME, and the value is still on disk there;
//! 2. RESTORE on the destination backend (REPLACE for RENAME; without it
//!    for RENAMENX, where an existing destination answers 0);
//! 3. the hidden copy is deleted. If step 2 fails, the hidden copy is put
//!    back under the old name (unless a newer write made that name again),
//!    and the client gets the error.
//!
//! While a migration is on, both keys are settled first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::backend::{BackendError, BackendResult, Origin};
use crate::client::ctx::Ctx;
use crate::client::migrate::{settle_within, SettleBy};
use crate::client::slot::{Pending, Slot};
use crate::migration::fence::{restore_before, Dumped, Restored};
use crate::migration::{call, Purpose};
use crate::own_keys::HIDDEN_PREFIX;
use crate::protocol::RedisError;
use crate::protocol::Reply;

/// Reads KEYS[1] (DUMP and PTTL) and renames it to KEYS[2], its hidden
/// name: nil when there is no such key, `BUSY` while another rename of it
/// is under way.
const TAKE: &str = "local v = redis.call('DUMP', KEYS[1]) \
     if not v then return false end \
     if redis.call('EXISTS', KEYS[2]) == 1 then return 'BUSY' end \
     local t = redis.call('PTTL', KEYS[1]) \
     redis.call('RENAME', KEYS[1], KEYS[2]) \
     return {v, t}";

/// Puts the hidden copy KEYS[2] back as KEYS[1], unless KEYS[1] was
/// written meanwhile (the newer value wins).
const PUT_BACK: &str = "if redis.call('EXISTS', KEYS[1]) == 0 then \
     return redis.call('RENAME', KEYS[2], KEYS[1]) end \
     return redis.call('DEL', KEYS[2])";

/// How long to wait before trying again while another rename of the same
/// key is under way.
const BUSY_RETRY: Duration = Duration::from_millis(2);

/// Moves the key of RENAME / RENAMENX (`nx`) from backend `from` to `to`.
pub(in crate::client) fn rename(cx: &mut Ctx<'_>, nx: bool, from: usize, to: usize) -> Slot {
    let Ctx {
        topo, request, now, ..
    } = *cx;
    cx.flush();
    let args = request.args();
    let (source, target) = (args[1].clone(), args[2].clone());
    let (origin, db) = (cx.state.origin(), cx.state.db);
    let timeout = topo.config.pool.request_timeout();
    // Both backends, as a late rename's error names them.
    let both: Arc<str> = Arc::from(format!(
        "{}', '{}",
        topo.backends[from].id, topo.backends[to].id
    ));
    let rename = Rename {
        origin,
        db,
        nx,
        deadline: now + timeout,
        timeout_ms: timeout.as_millis() as u64,
        both: both.clone(),
    };
    let topo2 = topo.clone();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let topo = topo2;
        let moved = async {
            if let Some(migration) = topo.active_migration() {
                // As any request's: an old location slow to answer fails
                // the rename at half its timeout, named in the error.
                let by = SettleBy::half_of(timeout, now);
                for key in [&source, &target] {
                    let owner = &topo.backends[topo.route(key)];
                    if migration.is_moving(key, owner) {
                        let client = Purpose::Client;
                        settle_within(migration, (origin, db), key, owner, client, by)
                            .await
                            .map_err(|e| e.into_backend())?;
                    }
                }
            }
            let (from, to) = (&topo.backends[from], &topo.backends[to]);
            move_value(from, to, &source, &target, &rename).await
        };
        let _ = tx.send(moved.await);
    });
    let mut slot = Slot::waiting(topo, cx.state.proto, Pending::One(rx), both, now);
    slot.barrier = true;
    slot
}

/// One cross-backend rename: whose it is, its kind and its deadline.
struct Rename {
    origin: Origin,
    db: u32,
    /// RENAMENX: an existing destination answers 0.
    nx: bool,
    /// When the client is answered with a timeout.
    deadline: Instant,
    timeout_ms: u64,
    /// The two backends, named as `from', 'to`.
    both: Arc<str>,
}

/// The three steps; the client's reply.
async fn move_value(
    from: &crate::backend::Backend,
    to: &crate::backend::Backend,
    source: &[u8],
    target: &[u8],
    rename: &Rename,
) -> BackendResult {
    let Rename {
        origin,
        db,
        nx,
        deadline,
        timeout_ms,
        ref both,
    } = *rename;
    let hidden = [HIDDEN_PREFIX, source].concat();
    let (value, ttl) = match take(from, source, &hidden, rename).await? {
        Ok(taken) => taken,
        Err(reply) => return Ok(reply),
    };
    // The copy lands before the client is answered or not at all: a RESTORE
    // that ran on a slow destination after the client's timeout would undo
    // the client's next requests there (a newer write, a logout).
    let copy = Dumped {
        key: target,
        payload: &value,
        ttl_ms: ttl,
        replace: !nx,
        unless_buried: None,
    };
    let restored = restore_before(to, origin, db, copy, deadline).await;
    // Late: the time went on the steps before as much as on the copy (a
    // source frozen or held by a failover), so the error names both
    // backends, as the client's own timeout would.
    if let Some(outcome) = not_restored(restored, nx, both.clone(), timeout_ms) {
        // Best effort: if this fails too, the value stays under its hidden
        // name on the source, not lost.
        let put_back = [b"EVAL", PUT_BACK.as_bytes(), b"2", source, &hidden];
        let _ = call(from, origin, db, &put_back, true).await;
        return outcome;
    }
    // The value is on the destination: the hidden copy goes. If the source
    // cannot be reached now, the copy stays hidden (never readable).
    let _ = call(from, origin, db, &[b"DEL", &hidden], true).await;
    Ok(if nx { Reply::Int(1) } else { Reply::ok() })
}

/// Takes the source's value and TTL, renaming it to its hidden name (and
/// waiting while another rename holds it); `Err` inside: the reply the
/// client gets instead (no such key, an error).
async fn take(
    from: &crate::backend::Backend,
    source: &[u8],
    hidden: &[u8],
    rename: &Rename,
) -> Result<Result<(Bytes, i64), Reply>, BackendError> {
    let (origin, db, deadline) = (rename.origin, rename.db, rename.deadline);
    let taken = loop {
        let reply = call(
            from,
            origin,
            db,
            &[b"EVAL", TAKE.as_bytes(), b"2", source, hidden],
            true,
        )
        .await?;
        match reply {
            Reply::Bulk(ref b) if &b[..] == b"BUSY" && Instant::now() < deadline => {
                tokio::time::sleep(BUSY_RETRY).await;
            }
            other => break other,
        }
    };
    Ok(match taken {
        Reply::Null => Err(RedisError::NoSuchKey.reply()),
        Reply::Array(items) => match &items[..] {
            [Reply::Bulk(value), Reply::Int(ttl)] => Ok((value.clone(), (*ttl).max(0))),
            _ => Err(RedisError::UnexpectedReply.reply()),
        },
        Reply::Error(e) => Err(Reply::Error(e)),
        _ => Err(RedisError::UnexpectedReply.reply()),
    })
}

/// What the client gets when the copy did not land (`None`: it did).
fn not_restored(
    restored: Result<Restored, BackendError>,
    nx: bool,
    both: Arc<str>,
    timeout_ms: u64,
) -> Option<BackendResult> {
    match restored {
        Ok(Restored::Done) => None,
        Ok(Restored::Refused(e)) if nx && e.starts_with(b"BUSYKEY") => Some(Ok(Reply::Int(0))),
        Ok(Restored::Refused(e)) => Some(Ok(Reply::Error(e))),
        Ok(Restored::Late) => Some(Err(BackendError::Timeout {
            backend: both,
            timeout_ms,
        })),
        Ok(Restored::Unexpected | Restored::Buried) => {
            Some(Ok(RedisError::UnexpectedReply.reply()))
        }
        Err(error) => Some(Err(error)),
    }
}
