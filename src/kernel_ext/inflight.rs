// SPDX-License-Identifier: GPL-2.0

//! Counting the bios that a filter lets through until they complete.
//!
//! The block layer offers no hook at a bio's completion but its own
//! `bi_end_io`: a watched bio has its `bi_end_io` and `bi_private` saved in a
//! small record and replaced by ours, which restores them, drops the count
//! and hands the completion on. Records come from a mempool, so that a bio
//! that may wait is always watched.
//!
//! A bio made by `bio_chain()` completes into its parent: `bio_endio()`
//! unwinds a chain in a loop while it finds `bio_chain_endio` as the end_io,
//! but a watched link has ours instead, and handing its completion on from
//! ours would call the parent's end_io, ours again, one stack frame set per
//! link (a discard split into thousands of bios whose first link completes
//! last). So a watched link's completion is handed on from a work item of
//! the pool's queue: the stack stays flat however long the chain.
//!
//! C header: [`include/linux/mempool.h`](srctree/include/linux/mempool.h)

use core::ffi::c_void;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use kernel::alloc::flags::GFP_KERNEL;
use kernel::bindings;
use kernel::c_str;
use kernel::error::{code::*, Result};
use kernel::sync::Arc;
use kernel::types::Opaque;

use super::bio::IncomingBio;
use super::rcu;
use super::workqueue::WorkQueue;

/// A count of watched bios that have not completed yet.
pub(crate) struct InFlight {
    count: AtomicUsize,
}

impl InFlight {
    pub(crate) fn new() -> Result<Arc<Self>> {
        Ok(Arc::new(
            Self {
                count: AtomicUsize::new(0),
            },
            GFP_KERNEL,
        )?)
    }

    /// Counts one bio from now on; the count drops when the returned entry
    /// does, which [`IncomingBio::watch`] defers to the bio's completion.
    pub(crate) fn enter(self: &Arc<Self>) -> Entry {
        self.count.fetch_add(1, Ordering::AcqRel);
        Entry(self.clone())
    }

    /// How many counted bios have not completed.
    pub(crate) fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }
}

/// One counted bio (see [`InFlight::enter`]).
pub(crate) struct Entry(Arc<InFlight>);

impl Drop for Entry {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a watched bio carries until it completes.
///
/// # Invariants
///
/// Lives in an element of `pool` from [`IncomingBio::watch`] until the
/// bio's completion reads it out and gives the element back; `end_io` and
/// `private` are the bio's own, which the completion restores before
/// anyone else sees the bio; `work` is used only for a chain link.
struct Watch {
    end_io: bindings::bio_end_io_t,
    private: *mut c_void,
    pool: NonNull<bindings::mempool_t>,
    entry: Entry,
    /// The bio is a link of a chain (see the module documentation): its
    /// completion is handed on from `work`, queued on `queue`.
    chained: bool,
    bio: *mut bindings::bio,
    queue: NonNull<bindings::workqueue_struct>,
    work: Opaque<bindings::work_struct>,
}

/// The lockdep class of the chain links' work items.
struct StaticKey(Opaque<bindings::lock_class_key>);
// SAFETY: lockdep keys are made for concurrent use; this one is only handed
// to lockdep.
unsafe impl Sync for StaticKey {}
static CHAIN_KEY: StaticKey = StaticKey(Opaque::uninit());

/// Records handed out by every pool and not yet back; a pool is destroyed
/// only when this is 0, so that no completion can still use it.
static OUT: rcu::Running = rcu::Running::new();

/// Preallocated watch records, and the queue that hands on the completions
/// of chain links.
///
/// # Invariants
///
/// `pool` is a live mempool of elements of `size_of::<Watch>()` bytes,
/// destroyed in `Drop` only once no record is out; `chains` lives as long
/// (it is dropped after that).
pub(crate) struct WatchPool {
    pool: NonNull<bindings::mempool_t>,
    chains: WorkQueue,
}

// SAFETY: mempools may be used from any context and thread.
unsafe impl Send for WatchPool {}
// SAFETY: As above; `&WatchPool` only allocates from the pool.
unsafe impl Sync for WatchPool {}

impl WatchPool {
    /// A pool that keeps `reserve` records for hard times.
    pub(crate) fn new(reserve: i32) -> Result<Self> {
        let chains = WorkQueue::new(c_str!("blksnap_chain"), 0)?;
        // `mempool_create` is a macro over this function in 6.12.
        // SAFETY: `mempool_kmalloc`/`mempool_kfree` take the element size
        // as their data pointer, which is how mempool.h's own
        // `mempool_create_kmalloc_pool` uses them.
        let pool = unsafe {
            bindings::mempool_create_node_noprof(
                reserve,
                Some(bindings::mempool_kmalloc),
                Some(bindings::mempool_kfree),
                core::mem::size_of::<Watch>() as *mut c_void,
                bindings::GFP_KERNEL,
                bindings::NUMA_NO_NODE,
            )
        };
        // INVARIANT: a pool of `Watch`-sized elements, or none.
        Ok(Self {
            pool: NonNull::new(pool).ok_or(ENOMEM)?,
            chains,
        })
    }
}

impl Drop for WatchPool {
    fn drop(&mut self) {
        // Writes let through by a filter end once their device is done with
        // them; unload (the only time the pool goes) waits for them.
        OUT.wait_idle();
        // SAFETY: No record is out (above) and no one allocates any more:
        // the pool's owners are gone.
        unsafe { bindings::mempool_destroy(self.pool.as_ptr()) };
    }
}

impl IncomingBio<'_> {
    /// Lets the bio go on, counted in `entry` until it completes. A
    /// `REQ_NOWAIT` bio that finds no record free at once fails with
    /// `EAGAIN`; other bios wait for one.
    pub(crate) fn watch(&self, pool: &WatchPool, entry: Entry) -> Result {
        let gfp = if self.is_nowait() {
            bindings::GFP_NOWAIT
        } else {
            bindings::GFP_NOIO
        };
        // SAFETY: `pool` is live (type invariant).
        let rec =
            unsafe { bindings::mempool_alloc_noprof(pool.pool.as_ptr(), gfp) }.cast::<Watch>();
        if rec.is_null() {
            return Err(EAGAIN);
        }
        let bio = self.raw();
        // SAFETY: `bio` is live (type invariant of `IncomingBio`).
        let chained = unsafe { bindings::blk_filter_bio_chained(bio) };
        OUT.add();
        // The bio is being submitted and not yet completed (type invariant
        // of `IncomingBio`): its completion fields are ours to swap, and
        // `watch_end` restores them before anyone else looks.
        // SAFETY: `rec` is a fresh, kmalloc-aligned `Watch`-sized element;
        // the bio's fields are ours to swap (above).
        unsafe {
            rec.write(Watch {
                end_io: (*bio).bi_end_io,
                private: (*bio).bi_private,
                pool: pool.pool,
                entry,
                chained,
                bio,
                queue: pool.chains.as_raw(),
                work: Opaque::uninit(),
            });
            (*bio).bi_end_io = Some(watch_end);
            (*bio).bi_private = rec.cast();
        }
        Ok(())
    }
}

/// Completion of a watched bio.
///
/// # Safety
///
/// Called by the block layer only, for a bio set up by
/// [`IncomingBio::watch`].
unsafe extern "C" fn watch_end(bio: *mut bindings::bio) {
    // SAFETY: `bi_private` is the record `watch` wrote; we own it from now.
    let rec = unsafe { (*bio).bi_private.cast::<Watch>() };
    // SAFETY: As above. The bio is completing and is ours until we hand it
    // on: put back what its submitter set.
    unsafe {
        (*bio).bi_end_io = (*rec).end_io;
        (*bio).bi_private = (*rec).private;
    }
    // SAFETY: As above; a chain link's record stays in place until its work
    // item has run, and is not touched here after it is queued.
    if unsafe { (*rec).chained } {
        // SAFETY: `work` is ours to initialise (the record is not queued);
        // `chain_end` expects it inside a `Watch`, which it is. `queue`
        // outlives every record (invariant of `WatchPool`).
        unsafe {
            let work = (*rec).work.get();
            bindings::init_work_with_key(
                work,
                Some(chain_end),
                false,
                c_str!("blksnap_chain").as_char_ptr(),
                CHAIN_KEY.0.get(),
            );
            bindings::queue_work_on(
                bindings::wq_misc_consts_WORK_CPU_UNBOUND as i32,
                (*rec).queue.as_ptr(),
                work,
            );
        }
        return;
    }
    // SAFETY: Not a chain link: read the record out once, then give the
    // memory back.
    let w = unsafe { rec.read() };
    finish(bio, rec, w);
}

/// Work item of a chain link's record (see the module documentation).
///
/// # Safety
///
/// Called by the workqueue only, for the `work` of a record that
/// [`watch_end`] queued.
unsafe extern "C" fn chain_end(work: *mut bindings::work_struct) {
    // SAFETY: `work` is the `work` field of a live record, which is ours now
    // (`watch_end` queued it and left it).
    let rec = unsafe { kernel::container_of!(work, Watch, work) }.cast_mut();
    // SAFETY: As above: read the record out once; the workqueue does not
    // touch a work item after calling it, so its memory can go back.
    let w = unsafe { rec.read() };
    finish(w.bio, rec, w);
}

/// Gives back the record `rec` (read out as `w`) and hands on the
/// completion of `bio`, whose completion fields are restored.
fn finish(bio: *mut bindings::bio, rec: *mut Watch, w: Watch) {
    // SAFETY: `w.pool` outlives every record (invariant of `WatchPool`:
    // destroyed only once `OUT` is 0, which it is not until below).
    unsafe { bindings::mempool_free(rec.cast(), w.pool.as_ptr()) };
    // The device is done with the write: it stops counting.
    drop(w.entry);
    if let Some(end_io) = w.end_io {
        // SAFETY: The submitter's completion, called as `bio_endio` would
        // have called it, with its fields restored.
        unsafe { end_io(bio) };
    }
    // The last touch of the module: unload waits for the section to end
    // (see `WatchPool::drop`).
    OUT.done();
}
