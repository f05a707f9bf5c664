//! The one lock helper every part of the coordinator uses.

use std::sync::{Mutex, MutexGuard};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not poison the coordinator for the others.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
