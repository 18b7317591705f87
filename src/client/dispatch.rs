//! From a decoded request to its slot: commands answered here, commands
//! routed to a backend (one, split over several, or sent to all), and
//! Redis's errors for what is refused.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::backend::Job;
use crate::client::admit::{admit, auth_refused, wrong_password};
use crate::client::batcher::Batcher;
use crate::client::commands;
use crate::client::commands::auth::is_restricted;
use crate::client::commands::client::client_unblock;
use crate::client::commands::info::{info_text, wants_memory, ScriptMemory};
use crate::client::ctx::Ctx;
use crate::client::errors::{arity_error, noperm_command};
use crate::client::leased::blocking;
use crate::client::merge::MergeHow;
use crate::client::migrate::{migrating, moving_keys};
use crate::client::plan::{plan, Plan, Policy};
use crate::client::pubsub::subscription;
use crate::client::rename::rename;
use crate::client::slot::{Kept, Merging, Pending, Slot};
use crate::client::sweep::sweep;
use crate::client::transaction::{exec, queue, watch, Multi};
use crate::client::State;
use crate::config::User;
use crate::migration::Migration;
use crate::protocol::command::{blocks, lookup_index, TABLE};
use crate::protocol::RedisError;
use crate::protocol::{lookup, Cmd, Reply, Request, Route, Spec};
use crate::shared::{Shared, Topology};

/// Runs one request and returns its slot.
pub(in crate::client) fn dispatch(
    shared: &Shared,
    topo: &Arc<Topology>,
    state: &mut State,
    batcher: &mut Batcher,
    request: Request,
    started: Instant,
) -> Slot {
    let command = request.arg(0).and_then(lookup_index).unwrap_or(TABLE.len());
    let mut slot = execute(shared, topo, state, batcher, command, &request, started);
    // CLIENT REPLY OFF or SKIP: the reply is not written.
    slot.silent = state.replies_off || state.skip_replies > 0;
    state.skip_replies = state.skip_replies.saturating_sub(1);
    slot.command = command;
    slot.started = Some(started);
    slot.request = Kept::new(request);
    slot.user = state.user.clone();
    slot
}

/// Runs the request whose command is `TABLE[command]` (out of range: unknown):
/// admitted (known, of the right arity, authenticated, allowed), then taken
/// by a step of a transaction or subscription or a command with its own
/// path, else answered here or routed.
pub(in crate::client) fn execute(
    shared: &Shared,
    topo: &Arc<Topology>,
    state: &mut State,
    batcher: &mut Batcher,
    command: usize,
    request: &Request,
    now: Instant,
) -> Slot {
    shared.stats.commands.add(1);
    state.last_command_at = now;
    state.card.noted(command, now);
    let (spec, user) = match admit(shared, topo, state, command, request) {
        Ok(admitted) => admitted,
        Err(refusal) => return Slot::ready(state.proto, refusal),
    };
    let user_prefixes = user.map_or(&[][..], |u| &u.prefixes[..]);
    if let Some(slot) = transaction_step(topo, state, batcher, spec, request, user_prefixes, now) {
        return slot;
    }
    if extra_arity(spec, request) {
        return Slot::ready(state.proto, arity_error(spec.name));
    }
    if let Some(slot) = subscription(topo, state, batcher, spec, request, now) {
        return slot;
    }
    let mut cx = Ctx {
        shared,
        topo,
        state,
        batcher,
        spec,
        request,
        now,
    };
    if let Some(slot) = own_path(&mut cx, user) {
        return slot;
    }
    match spec.route {
        Route::Local => {
            // Gathered commands go first: a local command may change the
            // connection's state (SELECT, AUTH) or answer about it.
            cx.flush();
            answer_here(shared, topo, cx.state, spec, request)
        }
        _ => routed(&mut cx, user_prefixes),
    }
}

/// MSET needs pairs and PING at most one message; Redis checks both inside
/// the command, so after authentication (and after MULTI queues it).
fn extra_arity(spec: &Spec, request: &Request) -> bool {
    match spec.cmd {
        Cmd::MSet => request.len().is_multiple_of(2),
        Cmd::Ping => request.len() > 2,
        // Checked before its keys are, as Redis does: an odd MSETNX over
        // several backends is a wrong arity, not a CROSSSLOT.
        Cmd::Keyed if spec.name == "msetnx" => request.len().is_multiple_of(2),
        _ => false,
    }
}

/// The commands with a path of their own, after what is gathered: COMMAND
/// DOCS, CONFIG as the backends answer it, CLIENT UNBLOCK, INFO with the
/// backends' script memory.
fn own_path(cx: &mut Ctx<'_>, user: Option<&User>) -> Option<Slot> {
    let Ctx {
        shared,
        topo,
        spec,
        request,
        now,
        ..
    } = *cx;
    let sub = |name: &[u8]| request.arg(1).is_some_and(|s| s.eq_ignore_ascii_case(name));
    if spec.cmd == Cmd::Command && sub(b"DOCS") {
        cx.flush();
        return Some(command_docs(topo, cx.state, request, now));
    }
    if spec.cmd == Cmd::Config {
        if let Some(slot) = backend_config(cx, user) {
            return Some(slot);
        }
    }
    if spec.cmd == Cmd::Client && sub(b"UNBLOCK") {
        cx.flush();
        return Some(client_unblock(shared, topo, cx.state, &request.args(), now));
    }
    if spec.cmd == Cmd::Info && wants_memory(&request.args()[1..]) {
        cx.flush();
        return Some(info_with_scripts(
            shared, topo, cx.state, request, user, now,
        ));
    }
    None
}

/// A command the proxy answers itself; AUTH and HELLO count wrong
/// passwords, QUIT closes after its reply.
fn answer_here(
    shared: &Shared,
    topo: &Topology,
    state: &mut State,
    spec: &Spec,
    request: &Request,
) -> Slot {
    let authenticating = matches!(spec.cmd, Cmd::Auth | Cmd::Hello);
    if authenticating {
        if let Some(slot) = auth_refused(shared, topo, state) {
            return slot;
        }
    }
    let reply = commands::answer(shared, topo, state, spec, &request.args());
    if authenticating && matches!(&reply, Reply::Error(e) if e.starts_with(b"WRONGPASS")) {
        return wrong_password(shared, topo, state, reply);
    }
    state.publish();
    let close_after = spec.cmd == Cmd::Quit;
    if close_after {
        state.closing = true;
    }
    // HELLO answers in the protocol it switches to.
    let mut slot = Slot::ready(state.proto, reply);
    slot.close_after = close_after;
    slot
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

/// What the config and the user allow, for [`plan`].
fn policy<'a>(topo: &'a Topology, user_prefixes: &'a [String]) -> Policy<'a> {
    let keys = &topo.config.keys;
    Policy {
        prefixes: &keys.prefixes,
        user_prefixes,
        scripts: &keys.scripts,
        backends: topo.backends.len(),
        allow_flush: keys.allow_flush,
        split_transactions: keys.split_transactions,
        clusters: &topo.clusters,
        channels: None,
        max_scan_count: topo.config.limits.max_scan_count,
        hash_tag: keys.hash_tag(),
    }
}

/// MULTI, EXEC, DISCARD, WATCH, UNWATCH, and any command while a
/// transaction is queued (see `transaction.rs`); `None` for the rest.
fn transaction_step(
    topo: &Arc<Topology>,
    state: &mut State,
    batcher: &mut Batcher,
    spec: &Spec,
    request: &Request,
    user_prefixes: &[String],
    now: Instant,
) -> Option<Slot> {
    let proto = state.proto;
    let reply = match (spec.cmd, state.multi.is_some()) {
        (Cmd::Multi, true) => RedisError::NestedMulti.reply(),
        (Cmd::Multi, false) => {
            state.multi = Some(Multi::after_watch(state.watching.as_ref()));
            Reply::ok()
        }
        (Cmd::Exec | Cmd::Discard, false) => {
            RedisError::WithoutMulti(spec.name.to_uppercase()).reply()
        }
        (Cmd::Exec, true) => {
            let multi = state.multi.take()?;
            batcher.flush(topo, state.origin());
            return Some(exec(topo, state, multi, now));
        }
        (Cmd::Discard, true) => {
            state.multi = None;
            state.watching = None;
            Reply::ok()
        }
        (Cmd::Watch, true) => RedisError::WatchInMulti.reply(),
        (Cmd::Watch, false) => {
            batcher.flush(topo, state.origin());
            let policy = policy(topo, user_prefixes);
            return Some(watch(topo, state, request, &policy, now));
        }
        (Cmd::Unwatch, false) => {
            state.watching = None;
            Reply::ok()
        }
        // QUIT and RESET end the transaction as they do on Redis.
        (Cmd::Quit | Cmd::Reset, _) => return None,
        (_, true) => {
            let policy = policy(topo, user_prefixes);
            let watching = state.watching.is_some();
            let multi = state.multi.as_mut()?;
            queue(topo, multi, watching, spec, request, &policy)
        }
        (_, false) => return None,
    };
    Some(Slot::ready(proto, reply))
}

/// What a routed request becomes, decided before anything is sent: its
/// plan, carried out on the shared connections; or, for a blocking command,
/// a connection leased to the client; or the plan after the keys a
/// migration still holds elsewhere are settled.
enum Decision {
    Plan(Plan),
    /// A blocking command, on a connection leased to the client, once the
    /// keys a migration may still hold elsewhere (`moving`) are settled.
    Lease {
        backend: usize,
        moving: Vec<Bytes>,
    },
    /// Keys a migration still holds elsewhere: settled first, then the
    /// plan.
    Settle {
        migration: Arc<Migration>,
        plan: Plan,
        keys: Vec<Bytes>,
    },
}

/// Sends a keyed command to the backend(s) owning its keys, as [`plan`]
/// decides; a key outside `[keys] prefixes` or the user's own `prefixes` is
/// refused first. A key a migration may still hold elsewhere is brought to
/// its owner first ([`migrating`]).
pub(in crate::client) fn routed(cx: &mut Ctx<'_>, user_prefixes: &[String]) -> Slot {
    match decide(cx, user_prefixes) {
        Decision::Plan(plan) => carry_out(cx, plan),
        Decision::Lease { backend, moving } => {
            let blocked = &cx.shared.stats.blocked_clients;
            blocking(cx, backend, moving, blocked)
        }
        Decision::Settle {
            migration,
            plan,
            keys,
        } => migrating(cx, &migration, plan, keys),
    }
}

/// The decision for a routed request (see [`Decision`]).
fn decide(cx: &Ctx<'_>, user_prefixes: &[String]) -> Decision {
    let Ctx {
        topo,
        spec,
        request,
        ..
    } = *cx;
    let planned = plan_request(topo, cx.state, spec, request, user_prefixes);
    if let Plan::Forward { backend, .. } = planned {
        if blocks(spec, request) {
            let moving = topo
                .active_migration()
                .map(|m| moving_keys(m, topo, spec, request))
                .unwrap_or_default();
            return Decision::Lease { backend, moving };
        }
    }
    if let Some(migration) = topo.active_migration() {
        if matches!(planned, Plan::Forward { .. } | Plan::Split { .. }) {
            let keys = moving_keys(migration, topo, spec, request);
            if !keys.is_empty() {
                let migration = migration.clone();
                return Decision::Settle {
                    migration,
                    plan: planned,
                    keys,
                };
            }
        }
    }
    Decision::Plan(planned)
}

/// Carries a plan out.
fn carry_out(cx: &mut Ctx<'_>, planned: Plan) -> Slot {
    let Ctx {
        shared,
        topo,
        spec,
        request,
        now,
        ..
    } = *cx;
    let proto = cx.state.proto;
    match planned {
        Plan::Refused => {
            shared.stats.refused_keys.fetch_add(1, Ordering::Relaxed);
            Slot::ready(proto, RedisError::NoPermKey.reply())
        }
        Plan::Answer(reply) => Slot::ready(proto, reply),
        Plan::Rename { from, to } => {
            let nx = spec.cmd == Cmd::RenameNx;
            rename(cx, nx, from, to)
        }
        Plan::Kill => {
            cx.flush();
            kill(topo, cx.state, request)
        }
        Plan::Sweep { every_db, filter } => {
            cx.flush();
            sweep(topo, cx.state, every_db, filter)
        }
        Plan::Forward { backend, wait } => forward(cx, backend, wait),
        Plan::Split { parts, how } => split(topo, cx.state, cx.batcher, spec, parts, how, now),
        Plan::Every { how } => {
            let args = request.args();
            every_backend(topo, cx.state, cx.batcher, args, spec.write, how, now)
        }
        Plan::EveryWith { args, how } => {
            every_backend(topo, cx.state, cx.batcher, args, spec.write, how, now)
        }
    }
}

/// The plan for a request under the client's key prefixes (and channel
/// policy, for PUBSUB).
fn plan_request(
    topo: &Topology,
    state: &State,
    spec: &Spec,
    request: &Request,
    user_prefixes: &[String],
) -> Plan {
    let mut policy = policy(topo, user_prefixes);
    if spec.cmd == Cmd::PubSub {
        let user = state.user.as_ref().and_then(|n| topo.config.user(n));
        policy.channels = Some(topo.config.channel_policy(user));
    }
    if spec.route == Route::Scan {
        // SCAN's cursor goes through a cluster backend's masters, and on
        // to a migration's old servers after the backends; only SCAN pays
        // for looking them up.
        policy.backends = topo.scan_servers() + topo.old_servers().len();
    }
    plan(
        spec,
        request,
        &policy,
        |key| topo.route(key),
        |backend| topo.backends[backend].waits_for_replicas(),
    )
}

/// One backend has every key: forward the request as it came, gathered
/// with the client's other commands for that backend; on its own (an
/// inline request, or a write followed by WAIT) after what is gathered.
fn forward(cx: &mut Ctx<'_>, index: usize, wait: bool) -> Slot {
    let Ctx {
        topo,
        spec,
        request,
        now,
        ..
    } = *cx;
    let backend = &topo.backends[index];
    let raw = request.raw();
    if let Some(raw) = raw.filter(|_| !wait) {
        let (seq, index) = cx.batcher.add(topo, cx.state, index, raw);
        let pending = Pending::Batched { seq, index };
        return Slot::waiting(topo, cx.state.proto, pending, backend.id.clone(), now);
    }
    cx.flush();
    let rx = match raw {
        Some(raw) => backend.submit(
            Job::one(cx.state.origin(), raw.clone(), cx.state.db, spec.write),
            None,
        ),
        None => backend.submit(
            Job::command(cx.state.origin(), &request.args(), cx.state.db, spec.write),
            None,
        ),
    };
    Slot::waiting(
        topo,
        cx.state.proto,
        Pending::One(rx),
        backend.id.clone(),
        now,
    )
}

/// One sub-command per backend, after what is gathered, their replies
/// merged as `how` says.
fn split(
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
fn kill(topo: &Arc<Topology>, state: &State, request: &Request) -> Slot {
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

/// INFO with its memory section: the proxy's text, its script fields
/// (`used_memory_lua`, `number_of_cached_scripts`...) from every backend's
/// `INFO memory`, as scripts live on the backends. A backend that does not
/// answer counts nothing.
fn info_with_scripts(
    shared: &Shared,
    topo: &Arc<Topology>,
    state: &State,
    request: &Request,
    user: Option<&crate::config::User>,
    now: Instant,
) -> Slot {
    let args = request.args();
    let text = info_text(shared, topo, &args[1..], is_restricted(topo, user));
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

/// Sends `request` to every backend; the replies merged by `how`.
fn every_backend(
    topo: &Arc<Topology>,
    state: &State,
    batcher: &mut Batcher,
    args: Vec<Bytes>,
    write: bool,
    how: MergeHow,
    now: Instant,
) -> Slot {
    batcher.flush(topo, state.origin());
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
            let rx = backend.submit(Job::command(state.origin(), &args, state.db, write), None);
            (Some(rx), None)
        })
        .collect();
    let merging = Pending::Merge(Box::new(Merging { parts, how }));
    Slot::waiting(topo, state.proto, merging, Arc::from("*"), now)
}

/// CONFIG GET and SET of the backends' own parameters: those `[keys]
/// config_set` lists, and `notify-keyspace-events` (SET only with `[keys]
/// allow_keyspace_config`). GET reads the first backend; SET runs on every
/// backend (`+OK` once each has, else the first error), for a user without
/// restrictions. Other CONFIG commands are answered by `config_command`.
fn backend_config(cx: &mut Ctx<'_>, user: Option<&crate::config::User>) -> Option<Slot> {
    let Ctx {
        shared,
        topo,
        spec,
        request,
        now,
        ..
    } = *cx;
    let keys = &topo.config.keys;
    let listed = |name: &[u8], setting: bool| {
        keys.config_set
            .iter()
            .any(|p| p.as_bytes().eq_ignore_ascii_case(name))
            || (name.eq_ignore_ascii_case(b"notify-keyspace-events")
                && (!setting || keys.allow_keyspace_config))
    };
    let sub = request.arg(1).unwrap_or_default().to_ascii_uppercase();
    let names = |step: usize| {
        (2..request.len())
            .step_by(step)
            .filter_map(|i| request.arg(i))
    };
    // Allowed to the site by the operator: `[keys] prefixes` do not stop
    // it, a user of its own prefixes or a read-only one does.
    let restricted = user.is_some_and(|u| u.read_only || !u.prefixes.is_empty());
    let refused = || Slot::ready(cx.state.proto, noperm_command(spec.name));
    let to_every = |state: &State, batcher: &mut Batcher| {
        let (args, how) = (request.args(), MergeHow::AllOk);
        every_backend(topo, state, batcher, args, spec.write, how, now)
    };
    match &sub[..] {
        b"GET" if request.len() >= 3 && names(1).all(|n| listed(n, false)) => {
            cx.flush();
            let backend = &topo.backends[0];
            let rx = backend.submit(
                Job::command(cx.state.origin(), &request.args(), cx.state.db, false),
                None,
            );
            let id = backend.id.clone();
            Some(Slot::waiting(
                topo,
                cx.state.proto,
                Pending::One(rx),
                id,
                now,
            ))
        }
        b"SET" if request.len() < 4 || !request.len().is_multiple_of(2) => {
            Some(Slot::ready(cx.state.proto, arity_error("config|set")))
        }
        b"SET" if names(2).all(|n| listed(n, true)) => Some(if restricted {
            refused()
        } else {
            to_every(cx.state, cx.batcher)
        }),
        // The backends' statistics, where the commands ran, when the
        // operator allows clients to change backend parameters at all.
        b"RESETSTAT" if request.len() == 2 && !keys.config_set.is_empty() => {
            if restricted {
                return Some(refused());
            }
            shared.error_codes.reset();
            Some(to_every(cx.state, cx.batcher))
        }
        b"SET" if names(2).any(|n| n.eq_ignore_ascii_case(b"notify-keyspace-events")) => Some(
            Slot::ready(cx.state.proto, RedisError::KeyspaceConfigRefused.reply()),
        ),
        _ => None,
    }
}
