// SPDX-License-Identifier: GPL-2.0

//! Zeroed heap allocations of plain data, vectors of made values, the
//! NOIO allocation scope, and copies in and out of a page.

use kernel::alloc::{flags::__GFP_ZERO, AllocError, Flags, KBox, KVec};
use kernel::types::FromBytes;

/// A heap-allocated `T` with every byte zero, built in place (never on the
/// stack, which matters for page-sized values).
pub(crate) fn zeroed_box<T: FromBytes>(flags: Flags) -> Result<KBox<T>, AllocError> {
    let b = KBox::<T>::new_uninit(flags | __GFP_ZERO)?;
    // SAFETY: `__GFP_ZERO` zeroed the allocation, and all-zero bytes are a
    // valid `T` because `T: FromBytes` (any bit pattern is).
    Ok(unsafe { b.assume_init() })
}

/// A vector of `n` values made by `make`, with room for exactly them; the
/// one way the module allocates its page sets (chunk buffers, CBT map
/// pages).
pub(crate) fn alloc_n<T>(
    n: usize,
    flags: Flags,
    mut make: impl FnMut() -> Result<T, AllocError>,
) -> Result<KVec<T>, AllocError> {
    let mut v = KVec::with_capacity(n, flags)?;
    for _ in 0..n {
        v.push(make()?, flags)?;
    }
    Ok(v)
}

/// While alive, allocations of the current task do no I/O to reclaim memory
/// (`memalloc_noio_save()`): the block I/O paths must not recurse into the
/// devices they serve. 6.12's `kernel::alloc::flags` has no `GFP_NOIO`.
///
/// # Invariants
///
/// `flags` is what `memalloc_noio_save()` returned when this task entered
/// the scope; it is restored, on the same task, only in `Drop`.
pub(crate) struct NoIo {
    flags: u32,
    /// The scope belongs to the task that entered it.
    _not_send: core::marker::PhantomData<*mut ()>,
}

impl NoIo {
    pub(crate) fn enter() -> Self {
        // SAFETY: Always allowed in task context; undone in `Drop` on the
        // same task (the type is not `Send`).
        let flags = unsafe { kernel::bindings::memalloc_noio_save() };
        Self {
            flags,
            _not_send: core::marker::PhantomData,
        }
    }
}

impl Drop for NoIo {
    fn drop(&mut self) {
        // SAFETY: Restores what `enter` saved, on the same task.
        unsafe { kernel::bindings::memalloc_noio_restore(self.flags) };
    }
}

/// Zeroes bytes `[from, PAGE_SIZE)` of `page`.
pub(crate) fn zero_page_tail(page: &mut kernel::page::Page, from: usize) -> kernel::error::Result {
    let len = kernel::page::PAGE_SIZE
        .checked_sub(from)
        .ok_or(kernel::error::code::EINVAL)?;
    // SAFETY: `&mut` gives us the page alone, so no one reads or writes it
    // meanwhile; `fill_zero_raw` checks that the range lies in the page.
    unsafe { page.fill_zero_raw(from, len) }
}

/// Copies the first `dst.len()` bytes of `page` into `dst`; `EINVAL` if
/// that is more than a page.
pub(crate) fn copy_from_page(page: &kernel::page::Page, dst: &mut [u8]) -> kernel::error::Result {
    // SAFETY: `dst` is valid for writes of its length and is not the page's
    // memory (a shared borrow of the page cannot be a `&mut` into it);
    // `read_raw` checks that the range lies in the page.
    unsafe { page.read_raw(dst.as_mut_ptr(), 0, dst.len()) }
}

/// Copies `src` into the start of `page`; `EINVAL` if it is longer than a
/// page.
pub(crate) fn copy_to_page(page: &mut kernel::page::Page, src: &[u8]) -> kernel::error::Result {
    // SAFETY: `&mut` gives us the page alone; `src` is valid for reads of
    // its length; `write_raw` checks that the range lies in the page.
    unsafe { page.write_raw(src.as_ptr(), 0, src.len()) }
}
