// SPDX-License-Identifier: GPL-2.0

//! Block devices opened by device number, and file system freezing.
//!
//! C header: [`include/linux/blkdev.h`](srctree/include/linux/blkdev.h)

use core::ptr::NonNull;

use kernel::bindings;
use kernel::error::{from_err_ptr, to_result, Result};

/// Bits of the minor number in a kernel `dev_t`.
const MINORBITS: u32 = 20;

/// A kernel device number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct DevT(u32);

impl DevT {
    /// `MKDEV(major, minor)`; `None` if either does not fit the encoding.
    pub(crate) fn new(major: u32, minor: u32) -> Option<Self> {
        if major >= (1 << (32 - MINORBITS)) || minor >= (1 << MINORBITS) {
            return None;
        }
        Some(Self((major << MINORBITS) | minor))
    }

    /// `MAJOR(dev)`.
    pub(crate) fn major(self) -> u32 {
        self.0 >> MINORBITS
    }

    /// `MINOR(dev)`.
    pub(crate) fn minor(self) -> u32 {
        self.0 & ((1 << MINORBITS) - 1)
    }

    /// The raw `dev_t`.
    pub(crate) fn raw(self) -> u32 {
        self.0
    }

    pub(crate) fn from_raw(raw: u32) -> Self {
        Self(raw)
    }
}

/// A block device held open, without an exclusive claim, through a file.
///
/// # Invariants
///
/// `file` is a block device file returned by `bdev_file_open_by_dev` and owned
/// by this value (one reference, dropped in `Drop`); `bdev` is
/// `file_bdev(file)`, valid as long as `file` is held.
pub(crate) struct BdevFile {
    file: NonNull<bindings::file>,
    bdev: NonNull<bindings::block_device>,
}

// SAFETY: The file reference and the block device may be used and released
// from any thread.
unsafe impl Send for BdevFile {}
// SAFETY: The methods taking `&self` only read fields that the block layer
// keeps valid for the life of the open file, or call functions safe to call
// concurrently.
unsafe impl Sync for BdevFile {}

impl BdevFile {
    /// Opens device `dev` for reading, and for writing if `write`.
    ///
    /// No exclusive claim is made, so others (a mounted file system, a tool
    /// with `O_EXCL`) may still claim the device.
    pub(crate) fn open(dev: DevT, write: bool) -> Result<Self> {
        let mut mode = bindings::BLK_OPEN_READ;
        if write {
            mode |= bindings::BLK_OPEN_WRITE;
        }
        // SAFETY: A NULL holder with NULL holder ops is a plain, non-exclusive
        // open, valid for any device number.
        let file = from_err_ptr(unsafe {
            bindings::bdev_file_open_by_dev(dev.raw(), mode, core::ptr::null_mut(), core::ptr::null())
        })?;
        let file = NonNull::new(file).ok_or(kernel::error::code::ENODEV)?;
        // SAFETY: `file` is a block device file we hold.
        let bdev = unsafe { bindings::file_bdev(file.as_ptr()) };
        let Some(bdev) = NonNull::new(bdev) else {
            // SAFETY: We own the reference from the open above.
            unsafe { bindings::fput(file.as_ptr()) };
            return Err(kernel::error::code::ENODEV);
        };
        // INVARIANT: `file` is ours and `bdev` is its device.
        Ok(Self { file, bdev })
    }

    /// The raw block device, for the abstractions of this layer.
    pub(crate) fn as_raw(&self) -> *mut bindings::block_device {
        self.bdev.as_ptr()
    }

    /// The device number.
    pub(crate) fn dev(&self) -> DevT {
        // SAFETY: `bdev` is valid (type invariant); `bd_dev` never changes.
        DevT(unsafe { (*self.bdev.as_ptr()).bd_dev })
    }

    /// The device number of the whole disk this device is (or is part of).
    pub(crate) fn whole_dev(&self) -> DevT {
        // SAFETY: `bdev` is valid and an open device's `bd_disk` and its
        // `part0` stay valid while it is open.
        DevT(unsafe { (*(*(*self.bdev.as_ptr()).bd_disk).part0).bd_dev })
    }

    /// Whether the device is a partition.
    pub(crate) fn is_partition(&self) -> bool {
        // SAFETY: `bdev` is valid (type invariant).
        unsafe { bindings::bdev_is_partition(self.bdev.as_ptr()) }
    }

    /// Size in 512-byte sectors.
    pub(crate) fn nr_sectors(&self) -> u64 {
        // SAFETY: `bdev` is valid (type invariant).
        unsafe { bindings::bdev_nr_sectors(self.bdev.as_ptr()) }
    }

    /// Logical block size in bytes.
    pub(crate) fn logical_block_size(&self) -> u32 {
        // SAFETY: `bdev` is valid (type invariant).
        unsafe { bindings::bdev_logical_block_size(self.bdev.as_ptr()) }
    }

    /// Freezes the file system on the device, if any (otherwise syncs it),
    /// until the returned guard is dropped.
    pub(crate) fn freeze(&self) -> Result<Frozen<'_>> {
        // SAFETY: `bdev` is valid (type invariant); freezing nests.
        to_result(unsafe { bindings::bdev_freeze(self.bdev.as_ptr()) })?;
        // INVARIANT: the freeze above succeeded.
        Ok(Frozen { bdev: self })
    }
}

impl Drop for BdevFile {
    fn drop(&mut self) {
        // SAFETY: We own one reference to `file` (type invariant). The block
        // device is released when the last reference goes.
        unsafe { bindings::fput(self.file.as_ptr()) };
    }
}

/// A device whose file system is frozen; thawed on drop.
///
/// # Invariants
///
/// Holds one successful `bdev_freeze` of `bdev`.
pub(crate) struct Frozen<'a> {
    bdev: &'a BdevFile,
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        // SAFETY: Balances the freeze this value holds (type invariant).
        let ret = unsafe { bindings::bdev_thaw(self.bdev.as_raw()) };
        if ret != 0 {
            kernel::pr_warn!("thawing device {}:{} failed: {}\n",
                self.bdev.dev().major(), self.bdev.dev().minor(), ret);
        }
    }
}
