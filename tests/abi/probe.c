// SPDX-License-Identifier: GPL-2.0
/*
 * Prints every ioctl number of the blksnap ABI and the size, alignment and
 * field offsets of every structure, one fact per line.  Compiled once against
 * the reference header and once against ours (BLKSNAP_HEADER); the outputs
 * must be identical, and equal to what tools/examples/abi_probe.rs prints for
 * the Rust mirror.
 */
#include <assert.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include BLKSNAP_HEADER

#define IOCTL(n) printf("ioctl %s 0x%08lx\n", #n, (unsigned long)(n))
#define STRUCT(s) printf("struct %s size %zu align %zu\n", #s, sizeof(struct s), _Alignof(struct s))
#define FIELD(s, f) printf("field %s.%s offset %zu size %zu\n", #s, #f, offsetof(struct s, f), sizeof(((struct s *)0)->f))
#define CONST(c) printf("const %s %ld\n", #c, (long)(c))

int main(void)
{
	IOCTL(IOCTL_BLK_SNAP_VERSION);
	IOCTL(IOCTL_BLK_SNAP_TRACKER_REMOVE);
	IOCTL(IOCTL_BLK_SNAP_TRACKER_COLLECT);
	IOCTL(IOCTL_BLK_SNAP_TRACKER_READ_CBT_MAP);
	IOCTL(IOCTL_BLK_SNAP_TRACKER_MARK_DIRTY_BLOCKS);
	IOCTL(IOCTL_BLK_SNAP_SNAPSHOT_CREATE);
	IOCTL(IOCTL_BLK_SNAP_SNAPSHOT_DESTROY);
	IOCTL(IOCTL_BLK_SNAP_SNAPSHOT_APPEND_STORAGE);
	IOCTL(IOCTL_BLK_SNAP_SNAPSHOT_TAKE);
	IOCTL(IOCTL_BLK_SNAP_SNAPSHOT_COLLECT);
	IOCTL(IOCTL_BLK_SNAP_SNAPSHOT_COLLECT_IMAGES);
	IOCTL(IOCTL_BLK_SNAP_SNAPSHOT_WAIT_EVENT);

	CONST(BLK_SNAP);
	CONST(blk_snap_event_code_low_free_space);
	CONST(blk_snap_event_code_corrupted);
	printf("const BLK_SNAP_CTL %s\n", BLK_SNAP_CTL);
	printf("const BLK_SNAP_IMAGE_NAME %s\n", BLK_SNAP_IMAGE_NAME);

	STRUCT(blk_snap_version);
	FIELD(blk_snap_version, major);
	FIELD(blk_snap_version, minor);
	FIELD(blk_snap_version, revision);
	FIELD(blk_snap_version, build);

	STRUCT(blk_snap_dev);
	FIELD(blk_snap_dev, mj);
	FIELD(blk_snap_dev, mn);

	STRUCT(blk_snap_tracker_remove);
	FIELD(blk_snap_tracker_remove, dev_id);

	STRUCT(blk_snap_uuid);
	FIELD(blk_snap_uuid, b);

	STRUCT(blk_snap_cbt_info);
	FIELD(blk_snap_cbt_info, dev_id);
	FIELD(blk_snap_cbt_info, blk_size);
	FIELD(blk_snap_cbt_info, device_capacity);
	FIELD(blk_snap_cbt_info, blk_count);
	FIELD(blk_snap_cbt_info, generation_id);
	FIELD(blk_snap_cbt_info, snap_number);

	STRUCT(blk_snap_tracker_collect);
	FIELD(blk_snap_tracker_collect, count);
	FIELD(blk_snap_tracker_collect, cbt_info_array);

	STRUCT(blk_snap_tracker_read_cbt_bitmap);
	FIELD(blk_snap_tracker_read_cbt_bitmap, dev_id);
	FIELD(blk_snap_tracker_read_cbt_bitmap, offset);
	FIELD(blk_snap_tracker_read_cbt_bitmap, length);
	FIELD(blk_snap_tracker_read_cbt_bitmap, buff);

	STRUCT(blk_snap_block_range);
	FIELD(blk_snap_block_range, sector_offset);
	FIELD(blk_snap_block_range, sector_count);

	STRUCT(blk_snap_tracker_mark_dirty_blocks);
	FIELD(blk_snap_tracker_mark_dirty_blocks, dev_id);
	FIELD(blk_snap_tracker_mark_dirty_blocks, count);
	FIELD(blk_snap_tracker_mark_dirty_blocks, dirty_blocks_array);

	STRUCT(blk_snap_snapshot_create);
	FIELD(blk_snap_snapshot_create, count);
	FIELD(blk_snap_snapshot_create, dev_id_array);
	FIELD(blk_snap_snapshot_create, id);

	STRUCT(blk_snap_snapshot_destroy);
	FIELD(blk_snap_snapshot_destroy, id);

	STRUCT(blk_snap_snapshot_append_storage);
	FIELD(blk_snap_snapshot_append_storage, id);
	FIELD(blk_snap_snapshot_append_storage, dev_id);
	FIELD(blk_snap_snapshot_append_storage, count);
	FIELD(blk_snap_snapshot_append_storage, ranges);

	STRUCT(blk_snap_snapshot_take);
	FIELD(blk_snap_snapshot_take, id);

	STRUCT(blk_snap_snapshot_collect);
	FIELD(blk_snap_snapshot_collect, count);
	FIELD(blk_snap_snapshot_collect, ids);

	STRUCT(blk_snap_image_info);
	FIELD(blk_snap_image_info, orig_dev_id);
	FIELD(blk_snap_image_info, image_dev_id);

	STRUCT(blk_snap_snapshot_collect_images);
	FIELD(blk_snap_snapshot_collect_images, id);
	FIELD(blk_snap_snapshot_collect_images, count);
	FIELD(blk_snap_snapshot_collect_images, image_info_array);

	STRUCT(blk_snap_snapshot_event);
	FIELD(blk_snap_snapshot_event, id);
	FIELD(blk_snap_snapshot_event, timeout_ms);
	FIELD(blk_snap_snapshot_event, code);
	FIELD(blk_snap_snapshot_event, time_label);
	FIELD(blk_snap_snapshot_event, data);

	STRUCT(blk_snap_event_low_free_space);
	FIELD(blk_snap_event_low_free_space, requested_nr_sect);

	STRUCT(blk_snap_event_corrupted);
	FIELD(blk_snap_event_corrupted, orig_dev_id);
	FIELD(blk_snap_event_corrupted, err_code);
	return 0;
}
