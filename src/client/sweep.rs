//! FLUSHDB and FLUSHALL with key prefixes set: on every backend, the keys
//! under the prefixes are found with SCAN MATCH and deleted with UNLINK;
//! nothing else is touched. The steps run in a task; the slot is a barrier,
//! so the client's next requests wait for the flush to finish, as on Redis.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::backend::{Backend, BackendError, Job, Origin};
use crate::client::merge::KeyFilter;
use crate::client::slot::{Pending, Slot};
use crate::client::State;
use crate::protocol::Reply;
use crate::shared::Topology;

/// Keys asked for per SCAN step.
const SWEEP_COUNT: &[u8] = b"1000";

/// Starts the sweep and returns its slot: `+OK` once every backend is done,
/// or the first error.
pub(in crate::client) fn sweep(
    topo: &Arc<Topology>,
    state: &State,
    every_db: bool,
    filter: KeyFilter,
) -> Slot {
    let dbs = if every_db {
        0..topo.config.listen.databases
    } else {
        state.db..state.db + 1
    };
    let origin = state.origin().resp2();
    // A cluster backend is swept on each of its masters.
    let backends: Vec<Backend> = topo.servers();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut result = Ok(Reply::ok());
        'all: for backend in &backends {
            for db in dbs.clone() {
                if let Err(error) = sweep_one(backend, origin, db, &filter).await {
                    result = Err(error);
                    break 'all;
                }
            }
        }
        let _ = tx.send(result);
    });
    // A sweep of a large keyspace may take longer than a request: the
    // client waits for it (no deadline), as Redis's FLUSHDB SYNC would.
    let mut slot = Slot::ready(state.proto, Reply::Null);
    slot.pending = Pending::One(rx);
    slot.barrier = true;
    slot
}

/// Deletes the keys `filter` allows in one database of one backend.
async fn sweep_one(
    backend: &Backend,
    origin: Origin,
    db: u32,
    filter: &KeyFilter,
) -> Result<(), BackendError> {
    for pattern in filter.patterns() {
        let mut cursor = Bytes::from_static(b"0");
        loop {
            let args = [
                Bytes::from_static(b"SCAN"),
                cursor.clone(),
                Bytes::from_static(b"MATCH"),
                pattern.clone(),
                Bytes::from_static(b"COUNT"),
                Bytes::from_static(SWEEP_COUNT),
            ];
            let reply = ask(backend, origin, db, &args).await?;
            let (next, keys) = match reply {
                Reply::Array(mut parts) if parts.len() == 2 => match (parts.pop(), parts.pop()) {
                    (Some(Reply::Array(keys)), Some(Reply::Bulk(next))) => (next, keys),
                    _ => return Err(odd(backend)),
                },
                Reply::Error(e) => return Err(refused(backend, &e)),
                _ => return Err(odd(backend)),
            };
            let mut unlink = vec![Bytes::from_static(b"UNLINK")];
            unlink.extend(keys.into_iter().filter_map(|k| match k {
                Reply::Bulk(key) if filter.allows(&key) => Some(key),
                _ => None,
            }));
            if unlink.len() > 1 {
                if let Reply::Error(e) = ask(backend, origin, db, &unlink).await? {
                    return Err(refused(backend, &e));
                }
            }
            if &next[..] == b"0" {
                break;
            }
            cursor = next;
        }
    }
    Ok(())
}

async fn ask(
    backend: &Backend,
    origin: Origin,
    db: u32,
    args: &[Bytes],
) -> Result<Reply, BackendError> {
    match backend
        .submit(Job::command(origin, args, db, false), None)
        .await
    {
        Ok(result) => result.map(Reply::parsed),
        Err(_) => Err(BackendError::ConnectionLost {
            backend: backend.id.clone(),
            reason: "proxy is shutting down".into(),
        }),
    }
}

fn odd(backend: &Backend) -> BackendError {
    BackendError::Unavailable {
        backend: backend.id.clone(),
        reason: "unexpected reply to SCAN".into(),
    }
}

fn refused(backend: &Backend, error: &[u8]) -> BackendError {
    BackendError::Unavailable {
        backend: backend.id.clone(),
        reason: String::from_utf8_lossy(error).into_owned(),
    }
}
