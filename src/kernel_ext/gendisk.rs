// SPDX-License-Identifier: GPL-2.0

//! Bio-based disks: block devices whose bios a Rust type handles directly
//! (6.12's `kernel::block` only has blk-mq disks).
//!
//! C header: [`include/linux/blkdev.h`](srctree/include/linux/blkdev.h)

use core::mem::MaybeUninit;
use core::ptr::NonNull;

use kernel::alloc::{flags::GFP_KERNEL, KBox};
use kernel::bindings;
use kernel::error::{from_err_ptr, to_result, Error, Result};
use kernel::str::CStr;
use kernel::sync::Arc;
use kernel::types::Opaque;
use kernel::ThisModule;

use super::bio::OwnedBio;

/// A block major number registered under a name; unregistered on drop.
pub(crate) struct BlockMajor {
    major: u32,
    name: &'static CStr,
}

impl BlockMajor {
    /// Registers a dynamic major called `name` (see `/proc/devices`).
    pub(crate) fn register(name: &'static CStr) -> Result<Self> {
        // SAFETY: Major 0 asks for a free one; `name` is static.
        let ret = unsafe { bindings::__register_blkdev(0, name.as_char_ptr(), None) };
        if ret < 0 {
            return Err(Error::from_errno(ret));
        }
        Ok(Self {
            major: ret as u32,
            name,
        })
    }

    pub(crate) fn major(&self) -> u32 {
        self.major
    }
}

impl Drop for BlockMajor {
    fn drop(&mut self) {
        // SAFETY: Registered in `register` with this name.
        unsafe { bindings::unregister_blkdev(self.major, self.name.as_char_ptr()) };
    }
}

/// What a bio-based disk does with its bios.
pub(crate) trait DiskOps: Send + Sync + Sized {
    /// Handles a bio submitted to the disk; the callee owns it and must end
    /// it (possibly later, from another thread).
    fn submit_bio(this: &Arc<Self>, bio: OwnedBio);
}

struct LockClass(Opaque<bindings::lock_class_key>);
// SAFETY: lockdep owns the key's contents and serialises access to them.
unsafe impl Sync for LockClass {}
static DISK_LOCK_CLASS: LockClass = LockClass(Opaque::uninit());

/// What a disk's `private_data` points to: its operations and its data.
/// Freed by the block layer's `free_disk` callback once the last reference
/// to the disk is gone (an opener may outlive `del_gendisk`, and the block
/// layer reads `fops` until then).
#[repr(C)]
struct DiskData<T: DiskOps> {
    fops: Opaque<bindings::block_device_operations>,
    data: Arc<T>,
}

/// A bio-based disk with one minor and no partitions; removed on drop.
///
/// # Invariants
///
/// `disk` was added with `device_add_disk` and we hold one reference to it;
/// its `private_data` is a `DiskData<T>` from `KBox::into_raw`, whose
/// `fops` the disk uses, freed only by [`free_disk_callback`].
pub(crate) struct BioDisk<T: DiskOps> {
    disk: NonNull<bindings::gendisk>,
    _data: core::marker::PhantomData<Arc<T>>,
}

// SAFETY: The disk may be removed from any thread; `T` is `Send + Sync`.
unsafe impl<T: DiskOps> Send for BioDisk<T> {}
// SAFETY: `&BioDisk` only reads immutable fields.
unsafe impl<T: DiskOps> Sync for BioDisk<T> {}

impl<T: DiskOps> BioDisk<T> {
    /// Creates and adds disk `name` (at most 31 bytes) as `major:minor`,
    /// `sectors` long with logical blocks of `block_size` bytes (a power of
    /// two from 512 to the page size), served by `data`.
    pub(crate) fn add(
        name: &[u8],
        major: u32,
        minor: u32,
        sectors: u64,
        block_size: u32,
        data: Arc<T>,
        module: &'static ThisModule,
    ) -> Result<Self> {
        if !block_size.is_power_of_two()
            || !(512..=kernel::page::PAGE_SIZE as u32).contains(&block_size)
        {
            return Err(kernel::error::code::EINVAL);
        }
        // SAFETY: All-zero is a valid `block_device_operations` (no callbacks).
        let mut ops: bindings::block_device_operations =
            unsafe { MaybeUninit::zeroed().assume_init() };
        ops.owner = module.as_ptr();
        ops.submit_bio = Some(submit_bio_callback::<T>);
        ops.free_disk = Some(free_disk_callback::<T>);
        let dd = KBox::into_raw(KBox::new(
            DiskData {
                fops: Opaque::new(ops),
                data,
            },
            GFP_KERNEL,
        )?);

        // SAFETY: All-zero limits mean "defaults" to the block layer.
        let mut lim: bindings::queue_limits = unsafe { MaybeUninit::zeroed().assume_init() };
        lim.logical_block_size = block_size;
        lim.physical_block_size = block_size;
        lim.max_hw_sectors = 2048;
        // SAFETY: `lim` is valid for the call; the lock class key is static.
        let disk = from_err_ptr(unsafe {
            bindings::__blk_alloc_disk(&mut lim, bindings::NUMA_NO_NODE, DISK_LOCK_CLASS.0.get())
        })
        .ok()
        .and_then(NonNull::new);
        let Some(disk) = disk else {
            // SAFETY: `dd` came from `KBox::into_raw` and no disk refers to it.
            drop(unsafe { KBox::from_raw(dd) });
            return Err(kernel::error::code::ENOMEM);
        };
        // SAFETY: A fresh disk of ours, not yet visible to anyone; `dd` is a
        // valid `DiskData<T>`.
        unsafe {
            let d = disk.as_ptr();
            (*d).major = major as i32;
            (*d).first_minor = minor as i32;
            (*d).minors = 1;
            (*d).flags |= bindings::GENHD_FL_NO_PART as i32;
            (*d).fops = (*dd).fops.get();
            (*d).private_data = dd.cast();
            let n = name.len().min((*d).disk_name.len() - 1);
            for (i, b) in name.iter().take(n).enumerate() {
                (*d).disk_name[i] = *b as _;
            }
            (*d).disk_name[n] = 0;
            bindings::set_capacity(d, sectors);
        }
        // SAFETY: The disk is fully set up; on failure we still own it.
        let ret = unsafe {
            bindings::device_add_disk(core::ptr::null_mut(), disk.as_ptr(), core::ptr::null_mut())
        };
        if let Err(e) = to_result(ret) {
            // SAFETY: Never added, so `free_disk` will not run: drop our
            // reference, then the data.
            unsafe {
                bindings::put_disk(disk.as_ptr());
                drop(KBox::from_raw(dd));
            }
            return Err(e);
        }
        // INVARIANT: added, with `DiskData` left to `free_disk`.
        Ok(Self {
            disk,
            _data: core::marker::PhantomData,
        })
    }

    /// The disk's device number.
    pub(crate) fn dev(&self) -> super::block::DevT {
        // SAFETY: The disk is alive while we hold our reference (type invariant).
        let (major, minor) = unsafe {
            (
                (*self.disk.as_ptr()).major,
                (*self.disk.as_ptr()).first_minor,
            )
        };
        super::block::DevT::new(major as u32, minor as u32)
            .unwrap_or(super::block::DevT::from_raw(0))
    }
}

impl<T: DiskOps> Drop for BioDisk<T> {
    fn drop(&mut self) {
        // After `del_gendisk` no `submit_bio` call runs or starts; the last
        // reference to the disk frees the `DiskData` through `free_disk`.
        // SAFETY: The disk was added and we hold a reference (type invariant).
        unsafe {
            bindings::del_gendisk(self.disk.as_ptr());
            bindings::put_disk(self.disk.as_ptr());
        }
    }
}

/// # Safety
///
/// Called by the block layer for a bio on a disk made by [`BioDisk::add`]
/// with this `T`, before `del_gendisk` returned.
unsafe extern "C" fn submit_bio_callback<T: DiskOps>(bio: *mut bindings::bio) {
    // SAFETY: The bio's disk is ours; its `private_data` is a `DiskData<T>`
    // that lives until `free_disk`, after every `submit_bio` (type invariant).
    let dd = unsafe { &*((*(*(*bio).bi_bdev).bd_disk).private_data as *const DiskData<T>) };
    // SAFETY: The block layer hands the bio over to the driver.
    T::submit_bio(&dd.data, unsafe { OwnedBio::from_raw(bio) });
}

/// # Safety
///
/// Called once by the block layer when the last reference to a disk added
/// by [`BioDisk::add`] with this `T` goes; nothing uses its `fops` after.
unsafe extern "C" fn free_disk_callback<T: DiskOps>(disk: *mut bindings::gendisk) {
    // SAFETY: `private_data` is the `DiskData<T>` from `KBox::into_raw` in
    // `add`, freed only here.
    drop(unsafe { KBox::from_raw((*disk).private_data as *mut DiskData<T>) });
}
