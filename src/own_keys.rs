//! The keys the proxy writes for itself on backends, never shown to
//! clients: a key's move lock while a migration moves it, a key's
//! tombstone (deleted while its old server was taken for gone), and a
//! key's hidden copy while RENAME moves it between backends.

/// The move lock of key K on an old server is `LOCK_PREFIX` + K; the mover
/// skips such keys.
pub const LOCK_PREFIX: &[u8] = b"__session-proxy-moving:";

/// The tombstone of key K, on its owner, is `TOMBSTONE_PREFIX` + K: K was
/// deleted while an old server that may hold a copy of it was taken for
/// gone, and that copy must not be moved in should the server come back.
pub const TOMBSTONE_PREFIX: &[u8] = b"__session-proxy-deleted:";

/// The hidden name of a key being renamed, on its source backend.
pub const HIDDEN_PREFIX: &[u8] = b"__session-proxy-renaming:";

/// When the proxies' first reload of a layout change was
/// (`crate::switch_time`), on the first backend of the layout before it.
pub const RELOAD_PREFIX: &[u8] = b"__session-proxy-reload:";

/// Whether `key` is one of the proxy's own.
pub fn is_own(key: &[u8]) -> bool {
    key.starts_with(LOCK_PREFIX)
        || key.starts_with(TOMBSTONE_PREFIX)
        || key.starts_with(HIDDEN_PREFIX)
        || key.starts_with(RELOAD_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_and_hidden_copies_are_the_proxys_own() {
        assert!(is_own(b"__session-proxy-moving:session:1"));
        assert!(is_own(b"__session-proxy-renaming:a"));
        assert!(is_own(b"__session-proxy-deleted:session:1"));
        assert!(is_own(b"__session-proxy-reload:0123456789abcdef"));
        assert!(!is_own(b"session:1"));
        assert!(!is_own(b"__session-proxy-"));
    }
}
