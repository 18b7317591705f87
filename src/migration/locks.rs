//! One move at a time per key: a client's read-through and the background
//! mover never copy the same key at once, so a slow copy can never land
//! after a delete that came between its read and its write.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;

/// Keys (database, name) being moved now.
#[derive(Debug, Default)]
pub struct KeyLocks {
    busy: Mutex<HashSet<(u32, Bytes)>>,
    released: Notify,
}

/// Held while a key is moved; dropping it lets the next mover of the key go.
#[must_use]
pub struct KeyGuard {
    locks: Arc<KeyLocks>,
    key: (u32, Bytes),
}

impl KeyLocks {
    /// Waits until no one else moves `key` in `db`, then holds it.
    pub async fn lock(self: &Arc<Self>, db: u32, key: &Bytes) -> KeyGuard {
        loop {
            // Registered before the check, so a release in between is seen.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if self.busy().insert((db, key.clone())) {
                return KeyGuard {
                    locks: self.clone(),
                    key: (db, key.clone()),
                };
            }
            released.await;
        }
    }

    fn busy(&self) -> std::sync::MutexGuard<'_, HashSet<(u32, Bytes)>> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keys held now.
    pub fn held(&self) -> usize {
        self.busy().len()
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        self.locks.busy().remove(&self.key);
        self.locks.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_second_mover_of_a_key_waits_for_the_first() {
        let locks = Arc::new(KeyLocks::default());
        let key = Bytes::from_static(b"k");
        let first = locks.lock(0, &key).await;
        // Another key, or the same name in another database, is free.
        let other = locks.lock(0, &Bytes::from_static(b"j")).await;
        let other_db = locks.lock(1, &key).await;
        let waiting = tokio::spawn({
            let (locks, key) = (locks.clone(), key.clone());
            async move {
                let _guard = locks.lock(0, &key).await;
            }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert_eq!(locks.held(), 3);
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiter gets the key once it is released")
            .unwrap();
        drop((other, other_db));
        assert_eq!(locks.held(), 0);
    }
}
