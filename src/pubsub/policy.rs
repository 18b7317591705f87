//! Which channels a client may use, as Redis's ACL `&pattern` rules say:
//! a channel (SUBSCRIBE, SSUBSCRIBE, PUBLISH) must match one of the allowed
//! patterns; a pattern (PSUBSCRIBE) must be one of them exactly. Two lists
//! apply, `[keys] channels` and the user's own, and a channel must pass
//! both. A list left unset follows the key prefixes: with none, every
//! channel; with prefixes, the keyspace notifications of those keys and
//! nothing else. Keyspace and keyevent notifications are the server's:
//! nobody publishes to them, and each message of theirs is delivered only
//! for keys under the client's prefixes (see `notification_key`).

use crate::glob::{matches, Case};

/// Channels of keyspace notifications, and of keyevent notifications.
const KEYSPACE: &[u8] = b"__keyspace@";
const KEYEVENT: &[u8] = b"__keyevent@";

/// A client's channel permissions: every list must allow a channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelPolicy {
    lists: Vec<Vec<String>>,
}

impl ChannelPolicy {
    /// The policy of a client under `[keys] channels` / `prefixes` and, for
    /// a named user, its own `channels` / `prefixes`.
    pub fn new(
        global: (Option<&[String]>, &[String]),
        user: Option<(Option<&[String]>, &[String])>,
    ) -> ChannelPolicy {
        let list = |(channels, prefixes): (Option<&[String]>, &[String])| match channels {
            Some(channels) => Some(channels.to_vec()),
            None if prefixes.is_empty() => None,
            None => Some(implied(prefixes)),
        };
        ChannelPolicy {
            lists: [Some(global), user]
                .into_iter()
                .flatten()
                .filter_map(list)
                .collect(),
        }
    }

    /// Every channel allowed (no list applies).
    pub fn is_open(&self) -> bool {
        self.lists.is_empty()
    }

    /// Whether a channel may be subscribed to or published to.
    pub fn allows_channel(&self, channel: &[u8]) -> bool {
        self.lists.iter().all(|list| {
            list.iter()
                .any(|p| matches(p.as_bytes(), channel, Case::Exact))
        })
    }

    /// Whether a pattern may be subscribed to: one of the allowed patterns
    /// exactly, as Redis's ACL requires; or, under a policy the prefixes
    /// imply, any pattern over keyspace or keyevent notifications, whose
    /// messages are filtered by key when they are delivered.
    pub fn allows_pattern(&self, pattern: &[u8]) -> bool {
        self.lists.iter().all(|list| {
            list.iter().any(|p| p.as_bytes() == pattern)
                || (list.iter().any(|p| p.as_bytes() == KEYEVENT_ALL.as_bytes())
                    && is_notification(pattern))
        })
    }
}

/// What key prefixes imply: the keyspace notifications of their keys, and
/// keyevent notifications (delivered only for keys under the prefixes).
fn implied(prefixes: &[String]) -> Vec<String> {
    let mut list: Vec<String> = prefixes
        .iter()
        .map(|p| format!("__keyspace@*__:{}*", escape(p)))
        .collect();
    list.push(KEYEVENT_ALL.to_string());
    list
}

/// Every keyevent channel, in any database.
const KEYEVENT_ALL: &str = "__keyevent@*__:*";

/// A prefix as a literal part of a glob pattern.
fn escape(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A keyspace or keyevent notification channel (or pattern over them).
pub fn is_notification(channel: &[u8]) -> bool {
    channel.starts_with(KEYSPACE) || channel.starts_with(KEYEVENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn no_list_and_no_prefix_allow_everything() {
        let policy = ChannelPolicy::new((None, &[]), Some((None, &[])));
        assert!(policy.is_open());
        assert!(policy.allows_channel(b"anything"));
        assert!(policy.allows_pattern(b"*"));
    }

    #[test]
    fn prefixes_imply_their_keyspace_channels_only() {
        let prefixes = strings(&["session:alice:"]);
        let policy = ChannelPolicy::new((None, &[]), Some((None, &prefixes)));
        assert!(policy.allows_channel(b"__keyspace@0__:session:alice:1"));
        assert!(!policy.allows_channel(b"__keyspace@0__:session:bob:1"));
        assert!(policy.allows_channel(b"__keyevent@0__:expired"));
        assert!(!policy.allows_channel(b"news"));
        assert!(policy.allows_pattern(b"__keyevent@*__:*"));
        assert!(policy.allows_pattern(b"__keyspace@0__:session:*"));
        assert!(!policy.allows_pattern(b"*"));
        assert!(!policy.allows_pattern(b"news*"));
    }

    #[test]
    fn listed_channels_follow_acl_rules_and_both_lists_apply() {
        let global = strings(&["app:*", "news"]);
        let user = strings(&["app:alice:*"]);
        let policy = ChannelPolicy::new((Some(&global), &[]), Some((Some(&user), &[])));
        assert!(policy.allows_channel(b"app:alice:1"));
        assert!(!policy.allows_channel(b"news"), "the user's list lacks it");
        assert!(!policy.allows_channel(b"app:bob:1"));
        assert!(
            !policy.allows_pattern(b"app:*"),
            "the user's list lacks it exactly"
        );
        assert!(
            !policy.allows_pattern(b"app:alice:*"),
            "the global list lacks it"
        );
        assert!(!policy.allows_pattern(b"__keyevent@*__:*"));
        let both = strings(&["app:alice:*"]);
        let policy = ChannelPolicy::new((Some(&both), &[]), Some((Some(&both), &[])));
        assert!(policy.allows_pattern(b"app:alice:*"));
    }
}
