// SPDX-License-Identifier: GPL-2.0

//! The module's own bio set, from which all its I/O allocates, and the
//! flags that mark that I/O as the module's own.
//!
//! Each bio of the set has [`FRONT_PAD`] bytes in front of it, where an
//! asynchronous I/O (`page_io.rs`) keeps its record; that file checks at
//! build time that its record fits.
//!
//! C header: [`include/linux/bio.h`](srctree/include/linux/bio.h)

use core::sync::atomic::{AtomicBool, Ordering};

use kernel::bindings;
use kernel::error::Result;
use kernel::types::Opaque;

/// Bytes the module's bio set reserves in front of each bio (aligned like
/// the bio, at least 8).
pub(super) const FRONT_PAD: u32 = 64;

/// `bi_flags` bit of bios that bypass the filter of their device.
pub(super) const BIO_FILTERED_BIT: u16 = 1 << bindings::BIO_FILTERED;

/// `bi_flags` bits of the module's own I/O: it bypasses the filter of its
/// device and, through the clones of a stacked device, those below it, so
/// that a storage write on an LV over a tracked disk is not copied on
/// write (which would write to storage again, and again).
pub(super) const OWN_IO_BITS: u16 = BIO_FILTERED_BIT | (1 << bindings::BIO_FILTER_OWN);

/// Memory of the module's own bio set (see [`BioSetOwner`]).
///
/// # Invariants
///
/// Initialised by [`BioSetOwner::init`] and torn down by its drop, with no
/// use before or after (the owner's invariants).
struct BioSetCell(Opaque<bindings::bio_set>);

// SAFETY: The bio set is initialised before any use and torn down after the
// last (invariants of `BioSetOwner`); allocating from it is thread-safe.
unsafe impl Sync for BioSetCell {}

static BIO_SET: BioSetCell = BioSetCell(Opaque::uninit());
static BIO_SET_LIVE: AtomicBool = AtomicBool::new(false);

/// Bios in the module's bio set kept for hard times: enough for every copy
/// slot of a few devices and the image workers at once.
const BIO_SET_RESERVE: u32 = 64;

/// Owner of the module's own bio set, from which all its I/O allocates.
///
/// Copy on write runs while the kernel writes dirty pages back to the
/// tracked device, that is, while memory may be short and the file systems
/// hold bios of the shared `fs_bio_set`: a set of our own, with its own
/// reserve (and a rescuer for allocations inside `submit_bio`), keeps copy
/// on write moving whatever the file systems above hold.
///
/// # Invariants
///
/// While a `BioSetOwner` exists, `BIO_SET` is initialised and
/// `BIO_SET_LIVE` is set; at most one exists at a time.
pub(crate) struct BioSetOwner(());

impl BioSetOwner {
    pub(crate) fn init() -> Result<Self> {
        if BIO_SET_LIVE.swap(true, Ordering::AcqRel) {
            return Err(kernel::error::code::EBUSY);
        }
        let flags = bindings::BIOSET_NEED_BVECS | bindings::BIOSET_NEED_RESCUER;
        // SAFETY: `BIO_SET` is not initialised: the flag was clear, and
        // only we set it.
        let ret = unsafe {
            bindings::bioset_init(BIO_SET.0.get(), BIO_SET_RESERVE, FRONT_PAD, flags as i32)
        };
        if ret != 0 {
            BIO_SET_LIVE.store(false, Ordering::Release);
            return Err(kernel::error::Error::from_errno(ret));
        }
        // INVARIANT: initialised above; the flag stays set until `Drop`.
        Ok(Self(()))
    }
}

impl Drop for BioSetOwner {
    fn drop(&mut self) {
        // SAFETY: Initialised (type invariant). The owner is dropped at
        // unload, after the module's I/O has ended.
        unsafe { bindings::bioset_exit(BIO_SET.0.get()) };
        BIO_SET_LIVE.store(false, Ordering::Release);
    }
}

/// The module's bio set, or `ENODEV` outside the owner's life.
pub(super) fn bio_set() -> Result<*mut bindings::bio_set> {
    if !BIO_SET_LIVE.load(Ordering::Acquire) {
        return Err(kernel::error::code::ENODEV);
    }
    Ok(BIO_SET.0.get())
}

/// Allocates a bio on `bdev` from the module's bio set.
///
/// # Safety
///
/// `bdev` must be an open block device; the caller owns the returned bio.
pub(super) unsafe fn alloc_bio(
    bdev: *mut bindings::block_device,
    vecs: u16,
    opf: u32,
) -> Result<*mut bindings::bio> {
    let set = bio_set()?;
    // SAFETY: `set` is initialised (checked above; the owner outlives the
    // module's I/O). With a sleeping allocation mode the mempool-backed
    // allocation waits rather than fails, but the NULL check stays.
    let bio = unsafe { bindings::bio_alloc_bioset(bdev, vecs, opf, bindings::GFP_NOIO, set) };
    if bio.is_null() {
        return Err(kernel::error::code::ENOMEM);
    }
    // SAFETY: A fresh bio of ours. Our own I/O bypasses filters: it must not
    // be copied on write or tracked as a change.
    unsafe { (*bio).bi_flags |= OWN_IO_BITS };
    Ok(bio)
}
