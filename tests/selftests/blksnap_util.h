/* SPDX-License-Identifier: GPL-2.0 */
/* Helpers shared by the blksnap selftests. */
#ifndef BLKSNAP_UTIL_H
#define BLKSNAP_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include <linux/blksnap.h>
#include <linux/fs.h>

/*
 * Output goes to a pipe in the test VM, whose runner times each TAP point as
 * its line arrives: flush every line, not at exit.
 */
static void __attribute__((constructor)) blksnap_line_buffered(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
}

/* The test VM's disks: vda is plain, vdb has two partitions. */
#define DISK_A "/dev/vda"
#define DISK_B "/dev/vdb"
#define PART_B1 "/dev/vdb1"
#define PART_B2 "/dev/vdb2"

static inline int dev_id(const char *path, struct blk_snap_dev *id)
{
	struct stat st;

	if (stat(path, &st) || !S_ISBLK(st.st_mode))
		return -1;
	id->mj = major(st.st_rdev);
	id->mn = minor(st.st_rdev);
	return 0;
}

/* Writes `val` to the attribute file `path`: 0, or -1. */
static inline int put(const char *path, const char *val)
{
	int fd = open(path, O_WRONLY), ret;

	if (fd < 0)
		return -1;
	ret = write(fd, val, strlen(val)) == (ssize_t)strlen(val) ? 0 : -1;
	close(fd);
	return ret;
}

/* ioctl() returning -errno on failure, the call's value otherwise. */
static inline int xioctl(int fd, unsigned long nr, void *arg)
{
	int ret = ioctl(fd, nr, arg);

	return ret < 0 ? -errno : ret;
}

static inline int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Creates a snapshot of n devices; returns 0 or -errno. */
static inline int snapshot_create(int fd, const struct blk_snap_dev *devs,
				  unsigned int n, struct blk_snap_uuid *id)
{
	struct blk_snap_snapshot_create arg = {
		.count = n,
		.dev_id_array = (struct blk_snap_dev *)devs,
	};
	int ret = xioctl(fd, IOCTL_BLK_SNAP_SNAPSHOT_CREATE, &arg);

	if (!ret && id)
		*id = arg.id;
	return ret;
}

static inline int snapshot_destroy(int fd, const struct blk_snap_uuid *id)
{
	struct blk_snap_snapshot_destroy arg = { .id = *id };

	return xioctl(fd, IOCTL_BLK_SNAP_SNAPSHOT_DESTROY, &arg);
}

static inline int tracker_remove(int fd, const struct blk_snap_dev *dev)
{
	struct blk_snap_tracker_remove arg = { .dev_id = *dev };

	return xioctl(fd, IOCTL_BLK_SNAP_TRACKER_REMOVE, &arg);
}

/* Destroys every snapshot and removes every tracker: a clean slate. */
static inline void blksnap_reset(int fd)
{
	struct blk_snap_uuid ids[64];
	struct blk_snap_snapshot_collect sc = { .count = 64, .ids = ids };
	struct blk_snap_cbt_info info[64];
	struct blk_snap_tracker_collect tc = { .count = 64, .cbt_info_array = info };

	if (!xioctl(fd, IOCTL_BLK_SNAP_SNAPSHOT_COLLECT, &sc))
		for (unsigned int i = 0; i < sc.count; i++)
			snapshot_destroy(fd, &ids[i]);
	if (!xioctl(fd, IOCTL_BLK_SNAP_TRACKER_COLLECT, &tc))
		for (unsigned int i = 0; i < tc.count; i++)
			tracker_remove(fd, &info[i].dev_id);
}

/*
 * Returns room for `bytes` bytes that ends exactly where an unmapped page
 * begins, so that reading one byte more faults.
 */
static inline void *guarded_tail(size_t bytes)
{
	size_t page = 4096, len = (bytes + page - 1) / page * page + page;
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	munmap(p + len - page, page);
	return p + len - page - bytes;
}

#endif
