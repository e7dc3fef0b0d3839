// SPDX-License-Identifier: GPL-2.0
/*
 * Build-time check that include/uapi/linux/blksnap.h compiles in the kernel
 * with the sizes the ABI fixes.  Built by `make check`, never loaded.
 */
#include <linux/build_bug.h>
#include <linux/module.h>
#include <linux/blksnap.h>

static_assert(sizeof(struct blk_snap_cbt_info) == 48);
static_assert(sizeof(struct blk_snap_snapshot_event) == 4096);
static_assert(IOCTL_BLK_SNAP_SNAPSHOT_WAIT_EVENT == 0x5000560b);
static_assert(IOCTL_BLK_SNAP_TRACKER_READ_CBT_MAP == 0x80185603);

MODULE_DESCRIPTION("blksnap UAPI header compile check");
MODULE_LICENSE("GPL");
