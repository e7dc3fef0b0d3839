// SPDX-License-Identifier: GPL-2.0

//! Asynchronous page I/O: a read or write of whole pages that no thread
//! waits for. Its completion wakes the owner (which queues a work item),
//! and the owner collects the result and the pages in process context.
//!
//! C header: [`include/linux/bio.h`](srctree/include/linux/bio.h)

use core::mem::MaybeUninit;
use core::ptr::null_mut;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use kernel::alloc::KVec;
use kernel::bindings;
use kernel::error::{code::EBUSY, code::EINVAL, code::EIO, Error, Result};
use kernel::page::{Page, PAGE_SIZE};
use kernel::sync::Arc;

use super::bioset::{alloc_bio, FRONT_PAD};
use super::block::BdevFile;
use super::rcu;

/// Pages that readers share: nothing changes them while the `Arc` is
/// shared, and only its last holder gets them back.
pub(crate) struct PageVec {
    pages: KVec<Page>,
}

impl PageVec {
    pub(crate) fn new(pages: KVec<Page>) -> Self {
        Self { pages }
    }

    pub(crate) fn pages(&self) -> &[Page] {
        &self.pages
    }

    /// The pages back, if `this` was the last holder; otherwise `this` is
    /// dropped and the pages go with the last holder.
    pub(crate) fn into_pages(this: Arc<Self>) -> Option<KVec<Page>> {
        let unique = this.into_unique_or_drop()?;
        let mut v = core::pin::Pin::into_inner(unique);
        Some(core::mem::take(&mut v.pages))
    }
}

/// The pages of an asynchronous I/O, which it owns while it runs: the I/O
/// reads into or writes from them, and hands them back when collected.
pub(crate) enum IoPages {
    /// Pages of the I/O alone (it may read into them).
    Own(KVec<Page>),
    /// Pages shared with readers (only written from).
    Shared(Arc<PageVec>),
}

impl IoPages {
    fn pages(&self) -> &[Page] {
        match self {
            IoPages::Own(v) => v,
            IoPages::Shared(p) => p.pages(),
        }
    }
}

/// What an asynchronous I/O tells its owner when it completes.
pub(crate) trait IoWaker: Send + Sync + Sized {
    /// The I/O started by [`AsyncIo::start`] with `this` as waker has
    /// completed; [`AsyncIo::finish`] now returns its result. Runs in the
    /// I/O's completion context, which may be an interrupt: it must not
    /// sleep or take locks that process context takes with interrupts on
    /// (queueing a work item is what it is for).
    fn io_completed(this: Arc<Self>);
}

/// What the module's bio set keeps in front of each of its bios, for the
/// first bio of an asynchronous I/O.
///
/// # Invariants
///
/// Between [`AsyncIo::start`] and [`AsyncIo::finish`], `pages` is
/// initialised and `waker` is `Arc::into_raw` of the waker until the
/// completion takes it back; `completed` is set only after that, and the
/// completion touches nothing once it is set.
#[repr(C)]
pub(super) struct IoRecord {
    /// The I/O's pages, from `start` until `finish`.
    pages: MaybeUninit<IoPages>,
    /// `Arc::into_raw` of the waker, taken back by the completion.
    waker: *const core::ffi::c_void,
    /// Set by the completion, after it took the waker.
    completed: AtomicBool,
}

// The record lives in the front pad of the module's bio set.
const _: () = assert!(core::mem::size_of::<IoRecord>() <= FRONT_PAD as usize);

/// The record in front of `bio`.
///
/// # Safety
///
/// `bio` comes from the module's bio set.
unsafe fn record(bio: *mut bindings::bio) -> *mut IoRecord {
    // SAFETY: The bio set puts `FRONT_PAD` bytes, aligned like the bio
    // (which is more than `IoRecord` needs), in front of each bio.
    unsafe { bio.cast::<u8>().sub(FRONT_PAD as usize).cast::<IoRecord>() }
}

/// At most one asynchronous I/O at a time, embedded in its owner.
///
/// # Invariants
///
/// `bio` is null (no I/O), [`STARTING`] (a [`AsyncIo::start`] call is
/// building one: no other may start), or the first bio of an I/O started
/// by [`AsyncIo::start`] (ours until [`AsyncIo::finish`] puts it), whose
/// record holds its pages; the record's waker holds a reference to this
/// object's owner until the I/O completes.
pub(crate) struct AsyncIo {
    bio: AtomicPtr<bindings::bio>,
}

// SAFETY: The bio pointer is handed over with atomic operations; the bio is
// used by one thread at a time.
unsafe impl Send for AsyncIo {}
// SAFETY: As above.
unsafe impl Sync for AsyncIo {}

/// The value of [`AsyncIo::bio`] while `start` builds an I/O: never a bio.
const STARTING: *mut bindings::bio = core::ptr::NonNull::dangling().as_ptr();

impl AsyncIo {
    pub(crate) const fn new() -> Self {
        Self {
            bio: AtomicPtr::new(null_mut()),
        }
    }

    /// Starts reading `len` bytes at `sector` of `bdev` into `pages` (or
    /// writing them), bypassing filters; `waker` is told when it completes.
    /// `waker` should own this `AsyncIo`: it is kept alive until then.
    /// Fails, handing the pages back, if an I/O is already in flight or the
    /// pages are too few for `len`.
    pub(crate) fn start<T: IoWaker>(
        &self,
        bdev: &BdevFile,
        sector: u64,
        pages: IoPages,
        len: usize,
        write: bool,
        waker: Arc<T>,
    ) -> core::result::Result<(), (Error, IoPages)> {
        let npages = len.div_ceil(PAGE_SIZE);
        if npages == 0
            || npages > pages.pages().len()
            || matches!(pages, IoPages::Shared(_)) && !write
        {
            return Err((EINVAL, pages));
        }
        // One I/O at a time, whoever calls: the claim is atomic.
        if self
            .bio
            .compare_exchange(null_mut(), STARTING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err((EBUSY, pages));
        }
        let opf = if write {
            bindings::req_op_REQ_OP_WRITE | bindings::REQ_SYNC
        } else {
            bindings::req_op_REQ_OP_READ
        };
        let max_vecs = bindings::BIO_MAX_VECS as usize;
        let first_vecs = npages.min(max_vecs) as u16;
        // SAFETY: `bdev` is open; the bio is ours.
        let parent = match unsafe { alloc_bio(bdev.as_raw(), first_vecs, opf) } {
            Ok(b) => b,
            Err(e) => {
                // INVARIANT: no I/O after all.
                self.bio.store(null_mut(), Ordering::Release);
                return Err((e, pages));
            }
        };
        // SAFETY: `parent` comes from the module's bio set; its record is
        // ours until the bio is put. The waker reference goes to the
        // completion.
        let rec = unsafe {
            let rec = record(parent);
            (*rec).pages.write(pages);
            (*rec).waker = Arc::into_raw(waker).cast();
            core::ptr::addr_of_mut!((*rec).completed).write(AtomicBool::new(false));
            (*parent).bi_iter.bi_sector = sector;
            (*parent).bi_end_io = Some(end_io::<T>);
            rec
        };
        // From here the parent always completes (submitted or ended below),
        // and its completion drops the count.
        RUNNING.fetch_add(1, Ordering::AcqRel);
        // SAFETY: The record owns the pages until `finish`, which takes
        // them only after the parent completed, after its last use here.
        let pg: &[Page] = unsafe { (*rec).pages.assume_init_ref().pages() };
        // INVARIANT: the record holds the pages and the waker.
        self.bio.store(parent, Ordering::Release);
        let mut ok = fill(parent, pg, 0, len, first_vecs as usize);
        let mut done_pages = first_vecs as usize;
        while ok && done_pages < npages {
            let vecs = (npages - done_pages).min(max_vecs);
            // SAFETY: As for `parent`.
            let child = match unsafe { alloc_bio(bdev.as_raw(), vecs as u16, opf) } {
                Ok(c) => c,
                Err(_) => {
                    ok = false;
                    break;
                }
            };
            // SAFETY: A fresh bio of ours.
            unsafe { (*child).bi_iter.bi_sector = sector + ((done_pages * PAGE_SIZE) as u64 >> 9) };
            ok = fill(child, pg, done_pages, len, vecs);
            // SAFETY: Both bios are ours and not submitted; the child ends
            // into the parent, which completes after all its children.
            unsafe { bindings::bio_chain(child, parent) };
            if !ok {
                // SAFETY: Chained: ending it counts it off the parent.
                unsafe {
                    (*child).bi_status = bindings::BLK_STS_RESOURCE;
                    bindings::bio_endio(child);
                }
                break;
            }
            // SAFETY: Fully set up and chained.
            unsafe { bindings::submit_bio(child) };
            done_pages += vecs;
        }
        // SAFETY: The parent is set up (or failed: then it ends at once,
        // after any child submitted, through the same completion).
        unsafe {
            if ok {
                bindings::submit_bio(parent);
            } else {
                (*parent).bi_status = bindings::BLK_STS_RESOURCE;
                bindings::bio_endio(parent);
            }
        }
        Ok(())
    }

    /// The pages and the result of the I/O, once it has completed (and
    /// only once); `None` before, or with no I/O.
    pub(crate) fn finish(&self) -> Option<(IoPages, Result)> {
        let bio = self.bio.load(Ordering::Acquire);
        if bio.is_null() || bio == STARTING {
            return None;
        }
        // SAFETY: A bio of ours from `start` (type invariant), alive until
        // we put it below.
        let rec = unsafe { record(bio) };
        // SAFETY: As above; the completion only sets the flag after it is
        // done with the bio.
        if !unsafe { (*rec).completed.load(Ordering::Acquire) } {
            return None;
        }
        if self
            .bio
            .compare_exchange(bio, null_mut(), Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return None;
        }
        // SAFETY: Completed, and now ours alone: its pages were written by
        // `start` and are taken once, here; then the bio goes.
        unsafe {
            let status = (*bio).bi_status;
            let pages = (*rec).pages.assume_init_read();
            bindings::bio_put(bio);
            let r = if status == 0 { Ok(()) } else { Err(EIO) };
            Some((pages, r))
        }
    }
}

impl Drop for AsyncIo {
    fn drop(&mut self) {
        // An I/O in flight keeps our owner alive: whatever is left here has
        // completed and was not collected.
        drop(self.finish());
    }
}

/// Adds the pages `pages[first..first + vecs]` of an I/O of `len` bytes to
/// `bio`; `false` if the bio takes fewer.
fn fill(bio: *mut bindings::bio, pages: &[Page], first: usize, len: usize, vecs: usize) -> bool {
    for (i, p) in pages.iter().enumerate().skip(first).take(vecs) {
        let n = (len - i * PAGE_SIZE).min(PAGE_SIZE);
        // SAFETY: The bio is ours and not submitted; the page stays
        // allocated until the I/O is collected (the record owns it).
        let added = unsafe { bindings::bio_add_page(bio, p.as_ptr(), n as u32, 0) } as usize;
        if added != n {
            return false;
        }
    }
    true
}

/// # Safety
///
/// Called by the block layer once for the first bio of an I/O started by
/// [`AsyncIo::start`] with this `T`, when the I/O has completed.
unsafe extern "C" fn end_io<T: IoWaker>(bio: *mut bindings::bio) {
    // SAFETY: Our bio, from the module's set; its record's waker is the
    // `Arc<T>` that `start` leaked for us. Once the flag is set the owner
    // may put the bio at any time: nothing touches it after.
    let waker = unsafe {
        let rec = record(bio);
        let w = (*rec).waker.cast::<T>();
        (*rec).completed.store(true, Ordering::Release);
        Arc::from_raw(w)
    };
    T::io_completed(waker);
    // The last touch of the module (see `wait_idle`).
    let _rcu = rcu::read_lock();
    RUNNING.fetch_sub(1, Ordering::AcqRel);
}

/// Asynchronous I/Os whose completion has not yet returned.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// Waits until no completion of an asynchronous I/O is still running, in
/// the module's code or in what its waker does (unload, once nothing
/// starts I/O any more: then the wakers' queues may go). Process context.
pub(crate) fn wait_idle() {
    while RUNNING.load(Ordering::Acquire) != 0 {
        // SAFETY: Sleeping is allowed: process context (documented above).
        unsafe { bindings::msleep(1) };
    }
    // Each completion drops the count inside a read section: after the
    // grace period, none is still in our code but for its return.
    rcu::synchronize();
}
