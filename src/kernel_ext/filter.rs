// SPDX-License-Identifier: GPL-2.0

//! Bio filters (`patches/0001-block-add-per-device-bio-filters.patch`).
//!
//! C header: [`include/linux/blk-filter.h`](srctree/include/linux/blk-filter.h)

use core::cell::Cell;
use core::marker::PhantomPinned;
use core::pin::Pin;

use kernel::alloc::{flags::GFP_KERNEL, KBox};
use kernel::bindings;
use kernel::error::{to_result, Result};
use kernel::sync::Arc;
use kernel::types::Opaque;

use super::bio::IncomingBio;
use super::block::Bdev;

/// What a filter does with the bios of its device.
pub(crate) trait FilterOps: Send + Sync + Sized {
    /// Sees a bio submitted to the device, in the submitter's context. The
    /// bio goes on to the device unless the callback takes it over
    /// ([`IncomingBio::take`]). It must not wait for I/O it issues.
    fn submit_bio(this: &Arc<Self>, bio: IncomingBio<'_>);

    /// The device went away while the filter was attached: no callback runs
    /// any more. Called from the block layer's removal of the device, with
    /// its locks held: it must not attach or detach filters. The owner
    /// drops every reference it keeps to the device here, since the driver
    /// that made the device may go next.
    fn detached(&self) {}

    /// The device's capacity was set to a new value (a resize, or a stacked
    /// device's table replaced): it may hold other data though no bio came
    /// through the filter. May be called in atomic context: must not sleep.
    fn resized(&self) {}
}

/// The filter the block layer sees, and the data its callbacks use.
///
/// # Invariants
///
/// Pinned (the block layer holds a pointer to `filter`); `filter` is
/// attached to at most one device, with this module's callbacks for `T`,
/// and is detached before `Inner` is freed, so the callbacks always find
/// `data` alive.
#[repr(C)]
struct Inner<T: FilterOps> {
    filter: Opaque<bindings::blk_filter>,
    data: Arc<T>,
    _pin: PhantomPinned,
}

/// A filter attached to a block device; detached on drop.
///
/// The value holds no reference to the device: the block layer records the
/// device in the filter and forgets it when the device goes away, so that
/// the device, and the driver module that made it, can go while the filter
/// exists.
///
/// # Invariants
///
/// While this value exists, `inner.filter` is attached (the block layer's
/// `flt->bdev` names the device) or was detached by the block layer because
/// the device went away (`flt->bdev` is NULL); its `ops` is
/// [`Attached::<T>::OPS`]. `inner` is pinned, so the pointer the block layer
/// holds stays valid.
pub(crate) struct Attached<T: FilterOps> {
    inner: Pin<KBox<Inner<T>>>,
}

// SAFETY: The block layer may call the filter from any thread, which `T:
// Send + Sync` allows; the C structure is only read by the block layer, and
// attach/detach may happen on any thread.
unsafe impl<T: FilterOps> Send for Attached<T> {}
// SAFETY: `&Attached` only gives out `&Arc<T>`, and `T: Sync`.
unsafe impl<T: FilterOps> Sync for Attached<T> {}

impl<T: FilterOps> Attached<T> {
    const OPS: bindings::blk_filter_ops = bindings::blk_filter_ops {
        submit_bio: Some(submit_bio_callback::<T>),
        detach: Some(detach_callback::<T>),
        resized: Some(resized_callback::<T>),
    };

    /// Attaches a filter serving `data` to `bdev`. Fails with `EBUSY` if the
    /// device has a filter already.
    pub(crate) fn attach(bdev: &Bdev, data: Arc<T>) -> Result<Self> {
        let inner = KBox::pin(
            Inner {
                filter: Opaque::new(bindings::blk_filter {
                    ops: &Self::OPS,
                    bdev: core::ptr::null_mut(),
                }),
                data,
                _pin: PhantomPinned,
            },
            GFP_KERNEL,
        )?;
        // SAFETY: `bdev` is valid for the call (type invariant of `Bdev`);
        // `inner.filter` is pinned and lives until `Drop` has detached it.
        to_result(unsafe { bindings::blk_filter_attach(bdev.as_raw(), inner.filter.get()) })?;
        // INVARIANT: attached above.
        Ok(Self { inner })
    }

    /// The data the filter serves.
    pub(crate) fn data(&self) -> &Arc<T> {
        &self.inner.data
    }
}

impl<T: FilterOps> Drop for Attached<T> {
    fn drop(&mut self) {
        // If the device went away, the block layer detached the filter
        // already and this does nothing.
        // The block layer finds the device, if still attached, under its
        // own lock; on return no callback runs and it holds no pointer to
        // `inner`.
        // SAFETY: `inner.filter` was attached (type invariant).
        unsafe { bindings::blk_filter_detach(self.inner.filter.get()) };
    }
}

/// # Safety
///
/// Called by the block layer only, with `flt` attached by [`Attached`] with
/// this `T` and `bio` being submitted.
unsafe extern "C" fn submit_bio_callback<T: FilterOps>(
    flt: *mut bindings::blk_filter,
    bio: *mut bindings::bio,
) -> bool {
    // SAFETY: `flt` is the `filter` field of a live, pinned `Inner<T>`: the
    // block layer calls us only while it is attached, and `Attached::drop`
    // waits for running calls before freeing it.
    let inner = unsafe { &*kernel::container_of!(flt, Inner<T>, filter) };
    let taken = Cell::new(false);
    // SAFETY: `bio` is being submitted and stays live during the call; if
    // the callback takes it, we report that to the block layer below.
    let incoming = unsafe { IncomingBio::new(bio, &taken) };
    T::submit_bio(&inner.data, incoming);
    taken.get()
}

/// # Safety
///
/// As for [`submit_bio_callback`].
unsafe extern "C" fn detach_callback<T: FilterOps>(flt: *mut bindings::blk_filter) {
    // SAFETY: As in `submit_bio_callback`; `Attached::drop` waits for this
    // call (the block layer's filter lock) before freeing `Inner`.
    let inner = unsafe { &*kernel::container_of!(flt, Inner<T>, filter) };
    inner.data.detached();
}

/// # Safety
///
/// As for [`submit_bio_callback`].
unsafe extern "C" fn resized_callback<T: FilterOps>(flt: *mut bindings::blk_filter) {
    // SAFETY: As in `submit_bio_callback`: the block layer calls us only
    // while the filter is attached, under the same SRCU read lock that
    // `Attached::drop` waits for.
    let inner = unsafe { &*kernel::container_of!(flt, Inner<T>, filter) };
    inner.data.resized();
}
