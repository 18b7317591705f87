//! A client's side of CLIENT TRACKING (see [`crate::tracking`]): the
//! subcommands, the keys of its reads remembered before they are sent, its
//! own writes under NOLOOP, and the invalidations written to it behind the
//! replies in flight.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use crate::client::slot::{Pending, Slot};
use crate::client::State;
use crate::protocol::command::writes;
use crate::protocol::keys::request_key_positions;
use crate::protocol::{Cmd, Reply, Request, Route, Spec};
use crate::shared::{Shared, Topology};
use crate::tracking::inbox::{frame, Note};
use crate::tracking::Tracked;

/// CLIENT TRACKING, CACHING, GETREDIR and TRACKINGINFO (`args[1]`
/// upper-cased in `sub`).
pub(in crate::client) fn subcommand(
    shared: &Shared,
    state: &mut State,
    sub: &[u8],
    args: &[Bytes],
) -> Reply {
    match sub {
        b"TRACKING" => {
            // A client may redirect to a client of its own user only, as
            // CLIENT LIST and KILL see only those: another user's client
            // does not exist for it.
            let (clients, user) = (&shared.clients, state.user.clone());
            let ours = |id| clients.get(id).is_some_and(|c| c.labels().user == user);
            if let Err(e) = state.tracking.tracking(args, ours) {
                return e;
            }
            follow_mode(shared, &shared.topology(), state);
            Reply::ok()
        }
        b"CACHING" => state.tracking.caching(args),
        b"GETREDIR" => Reply::Int(state.tracking.redirect_shown()),
        _ => state.tracking.info(),
    }
}

/// CLIENT TRACKING ON answered once every backend's link is confirmed (at
/// most the connect timeout; a backend down meanwhile is not waited for),
/// so the reads behind it can be cached: a barrier, nothing after it runs
/// before.
pub(in crate::client) fn when_ready(
    shared: &Shared,
    topo: &Arc<Topology>,
    state: &State,
    request: &Request,
    slot: Slot,
    now: std::time::Instant,
) -> Slot {
    let turned_on = state.tracking.on
        && request
            .arg(1)
            .is_some_and(|a| a.eq_ignore_ascii_case(b"TRACKING"))
        && matches!(&slot.pending, Pending::Ready(Reply::Status(_)));
    if !turned_on || shared.tracker.ready(topo) {
        return slot;
    }
    let reply = Reply::ok();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (tracker, topology) = (shared.tracker.clone(), topo.clone());
    // Within the request timeout, whose deadline the slot carries.
    let pool = &topo.config.pool;
    let limit = pool.connect_timeout().min(pool.request_timeout() / 2);
    tokio::spawn(async move {
        tracker.wait_ready(&topology, limit).await;
        let _ = tx.send(Ok(reply));
    });
    let mut slot = Slot::waiting(topo, state.proto, Pending::One(rx), "tracking".into(), now);
    slot.barrier = true;
    slot
}

/// Tells the tracker and CLIENT LIST what the client's mode is now.
fn follow_mode(shared: &Shared, topo: &Topology, state: &State) {
    let mode = &state.tracking;
    state
        .card
        .tracking
        .store(mode.list_flags(), Ordering::Relaxed);
    state
        .card
        .redir
        .store(mode.redirect_shown(), Ordering::Relaxed);
    if !mode.on {
        shared.tracker.unregister(state.id);
        return;
    }
    let redirect = (mode.redirect != 0).then(|| {
        let target = shared.clients.get(mode.redirect);
        (
            mode.redirect,
            target.map_or_else(std::sync::Weak::new, |t| Arc::downgrade(&t)),
        )
    });
    let user = state.user.as_ref().and_then(|n| topo.config.user(n));
    let as_bytes = |list: &[String]| -> Vec<Bytes> {
        list.iter()
            .map(|p| Bytes::copy_from_slice(p.as_bytes()))
            .collect()
    };
    let restricted_to = vec![
        as_bytes(&topo.config.keys.prefixes),
        as_bytes(user.map_or(&[][..], |u| &u.prefixes[..])),
    ];
    let tracked = Tracked {
        card: state.card.clone(),
        redirect,
        bcast: mode.bcast.then(|| mode.prefixes.iter().cloned().collect()),
        noloop: mode.noloop,
        restricted_to,
    };
    shared.tracker.register(topo, state.id, tracked);
}

/// Tracking off (RESET), and gone from the tracker.
pub(in crate::client) fn off(shared: &Shared, state: &mut State) {
    if state.tracking.on {
        state.tracking.disable();
        follow_mode(shared, &shared.topology(), state);
    }
}

/// The client is gone: the tracker forgets it.
pub(in crate::client) fn gone(shared: &Shared, state: &State) {
    if state.tracking.on {
        shared.tracker.unregister(state.id);
    }
}

/// After a request of a tracking client was dispatched (its jobs queued,
/// not yet sent): the keys of a read are remembered, a NOLOOP client's
/// writes keep it from hearing of them, and CLIENT CACHING's flag lasts one
/// command (or one transaction). Returns whether a NOLOOP write was noted:
/// its reply arms the note (`Tracker::replied`).
pub(in crate::client) fn after(
    shared: &Shared,
    topo: &Topology,
    state: &mut State,
    spec: &Spec,
    request: &Request,
) -> bool {
    let mut noted = false;
    let mode = &state.tracking;
    let keyed = matches!(
        spec.route,
        Route::Key | Route::Keys(_) | Route::KeyValues | Route::Specs | Route::Script
    ) && !matches!(spec.cmd, Cmd::Publish | Cmd::SPublish);
    if keyed {
        let keys = || -> Vec<Bytes> {
            request_key_positions(spec, request)
                .into_iter()
                .filter_map(|i| request.arg(i))
                .map(Bytes::copy_from_slice)
                .collect()
        };
        // A script may read and write its declared keys; the proxy cannot
        // see which it does, so both are assumed (told of more changes,
        // never fewer).
        let script = spec.route == Route::Script;
        let write = writes(spec, request) || (script && !spec.name.ends_with("_ro"));
        let read = !write || script;
        if write && mode.noloop {
            shared.tracker.wrote(topo, state.id, &keys());
            noted = true;
        }
        if read && (mode.remembers() || mode.bcast) {
            shared.tracker.remember(topo, state.id, &keys());
        }
    }
    if state.multi.is_none() && spec.cmd != Cmd::Client {
        state.tracking.caching = false;
    }
    noted
}

/// The notes waiting for this client, as the frames Redis would send it
/// (a broken redirect is also noted in its mode).
pub(in crate::client) fn frames(state: &mut State) -> Vec<Bytes> {
    let notes = state.card.inbox.take();
    let subscribed = state
        .card
        .subscriptions
        .iter()
        .any(|n| n.load(Ordering::Relaxed) > 0);
    let mut out = Vec::with_capacity(notes.len());
    for note in notes {
        if let Note::RedirectBroken(_) = note {
            if !state.tracking.on {
                continue;
            }
            state.tracking.broken_redirect = true;
            state
                .card
                .tracking
                .store(state.tracking.list_flags(), Ordering::Relaxed);
        }
        if let Some(bytes) = frame(&note, state.proto, subscribed) {
            out.push(bytes);
        }
    }
    out
}
