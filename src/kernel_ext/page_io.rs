// SPDX-License-Identifier: GPL-2.0

//! Page I/O: reads and writes of whole pages, bypassing filters, built
//! in one place ([`PageChain`]) as one parent bio and children chained to
//! it. [`AsyncIo`] is such an I/O that no thread waits for: its completion
//! wakes the owner (which queues a work item), and the owner collects the
//! result and the pages in process context. [`page_io`] is the same chain
//! and a wait.
//!
//! C header: [`include/linux/bio.h`](srctree/include/linux/bio.h)

use core::mem::MaybeUninit;
use core::ptr::null_mut;
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use kernel::alloc::KVec;
use kernel::bindings;
use kernel::error::{code::EBUSY, code::EINVAL, code::EIO, Error, Result};
use kernel::page::{Page, PAGE_SIZE};
use kernel::sync::Arc;

use super::bio::submit_and_wait;
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
        dir: Dir,
        waker: Arc<T>,
    ) -> core::result::Result<(), (Error, IoPages)> {
        if matches!(pages, IoPages::Shared(_)) && dir == Dir::Read {
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
        let chain = match PageChain::new(bdev, sector, pages.pages().len(), len, dir) {
            Ok(c) => c,
            Err(e) => {
                // INVARIANT: no I/O after all.
                self.bio.store(null_mut(), Ordering::Release);
                return Err((e, pages));
            }
        };
        let parent = chain.parent();
        // SAFETY: `parent` comes from the module's bio set; its record is
        // ours until the bio is put. The waker reference goes to the
        // completion.
        let rec = unsafe {
            let rec = record(parent);
            (*rec).pages.write(pages);
            (*rec).waker = Arc::into_raw(waker).cast();
            core::ptr::addr_of_mut!((*rec).completed).write(AtomicBool::new(false));
            (*parent).bi_end_io = Some(end_io::<T>);
            rec
        };
        // From here the parent always completes, and its completion drops
        // the count.
        RUNNING.add();
        // INVARIANT: the record holds the pages and the waker.
        self.bio.store(parent, Ordering::Release);
        // SAFETY: The record owns the pages until `finish`, which takes
        // them only after the parent completed.
        let pg: &[Page] = unsafe { (*rec).pages.assume_init_ref().pages() };
        // SAFETY: As above, the pages outlive the I/O; the parent has its
        // completion.
        let filled = unsafe { chain.fill(pg) };
        // SAFETY: The parent is set up (then it goes), or failed: then it
        // ends now, once any child submitted has, through the same
        // completion.
        unsafe {
            if filled == Filled::All {
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

/// What a [`page_io`] or an [`AsyncIo`] does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dir {
    Read,
    /// A write with no FUA: completion says the device has the data, which
    /// is all a snapshot needs, since it does not survive a reboot.
    Write,
    /// A write that is durable when it completes (`REQ_FUA`), for what
    /// must survive a power cut with no flush after it.
    WriteDurable,
}

/// Reads `len` bytes at `sector` of `bdev` into `pages` (or writes them),
/// waiting for completion; the I/O bypasses filters.
pub(crate) fn page_io(
    bdev: &BdevFile,
    sector: u64,
    pages: &[Page],
    len: usize,
    dir: Dir,
) -> Result {
    let chain = PageChain::new(bdev, sector, pages.len(), len, dir)?;
    let parent = chain.parent();
    // SAFETY: We wait for the parent below, and it completes after all its
    // children: the pages outlive the I/O.
    let filled = unsafe { chain.fill(pages) };
    if filled == Filled::Nothing {
        // SAFETY: Ours, never submitted, and no child ends into it.
        unsafe { bindings::bio_put(parent) };
        return Err(EIO);
    }
    // SAFETY: Set up, with its pages. An incomplete chain goes all the
    // same, so that the wait covers the children already submitted.
    let r = unsafe { submit_and_wait(parent) };
    if filled == Filled::All {
        r
    } else {
        Err(EIO)
    }
}

/// How far [`PageChain::fill`] got.
#[derive(PartialEq, Eq)]
enum Filled {
    /// Every page is in the parent or in a child, submitted.
    All,
    /// The parent has its pages, but a child failed: the I/O is incomplete.
    Parent,
    /// The parent did not take its pages, and no child was made.
    Nothing,
}

/// A page I/O being built: its first bio (the parent), which ends when the
/// parent and every child chained to it have ended.
///
/// # Invariants
///
/// `parent` is a fresh bio from the module's bio set, not submitted, with
/// room for the first `min(npages, BIO_MAX_VECS)` pages of an I/O of `len`
/// bytes (`npages` pages) at `sector` of `bdev`, with request flags `opf`.
struct PageChain<'a> {
    bdev: &'a BdevFile,
    parent: *mut bindings::bio,
    sector: u64,
    len: usize,
    npages: usize,
    opf: u32,
}

impl<'a> PageChain<'a> {
    /// Allocates the parent of an I/O of `len` bytes at `sector` of `bdev`,
    /// from `have` pages; `EINVAL` if they are too few or `len` is 0.
    fn new(bdev: &'a BdevFile, sector: u64, have: usize, len: usize, dir: Dir) -> Result<Self> {
        let npages = len.div_ceil(PAGE_SIZE);
        if npages == 0 || npages > have {
            return Err(EINVAL);
        }
        let opf = match dir {
            Dir::Read => bindings::req_op_REQ_OP_READ,
            Dir::Write => bindings::req_op_REQ_OP_WRITE | bindings::REQ_SYNC,
            Dir::WriteDurable => {
                bindings::req_op_REQ_OP_WRITE | bindings::REQ_SYNC | bindings::REQ_FUA
            }
        };
        let vecs = npages.min(bindings::BIO_MAX_VECS as usize) as u16;
        // SAFETY: `bdev` is open; the bio is ours.
        let parent = unsafe { alloc_bio(bdev.as_raw(), vecs, opf)? };
        // SAFETY: A fresh bio of ours.
        unsafe { (*parent).bi_iter.bi_sector = sector };
        // INVARIANT: as allocated above.
        Ok(Self {
            bdev,
            parent,
            sector,
            len,
            npages,
            opf,
        })
    }

    /// The parent, for its completion to be set and for it to be submitted
    /// once [`PageChain::fill`] returns.
    fn parent(&self) -> *mut bindings::bio {
        self.parent
    }

    /// Adds the first pages to the parent and the others to children
    /// chained to it, submitting each child as it is ready, and says how
    /// far it got (a bio may fail to be had or to take its pages). The
    /// parent is left for the caller to submit or end.
    ///
    /// # Safety
    ///
    /// `pages` (at least `npages` of them) stay allocated until the parent
    /// completes, and the parent's completion is set.
    unsafe fn fill(self, pages: &[Page]) -> Filled {
        let max_vecs = bindings::BIO_MAX_VECS as usize;
        let first = self.npages.min(max_vecs);
        if !add_pages(self.parent, pages, 0, self.len, first) {
            return Filled::Nothing;
        }
        let mut done = first;
        while done < self.npages {
            let vecs = (self.npages - done).min(max_vecs);
            // SAFETY: `bdev` is open (it outlives us); the bio is ours.
            let Ok(child) = (unsafe { alloc_bio(self.bdev.as_raw(), vecs as u16, self.opf) })
            else {
                return Filled::Parent;
            };
            let ok = add_pages(child, pages, done, self.len, vecs);
            // SAFETY: Both bios are ours and not submitted (type invariant
            // for the parent); the child ends into the parent, which
            // completes after all its children.
            unsafe {
                (*child).bi_iter.bi_sector = self.sector + ((done * PAGE_SIZE) as u64 >> 9);
                bindings::bio_chain(child, self.parent);
            }
            if !ok {
                // SAFETY: Chained: ending it counts it off the parent.
                unsafe {
                    (*child).bi_status = bindings::BLK_STS_RESOURCE;
                    bindings::bio_endio(child);
                }
                return Filled::Parent;
            }
            // SAFETY: Fully set up and chained; its pages outlive it (the
            // caller's promise).
            unsafe { bindings::submit_bio(child) };
            done += vecs;
        }
        Filled::All
    }
}

/// Adds the pages `pages[first..first + vecs]` of an I/O of `len` bytes to
/// `bio`; `false` if the bio takes fewer.
fn add_pages(
    bio: *mut bindings::bio,
    pages: &[Page],
    first: usize,
    len: usize,
    vecs: usize,
) -> bool {
    let mut added = 0;
    for (i, p) in pages.iter().enumerate().skip(first).take(vecs) {
        let n = len.saturating_sub(i * PAGE_SIZE).min(PAGE_SIZE);
        // SAFETY: The bio is ours and not submitted; the caller keeps the
        // page allocated until the I/O ends.
        if unsafe { bindings::bio_add_page(bio, p.as_ptr(), n as u32, 0) } as usize != n {
            return false;
        }
        added += 1;
    }
    added == vecs
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
    RUNNING.done();
}

/// Asynchronous I/Os whose completion has not yet returned.
static RUNNING: rcu::Running = rcu::Running::new();

/// Waits until no completion of an asynchronous I/O is still running, in
/// the module's code or in what its waker does (unload, once nothing
/// starts I/O any more: then the wakers' queues may go). Process context.
pub(crate) fn wait_idle() {
    RUNNING.wait_idle();
}
