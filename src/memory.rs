//! Client buffer memory, counted over every client together, so that
//! `[limits] max_memory_bytes` bounds it the way Redis's `maxmemory-clients`
//! does: when the total goes over, the client holding the most is closed.
//!
//! Each client reports what its buffers hold when it changes (an atomic add,
//! no lock); only going over the limit takes the lock to find the biggest.
//! A request of many arguments is charged, before its arguments are framed,
//! what it will cost once decoded, split per backend and merged
//! ([`ARG_COST`] per argument), and refused when that would take the total
//! over the limit: no single request can take the process past it.

/// What one argument of a large request costs while it is served, besides
/// its own bytes (counted in the read buffer): its place in the framed
/// request, in the per-backend parts, the positions to merge by, the
/// decoded reply and its merge. Peak RSS grew 143-152 bytes per key (its
/// own 23 bytes included) for MGET, DEL, EXISTS and TOUCH of 1 and 2.5
/// million keys (`benches/request_memory.py`); a quarter more is charged.
pub const ARG_COST: usize = 192;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Every client's account; shared by the client handlers.
#[derive(Debug, Default)]
pub struct ClientMemory {
    total: AtomicUsize,
    /// Each client's account by id, to find the biggest.
    clients: Mutex<HashMap<u64, Arc<Usage>>>,
}

/// One client's usage and the signal that closes it.
#[derive(Debug, Default)]
pub struct Usage {
    bytes: AtomicUsize,
    /// Where the client connects from, for the status page's client list.
    peer: String,
    /// Notified when this client is to be closed for the total's sake; the
    /// client handler waits on it.
    pub evict: Notify,
}

/// A client's handle on its account; dropping it takes the client's bytes
/// off the total.
#[derive(Debug)]
pub struct Account {
    id: u64,
    usage: Arc<Usage>,
    registry: Arc<ClientMemory>,
    /// What the client's buffers hold, as last reported.
    buffers: AtomicUsize,
    /// What its requests in flight are charged.
    charged: AtomicUsize,
}

impl ClientMemory {
    /// Bytes all clients' buffers hold together.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Every client: id, peer address and buffer bytes, by id.
    pub fn clients(&self) -> Vec<(u64, String, usize)> {
        let Ok(clients) = self.clients.lock() else {
            return Vec::new();
        };
        let mut list: Vec<_> = clients
            .iter()
            .map(|(&id, u)| (id, u.peer.clone(), u.bytes.load(Ordering::Relaxed)))
            .collect();
        list.sort_unstable();
        list
    }

    /// Opens the account of client `id`, connected from `peer`.
    pub fn open(self: &Arc<Self>, id: u64, peer: &str) -> Account {
        let usage = Arc::new(Usage {
            peer: peer.to_string(),
            ..Usage::default()
        });
        if let Ok(mut clients) = self.clients.lock() {
            clients.insert(id, usage.clone());
        }
        Account {
            id,
            usage,
            registry: self.clone(),
            buffers: AtomicUsize::new(0),
            charged: AtomicUsize::new(0),
        }
    }

    /// Tells the client holding the most to close. Returns its id.
    fn evict_largest(&self) -> Option<u64> {
        let clients = self.clients.lock().ok()?;
        let (&id, usage) = clients
            .iter()
            .max_by_key(|(_, usage)| usage.bytes.load(Ordering::Relaxed))?;
        usage.evict.notify_one();
        Some(id)
    }
}

impl Account {
    pub fn usage(&self) -> &Usage {
        &self.usage
    }

    /// The usage, shared: a handle that outlives borrows of the account.
    pub fn usage_handle(&self) -> &Arc<Usage> {
        &self.usage
    }

    /// Records that the client's buffers now hold `bytes`. When the total
    /// is then above `limit` (0: no limit), the biggest client is told to
    /// close; returns its id.
    pub fn set(&self, bytes: usize, limit: usize) -> Option<u64> {
        let before = self.buffers.swap(bytes, Ordering::Relaxed);
        if before == bytes {
            return None;
        }
        let now = if bytes > before {
            self.add(bytes - before)
        } else {
            self.sub(before - bytes)
        };
        if limit > 0 && now > limit && bytes > before {
            return self.registry.evict_largest();
        }
        None
    }

    /// Charges a request `bytes` while it is served, if the total stays
    /// within `limit` (0: no limit); `false`, and nothing charged, if not.
    pub fn try_charge(&self, bytes: usize, limit: usize) -> bool {
        let now = self.add(bytes);
        if limit > 0 && now > limit {
            let _ = self.sub(bytes);
            return false;
        }
        self.charged.fetch_add(bytes, Ordering::Relaxed);
        true
    }

    /// Takes back a charge of [`Account::try_charge`], the request served.
    pub fn release(&self, bytes: usize) {
        if bytes > 0 {
            self.charged.fetch_sub(bytes, Ordering::Relaxed);
            let _ = self.sub(bytes);
        }
    }

    /// Adds to the client's usage and the total; the new total.
    fn add(&self, bytes: usize) -> usize {
        self.usage.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.registry.total.fetch_add(bytes, Ordering::Relaxed) + bytes
    }

    /// Takes from the client's usage and the total; the new total.
    fn sub(&self, bytes: usize) -> usize {
        self.usage.bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.registry.total.fetch_sub(bytes, Ordering::Relaxed) - bytes
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        self.set(0, 0);
        self.release(self.charged.load(Ordering::Relaxed));
        if let Ok(mut clients) = self.registry.clients.lock() {
            clients.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_biggest_client_is_evicted_when_the_total_is_over() {
        let memory = Arc::new(ClientMemory::default());
        let a = memory.open(1, "a");
        let b = memory.open(2, "b");
        assert_eq!(a.set(600, 1000), None);
        assert_eq!(b.set(300, 1000), None);
        assert_eq!(memory.total(), 900);
        assert_eq!(
            memory.clients(),
            vec![(1, "a".to_string(), 600), (2, "b".to_string(), 300)]
        );
        // b grows past the limit, but a holds the most.
        assert_eq!(b.set(500, 1000), Some(1));
        assert_eq!(memory.total(), 1100);
        // Shrinking never evicts.
        assert_eq!(b.set(450, 1000), None);
        drop(a);
        assert_eq!(memory.total(), 450);
        assert_eq!(b.set(2000, 0), None, "0 is no limit");
        drop(b);
        assert_eq!(memory.total(), 0);
    }

    #[test]
    fn a_request_is_charged_within_the_limit_or_not_at_all() {
        let memory = Arc::new(ClientMemory::default());
        let a = memory.open(1, "a");
        let b = memory.open(2, "b");
        assert_eq!(a.set(100, 1000), None);
        assert!(a.try_charge(600, 1000));
        assert!(!b.try_charge(400, 1000), "700 + 400 is over");
        assert_eq!(memory.total(), 700);
        assert!(b.try_charge(300, 1000));
        // Buffers and charges add up in the client's usage.
        assert_eq!(memory.clients()[0].2, 700);
        a.release(600);
        assert_eq!(memory.total(), 400);
        drop(b);
        assert_eq!(memory.total(), 100);
        assert!(a.try_charge(usize::MAX / 4, 0), "0 is no limit");
        drop(a);
        assert_eq!(memory.total(), 0);
    }
}
