//! From a decoded request to its slot: admitted, decided once
//! (`decide.rs`), and the decision carried out here: commands answered
//! here, transaction steps, subscriptions, plans followed (sent by
//! `forward.rs`: to one backend, split over several, or to all), and
//! Redis's errors for what is refused.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::client::admit::{admit, auth_refused, wrong_password};
use crate::client::batcher::Batcher;
use crate::client::commands;
use crate::client::ctx::Ctx;
use crate::client::decide::{decide, Decision, Step};
use crate::client::forward::{every_backend, forward, kill, split};
use crate::client::leased::blocking;
use crate::client::migrate::migrating;
use crate::client::own_path;
use crate::client::plan::Plan;
use crate::client::pubsub::subscription;
use crate::client::rename::rename;
use crate::client::slot::{Kept, Slot};
use crate::client::sweep::sweep;
use crate::client::tracking;
use crate::client::transaction::{exec, queue, watch, Multi};
use crate::client::State;
use crate::protocol::command::{lookup_index, TABLE};
use crate::protocol::RedisError;
use crate::protocol::{Cmd, Reply, Request, Spec};
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
    if state.tracking.on {
        if let Some(spec) = TABLE.get(command) {
            slot.arms_noloop = tracking::after(shared, topo, state, spec, &request);
        }
    }
    // CLIENT REPLY OFF or SKIP: the reply is not written.
    slot.silent = state.replies_off || state.skip_replies > 0;
    state.skip_replies = state.skip_replies.saturating_sub(1);
    slot.command = command;
    slot.started = Some(started);
    slot.request = Kept::new(request);
    slot.user = state.user.clone();
    slot
}

/// Runs the request whose command is `TABLE[command]` (out of range:
/// unknown): admitted (known, of the right arity, authenticated, allowed),
/// then decided once ([`decide`]) and carried out.
#[inline]
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
    let mut cx = Ctx {
        shared,
        topo,
        state,
        batcher,
        spec,
        request,
        user,
        now,
    };
    let decision = decide(&cx);
    carry_out(&mut cx, decision)
}

/// The one place a decision is acted on.
#[inline]
fn carry_out(cx: &mut Ctx<'_>, decision: Decision) -> Slot {
    match decision {
        Decision::Reply(reply) => Slot::ready(cx.state.proto, reply),
        Decision::Transaction(step) => transaction_step(cx, step),
        Decision::Subscription(kind, subscribing) => {
            cx.flush();
            subscription(cx, kind, subscribing)
        }
        Decision::Own(own) => own_path::carry_out(cx, own),
        Decision::Local => {
            // Gathered commands go first: a local command may change the
            // connection's state (SELECT, AUTH) or answer about it.
            cx.flush();
            let slot = answer_here(cx.shared, cx.topo, cx.state, cx.spec, cx.request);
            if cx.spec.cmd == Cmd::Client {
                return tracking::when_ready(
                    cx.shared, cx.topo, cx.state, cx.request, slot, cx.now,
                );
            }
            slot
        }
        Decision::Plan(plan) => follow(cx, plan),
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

/// A step of a transaction (see `transaction.rs`).
fn transaction_step(cx: &mut Ctx<'_>, step: Step) -> Slot {
    let reply = match step {
        Step::Multi => {
            cx.state.multi = Some(Multi::after_watch(cx.state.watching.as_ref()));
            Reply::ok()
        }
        Step::Exec => {
            let Some(multi) = cx.state.multi.take() else {
                return Slot::ready(cx.state.proto, RedisError::Routing.reply());
            };
            cx.flush();
            return exec(cx.topo, cx.state, multi, cx.now);
        }
        Step::Discard => {
            cx.state.multi = None;
            if let Some(watching) = cx.state.watching.take() {
                watching.release(cx.state.origin(), cx.state.db);
            }
            Reply::ok()
        }
        Step::Watch => {
            cx.flush();
            let policy = cx.policy();
            return watch(cx.topo, cx.state, cx.request, &policy, cx.now);
        }
        Step::Unwatch => {
            if let Some(watching) = cx.state.watching.take() {
                watching.release(cx.state.origin(), cx.state.db);
            }
            Reply::ok()
        }
        Step::Queue => {
            let policy = cx.policy();
            let watching = cx.state.watching.is_some();
            let Some(multi) = cx.state.multi.as_mut() else {
                return Slot::ready(cx.state.proto, RedisError::Routing.reply());
            };
            queue(cx.topo, multi, watching, cx.spec, cx.request, &policy)
        }
    };
    Slot::ready(cx.state.proto, reply)
}

/// Carries a plan out on the shared connections.
#[inline]
fn follow(cx: &mut Ctx<'_>, planned: Plan) -> Slot {
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
            sweep(topo, cx.state, every_db, *filter)
        }
        Plan::Forward { backend, wait } => forward(cx, backend, wait),
        Plan::Split { parts, how } => split(topo, cx.state, cx.batcher, spec, parts, *how, now),
        Plan::Every { how } => every_backend(cx, request.args(), *how),
        Plan::EveryWith { args, how } => every_backend(cx, args, *how),
    }
}
