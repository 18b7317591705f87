//! Pub/Sub through the proxy. A subscribing client gets one connection of
//! its own to every backend ([`link`]); its SUBSCRIBE and PSUBSCRIBE go to
//! all of them, so keyspace notifications of every shard reach it, while a
//! PUBLISH goes to one backend, the channel's owner by rendezvous: each
//! message is delivered exactly once. SSUBSCRIBE goes to the channel's
//! owner only, as SPUBLISH does. On a Redis Cluster backend the link is
//! one to every master ([`cluster_link`]).
//!
//! This module holds what is decided without I/O: which subscriptions a
//! client has ([`Wanted`]), the confirmations Redis would send for a
//! (un)subscribe, and whether a message from a backend is for the client.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::Proto;

pub mod cluster_link;
pub mod link;
pub mod policy;

/// The three kinds of subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Channel,
    Pattern,
    Shard,
}

impl Kind {
    /// The name of a confirmation of this kind, (un)subscribing.
    pub fn confirmation(self, subscribing: bool) -> &'static str {
        match (self, subscribing) {
            (Kind::Channel, true) => "subscribe",
            (Kind::Channel, false) => "unsubscribe",
            (Kind::Pattern, true) => "psubscribe",
            (Kind::Pattern, false) => "punsubscribe",
            (Kind::Shard, true) => "ssubscribe",
            (Kind::Shard, false) => "sunsubscribe",
        }
    }

    /// The command a backend is sent, (un)subscribing.
    pub fn command(self, subscribing: bool) -> &'static [u8] {
        match (self, subscribing) {
            (Kind::Channel, true) => b"SUBSCRIBE",
            (Kind::Channel, false) => b"UNSUBSCRIBE",
            (Kind::Pattern, true) => b"PSUBSCRIBE",
            (Kind::Pattern, false) => b"PUNSUBSCRIBE",
            (Kind::Shard, true) => b"SSUBSCRIBE",
            (Kind::Shard, false) => b"SUNSUBSCRIBE",
        }
    }
}

/// What a client is subscribed to; shard channels with their owner
/// (the backend index they are subscribed on).
#[derive(Debug, Default, Clone)]
pub struct Wanted {
    pub channels: BTreeSet<Bytes>,
    pub patterns: BTreeSet<Bytes>,
    pub shards: BTreeMap<Bytes, usize>,
}

impl Wanted {
    /// Redis's count in a confirmation: channels and patterns together;
    /// shard channels on their own.
    fn count(&self, kind: Kind) -> usize {
        match kind {
            Kind::Shard => self.shards.len(),
            _ => self.channels.len() + self.patterns.len(),
        }
    }

    /// Subscriptions in all: the client is in subscribed mode while any.
    pub fn total(&self) -> usize {
        self.channels.len() + self.patterns.len() + self.shards.len()
    }

    /// Adds `names` and returns Redis's confirmations, in `proto`.
    /// `owner` names a shard channel's backend.
    pub fn subscribe(
        &mut self,
        kind: Kind,
        names: &[Bytes],
        proto: Proto,
        owner: impl Fn(&[u8]) -> usize,
    ) -> Bytes {
        let mut out = BytesMut::new();
        for name in names {
            match kind {
                Kind::Channel => {
                    self.channels.insert(name.clone());
                }
                Kind::Pattern => {
                    self.patterns.insert(name.clone());
                }
                Kind::Shard => {
                    self.shards.insert(name.clone(), owner(name));
                }
            }
            confirm(
                &mut out,
                proto,
                kind.confirmation(true),
                Some(name),
                self.count(kind),
            );
        }
        out.freeze()
    }

    /// Removes `names` (every one of the kind when empty) and returns
    /// Redis's confirmations and what was removed.
    pub fn unsubscribe(
        &mut self,
        kind: Kind,
        names: &[Bytes],
        proto: Proto,
    ) -> (Bytes, Vec<Bytes>) {
        let names: Vec<Bytes> = if names.is_empty() {
            match kind {
                Kind::Channel => self.channels.iter().cloned().collect(),
                Kind::Pattern => self.patterns.iter().cloned().collect(),
                Kind::Shard => self.shards.keys().cloned().collect(),
            }
        } else {
            names.to_vec()
        };
        let mut out = BytesMut::new();
        let name = kind.confirmation(false);
        if names.is_empty() {
            confirm(&mut out, proto, name, None, self.count(kind));
        }
        for n in &names {
            match kind {
                Kind::Channel => {
                    self.channels.remove(n);
                }
                Kind::Pattern => {
                    self.patterns.remove(n);
                }
                Kind::Shard => {
                    self.shards.remove(n);
                }
            }
            confirm(&mut out, proto, name, Some(n), self.count(kind));
        }
        (out.freeze(), names)
    }

    /// Whether a message frame from a backend (RESP2 bytes) is for this
    /// client: its channel or pattern is still subscribed.
    pub fn wants(&self, frame: &[u8]) -> bool {
        let Some(items) = bulk_items(frame, 2) else {
            return false;
        };
        match items[0] {
            b"message" => self.channels.contains(items[1]),
            b"pmessage" => self.patterns.contains(items[1]),
            b"smessage" => self.shards.contains_key(items[1]),
            _ => false,
        }
    }
}

/// A push from a backend (RESP2 bytes) for a client in `proto`: RESP3
/// clients get it as a push (`>`), as Redis sends them.
pub fn for_client(frame: Bytes, proto: Proto) -> Bytes {
    if proto == Proto::Resp3 && frame.first() == Some(&b'*') {
        let mut out = BytesMut::with_capacity(frame.len());
        out.put_u8(b'>');
        out.extend_from_slice(&frame[1..]);
        return out.freeze();
    }
    frame
}

/// The key a keyspace notification is about (`__keyspace@<db>__:<key>`
/// names it in the channel, `__keyevent@<db>__:<event>` carries it as the
/// message), so a client restricted to key prefixes is not told about
/// other keys; `None` for any other message.
pub fn notification_key(frame: &[u8]) -> Option<&[u8]> {
    let kind = bulk_items(frame, 1)?;
    let items = match kind[0] {
        b"message" => bulk_items(frame, 3)?.split_off(1),
        b"pmessage" => bulk_items(frame, 4)?.split_off(2),
        _ => return None,
    };
    let (channel, message) = (items[0], items[1]);
    let after = |prefix: &[u8]| {
        channel.strip_prefix(prefix).and_then(|rest| {
            rest.windows(3)
                .position(|w| w == b"__:")
                .map(|i| &rest[i + 3..])
        })
    };
    if let Some(key) = after(b"__keyspace@") {
        return Some(key);
    }
    after(b"__keyevent@").map(|_| message)
}

/// Whether a message frame is a shard channel's (`smessage`).
pub fn is_shard_message(frame: &[u8]) -> bool {
    bulk_items(frame, 1).is_some_and(|kind| kind[0] == b"smessage")
}

/// What a frame from a backend's subscription connection is.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A message for the client (message, pmessage, smessage).
    Message,
    /// A subscribe confirmation, or an error answering a subscribe.
    Confirmed,
    /// An unsubscribe confirmation, a pong: nothing to do.
    Other,
}

pub fn classify(frame: &[u8]) -> Incoming {
    if frame.first() == Some(&b'-') {
        return Incoming::Confirmed;
    }
    let Some(items) = bulk_items(frame, 1) else {
        return Incoming::Other;
    };
    match items[0] {
        b"message" | b"pmessage" | b"smessage" => Incoming::Message,
        b"subscribe" | b"psubscribe" | b"ssubscribe" => Incoming::Confirmed,
        _ => Incoming::Other,
    }
}

/// The first `n` bulk strings of an array frame.
fn bulk_items(frame: &[u8], n: usize) -> Option<Vec<&[u8]>> {
    let mut rest = frame.strip_prefix(b"*")?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    rest = &rest[end + 2..];
    let mut items = Vec::with_capacity(n);
    while items.len() < n {
        rest = rest.strip_prefix(b"$")?;
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        let len: usize = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
        rest = &rest[end + 2..];
        items.push(rest.get(..len)?);
        rest = rest.get(len + 2..)?;
    }
    Some(items)
}

/// One confirmation frame, as Redis encodes it.
fn confirm(out: &mut BytesMut, proto: Proto, kind: &str, name: Option<&Bytes>, count: usize) {
    out.extend_from_slice(if proto == Proto::Resp3 {
        b">3\r\n"
    } else {
        b"*3\r\n"
    });
    out.extend_from_slice(format!("${}\r\n{kind}\r\n", kind.len()).as_bytes());
    match name {
        Some(name) => {
            out.extend_from_slice(format!("${}\r\n", name.len()).as_bytes());
            out.extend_from_slice(name);
            out.extend_from_slice(b"\r\n");
        }
        None if proto == Proto::Resp3 => out.extend_from_slice(b"_\r\n"),
        None => out.extend_from_slice(b"$-1\r\n"),
    }
    out.extend_from_slice(format!(":{count}\r\n").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn confirmations_count_as_redis_does() {
        let mut w = Wanted::default();
        let out = w.subscribe(Kind::Channel, &[b("a"), b("b")], Proto::Resp2, |_| 0);
        assert_eq!(
            &out[..],
            b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n"
        );
        let out = w.subscribe(Kind::Pattern, &[b("p*")], Proto::Resp3, |_| 0);
        assert_eq!(&out[..], b">3\r\n$10\r\npsubscribe\r\n$2\r\np*\r\n:3\r\n");
        let (out, gone) = w.unsubscribe(Kind::Channel, &[], Proto::Resp2);
        assert_eq!(gone, vec![b("a"), b("b")]);
        assert!(out.ends_with(b"$1\r\nb\r\n:1\r\n"), "{out:?}");
        let (out, _) = w.unsubscribe(Kind::Channel, &[], Proto::Resp2);
        assert_eq!(&out[..], b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:1\r\n");
        assert_eq!(w.total(), 1);
    }

    #[test]
    fn keyspace_notifications_name_their_key() {
        let event = b"*4\r\n$8\r\npmessage\r\n$22\r\n__keyevent@*__:expired\r\n$22\r\n__keyevent@0__:expired\r\n$5\r\napp:1\r\n";
        assert_eq!(notification_key(event), Some(&b"app:1"[..]));
        let space = b"*3\r\n$7\r\nmessage\r\n$20\r\n__keyspace@0__:other\r\n$3\r\ndel\r\n";
        assert_eq!(notification_key(space), Some(&b"other"[..]));
        let plain = b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n";
        assert_eq!(notification_key(plain), None);
    }

    #[test]
    fn messages_are_for_the_client_only_while_subscribed() {
        let mut w = Wanted::default();
        w.subscribe(Kind::Channel, &[b("news")], Proto::Resp2, |_| 0);
        let message = b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n";
        assert!(w.wants(message));
        assert_eq!(classify(message), Incoming::Message);
        assert_eq!(
            &for_client(Bytes::from_static(message), Proto::Resp3)[..3],
            b">3\r"
        );
        w.unsubscribe(Kind::Channel, &[b("news")], Proto::Resp2);
        assert!(!w.wants(message));
        assert_eq!(
            classify(b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"),
            Incoming::Confirmed
        );
        assert_eq!(classify(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"), Incoming::Other);
    }
}
