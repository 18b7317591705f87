//! A cluster backend's slot map with the backend of each master: what a
//! job's slot is looked up in, and what a link following the masters asks
//! about one of them.

use super::Backend;
use crate::cluster::{self, SlotMap};

/// A slot map with the backend of each of its masters (`nodes[i]` is
/// `map.masters[i]`'s), so a job finds its node by index, without a lookup.
#[derive(Clone)]
pub struct Routing {
    pub map: SlotMap,
    pub(super) nodes: Vec<Backend>,
}

impl Routing {
    /// The backend of the master serving `slot` (for `None`, of any
    /// master that serves a slot).
    pub(super) fn master_of(&self, slot: Option<u16>) -> Option<&Backend> {
        let owner = match slot {
            Some(slot) => self.owners.get(slot as usize).copied(),
            None => self.owners.iter().copied().find(|&o| o != u16::MAX),
        };
        owner.and_then(|o| self.nodes.get(o as usize))
    }

    /// How many slots each master (by index) serves.
    pub(super) fn slots_per_master(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.masters.len()];
        for &owner in &self.owners {
            if let Some(c) = counts.get_mut(owner as usize) {
                *c += 1;
            }
        }
        counts
    }

    /// The slots `server` serves in this map (none where it is not one of
    /// its masters).
    pub fn served_by(&self, server: &Backend) -> Slots {
        Slots::owned(&self.owners, |i| {
            self.nodes.get(i).is_some_and(|n| n.same_task(server))
        })
    }
}

impl std::ops::Deref for Routing {
    type Target = SlotMap;
    fn deref(&self) -> &SlotMap {
        &self.map
    }
}

/// A set of slots, one flag per slot.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Slots(Vec<bool>);

impl Slots {
    /// The slots whose owner (an index into a map's masters, as
    /// [`SlotMap::owners`] holds them) `is_one` is true of.
    pub fn owned(owners: &[u16], is_one: impl Fn(usize) -> bool) -> Slots {
        Slots(
            owners
                .iter()
                .map(|&owner| owner != u16::MAX && is_one(owner as usize))
                .collect(),
        )
    }

    /// Whether no slot is in the set.
    pub fn is_empty(&self) -> bool {
        !self.0.contains(&true)
    }

    /// Whether `key`'s slot is in the set.
    pub fn has_key(&self, key: &[u8]) -> bool {
        self.0
            .get(cluster::slot(key) as usize)
            .copied()
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Shard;

    #[test]
    fn a_masters_slots_are_those_the_map_gives_it() {
        let shard = |master: &str, start, end| Shard {
            master: master.into(),
            replicas: Vec::new(),
            ranges: vec![(start, end)],
        };
        let map = SlotMap::from_shards(&[shard("a:1", 0, 8191), shard("b:2", 8192, 16382)]);
        let b = Slots::owned(&map.owners, |i| map.masters[i] == "b:2");
        assert!(!b.is_empty());
        // "foo" is slot 12182, "bar" 5061.
        assert!(b.has_key(b"foo"));
        assert!(!b.has_key(b"bar"));
        let none = Slots::owned(&map.owners, |_| false);
        assert!(none.is_empty());
        assert!(!none.has_key(b"foo"));
        assert!(Slots::default().is_empty());
    }
}
