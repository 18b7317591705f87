//! Redis Cluster's key space, for a cluster backend (issue 15; not wired
//! into routing yet): a key's hash slot, as Redis Cluster computes it, and
//! the slot map a node describes in CLUSTER SHARDS.

use bytes::Bytes;

use crate::protocol::Reply;

/// Redis Cluster's hash slots.
pub const SLOTS: u16 = 16384;

/// The hash slot of `key`: CRC16 (XMODEM) of the key, or of its hash tag
/// (the part between the first `{` and the next `}`, when not empty), mod
/// 16384.
pub fn slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) % SLOTS
}

/// The part of `key` that is hashed.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0), bit by bit:
/// the slot of a key is computed once per request, and 16 steps per byte
/// of a short key cost less than a table lookup's cache miss.
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= (byte as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// One master's share of the slots, from CLUSTER SHARDS: its address and
/// its slot ranges (inclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub master: String,
    pub replicas: Vec<String>,
    pub ranges: Vec<(u16, u16)>,
}

/// Reads a CLUSTER SHARDS reply (Redis 7): each shard's slot ranges and its
/// nodes, the master being the node whose role is "master" and whose health
/// is "online". `None` when the reply is not of that shape.
pub fn parse_shards(reply: &Reply) -> Option<Vec<Shard>> {
    let Reply::Array(shards) = reply else {
        return None;
    };
    let mut out = Vec::with_capacity(shards.len());
    for shard in shards {
        let fields = pairs(shard)?;
        let slots = match field(&fields, "slots")? {
            Reply::Array(items) => items,
            _ => return None,
        };
        let mut ranges = Vec::new();
        for pair in slots.chunks(2) {
            match pair {
                [Reply::Int(start), Reply::Int(end)] => {
                    let (start, end) = (u16::try_from(*start).ok()?, u16::try_from(*end).ok()?);
                    if start > end || end >= SLOTS {
                        return None;
                    }
                    ranges.push((start, end));
                }
                _ => return None,
            }
        }
        let Reply::Array(nodes) = field(&fields, "nodes")? else {
            return None;
        };
        let (mut master, mut replicas) = (None, Vec::new());
        for node in nodes {
            let node = pairs(node)?;
            let text = |name: &str| match field(&node, name) {
                Some(Reply::Bulk(b)) | Some(Reply::Status(b)) => {
                    Some(String::from_utf8_lossy(b).into_owned())
                }
                _ => None,
            };
            let port = match field(&node, "port") {
                Some(Reply::Int(p)) => *p,
                _ => continue,
            };
            let host = text("ip").or_else(|| text("endpoint"))?;
            let address = format!("{host}:{port}");
            match (text("role").as_deref(), text("health").as_deref()) {
                (Some("master"), Some("online")) => master = Some(address),
                (Some("replica"), _) => replicas.push(address),
                _ => {}
            }
        }
        if let Some(master) = master {
            out.push(Shard {
                master,
                replicas,
                ranges,
            });
        }
    }
    Some(out)
}

/// A flat key, value array (or a map) as pairs.
fn pairs(reply: &Reply) -> Option<Vec<(Bytes, &Reply)>> {
    match reply {
        Reply::Array(items) => items
            .chunks(2)
            .map(|pair| match pair {
                [Reply::Bulk(k) | Reply::Status(k), v] => Some((k.clone(), v)),
                _ => None,
            })
            .collect(),
        Reply::Map(items) => items
            .iter()
            .map(|(k, v)| match k {
                Reply::Bulk(k) | Reply::Status(k) => Some((k.clone(), v)),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

fn field<'a>(fields: &[(Bytes, &'a Reply)], name: &str) -> Option<&'a Reply> {
    fields
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_and_slots_match_redis_cluster() {
        // The check value of CRC16/XMODEM, as in Redis's crc16.c.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        // Slots from the Redis Cluster specification and CLUSTER KEYSLOT.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"somekey"), 11058);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
        assert_eq!(hash_tag(b"foo{bar}{zap}"), b"bar");
    }
}

/// Which master serves each slot, from CLUSTER SHARDS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMap {
    /// The masters, in the order the shards came.
    pub masters: Vec<String>,
    /// For each slot, an index into `masters` (`u16::MAX`: none serves it).
    pub owners: Vec<u16>,
}

impl SlotMap {
    pub fn from_shards(shards: &[Shard]) -> SlotMap {
        let mut owners = vec![u16::MAX; SLOTS as usize];
        let mut masters = Vec::with_capacity(shards.len());
        for (i, shard) in shards.iter().enumerate() {
            masters.push(shard.master.clone());
            for &(start, end) in &shard.ranges {
                for owner in &mut owners[start as usize..=end as usize] {
                    *owner = i as u16;
                }
            }
        }
        SlotMap { masters, owners }
    }

    /// The master serving `key`, if any serves its slot.
    pub fn master_of(&self, key: &[u8]) -> Option<&str> {
        let owner = *self.owners.get(slot(key) as usize)?;
        self.masters.get(owner as usize).map(String::as_str)
    }

    /// Whether every slot has a master.
    pub fn is_complete(&self) -> bool {
        self.owners.iter().all(|&o| o != u16::MAX)
    }
}

/// Asks the first of `seeds` that answers for the slot map (CLUSTER
/// SHARDS), with AUTH when a password is given; the last error when none
/// does.
pub async fn fetch(
    seeds: &[String],
    username: Option<&str>,
    password: Option<&str>,
    timeout: std::time::Duration,
) -> Result<SlotMap, crate::dial::DialError> {
    use crate::dial::{call_with_auth, open, DialError};
    let mut last = DialError::Closed;
    for seed in seeds {
        let endpoint = crate::config::Endpoint::Tcp(seed.clone());
        let asked = tokio::time::timeout(timeout, async {
            let stream = open(&endpoint).await?;
            let mut rbuf = bytes::BytesMut::new();
            let ask = vec![
                Bytes::from_static(b"CLUSTER"),
                Bytes::from_static(b"SHARDS"),
            ];
            call_with_auth(&stream, &mut rbuf, username, password, vec![ask]).await
        })
        .await;
        match asked {
            Ok(Ok(replies)) => match replies.first().and_then(parse_shards) {
                Some(shards) => return Ok(SlotMap::from_shards(&shards)),
                None => last = DialError::Protocol(format!("{seed}: not a CLUSTER SHARDS reply")),
            },
            Ok(Err(error)) => last = error,
            Err(_) => last = DialError::Protocol(format!("{seed}: no answer within {timeout:?}")),
        }
    }
    Err(last)
}
