//! One key's move from an old server to its owner: the scripts each step
//! runs (the lock and the read of the old copy, the delete of it once the
//! owner has its copy, the lock's release), and what the owner made of the
//! copy. The order of the steps is [`super::Migration::settle`]'s.

use std::time::{Instant, SystemTime};

use bytes::Bytes;

use super::{call, failed, fence, refused, unexpected, Layout, SettleError, Settled, LOCK_PREFIX};
use crate::backend::{Backend, BackendError, Origin};
use crate::own_keys::TOMBSTONE_PREFIX;
use crate::protocol::Reply;

/// One step of a settle: from `old` to `owner`, under a lock beside the
/// old copy or at the owner; `newer` are the key's old locations in the
/// layouts newer than the one that put it on `old` (the ones settled before).
pub(super) struct Step<'a> {
    pub(super) owner: &'a Backend,
    pub(super) old: &'a Backend,
    pub(super) newer: &'a [(&'a Backend, &'a Layout)],
    pub(super) lock_at_owner: bool,
}

/// Whether a move between `owner` and `old` involves a Redis Cluster: its
/// lock and tombstone are then named to share the key's slot.
pub(super) fn across_cluster(owner: &Backend, old: &Backend) -> bool {
    owner.cluster().is_some() || old.cluster().is_some()
}

/// Reads a key for a move: its serialized value and remaining TTL in ms, at
/// one instant, and takes the key's move lock on the old server (KEYS[2],
/// token ARGV[1], for ARGV[2] ms), which every proxy's settle of the key
/// takes: nil when there is no such key, `BUSY` while another move of it
/// is under way, `LATE` (nothing read or taken) once the server's clock
/// has passed ARGV[3] (see [`fence`]).
const READ_FOR_MOVE: &str = concat!(
    fence::unless_past!("3"),
    "local v = redis.call('DUMP', KEYS[1]) \
     if not v then return false end \
     if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 'BUSY' end \
     return {v, redis.call('PTTL', KEYS[1])}"
);

/// Deletes a key only if it still holds the value read for the move
/// (ARGV[1]), and releases the move lock if it is still ours (ARGV[2]).
const DELETE_IF_SAME: &str = "local n = 0 \
     if redis.call('DUMP', KEYS[1]) == ARGV[1] then n = redis.call('DEL', KEYS[1]) end \
     if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]) end \
     return n";

/// Takes the move lock KEYS[1] (token ARGV[1], for ARGV[2] ms): `BUSY`
/// while another move of the key holds it, `LATE` (nothing taken) once the
/// server's clock has passed ARGV[3]. For a layout ahead, whose lock is on
/// the owner: see [`Layout::lock_at_owner`].
const LOCK: &str = concat!(
    fence::unless_past!("3"),
    "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then \
     return 'OK' end return 'BUSY'"
);

/// Reads a key for a move without a lock beside it (the lock is on the
/// owner): nil when there is no such key.
const READ: &str = "local v = redis.call('DUMP', KEYS[1]) \
     if not v then return false end \
     return {v, redis.call('PTTL', KEYS[1])}";

/// Takes the server ARGV[1] out of the tombstone KEYS[1] (gone with its
/// last server).
const UNBURY: &str = "return redis.call('SREM', KEYS[1], ARGV[1])";

/// Releases the move lock if it is still ours, after a failed move.
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
     return redis.call('DEL', KEYS[1]) end return 0";

/// What the owner made of the copy: moved, or stale (it had a newer one);
/// else why the move failed.
pub(super) fn landed(
    owner: &Backend,
    restored: Result<fence::Restored, BackendError>,
) -> Result<Settled, SettleError> {
    match restored {
        Ok(fence::Restored::Done) => Ok(Settled::Moved),
        Ok(fence::Restored::Refused(e)) if e.starts_with(b"BUSYKEY") => Ok(Settled::Stale),
        // Deleted while its old server was taken for gone: as stale.
        Ok(fence::Restored::Buried) => Ok(Settled::Stale),
        Ok(fence::Restored::Refused(e)) => Err(failed(refused(owner, &e))),
        Ok(fence::Restored::Late) => Err(failed(unexpected(owner, "a copy before its deadline"))),
        Ok(fence::Restored::Unexpected) => Err(failed(unexpected(owner, "OK"))),
        Err(error) => Err(failed(error)),
    }
}

/// One key's move from an old server to its owner, under a move lock kept
/// beside the old copy, or at the owner (`lock_at_owner`).
pub(super) struct Move<'a> {
    pub(super) origin: Origin,
    pub(super) db: u32,
    pub(super) key: &'a Bytes,
    pub(super) owner: &'a Backend,
    pub(super) old: &'a Backend,
    pub(super) lock_at_owner: bool,
    /// The lock's key, this move's token in it, and how long it lasts.
    pub(super) lock: Vec<u8>,
    pub(super) token: String,
    pub(super) lock_ms: String,
}

impl Move<'_> {
    pub(super) fn lock_server(&self) -> &Backend {
        if self.lock_at_owner {
            self.owner
        } else {
            self.old
        }
    }

    /// Releases the lock if it is still this move's.
    pub(super) async fn release(&self) {
        let server = self.lock_server();
        release(server, self.origin, self.db, &self.lock, &self.token).await;
    }

    /// A guard that releases the lock, from a task of its own, if it is
    /// dropped armed: the move was dropped (its client had its timeout
    /// error) or failed while its lock request was out, and the request
    /// may still run, or have run, and hold the lock for nobody until it
    /// lapses. Once the lock is taken and a copy may be on its way to the
    /// owner, the release waits for the copy's deadline
    /// ([`ReleaseIfDropped::not_before`]): released sooner, another move
    /// could go on while the copy can still land. Disarmed once the move
    /// is done (or found nothing to move).
    pub(super) fn release_if_dropped(&self) -> ReleaseIfDropped {
        ReleaseIfDropped {
            lock: Some(Lock {
                server: self.lock_server().clone(),
                origin: self.origin,
                db: self.db,
                key: self.lock.clone(),
                token: self.token.clone(),
            }),
            not_before: None,
        }
    }

    /// One try at locking the key and reading its old copy: the value and
    /// its PTTL, a null (no old copy), or BUSY (another move holds it). The
    /// lock is taken only if the server runs the request by `answer_by`
    /// (when this move stops waiting for it); later, nothing is taken and
    /// the try fails as a timeout of that server.
    pub(super) async fn lock_and_read(&self, answer_by: Instant) -> Result<Reply, SettleError> {
        let (origin, db, key, old) = (self.origin, self.db, self.key, self.old);
        let (lock, token, lock_ms) = (&self.lock, self.token.as_bytes(), self.lock_ms.as_bytes());
        let now = Instant::now();
        let fence = fence::unix_ms_by(answer_by, now, SystemTime::now()).to_string();
        let waited_ms = answer_by.saturating_duration_since(now).as_millis() as u64;
        let late = |server: &Backend| BackendError::Timeout {
            backend: server.id.clone(),
            timeout_ms: waited_ms,
        };
        if !self.lock_at_owner {
            let args: [&[u8]; 8] = [
                b"EVAL",
                READ_FOR_MOVE.as_bytes(),
                b"2",
                key,
                lock,
                token,
                lock_ms,
                fence.as_bytes(),
            ];
            return match call(old, origin, db, &args, false).await {
                Ok(Reply::Bulk(l)) if &l[..] == b"LATE" => Err(SettleError::OldDown(late(old))),
                read => read.map_err(SettleError::OldDown),
            };
        }
        let args: [&[u8]; 7] = [
            b"EVAL",
            LOCK.as_bytes(),
            b"1",
            lock,
            token,
            lock_ms,
            fence.as_bytes(),
        ];
        match call(self.owner, origin, db, &args, false)
            .await
            .map_err(failed)?
        {
            Reply::Bulk(l) if &l[..] == b"LATE" => Err(failed(late(self.owner))),
            Reply::Bulk(ok) if &ok[..] == b"OK" => {
                let args: [&[u8]; 4] = [b"EVAL", READ.as_bytes(), b"1", key];
                let read = call(old, origin, db, &args, false).await;
                if !matches!(read, Ok(Reply::Array(_))) {
                    self.release().await;
                }
                read.map_err(SettleError::OldDown)
            }
            Reply::Error(e) => Err(failed(refused(self.owner, &e))),
            other => Ok(other),
        }
    }

    /// Whether a holder of the key in a layout newer than the old server's
    /// (`newer`, owner then) has the key's tombstone naming the old server:
    /// the key was deleted while that server was taken for gone, and a
    /// reload gave it the owner it has now, where no tombstone is. The
    /// lock is released when the answer is not known.
    pub(super) async fn buried_beside(
        &self,
        newer: &[(&Backend, &Layout)],
    ) -> Result<bool, SettleError> {
        for &(holder, _) in newer {
            let tombstone = tombstone_name(self.key, across_cluster(holder, self.old));
            let args: [&[u8]; 3] = [b"SISMEMBER", &tombstone, self.old.id.as_bytes()];
            let error = match call(holder, self.origin, self.db, &args, false).await {
                Ok(Reply::Int(0)) => continue,
                Ok(Reply::Int(_)) => return Ok(true),
                Ok(Reply::Error(e)) => refused(holder, &e),
                Ok(_) => unexpected(holder, "an integer"),
                Err(error) => error,
            };
            self.release().await;
            return Err(failed(error));
        }
        Ok(false)
    }

    /// Takes the old server out of the owner's `tombstone` of the key, once
    /// the copy it kept out is gone (lest it refuse a newer one later).
    pub(super) async fn unbury(&self, tombstone: &[u8]) {
        let server = self.old.id.as_bytes();
        let args: [&[u8]; 5] = [b"EVAL", UNBURY.as_bytes(), b"1", tombstone, server];
        let _ = call(self.owner, self.origin, self.db, &args, true).await;
    }

    /// The owner has the key (or a newer one): the old copy goes, if it is
    /// still the one moved. Returns whether it went.
    pub(super) async fn delete_old(&self, value: &Bytes) -> Result<bool, SettleError> {
        let args: [&[u8]; 7] = [
            b"EVAL",
            DELETE_IF_SAME.as_bytes(),
            b"2",
            self.key,
            &self.lock,
            value,
            self.token.as_bytes(),
        ];
        let deleted = call(self.old, self.origin, self.db, &args, false).await;
        if self.lock_at_owner {
            // The lock is not beside the old copy: release it on the owner.
            self.release().await;
        }
        match deleted {
            Ok(Reply::Int(n)) => Ok(n == 1),
            Ok(Reply::Error(e)) => Err(failed(refused(self.old, &e))),
            Ok(_) => Err(failed(unexpected(self.old, "an integer"))),
            Err(error) => Err(failed(error)),
        }
    }
}

/// Releases the lock `key` on `server` if it still holds `token`.
async fn release(server: &Backend, origin: Origin, db: u32, key: &[u8], token: &str) {
    let args: [&[u8]; 5] = [b"EVAL", RELEASE.as_bytes(), b"1", key, token.as_bytes()];
    let _ = call(server, origin, db, &args, false).await;
}

/// A move's lock, owned, for a release after the move is gone.
struct Lock {
    server: Backend,
    origin: Origin,
    db: u32,
    key: Vec<u8>,
    token: String,
}

/// See [`Move::release_if_dropped`].
pub(super) struct ReleaseIfDropped {
    lock: Option<Lock>,
    /// Released no sooner than this: a copy fenced by it may still land.
    not_before: Option<Instant>,
}

impl ReleaseIfDropped {
    pub(super) fn disarm(mut self) {
        self.lock = None;
    }

    /// A release from now on waits until `deadline`, past which no copy
    /// of this move lands.
    pub(super) fn not_before(&mut self, deadline: Instant) {
        self.not_before = Some(deadline);
    }
}

impl Drop for ReleaseIfDropped {
    fn drop(&mut self) {
        let (Some(lock), Ok(runtime)) = (self.lock.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let not_before = self.not_before;
        runtime.spawn(async move {
            if let Some(deadline) = not_before {
                tokio::time::sleep_until(deadline.into()).await;
            }
            let Lock {
                server,
                origin,
                db,
                key,
                token,
            } = lock;
            release(&server, origin, db, &key, &token).await;
        });
    }
}

/// The move lock's key for `key`: `LOCK_PREFIX` and the key; for a move
/// from or to a Redis Cluster, with the part of the key the cluster hashes
/// as its hash tag first, so that lock and key share a slot (the scripts
/// that read or delete the old copy take both). A key that contains a `}`
/// outside a hash tag of its own still lands elsewhere.
pub(super) fn lock_name(key: &[u8], cluster: bool) -> Vec<u8> {
    own_name(LOCK_PREFIX, key, cluster)
}

/// The tombstone's key for `key` (see [`super::Purpose::Delete`]), named as
/// [`lock_name`] names the lock, so that it shares the key's slot: a
/// move's RESTORE takes both.
pub(super) fn tombstone_name(key: &[u8], cluster: bool) -> Vec<u8> {
    own_name(TOMBSTONE_PREFIX, key, cluster)
}

fn own_name(prefix: &[u8], key: &[u8], cluster: bool) -> Vec<u8> {
    if !cluster {
        return [prefix, key].concat();
    }
    let tag = crate::cluster::hash_tag(key);
    [prefix, b"{", tag, b"}", key].concat()
}

#[cfg(test)]
mod tests {
    use super::{lock_name, tombstone_name};
    use crate::cluster::slot;

    #[test]
    fn a_lock_and_a_tombstone_for_a_cluster_share_their_keys_slot() {
        for key in [&b"session:abc"[..], b"session:{u3}:g5", b"a{b"] {
            assert_eq!(slot(&lock_name(key, true)), slot(key), "{key:?}");
            assert_eq!(slot(&tombstone_name(key, true)), slot(key), "{key:?}");
        }
        assert_eq!(lock_name(b"k", false), b"__session-proxy-moving:k");
        assert_eq!(tombstone_name(b"k", false), b"__session-proxy-deleted:k");
    }
}
