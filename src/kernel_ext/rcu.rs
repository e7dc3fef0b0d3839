// SPDX-License-Identifier: GPL-2.0

//! RCU read-side sections, for the completions that must let unload know
//! when they are done with the module.
//!
//! A completion that runs the module's code drops a count as its last act;
//! unload waits for the count to reach zero, but the completion is still
//! in the module's code right after that. Dropping the count inside a read
//! section, and waiting for a grace period ([`synchronize`]) once the count
//! is zero, makes unload wait until every completion has left the section:
//! after it, only the function's return remains, and the module loader
//! waits for another grace period before it frees the module's memory.
//! [`Running`] is that count.
//!
//! C header: [`include/linux/rcupdate.h`](srctree/include/linux/rcupdate.h)

use core::marker::PhantomData;
use core::sync::atomic::{AtomicUsize, Ordering};

use kernel::bindings;

/// An RCU read-side critical section, from [`read_lock`] until it is
/// dropped.
///
/// # Invariants
///
/// Made only by [`read_lock`], after `rcu_read_lock()`; it stays on the
/// thread that made it (it is neither `Send` nor `Sync`).
pub(crate) struct ReadGuard(PhantomData<*mut ()>);

/// Enters a read section, left when the guard is dropped. It may nest; the
/// code inside must not sleep.
pub(crate) fn read_lock() -> ReadGuard {
    // SAFETY: Always allowed; the guard leaves the section on this thread.
    unsafe { bindings::rcu_read_lock() };
    // INVARIANT: the section was entered above.
    ReadGuard(PhantomData)
}

impl Drop for ReadGuard {
    fn drop(&mut self) {
        // SAFETY: This thread entered the section (type invariant).
        unsafe { bindings::rcu_read_unlock() };
    }
}

/// Waits until every read section entered before the call has been left.
/// Sleeps: process context only.
pub(crate) fn synchronize() {
    // SAFETY: Callers are in process context (documented above).
    unsafe { bindings::synchronize_rcu() };
}

/// A count of completions that will still run the module's code, which
/// unload waits on ([`Running::wait_idle`]).
pub(crate) struct Running(AtomicUsize);

impl Running {
    pub(crate) const fn new() -> Self {
        Self(AtomicUsize::new(0))
    }

    /// Counts one more completion, before the I/O that runs it starts.
    pub(crate) fn add(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }

    /// Counts a completion off, as its last touch of the module's data:
    /// inside a read section, so that [`Running::wait_idle`] also waits
    /// for the few instructions after the decrement.
    pub(crate) fn done(&self) {
        let _section = read_lock();
        self.0.fetch_sub(1, Ordering::AcqRel);
    }

    /// Waits until every counted completion has left the module's code but
    /// for its return. Nothing may be counted any more (unload). Sleeps:
    /// process context only.
    pub(crate) fn wait_idle(&self) {
        while self.0.load(Ordering::Acquire) != 0 {
            // SAFETY: Sleeping is allowed: process context (documented
            // above).
            unsafe { bindings::msleep(1) };
        }
        synchronize();
    }
}
