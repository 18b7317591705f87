//! twemproxy's `distribution: ketama` with `hash: fnv1a_64`, computed the way
//! nutcracker computes it, so keys written through a twemproxy pool can be
//! found where it put them (the old layout of a migration, see
//! [`crate::migration`]).
//!
//! ```text
//! points(server)  = floor(weight / total * 40 * servers + 1e-10) * 4   (f32, as in C)
//! continuum       = for i in 0..points/4: md5("<name>-<i>") cut into four
//!                   little-endian u32 points, each pointing at the server
//! hash(key)       = fnv1a_64 truncated to 32 bits, bytes sign-extended
//!                   (twemproxy reads them as C `char`)
//! server(key)     = the first point >= hash(key), wrapping to the first
//! ```
//!
//! A server's name is what twemproxy hashes: the name after its weight in
//! `servers:` (`127.0.0.1:6380:1 name`), or else `host:port`. twemproxy's
//! `hash_tag` is not applied.

use md5::{Digest, Md5};

/// Points per server for an average weight (twemproxy's
/// `KETAMA_POINTS_PER_SERVER`).
const POINTS_PER_SERVER: u32 = 160;
/// Points cut from one MD5 (`KETAMA_POINTS_PER_HASH`).
const POINTS_PER_HASH: u32 = 4;

/// A ketama continuum over servers given in order.
#[derive(Debug, Clone)]
pub struct Ketama {
    /// (point, server index), sorted by point.
    points: Vec<(u32, usize)>,
}

impl Ketama {
    /// Builds the continuum over `(name, weight)` in twemproxy's server order.
    /// Weights are twemproxy's integers; `None` without a server of weight > 0.
    pub fn new<'a>(servers: impl IntoIterator<Item = (&'a str, u32)>) -> Option<Ketama> {
        let servers: Vec<(&str, u32)> = servers.into_iter().collect();
        let total: u32 = servers.iter().map(|(_, w)| w).sum();
        if total == 0 {
            return None;
        }
        let live = servers.len() as f32;
        let mut points = Vec::new();
        for (index, (name, weight)) in servers.iter().enumerate() {
            // float pct; floorf((float)(pct * 160 / 4 * (float)n + 0.0000000001)) * 4
            let pct = *weight as f32 / total as f32;
            let scaled = (pct * (POINTS_PER_SERVER / POINTS_PER_HASH) as f32 * live) as f64;
            let count = ((scaled + 0.000_000_000_1) as f32).floor() as u32 * POINTS_PER_HASH;
            for pointer in 0..count / POINTS_PER_HASH {
                let digest = Md5::digest(format!("{name}-{pointer}").as_bytes());
                for chunk in digest.chunks_exact(4) {
                    let point = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                    points.push((point, index));
                }
            }
        }
        // twemproxy's qsort compares the values only; equal values are rare
        // enough (2^-32 per pair) that their order is left as sorted here.
        points.sort_by_key(|&(point, _)| point);
        (!points.is_empty()).then_some(Ketama { points })
    }

    /// The index of the server holding `key`.
    pub fn server(&self, key: &[u8]) -> usize {
        let hash = fnv1a_64_32(key);
        let at = self.points.partition_point(|&(point, _)| point < hash);
        self.points.get(at).unwrap_or(&self.points[0]).1
    }
}

/// twemproxy's `hash_fnv1a_64`: the 64-bit FNV-1a constants truncated to 32
/// bits, each byte sign-extended as a C `char`.
pub fn fnv1a_64_32(key: &[u8]) -> u32 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64 as u32;
    for &byte in key {
        hash ^= byte as i8 as i32 as u32;
        hash = hash.wrapping_mul(0x0100_0000_01b3_u64 as u32);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_twemproxys_truncated_constants() {
        assert_eq!(fnv1a_64_32(b""), 0x8422_2325);
        // One step by hand: (0x84222325 ^ 'a') * 0x1b3 mod 2^32.
        let a = (0x8422_2325u32 ^ 0x61).wrapping_mul(0x1b3);
        assert_eq!(fnv1a_64_32(b"a"), a);
        // A byte over 0x7f is sign-extended before the xor.
        let high = (0x8422_2325u32 ^ 0xffff_ff80).wrapping_mul(0x1b3);
        assert_eq!(fnv1a_64_32(&[0x80]), high);
    }

    #[test]
    fn each_server_gets_points_by_weight() {
        let ring = Ketama::new([("a:1", 1), ("b:1", 1), ("c:1", 2)]).unwrap();
        let count = |i| ring.points.iter().filter(|p| p.1 == i).count();
        // 160 points per server on average: 120, 120, 240 for weights 1, 1, 2.
        assert_eq!((count(0), count(1), count(2)), (120, 120, 240));
        assert!(Ketama::new([("a", 0)]).is_none());
    }

    #[test]
    fn keys_spread_and_stay_put() {
        let ring =
            Ketama::new([("127.0.0.1:1", 1), ("127.0.0.1:2", 1), ("127.0.0.1:3", 1)]).unwrap();
        let mut seen = [0; 3];
        for i in 0..3000 {
            let key = format!("session:{i}");
            let server = ring.server(key.as_bytes());
            assert_eq!(server, ring.server(key.as_bytes()));
            seen[server] += 1;
        }
        assert!(seen.iter().all(|&n| n > 600), "{seen:?}");
    }
}
