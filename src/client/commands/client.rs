//! CLIENT: ID, INFO, LIST, SETNAME, GETNAME, SETINFO, ...

use crate::client::*;

pub(in crate::client) fn check_client_name(name: &[u8]) -> Result<(), Reply> {
    if name.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
        return Err(Reply::error(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ));
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
        b"SETINFO" => ("client|setinfo", argc == 4),
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
        b"INFO" => Reply::Verbatim(Bytes::from(client_line(shared, state))),
        b"LIST" => {
            // Only this client is listed: other clients are other users' business.
            let mut wanted = true;
            let mut i = 2;
            while i < argc {
                if args[i].eq_ignore_ascii_case(b"ID") {
                    wanted = args[i + 1..]
                        .iter()
                        .any(|id| parse_int(id) == Some(state.id as i64));
                    break;
                } else if args[i].eq_ignore_ascii_case(b"TYPE") && i + 1 < argc {
                    wanted = args[i + 1].eq_ignore_ascii_case(b"normal");
                    i += 2;
                } else {
                    return Reply::error("ERR syntax error");
                }
            }
            let text = if wanted {
                client_line(shared, state)
            } else {
                String::new()
            };
            Reply::Verbatim(Bytes::from(text))
        }
        _ => {
            // SETINFO, as on Redis 7.2; clients ignore the answer either way.
            let value = args[3].clone();
            if args[2].eq_ignore_ascii_case(b"LIB-NAME") {
                state.lib_name = Some(value);
            } else if args[2].eq_ignore_ascii_case(b"LIB-VER") {
                state.lib_ver = Some(value);
            } else {
                let mut msg = b"ERR Unrecognized option '".to_vec();
                msg.extend_from_slice(c_str(&args[2], usize::MAX));
                msg.push(b'\'');
                return Reply::error(msg);
            }
            Reply::ok()
        }
    }
}

/// One line of CLIENT LIST / CLIENT INFO, in Redis's format.
pub(in crate::client) fn client_line(_shared: &Shared, state: &State) -> String {
    let show = |b: &Option<Bytes>| {
        b.as_ref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    format!(
        "id={} addr={} laddr={} fd=-1 name={} age={} idle={} flags=N db={} sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd=client|{} user={} redir=-1 resp={} lib-name={} lib-ver={}\n",
        state.id,
        state.peer,
        state.local,
        show(&state.name),
        state.connected_at.elapsed().as_secs(),
        state.last_command_at.elapsed().as_secs(),
        state.db,
        if state.last_command == "client" { "info" } else { state.last_command },
        state.user.as_ref().map_or("default".into(), |u| String::from_utf8_lossy(u)),
        state.proto.number(),
        show(&state.lib_name),
        show(&state.lib_ver),
    )
}
