// SPDX-License-Identifier: GPL-2.0

//! Shrinkers: how memory reclaim asks a cache to give memory back.
//!
//! C header: [`include/linux/shrinker.h`](srctree/include/linux/shrinker.h)

use core::ffi::c_void;
use core::marker::PhantomData;
use core::ptr::NonNull;

use kernel::bindings;
use kernel::error::{code::ENOMEM, Result};
use kernel::sync::Arc;

/// A cache that memory reclaim may shrink. The objects it counts are
/// whatever it frees by (pages, for blksnap's chunk cache).
pub(crate) trait Shrink: Send + Sync {
    /// How many objects [`Shrink::scan`] could free now (0: none).
    fn count(&self) -> usize;

    /// Frees up to `nr` objects and returns how many it freed. Runs in
    /// reclaim, from any allocating thread: it must not allocate, sleep or
    /// do I/O (spinlocks are fine).
    fn scan(&self, nr: usize) -> usize;
}

/// A registered shrinker of a `T`.
///
/// # Invariants
///
/// `ptr` is a shrinker from `shrinker_alloc`, registered with this module's
/// callbacks for `T`, whose `private_data` is `Arc::into_raw` of a `T`. It
/// is freed only in `Drop`, which then takes that reference back.
pub(crate) struct Shrinker<T: Shrink> {
    ptr: NonNull<bindings::shrinker>,
    _data: PhantomData<Arc<T>>,
}

// SAFETY: The shrinker is only freed (from any thread) in `Drop`; `T` is
// `Send + Sync`, and reclaim calls it from any thread anyway.
unsafe impl<T: Shrink> Send for Shrinker<T> {}
// SAFETY: `&Shrinker` gives access to nothing.
unsafe impl<T: Shrink> Sync for Shrinker<T> {}

impl<T: Shrink> Shrinker<T> {
    /// Registers a shrinker of `data` (which it holds until dropped).
    pub(crate) fn register(data: Arc<T>) -> Result<Self> {
        let fmt: *const kernel::ffi::c_char = c"%s".as_ptr().cast();
        let name: *const kernel::ffi::c_char = c"blksnap".as_ptr().cast();
        // SAFETY: "%s" with one string argument is a valid format; both
        // strings are NUL-terminated and static.
        let raw = unsafe { bindings::shrinker_alloc(0, fmt, name) };
        let ptr = NonNull::new(raw).ok_or(ENOMEM)?;
        // SAFETY: A fresh shrinker, ours alone and not registered yet: its
        // callbacks and private data are ours to set, then it goes live.
        unsafe {
            (*raw).count_objects = Some(count_callback::<T>);
            (*raw).scan_objects = Some(scan_callback::<T>);
            (*raw).private_data = Arc::into_raw(data).cast_mut().cast::<c_void>();
            bindings::shrinker_register(raw);
        }
        // INVARIANT: registered above, with `T`'s callbacks and data.
        Ok(Self {
            ptr,
            _data: PhantomData,
        })
    }
}

impl<T: Shrink> Drop for Shrinker<T> {
    fn drop(&mut self) {
        let raw = self.ptr.as_ptr();
        // SAFETY: Ours (type invariant); `shrinker_free` unregisters it and
        // waits until no callback runs, so the data can go after it.
        unsafe {
            let data = (*raw).private_data.cast::<T>().cast_const();
            bindings::shrinker_free(raw);
            drop(Arc::from_raw(data));
        }
    }
}

/// The `T` behind a registered shrinker.
///
/// # Safety
///
/// `s` is a shrinker registered by [`Shrinker::register`] for `T`, and not
/// freed yet.
unsafe fn data<'a, T: Shrink>(s: *mut bindings::shrinker) -> &'a T {
    // SAFETY: `private_data` holds a reference to a `T` until the shrinker
    // is freed, which waits for the callbacks (invariant of `Shrinker`).
    unsafe { &*(*s).private_data.cast::<T>() }
}

/// # Safety
///
/// Called by memory reclaim only, for a shrinker of [`Shrinker::register`].
unsafe extern "C" fn count_callback<T: Shrink>(
    s: *mut bindings::shrinker,
    _sc: *mut bindings::shrink_control,
) -> kernel::ffi::c_ulong {
    // SAFETY: A live shrinker of ours (reclaim holds it while it calls).
    let data = unsafe { data::<T>(s) };
    data.count() as kernel::ffi::c_ulong
}

/// # Safety
///
/// As for [`count_callback`], with `sc` the reclaim's request.
unsafe extern "C" fn scan_callback<T: Shrink>(
    s: *mut bindings::shrinker,
    sc: *mut bindings::shrink_control,
) -> kernel::ffi::c_ulong {
    // SAFETY: As in `count_callback`; `sc` is valid for the call.
    let (data, nr) = unsafe { (data::<T>(s), (*sc).nr_to_scan) };
    data.scan(nr) as kernel::ffi::c_ulong
}
