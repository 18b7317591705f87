//! CLIENT: ID, INFO, LIST, KILL, UNBLOCK, SETNAME, GETNAME, SETINFO, REPLY.
//! LIST, KILL and UNBLOCK see the clients of the caller's own user only (every client of the
//! default user, or of one named user): other users' clients are their
//! business.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::client::errors::{arity_error, c_str, unknown_subcommand};
use crate::client::slot::{Pending, Slot};
use crate::client::State;
use crate::protocol::request::string_to_i64;
use crate::protocol::RedisError;
use crate::protocol::Reply;
use crate::shared::{Shared, Topology};

pub(in crate::client) fn check_client_name(name: &[u8]) -> Result<(), Reply> {
    if name.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
        return Err(RedisError::ClientName.reply());
    }
    Ok(())
}

pub(in crate::client) fn client_command(
    shared: &Shared,
    state: &mut State,
    args: &[Bytes],
) -> Reply {
    let sub = args[1].to_ascii_uppercase();
    let argc = args.len();
    let (name, arity_ok) = match &sub[..] {
        b"SETNAME" => ("client|setname", argc == 3),
        b"GETNAME" => ("client|getname", argc == 2),
        b"ID" => ("client|id", argc == 2),
        b"INFO" => ("client|info", argc == 2),
        b"LIST" => ("client|list", argc >= 2),
        b"KILL" => ("client|kill", argc >= 3),
        b"SETINFO" => ("client|setinfo", argc == 4),
        b"REPLY" => ("client|reply", argc == 3),
        b"TRACKING" => ("client|tracking", argc >= 3),
        b"CACHING" => ("client|caching", argc >= 3),
        b"GETREDIR" => ("client|getredir", argc == 2),
        b"TRACKINGINFO" => ("client|trackinginfo", argc == 2),
        _ => return unknown_subcommand(&args[1], "CLIENT"),
    };
    if !arity_ok {
        return arity_error(name);
    }
    match &sub[..] {
        b"SETNAME" => match check_client_name(&args[2]) {
            Err(e) => e,
            Ok(()) => {
                state.name = (!args[2].is_empty()).then(|| args[2].clone());
                Reply::ok()
            }
        },
        b"GETNAME" => state.name.clone().map_or(Reply::Null, Reply::Bulk),
        b"ID" => Reply::Int(state.id as i64),
        b"INFO" => {
            state.publish();
            Reply::Verbatim(Bytes::from(state.card.line(Some("client|info"))))
        }
        b"LIST" => client_list(shared, state, args),
        b"KILL" => client_kill(shared, state, args),
        b"REPLY" => client_reply(state, &args[2]),
        b"TRACKING" | b"CACHING" | b"GETREDIR" | b"TRACKINGINFO" => {
            crate::client::tracking::subcommand(shared, state, &sub, args)
        }
        _ => client_setinfo(state, &args[2], args[3].clone()),
    }
}

/// CLIENT LIST [TYPE normal] [ID id ...]: the clients of the caller's own
/// user.
fn client_list(shared: &Shared, state: &mut State, args: &[Bytes]) -> Reply {
    let argc = args.len();
    state.publish();
    let mut ids: Option<Vec<i64>> = None;
    let mut normal = true;
    let mut i = 2;
    while i < argc {
        if args[i].eq_ignore_ascii_case(b"ID") && i + 1 < argc {
            let mut wanted = Vec::new();
            for id in &args[i + 1..] {
                match string_to_i64(id) {
                    Some(id) if id > 0 => wanted.push(id),
                    _ => return RedisError::InvalidClientId.reply(),
                }
            }
            ids = Some(wanted);
            break;
        } else if args[i].eq_ignore_ascii_case(b"TYPE") && i + 1 < argc {
            normal = args[i + 1].eq_ignore_ascii_case(b"normal");
            i += 2;
        } else {
            return RedisError::Syntax.reply();
        }
    }
    let mut text = String::new();
    for card in same_user(shared, state) {
        let listed = normal
            && ids
                .as_ref()
                .is_none_or(|ids| ids.contains(&(card.id as i64)));
        if listed {
            let own = (card.id == state.id).then_some("client|list");
            text.push_str(&card.line(own));
        }
    }
    Reply::Verbatim(Bytes::from(text))
}

/// CLIENT REPLY ON|OFF|SKIP.
fn client_reply(state: &mut State, mode: &[u8]) -> Reply {
    let mode = mode.to_ascii_uppercase();
    match &mode[..] {
        b"ON" => {
            state.replies_off = false;
            Reply::ok()
        }
        b"OFF" => {
            state.replies_off = true;
            Reply::ok()
        }
        // This reply and the next command's.
        b"SKIP" => {
            state.skip_replies = 2;
            Reply::ok()
        }
        _ => RedisError::Syntax.reply(),
    }
}

/// CLIENT SETINFO LIB-NAME|LIB-VER value.
fn client_setinfo(state: &mut State, option: &[u8], value: Bytes) -> Reply {
    // SETINFO, as on Redis 7.2; clients ignore the answer either way.
    let known = option.eq_ignore_ascii_case(b"LIB-NAME") || option.eq_ignore_ascii_case(b"LIB-VER");
    // As Redis 7.2 checks it: a space or newline would forge fields
    // or lines in CLIENT LIST.
    if known && value.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
        let mut msg = b"ERR ".to_vec();
        msg.extend_from_slice(c_str(option, usize::MAX));
        msg.extend_from_slice(b" cannot contain spaces, newlines or special characters.");
        return Reply::error(msg);
    }
    let value = (!value.is_empty()).then_some(value);
    if option.eq_ignore_ascii_case(b"LIB-NAME") {
        state.lib_name = value;
    } else if option.eq_ignore_ascii_case(b"LIB-VER") {
        state.lib_ver = value;
    } else {
        let mut msg = b"ERR Unrecognized option '".to_vec();
        msg.extend_from_slice(c_str(option, usize::MAX));
        msg.push(b'\'');
        return Reply::error(msg);
    }
    Reply::ok()
}

/// CLIENT UNBLOCK id [TIMEOUT|ERROR]: a client of the caller's own user
/// whose blocking command waits on a server is unblocked there, by CLIENT
/// UNBLOCK of the connection it holds, so the server answers it as Redis
/// would (a timeout's null, or `-UNBLOCKED`); `:0` for any other client.
pub(in crate::client) fn client_unblock(
    shared: &Shared,
    topo: &Arc<Topology>,
    state: &State,
    args: &[Bytes],
    now: Instant,
) -> Slot {
    let answer = |reply: Reply| Slot::ready(state.proto, reply);
    match args.len() {
        0..=2 => return answer(arity_error("client|unblock")),
        3 | 4 => {}
        _ => {
            let mut msg = b"ERR unknown subcommand or wrong number of arguments for '".to_vec();
            msg.extend_from_slice(c_str(&args[1], 128));
            msg.extend_from_slice(b"'. Try CLIENT HELP.");
            return answer(Reply::error(msg));
        }
    }
    let error = match args.get(3) {
        None => false,
        Some(reason) if reason.eq_ignore_ascii_case(b"TIMEOUT") => false,
        Some(reason) if reason.eq_ignore_ascii_case(b"ERROR") => true,
        Some(_) => {
            return answer(Reply::error(
                "ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR",
            ))
        }
    };
    let Some(id) = string_to_i64(&args[2]) else {
        return answer(RedisError::NotAnInteger.reply());
    };
    let waiting = same_user(shared, state)
        .into_iter()
        .find(|card| card.id as i64 == id)
        .and_then(|card| card.blocked_on());
    let Some((backend, server_id, aim)) = waiting else {
        return answer(Reply::Int(0));
    };
    let Some(server_id) = server_id.get() else {
        return answer(Reply::Int(0));
    };
    if !aim.take() {
        return answer(Reply::Int(0));
    }
    let (tx, rx) = oneshot::channel();
    let name = backend.id.clone();
    tokio::spawn(async move {
        let reply = backend.unblock(server_id, error).await.unwrap_or_else(|e| {
            Reply::error(format!(
                "ERR backend '{}' could not be asked to unblock the client: {e}",
                backend.id
            ))
        });
        let _ = tx.send(Ok(reply));
    });
    Slot::waiting(topo, state.proto, Pending::One(rx), name, now)
}

/// The connected clients of the caller's user, the caller included.
fn same_user(shared: &Shared, state: &State) -> Vec<Arc<crate::clients::ClientCard>> {
    shared
        .clients
        .all()
        .into_iter()
        .filter(|card| card.labels().user == state.user)
        .collect()
}

/// One of CLIENT KILL's filters.
type Filter = Box<dyn Fn(&crate::clients::ClientCard) -> bool>;

/// CLIENT KILL: the old form (`addr`, `+OK` or an error) and the filter
/// form (ID, ADDR, LADDR, USER, SKIPME, TYPE, MAXAGE; the number killed),
/// over the caller's own user's clients.
fn client_kill(shared: &Shared, state: &State, args: &[Bytes]) -> Reply {
    let clients = same_user(shared, state);
    if args.len() == 3 {
        let Some(card) = clients.iter().find(|c| c.peer.as_bytes() == &args[2][..]) else {
            return RedisError::NoSuchClient.reply();
        };
        card.kill();
        return Reply::ok();
    }
    if !args.len().is_multiple_of(2) {
        return RedisError::Syntax.reply();
    }
    let mut skip_me = true;
    let mut tests: Vec<Filter> = Vec::new();
    for pair in args[2..].chunks(2) {
        let (filter, value) = (pair[0].to_ascii_uppercase(), pair[1].clone());
        match &filter[..] {
            b"ID" => match string_to_i64(&value) {
                Some(id) if id > 0 => tests.push(Box::new(move |c| c.id as i64 == id)),
                _ => return RedisError::ClientIdNotPositive.reply(),
            },
            b"ADDR" => tests.push(Box::new(move |c| c.peer.as_bytes() == &value[..])),
            b"LADDR" => tests.push(Box::new(move |c| c.local.as_bytes() == &value[..])),
            b"USER" => tests.push(Box::new(move |c| {
                let user = c
                    .labels()
                    .user
                    .unwrap_or_else(|| Bytes::from_static(b"default"));
                user == value
            })),
            b"TYPE" => {
                let normal = value.eq_ignore_ascii_case(b"normal");
                tests.push(Box::new(move |_| normal));
            }
            b"MAXAGE" => match string_to_i64(&value) {
                Some(age) => tests.push(Box::new(move |c| {
                    c.connected_at.elapsed().as_secs() as i64 >= age
                })),
                None => return RedisError::Syntax.reply(),
            },
            b"SKIPME" if value.eq_ignore_ascii_case(b"yes") => skip_me = true,
            b"SKIPME" if value.eq_ignore_ascii_case(b"no") => skip_me = false,
            _ => return RedisError::Syntax.reply(),
        }
    }
    let mut killed = 0;
    for card in clients {
        if (skip_me && card.id == state.id) || !tests.iter().all(|t| t(&card)) {
            continue;
        }
        card.kill();
        killed += 1;
    }
    Reply::Int(killed)
}
