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

/* The kernel's _IOC_TYPECHECK() is not an integer constant expression. */
static int __init blksnap_uapi_check_init(void)
{
	BUILD_BUG_ON(IOCTL_BLK_SNAP_SNAPSHOT_WAIT_EVENT != 0x5000560b);
	BUILD_BUG_ON(IOCTL_BLK_SNAP_TRACKER_READ_CBT_MAP != 0x80185603);
	return 0;
}
module_init(blksnap_uapi_check_init);

MODULE_DESCRIPTION("blksnap UAPI header compile check");
MODULE_LICENSE("GPL");
