//! Redis Cluster's key space, for a cluster backend: a key's hash slot, as
//! Redis Cluster computes it, the slot map a node describes in CLUSTER
//! SHARDS, the slot a job's commands touch, and the redirections a node
//! answers (`-MOVED`, `-ASK`). Pure but for [`fetch`], which asks nodes
//! for the map; the rest of the I/O is `crate::backend::cluster`.

mod fetch;
mod views;

pub use fetch::fetch;
pub use views::View;

use std::collections::HashMap;

use bytes::Bytes;

use crate::protocol::Reply;

/// Redis Cluster's hash slots.
pub const SLOTS: u16 = 16384;

/// The most masters a slot map names: one per slot. A reply naming more is
/// not a cluster's (a hostile or broken node's), and a map's owners, kept
/// as `u16` indexes, could not tell them apart.
pub const MAX_MASTERS: usize = SLOTS as usize;

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
/// is "online", each at its preferred endpoint. `None` when the reply is
/// not of that shape, or names more masters or slot ranges than a cluster
/// can have (a hostile node's: the map's size and the work of building it
/// stay bounded by the slots, whatever a node sends).
pub fn parse_shards(reply: &Reply) -> Option<Vec<Shard>> {
    let Reply::Array(shards) = reply else {
        return None;
    };
    if shards.len() > MAX_MASTERS {
        return None;
    }
    let mut out = Vec::with_capacity(shards.len());
    // Ranges do not overlap: no more of them than slots.
    let mut ranges_left = SLOTS as usize;
    for shard in shards {
        let fields = pairs(shard)?;
        let slots = match field(&fields, "slots")? {
            Reply::Array(items) => items,
            _ => return None,
        };
        ranges_left = ranges_left.checked_sub(slots.len() / 2)?;
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
            // The endpoint the cluster prefers its clients to use (a host
            // name under `cluster-preferred-endpoint-type hostname`, as
            // managed services announce), which MOVED and ASK name too;
            // its IP when that is unknown ("?").
            let host = text("endpoint")
                .filter(|e| !e.is_empty() && e != "?")
                .or_else(|| text("ip"))?;
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

/// Reads a CLUSTER SLOTS reply (Redis 3 to 7): each entry is a slot range,
/// its master `[ip, port, id, ...]` and its replicas; ranges of one master
/// are gathered into one shard. `None` when the reply is not of that shape,
/// or has more entries than slots.
pub fn parse_slots(reply: &Reply) -> Option<Vec<Shard>> {
    let Reply::Array(entries) = reply else {
        return None;
    };
    let node = |reply: &Reply| -> Option<String> {
        let Reply::Array(fields) = reply else {
            return None;
        };
        let host = match fields.first()? {
            Reply::Bulk(b) | Reply::Status(b) => String::from_utf8_lossy(b).into_owned(),
            _ => return None,
        };
        let Reply::Int(port) = fields.get(1)? else {
            return None;
        };
        Some(format!("{host}:{port}"))
    };
    // Each entry is a range of its own: no more than the slots.
    if entries.len() > SLOTS as usize {
        return None;
    }
    let mut out: Vec<Shard> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for entry in entries {
        let Reply::Array(fields) = entry else {
            return None;
        };
        let (Some(Reply::Int(start)), Some(Reply::Int(end))) = (fields.first(), fields.get(1))
        else {
            return None;
        };
        let (start, end) = (u16::try_from(*start).ok()?, u16::try_from(*end).ok()?);
        if start > end || end >= SLOTS {
            return None;
        }
        let master = node(fields.get(2)?)?;
        let replicas: Vec<String> = fields[3..].iter().filter_map(node).collect();
        match index.get(&master) {
            Some(&i) => out[i].ranges.push((start, end)),
            None => {
                index.insert(master.clone(), out.len());
                out.push(Shard {
                    master,
                    replicas,
                    ranges: vec![(start, end)],
                });
            }
        }
    }
    Some(out)
}

/// A node that does not know its own address names itself ":port" (or
/// "?:port"): it is the host that was asked.
fn with_host(address: &str, asked: &str) -> String {
    match address.rsplit_once(':') {
        Some((host, port)) if host.is_empty() || host == "?" => {
            let asked_host = asked.rsplit_once(':').map_or(asked, |(h, _)| h);
            format!("{asked_host}:{port}")
        }
        _ => address.to_string(),
    }
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
    /// The map `shards` describe; past [`MAX_MASTERS`] shards, the rest
    /// are left out (the parsers refuse such replies).
    pub fn from_shards(shards: &[Shard]) -> SlotMap {
        let mut owners = vec![u16::MAX; SLOTS as usize];
        let mut masters = Vec::with_capacity(shards.len().min(MAX_MASTERS));
        for (i, shard) in shards.iter().take(MAX_MASTERS).enumerate() {
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
        self.master_of_slot(slot(key))
    }

    /// The master serving `slot`, if any.
    pub fn master_of_slot(&self, slot: u16) -> Option<&str> {
        let owner = *self.owners.get(slot as usize)?;
        self.masters.get(owner as usize).map(String::as_str)
    }

    /// Notes what a `-MOVED` said: `slot` is served by `node` now. A node
    /// past [`MAX_MASTERS`] is not noted (the map fetched next says).
    pub fn set(&mut self, slot: u16, node: &str) {
        let Some(owner) = self.owners.get_mut(slot as usize) else {
            return;
        };
        let index = match self.masters.iter().position(|m| m == node) {
            Some(i) => i,
            None if self.masters.len() >= MAX_MASTERS => return,
            None => {
                self.masters.push(node.to_string());
                self.masters.len() - 1
            }
        };
        *owner = index as u16;
    }

    /// Whether every slot has a master.
    pub fn is_complete(&self) -> bool {
        self.owners.iter().all(|&o| o != u16::MAX)
    }
}

/// `payload` (one command, or a MULTI … EXEC transaction) after ASKING,
/// for the node a `-ASK` names: ASKING holds for the next command, and
/// through MULTI until EXEC. Its replies: ASKING's `+OK`, then the payload's.
pub fn after_asking(payload: &[u8]) -> Bytes {
    const ASKING: &[u8] = b"*1\r\n$6\r\nASKING\r\n";
    [ASKING, payload].concat().into()
}

/// The pause before a request answered `-TRYAGAIN` goes again: a slot's
/// migration moves its keys in batches of a few milliseconds each.
pub const TRY_AGAIN_AFTER: std::time::Duration = std::time::Duration::from_millis(20);

/// Redirections one request follows at most; then the client gets the last.
pub const MAX_REDIRECTS: u8 = 5;

/// Where a node sends a request it does not serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// `-MOVED slot host:port`: the slot lives there now.
    Moved { slot: u16, node: String },
    /// `-ASK slot host:port`: this one request goes there, after ASKING.
    Ask { slot: u16, node: String },
    /// `-TRYAGAIN ...`: the request's keys are split between the two nodes
    /// of a slot being migrated; the same request, a moment later, to the
    /// slot's master then (which answers it, or redirects it once the keys
    /// are together).
    TryAgain,
}

/// The redirection in a node's reply, if it is one. An error reply is
/// `-MOVED 3999 127.0.0.1:6381` (or `-ASK ...`, `-TRYAGAIN ...`), as raw
/// bytes or parsed.
pub fn redirect(reply: &Reply) -> Option<Redirect> {
    let line = reply.error_line()?;
    if line == b"TRYAGAIN" || line.starts_with(b"TRYAGAIN ") {
        return Some(Redirect::TryAgain);
    }
    let (ask, rest) = if let Some(rest) = line.strip_prefix(b"MOVED ") {
        (false, rest)
    } else if let Some(rest) = line.strip_prefix(b"ASK ") {
        (true, rest)
    } else {
        return None;
    };
    let text = std::str::from_utf8(rest).ok()?;
    let (slot, node) = text.split_once(' ')?;
    let slot: u16 = slot.parse().ok().filter(|&s| s < SLOTS)?;
    // Redis 7 may leave the host out ("-MOVED 3999 :6381") when the node
    // does not know its own address; such a reply cannot be followed.
    if node.is_empty() || node.starts_with(':') || node.contains(' ') {
        return None;
    }
    let node = node.to_string();
    Some(if ask {
        Redirect::Ask { slot, node }
    } else {
        Redirect::Moved { slot, node }
    })
}

/// What a job's commands touch: no key, keys of one slot, or keys of
/// several (which Redis Cluster refuses with `-CROSSSLOT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touches {
    NoKey,
    Slot(u16),
    CrossSlot,
}

impl Touches {
    /// What these keys and one more, of slot `here`, touch.
    fn and(self, here: u16) -> Touches {
        match self {
            Touches::NoKey => Touches::Slot(here),
            Touches::Slot(s) if s == here => self,
            _ => Touches::CrossSlot,
        }
    }
}

/// The slot of every key in `keys`.
pub fn keys_touch<'a>(keys: impl IntoIterator<Item = &'a [u8]>) -> Touches {
    let mut found = Touches::NoKey;
    for key in keys {
        found = found.and(slot(key));
        if found == Touches::CrossSlot {
            break;
        }
    }
    found
}

/// Redis Cluster's answer to a command whose keys are in several slots.
pub const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// The slot of every key in `payload` (RESP-encoded commands, back to back,
/// as a job carries them), found by the command table's key specs.
pub fn touches(payload: &[u8]) -> Touches {
    use crate::protocol::command::lookup;
    use crate::protocol::keys::request_key_positions;
    use tokio_util::codec::Decoder;
    let mut buf = bytes::BytesMut::from(payload);
    let mut decoder = crate::protocol::request::RequestDecoder::new(payload.len().max(1), true);
    let mut found = Touches::NoKey;
    while let Ok(Some(request)) = decoder.decode(&mut buf) {
        let Some(spec) = request.arg(0).and_then(lookup) else {
            continue;
        };
        for position in request_key_positions(spec, &request) {
            let Some(key) = request.arg(position) else {
                continue;
            };
            found = found.and(slot(key));
            if found == Touches::CrossSlot {
                return found;
            }
        }
    }
    found
}

#[cfg(test)]
mod more_tests {
    use super::*;

    fn encode(args: &[&[u8]]) -> Vec<u8> {
        let mut buf = bytes::BytesMut::new();
        let args: Vec<Bytes> = args.iter().map(|a| Bytes::copy_from_slice(a)).collect();
        crate::protocol::encode_command(&args, &mut buf);
        buf.to_vec()
    }

    /// A node announcing a host name (`cluster-announce-hostname`,
    /// `cluster-preferred-endpoint-type hostname`) is reached by that name,
    /// as MOVED names it; one whose endpoint is unknown ("?") by its IP.
    #[test]
    fn shards_name_each_node_by_its_preferred_endpoint() {
        let node = |endpoint: &str, ip: &str, port: i64, role: &str| {
            let text = |s: &str| Reply::Bulk(Bytes::from(s.to_string()));
            Reply::Array(vec![
                text("port"),
                Reply::Int(port),
                text("ip"),
                text(ip),
                text("endpoint"),
                text(endpoint),
                text("role"),
                text(role),
                text("health"),
                text("online"),
            ])
        };
        let shard = |slots: (i64, i64), nodes: Vec<Reply>| {
            Reply::Array(vec![
                Reply::Bulk(Bytes::from_static(b"slots")),
                Reply::Array(vec![Reply::Int(slots.0), Reply::Int(slots.1)]),
                Reply::Bulk(Bytes::from_static(b"nodes")),
                Reply::Array(nodes),
            ])
        };
        let reply = Reply::Array(vec![
            shard(
                (0, 8191),
                vec![
                    node("node-a.cache.test", "10.0.0.1", 6379, "master"),
                    node("node-b.cache.test", "10.0.0.2", 6379, "replica"),
                ],
            ),
            shard((8192, 16383), vec![node("?", "10.0.0.3", 6380, "master")]),
        ]);
        let shards = parse_shards(&reply).unwrap();
        assert_eq!(shards[0].master, "node-a.cache.test:6379");
        assert_eq!(
            shards[0].replicas,
            vec!["node-b.cache.test:6379".to_string()]
        );
        assert_eq!(shards[1].master, "10.0.0.3:6380");
    }

    #[test]
    fn redirections_are_read_from_raw_and_parsed_errors() {
        let moved = Reply::Raw(Bytes::from_static(b"-MOVED 3999 127.0.0.1:6381\r\n"));
        assert_eq!(
            redirect(&moved),
            Some(Redirect::Moved {
                slot: 3999,
                node: "127.0.0.1:6381".into()
            })
        );
        let ask = Reply::Error(Bytes::from_static(b"ASK 12182 10.0.0.2:7000"));
        assert_eq!(
            redirect(&ask),
            Some(Redirect::Ask {
                slot: 12182,
                node: "10.0.0.2:7000".into()
            })
        );
        let split = Reply::Raw(Bytes::from_static(
            b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n",
        ));
        assert_eq!(redirect(&split), Some(Redirect::TryAgain));
        for other in [
            Reply::Error(Bytes::from_static(b"ERR TRYAGAIN")),
            Reply::Error(Bytes::from_static(b"TRYAGAINX")),
            Reply::Error(Bytes::from_static(b"ERR MOVED 1 a:1")),
            Reply::Error(Bytes::from_static(b"MOVED 16384 a:1")),
            Reply::Error(Bytes::from_static(b"MOVED 1 :6381")),
            Reply::Error(Bytes::from_static(b"MOVED x a:1")),
            Reply::Raw(Bytes::from_static(b"$5\r\nMOVED\r\n")),
            Reply::Bulk(Bytes::from_static(b"MOVED 1 a:1")),
        ] {
            assert_eq!(redirect(&other), None, "{other:?}");
        }
    }

    #[test]
    fn a_jobs_keys_give_its_slot_or_crossslot() {
        assert_eq!(touches(&encode(&[b"PING"])), Touches::NoKey);
        assert_eq!(touches(&encode(&[b"GET", b"foo"])), Touches::Slot(12182));
        let mut two = encode(&[b"SET", b"{u1}a", b"1"]);
        two.extend(encode(&[b"GET", b"{u1}b"]));
        assert_eq!(touches(&two), Touches::Slot(slot(b"u1")));
        assert_eq!(
            touches(&encode(&[b"MGET", b"foo", b"bar"])),
            Touches::CrossSlot
        );
        assert_eq!(
            touches(&encode(&[
                b"EVAL",
                b"return 1",
                b"2",
                b"{a}1",
                b"{a}2",
                b"x"
            ])),
            Touches::Slot(slot(b"a"))
        );
        assert_eq!(touches(b"garbage"), Touches::NoKey);
    }

    #[test]
    fn cluster_slots_gathers_a_masters_ranges_and_fills_in_an_unknown_host() {
        let node = |host: &'static [u8], port| {
            Reply::Array(vec![
                Reply::Bulk(Bytes::from_static(host)),
                Reply::Int(port),
            ])
        };
        let reply = Reply::Array(vec![
            Reply::Array(vec![
                Reply::Int(0),
                Reply::Int(99),
                node(b"", 7000),
                node(b"10.0.0.2", 7001),
            ]),
            Reply::Array(vec![
                Reply::Int(100),
                Reply::Int(16383),
                node(b"10.0.0.3", 7002),
            ]),
            Reply::Array(vec![Reply::Int(200), Reply::Int(200), node(b"", 7000)]),
        ]);
        let shards = parse_slots(&reply).unwrap();
        assert_eq!(shards.len(), 2);
        assert_eq!(shards[0].ranges, vec![(0, 99), (200, 200)]);
        assert_eq!(shards[0].replicas, vec!["10.0.0.2:7001".to_string()]);
        assert_eq!(
            with_host(&shards[0].master, "10.0.0.1:7000"),
            "10.0.0.1:7000"
        );
        assert_eq!(with_host("10.0.0.3:7002", "10.0.0.1:7000"), "10.0.0.3:7002");
        let bad = Reply::Array(vec![Reply::Array(vec![
            Reply::Int(5),
            Reply::Int(1),
            node(b"a", 1),
        ])]);
        assert_eq!(parse_slots(&bad), None);
    }

    #[test]
    fn moved_updates_one_slot() {
        let shards = [Shard {
            master: "a:1".into(),
            replicas: vec![],
            ranges: vec![(0, SLOTS - 1)],
        }];
        let mut map = SlotMap::from_shards(&shards);
        map.set(5, "b:2");
        assert_eq!(map.master_of_slot(5), Some("b:2"));
        assert_eq!(map.master_of_slot(6), Some("a:1"));
        map.set(7, "b:2");
        assert_eq!(map.masters.len(), 2);
    }

    /// A hostile node's map: more entries, masters or ranges than a cluster
    /// can have is refused, and no map ever names more masters than slots
    /// (each slot's owner is a `u16` index, `u16::MAX` for none).
    #[test]
    fn a_map_never_names_more_masters_than_slots() {
        let text = |s: String| Reply::Bulk(Bytes::from(s));
        let entry = |slot: i64, master: usize| {
            let node = Reply::Array(vec![text(format!("10.0.{}.1", master)), Reply::Int(7000)]);
            Reply::Array(vec![Reply::Int(slot), Reply::Int(slot), node])
        };
        // One master per slot: the largest map there is.
        let every: Vec<Reply> = (0..SLOTS as usize).map(|i| entry(i as i64, i)).collect();
        let shards = parse_slots(&Reply::Array(every.clone())).unwrap();
        assert_eq!(shards.len(), MAX_MASTERS);
        let map = SlotMap::from_shards(&shards);
        assert_eq!(map.master_of_slot(SLOTS - 1), Some("10.0.16383.1:7000"));
        let mut more = every;
        more.push(entry(0, 0));
        assert_eq!(parse_slots(&Reply::Array(more)), None);
        // CLUSTER SHARDS: too many shards, or too many ranges in all.
        let shard = |ranges: Vec<Reply>| {
            Reply::Array(vec![
                text("slots".into()),
                Reply::Array(ranges),
                text("nodes".into()),
                Reply::Array(vec![]),
            ])
        };
        let many = vec![shard(vec![]); MAX_MASTERS + 1];
        assert_eq!(parse_shards(&Reply::Array(many)), None);
        let full = [Reply::Int(0), Reply::Int(SLOTS as i64 - 1)];
        let ranges: Vec<Reply> = full
            .iter()
            .cycle()
            .take(2 * SLOTS as usize + 2)
            .cloned()
            .collect();
        assert_eq!(parse_shards(&Reply::Array(vec![shard(ranges)])), None);
        // A map built from more shards, or told of more masters by MOVED,
        // keeps every owner within its masters.
        let shards: Vec<Shard> = (0..70_000)
            .map(|i| Shard {
                master: format!("m{i}:1"),
                replicas: vec![],
                ranges: vec![((i % SLOTS as usize) as u16, (i % SLOTS as usize) as u16)],
            })
            .collect();
        let mut map = SlotMap::from_shards(&shards);
        assert_eq!(map.masters.len(), MAX_MASTERS);
        assert!(map.owners.iter().all(|&o| (o as usize) < map.masters.len()));
        map.set(3, "new:1");
        assert_eq!(map.masters.len(), MAX_MASTERS);
        assert_eq!(map.master_of_slot(3), Some("m3:1"));
    }
}
