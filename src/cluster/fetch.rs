//! Asking a Redis Cluster's nodes for its slot map: a few at once, so that a
//! frozen node (a master being failed over) holds nothing up while the
//! others answer, and the map most of them describe is the one taken
//! ([`Views`]).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::task::JoinSet;

use super::views::{View, Views};
use super::{parse_shards, parse_slots, with_host, SlotMap};
use crate::config::{Endpoint, TlsClient};
use crate::dial::{call_with_auth, open_to, DialError};
use crate::protocol::Reply;

/// How many nodes' maps are compared: asked at once, and one more asked in
/// place of each that cannot answer.
pub const VIEWS: usize = 3;

/// Asks `seeds`, in their order, `VIEWS` (3) at a time, for the slot map
/// (CLUSTER SHARDS, or CLUSTER SLOTS before Redis 7), with AUTH when a
/// password is given and TLS when `tls` is, each within `timeout`. Returns
/// as soon as most of the nodes asked (and still answering) describe the
/// same map; otherwise, once every node asked has answered or failed, the
/// map most of them described; either with the nodes that described it.
/// The last error when none did.
pub async fn fetch(
    seeds: &[String],
    username: Option<&str>,
    password: Option<&str>,
    tls: Option<&TlsClient>,
    timeout: Duration,
) -> Result<View, DialError> {
    let mut views = Views::default();
    let mut asking = JoinSet::new();
    let mut unasked = seeds.iter();
    let mut last = DialError::Closed;
    loop {
        while views.described() + asking.len() < VIEWS {
            let Some(seed) = unasked.next() else {
                break;
            };
            let asked = ask(
                seed.clone(),
                username.map(str::to_string),
                password.map(str::to_string),
                tls.cloned(),
            );
            let seed = seed.clone();
            asking.spawn(async move {
                let answer = tokio::time::timeout(timeout, asked)
                    .await
                    .unwrap_or_else(|_| {
                        Err(DialError::Protocol(format!(
                            "{seed}: no answer within {timeout:?}"
                        )))
                    });
                (seed, answer)
            });
        }
        let Some(answered) = asking.join_next().await else {
            break;
        };
        match answered {
            Ok((seed, Ok(map))) => {
                views.add(map, &seed);
                if let Some(view) = views.agreed(asking.len()) {
                    // Dropping `asking` aborts the asks still out.
                    return Ok(view.clone());
                }
            }
            Ok((_, Err(error))) => last = error,
            Err(error) => last = DialError::Protocol(format!("asking for the slot map: {error}")),
        }
    }
    views.most_described().ok_or(last)
}

/// One node's slot map, its nodes named as it names them (or by the host
/// asked, where it does not know its own).
async fn ask(
    seed: String,
    username: Option<String>,
    password: Option<String>,
    tls: Option<TlsClient>,
) -> Result<SlotMap, DialError> {
    let endpoint = Endpoint::Tcp(seed.clone());
    let stream = open_to(&endpoint, tls.as_ref()).await?;
    let mut rbuf = BytesMut::new();
    let (username, password) = (username.as_deref(), password.as_deref());
    // CLUSTER SHARDS is Redis 7's; before it, CLUSTER SLOTS.
    type Parse = fn(&Reply) -> Option<Vec<super::Shard>>;
    let asks: [(&'static [u8], Parse); 2] = [(b"SHARDS", parse_shards), (b"SLOTS", parse_slots)];
    let mut shards = None;
    for (sub, parse) in asks {
        let command = vec![Bytes::from_static(b"CLUSTER"), Bytes::from_static(sub)];
        let replies = call_with_auth(&stream, &mut rbuf, username, password, vec![command]).await?;
        if !matches!(replies.first(), Some(Reply::Error(_))) {
            shards = replies.first().and_then(parse);
            break;
        }
    }
    let Some(mut shards) = shards else {
        return Err(DialError::Protocol(format!(
            "{seed}: not a CLUSTER SHARDS or SLOTS reply"
        )));
    };
    for shard in &mut shards {
        shard.master = with_host(&shard.master, &seed);
        for replica in &mut shard.replicas {
            *replica = with_host(replica, &seed);
        }
    }
    Ok(SlotMap::from_shards(&shards))
}
