//! Weighted rendezvous (highest random weight) routing of keys to backends.
//!
//! Routing is a pure function of the key bytes and the backends' `(id, weight)`
//! pairs; addresses play no part, so moving a server or a Sentinel failover
//! never moves a key. The scoring is the `rendezvous_hash` crate's weighted
//! "logarithmic method"; the hash under it is pinned here:
//!
//! ```text
//! seed(id)        = XXH3-64(id bytes, seed 0)
//! h(id, key)      = XXH3-64(key bytes, seed = seed(id))
//! score(id, key)  = ln(h / (2^64 - 1)) / weight      (f64, always <= 0)
//! owner(key)      = the backend with the highest score; equal scores go to
//!                   the greater id
//! ```
//!
//! Only the key's raw bytes enter the hash (never `std`'s `Hash for [u8]`,
//! whose length prefix depends on the platform's `usize`), and `DefaultHasher`
//! is not used. The golden vectors in the tests pin the result.
//!
//! With a hash tag (`[keys] hash_tag = "{}"`, off by default), a key that
//! holds the tag's opening character, and after it the closing one with
//! something between, is routed by that part alone (Redis Cluster's and
//! twemproxy's rule): `{user42}:a` and `{user42}:b` go together. Keys
//! without a tag route exactly as without the setting.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rendezvous_hash::{Capacity, Node, NodeHasher, RendezvousNodes, WeightedNode};
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed, Xxh3};

/// A backend as the router sees it: its id and the id's precomputed seed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberId {
    pub id: Arc<str>,
    seed: u64,
}

/// A routing candidate: a backend's id and its position in the backend list.
#[derive(Debug, Clone)]
pub struct Member {
    id: MemberId,
    pub index: usize,
}

impl Node for Member {
    type NodeId = MemberId;
    type HashCode = u64;

    fn node_id(&self) -> &MemberId {
        &self.id
    }

    fn hash_code<H, U: Hash>(&self, hasher: &H, item: &U) -> u64
    where
        H: NodeHasher<MemberId>,
    {
        hasher.hash(&self.id, item)
    }
}

/// The pinned hash: XXH3-64 of the key, seeded by the backend id's hash.
#[derive(Debug, Clone, Copy, Default)]
pub struct PinnedHasher;

impl NodeHasher<MemberId> for PinnedHasher {
    fn hash<T: Hash>(&self, node: &MemberId, item: &T) -> u64 {
        let mut hasher = Xxh3::with_seed(node.seed);
        item.hash(&mut hasher);
        hasher.finish()
    }
}

/// A key to route. Its `Hash` feeds exactly the key bytes, nothing else.
pub struct RouteKey<'a>(pub &'a [u8]);

impl Hash for RouteKey<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0);
    }
}

/// The part of `key` between the first `open` character of `tag` and the
/// next `close` one, when it is not empty.
pub fn tag_of(tag: [u8; 2], key: &[u8]) -> Option<&[u8]> {
    let [open, close] = tag;
    let start = key.iter().position(|&b| b == open)?;
    match key[start + 1..].iter().position(|&b| b == close)? {
        0 => None,
        len => Some(&key[start + 1..start + 1 + len]),
    }
}

/// The index with the highest fraction, if it leads the runner-up by more
/// than [`CLEAR_GAP`].
fn clear_leader(fractions: impl Iterator<Item = (f64, usize)>) -> Option<usize> {
    let mut best: Option<(f64, usize)> = None;
    let mut second = f64::NEG_INFINITY;
    for (fraction, index) in fractions {
        match best {
            Some((top, _)) if fraction <= top => second = second.max(fraction),
            _ => {
                if let Some((top, _)) = best {
                    second = top;
                }
                best = Some((fraction, index));
            }
        }
    }
    let (top, index) = best?;
    (top - second > top * CLEAR_GAP).then_some(index)
}

/// Maps keys to backend indexes.
pub struct Router {
    nodes: RendezvousNodes<WeightedNode<Member>, PinnedHasher>,
    /// `[keys] hash_tag`: the opening and closing characters.
    hash_tag: Option<[u8; 2]>,
    /// The same members as a flat list for [`Router::owner`], which hashes
    /// the key in one shot (`xxh3_64_with_seed`, the same value the streaming
    /// hasher gives) instead of through `Hash` and a streaming state.
    flat: Vec<Flat>,
    /// Every backend has the same (plain) weight: the highest hash fraction
    /// then has the highest score, and `owner` can skip the logarithms.
    equal_weights: bool,
}

struct Flat {
    id: Arc<str>,
    seed: u64,
    weight: f64,
    index: usize,
}

impl Flat {
    /// The key's hash as a fraction of the largest hash, in [0, 1].
    fn fraction(&self, key: &[u8]) -> f64 {
        xxh3_64_with_seed(key, self.seed) as f64 / u64::MAX as f64
    }

    /// The crate's weighted score (`WeightedNode::hash_code`), computed the same way.
    fn score(&self, key: &[u8]) -> f64 {
        self.fraction(key).ln() / self.weight
    }
}

/// Relative gap between two hash fractions beyond which their scores under
/// one weight are certain to keep their order: `ln` turns it into a gap of
/// at least 2^-40 against rounding errors of at most 2^-47 (scores under 64).
const CLEAR_GAP: f64 = 1.0 / (1u64 << 40) as f64;
/// Weights for which scores stay normal numbers, where the gap argument holds.
const PLAIN_WEIGHTS: std::ops::RangeInclusive<f64> = 1e-6..=1e6;

/// A bad `(id, weight)` list; config validation reports these by field.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RouterError {
    #[error("no backends")]
    Empty,
    #[error("backend '{0}': weight must be a positive number")]
    Weight(String),
    #[error("backend id '{0}' appears twice")]
    Duplicate(String),
}

impl Router {
    /// Builds a router over backends given as `(id, weight)` in config order;
    /// routes return indexes into that order.
    pub fn new<'a>(
        backends: impl IntoIterator<Item = (&'a str, f64)>,
    ) -> Result<Router, RouterError> {
        let mut nodes = RendezvousNodes::new(PinnedHasher);
        let mut flat = Vec::new();
        for (index, (id, weight)) in backends.into_iter().enumerate() {
            let capacity =
                Capacity::new(weight).ok_or_else(|| RouterError::Weight(id.to_string()))?;
            let member = Member {
                id: MemberId {
                    id: Arc::from(id),
                    seed: xxh3_64(id.as_bytes()),
                },
                index,
            };
            if nodes.contains(&member.id) {
                return Err(RouterError::Duplicate(id.to_string()));
            }
            flat.push(Flat {
                id: member.id.id.clone(),
                seed: member.id.seed,
                weight,
                index,
            });
            nodes.insert(WeightedNode::new(member, capacity));
        }
        if nodes.is_empty() {
            return Err(RouterError::Empty);
        }
        let equal_weights = flat.iter().all(|member| {
            PLAIN_WEIGHTS.contains(&member.weight)
                && flat.first().map(|f| f.weight) == Some(member.weight)
        });
        Ok(Router {
            nodes,
            flat,
            equal_weights,
            hash_tag: None,
        })
    }

    /// The router a config gives: its backends by weight, hashing the
    /// tagged part of keys when `[keys] hash_tag` is set.
    pub fn of(config: &crate::config::Config) -> Result<Router, RouterError> {
        Ok(Router::new(config.route_members())?.with_hash_tag(config.keys.hash_tag()))
    }

    /// The same router, hashing only the tagged part of keys that have one.
    pub fn with_hash_tag(mut self, tag: Option<[u8; 2]>) -> Router {
        self.hash_tag = tag;
        self
    }

    /// The bytes of `key` that are hashed: its tag when the router has a
    /// hash tag and the key a non-empty part between the tag's first
    /// opening character and the next closing one; else the whole key.
    pub fn hashed<'k>(&self, key: &'k [u8]) -> &'k [u8] {
        self.hash_tag
            .and_then(|tag| tag_of(tag, key))
            .unwrap_or(key)
    }

    /// The index of the backend that owns `key`.
    ///
    /// Same ordering as `calc_candidates(..).next()`, without its allocation
    /// and sort: the highest `(score, id)` wins.
    pub fn owner(&self, key: &[u8]) -> usize {
        let key = self.hashed(key);
        if self.equal_weights {
            if let Some(index) = self.clear_owner(key) {
                return index;
            }
        }
        self.owner_by_score(key)
    }

    /// With equal weights: the backend with the highest hash fraction, when
    /// it leads the next one by a clear gap; `None` when the two are so close
    /// that only the scores themselves can tell (or tie, and the ids decide).
    fn clear_owner(&self, key: &[u8]) -> Option<usize> {
        clear_leader(
            self.flat
                .iter()
                .map(|member| (member.fraction(key), member.index)),
        )
    }

    /// The highest `(score, id)`, scores computed in full.
    fn owner_by_score(&self, key: &[u8]) -> usize {
        let mut best: Option<(f64, &Flat)> = None;
        for member in &self.flat {
            let score = member.score(key);
            let better = match best {
                None => true,
                Some((best_score, best_member)) => {
                    score > best_score || (score == best_score && member.id > best_member.id)
                }
            };
            if better {
                best = Some((score, member));
            }
        }
        // `new` refuses an empty list, so there is always a best.
        best.map_or(0, |(_, member)| member.index)
    }

    /// Every backend index in preference order for `key`: the owner first, then
    /// the backends that would take the key over if the ones before were gone.
    pub fn candidates(&self, key: &[u8]) -> Vec<usize> {
        self.nodes
            .calc_candidates(&RouteKey(self.hashed(key)))
            .map(|node| node.node.index)
            .collect()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(list: &[(&str, f64)]) -> Router {
        Router::new(list.iter().copied()).unwrap()
    }

    fn id_of<'a>(list: &[(&'a str, f64)], r: &Router, key: &[u8]) -> &'a str {
        list[r.owner(key)].0
    }

    /// Golden vectors: these must never change. If this test fails, routing has
    /// changed and every deployed proxy would move keys on upgrade.
    #[test]
    fn golden_vectors() {
        assert_eq!(xxh3_64(b"a"), 0xE6C632B61E964E1F);
        assert_eq!(xxh3_64(b"session:abc"), xxh3_64(b"session:abc"));
        let mut h = Xxh3::with_seed(xxh3_64(b"a"));
        h.write(b"session:abc");
        assert_eq!(
            h.finish(),
            xxhash_rust::xxh3::xxh3_64_with_seed(b"session:abc", xxh3_64(b"a"))
        );

        let list = [("a", 1.0), ("b", 2.0), ("c", 1.0)];
        let r = router(&list);
        let keys: Vec<String> = (0..16).map(|i| format!("session:{i}")).collect();
        let owners: String = keys
            .iter()
            .map(|k| id_of(&list, &r, k.as_bytes()))
            .collect();
        assert_eq!(owners, GOLDEN_ABC);
        let seed_pool = [("redis1", 1.0), ("redis2", 1.0), ("redis3", 2.0)];
        let r = router(&seed_pool);
        let owners: Vec<&str> = ["session:x", "session:y", "session:z", "", "k"]
            .iter()
            .map(|k| id_of(&seed_pool, &r, k.as_bytes()))
            .collect();
        assert_eq!(owners, GOLDEN_POOL);
    }

    // Computed independently with Python's `xxhash` package and `math.log`.
    const GOLDEN_ABC: &str = "bbcbbbabbcaabbab";

    /// Hash tags: a tagged key routes as its tag alone; a key without a
    /// tag (or an empty `{}`, or no closing brace) as without the setting,
    /// so the golden vectors hold with the tag on.
    #[test]
    fn hash_tags_route_by_the_tag() {
        let list = [("a", 1.0), ("b", 2.0), ("c", 1.0)];
        let tagged = router(&list).with_hash_tag(Some(*b"{}"));
        let plain = router(&list);
        for (key, hashed) in [
            ("{user42}:a", "user42"),
            ("x{user42}y{z}", "user42"),
            ("{}user42", "{}user42"),
            ("{user42", "{user42"),
            ("}user{", "}user{"),
            ("session:abc", "session:abc"),
            ("a{{b}c", "{b"),
        ] {
            assert_eq!(tagged.hashed(key.as_bytes()), hashed.as_bytes(), "{key}");
            assert_eq!(
                tagged.owner(key.as_bytes()),
                plain.owner(hashed.as_bytes()),
                "{key}"
            );
        }
        // Golden vectors, with tags: the owner of `{session:N}:x` is the
        // owner of `session:N` (the string above).
        let owners: String = (0..16)
            .map(|i| id_of(&list, &tagged, format!("{{session:{i}}}:x").as_bytes()))
            .collect();
        assert_eq!(owners, GOLDEN_ABC);
        let untagged: String = (0..16)
            .map(|i| id_of(&list, &tagged, format!("session:{i}").as_bytes()))
            .collect();
        assert_eq!(untagged, GOLDEN_ABC);
        assert_eq!(
            tagged.candidates(b"{k}:1"),
            plain.candidates(b"k"),
            "fallback order follows the tag too"
        );
    }
    const GOLDEN_POOL: [&str; 5] = ["redis3", "redis1", "redis3", "redis2", "redis3"];

    #[test]
    fn owner_matches_crate_candidate_order() {
        let list = [("a", 1.0), ("b", 3.0), ("c", 0.5), ("d", 1.0)];
        let r = router(&list);
        for i in 0..5000 {
            let key = format!("k{i}");
            assert_eq!(r.owner(key.as_bytes()), r.candidates(key.as_bytes())[0]);
        }
    }

    #[test]
    fn equal_weights_skip_the_logarithms_without_changing_an_owner() {
        for list in [
            vec![("a", 1.0), ("b", 1.0)],
            vec![("a", 3.0), ("b", 3.0), ("c", 3.0)],
            (0..16)
                .map(|i| {
                    (
                        [
                            "r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "ra", "rb",
                            "rc", "rd", "re", "rf",
                        ][i],
                        1.0,
                    )
                })
                .collect(),
        ] {
            let r = router(&list);
            assert!(r.equal_weights);
            for i in 0..20_000 {
                let key = format!("session:{i}");
                assert_eq!(
                    r.owner(key.as_bytes()),
                    r.owner_by_score(key.as_bytes()),
                    "{key}"
                );
                assert_eq!(r.owner(key.as_bytes()), r.candidates(key.as_bytes())[0]);
            }
        }
        assert!(!router(&[("a", 1.0), ("b", 2.0)]).equal_weights);
        assert!(!router(&[("a", 1e-9), ("b", 1e-9)]).equal_weights);
        assert!(router(&[("only", 1.0)]).equal_weights);
        assert_eq!(router(&[("only", 1.0)]).owner(b"k"), 0);
    }

    #[test]
    fn close_fractions_are_left_to_the_scores() {
        let lead = |list: &[f64]| clear_leader(list.iter().copied().zip(0..));
        assert_eq!(lead(&[0.2, 0.7, 0.5]), Some(1));
        assert_eq!(lead(&[0.7, 0.2]), Some(0));
        assert_eq!(lead(&[0.3]), Some(0));
        assert_eq!(lead(&[]), None);
        // Ties and near ties go to the full scores (and the ids).
        assert_eq!(lead(&[0.5, 0.5]), None);
        assert_eq!(lead(&[0.5, 0.5 + 0.5 * CLEAR_GAP / 2.0, 0.1]), None);
        assert_eq!(lead(&[0.0, 0.0]), None);
        assert_eq!(lead(&[1.0, 1.0]), None);
        assert_eq!(lead(&[0.5, 0.5 * (1.0 + 4.0 * CLEAR_GAP)]), Some(1));
        assert_eq!(lead(&[1e-300, 0.0]), Some(0));
    }

    #[test]
    fn weights_are_respected_within_two_percent() {
        let list = [("a", 1.0), ("b", 2.0), ("c", 1.0), ("d", 4.0)];
        let r = router(&list);
        let mut counts = [0usize; 4];
        let n = 100_000;
        for i in 0..n {
            counts[r.owner(format!("session:{i:08x}").as_bytes())] += 1;
        }
        let total: f64 = list.iter().map(|(_, w)| w).sum();
        for (i, (id, w)) in list.iter().enumerate() {
            let expected = w / total;
            let got = counts[i] as f64 / n as f64;
            assert!(
                (got - expected).abs() < 0.02,
                "backend {id}: share {got:.4}, expected {expected:.4}"
            );
        }
    }

    #[test]
    fn adding_or_removing_a_backend_moves_only_its_share() {
        let before = [("a", 1.0), ("b", 1.0), ("c", 2.0)];
        let after = [("a", 1.0), ("b", 1.0), ("c", 2.0), ("d", 1.0)];
        let (r1, r2) = (router(&before), router(&after));
        let n = 50_000;
        let mut moved = 0;
        for i in 0..n {
            let key = format!("session:{i}");
            let (o1, o2) = (
                id_of(&before, &r1, key.as_bytes()),
                id_of(&after, &r2, key.as_bytes()),
            );
            if o1 != o2 {
                // A key only ever moves to the new backend.
                assert_eq!(o2, "d", "key {key} moved from {o1} to {o2}");
                moved += 1;
            }
        }
        // d's share is 1/5 of the keys.
        let share = moved as f64 / n as f64;
        assert!((share - 0.2).abs() < 0.02, "moved share {share}");

        // Removing it again moves exactly those keys back, and nothing else.
        for i in 0..n {
            let key = format!("session:{i}");
            let o2 = id_of(&after, &r2, key.as_bytes());
            if o2 != "d" {
                assert_eq!(o2, id_of(&before, &r1, key.as_bytes()));
            }
        }
    }

    #[test]
    fn order_of_the_list_does_not_matter() {
        let list1 = [("a", 1.0), ("b", 2.0), ("c", 1.0)];
        let list2 = [("c", 1.0), ("a", 1.0), ("b", 2.0)];
        let (r1, r2) = (router(&list1), router(&list2));
        for i in 0..2000 {
            let key = format!("x{i}");
            assert_eq!(
                id_of(&list1, &r1, key.as_bytes()),
                id_of(&list2, &r2, key.as_bytes())
            );
        }
    }

    #[test]
    fn bad_lists_are_refused() {
        assert_eq!(
            Router::new(std::iter::empty()).err(),
            Some(RouterError::Empty)
        );
        assert!(matches!(
            Router::new([("a", 0.0)]),
            Err(RouterError::Weight(_))
        ));
        assert!(matches!(
            Router::new([("a", f64::NAN)]),
            Err(RouterError::Weight(_))
        ));
        assert!(matches!(
            Router::new([("a", 1.0), ("a", 2.0)]),
            Err(RouterError::Duplicate(_))
        ));
    }
}
