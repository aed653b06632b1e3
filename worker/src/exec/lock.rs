//! Locking a std mutex the worker's way.

use std::sync::{Mutex, MutexGuard};

/// Lock a mutex, reusing it if a panic poisoned it: every value the worker guards this way
/// (sets, maps, output buffers) is changed by single calls that cannot leave it half-updated.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
