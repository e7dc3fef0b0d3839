// SPDX-License-Identifier: GPL-2.0

//! Views of `struct bio`, and bios a filter has taken over.
//!
//! C header: [`include/linux/bio.h`](srctree/include/linux/bio.h)

use core::ops::Deref;
use core::ptr::NonNull;

use kernel::bindings;
use kernel::error::Result;
use kernel::types::Opaque;

use super::bioset::{bio_set, BIO_FILTERED_BIT, OWN_IO_BITS};

/// `REQ_OP_MASK`: the operation bits of `bi_opf`.
const REQ_OP_MASK: u32 = (1 << bindings::REQ_OP_BITS) - 1;

/// What a bio does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BioOp {
    Read,
    Write,
    Discard,
    SecureErase,
    WriteZeroes,
    /// Zone and driver-private operations.
    Other(u32),
}

/// Completion status of a bio (`blk_status_t`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BlkStatus {
    Ok,
    IoErr,
    /// `REQ_NOWAIT` bio that would have to wait.
    Again,
    NotSupp,
}

impl BlkStatus {
    fn raw(self) -> bindings::blk_status_t {
        match self {
            BlkStatus::Ok => 0,
            BlkStatus::IoErr => bindings::BLK_STS_IOERR,
            BlkStatus::Again => bindings::BLK_STS_AGAIN,
            BlkStatus::NotSupp => bindings::BLK_STS_NOTSUPP,
        }
    }
}

/// A bio, seen through a shared reference.
///
/// # Invariants
///
/// Wraps a live `struct bio`; the reference is only handed out while the
/// bio cannot complete (the holder owns it, or the block layer is in the
/// middle of submitting it).
#[repr(transparent)]
pub(crate) struct Bio(Opaque<bindings::bio>);

impl Bio {
    /// # Safety
    ///
    /// `ptr` must point to a live bio that stays live and is not completed
    /// for `'a`.
    unsafe fn from_raw<'a>(ptr: *mut bindings::bio) -> &'a Self {
        // SAFETY: `Bio` is `repr(transparent)` over `Opaque<bio>`, which has
        // the layout of `bio`; liveness is the caller's promise.
        unsafe { &*ptr.cast::<Self>() }
    }

    pub(super) fn raw(&self) -> *mut bindings::bio {
        self.0.get()
    }

    /// The operation.
    pub(crate) fn op(&self) -> BioOp {
        // SAFETY: The bio is live (type invariant); `bi_opf` is not changed
        // by others while we hold it.
        let op = unsafe { (*self.raw()).bi_opf } & REQ_OP_MASK;
        match op {
            bindings::req_op_REQ_OP_READ => BioOp::Read,
            bindings::req_op_REQ_OP_WRITE => BioOp::Write,
            bindings::req_op_REQ_OP_DISCARD => BioOp::Discard,
            bindings::req_op_REQ_OP_SECURE_ERASE => BioOp::SecureErase,
            bindings::req_op_REQ_OP_WRITE_ZEROES => BioOp::WriteZeroes,
            other => BioOp::Other(other),
        }
    }

    /// Whether the bio changes the data on the device (writes, discards,
    /// zeroing, secure erase). An empty write is a cache flush alone
    /// (`REQ_PREFLUSH`, as `blkdev_issue_flush` sends): it changes nothing,
    /// so no hold stops it, which the checkpoint of a CBT store on the
    /// tracked device itself needs (it flushes under the hold).
    pub(crate) fn changes_data(&self) -> bool {
        match self.op() {
            BioOp::Write => self.size() != 0,
            BioOp::Discard | BioOp::SecureErase | BioOp::WriteZeroes => true,
            _ => false,
        }
    }

    fn opf(&self) -> u32 {
        // SAFETY: As in `op`.
        unsafe { (*self.raw()).bi_opf }
    }

    /// `REQ_NOWAIT`: the submitter cannot wait.
    pub(crate) fn is_nowait(&self) -> bool {
        self.opf() & bindings::REQ_NOWAIT != 0
    }

    /// `REQ_PREFLUSH`: the device cache is flushed first.
    pub(crate) fn is_preflush(&self) -> bool {
        self.opf() & bindings::REQ_PREFLUSH != 0
    }

    /// `REQ_FUA`: the data is durable on completion.
    pub(crate) fn is_fua(&self) -> bool {
        self.opf() & bindings::REQ_FUA != 0
    }

    /// First sector, relative to the start of the bio's device.
    pub(crate) fn sector(&self) -> u64 {
        // SAFETY: As in `op`; the read copies the packed field.
        unsafe { (*self.raw()).bi_iter.bi_sector }
    }

    /// Bytes left to transfer.
    pub(crate) fn size(&self) -> u32 {
        // SAFETY: As in `sector`.
        unsafe { (*self.raw()).bi_iter.bi_size }
    }

    /// Sectors left to transfer.
    pub(crate) fn sectors(&self) -> u64 {
        u64::from(self.size() >> 9)
    }

    /// The device number of the bio's device.
    pub(crate) fn dev(&self) -> super::block::DevT {
        // SAFETY: A live bio's `bi_bdev` is a valid block device.
        super::block::DevT::from_raw(unsafe { (*(*self.raw()).bi_bdev).bd_dev })
    }

    /// The data segments, each within one page.
    pub(crate) fn segments(&self) -> Segments<'_> {
        // SAFETY: As in `sector`.
        let iter = unsafe { (*self.raw()).bi_iter };
        Segments { bio: self, iter }
    }
}

/// One segment of a bio's data: `len` bytes at `offset` in one page.
///
/// # Invariants
///
/// `vec` is a segment of the bio that `_bio` borrows, within one page (as
/// `bio_iter_iovec` gives it), so its page stays valid for `'a`.
pub(crate) struct Segment<'a> {
    vec: bindings::bio_vec,
    _bio: &'a Bio,
}

impl Segment<'_> {
    /// Bytes in the segment.
    pub(crate) fn len(&self) -> usize {
        self.vec.bv_len as usize
    }

    /// Offset in its page.
    pub(crate) fn offset(&self) -> usize {
        self.vec.bv_offset as usize
    }

    /// Copies the segment's bytes into the start of `dst` (as many as fit);
    /// returns how many.
    pub(crate) fn copy_to(&self, dst: &mut [u8]) -> usize {
        let n = self.len().min(dst.len());
        // SAFETY: `bv_page` is a page of the live bio; mapping it locally is
        // always allowed and the mapping is dropped before returning.
        unsafe {
            let base = bindings::kmap_local_page(self.vec.bv_page).cast::<u8>();
            core::ptr::copy_nonoverlapping(base.add(self.offset()), dst.as_mut_ptr(), n);
            bindings::kunmap_local(base.cast());
        }
        n
    }
}

/// Iterator over a bio's segments.
///
/// # Invariants
///
/// `iter` is a position within `bio`'s own iterator: it only advances
/// through the bio's data, never past its end.
pub(crate) struct Segments<'a> {
    bio: &'a Bio,
    iter: bindings::bvec_iter,
}

impl<'a> Iterator for Segments<'a> {
    type Item = Segment<'a>;

    fn next(&mut self) -> Option<Segment<'a>> {
        if self.iter.bi_size == 0 || !self.bio.has_data() {
            return None;
        }
        // SAFETY: The bio is live and `iter` stays within its data.
        let vec = unsafe { bindings::bio_iter_bvec(self.bio.raw(), self.iter) };
        // SAFETY: As above; `bv_len` bytes remain in the iterator.
        unsafe { bindings::bio_advance_iter_single(self.bio.raw(), &mut self.iter, vec.bv_len) };
        Some(Segment {
            vec,
            _bio: self.bio,
        })
    }
}

impl Bio {
    fn has_data(&self) -> bool {
        matches!(self.op(), BioOp::Read | BioOp::Write)
    }
}

/// A bio submitted to a filtered device, handed to the filter's callback.
///
/// The callback lets it go on by dropping it, or takes it over with
/// [`IncomingBio::take`].
///
/// # Invariants
///
/// `bio` is being submitted and has not completed: nobody else touches its
/// completion fields until the callback returns. `taken` is the callback's
/// answer to the block layer: set once, by [`IncomingBio::take`], when the
/// bio becomes an [`OwnedBio`] (then the block layer lets it alone).
pub(crate) struct IncomingBio<'a> {
    bio: &'a Bio,
    taken: &'a core::cell::Cell<bool>,
}

impl<'a> IncomingBio<'a> {
    /// # Safety
    ///
    /// `ptr` must be a bio being submitted, live for `'a`; if `taken` is set
    /// on return, the caller gives the bio up to the [`OwnedBio`].
    pub(super) unsafe fn new(ptr: *mut bindings::bio, taken: &'a core::cell::Cell<bool>) -> Self {
        // SAFETY: The caller promises the bio is live for `'a`.
        let bio = unsafe { Bio::from_raw(ptr) };
        Self { bio, taken }
    }

    /// Takes the bio over: the submit path stops here, and the returned
    /// owner must resubmit or end it.
    pub(crate) fn take(self) -> OwnedBio {
        self.taken.set(true);
        // INVARIANT: the submitter's path is told (through `taken`) to leave
        // the bio to us.
        OwnedBio {
            ptr: NonNull::from(&self.bio.0).cast(),
        }
    }
}

impl Deref for IncomingBio<'_> {
    type Target = Bio;
    fn deref(&self) -> &Bio {
        self.bio
    }
}

/// A bio taken over by a filter: it must be resubmitted or ended. Dropping
/// it ends it with an I/O error, so a bio is never lost silently.
///
/// # Invariants
///
/// `ptr` is a live bio that this value alone may complete or resubmit.
pub(crate) struct OwnedBio {
    ptr: NonNull<bindings::bio>,
}

// SAFETY: A bio may be resubmitted or completed from any thread.
unsafe impl Send for OwnedBio {}
// SAFETY: `&OwnedBio` only reads the bio.
unsafe impl Sync for OwnedBio {}

impl OwnedBio {
    /// Takes ownership of a bio handed over by the block layer.
    ///
    /// # Safety
    ///
    /// `ptr` is a live bio the caller owns and gives up.
    pub(super) unsafe fn from_raw(ptr: *mut bindings::bio) -> Self {
        // SAFETY: The caller promises a live, non-NULL bio it owns.
        let ptr = unsafe { NonNull::new_unchecked(ptr) };
        Self { ptr }
    }

    /// Gives up the bio, which the caller now owns (and must hand back to
    /// [`OwnedBio::from_raw`], resubmit or end).
    pub(super) fn into_raw(self) -> NonNull<bindings::bio> {
        let p = self.ptr;
        core::mem::forget(self);
        p
    }

    /// Sends the bio on to its device, past the device's filter. It stays
    /// its submitter's I/O: if the device is stacked, filters below see
    /// its clones.
    pub(crate) fn resubmit(self) {
        let ptr = self.ptr.as_ptr();
        core::mem::forget(self);
        // SAFETY: We own the bio (type invariant) and give it back to the
        // block layer; marked filtered, it goes straight on.
        unsafe {
            (*ptr).bi_flags |= BIO_FILTERED_BIT;
            bindings::submit_bio_noacct(ptr);
        }
    }

    /// Runs `f` on the bio as a filter's submit callback sees it: a bio a
    /// filter took before it did anything with it (to hold it until some
    /// condition holds) goes through the filter's logic again. If `f` does
    /// not take it over, it goes on to its device as [`OwnedBio::resubmit`]
    /// sends it.
    pub(crate) fn refilter(self, f: impl FnOnce(IncomingBio<'_>)) {
        let taken = core::cell::Cell::new(false);
        // If `f` takes the bio over, the `OwnedBio` it makes owns it from
        // then on, and ours is forgotten below.
        // SAFETY: We own the bio (type invariant): it is live, not completed
        // during the call, and nobody else touches it.
        let incoming = unsafe { IncomingBio::new(self.ptr.as_ptr(), &taken) };
        f(incoming);
        if taken.get() {
            core::mem::forget(self);
        } else {
            self.resubmit();
        }
    }

    /// Completes the bio with `status`.
    pub(crate) fn end(self, status: BlkStatus) {
        let ptr = self.ptr.as_ptr();
        core::mem::forget(self);
        // SAFETY: We own the bio (type invariant); completing it hands it
        // back to its submitter.
        unsafe {
            (*ptr).bi_status = status.raw();
            bindings::bio_endio(ptr);
        }
    }
}

impl Deref for OwnedBio {
    type Target = Bio;
    fn deref(&self) -> &Bio {
        // SAFETY: The bio is live while we own it (type invariant).
        unsafe { Bio::from_raw(self.ptr.as_ptr()) }
    }
}

impl Drop for OwnedBio {
    fn drop(&mut self) {
        kernel::pr_err!("a held bio was dropped; failing it\n");
        // SAFETY: We own the bio (type invariant).
        unsafe {
            (*self.ptr.as_ptr()).bi_status = bindings::BLK_STS_IOERR;
            bindings::bio_endio(self.ptr.as_ptr());
        }
    }
}

/// Submits `bio` and waits for it; consumes the bio.
///
/// # Safety
///
/// The caller owns `bio`, fully set up.
pub(super) unsafe fn submit_and_wait(bio: *mut bindings::bio) -> Result {
    // SAFETY: The caller owns the bio; `submit_bio_wait` keeps our reference
    // and `bio_put` drops it.
    let ret = unsafe { bindings::submit_bio_wait(bio) };
    // SAFETY: As above.
    unsafe { bindings::bio_put(bio) };
    kernel::error::to_result(ret)
}

impl OwnedBio {
    /// Performs bytes `[skip, skip + len)` of this bio's transfer on `target`
    /// at `sector`, waiting for completion; the I/O bypasses filters.
    /// `skip` and `len` are multiples of 512.
    pub(crate) fn io_part(
        &self,
        skip: u32,
        len: u32,
        target: &super::block::BdevFile,
        sector: u64,
    ) -> Result {
        let set = bio_set()?;
        // SAFETY: We own the source bio; the clone shares its pages, which
        // stay valid until we complete the source, after this call. `set` is
        // initialised (checked above).
        let clone = unsafe {
            bindings::bio_alloc_clone(target.as_raw(), self.ptr.as_ptr(), bindings::GFP_NOIO, set)
        };
        if clone.is_null() {
            return Err(kernel::error::code::ENOMEM);
        }
        // SAFETY: The clone is ours; trimming stays within the source's
        // transfer (callers pass a part of it).
        unsafe {
            bindings::bio_trim(clone, u64::from(skip >> 9), u64::from(len >> 9));
            (*clone).bi_iter.bi_sector = sector;
            (*clone).bi_flags |= OWN_IO_BITS;
            submit_and_wait(clone)
        }
    }
}

impl OwnedBio {
    /// Copies `len` bytes between this bio's data, from byte `skip` of its
    /// transfer, and `pages` seen as one buffer, from byte `at`: into the
    /// bio if `into_bio`, out of it otherwise. For bounce buffers, when a
    /// device cannot take the bio's own alignment.
    pub(crate) fn copy_pages(
        &self,
        skip: usize,
        pages: &[kernel::page::Page],
        at: usize,
        len: usize,
        into_bio: bool,
    ) -> Result {
        use kernel::page::PAGE_SIZE;
        let total = pages
            .len()
            .checked_mul(PAGE_SIZE)
            .ok_or(kernel::error::code::EINVAL)?;
        if at.checked_add(len).map_or(true, |end| end > total) {
            return Err(kernel::error::code::EINVAL);
        }
        let mut pos = 0usize; // bytes of the transfer passed
        let mut done = 0usize; // bytes copied
        for seg in self.segments() {
            if done == len {
                break;
            }
            let seg_end = pos + seg.len();
            if seg_end <= skip {
                pos = seg_end;
                continue;
            }
            // Part of this segment in [skip + done, skip + len).
            let from = (skip + done).max(pos) - pos;
            let mut n = (seg.len() - from).min(len - done);
            let mut seg_off = seg.offset() + from;
            while n > 0 {
                let b = at + done;
                let Some(page) = pages.get(b / PAGE_SIZE) else {
                    return Err(kernel::error::code::EINVAL);
                };
                let in_page = b % PAGE_SIZE;
                let step = n.min(PAGE_SIZE - in_page);
                // `seg_off + step` stays within the segment, `in_page + step`
                // within the buffer's page.
                // SAFETY: Both pages are live (the bio's while we own it, the
                // buffer's for this call), the ranges are inside them, and the
                // local mappings are dropped in reverse order.
                unsafe {
                    let bio_base = bindings::kmap_local_page(seg.vec.bv_page).cast::<u8>();
                    let buf_base = bindings::kmap_local_page(page.as_ptr()).cast::<u8>();
                    if into_bio {
                        core::ptr::copy_nonoverlapping(
                            buf_base.add(in_page),
                            bio_base.add(seg_off),
                            step,
                        );
                    } else {
                        core::ptr::copy_nonoverlapping(
                            bio_base.add(seg_off),
                            buf_base.add(in_page),
                            step,
                        );
                    }
                    bindings::kunmap_local(buf_base.cast());
                    bindings::kunmap_local(bio_base.cast());
                }
                n -= step;
                seg_off += step;
                done += step;
            }
            pos = seg_end;
        }
        if done == len {
            Ok(())
        } else {
            Err(kernel::error::code::EINVAL)
        }
    }
}
