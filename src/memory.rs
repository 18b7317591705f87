//! Client buffer memory, counted over every client together, so that
//! `[limits] max_memory_bytes` bounds it the way Redis's `maxmemory-clients`
//! does: when the total goes over, the client holding the most is closed.
//!
//! Each client reports what its buffers hold when it changes (an atomic add,
//! no lock); only going over the limit takes the lock to find the biggest.

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

    /// Records that the client's buffers now hold `bytes`. When the total
    /// is then above `limit` (0: no limit), the biggest client is told to
    /// close; returns its id.
    pub fn set(&self, bytes: usize, limit: usize) -> Option<u64> {
        let before = self.usage.bytes.swap(bytes, Ordering::Relaxed);
        if before == bytes {
            return None;
        }
        let total = &self.registry.total;
        let now = if bytes > before {
            total.fetch_add(bytes - before, Ordering::Relaxed) + (bytes - before)
        } else {
            total.fetch_sub(before - bytes, Ordering::Relaxed) - (before - bytes)
        };
        if limit > 0 && now > limit && bytes > before {
            return self.registry.evict_largest();
        }
        None
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        self.set(0, 0);
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
}
