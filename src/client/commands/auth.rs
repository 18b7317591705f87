//! AUTH, and the users and key-prefix permissions behind it.

use bytes::Bytes;

use crate::client::errors::arity_error;
use crate::client::State;
use crate::protocol::RedisError;
use crate::protocol::Reply;
use crate::shared::Topology;

/// Who a user name and password authenticate as: `Some(None)` for the
/// default user, `Some(Some(name))` for a named one, `None` when refused.
pub(in crate::client) fn authenticate(
    topo: &Topology,
    user: Option<&[u8]>,
    password: &[u8],
) -> Option<Option<Bytes>> {
    let config = &topo.config;
    let listen = &config.listen;
    let default = match user {
        None => true,
        Some(user) => {
            user == b"default"
                || listen
                    .username
                    .as_deref()
                    .is_some_and(|u| u.as_bytes() == user)
        }
    };
    if default {
        return match &listen.password {
            // Like Redis's default user with `nopass`: any password is
            // accepted, unless named users exist (then it is off).
            None => config.users.is_empty().then_some(None),
            Some(expected) => constant_time_eq(expected.as_bytes(), password).then_some(None),
        };
    }
    let named = config.user(user?)?;
    constant_time_eq(named.secret().as_bytes(), password)
        .then(|| Some(Bytes::copy_from_slice(named.name.as_bytes())))
}

/// Whether a client sees only part of the keyspace.
pub(in crate::client) fn is_restricted(
    topo: &Topology,
    user: Option<&crate::config::User>,
) -> bool {
    !topo.config.keys.prefixes.is_empty() || user.is_some_and(|u| !u.prefixes.is_empty())
}

pub(in crate::client) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    crate::auth_guard::same_secret(a, b)
}

pub(in crate::client) fn auth(topo: &Topology, state: &mut State, args: &[Bytes]) -> Reply {
    if args.len() > 3 {
        return RedisError::Syntax.reply();
    }
    let (user, password) = match args {
        [_, password] => {
            if topo.config.listen.password.is_none() {
                return RedisError::AuthWithoutPassword.reply();
            }
            (None, password)
        }
        [_, user, password] => (Some(&user[..]), password),
        _ => return arity_error("auth"),
    };
    match authenticate(topo, user, password) {
        Some(who) => {
            state.authenticated = true;
            state.user = who;
            Reply::ok()
        }
        None => RedisError::WrongPass.reply(),
    }
}
