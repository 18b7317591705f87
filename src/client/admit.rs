//! Whether a request may run: a command the proxy knows (or every backend
//! announces), of the right arity, from an authenticated client, allowed to
//! its user (commands, channels, keyspace notifications); and the count of
//! wrong passwords per address.

use crate::client::commands::auth::is_restricted;
use crate::client::errors::{arity_error, noperm_command, refused_in_multi, unknown_command};
use crate::client::pubsub::subscribed_refusal;
use crate::client::slot::{Pending, Slot};
use crate::client::State;
use crate::config::User;
use crate::protocol::command::{writes, TABLE};
use crate::protocol::learned::Learned;
use crate::protocol::RedisError;
use crate::protocol::{Cmd, Reply, Request, Spec};
use crate::shared::{Shared, Topology};
use std::time::Instant;
use tokio::sync::oneshot;

/// An error answered to a command queued after MULTI aborts the
/// transaction, as on Redis.
pub(in crate::client) fn abort_multi(state: &mut State) {
    if let Some(multi) = state.multi.as_mut() {
        multi.abort();
    }
}

/// The command's spec and the client's named user, once the command is
/// known, of the right arity, authenticated and allowed; else Redis's
/// error for it.
#[inline]
pub(in crate::client) fn admit<'t>(
    shared: &Shared,
    topo: &'t Topology,
    state: &mut State,
    command: usize,
    request: &Request,
) -> Result<(&'static Spec, Option<&'t User>), Reply> {
    let spec =
        resolve(shared, topo, state, command, request).inspect_err(|_| abort_multi(state))?;
    state.last_command = spec.name;
    if !spec.arity_ok(request.len()) {
        abort_multi(state);
        return Err(arity_error(spec.name));
    }
    if !state.authenticated && !spec.no_auth {
        return Err(RedisError::NoAuth.reply());
    }
    let user = match &state.user {
        None => None,
        Some(name) => match topo.config.user(name) {
            Some(user) => Some(user),
            None if spec.no_auth => None,
            None => {
                // A reload removed the user: authenticate again.
                state.authenticated = false;
                state.user = None;
                state.publish();
                return Err(RedisError::NoAuth.reply());
            }
        },
    };
    if let Some(refusal) = refusal(shared, topo, state, spec, request, user) {
        abort_multi(state);
        return Err(refusal);
    }
    Ok((spec, user))
}

/// The command's spec: the generated table's, else one every backend
/// announces; otherwise the client's error (unknown, or not routable).
#[inline]
fn resolve(
    shared: &Shared,
    topo: &Topology,
    state: &mut State,
    command: usize,
    request: &Request,
) -> Result<&'static Spec, Reply> {
    // The generated table first; then what the backends announce.
    let learned = match TABLE.get(command) {
        Some(_) => None,
        None => request.arg(0).and_then(|name| topo.learned(name)),
    };
    match (TABLE.get(command), learned) {
        (Some(&spec), _) => Ok(spec),
        (None, Some(Learned::Routed(spec))) => Ok(spec),
        (None, Some(Learned::Unsure(name))) => {
            state.last_command = name;
            shared.metrics.refused_commands.increment(1);
            let user = state.user.as_ref().and_then(|n| topo.config.user(n));
            Err(if is_restricted(topo, user) {
                noperm_command(name)
            } else {
                RedisError::CannotRoute(name.to_string()).reply()
            })
        }
        (None, None) => {
            shared.metrics.refused_commands.increment(1);
            let args = request.args();
            if let Some((name, refusal)) =
                state.multi.as_ref().and_then(|_| refused_in_multi(&args))
            {
                state.last_command = name;
                return Err(refusal);
            }
            state.last_command = "NULL";
            Err(unknown_command(&args))
        }
    }
}

/// What an authenticated client may not do, whatever the keys: write as a
/// read-only user, count every key (DBSIZE) or RESTORE under key prefixes,
/// run a command subscribed mode forbids, or use a channel outside its
/// policy.
#[inline]
fn refusal(
    shared: &Shared,
    topo: &Topology,
    state: &State,
    spec: &Spec,
    request: &Request,
    user: Option<&crate::config::User>,
) -> Option<Reply> {
    // Read-only users write nothing; a prefix-restricted client learns
    // nothing about keys beyond its prefixes (DBSIZE counts every key).
    if user.is_some_and(|u| u.read_only && writes(spec, request))
        || (spec.cmd == Cmd::DbSize && is_restricted(topo, user))
    {
        shared.metrics.refused_commands.increment(1);
        return Some(noperm_command(spec.name));
    }
    if spec.name == "restore" && !topo.config.keys.allow_restore && is_restricted(topo, user) {
        shared.metrics.refused_commands.increment(1);
        return Some(RedisError::NoPermRestore.reply());
    }
    if let Some(refusal) = subscribed_refusal(state, spec) {
        return Some(refusal);
    }
    let refusal = channel_refusal(topo, user, spec, request);
    if refusal.is_some() {
        shared.metrics.refused_commands.increment(1);
    }
    refusal
}

/// The source address of a TCP client (none for a unix socket).
fn peer_ip(state: &State) -> Option<std::net::IpAddr> {
    state
        .peer
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| a.ip())
}

/// An AUTH or HELLO from an address that failed too often this minute:
/// refused, and the connection closed.
pub(in crate::client) fn auth_refused(
    shared: &Shared,
    topo: &Topology,
    state: &mut State,
) -> Option<Slot> {
    let limit = topo.config.limits.auth_failures_per_address;
    if shared
        .auth_guard
        .admits(peer_ip(state), limit, Instant::now())
    {
        return None;
    }
    shared.metrics.closed_auth.increment(1);
    state.closing = true;
    let mut slot = Slot::ready(state.proto, RedisError::AuthBlocked.reply());
    slot.close_after = true;
    Some(slot)
}

/// A wrong password: counted, and answered at once, later, or with the
/// connection closed, as `crate::auth_guard` decides.
pub(in crate::client) fn wrong_password(
    shared: &Shared,
    topo: &Topology,
    state: &mut State,
    reply: Reply,
) -> Slot {
    use crate::auth_guard::Verdict;
    shared.metrics.auth_failures.increment(1);
    state.auth_failures = state.auth_failures.saturating_add(1);
    let limits = &topo.config.limits;
    let verdict = shared.auth_guard.failed(
        peer_ip(state),
        state.auth_failures,
        limits.auth_failures_per_connection,
        limits.auth_failures_per_address,
        Instant::now(),
    );
    match verdict {
        Verdict::Answer => Slot::ready(state.proto, reply),
        Verdict::Delay(delay) => {
            let (tx, rx) = oneshot::channel();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = tx.send(Ok(reply));
            });
            // No deadline: the wait is the point.
            let mut slot = Slot::ready(state.proto, Reply::Null);
            slot.pending = Pending::One(rx);
            slot
        }
        Verdict::Close => {
            shared.metrics.closed_auth.increment(1);
            tracing::info!(peer = %state.peer, "client closed after too many wrong passwords");
            state.closing = true;
            let mut slot = Slot::ready(state.proto, reply);
            slot.close_after = true;
            slot
        }
    }
}

/// Channels a client may not use: PUBLISH to the server's keyspace and
/// keyevent notifications (for everyone), PUBLISH by a read-only user, and
/// channels or patterns outside the client's channel policy.
#[inline]
fn channel_refusal(
    topo: &Topology,
    user: Option<&crate::config::User>,
    spec: &Spec,
    request: &Request,
) -> Option<Reply> {
    use crate::pubsub::policy::is_notification;
    let publish = matches!(spec.cmd, Cmd::Publish | Cmd::SPublish);
    let subscribe = matches!(spec.cmd, Cmd::Subscribe | Cmd::SSubscribe | Cmd::PSubscribe);
    if !publish && !subscribe {
        return None;
    }
    if publish {
        if is_notification(request.arg(1).unwrap_or_default()) {
            return Some(RedisError::NoPermNotification.reply());
        }
        if user.is_some_and(|u| u.read_only) {
            return Some(noperm_command(spec.name));
        }
    }
    let policy = topo.config.channel_policy(user);
    if policy.is_open() {
        return None;
    }
    let last = if publish { 2 } else { request.len() };
    let allowed = (1..last).filter_map(|i| request.arg(i)).all(|name| {
        if spec.cmd == Cmd::PSubscribe {
            policy.allows_pattern(name)
        } else {
            policy.allows_channel(name)
        }
    });
    (!allowed).then(|| RedisError::NoPermChannel.reply())
}
