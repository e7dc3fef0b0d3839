// SPDX-License-Identifier: GPL-2.0

//! A workqueue of the module's own, for the copy-on-write and image I/O
//! workers (6.12's `kernel::workqueue` only offers the system queues).
//!
//! C header: [`include/linux/workqueue.h`](srctree/include/linux/workqueue.h)

use core::ptr::NonNull;

use kernel::alloc::flags::GFP_KERNEL;
use kernel::bindings;
use kernel::error::{code::ENOMEM, Result};
use kernel::str::CStr;
use kernel::workqueue::Queue;

use super::mem::NoIo;

/// An unbound workqueue that may run while memory is reclaimed.
///
/// # Invariants
///
/// `ptr` is a workqueue from `alloc_workqueue`, destroyed only in `Drop`.
pub(crate) struct WorkQueue {
    ptr: NonNull<bindings::workqueue_struct>,
}

// SAFETY: Workqueues may be used and destroyed from any thread.
unsafe impl Send for WorkQueue {}
// SAFETY: Queueing work is thread-safe.
unsafe impl Sync for WorkQueue {}

impl WorkQueue {
    /// A queue running at most `max_active` items at once (0: the default).
    pub(crate) fn new(name: &'static CStr, max_active: i32) -> Result<Self> {
        let flags = bindings::wq_flags_WQ_UNBOUND | bindings::wq_flags_WQ_MEM_RECLAIM;
        // SAFETY: "%s" with one string argument is a valid format; `name` is
        // a NUL-terminated static string.
        let ptr = unsafe {
            bindings::alloc_workqueue(c"%s".as_ptr().cast(), flags, max_active, name.as_char_ptr())
        };
        // INVARIANT: a fresh workqueue, ours alone.
        Ok(Self {
            ptr: NonNull::new(ptr).ok_or(ENOMEM)?,
        })
    }

    /// The raw workqueue, for the abstractions of this layer.
    pub(super) fn as_raw(&self) -> NonNull<bindings::workqueue_struct> {
        self.ptr
    }

    fn queue(&self) -> &Queue {
        // SAFETY: The workqueue lives as long as `self` (type invariant).
        unsafe { Queue::from_raw(self.ptr.as_ptr()) }
    }

    /// Runs `f` on the queue. Fails only if memory for the work item runs
    /// out; then `f` is dropped unrun.
    pub(crate) fn spawn(&self, f: impl FnOnce() + Send + 'static) -> Result {
        let _noio = NoIo::enter();
        self.queue().try_spawn(GFP_KERNEL, f).map_err(|_| ENOMEM)
    }

    /// Queues a work item that lives outside the queue (a preallocated one:
    /// nothing is allocated). See [`Queue::enqueue`].
    pub(crate) fn enqueue<W>(&self, w: W) -> W::EnqueueOutput
    where
        W: kernel::workqueue::RawWorkItem<0> + Send + 'static,
    {
        self.enqueue_as::<W, 0>(w)
    }

    /// Queues the work item `ID` of an object that has several.
    pub(crate) fn enqueue_as<W, const ID: u64>(&self, w: W) -> W::EnqueueOutput
    where
        W: kernel::workqueue::RawWorkItem<ID> + Send + 'static,
    {
        self.queue().enqueue::<W, ID>(w)
    }

    /// Waits until the queue is empty, including work queued by work.
    pub(crate) fn drain(&self) {
        // SAFETY: The workqueue is valid (type invariant).
        unsafe { bindings::drain_workqueue(self.ptr.as_ptr()) };
    }
}

impl Drop for WorkQueue {
    fn drop(&mut self) {
        // SAFETY: Ours to destroy (type invariant); this drains it first.
        // Callers make sure this does not run from a work item of the queue.
        unsafe { bindings::destroy_workqueue(self.ptr.as_ptr()) };
    }
}
