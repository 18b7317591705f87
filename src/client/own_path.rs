//! The commands with a path of their own ([`Own`]): COMMAND DOCS from a
//! backend, CONFIG GET/SET/RESETSTAT of the backends' parameters, CLIENT
//! UNBLOCK, INFO with the backends' script memory.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::backend::Job;
use crate::client::commands::auth::is_restricted;
use crate::client::commands::client::client_unblock;
use crate::client::commands::info::{info_text, ScriptMemory};
use crate::client::ctx::Ctx;
use crate::client::decide::Own;
use crate::client::forward::every_backend;
use crate::client::merge::MergeHow;
use crate::client::slot::{Merging, Pending, Slot};
use crate::client::State;
use crate::protocol::{lookup, Reply, Request};
use crate::shared::Topology;

/// Carries out a command with a path of its own, after what the client
/// gathered before it.
pub(in crate::client) fn carry_out(cx: &mut Ctx<'_>, own: Own) -> Slot {
    cx.flush();
    let Ctx {
        shared,
        topo,
        request,
        user,
        now,
        ..
    } = *cx;
    match own {
        Own::CommandDocs => command_docs(topo, cx.state, request, now),
        Own::ClientUnblock => client_unblock(shared, topo, cx.state, &request.args(), now),
        Own::InfoWithScripts => {
            let text = info_text(
                shared,
                topo,
                &request.args()[1..],
                is_restricted(topo, user),
            );
            info_with_scripts(topo, cx.state, text, now)
        }
        Own::ConfigGet => {
            let backend = &topo.backends[0];
            let rx = backend.submit(
                Job::command(cx.state.origin(), &request.args(), cx.state.db, false),
                None,
            );
            let id = backend.id.clone();
            Slot::waiting(topo, cx.state.proto, Pending::One(rx), id, now)
        }
        Own::ConfigSet => every_backend(cx, request.args(), MergeHow::AllOk),
        Own::ConfigResetStat => {
            shared.error_codes.reset();
            every_backend(cx, request.args(), MergeHow::AllOk)
        }
    }
}

/// COMMAND DOCS: a backend's documentation of the commands the proxy has
/// (those named, or all), so redis-cli shows its hints.
fn command_docs(topo: &Topology, state: &State, request: &Request, now: Instant) -> Slot {
    let args = request.args();
    let named: Vec<Bytes> = args[2..]
        .iter()
        .filter(|name| lookup(name).is_some())
        .cloned()
        .collect();
    if args.len() > 2 && named.is_empty() {
        return Slot::ready(state.proto, Reply::Map(Vec::new()));
    }
    let mut ask = vec![Bytes::from_static(b"COMMAND"), Bytes::from_static(b"DOCS")];
    ask.extend(named);
    let backend = &topo.backends[0];
    let rx = backend.submit(Job::command(state.origin(), &ask, state.db, false), None);
    let merging = Pending::Merge(Box::new(Merging {
        parts: vec![(Some(rx), None)],
        how: MergeHow::Docs,
    }));
    Slot::waiting(topo, state.proto, merging, backend.id.clone(), now)
}

/// INFO with its memory section: the proxy's `text`, its script fields
/// (`used_memory_lua`, `number_of_cached_scripts`...) from every backend's
/// `INFO memory`, as scripts live on the backends. A backend that does not
/// answer counts nothing.
fn info_with_scripts(topo: &Arc<Topology>, state: &State, text: String, now: Instant) -> Slot {
    let origin = state.origin().resp2();
    let ask: Vec<Bytes> = vec![Bytes::from_static(b"INFO"), Bytes::from_static(b"memory")];
    let replies: Vec<_> = topo
        .servers()
        .iter()
        .map(|server| server.submit(Job::command(origin, &ask, state.db, false), None))
        .collect();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut memory = ScriptMemory::default();
        for reply in replies {
            if let Ok(Ok(reply)) = reply.await {
                if let Reply::Bulk(text) | Reply::Verbatim(text) = reply.parsed() {
                    memory.add(&text);
                }
            }
        }
        let _ = tx.send(Ok(Reply::Verbatim(Bytes::from(memory.fill(&text)))));
    });
    Slot::waiting(topo, state.proto, Pending::One(rx), Arc::from("*"), now)
}
