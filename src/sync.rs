//! Locks that survive a panicking holder. p11ca's shared state (queues, counters, the kept
//! PIN) stays consistent between statements, so a lock poisoned by a panic elsewhere is taken
//! over rather than turned into a second panic. Depends on nothing of the crate.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Lock `m`, taking it over if a panicking thread left it poisoned.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
