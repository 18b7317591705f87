//! MULTI / EXEC / DISCARD as Redis runs them, over one backend: commands
//! after MULTI are checked and answered `+QUEUED` here (an unknown command,
//! a wrong arity, a refused key or a key on another backend than the first
//! one answers its error, and EXEC then answers EXECABORT); EXEC sends
//! `MULTI`, the queued commands and `EXEC` as one batch, written back to
//! back on one backend connection, so the backend runs them as one
//! transaction, and the client gets EXEC's reply. WATCH holds a connection
//! of the watched keys' backend for the client (`Backend::hold`): the WATCH
//! and later the transaction go on it, so the backend sees both on one
//! connection and aborts EXEC when a watched key changed; EXEC, DISCARD,
//! UNWATCH and RESET let it go.

use crate::backend::{BackendError, Held};
use crate::client::*;
use crate::migration::SettleError;

/// Redis's reply to EXEC after a queuing error.
const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";

/// A transaction being queued.
#[derive(Debug, Default)]
pub(in crate::client) struct Multi {
    /// The queued commands, RESP-encoded, back to back.
    payload: BytesMut,
    count: usize,
    /// The backend every key so far lives on.
    backend: Option<usize>,
    /// Keys a migration may still hold elsewhere, settled before EXEC.
    keys: Vec<Bytes>,
    /// A queuing error happened: EXEC answers EXECABORT.
    aborted: bool,
}

/// A WATCH in force: the backend of its keys and the connection it is on.
#[derive(Debug)]
pub(in crate::client) struct Watching {
    backend: usize,
    held: Held,
}

impl Multi {
    /// A transaction after WATCH: its keys must be on the watched backend.
    pub(in crate::client) fn after_watch(watching: Option<&Watching>) -> Multi {
        Multi {
            backend: watching.map(|w| w.backend),
            ..Multi::default()
        }
    }

    /// Notes an error answered to a queued command.
    pub(in crate::client) fn abort(&mut self) {
        self.aborted = true;
    }
}

/// What a command gets while a transaction is being queued: `+QUEUED`, or
/// the error that aborts the transaction.
pub(in crate::client) fn queue(
    topo: &Topology,
    multi: &mut Multi,
    spec: &Spec,
    request: &Request,
    policy: &Policy<'_>,
) -> Reply {
    let refuse = |multi: &mut Multi, reply: Reply| {
        multi.abort();
        reply
    };
    let backend = match spec.route {
        // Run by the backend inside the transaction, answering there.
        Route::Local if matches!(spec.cmd, Cmd::Ping | Cmd::Echo | Cmd::Unwatch) => None,
        Route::Key | Route::Keys(_) | Route::KeyValues | Route::Script => {
            let planned = plan(spec, request, policy, |key| topo.route(key), |_| false);
            match planned {
                Plan::Forward { backend, .. } => Some(backend),
                Plan::Refused => return refuse(multi, Reply::error(NOPERM_KEY)),
                Plan::Answer(reply) => return refuse(multi, reply),
                _ => return refuse(multi, Reply::error(CROSSSLOT)),
            }
        }
        _ => {
            return refuse(
                multi,
                Reply::error(format!(
                    "ERR session-proxy does not run {} inside MULTI",
                    spec.name.to_uppercase()
                )),
            )
        }
    };
    if let Some(backend) = backend {
        match multi.backend {
            Some(first) if first != backend => return refuse(multi, Reply::error(CROSSSLOT)),
            _ => multi.backend = Some(backend),
        }
        if let Some(migration) = topo.active_migration() {
            multi
                .keys
                .extend(moving_keys(migration, topo, spec, request));
        }
    }
    let limits = &topo.config.limits;
    let raw_len = request.raw().map_or(0, |r| r.len());
    if multi.count + 1 > limits.max_pipeline
        || multi.payload.len() + raw_len > limits.max_request_bytes
    {
        return refuse(
            multi,
            Reply::error(format!(
                "ERR transaction too large for session-proxy: at most {} commands and {} bytes ([limits] max_pipeline, max_request_bytes)",
                limits.max_pipeline, limits.max_request_bytes
            )),
        );
    }
    match request.raw() {
        Some(raw) => multi.payload.extend_from_slice(raw),
        None => crate::protocol::encode_command(&request.args(), &mut multi.payload),
    }
    multi.count += 1;
    Reply::status("QUEUED")
}

/// EXEC: EXECABORT after a queuing error, else the transaction on its
/// backend (keys a migration may hold elsewhere settled first); the slot is
/// a barrier, so later commands wait for it.
pub(in crate::client) fn exec(
    topo: &Arc<Topology>,
    state: &mut State,
    multi: Multi,
    now: Instant,
) -> Slot {
    // EXEC ends a WATCH whatever happens.
    let watching = state.watching.take();
    if multi.aborted {
        return Slot::ready(state.proto, Reply::error(EXECABORT));
    }
    let index = multi.backend.unwrap_or(0);
    let mut payload = BytesMut::with_capacity(multi.payload.len() + 32);
    payload.extend_from_slice(b"*1\r\n$5\r\nMULTI\r\n");
    payload.extend_from_slice(&multi.payload);
    payload.extend_from_slice(b"*1\r\n$4\r\nEXEC\r\n");
    let payload = payload.freeze();
    let count = multi.count + 2;
    let (origin, db) = (state.origin(), state.db);
    let (tx, rx) = oneshot::channel();
    let task_topo = topo.clone();
    let keys = multi.keys;
    tokio::spawn(async move {
        let topo = task_topo;
        let backend = &topo.backends[index];
        if let Some(migration) = topo.active_migration() {
            for key in &keys {
                let owner = &topo.backends[topo.route(key)];
                match migration.settle(origin, db, key, owner, true).await {
                    Ok(_) | Err(SettleError::OldDown(_)) => {}
                    Err(error) => {
                        let _ = tx.send(Err(error.into_backend()));
                        return;
                    }
                }
            }
        }
        let replies = match &watching {
            Some(w) => backend.send_batch_held(&w.held, origin, payload, count, db),
            None => backend.send_batch(origin, payload, count, db),
        }
        .await;
        drop(watching);
        let result = match replies {
            Ok(Ok(mut replies)) => replies.pop().ok_or_else(|| lost(backend)),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(lost(backend)),
        };
        let _ = tx.send(result);
    });
    let mut slot = Slot::waiting(
        topo,
        state.proto,
        Pending::One(rx),
        topo.backends[index].id.clone(),
        now,
    );
    slot.barrier = true;
    slot
}

/// WATCH outside a transaction: its keys must live on one backend (the
/// one of an earlier WATCH too); the command goes on a connection held for
/// this client.
pub(in crate::client) fn watch(
    topo: &Topology,
    state: &mut State,
    request: &Request,
    policy: &Policy<'_>,
    now: Instant,
) -> Slot {
    let proto = state.proto;
    let filter = policy.filter();
    let mut backend = state.watching.as_ref().map(|w| w.backend);
    for key in request.args().iter().skip(1) {
        if !filter.allows(key) {
            return Slot::ready(proto, Reply::error(NOPERM_KEY));
        }
        let owner = topo.route(key);
        match backend {
            Some(b) if b != owner => return Slot::ready(proto, Reply::error(CROSSSLOT)),
            _ => backend = Some(owner),
        }
    }
    let index = backend.unwrap_or(0);
    let target = &topo.backends[index];
    if state.watching.is_none() {
        let Some(held) = target.hold() else {
            return Slot::ready(
                proto,
                Reply::error(format!(
                    "ERR backend '{}' has [pool] max_held_connections held already",
                    target.id
                )),
            );
        };
        state.watching = Some(Watching {
            backend: index,
            held,
        });
    }
    let Some(watching) = state.watching.as_ref() else {
        return Slot::ready(proto, Reply::error("ERR internal routing error"));
    };
    let payload = match request.raw() {
        Some(raw) => raw.clone(),
        None => {
            let mut buf = BytesMut::new();
            crate::protocol::encode_command(&request.args(), &mut buf);
            buf.freeze()
        }
    };
    let rx = target.send_held(&watching.held, state.origin(), payload, state.db);
    Slot::waiting(topo, proto, Pending::One(rx), target.id.clone(), now)
}

fn lost(backend: &crate::backend::Backend) -> BackendError {
    BackendError::ConnectionLost {
        backend: backend.id.clone(),
        reason: "proxy is shutting down".into(),
    }
}
