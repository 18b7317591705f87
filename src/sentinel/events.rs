//! The Sentinel events a proxy follows, and what each says about its
//! master's failover (pure: a pub/sub message in, an event out).

use crate::protocol::Reply;

/// The Sentinel event channels the subscribers follow: `+switch-master`,
/// and the failover's progress (it starts, advances, ends or aborts).
pub(super) const FAILOVER_CHANNELS: &[&str] = &[
    "+switch-master",
    "+try-failover",
    "+elected-leader",
    "+failover-state-select-slave",
    "+selected-slave",
    "+failover-state-send-slaveof-noone",
    "+failover-state-wait-promotion",
    "+promoted-slave",
    "+failover-state-reconf-slaves",
    "+failover-end",
    "+failover-end-for-timeout",
    "-failover-abort-not-elected",
    "-failover-abort-no-good-slave",
    "-failover-abort-slave-timeout",
    "-failover-abort-master-timeout",
];

/// What a Sentinel event says about our master's failover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailoverEvent {
    /// It started or is under way before the promotion: hold requests.
    Started,
    /// It went on past the promotion or ended: look for the new master now.
    Progress,
    /// It was given up: the old master stays.
    Aborted,
    /// `+switch-master`: the sentinels name the new master.
    Switched,
}

/// Reads a pub/sub message (`message`, channel, payload) from a sentinel.
/// Payloads name the instance as `<type> <name> <ip> <port>`, followed for a
/// replica by `@ <master> <ip> <port>`; `+switch-master`'s is `<master>
/// <old ip> <old port> <new ip> <new port>`. Only events about `master` count.
pub fn failover_event(message: &Reply, master: &str) -> Option<FailoverEvent> {
    let Reply::Array(items) = message else {
        return None;
    };
    let (Some(Reply::Bulk(kind)), Some(Reply::Bulk(channel)), Some(Reply::Bulk(payload))) =
        (items.first(), items.get(1), items.get(2))
    else {
        return None;
    };
    if &kind[..] != b"message" {
        return None;
    }
    let payload = std::str::from_utf8(payload).ok()?;
    let words: Vec<&str> = payload.split_whitespace().collect();
    let about = match words.iter().position(|w| *w == "@") {
        Some(at) => words.get(at + 1).copied(),
        None if &channel[..] == b"+switch-master" => words.first().copied(),
        None if words.first() == Some(&"master") => words.get(1).copied(),
        None => None,
    };
    if about != Some(master) {
        return None;
    }
    match &channel[..] {
        b"+try-failover"
        | b"+elected-leader"
        | b"+failover-state-select-slave"
        | b"+selected-slave"
        | b"+failover-state-send-slaveof-noone"
        | b"+failover-state-wait-promotion" => Some(FailoverEvent::Started),
        b"+promoted-slave"
        | b"+failover-state-reconf-slaves"
        | b"+failover-end"
        | b"+failover-end-for-timeout" => Some(FailoverEvent::Progress),
        c if c.starts_with(b"-failover-abort") => Some(FailoverEvent::Aborted),
        b"+switch-master" => Some(FailoverEvent::Switched),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn failover_events_about_our_master() {
        let message = |channel: &str, payload: &str| {
            Reply::Array(vec![
                Reply::bulk(Bytes::from_static(b"message")),
                Reply::bulk(Bytes::copy_from_slice(channel.as_bytes())),
                Reply::bulk(Bytes::copy_from_slice(payload.as_bytes())),
            ])
        };
        let ours = "master shard-a 127.0.0.1 6380";
        assert_eq!(
            failover_event(&message("+try-failover", ours), "shard-a"),
            Some(FailoverEvent::Started)
        );
        assert_eq!(
            failover_event(
                &message("+try-failover", "master shard-b 127.0.0.1 6390"),
                "shard-a"
            ),
            None
        );
        assert_eq!(
            failover_event(
                &message(
                    "+promoted-slave",
                    "slave 127.0.0.1:6381 127.0.0.1 6381 @ shard-a 127.0.0.1 6380"
                ),
                "shard-a"
            ),
            Some(FailoverEvent::Progress)
        );
        assert_eq!(
            failover_event(&message("-failover-abort-no-good-slave", ours), "shard-a"),
            Some(FailoverEvent::Aborted)
        );
        assert_eq!(
            failover_event(
                &message("+switch-master", "shard-a 127.0.0.1 6380 127.0.0.1 6381"),
                "shard-a"
            ),
            Some(FailoverEvent::Switched)
        );
        assert_eq!(
            failover_event(
                &message("+switch-master", "shard-ab 127.0.0.1 6380 127.0.0.1 6381"),
                "shard-a"
            ),
            None,
            "another master whose name starts the same"
        );
        assert_eq!(
            failover_event(&message("+sdown", ours), "shard-a"),
            None,
            "not a failover event"
        );
        // A subscribe confirmation is not a message.
        let confirm = Reply::Array(vec![
            Reply::bulk(Bytes::from_static(b"subscribe")),
            Reply::bulk(Bytes::from_static(b"+try-failover")),
            Reply::Int(1),
        ]);
        assert_eq!(failover_event(&confirm, "shard-a"), None);
    }
}
