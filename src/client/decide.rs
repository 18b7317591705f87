//! What an admitted request becomes, decided once before anything is sent
//! or changed: a [`Decision`] that `dispatch::carry_out` acts on. Reads
//! the client's state and the topology; sends nothing.

use std::sync::Arc;

use bytes::Bytes;

use crate::client::commands::info::wants_memory;
use crate::client::ctx::Ctx;
use crate::client::errors::{arity_error, noperm_command};
use crate::client::migrate::moving_keys;
use crate::client::plan::{plan, Plan};
use crate::client::pubsub::kind_of;
use crate::client::State;
use crate::config::User;
use crate::migration::Migration;
use crate::protocol::command::blocks;
use crate::protocol::RedisError;
use crate::protocol::{Cmd, Reply, Request, Route, Spec};
use crate::pubsub::Kind;
use crate::shared::Topology;

/// The whole decision for one request.
pub(in crate::client) enum Decision {
    /// Answered as it is, without running: a refusal, or an arity Redis
    /// checks inside the command.
    Reply(Reply),
    /// MULTI, EXEC, DISCARD, WATCH, UNWATCH, or a command queued in a
    /// transaction.
    Transaction(Step),
    /// (P|S)SUBSCRIBE or (P|S)UNSUBSCRIBE: the kind, and whether it
    /// subscribes.
    Subscription(Kind, bool),
    /// A command with a path of its own.
    Own(Own),
    /// A command the proxy answers itself.
    Local,
    /// The plan, carried out on the shared connections.
    Plan(Plan),
    /// A blocking command, on a connection leased to the client, once the
    /// keys a migration may still hold elsewhere (`moving`) are settled.
    Lease { backend: usize, moving: Vec<Bytes> },
    /// Keys a migration still holds elsewhere: settled first, then the
    /// plan.
    Settle {
        migration: Arc<Migration>,
        plan: Plan,
        keys: Vec<Bytes>,
    },
}

/// A step of a transaction (its refusals are [`Decision::Reply`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::client) enum Step {
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
    /// Any other command while a transaction is open.
    Queue,
}

/// The commands with a path of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::client) enum Own {
    /// COMMAND DOCS: a backend's documentation of the proxy's commands.
    CommandDocs,
    /// CLIENT UNBLOCK, of a client blocked on a leased connection.
    ClientUnblock,
    /// INFO with its memory section: the backends' script memory too.
    InfoWithScripts,
    /// CONFIG GET of a backend parameter: the first backend's answer.
    ConfigGet,
    /// CONFIG SET of backend parameters, on every backend.
    ConfigSet,
    /// CONFIG RESETSTAT: the proxy's error counts and every backend's.
    ConfigResetStat,
}

/// The decision for an admitted request: a step of a transaction first
/// (commands queue in one), then Redis's in-command arity checks, a
/// subscription, a command with its own path, one answered here, and
/// otherwise where it is routed.
#[inline]
pub(in crate::client) fn decide(cx: &Ctx<'_>) -> Decision {
    let Ctx { spec, request, .. } = *cx;
    if let Some(decision) = transaction_step(spec, cx.state) {
        return decision;
    }
    if extra_arity(spec, request) {
        return Decision::Reply(arity_error(spec.name));
    }
    if let Some((kind, subscribing)) = kind_of(spec.cmd) {
        return Decision::Subscription(kind, subscribing);
    }
    if let Some(decision) = own_path(cx.topo, spec, request, cx.user) {
        return decision;
    }
    match spec.route {
        Route::Local => Decision::Local,
        _ => routed(cx),
    }
}

/// MULTI, EXEC, DISCARD, WATCH, UNWATCH, and any command while a
/// transaction is open; `None` for the rest. QUIT and RESET end the
/// transaction as they do on Redis.
#[inline]
fn transaction_step(spec: &Spec, state: &State) -> Option<Decision> {
    let step = match (spec.cmd, state.multi.is_some()) {
        (Cmd::Multi, true) => return Some(Decision::Reply(RedisError::NestedMulti.reply())),
        (Cmd::Multi, false) => Step::Multi,
        (Cmd::Exec | Cmd::Discard, false) => {
            let error = RedisError::WithoutMulti(spec.name.to_uppercase());
            return Some(Decision::Reply(error.reply()));
        }
        (Cmd::Exec, true) => Step::Exec,
        (Cmd::Discard, true) => Step::Discard,
        (Cmd::Watch, true) => return Some(Decision::Reply(RedisError::WatchInMulti.reply())),
        (Cmd::Watch, false) => Step::Watch,
        (Cmd::Unwatch, false) => Step::Unwatch,
        (Cmd::Quit | Cmd::Reset, _) => return None,
        (_, true) => Step::Queue,
        (_, false) => return None,
    };
    Some(Decision::Transaction(step))
}

/// MSET needs pairs and PING at most one message; Redis checks both inside
/// the command, so after authentication (and after MULTI queues it).
#[inline]
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

/// The commands with a path of their own: COMMAND DOCS, CONFIG as the
/// backends answer it, CLIENT UNBLOCK, INFO with the backends' script
/// memory.
#[inline]
fn own_path(
    topo: &Topology,
    spec: &Spec,
    request: &Request,
    user: Option<&User>,
) -> Option<Decision> {
    let sub = |name: &[u8]| request.arg(1).is_some_and(|s| s.eq_ignore_ascii_case(name));
    let own = match spec.cmd {
        Cmd::Command if sub(b"DOCS") => Own::CommandDocs,
        Cmd::Config => return backend_config(topo, spec, request, user),
        Cmd::Client if sub(b"UNBLOCK") => Own::ClientUnblock,
        Cmd::Info if wants_memory(&request.args()[1..]) => Own::InfoWithScripts,
        _ => return None,
    };
    Some(Decision::Own(own))
}

/// CONFIG GET and SET of the backends' own parameters: those `[keys]
/// config_set` lists, and `notify-keyspace-events` (SET only with `[keys]
/// allow_keyspace_config`). GET reads the first backend; SET runs on every
/// backend, for a user without restrictions. `None`: the proxy answers
/// (`config_command`).
fn backend_config(
    topo: &Topology,
    spec: &Spec,
    request: &Request,
    user: Option<&User>,
) -> Option<Decision> {
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
    let unless_restricted = |own| {
        Some(match restricted {
            true => Decision::Reply(noperm_command(spec.name)),
            false => Decision::Own(own),
        })
    };
    match &sub[..] {
        b"GET" if request.len() >= 3 && names(1).all(|n| listed(n, false)) => {
            Some(Decision::Own(Own::ConfigGet))
        }
        b"SET" if request.len() < 4 || !request.len().is_multiple_of(2) => {
            Some(Decision::Reply(arity_error("config|set")))
        }
        b"SET" if names(2).all(|n| listed(n, true)) => unless_restricted(Own::ConfigSet),
        // The backends' statistics, where the commands ran, when the
        // operator allows clients to change backend parameters at all.
        b"RESETSTAT" if request.len() == 2 && !keys.config_set.is_empty() => {
            unless_restricted(Own::ConfigResetStat)
        }
        b"SET" if names(2).any(|n| n.eq_ignore_ascii_case(b"notify-keyspace-events")) => {
            Some(Decision::Reply(RedisError::KeyspaceConfigRefused.reply()))
        }
        _ => None,
    }
}

/// A routed request: its plan; a lease for a blocking command; or the plan
/// after the keys a migration still holds elsewhere are settled.
#[inline]
fn routed(cx: &Ctx<'_>) -> Decision {
    let Ctx {
        topo,
        spec,
        request,
        ..
    } = *cx;
    let planned = plan_request(cx);
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

/// The plan for a request under the client's key prefixes (and channel
/// policy, for PUBSUB).
#[inline]
fn plan_request(cx: &Ctx<'_>) -> Plan {
    let Ctx {
        topo,
        spec,
        request,
        ..
    } = *cx;
    let mut policy = cx.policy();
    if spec.cmd == Cmd::PubSub {
        policy.channels = Some(topo.config.channel_policy(cx.user));
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
