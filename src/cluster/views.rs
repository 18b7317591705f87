//! Which slot map to believe when several nodes were asked: the one a
//! majority of them describe. A node that has not heard of a failover yet
//! (it was frozen, or cut off with the minority) describes the old master;
//! the others already name the new one, as the cluster itself decides by
//! majority. Pure; the asking is [`super::fetch`].

use super::SlotMap;

/// The maps the nodes asked have described so far, each with the nodes
/// that described it (the same slots on the same masters, whatever the
/// order of the shards), in the order they first came.
#[derive(Debug, Default)]
pub struct Views {
    seen: Vec<View>,
    total: usize,
}

/// One map and the nodes that described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub map: SlotMap,
    pub from: Vec<String>,
}

impl Views {
    /// The map node `from` described.
    pub fn add(&mut self, map: SlotMap, from: &str) {
        self.total += 1;
        match self.seen.iter_mut().find(|seen| seen.map.routes_like(&map)) {
            Some(seen) => seen.from.push(from.to_string()),
            None => self.seen.push(View {
                map,
                from: vec![from.to_string()],
            }),
        }
    }

    /// How many nodes described a map.
    pub fn described(&self) -> usize {
        self.total
    }

    /// The map described by more than half of the nodes that answered
    /// and the `to_come` that may still answer, if one is: no answer to
    /// come could make another the most described.
    pub fn agreed(&self, to_come: usize) -> Option<&View> {
        self.seen
            .iter()
            .find(|seen| 2 * seen.from.len() > self.total + to_come)
    }

    /// The most described map (of equals, the first to come), once no
    /// more answers will come.
    pub fn most_described(self) -> Option<View> {
        let mut best: Option<View> = None;
        for seen in self.seen {
            if best
                .as_ref()
                .is_none_or(|most| seen.from.len() > most.from.len())
            {
                best = Some(seen);
            }
        }
        best
    }
}

impl SlotMap {
    /// Whether both maps send every slot to the same master (the masters'
    /// order may differ: each node lists the shards in its own).
    pub fn routes_like(&self, other: &SlotMap) -> bool {
        (0..super::SLOTS).all(|slot| self.master_of_slot(slot) == other.master_of_slot(slot))
    }

    /// The slots `before` named a master for and this map names none for
    /// (their master failed, and no replica is known to have taken over).
    pub fn unserved_since(&self, before: &SlotMap) -> Vec<u16> {
        (0..super::SLOTS)
            .filter(|&slot| before.master_of_slot(slot).is_some())
            .filter(|&slot| self.master_of_slot(slot).is_none())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Shard;

    fn map(shards: &[(&str, u16, u16)]) -> SlotMap {
        let shards: Vec<Shard> = shards
            .iter()
            .map(|&(master, start, end)| Shard {
                master: master.to_string(),
                replicas: Vec::new(),
                ranges: vec![(start, end)],
            })
            .collect();
        SlotMap::from_shards(&shards)
    }

    fn before() -> SlotMap {
        map(&[("a:1", 0, 8191), ("b:1", 8192, 16383)])
    }

    /// After b's replica b:2 took over.
    fn after() -> SlotMap {
        map(&[("a:1", 0, 8191), ("b:2", 8192, 16383)])
    }

    #[test]
    fn slots_left_without_a_master_are_named() {
        let gone = map(&[("a:1", 0, 8191)]);
        assert_eq!(gone.unserved_since(&before()).len(), 8192);
        assert_eq!(gone.unserved_since(&before())[0], 8192);
        assert!(after().unserved_since(&before()).is_empty());
        assert!(before().unserved_since(&gone).is_empty());
    }

    #[test]
    fn the_order_of_the_shards_does_not_make_another_map() {
        let reordered = map(&[("b:1", 8192, 16383), ("a:1", 0, 8191)]);
        assert_ne!(before(), reordered);
        assert!(before().routes_like(&reordered));
        assert!(!before().routes_like(&after()));
        // A slot no master serves differs from one that a master does.
        let partial = map(&[("a:1", 0, 8191)]);
        assert!(!before().routes_like(&partial));
    }

    #[test]
    fn a_majority_of_the_nodes_asked_decides_at_once() {
        let mut views = Views::default();
        views.add(after(), "n1");
        assert_eq!(
            views.agreed(2).map(|v| v.map.clone()),
            None,
            "one of three is no majority"
        );
        views.add(after(), "n2");
        assert_eq!(
            views.agreed(1).map(|v| v.map.clone()),
            Some(after()),
            "two of three, one to come"
        );
        // Two answers apart, one to come: it decides.
        let mut split = Views::default();
        split.add(before(), "n3");
        split.add(after(), "n4");
        assert_eq!(split.agreed(1).map(|v| v.map.clone()), None);
        split.add(after(), "n5");
        assert_eq!(split.agreed(0).map(|v| v.map.clone()), Some(after()));
        assert_eq!(
            split.agreed(0).unwrap().from,
            ["n4", "n5"],
            "who described it"
        );
        // Alone, a node is its own majority.
        let mut one = Views::default();
        one.add(before(), "n6");
        assert_eq!(one.agreed(0).map(|v| v.map.clone()), Some(before()));
    }

    #[test]
    fn without_a_majority_the_most_described_map_wins_then_the_first() {
        let mut views = Views::default();
        views.add(before(), "n7");
        views.add(after(), "n8");
        views.add(after(), "n9");
        views.add(map(&[("a:1", 0, 16383)]), "n10");
        assert_eq!(views.agreed(0).map(|v| v.map.clone()), None, "two of four");
        assert_eq!(views.most_described().map(|v| v.map), Some(after()));

        let mut tied = Views::default();
        tied.add(after(), "n11");
        tied.add(before(), "n12");
        assert_eq!(tied.most_described().map(|v| v.map), Some(after()));
        assert_eq!(Views::default().most_described(), None);
    }
}
