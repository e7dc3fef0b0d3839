// SPDX-License-Identifier: GPL-2.0

//! Block devices opened by device number or held by reference, and file
//! system freezing.
//!
//! C header: [`include/linux/blkdev.h`](srctree/include/linux/blkdev.h)

use core::ops::Deref;
use core::ptr::NonNull;

use kernel::alloc::{flags::GFP_KERNEL, KVec};
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

/// A block device, seen through an owner that keeps it valid: an open
/// [`BdevFile`] or a [`BdevRef`]. Only those create it, and only a shared
/// borrow of it is handed out, so it never outlives its owner.
///
/// # Invariants
///
/// `0` points to a valid `struct block_device` for as long as this value
/// exists.
pub(crate) struct Bdev(NonNull<bindings::block_device>);

impl Bdev {
    /// The raw block device, for the abstractions of this layer.
    pub(crate) fn as_raw(&self) -> *mut bindings::block_device {
        self.0.as_ptr()
    }

    /// The device number.
    pub(crate) fn dev(&self) -> DevT {
        // SAFETY: The device is valid (type invariant); `bd_dev` never
        // changes.
        DevT(unsafe { (*self.as_raw()).bd_dev })
    }

    /// The device number of the whole disk this device is (or is part of).
    pub(crate) fn whole_dev(&self) -> DevT {
        // SAFETY: The device is valid (type invariant), and it keeps its
        // disk, whose `part0` lives as long as the disk, allocated.
        DevT(unsafe { (*(*(*self.as_raw()).bd_disk).part0).bd_dev })
    }

    /// Where the device starts on its whole disk, in sectors (0 for a disk).
    pub(crate) fn start_sect(&self) -> u64 {
        // SAFETY: The device is valid (type invariant); a partition's start
        // does not change while it exists.
        unsafe { (*self.as_raw()).bd_start_sect }
    }

    /// Whether the device is a partition.
    pub(crate) fn is_partition(&self) -> bool {
        // SAFETY: The device is valid (type invariant).
        unsafe { bindings::bdev_is_partition(self.as_raw()) }
    }

    /// Size in 512-byte sectors (0 once a removed disk's capacity is gone).
    pub(crate) fn nr_sectors(&self) -> u64 {
        // SAFETY: The device is valid (type invariant).
        unsafe { bindings::bdev_nr_sectors(self.as_raw()) }
    }

    /// Logical block size in bytes.
    pub(crate) fn logical_block_size(&self) -> u32 {
        // SAFETY: The device is valid (type invariant).
        unsafe { bindings::bdev_logical_block_size(self.as_raw()) }
    }

    /// Physical block size in bytes: the smallest write the device does
    /// without a read-modify-write of its own.
    pub(crate) fn physical_block_size(&self) -> u32 {
        // SAFETY: The device is valid (type invariant).
        unsafe { bindings::bdev_physical_block_size(self.as_raw()) }
    }

    /// The device's preferred minimum I/O size in bytes (RAID stripe unit,
    /// flash page), or 0 if it has none.
    pub(crate) fn io_min(&self) -> u32 {
        // SAFETY: The device is valid (type invariant).
        unsafe { bindings::bdev_io_min(self.as_raw()) }
    }

    /// Whether the device is zoned (writes must follow write pointers).
    pub(crate) fn is_zoned(&self) -> bool {
        // SAFETY: The device is valid (type invariant).
        unsafe { bindings::bdev_is_zoned(self.as_raw()) }
    }

    /// Sectors written to the device since it appeared (its I/O
    /// statistics, which nothing resets while the device lives; a disk's
    /// count includes its partitions').
    pub(crate) fn sectors_written(&self) -> u64 {
        // SAFETY: The device is valid (type invariant).
        unsafe { bindings::bdev_sectors_written(self.as_raw()) }
    }

    /// Makes every write to the device that has completed durable (a
    /// cache flush). Sleeps: process context only.
    pub(crate) fn flush(&self) -> Result {
        // SAFETY: The device is valid (type invariant); callers are in
        // process context (documented above).
        to_result(unsafe { bindings::blkdev_issue_flush(self.as_raw()) })
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
    bdev: Bdev,
}

impl Deref for BdevFile {
    type Target = Bdev;
    fn deref(&self) -> &Bdev {
        &self.bdev
    }
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
            bindings::bdev_file_open_by_dev(
                dev.raw(),
                mode,
                core::ptr::null_mut(),
                core::ptr::null(),
            )
        })?;
        let file = NonNull::new(file).ok_or(kernel::error::code::ENODEV)?;
        // SAFETY: `file` is a block device file we hold.
        let bdev = unsafe { bindings::file_bdev(file.as_ptr()) };
        let Some(bdev) = NonNull::new(bdev) else {
            // SAFETY: We own the reference from the open above.
            unsafe { bindings::fput(file.as_ptr()) };
            return Err(kernel::error::code::ENODEV);
        };
        // INVARIANT: `file` is ours and `bdev` is its device, valid while
        // the file is held.
        Ok(Self {
            file,
            bdev: Bdev(bdev),
        })
    }

    /// The device numbers of the partitions of this device if it is a whole
    /// disk (none for a partition), as they are now.
    pub(crate) fn partitions(&self) -> Result<KVec<DevT>> {
        self.list_devs(bindings::blk_filter_list_partitions)
    }

    /// The device numbers of the devices this one is built on (device
    /// mapper tables, md members, and what those are built on), as they
    /// are now. Devices reached through files (a loop device's backing
    /// file) are not listed.
    pub(crate) fn lower_devices(&self) -> Result<KVec<DevT>> {
        self.list_devs(bindings::blk_filter_list_lower)
    }

    /// Calls a block layer listing of device numbers with room enough.
    fn list_devs(
        &self,
        list: unsafe extern "C" fn(*mut bindings::block_device, *mut u32, u32) -> u32,
    ) -> Result<KVec<DevT>> {
        let mut raw: KVec<u32> = KVec::new();
        loop {
            let room = u32::try_from(raw.capacity()).unwrap_or(u32::MAX);
            // SAFETY: `bdev` is valid (type invariant) and `raw` has room for
            // `room` device numbers; both listings write at most that many.
            let n = unsafe { list(self.as_raw(), raw.as_mut_ptr(), room) };
            if n <= room {
                // SAFETY: The first `n` elements were initialised above.
                unsafe { raw.set_len(n as usize) };
                break;
            }
            // Devices appeared since the last look: make room, try again.
            raw = KVec::with_capacity(n as usize + 4, GFP_KERNEL)?;
        }
        let mut devs = KVec::with_capacity(raw.len(), GFP_KERNEL)?;
        for &d in raw.iter() {
            devs.push(DevT(d), GFP_KERNEL)?;
        }
        Ok(devs)
    }

    /// Freezes the file system on the device, if any (otherwise syncs it),
    /// and, for a whole disk, those on each of its partitions, until the
    /// returned guard is dropped.
    pub(crate) fn freeze(&self) -> Result<Frozen<'_>> {
        freeze_one(self)?;
        // INVARIANT: the freeze above succeeded; `parts` starts empty.
        let mut frozen = Frozen {
            bdev: self,
            parts: KVec::new(),
        };
        for dev in self.partitions()?.iter() {
            // A partition removed since the listing has nothing to freeze.
            let Ok(file) = BdevFile::open(*dev, false) else {
                continue;
            };
            freeze_one(&file)?;
            // INVARIANT: `file` is frozen once; if the push fails, the value
            // is dropped, which thaws it.
            frozen.parts.push(FrozenPart { file }, GFP_KERNEL)?;
        }
        Ok(frozen)
    }
}

/// `bdev_freeze` of one device.
fn freeze_one(bdev: &BdevFile) -> Result {
    // SAFETY: `bdev` is valid (type invariant of `BdevFile`); freezing nests.
    to_result(unsafe { bindings::bdev_freeze(bdev.as_raw()) })
}

/// Balances one successful [`freeze_one`].
fn thaw_one(bdev: &BdevFile) {
    // SAFETY: `bdev` is valid (type invariant of `BdevFile`), and the caller
    // balances a freeze it holds.
    let ret = unsafe { bindings::bdev_thaw(bdev.as_raw()) };
    if ret != 0 {
        kernel::pr_warn!(
            "thawing device {}:{} failed: {}\n",
            bdev.dev().major(),
            bdev.dev().minor(),
            ret
        );
    }
}

impl BdevFile {
    /// A reference to this device that stays valid after the file is
    /// closed, without keeping the device open.
    pub(crate) fn hold(&self) -> BdevRef {
        // SAFETY: `bdev` is valid (type invariant); `bd_device` is the
        // device embedded in it, whose reference keeps the whole structure
        // (and its disk) from being freed.
        unsafe { bindings::get_device(&mut (*self.as_raw()).bd_device) };
        // INVARIANT: one reference taken above, dropped in `Drop`.
        BdevRef {
            bdev: Bdev(self.bdev.0),
        }
    }
}

impl Drop for BdevFile {
    fn drop(&mut self) {
        // SAFETY: We own one reference to `file` (type invariant). The block
        // device is released when the last reference goes.
        unsafe { bindings::fput(self.file.as_ptr()) };
    }
}

/// A device whose file system is frozen, with the file systems of its
/// partitions if it is a whole disk; thawed on drop.
///
/// # Invariants
///
/// Holds one successful `bdev_freeze` of `bdev`; each of `parts` holds one
/// of its own device.
pub(crate) struct Frozen<'a> {
    bdev: &'a BdevFile,
    parts: KVec<FrozenPart>,
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        // Balances the freeze this value holds (type invariant); the
        // partitions in `parts` thaw as they are dropped after this.
        thaw_one(self.bdev);
    }
}

/// A partition held open and frozen by [`BdevFile::freeze`] of its disk.
///
/// # Invariants
///
/// Holds one successful `bdev_freeze` of `file`.
struct FrozenPart {
    file: BdevFile,
}

impl Drop for FrozenPart {
    fn drop(&mut self) {
        // Balances the freeze this value holds (type invariant); `file` is
        // closed after this.
        thaw_one(&self.file);
    }
}

/// A block device held by a reference to its `struct device`, not open: the
/// device can be removed (its disk deleted, its partition dropped) while the
/// reference exists, and the structure stays valid to look at. Opening a
/// device by number again gives an open [`BdevFile`] for I/O.
///
/// # Invariants
///
/// We hold one reference to `bdev->bd_device` (`get_device`), dropped in
/// `Drop`; it keeps `bdev` and its disk allocated.
pub(crate) struct BdevRef {
    bdev: Bdev,
}

// SAFETY: The device reference may be dropped from any thread.
unsafe impl Send for BdevRef {}
// SAFETY: `&BdevRef` only gives out `&Bdev`, whose methods read fields that
// do not change for the life of the structure or call thread-safe helpers.
unsafe impl Sync for BdevRef {}

impl Deref for BdevRef {
    type Target = Bdev;
    fn deref(&self) -> &Bdev {
        &self.bdev
    }
}

impl BdevRef {
    /// Whether `file` is an open file of this very device (not of another
    /// that took its number after it went away).
    pub(crate) fn is(&self, file: &BdevFile) -> bool {
        file.as_raw() == self.as_raw()
    }
}

impl Drop for BdevRef {
    fn drop(&mut self) {
        // SAFETY: We hold one reference to the device (type invariant).
        unsafe { bindings::put_device(&mut (*self.as_raw()).bd_device) };
    }
}

/// Runs `f` with a block plug on the current task: the bios `f` submits
/// are held in the plug and go to their devices together when it returns
/// (or earlier, if the task sleeps or the plug fills), so that the block
/// layer merges neighbours into one request and the driver is told once.
/// A plug already on the task (a caller's) is kept, and this one does
/// nothing.
pub(crate) fn with_plug<R>(f: impl FnOnce() -> R) -> R {
    let mut plug = core::mem::MaybeUninit::<bindings::blk_plug>::uninit();
    // SAFETY: `blk_start_plug` initialises the plug before it uses it. The
    // plug stays in this frame, unmoved, until `blk_finish_plug` below has
    // taken it off the task.
    unsafe { bindings::blk_start_plug(plug.as_mut_ptr()) };
    let r = f();
    // SAFETY: This task started the plug above and has not finished it;
    // `blk_finish_plug` ignores a plug that is not the task's.
    unsafe { bindings::blk_finish_plug(plug.as_mut_ptr()) };
    r
}
