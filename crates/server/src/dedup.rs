//! Remembering recent event ids so that a repeated id is not stored twice.
//!
//! Ids are kept as 64-bit hashes (fixed keys, so the same on every start) in a set with a
//! FIFO for eviction: about 16–24 bytes per id, so the default ten million ids cost well
//! under 300 MiB. A hash collision would make a new event look like a duplicate; at ten
//! million ids the chance is about one in two hundred thousand, and the ids of generated
//! events (no `id` sent) are never checked.

use std::collections::HashSet;
use std::hash::BuildHasher;

/// A bounded set of recently seen event ids.
pub struct DedupIndex {
    hasher: ahash::RandomState,
    seen: HashSet<u64, BuildNoHash>,
    /// Insertion order as a ring, oldest at `next` once full: sized once, so memory never
    /// doubles while growing.
    order: Vec<u64>,
    next: usize,
    capacity: usize,
}

/// The keys are already hashes; hashing them again would only cost time.
#[derive(Default, Clone, Copy)]
pub struct BuildNoHash;

/// See [`BuildNoHash`].
#[derive(Default)]
pub struct NoHash(u64);

impl std::hash::Hasher for NoHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl BuildHasher for BuildNoHash {
    type Hasher = NoHash;
    fn build_hasher(&self) -> NoHash {
        NoHash(0)
    }
}

impl DedupIndex {
    /// An empty index remembering at most `capacity` ids.
    pub fn new(capacity: usize) -> Self {
        DedupIndex {
            hasher: ahash::RandomState::with_seeds(
                0x6369_7479,
                0x7761_7264,
                0x6465_6475,
                0x7021_0001,
            ),
            // Sized up front: growing a table of millions copies it while both live.
            seen: HashSet::with_capacity_and_hasher(capacity.max(1), BuildNoHash),
            order: Vec::with_capacity(capacity.max(1)),
            next: 0,
            capacity: capacity.max(1),
        }
    }

    fn key(&self, id: &str) -> u64 {
        self.hasher.hash_one(id)
    }

    /// Records `id`; returns false when it was already there (a duplicate).
    pub fn insert(&mut self, id: &str) -> bool {
        let key = self.key(id);
        if !self.seen.insert(key) {
            return false;
        }
        if self.order.len() < self.capacity {
            self.order.push(key);
        } else {
            let old = std::mem::replace(&mut self.order[self.next], key);
            self.seen.remove(&old);
            self.next = (self.next + 1) % self.capacity;
        }
        true
    }

    /// Forgets `id` (used when the write it was reserved for failed). Its slot in the ring
    /// stays until it is reused; evicting a key that is no longer there is harmless.
    pub fn remove(&mut self, id: &str) {
        let key = self.key(id);
        self.seen.remove(&key);
    }

    /// Number of ids remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_refused_and_old_ids_evicted() {
        let mut index = DedupIndex::new(3);
        assert!(index.insert("a"));
        assert!(!index.insert("a"));
        assert!(index.insert("b") && index.insert("c") && index.insert("d"));
        assert_eq!(index.len(), 3);
        assert!(index.insert("a"), "evicted ids are forgotten");
        index.remove("a");
        assert!(index.insert("a"), "removed ids may be written again");
    }
}
