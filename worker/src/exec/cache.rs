//! A small least-recently-used cache of builds, shared by a worker's slots: cargo's test
//! binaries and Go's compiled packages are built once per session and kept for the newest few
//! sessions. An evicted value is dropped when the last job still using it lets it go (a Go
//! session's directory of binaries is removed then).
//!
//! It must not build anything: callers put in what they built (or a cell to build it once).

use std::sync::{Arc, Mutex};

use super::lock::lock;

/// Values by key, at most `capacity` of them; the least recently used goes first.
pub struct BuildCache<K, V> {
    capacity: usize,
    /// Most recently used last.
    entries: Mutex<Vec<(K, Arc<V>)>>,
}

impl<K: PartialEq + Clone, V> BuildCache<K, V> {
    pub fn new(capacity: usize) -> Self {
        BuildCache { capacity: capacity.max(1), entries: Mutex::new(Vec::new()) }
    }

    /// The value for `key`, made by `make` when there is none; either way it becomes the most
    /// recently used.
    pub fn get_or_insert_with<E>(&self, key: &K, make: impl FnOnce() -> Result<V, E>) -> Result<Arc<V>, E> {
        let mut entries = lock(&self.entries);
        if let Some(at) = entries.iter().position(|(k, _)| k == key) {
            let entry = entries.remove(at);
            let value = Arc::clone(&entry.1);
            entries.push(entry);
            return Ok(value);
        }
        let value = Arc::new(make()?);
        entries.push((key.clone(), Arc::clone(&value)));
        if entries.len() > self.capacity {
            entries.remove(0);
        }
        Ok(value)
    }

    /// The keys kept, least recently used first.
    #[cfg(test)]
    pub fn keys(&self) -> Vec<K> {
        lock(&self.entries).iter().map(|(k, _)| k.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_goes_and_lives_on_while_used() {
        let cache: BuildCache<u32, String> = BuildCache::new(2);
        let one = cache.get_or_insert_with(&1, || Ok::<_, ()>("one".into())).expect("one");
        cache.get_or_insert_with(&2, || Ok::<_, ()>("two".into())).expect("two");
        cache.get_or_insert_with(&1, || Err(())).expect("1 is kept, not made again");
        cache.get_or_insert_with(&3, || Ok::<_, ()>("three".into())).expect("three");
        assert_eq!(cache.keys(), vec![1, 3], "2 was the least recently used");
        assert_eq!(cache.get_or_insert_with(&4, || Err("no")), Err("no"), "a failed make keeps nothing");
        assert_eq!(cache.keys(), vec![1, 3]);
        assert_eq!(*one, "one");
    }
}
