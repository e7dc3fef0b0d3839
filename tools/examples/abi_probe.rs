// SPDX-License-Identifier: GPL-2.0

//! Prints the Rust mirror of the ABI in the format of `tests/abi/probe.c`, so
//! that the header probe can compare the C headers and the Rust mirror line by
//! line.

use std::mem::{align_of, offset_of, size_of};

use blksnap::uapi::*;

macro_rules! ioctl {
    ($n:ident) => {
        println!("ioctl {} 0x{:08x}", stringify!($n), $n)
    };
}

/// The C name of a Rust mirror type: `BlkSnapCbtInfo` -> `blk_snap_cbt_info`.
fn c_name(rust: &str) -> String {
    let mut out = String::new();
    for (i, ch) in rust.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

macro_rules! strukt {
    ($t:ident { $($f:ident: $ft:ty),* }) => {{
        let name = c_name(stringify!($t));
        println!("struct {} size {} align {}", name, size_of::<$t>(), align_of::<$t>());
        $(println!("field {}.{} offset {} size {}", name, stringify!($f), offset_of!($t, $f),
            size_of::<$ft>());)*
    }};
}

fn main() {
    ioctl!(IOCTL_BLK_SNAP_VERSION);
    ioctl!(IOCTL_BLK_SNAP_TRACKER_REMOVE);
    ioctl!(IOCTL_BLK_SNAP_TRACKER_COLLECT);
    ioctl!(IOCTL_BLK_SNAP_TRACKER_READ_CBT_MAP);
    ioctl!(IOCTL_BLK_SNAP_TRACKER_MARK_DIRTY_BLOCKS);
    ioctl!(IOCTL_BLK_SNAP_SNAPSHOT_CREATE);
    ioctl!(IOCTL_BLK_SNAP_SNAPSHOT_DESTROY);
    ioctl!(IOCTL_BLK_SNAP_SNAPSHOT_APPEND_STORAGE);
    ioctl!(IOCTL_BLK_SNAP_SNAPSHOT_TAKE);
    ioctl!(IOCTL_BLK_SNAP_SNAPSHOT_COLLECT);
    ioctl!(IOCTL_BLK_SNAP_SNAPSHOT_COLLECT_IMAGES);
    ioctl!(IOCTL_BLK_SNAP_SNAPSHOT_WAIT_EVENT);

    println!("const BLK_SNAP {}", BLK_SNAP);
    println!(
        "const blk_snap_event_code_low_free_space {}",
        BLK_SNAP_EVENT_CODE_LOW_FREE_SPACE
    );
    println!(
        "const blk_snap_event_code_corrupted {}",
        BLK_SNAP_EVENT_CODE_CORRUPTED
    );
    println!("const BLK_SNAP_CTL {}", BLK_SNAP_CTL);
    println!("const BLK_SNAP_IMAGE_NAME {}", BLK_SNAP_IMAGE_NAME);

    strukt!(BlkSnapVersion {
        major: u16,
        minor: u16,
        revision: u16,
        build: u16
    });
    strukt!(BlkSnapDev { mj: u32, mn: u32 });
    strukt!(BlkSnapTrackerRemove { dev_id: BlkSnapDev });
    strukt!(BlkSnapUuid { b: [u8; 16] });
    strukt!(BlkSnapCbtInfo {
        dev_id: BlkSnapDev,
        blk_size: u32,
        device_capacity: u64,
        blk_count: u32,
        generation_id: BlkSnapUuid,
        snap_number: u8
    });
    strukt!(BlkSnapTrackerCollect {
        count: u32,
        cbt_info_array: u64
    });
    strukt!(BlkSnapTrackerReadCbtBitmap {
        dev_id: BlkSnapDev,
        offset: u32,
        length: u32,
        buff: u64
    });
    strukt!(BlkSnapBlockRange {
        sector_offset: u64,
        sector_count: u64
    });
    strukt!(BlkSnapTrackerMarkDirtyBlocks {
        dev_id: BlkSnapDev,
        count: u32,
        dirty_blocks_array: u64
    });
    strukt!(BlkSnapSnapshotCreate {
        count: u32,
        dev_id_array: u64,
        id: BlkSnapUuid
    });
    strukt!(BlkSnapSnapshotDestroy { id: BlkSnapUuid });
    strukt!(BlkSnapSnapshotAppendStorage {
        id: BlkSnapUuid,
        dev_id: BlkSnapDev,
        count: u32,
        ranges: u64
    });
    strukt!(BlkSnapSnapshotTake { id: BlkSnapUuid });
    strukt!(BlkSnapSnapshotCollect {
        count: u32,
        ids: u64
    });
    strukt!(BlkSnapImageInfo {
        orig_dev_id: BlkSnapDev,
        image_dev_id: BlkSnapDev
    });
    strukt!(BlkSnapSnapshotCollectImages {
        id: BlkSnapUuid,
        count: u32,
        image_info_array: u64
    });
    strukt!(BlkSnapSnapshotEvent {
        id: BlkSnapUuid,
        timeout_ms: u32,
        code: u32,
        time_label: i64,
        data: [u8; EVENT_DATA_SIZE]
    });
    strukt!(BlkSnapEventLowFreeSpace {
        requested_nr_sect: u64
    });
    strukt!(BlkSnapEventCorrupted {
        orig_dev_id: BlkSnapDev,
        err_code: i32
    });
}
