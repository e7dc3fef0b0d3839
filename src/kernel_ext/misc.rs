// SPDX-License-Identifier: GPL-2.0

//! Misc character devices whose files answer `ioctl`.
//!
//! C header: [`include/linux/miscdevice.h`](srctree/include/linux/miscdevice.h)

use core::marker::PhantomPinned;
use core::mem::MaybeUninit;
use core::pin::Pin;

use kernel::alloc::{flags::GFP_KERNEL, KBox};
use kernel::bindings;
use kernel::error::{Error, Result};
use kernel::str::CStr;
use kernel::types::Opaque;
use kernel::ThisModule;

/// What the files of a misc device do.
///
/// One value of the implementing type serves every open file of the device;
/// it lives as long as the [`Registration`].
pub(crate) trait FileOperations: Sync + Send + Sized {
    /// Handles `ioctl(fd, cmd, arg)` in process context.
    ///
    /// `arg` is the raw argument, usually a user-space address. A
    /// non-negative return value is handed to user space as is.
    fn ioctl(&self, cmd: u32, arg: usize) -> Result<isize>;
}

/// The C structures the misc core keeps pointers to, and the handler.
///
/// # Invariants
///
/// After [`Registration::register`] succeeds and until [`Registration`] is
/// dropped, `misc` is registered with the misc core, `misc.fops` points to
/// `fops`, and `fops.unlocked_ioctl` is [`ioctl_callback::<T>`]. The
/// structure is pinned, so those pointers stay valid.
#[repr(C)]
struct Inner<T: FileOperations> {
    misc: Opaque<bindings::miscdevice>,
    fops: Opaque<bindings::file_operations>,
    handler: T,
    _pin: PhantomPinned,
}

/// A registered misc device, `/dev/<name>`; unregistered on drop.
///
/// Open files of the device take a reference on the owning module (the
/// `owner` of its file operations), so the module cannot be unloaded, and
/// this value cannot be dropped by module exit, while a file is open.
///
/// # Invariants
///
/// `inner` is registered with the misc core (see [`Inner`]).
pub(crate) struct Registration<T: FileOperations> {
    inner: Pin<KBox<Inner<T>>>,
}

// SAFETY: `Registration` only hands out shared references to `T`, which is
// `Sync`; the C structures are only touched by the misc core under its own
// locking and by `Drop`.
unsafe impl<T: FileOperations> Sync for Registration<T> {}
// SAFETY: The registration may be dropped from any thread: `misc_deregister`
// has no thread affinity, and `T` is `Send`.
unsafe impl<T: FileOperations> Send for Registration<T> {}

impl<T: FileOperations> Registration<T> {
    /// Registers `/dev/<name>` with permission bits `mode` and a dynamic
    /// minor number, its files served by `handler`.
    pub(crate) fn register(
        name: &'static CStr,
        mode: u16,
        handler: T,
        module: &'static ThisModule,
    ) -> Result<Self> {
        // SAFETY: `file_operations` is a C struct of function pointers and
        // plain pointers, for which all-zero bytes are valid (`None`/NULL).
        let mut fops: bindings::file_operations = unsafe { MaybeUninit::zeroed().assume_init() };
        fops.owner = module.as_ptr();
        fops.unlocked_ioctl = Some(ioctl_callback::<T>);

        // SAFETY: As above, all-zero `miscdevice` is valid; the fields that
        // matter are set below and in the pinned copy.
        let mut misc: bindings::miscdevice = unsafe { MaybeUninit::zeroed().assume_init() };
        misc.minor = bindings::MISC_DYNAMIC_MINOR as i32;
        misc.name = name.as_char_ptr();
        misc.mode = mode;

        let inner = KBox::pin(
            Inner {
                misc: Opaque::new(misc),
                fops: Opaque::new(fops),
                handler,
                _pin: PhantomPinned,
            },
            GFP_KERNEL,
        )?;
        let misc_ptr = inner.misc.get();
        // SAFETY: `misc_ptr` points into the pinned allocation, which nothing
        // else references yet; `fops` lives in the same allocation and so
        // outlives the registration.
        unsafe { (*misc_ptr).fops = inner.fops.get() };
        // SAFETY: `misc_ptr` is a valid, initialised `miscdevice` that stays
        // at this address until `Drop` deregisters it.
        let ret = unsafe { bindings::misc_register(misc_ptr) };
        if ret < 0 {
            return Err(Error::from_errno(ret));
        }
        // INVARIANT: registration succeeded.
        Ok(Self { inner })
    }
}

impl<T: FileOperations> Drop for Registration<T> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the device is registered; after this
        // call the misc core holds no pointer into `inner`, which is then
        // freed.
        unsafe { bindings::misc_deregister(self.inner.misc.get()) };
    }
}

/// The `unlocked_ioctl` callback installed in every [`Inner::fops`].
///
/// # Safety
///
/// Called by the VFS only, with a `file` opened through a misc device
/// registered by [`Registration::register`] with `T`, so that `misc_open`
/// left a pointer to `Inner<T>::misc` in `private_data`.
unsafe extern "C" fn ioctl_callback<T: FileOperations>(
    file: *mut bindings::file,
    cmd: kernel::ffi::c_uint,
    arg: kernel::ffi::c_ulong,
) -> kernel::ffi::c_long {
    // SAFETY: `file` is valid for the duration of the call (see the function
    // safety requirements).
    let misc = unsafe { (*file).private_data }.cast::<bindings::miscdevice>();
    // SAFETY: `misc` points to the `misc` field of an `Inner<T>` (function
    // safety requirements); `Opaque` is `repr(transparent)`, so the field
    // offset is that of the `miscdevice`.
    let inner = unsafe { kernel::container_of!(misc, Inner<T>, misc) };
    // SAFETY: The open file holds a reference on the module that owns the
    // registration, so `Inner<T>` is alive and pinned for this call; only
    // shared references to it are ever made.
    let handler = unsafe { &(*inner).handler };
    match handler.ioctl(cmd, arg) {
        Ok(v) => v as kernel::ffi::c_long,
        Err(e) => e.to_errno() as kernel::ffi::c_long,
    }
}
