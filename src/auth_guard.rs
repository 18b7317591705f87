//! Bounds on password guessing: after a few wrong passwords on one
//! connection each further one is answered later (doubling, up to 2 s),
//! and the connection is closed at `[limits] auth_failures_per_connection`;
//! an address with more than `[limits] auth_failures_per_address` wrong
//! passwords in the last minute has its connections closed at their next
//! attempt until the minute has passed. Pure decisions over counts; the
//! client handler delays, answers and closes. And the one comparison of
//! secrets (passwords, the admin token).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong passwords on one connection answered at once; later ones wait.
const FREE_FAILURES: u32 = 3;
/// The longest a wrong password's answer waits.
const MAX_DELAY: Duration = Duration::from_secs(2);
/// How long an address's failures count.
const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most; the oldest window is forgotten first.
const MAX_ADDRESSES: usize = 10_000;

/// Whether two secrets are equal, in a time that tells nothing about them:
/// their digests are compared, every byte, so neither a common prefix nor
/// a difference in length shows in the timing.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use sha1::{Digest, Sha1};
    let (a, b) = (Sha1::digest(a), Sha1::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// What to do after a wrong password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Answer now.
    Answer,
    /// Answer after this long.
    Delay(Duration),
    /// Answer, then close the connection.
    Close,
}

/// Failures per source address in the current window, shared by every
/// client of the proxy.
#[derive(Debug, Default)]
pub struct AuthGuard {
    addresses: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl AuthGuard {
    /// Whether `address` may try a password now: `false` once it has
    /// failed more than `limit` times in the last minute (0: no limit).
    pub fn admits(&self, address: Option<IpAddr>, limit: u32, now: Instant) -> bool {
        let Some(address) = address else {
            return true;
        };
        let Ok(addresses) = self.addresses.lock() else {
            return true;
        };
        match addresses.get(&address) {
            Some(&(since, failures)) if now.duration_since(since) < WINDOW => {
                limit == 0 || failures <= limit
            }
            _ => true,
        }
    }

    /// Counts a wrong password from `address`, the connection's
    /// `failures`-th; what to do with its answer.
    pub fn failed(
        &self,
        address: Option<IpAddr>,
        failures: u32,
        per_connection: u32,
        per_address: u32,
        now: Instant,
    ) -> Verdict {
        let mut over_address = false;
        if let (Some(address), Ok(mut addresses)) = (address, self.addresses.lock()) {
            if addresses.len() >= MAX_ADDRESSES && !addresses.contains_key(&address) {
                addresses.retain(|_, (since, _)| now.duration_since(*since) < WINDOW);
                if addresses.len() >= MAX_ADDRESSES {
                    if let Some(oldest) = addresses
                        .iter()
                        .min_by_key(|(_, (since, _))| *since)
                        .map(|(a, _)| *a)
                    {
                        addresses.remove(&oldest);
                    }
                }
            }
            let entry = addresses.entry(address).or_insert((now, 0));
            if now.duration_since(entry.0) >= WINDOW {
                *entry = (now, 0);
            }
            entry.1 = entry.1.saturating_add(1);
            over_address = per_address > 0 && entry.1 > per_address;
        }
        if over_address || (per_connection > 0 && failures >= per_connection) {
            return Verdict::Close;
        }
        match failures.checked_sub(FREE_FAILURES + 1) {
            None => Verdict::Answer,
            Some(extra) => {
                let delay = Duration::from_millis(100).saturating_mul(1 << extra.min(5));
                Verdict::Delay(delay.min(MAX_DELAY))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_slowed_then_closed() {
        let guard = AuthGuard::default();
        let now = Instant::now();
        let verdicts: Vec<Verdict> = (1..=10)
            .map(|n| guard.failed(None, n, 10, 0, now))
            .collect();
        assert_eq!(&verdicts[..3], &[Verdict::Answer; 3]);
        assert_eq!(verdicts[3], Verdict::Delay(Duration::from_millis(100)));
        assert_eq!(verdicts[4], Verdict::Delay(Duration::from_millis(200)));
        assert_eq!(verdicts[8], Verdict::Delay(MAX_DELAY));
        assert_eq!(verdicts[9], Verdict::Close);
    }

    #[test]
    fn an_address_is_refused_for_the_rest_of_its_minute() {
        let guard = AuthGuard::default();
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let now = Instant::now();
        for n in 1..=5 {
            // A fresh connection each time: only the address counts.
            assert_ne!(guard.failed(Some(ip), 1, 10, 5, now), Verdict::Close, "{n}");
        }
        assert!(guard.admits(Some(ip), 5, now));
        assert_eq!(guard.failed(Some(ip), 1, 10, 5, now), Verdict::Close);
        assert!(!guard.admits(Some(ip), 5, now));
        let other: IpAddr = "127.0.0.10".parse().unwrap();
        assert!(guard.admits(Some(other), 5, now));
        assert!(guard.admits(Some(ip), 5, now + WINDOW));
    }
}
