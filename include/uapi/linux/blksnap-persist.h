/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * blksnap extensions: change tracking that survives a restart.
 *
 * A CBT store is a run of 4 KiB blocks on a block device (a file's
 * extents, or a device range) that keeps a tracker's change maps. A
 * tracker sealed into its store by IOCTL_BLK_SNAP_TRACKER_DETACH (or at
 * module unload) is taken up again by IOCTL_BLK_SNAP_TRACKER_PERSIST, with
 * the same generation and numbers, if nothing can have written the
 * device meanwhile: the next incremental backup continues its chain.
 * Otherwise tracking starts afresh and the call says why.
 *
 * These ioctls follow the last number of <linux/blksnap.h>, which they
 * leave as it is. See Documentation/persistence.rst.
 */
#ifndef _UAPI_LINUX_BLKSNAP_PERSIST_H
#define _UAPI_LINUX_BLKSNAP_PERSIST_H

#include <linux/blksnap.h>

/* Command numbers, after those of enum blk_snap_ioctl. */
enum blk_snap_persist_ioctl {
	blk_snap_ioctl_tracker_persist = 12,
	blk_snap_ioctl_tracker_detach = 13,
	blk_snap_ioctl_tracker_persist_status = 14,
};

#define BLK_SNAP_PERSIST_IDENTITY_SIZE 64

/*
 * Why tracking started afresh instead of going on with a store's maps
 * (the @reset field below); 0 when the chain goes on.
 */
enum blk_snap_persist_reset {
	blk_snap_persist_continued = 0,
	/* The store holds no header: it is new. */
	blk_snap_persist_new_store = 1,
	/* The store failed its checks (a header, a map block, the maps). */
	blk_snap_persist_store_damaged = 2,
	/* The store was made for another device (identity). */
	blk_snap_persist_other_device = 3,
	/* The device's size changed. */
	blk_snap_persist_resized = 4,
	/* The store's tracking block size is not the tracker's. */
	blk_snap_persist_block_size = 5,
	/* The device was written while no tracker watched it. */
	blk_snap_persist_written_untracked = 6,
	/* Tracking stopped without a seal in this boot. */
	blk_snap_persist_unclean = 7,
	/* The device was already tracked: its maps in memory go on. */
	blk_snap_persist_in_memory = 8,
	/*
	 * An earlier boot ended without a seal (a crash, a power cut) while
	 * the store kept no write-intent marks (during a snapshot).
	 */
	blk_snap_persist_unclean_shutdown = 9,
};

/**
 * struct blk_snap_tracker_persist - Attaches a CBT store to a device.
 * @dev_id: The device to track.
 * @store_dev_id: The device the store is on (it may be @dev_id itself).
 * @count: Number of ranges at @ranges (at most 4096).
 * @reset: Out: enum blk_snap_persist_reset.
 * @ranges: User pointer to @count struct blk_snap_block_range, in sectors
 *	of @store_dev_id, in the store's order: each a whole number of 4 KiB
 *	blocks, none overlapping.
 * @identity: What names the device across restarts (a partition UUID, a
 *	WWN), zero padded; compared with the store's.
 * @boot_id: This boot's id (/proc/sys/kernel/random/boot_id, as 16 bytes).
 * @generation: Out: the tracker's generation.
 * @previous: Out: the number of the tracker's last snapshot.
 * @active: Out: the tracker's active change number.
 * @flags: BLK_SNAP_PERSIST_EXISTING, or zero.
 * @reserved: Zero.
 */
struct blk_snap_tracker_persist {
	struct blk_snap_dev dev_id;
	struct blk_snap_dev store_dev_id;
	__u32 count;
	__u32 reset;
	__u64 ranges;
	__u8 identity[BLK_SNAP_PERSIST_IDENTITY_SIZE];
	__u8 boot_id[16];
	struct blk_snap_uuid generation;
	__u8 previous;
	__u8 active;
	__u8 flags;
	__u8 reserved[5];
};

/*
 * In struct blk_snap_tracker_persist's @flags: attach only a store that is
 * there (a valid header in its first blocks), else fail with ENOENT having
 * written nothing. For an attach from ranges recorded earlier (at boot),
 * which must never write over blocks that no longer hold the store.
 */
#define BLK_SNAP_PERSIST_EXISTING 1

/*
 * Attaches a store. A device not yet tracked starts tracking with the
 * store's maps and numbers if continuity holds (@reset 0), else afresh
 * (@reset says why); a device already tracked keeps its maps (@reset
 * blk_snap_persist_in_memory). Either way the store is written when the
 * tracker is detached. Errors: ENODEV (no such device), EBUSY (the device
 * already has a store or is in a snapshot; the ranges share blocks with
 * another store or with a snapshot's storage; or the store's writes would
 * reach a device in a snapshot), EINVAL (bad ranges, @count 0 or too
 * large, unknown @flags, nonzero @reserved), ENOSPC (the ranges are
 * smaller than the maps need), ENOENT (BLK_SNAP_PERSIST_EXISTING, and no
 * store is there), EIO (the store could not be marked in use), EFAULT.
 */
#define IOCTL_BLK_SNAP_TRACKER_PERSIST \
	_IOWR(BLK_SNAP, blk_snap_ioctl_tracker_persist, \
	      struct blk_snap_tracker_persist)

/**
 * struct blk_snap_tracker_detach - Stops tracking, sealing the store.
 * @dev_id: The tracked device.
 * @flags: Zero.
 * @reserved: Zero.
 */
struct blk_snap_tracker_detach {
	struct blk_snap_dev dev_id;
	__u32 flags;
	__u32 reserved;
};

/*
 * Seals the device's store (both maps, the numbers, the device's size and
 * write count) and stops tracking it, as IOCTL_BLK_SNAP_TRACKER_REMOVE
 * does. Errors: ENODEV (not tracked), ENOENT (no store attached), EBUSY
 * (in a snapshot), EIO (the seal could not be written: the tracker stays,
 * nothing is lost), EINVAL (nonzero @flags or @reserved).
 */
#define IOCTL_BLK_SNAP_TRACKER_DETACH \
	_IOW(BLK_SNAP, blk_snap_ioctl_tracker_detach, \
	     struct blk_snap_tracker_detach)

/* In struct blk_snap_tracker_persist_status's @flags: a store is attached. */
#define BLK_SNAP_PERSIST_STATUS_STORE 1

/**
 * struct blk_snap_tracker_persist_status - What a tracker's store says.
 * @dev_id: The tracked device.
 * @flags: Out: BLK_SNAP_PERSIST_STATUS_STORE if a store is attached.
 * @reset: Out: enum blk_snap_persist_reset of the PERSIST that attached
 *	the store (0: the chain went on from it); 0 without a store.
 * @generation: Out: the tracker's generation (for a nonzero @reset, the
 *	one that started then, unless a wrap of the change numbers started
 *	another since).
 * @checkpoint: Out: the sequence number of the store's last checkpoint
 *	(0 without a store).
 * @intent_flushes: Out: write-intent flushes the tracker has done (each
 *	made the marks of the writes waiting for it durable).
 */
struct blk_snap_tracker_persist_status {
	struct blk_snap_dev dev_id;
	__u32 flags;
	__u32 reset;
	struct blk_snap_uuid generation;
	__u64 checkpoint;
	__u64 intent_flushes;
};

/*
 * Reads a tracked device's store status: why tracking started afresh, if
 * it did, so that a tool that must fall back to a full backup can say
 * why. Errors: ENODEV (not tracked), EFAULT.
 */
#define IOCTL_BLK_SNAP_TRACKER_PERSIST_STATUS \
	_IOWR(BLK_SNAP, blk_snap_ioctl_tracker_persist_status, \
	      struct blk_snap_tracker_persist_status)

#endif /* _UAPI_LINUX_BLKSNAP_PERSIST_H */
