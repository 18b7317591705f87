//! Sending a routed request to the backends: to the one that has every
//! key (gathered with the client's other commands for it), split into one
//! sub-command per backend, to every backend, or (SCRIPT KILL) over
//! connections made for it.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::backend::Job;
use crate::client::batcher::Batcher;
use crate::client::ctx::Ctx;
use crate::client::merge::MergeHow;
use crate::client::slot::{Merging, Pending, Slot};
use crate::client::State;
use crate::protocol::RedisError;
use crate::protocol::{Request, Route, Spec};
use crate::shared::Topology;

/// One backend has every key: forward the request as it came, gathered
/// with the client's other commands for that backend; on its own (an
/// inline request, or a write followed by WAIT) after what is gathered.
#[inline]
pub(in crate::client) fn forward(cx: &mut Ctx<'_>, index: usize, wait: bool) -> Slot {
    let Ctx {
        topo,
        spec,
        request,
        now,
        ..
    } = *cx;
    let backend = &topo.backends[index];
    let raw = request.raw();
    let read = reads_only(spec);
    if let Some(raw) = raw.filter(|_| !wait) {
        let (seq, index) = cx.batcher.add(topo, cx.state, index, raw, read);
        let pending = Pending::Batched { seq, index };
        return Slot::waiting(topo, cx.state.proto, pending, backend.id.clone(), now);
    }
    cx.flush();
    let (job, rx) = match raw {
        Some(raw) => Job::one(cx.state.origin(), raw.clone(), cx.state.db, spec.write),
        None => Job::command(cx.state.origin(), &request.args(), cx.state.db, spec.write),
    };
    let rx = backend.submit((job.reading(read), rx), None);
    Slot::waiting(
        topo,
        cx.state.proto,
        Pending::One(rx),
        backend.id.clone(),
        now,
    )
}

/// A command that only reads a key's value: sent even while a failover
/// holds writes. Scripts, commands with subcommands (whose flags differ) and
/// those about channels or every backend count as writes.
fn reads_only(spec: &Spec) -> bool {
    !spec.write
        && spec.subs.is_empty()
        && matches!(spec.route, Route::Key | Route::Keys(_) | Route::Specs)
}

/// One sub-command per backend, after what is gathered, their replies
/// merged as `how` says.
pub(in crate::client) fn split(
    topo: &Topology,
    state: &State,
    batcher: &mut Batcher,
    spec: &Spec,
    parts: Vec<(usize, Vec<Bytes>)>,
    how: MergeHow,
    now: Instant,
) -> Slot {
    batcher.flush(topo, state.origin());
    // A part's index is a backend's, or for SCAN a server's of
    // `Topology::servers` (a cluster's masters, a migration's old
    // servers).
    let targets: Vec<crate::backend::Backend> = parts
        .iter()
        .map(|(index, _)| {
            let target = if spec.route == Route::Scan {
                topo.scan_target(*index)
            } else {
                topo.backends.get(*index).cloned()
            };
            target.unwrap_or_else(|| topo.backends[0].clone())
        })
        .collect();
    let receivers = parts
        .iter()
        .zip(&targets)
        .map(|((_, sub), target)| {
            let rx = target.submit(
                Job::command(state.origin(), sub, state.db, spec.write),
                None,
            );
            (Some(rx), None)
        })
        .collect();
    let ids: Vec<&str> = targets.iter().map(|t| &*t.id).collect();
    let merging = Merging {
        parts: receivers,
        how,
    };
    let pending = Pending::Merge(Box::new(merging));
    Slot::waiting(topo, state.proto, pending, Arc::from(ids.join("', '")), now)
}

/// SCRIPT KILL or FUNCTION KILL on every backend, each over a connection
/// made for it: the script runs on one of the pool's, which answers
/// nothing until the script ends. `+OK` from the backend whose script
/// was killed, else the first backend's error (`-NOTBUSY`).
pub(in crate::client) fn kill(topo: &Arc<Topology>, state: &State, request: &Request) -> Slot {
    let servers = topo.servers();
    let args = request.args();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut answer = None;
        for server in servers {
            let reply = server.ask_apart(args.clone()).await.ok();
            match reply {
                Some(reply) if !reply.is_error() => answer = Some(reply),
                Some(error) if answer.is_none() => answer = Some(error),
                _ => {}
            }
        }
        let _ = tx.send(Ok(answer.unwrap_or_else(|| RedisError::NotBusy.reply())));
    });
    Slot::waiting(
        topo,
        state.proto,
        Pending::One(rx),
        Arc::from("*"),
        Instant::now(),
    )
}

/// Sends `args` to every backend, after what is gathered; the replies
/// merged by `how`.
pub(in crate::client) fn every_backend(cx: &mut Ctx<'_>, args: Vec<Bytes>, how: MergeHow) -> Slot {
    cx.flush();
    let Ctx {
        topo, spec, now, ..
    } = *cx;
    let state = &*cx.state;
    // KEYS also asks the old servers of a migration: keys not moved yet.
    let old = match how {
        MergeHow::Concat(_) => topo.old_servers(),
        _ => Vec::new(),
    };
    // A cluster backend is asked on each of its masters.
    let parts = topo
        .servers()
        .iter()
        .chain(old)
        .map(|backend| {
            let job = Job::command(state.origin(), &args, state.db, spec.write);
            (Some(backend.submit(job, None)), None)
        })
        .collect();
    let merging = Pending::Merge(Box::new(Merging { parts, how }));
    Slot::waiting(topo, state.proto, merging, Arc::from("*"), now)
}
