//! HELLO: protocol switch, authentication and client name in one command.

use bytes::Bytes;

use crate::client::commands::auth::authenticate;
use crate::client::commands::client::check_client_name;
use crate::client::errors::c_str;
use crate::client::State;
use crate::protocol::request::string_to_i64;
use crate::protocol::RedisError;
use crate::protocol::{Proto, Reply};
use crate::shared::Topology;

pub(in crate::client) fn hello(topo: &Topology, state: &mut State, args: &[Bytes]) -> Reply {
    let mut proto = None;
    if let Some(version) = args.get(1) {
        match string_to_i64(version) {
            None => return RedisError::ProtocolVersion.reply(),
            Some(2) => proto = Some(Proto::Resp2),
            Some(3) => proto = Some(Proto::Resp3),
            Some(_) => return RedisError::NoProto.reply(),
        }
    }
    let mut credentials = None;
    let mut name = None;
    let mut i = 2;
    while i < args.len() {
        let more = args.len() - 1 - i;
        let option = args[i].to_ascii_uppercase();
        if option == b"AUTH" && more >= 2 {
            credentials = Some((&args[i + 1], &args[i + 2]));
            i += 3;
        } else if option == b"SETNAME" && more >= 1 {
            if let Err(e) = check_client_name(&args[i + 1]) {
                return e;
            }
            name = Some(args[i + 1].clone());
            i += 2;
        } else {
            let mut msg = b"ERR Syntax error in HELLO option '".to_vec();
            msg.extend_from_slice(c_str(&args[i], usize::MAX));
            msg.push(b'\'');
            return Reply::error(msg);
        }
    }
    if let Some((user, password)) = credentials {
        let Some(who) = authenticate(topo, Some(user), password) else {
            return RedisError::WrongPass.reply();
        };
        state.authenticated = true;
        state.user = who;
    }
    if !state.authenticated {
        return Reply::error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
        );
    }
    if let Some(name) = name {
        state.name = (!name.is_empty()).then_some(name);
    }
    if let Some(proto) = proto {
        state.proto = proto;
    }
    Reply::Map(vec![
        (Reply::bulk_str("server"), Reply::bulk_str("redis")),
        (
            Reply::bulk_str("version"),
            Reply::bulk(topo.redis_version()),
        ),
        (Reply::bulk_str("proto"), Reply::Int(state.proto.number())),
        (Reply::bulk_str("id"), Reply::Int(state.id as i64)),
        (Reply::bulk_str("mode"), Reply::bulk_str("standalone")),
        (Reply::bulk_str("role"), Reply::bulk_str("master")),
        (Reply::bulk_str("modules"), Reply::Array(Vec::new())),
    ])
}
