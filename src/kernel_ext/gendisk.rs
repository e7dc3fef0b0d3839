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
///
/// # Invariants
///
/// `major` was registered as `name` by [`BlockMajor::register`] and is
/// unregistered only in `Drop`.
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

/// Most read-only attributes a disk may have in its sysfs group.
pub(crate) const MAX_ATTRS: usize = 4;

/// What a bio-based disk does with its bios, and what it shows in sysfs.
pub(crate) trait DiskOps: Send + Sync + Sized {
    /// Name of the disk's attribute directory, `/sys/block/<disk>/<GROUP>/`.
    const ATTR_GROUP: &'static CStr;
    /// Names of the read-only numeric attributes in that directory (at most
    /// [`MAX_ATTRS`]).
    const ATTRS: &'static [&'static CStr];

    /// Handles a bio submitted to the disk; the callee owns it and must end
    /// it (possibly later, from another thread).
    fn submit_bio(this: &Arc<Self>, bio: OwnedBio);

    /// The value of attribute `index` of [`Self::ATTRS`].
    fn attr(this: &Arc<Self>, index: usize) -> u64;
}

struct LockClass(Opaque<bindings::lock_class_key>);
// SAFETY: lockdep owns the key's contents and serialises access to them.
unsafe impl Sync for LockClass {}
static DISK_LOCK_CLASS: LockClass = LockClass(Opaque::uninit());
/// The lockdep class of the attributes' sysfs files (what
/// `sysfs_attr_init` gives an attribute that is not a static object).
#[cfg(CONFIG_DEBUG_LOCK_ALLOC)]
static ATTR_LOCK_CLASS: LockClass = LockClass(Opaque::uninit());

/// The sysfs attribute group of one disk, in C's layout: the attributes,
/// the NULL-terminated list of pointers to them, the group, and the
/// NULL-terminated list of groups that `device_add_disk` takes.
#[repr(C)]
struct AttrGroup {
    attrs: [Opaque<bindings::device_attribute>; MAX_ATTRS],
    ptrs: Opaque<[*mut bindings::attribute; MAX_ATTRS + 1]>,
    group: Opaque<bindings::attribute_group>,
    groups: Opaque<[*const bindings::attribute_group; 2]>,
}

/// What a disk's `private_data` points to: its operations, its attributes
/// and its data. Freed by the block layer's `free_disk` callback once the
/// last reference to the disk is gone (an opener may outlive
/// `del_gendisk`, and the block layer reads `fops` until then; the sysfs
/// files go in `del_gendisk`, before).
///
/// # Invariants
///
/// Boxed and never moved once the disk points to it: `fops` and `attrs`
/// are what the disk's `fops` and attribute groups point to, and `data`
/// lives until `free_disk` frees the whole.
#[repr(C)]
struct DiskData<T: DiskOps> {
    fops: Opaque<bindings::block_device_operations>,
    attrs: AttrGroup,
    data: Arc<T>,
}

/// A fresh bio-based disk with logical and physical blocks of
/// `block_size` bytes, not yet set up or added.
fn alloc_disk(block_size: u32) -> Option<NonNull<bindings::gendisk>> {
    // SAFETY: All-zero limits mean "defaults" to the block layer.
    let mut lim: bindings::queue_limits = unsafe { MaybeUninit::zeroed().assume_init() };
    lim.logical_block_size = block_size;
    lim.physical_block_size = block_size;
    lim.max_hw_sectors = 2048;
    // SAFETY: `lim` is valid for the call; the lock class key is static.
    from_err_ptr(unsafe {
        bindings::__blk_alloc_disk(&mut lim, bindings::NUMA_NO_NODE, DISK_LOCK_CLASS.0.get())
    })
    .ok()
    .and_then(NonNull::new)
}

/// Names `disk` `name`, cut to what its name field holds.
///
/// # Safety
///
/// `disk` is a valid disk of ours, not yet added.
unsafe fn set_name(disk: *mut bindings::gendisk, name: &[u8]) {
    // SAFETY: The disk is valid and ours alone (function safety contract).
    let field = unsafe { &mut (*disk).disk_name };
    let n = name.len().min(field.len().saturating_sub(1));
    for (d, b) in field.iter_mut().zip(name.iter().take(n)) {
        *d = *b as _;
    }
    if let Some(end) = field.get_mut(n) {
        *end = 0;
    }
}

impl<T: DiskOps> DiskData<T> {
    /// The data of a disk served by `T` from `data`, on the heap where it
    /// stays until `free_disk`, and its attribute groups for
    /// `device_add_disk`.
    #[allow(clippy::type_complexity)]
    fn new(
        data: Arc<T>,
        module: &'static ThisModule,
    ) -> Result<(*mut Self, *mut *const bindings::attribute_group)> {
        // SAFETY: All-zero is a valid `block_device_operations` (no callbacks).
        let mut ops: bindings::block_device_operations =
            unsafe { MaybeUninit::zeroed().assume_init() };
        ops.owner = module.as_ptr();
        ops.submit_bio = Some(submit_bio_callback::<T>);
        ops.free_disk = Some(free_disk_callback::<T>);
        let dd = KBox::into_raw(KBox::new(
            Self {
                fops: Opaque::new(ops),
                // SAFETY: All-zero is a valid (empty) attribute group.
                attrs: unsafe { MaybeUninit::zeroed().assume_init() },
                data,
            },
            GFP_KERNEL,
        )?);
        // SAFETY: `dd` is a fresh allocation of ours, freed only below on
        // failure or by `free_disk`; it never moves.
        match unsafe { Self::init_attrs(dd) } {
            Ok(groups) => Ok((dd, groups)),
            Err(e) => {
                // SAFETY: `dd` came from `KBox::into_raw` and no disk refers
                // to it.
                drop(unsafe { KBox::from_raw(dd) });
                Err(e)
            }
        }
    }

    /// Fills in the attribute group of `dd` for `T` and returns the list of
    /// groups for `device_add_disk`.
    ///
    /// # Safety
    ///
    /// `dd` points to a valid `DiskData<T>` that does not move and is not
    /// yet used by any disk.
    unsafe fn init_attrs(dd: *mut Self) -> Result<*mut *const bindings::attribute_group> {
        if T::ATTRS.len() > MAX_ATTRS {
            return Err(kernel::error::code::EINVAL);
        }
        // SAFETY: `dd` is valid and ours alone (function safety contract);
        // every pointer stored points into `*dd`, which does not move, or to
        // static names.
        unsafe {
            let a = &mut (*dd).attrs;
            let ptrs = a.ptrs.get().cast::<*mut bindings::attribute>();
            for (i, (name, slot)) in T::ATTRS.iter().zip(a.attrs.iter()).enumerate() {
                let da = slot.get();
                (*da).attr.name = name.as_char_ptr();
                (*da).attr.mode = 0o444;
                #[cfg(CONFIG_DEBUG_LOCK_ALLOC)]
                {
                    (*da).attr.key = ATTR_LOCK_CLASS.0.get();
                }
                (*da).show = Some(show_callback::<T>);
                *ptrs.add(i) = core::ptr::addr_of_mut!((*da).attr);
            }
            *ptrs.add(T::ATTRS.len()) = core::ptr::null_mut();
            let group = a.group.get();
            (*group).name = T::ATTR_GROUP.as_char_ptr();
            (*group).attrs = ptrs;
            let groups = a.groups.get().cast::<*const bindings::attribute_group>();
            *groups = group;
            *groups.add(1) = core::ptr::null();
            Ok(groups)
        }
    }
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
        let (dd, groups) = DiskData::new(data, module)?;
        let Some(disk) = alloc_disk(block_size) else {
            // SAFETY: `dd` came from `KBox::into_raw` and no disk refers to it.
            drop(unsafe { KBox::from_raw(dd) });
            return Err(kernel::error::code::ENOMEM);
        };
        // SAFETY: A fresh disk of ours, not yet visible to anyone; `dd` is a
        // valid `DiskData<T>` that outlives it (freed by `free_disk`).
        unsafe {
            let d = disk.as_ptr();
            (*d).major = major as i32;
            (*d).first_minor = minor as i32;
            (*d).minors = 1;
            (*d).flags |= bindings::GENHD_FL_NO_PART as i32;
            (*d).fops = (*dd).fops.get();
            (*d).private_data = dd.cast();
            set_name(d, name);
            bindings::set_capacity(d, sectors);
        }
        // SAFETY: The disk is fully set up; on failure we still own it. The
        // groups live in `dd` until `free_disk`, after their files are gone.
        let ret =
            unsafe { bindings::device_add_disk(core::ptr::null_mut(), disk.as_ptr(), groups) };
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

/// Shows attribute `attr` of the disk whose device is `dev` as a decimal
/// number and a newline.
///
/// # Safety
///
/// Called by sysfs for a file of a group made by [`DiskData::init_attrs`]
/// with this `T`, while that file exists (before `del_gendisk` returns);
/// `buf` holds a page.
unsafe extern "C" fn show_callback<T: DiskOps>(
    dev: *mut bindings::device,
    attr: *mut bindings::device_attribute,
    buf: *mut kernel::ffi::c_char,
) -> isize {
    // The files are the disk's own: `dev` is its `part0`'s `bd_device`.
    // SAFETY: So `container_of` gives that block device, whose disk keeps
    // our `DiskData<T>` until `free_disk`, after the files are gone.
    let dd = unsafe {
        let bdev = dev
            .cast::<u8>()
            .sub(core::mem::offset_of!(bindings::block_device, bd_device))
            .cast::<bindings::block_device>();
        &*((*(*bdev).bd_disk).private_data as *const DiskData<T>)
    };
    let first = dd.attrs.attrs.as_ptr() as usize;
    let index =
        (attr as usize).wrapping_sub(first) / core::mem::size_of::<bindings::device_attribute>();
    if index >= T::ATTRS.len() {
        return -(bindings::EINVAL as isize);
    }
    // A `u64` has at most 20 digits; one more byte for the newline.
    let mut digits = [b'\n'; 21];
    let mut v = T::attr(&dd.data, index);
    let mut n = 1;
    for d in digits.iter_mut().rev().skip(1) {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
        n += 1;
        if v == 0 {
            break;
        }
    }
    let text = digits.get(digits.len() - n..).unwrap_or(&[]);
    // SAFETY: `buf` holds a page (function safety contract), more than the
    // 21 bytes of a `u64` and a newline.
    unsafe { core::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len()) };
    text.len() as isize
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
