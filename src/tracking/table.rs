//! The proxy's tracking table: which clients may have cached each key
//! (Redis's `TrackingTable`), bounded by `[limits] tracking_table_keys`
//! (Redis's `tracking-table-max-keys`). Pure: what it evicts is handed back
//! to be invalidated.

use std::collections::HashMap;

use bytes::Bytes;

/// Key → the ids of the clients that read it since it last changed.
#[derive(Debug, Default)]
pub struct Table {
    keys: HashMap<Bytes, Vec<u64>>,
}

/// A key taken out of the table, with the clients to tell.
pub type Taken = (Bytes, Vec<u64>);

impl Table {
    /// Notes that client `id` read `key`. Returns the keys evicted to keep
    /// the table within `limit` keys (0: no limit), as Redis evicts them:
    /// their clients are told they changed.
    pub fn remember(&mut self, key: &Bytes, id: u64, limit: usize) -> Vec<Taken> {
        let ids = self.keys.entry(key.clone()).or_default();
        if !ids.contains(&id) {
            ids.push(id);
        }
        let mut evicted = Vec::new();
        while limit > 0 && self.keys.len() > limit {
            let Some(victim) = self.keys.keys().find(|k| *k != key).cloned() else {
                break;
            };
            if let Some(ids) = self.keys.remove(&victim) {
                evicted.push((victim, ids));
            }
        }
        evicted
    }

    /// The key changed: its clients, taken out of the table (they are told
    /// once; a client that reads it again is remembered again).
    pub fn take(&mut self, key: &[u8]) -> Option<Vec<u64>> {
        self.keys.remove(key)
    }

    /// The keys `which` picks, taken out of the table with their clients
    /// (to be told they changed).
    pub fn take_where(&mut self, which: impl Fn(&[u8]) -> bool) -> Vec<Taken> {
        let picked: Vec<Bytes> = self.keys.keys().filter(|k| which(k)).cloned().collect();
        picked
            .into_iter()
            .filter_map(|key| self.keys.remove(&key).map(|ids| (key, ids)))
            .collect()
    }

    /// Everything is invalidated at once (a flush).
    pub fn clear(&mut self) {
        self.keys = HashMap::new();
    }

    /// Client ids over all keys.
    pub fn items(&self) -> usize {
        self.keys.values().map(Vec::len).sum()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn a_key_is_told_once_then_forgotten() {
        let mut t = Table::default();
        assert!(t.remember(&key("a"), 1, 0).is_empty());
        t.remember(&key("a"), 2, 0);
        t.remember(&key("a"), 1, 0);
        assert_eq!(t.take(b"a"), Some(vec![1, 2]));
        assert_eq!(t.take(b"a"), None);
    }

    #[test]
    fn the_limit_evicts_other_keys() {
        let mut t = Table::default();
        for i in 0..10 {
            t.remember(&key(&format!("k{i}")), 1, 4);
        }
        assert_eq!(t.len(), 4);
        let evicted = t.remember(&key("new"), 7, 4);
        assert_eq!(evicted.len(), 1);
        assert_ne!(evicted[0].0, key("new"));
        assert_eq!(t.take(b"new"), Some(vec![7]));
    }

    #[test]
    fn keys_picked_are_taken_with_their_clients_and_the_rest_kept() {
        let mut t = Table::default();
        for (k, id) in [("a:1", 1), ("b:1", 1), ("a:2", 2), ("a:1", 3)] {
            t.remember(&key(k), id, 0);
        }
        let mut taken = t.take_where(|k| k.starts_with(b"a:"));
        taken.sort();
        assert_eq!(taken, vec![(key("a:1"), vec![1, 3]), (key("a:2"), vec![2])]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.take(b"b:1"), Some(vec![1]));
    }
}
