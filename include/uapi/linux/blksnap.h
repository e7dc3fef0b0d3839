/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * blksnap: point-in-time snapshots of block devices and changed block
 * tracking, driven through the /dev/blksnap control device.
 *
 * Every call below is an ioctl on /dev/blksnap.  All calls but
 * IOCTL_BLK_SNAP_VERSION need CAP_SYS_ADMIN.  Structure layouts, names and
 * ioctl numbers are a fixed ABI; Documentation/abi.rst describes the
 * behaviour and the errors of each call.
 */
#ifndef _UAPI_LINUX_BLK_SNAP_H
#define _UAPI_LINUX_BLK_SNAP_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define BLK_SNAP_CTL "/dev/blksnap"
#define BLK_SNAP_IMAGE_NAME "blksnap-image"
#define BLK_SNAP 'V'

/* Command numbers (the "nr" field of each ioctl number). */
enum blk_snap_ioctl {
	/* Module information. */
	blk_snap_ioctl_version,
	/* Change tracking. */
	blk_snap_ioctl_tracker_remove,
	blk_snap_ioctl_tracker_collect,
	blk_snap_ioctl_tracker_read_cbt_map,
	blk_snap_ioctl_tracker_mark_dirty_blocks,
	/* Snapshots. */
	blk_snap_ioctl_snapshot_create,
	blk_snap_ioctl_snapshot_destroy,
	blk_snap_ioctl_snapshot_append_storage,
	blk_snap_ioctl_snapshot_take,
	blk_snap_ioctl_snapshot_collect,
	blk_snap_ioctl_snapshot_collect_images,
	blk_snap_ioctl_snapshot_wait_event,
};

/**
 * struct blk_snap_version - Version of the module's interface.
 * @major: Major number; 1 for this ABI.
 * @minor: Minor number.
 * @revision: Revision.
 * @build: Always 0.
 *
 * Meant for logs, not for feature tests: new behaviour comes as new ioctls.
 */
struct blk_snap_version {
	__u16 major;
	__u16 minor;
	__u16 revision;
	__u16 build;
};

/* Fills in a struct blk_snap_version.  Needs no privilege. */
#define IOCTL_BLK_SNAP_VERSION \
	_IOW(BLK_SNAP, blk_snap_ioctl_version, struct blk_snap_version)

/**
 * struct blk_snap_dev - Block device number, split in two explicit halves so
 * that the kernel and user space encodings of dev_t never get mixed up.
 * @mj: Major number.
 * @mn: Minor number.
 */
struct blk_snap_dev {
	__u32 mj;
	__u32 mn;
};

/**
 * struct blk_snap_tracker_remove - Argument of IOCTL_BLK_SNAP_TRACKER_REMOVE.
 * @dev_id: The tracked device.
 */
struct blk_snap_tracker_remove {
	struct blk_snap_dev dev_id;
};

/*
 * Stops change tracking on a device and forgets its change map.  Tracking
 * starts when a device is first put in a snapshot (IOCTL_BLK_SNAP_SNAPSHOT_CREATE).
 */
#define IOCTL_BLK_SNAP_TRACKER_REMOVE \
	_IOW(BLK_SNAP, blk_snap_ioctl_tracker_remove, \
	     struct blk_snap_tracker_remove)

/**
 * struct blk_snap_uuid - 16-byte unique identifier.
 * @b: The bytes.
 */
struct blk_snap_uuid {
	__u8 b[16];
};

/**
 * struct blk_snap_cbt_info - Change tracking state of one device.
 * @dev_id: The tracked device.
 * @blk_size: Size of one tracking block, in bytes.
 * @device_capacity: Size of the device, in bytes.
 * @blk_count: Number of tracking blocks (bytes in the change map).
 * @generation_id: Identifies the map's generation; change numbers compare
 *	only within one generation.
 * @snap_number: Change number of the last snapshot taken.
 */
struct blk_snap_cbt_info {
	struct blk_snap_dev dev_id;
	__u32 blk_size;
	__u64 device_capacity;
	__u32 blk_count;
	struct blk_snap_uuid generation_id;
	__u8 snap_number;
};

/**
 * struct blk_snap_tracker_collect - Argument of IOCTL_BLK_SNAP_TRACKER_COLLECT.
 * @count: In: room in @cbt_info_array.  Out: number of tracked devices.
 * @cbt_info_array: Output array, or NULL to ask for the count only.
 */
struct blk_snap_tracker_collect {
	__u32 count;
	struct blk_snap_cbt_info *cbt_info_array;
};

/*
 * Lists the tracked devices.  With a NULL array only @count is written; with
 * an array too small for all of them the call fails with ENODATA and writes
 * the count needed.
 */
#define IOCTL_BLK_SNAP_TRACKER_COLLECT \
	_IOW(BLK_SNAP, blk_snap_ioctl_tracker_collect, \
	     struct blk_snap_tracker_collect)

/**
 * struct blk_snap_tracker_read_cbt_bitmap - Argument of
 *	IOCTL_BLK_SNAP_TRACKER_READ_CBT_MAP.
 * @dev_id: The tracked device.
 * @offset: First byte of the change map to read.
 * @length: Room in @buff, in bytes.
 * @buff: Output buffer.
 */
struct blk_snap_tracker_read_cbt_bitmap {
	struct blk_snap_dev dev_id;
	__u32 offset;
	__u32 length;
	__u8 *buff;
};

/*
 * Copies part of the change map as of the last snapshot taken (one byte per
 * tracking block, holding the change number of its last write).  Returns the
 * number of bytes copied; 0 past the end.  Read it in a loop, advancing
 * @offset.
 */
#define IOCTL_BLK_SNAP_TRACKER_READ_CBT_MAP \
	_IOR(BLK_SNAP, blk_snap_ioctl_tracker_read_cbt_map, \
	     struct blk_snap_tracker_read_cbt_bitmap)

/**
 * struct blk_snap_block_range - A run of 512-byte sectors.
 * @sector_offset: First sector.
 * @sector_count: Number of sectors.
 */
struct blk_snap_block_range {
	__u64 sector_offset;
	__u64 sector_count;
};

/**
 * struct blk_snap_tracker_mark_dirty_blocks - Argument of
 *	IOCTL_BLK_SNAP_TRACKER_MARK_DIRTY_BLOCKS.
 * @dev_id: A tracked device, or a snapshot image of one.
 * @count: Number of entries in @dirty_blocks_array.
 * @dirty_blocks_array: Sector ranges to mark as changed.
 */
struct blk_snap_tracker_mark_dirty_blocks {
	struct blk_snap_dev dev_id;
	__u32 count;
	struct blk_snap_block_range *dirty_blocks_array;
};

/*
 * Marks sector ranges as changed in the change map, for changes that did not
 * pass through the tracked device.
 */
#define IOCTL_BLK_SNAP_TRACKER_MARK_DIRTY_BLOCKS \
	_IOR(BLK_SNAP, blk_snap_ioctl_tracker_mark_dirty_blocks, \
	     struct blk_snap_tracker_mark_dirty_blocks)

/**
 * struct blk_snap_snapshot_create - Argument of IOCTL_BLK_SNAP_SNAPSHOT_CREATE.
 * @count: Number of entries in @dev_id_array.
 * @dev_id_array: The devices the snapshot covers.
 * @id: Out: identifier of the new snapshot.
 */
struct blk_snap_snapshot_create {
	__u32 count;
	struct blk_snap_dev *dev_id_array;
	struct blk_snap_uuid id;
};

/*
 * Creates a snapshot of a set of devices, starting change tracking on each.
 * A device belongs to one snapshot at a time.  The snapshot asks for
 * storage at once with a low free space event.
 */
#define IOCTL_BLK_SNAP_SNAPSHOT_CREATE \
	_IOW(BLK_SNAP, blk_snap_ioctl_snapshot_create, \
	     struct blk_snap_snapshot_create)

/**
 * struct blk_snap_snapshot_destroy - Argument of IOCTL_BLK_SNAP_SNAPSHOT_DESTROY.
 * @id: The snapshot.
 */
struct blk_snap_snapshot_destroy {
	struct blk_snap_uuid id;
};

/*
 * Removes the snapshot's images and gives its storage back.  Change tracking
 * on its devices goes on.
 */
#define IOCTL_BLK_SNAP_SNAPSHOT_DESTROY \
	_IOR(BLK_SNAP, blk_snap_ioctl_snapshot_destroy, \
	     struct blk_snap_snapshot_destroy)

/**
 * struct blk_snap_snapshot_append_storage - Argument of
 *	IOCTL_BLK_SNAP_SNAPSHOT_APPEND_STORAGE.
 * @id: The snapshot.
 * @dev_id: The block device the ranges lie on.
 * @count: Number of entries in @ranges.
 * @ranges: Sector ranges of @dev_id the snapshot may overwrite.
 */
struct blk_snap_snapshot_append_storage {
	struct blk_snap_uuid id;
	struct blk_snap_dev dev_id;
	__u32 count;
	struct blk_snap_block_range *ranges;
};

/*
 * Hands sector ranges to the snapshot for keeping the original content of
 * blocks that are overwritten.  Allowed before and after
 * IOCTL_BLK_SNAP_SNAPSHOT_TAKE, as often as needed.
 */
#define IOCTL_BLK_SNAP_SNAPSHOT_APPEND_STORAGE \
	_IOW(BLK_SNAP, blk_snap_ioctl_snapshot_append_storage, \
	     struct blk_snap_snapshot_append_storage)

/**
 * struct blk_snap_snapshot_take - Argument of IOCTL_BLK_SNAP_SNAPSHOT_TAKE.
 * @id: The snapshot.
 */
struct blk_snap_snapshot_take {
	struct blk_snap_uuid id;
};

/*
 * Takes the snapshot: every device's content is fixed at one instant (file
 * systems frozen around it), change maps switch, and one image block device
 * per original appears.
 */
#define IOCTL_BLK_SNAP_SNAPSHOT_TAKE \
	_IOR(BLK_SNAP, blk_snap_ioctl_snapshot_take, \
	     struct blk_snap_snapshot_take)

/**
 * struct blk_snap_snapshot_collect - Argument of IOCTL_BLK_SNAP_SNAPSHOT_COLLECT.
 * @count: In: room in @ids.  Out: number of snapshots.
 * @ids: Output array, or NULL to ask for the count only.
 */
struct blk_snap_snapshot_collect {
	__u32 count;
	struct blk_snap_uuid *ids;
};

/* Lists the snapshots; the count protocol of IOCTL_BLK_SNAP_TRACKER_COLLECT. */
#define IOCTL_BLK_SNAP_SNAPSHOT_COLLECT \
	_IOW(BLK_SNAP, blk_snap_ioctl_snapshot_collect, \
	     struct blk_snap_snapshot_collect)

/**
 * struct blk_snap_image_info - An original device and its snapshot image.
 * @orig_dev_id: The original device.
 * @image_dev_id: Its image.
 */
struct blk_snap_image_info {
	struct blk_snap_dev orig_dev_id;
	struct blk_snap_dev image_dev_id;
};

/**
 * struct blk_snap_snapshot_collect_images - Argument of
 *	IOCTL_BLK_SNAP_SNAPSHOT_COLLECT_IMAGES.
 * @id: The snapshot.
 * @count: In: room in @image_info_array.  Out: number of images.
 * @image_info_array: Output array, or NULL to ask for the count only.
 */
struct blk_snap_snapshot_collect_images {
	struct blk_snap_uuid id;
	__u32 count;
	struct blk_snap_image_info *image_info_array;
};

/* Lists a snapshot's images; the count protocol of IOCTL_BLK_SNAP_TRACKER_COLLECT. */
#define IOCTL_BLK_SNAP_SNAPSHOT_COLLECT_IMAGES \
	_IOW(BLK_SNAP, blk_snap_ioctl_snapshot_collect_images, \
	     struct blk_snap_snapshot_collect_images)

/**
 * enum blk_snap_event_codes - What a snapshot event reports.
 * @blk_snap_event_code_low_free_space: The snapshot needs more storage;
 *	data is a struct blk_snap_event_low_free_space.
 * @blk_snap_event_code_corrupted: An original block could not be saved, so
 *	the device's image no longer shows the state at the snapshot; data is
 *	a struct blk_snap_event_corrupted.
 */
enum blk_snap_event_codes {
	blk_snap_event_code_low_free_space,
	blk_snap_event_code_corrupted,
};

/**
 * struct blk_snap_snapshot_event - Argument of
 *	IOCTL_BLK_SNAP_SNAPSHOT_WAIT_EVENT; one page in size.
 * @id: In: the snapshot.
 * @timeout_ms: In: how long to wait, in milliseconds.
 * @code: Out: an enum blk_snap_event_codes value.
 * @time_label: Out: when the event happened (CLOCK_MONOTONIC, nanoseconds).
 * @data: Out: the event's payload, by @code.
 */
struct blk_snap_snapshot_event {
	struct blk_snap_uuid id;
	__u32 timeout_ms;
	__u32 code;
	__s64 time_label;
	__u8 data[4096 - 32];
};

#if defined(__cplusplus)
static_assert(sizeof(struct blk_snap_snapshot_event) == 4096,
	      "struct blk_snap_snapshot_event must be one 4 KiB page");
#else
_Static_assert(sizeof(struct blk_snap_snapshot_event) == 4096,
	       "struct blk_snap_snapshot_event must be one 4 KiB page");
#endif

/*
 * Waits for the snapshot's next event, oldest first.  Fails with ENOENT when
 * @timeout_ms passes without one and with EINTR on a signal.
 */
#define IOCTL_BLK_SNAP_SNAPSHOT_WAIT_EVENT \
	_IOW(BLK_SNAP, blk_snap_ioctl_snapshot_wait_event, \
	     struct blk_snap_snapshot_event)

/**
 * struct blk_snap_event_low_free_space - Payload of a low free space event.
 * @requested_nr_sect: Sectors of storage the snapshot asks for.
 */
struct blk_snap_event_low_free_space {
	__u64 requested_nr_sect;
};

/**
 * struct blk_snap_event_corrupted - Payload of a corrupted event.
 * @orig_dev_id: The original device whose image is no longer exact.
 * @err_code: Positive errno of the failure.
 */
struct blk_snap_event_corrupted {
	struct blk_snap_dev orig_dev_id;
	__s32 err_code;
};

#endif /* _UAPI_LINUX_BLK_SNAP_H */
