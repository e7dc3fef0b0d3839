// SPDX-License-Identifier: GPL-2.0

//! The blksnap user-space ABI, mirrored from `include/uapi/linux/blksnap.h`
//! and its extensions in `include/uapi/linux/blksnap-persist.h`.
//!
//! This file is the only place in Rust where the ABI's numbers and layouts are
//! written down. It uses `core` alone, so that the kernel module and the
//! user-space crate under `tools/` both include it (the latter with
//! `#[path]`).
//!
//! Every structure is `#[repr(C)]` with its padding spelled out as `_padN`
//! fields, so that no structure has implicit padding: a value built with the
//! padding zeroed leaks nothing when copied out. User-space pointers are kept
//! as `u64` addresses (the ABI targets 64-bit user space). The assertions at
//! the end check every size and offset at compile time.

#![allow(dead_code, unreachable_pub)]

use core::mem::{offset_of, size_of};

/// Path of the control device.
pub const BLK_SNAP_CTL: &str = "/dev/blksnap";
/// Name prefix of the snapshot image block devices (and of their major).
pub const BLK_SNAP_IMAGE_NAME: &str = "blksnap-image";
/// The ioctl type byte.
pub const BLK_SNAP: u8 = b'V';

/// Command numbers (the `nr` field of the ioctl numbers).
pub mod nr {
    pub const VERSION: u8 = 0;
    pub const TRACKER_REMOVE: u8 = 1;
    pub const TRACKER_COLLECT: u8 = 2;
    pub const TRACKER_READ_CBT_MAP: u8 = 3;
    pub const TRACKER_MARK_DIRTY_BLOCKS: u8 = 4;
    pub const SNAPSHOT_CREATE: u8 = 5;
    pub const SNAPSHOT_DESTROY: u8 = 6;
    pub const SNAPSHOT_APPEND_STORAGE: u8 = 7;
    pub const SNAPSHOT_TAKE: u8 = 8;
    pub const SNAPSHOT_COLLECT: u8 = 9;
    pub const SNAPSHOT_COLLECT_IMAGES: u8 = 10;
    pub const SNAPSHOT_WAIT_EVENT: u8 = 11;
}

const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// Builds an ioctl number the way `_IOC()` of `<asm-generic/ioctl.h>` does.
const fn ioc(dir: u32, nr: u8, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | ((BLK_SNAP as u32) << 8) | nr as u32
}

/// `_IOW(BLK_SNAP, nr, T)`.
const fn iow<T>(nr: u8) -> u32 {
    ioc(IOC_WRITE, nr, size_of::<T>())
}

/// `_IOR(BLK_SNAP, nr, T)`.
const fn ior<T>(nr: u8) -> u32 {
    ioc(IOC_READ, nr, size_of::<T>())
}

// The direction bits follow the header, not what the calls do: several
// "write" calls return data and several "read" calls take input.
pub const IOCTL_BLK_SNAP_VERSION: u32 = iow::<BlkSnapVersion>(nr::VERSION);
pub const IOCTL_BLK_SNAP_TRACKER_REMOVE: u32 = iow::<BlkSnapTrackerRemove>(nr::TRACKER_REMOVE);
pub const IOCTL_BLK_SNAP_TRACKER_COLLECT: u32 = iow::<BlkSnapTrackerCollect>(nr::TRACKER_COLLECT);
pub const IOCTL_BLK_SNAP_TRACKER_READ_CBT_MAP: u32 =
    ior::<BlkSnapTrackerReadCbtBitmap>(nr::TRACKER_READ_CBT_MAP);
pub const IOCTL_BLK_SNAP_TRACKER_MARK_DIRTY_BLOCKS: u32 =
    ior::<BlkSnapTrackerMarkDirtyBlocks>(nr::TRACKER_MARK_DIRTY_BLOCKS);
pub const IOCTL_BLK_SNAP_SNAPSHOT_CREATE: u32 = iow::<BlkSnapSnapshotCreate>(nr::SNAPSHOT_CREATE);
pub const IOCTL_BLK_SNAP_SNAPSHOT_DESTROY: u32 =
    ior::<BlkSnapSnapshotDestroy>(nr::SNAPSHOT_DESTROY);
pub const IOCTL_BLK_SNAP_SNAPSHOT_APPEND_STORAGE: u32 =
    iow::<BlkSnapSnapshotAppendStorage>(nr::SNAPSHOT_APPEND_STORAGE);
pub const IOCTL_BLK_SNAP_SNAPSHOT_TAKE: u32 = ior::<BlkSnapSnapshotTake>(nr::SNAPSHOT_TAKE);
pub const IOCTL_BLK_SNAP_SNAPSHOT_COLLECT: u32 =
    iow::<BlkSnapSnapshotCollect>(nr::SNAPSHOT_COLLECT);
pub const IOCTL_BLK_SNAP_SNAPSHOT_COLLECT_IMAGES: u32 =
    iow::<BlkSnapSnapshotCollectImages>(nr::SNAPSHOT_COLLECT_IMAGES);
pub const IOCTL_BLK_SNAP_SNAPSHOT_WAIT_EVENT: u32 =
    iow::<BlkSnapSnapshotEvent>(nr::SNAPSHOT_WAIT_EVENT);

/// `enum blk_snap_event_codes`.
pub const BLK_SNAP_EVENT_CODE_LOW_FREE_SPACE: u32 = 0;
/// `enum blk_snap_event_codes`.
pub const BLK_SNAP_EVENT_CODE_CORRUPTED: u32 = 1;

/// The ABI version this module serves.
pub const VERSION: BlkSnapVersion = BlkSnapVersion {
    major: 1,
    minor: 0,
    revision: 0,
    build: 0,
};

/// `struct blk_snap_version`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkSnapVersion {
    pub major: u16,
    pub minor: u16,
    pub revision: u16,
    pub build: u16,
}

/// `struct blk_snap_dev`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct BlkSnapDev {
    pub mj: u32,
    pub mn: u32,
}

/// `struct blk_snap_tracker_remove`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlkSnapTrackerRemove {
    pub dev_id: BlkSnapDev,
}

/// `struct blk_snap_uuid`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkSnapUuid {
    pub b: [u8; 16],
}

/// `struct blk_snap_cbt_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlkSnapCbtInfo {
    pub dev_id: BlkSnapDev,
    pub blk_size: u32,
    pub _pad0: u32,
    pub device_capacity: u64,
    pub blk_count: u32,
    pub generation_id: BlkSnapUuid,
    pub snap_number: u8,
    pub _pad1: [u8; 3],
}

/// `struct blk_snap_tracker_collect`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlkSnapTrackerCollect {
    pub count: u32,
    pub _pad0: u32,
    /// `struct blk_snap_cbt_info *`
    pub cbt_info_array: u64,
}

/// `struct blk_snap_tracker_read_cbt_bitmap`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlkSnapTrackerReadCbtBitmap {
    pub dev_id: BlkSnapDev,
    pub offset: u32,
    pub length: u32,
    /// `__u8 *`
    pub buff: u64,
}

/// `struct blk_snap_block_range`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkSnapBlockRange {
    pub sector_offset: u64,
    pub sector_count: u64,
}

/// `struct blk_snap_tracker_mark_dirty_blocks`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlkSnapTrackerMarkDirtyBlocks {
    pub dev_id: BlkSnapDev,
    pub count: u32,
    pub _pad0: u32,
    /// `struct blk_snap_block_range *`
    pub dirty_blocks_array: u64,
}

/// `struct blk_snap_snapshot_create`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlkSnapSnapshotCreate {
    pub count: u32,
    pub _pad0: u32,
    /// `struct blk_snap_dev *`
    pub dev_id_array: u64,
    pub id: BlkSnapUuid,
}

/// `struct blk_snap_snapshot_destroy`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlkSnapSnapshotDestroy {
    pub id: BlkSnapUuid,
}

/// `struct blk_snap_snapshot_append_storage`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlkSnapSnapshotAppendStorage {
    pub id: BlkSnapUuid,
    pub dev_id: BlkSnapDev,
    pub count: u32,
    pub _pad0: u32,
    /// `struct blk_snap_block_range *`
    pub ranges: u64,
}

/// `struct blk_snap_snapshot_take`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlkSnapSnapshotTake {
    pub id: BlkSnapUuid,
}

/// `struct blk_snap_snapshot_collect`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlkSnapSnapshotCollect {
    pub count: u32,
    pub _pad0: u32,
    /// `struct blk_snap_uuid *`
    pub ids: u64,
}

/// `struct blk_snap_image_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkSnapImageInfo {
    pub orig_dev_id: BlkSnapDev,
    pub image_dev_id: BlkSnapDev,
}

/// `struct blk_snap_snapshot_collect_images`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlkSnapSnapshotCollectImages {
    pub id: BlkSnapUuid,
    pub count: u32,
    pub _pad0: u32,
    /// `struct blk_snap_image_info *`
    pub image_info_array: u64,
}

/// Size of [`BlkSnapSnapshotEvent::data`].
pub const EVENT_DATA_SIZE: usize = 4096 - 32;

/// `struct blk_snap_snapshot_event`: one page. Never put one on a kernel stack.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlkSnapSnapshotEvent {
    pub id: BlkSnapUuid,
    pub timeout_ms: u32,
    pub code: u32,
    pub time_label: i64,
    pub data: [u8; EVENT_DATA_SIZE],
}

/// `struct blk_snap_event_low_free_space`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlkSnapEventLowFreeSpace {
    pub requested_nr_sect: u64,
}

/// `struct blk_snap_event_corrupted`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlkSnapEventCorrupted {
    pub orig_dev_id: BlkSnapDev,
    pub err_code: i32,
}

// --- Extensions: include/uapi/linux/blksnap-persist.h -----------------------

/// Command numbers of the extensions, after the seed's last.
pub mod nr_persist {
    pub const TRACKER_PERSIST: u8 = 12;
    pub const TRACKER_DETACH: u8 = 13;
    pub const TRACKER_PERSIST_STATUS: u8 = 14;
}

/// `BLK_SNAP_PERSIST_IDENTITY_SIZE`.
pub const BLK_SNAP_PERSIST_IDENTITY_SIZE: usize = 64;
/// `blk_snap_persist_in_memory`: the device was tracked already.
pub const BLK_SNAP_PERSIST_IN_MEMORY: u32 = 8;

/// `_IOWR(BLK_SNAP, nr, T)`.
const fn iowr<T>(nr: u8) -> u32 {
    ioc(IOC_READ | IOC_WRITE, nr, size_of::<T>())
}

pub const IOCTL_BLK_SNAP_TRACKER_PERSIST: u32 =
    iowr::<BlkSnapTrackerPersist>(nr_persist::TRACKER_PERSIST);
pub const IOCTL_BLK_SNAP_TRACKER_DETACH: u32 =
    iow::<BlkSnapTrackerDetach>(nr_persist::TRACKER_DETACH);
pub const IOCTL_BLK_SNAP_TRACKER_PERSIST_STATUS: u32 =
    iowr::<BlkSnapTrackerPersistStatus>(nr_persist::TRACKER_PERSIST_STATUS);

/// `BLK_SNAP_PERSIST_STATUS_STORE`: a store is attached.
pub const BLK_SNAP_PERSIST_STATUS_STORE: u32 = 1;

/// `struct blk_snap_tracker_persist`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlkSnapTrackerPersist {
    pub dev_id: BlkSnapDev,
    pub store_dev_id: BlkSnapDev,
    pub count: u32,
    pub reset: u32,
    pub ranges: u64,
    pub identity: [u8; BLK_SNAP_PERSIST_IDENTITY_SIZE],
    pub boot_id: [u8; 16],
    pub generation: BlkSnapUuid,
    pub previous: u8,
    pub active: u8,
    pub flags: u8,
    pub reserved: [u8; 5],
}

/// `BLK_SNAP_PERSIST_EXISTING`: attach only a store that is there.
pub const BLK_SNAP_PERSIST_EXISTING: u8 = 1;

impl Default for BlkSnapTrackerPersist {
    fn default() -> Self {
        Self {
            dev_id: BlkSnapDev::default(),
            store_dev_id: BlkSnapDev::default(),
            count: 0,
            reset: 0,
            ranges: 0,
            identity: [0; BLK_SNAP_PERSIST_IDENTITY_SIZE],
            boot_id: [0; 16],
            generation: BlkSnapUuid::default(),
            previous: 0,
            active: 0,
            flags: 0,
            reserved: [0; 5],
        }
    }
}

/// `struct blk_snap_tracker_detach`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlkSnapTrackerDetach {
    pub dev_id: BlkSnapDev,
    pub flags: u32,
    pub reserved: u32,
}

/// `struct blk_snap_tracker_persist_status`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlkSnapTrackerPersistStatus {
    pub dev_id: BlkSnapDev,
    pub flags: u32,
    pub reset: u32,
    pub generation: BlkSnapUuid,
    pub checkpoint: u64,
    pub intent_flushes: u64,
}

/// Expands `$m!(Type)` for every ABI structure: for code that must treat
/// all of them alike (byte-view trait impls, layout reports).
#[macro_export]
macro_rules! for_each_uapi_struct {
    ($m:ident) => {
        $m!(BlkSnapVersion);
        $m!(BlkSnapDev);
        $m!(BlkSnapTrackerRemove);
        $m!(BlkSnapUuid);
        $m!(BlkSnapCbtInfo);
        $m!(BlkSnapTrackerCollect);
        $m!(BlkSnapTrackerReadCbtBitmap);
        $m!(BlkSnapBlockRange);
        $m!(BlkSnapTrackerMarkDirtyBlocks);
        $m!(BlkSnapSnapshotCreate);
        $m!(BlkSnapSnapshotDestroy);
        $m!(BlkSnapSnapshotAppendStorage);
        $m!(BlkSnapSnapshotTake);
        $m!(BlkSnapSnapshotCollect);
        $m!(BlkSnapImageInfo);
        $m!(BlkSnapSnapshotCollectImages);
        $m!(BlkSnapSnapshotEvent);
        $m!(BlkSnapEventLowFreeSpace);
        $m!(BlkSnapEventCorrupted);
        $m!(BlkSnapTrackerPersist);
        $m!(BlkSnapTrackerDetach);
        $m!(BlkSnapTrackerPersistStatus);
    };
}

macro_rules! assert_layout {
    ($t:ty, size $size:expr $(, $field:ident @ $off:expr)*) => {
        const _: () = assert!(size_of::<$t>() == $size);
        $(const _: () = assert!(offset_of!($t, $field) == $off);)*
    };
}

assert_layout!(BlkSnapVersion, size 8, major @ 0, minor @ 2, revision @ 4, build @ 6);
assert_layout!(BlkSnapDev, size 8, mj @ 0, mn @ 4);
assert_layout!(BlkSnapTrackerRemove, size 8, dev_id @ 0);
assert_layout!(BlkSnapUuid, size 16, b @ 0);
assert_layout!(BlkSnapCbtInfo, size 48, dev_id @ 0, blk_size @ 8, device_capacity @ 16,
    blk_count @ 24, generation_id @ 28, snap_number @ 44);
assert_layout!(BlkSnapTrackerCollect, size 16, count @ 0, cbt_info_array @ 8);
assert_layout!(BlkSnapTrackerReadCbtBitmap, size 24, dev_id @ 0, offset @ 8, length @ 12,
    buff @ 16);
assert_layout!(BlkSnapBlockRange, size 16, sector_offset @ 0, sector_count @ 8);
assert_layout!(BlkSnapTrackerMarkDirtyBlocks, size 24, dev_id @ 0, count @ 8,
    dirty_blocks_array @ 16);
assert_layout!(BlkSnapSnapshotCreate, size 32, count @ 0, dev_id_array @ 8, id @ 16);
assert_layout!(BlkSnapSnapshotDestroy, size 16, id @ 0);
assert_layout!(BlkSnapSnapshotAppendStorage, size 40, id @ 0, dev_id @ 16, count @ 24,
    ranges @ 32);
assert_layout!(BlkSnapSnapshotTake, size 16, id @ 0);
assert_layout!(BlkSnapSnapshotCollect, size 16, count @ 0, ids @ 8);
assert_layout!(BlkSnapImageInfo, size 16, orig_dev_id @ 0, image_dev_id @ 8);
assert_layout!(BlkSnapSnapshotCollectImages, size 32, id @ 0, count @ 16,
    image_info_array @ 24);
assert_layout!(BlkSnapSnapshotEvent, size 4096, id @ 0, timeout_ms @ 16, code @ 20,
    time_label @ 24, data @ 32);
assert_layout!(BlkSnapEventLowFreeSpace, size 8, requested_nr_sect @ 0);
assert_layout!(BlkSnapEventCorrupted, size 12, orig_dev_id @ 0, err_code @ 8);
assert_layout!(BlkSnapTrackerPersist, size 136, dev_id @ 0, store_dev_id @ 8, count @ 16,
    reset @ 20, ranges @ 24, identity @ 32, boot_id @ 96, generation @ 112, previous @ 128,
    active @ 129, flags @ 130, reserved @ 131);
assert_layout!(BlkSnapTrackerDetach, size 16, dev_id @ 0, flags @ 8, reserved @ 12);
assert_layout!(BlkSnapTrackerPersistStatus, size 48, dev_id @ 0, flags @ 8, reset @ 12,
    generation @ 16, checkpoint @ 32, intent_flushes @ 40);

// The numbers the contract lists for x86_64.
const _: () = {
    assert!(IOCTL_BLK_SNAP_VERSION == 0x4008_5600);
    assert!(IOCTL_BLK_SNAP_TRACKER_REMOVE == 0x4008_5601);
    assert!(IOCTL_BLK_SNAP_TRACKER_COLLECT == 0x4010_5602);
    assert!(IOCTL_BLK_SNAP_TRACKER_READ_CBT_MAP == 0x8018_5603);
    assert!(IOCTL_BLK_SNAP_TRACKER_MARK_DIRTY_BLOCKS == 0x8018_5604);
    assert!(IOCTL_BLK_SNAP_SNAPSHOT_CREATE == 0x4020_5605);
    assert!(IOCTL_BLK_SNAP_SNAPSHOT_DESTROY == 0x8010_5606);
    assert!(IOCTL_BLK_SNAP_SNAPSHOT_APPEND_STORAGE == 0x4028_5607);
    assert!(IOCTL_BLK_SNAP_SNAPSHOT_TAKE == 0x8010_5608);
    assert!(IOCTL_BLK_SNAP_SNAPSHOT_COLLECT == 0x4010_5609);
    assert!(IOCTL_BLK_SNAP_SNAPSHOT_COLLECT_IMAGES == 0x4020_560a);
    assert!(IOCTL_BLK_SNAP_SNAPSHOT_WAIT_EVENT == 0x5000_560b);
    // blksnap-persist.h (tests/abi/check.sh checks the C side).
    assert!(IOCTL_BLK_SNAP_TRACKER_PERSIST == 0xc088_560c);
    assert!(IOCTL_BLK_SNAP_TRACKER_DETACH == 0x4010_560d);
    assert!(IOCTL_BLK_SNAP_TRACKER_PERSIST_STATUS == 0xc030_560e);
};
