// SPDX-License-Identifier: GPL-2.0
/*
 * Devices that go away: an original or a storage device deleted while
 * blksnap uses it, even while it is open.  Each test runs twice:
 *
 * - nullb: null_blk devices made through configfs, deleted by writing 0
 *   to their "power" attribute (what a driver's removal does);
 * - unplug: SCSI disks hp0, hp1 and hp2 on QEMU's virtio-scsi controller
 *   (SCSI targets 0, 1, 2), hot-unplugged with QMP device_del: the test
 *   prints "BSVM-UNPLUG hpN" and run.sh on the host does the unplug.
 *
 * Expected: no splat; an image whose original or storage went away fails
 * with EIO and its snapshot gets a corrupted event; writes to the other
 * devices are never failed; DESTROY, TRACKER_REMOVE and the final unload
 * work afterwards.
 */
#include <dirent.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include "blksnap_util.h"
#include "blksnap_data.h"
#include "kselftest_harness.h"

#define NULLB "/sys/kernel/config/nullb"

static int write_attr(const char *dev, const char *attr, const char *val)
{
	char path[128];

	snprintf(path, sizeof(path), NULLB "/%s/%s", dev, attr);
	return put(path, val);
}

/* Makes memory-backed null_blk device /dev/`name` of `mib` MiB. */
static int nullb_add(const char *name, const char *mib)
{
	char path[128], node[64];

	snprintf(path, sizeof(path), NULLB "/%s", name);
	if (mkdir(path, 0755) || write_attr(name, "size", mib) ||
	    write_attr(name, "memory_backed", "1") || write_attr(name, "power", "1"))
		return -1;
	snprintf(node, sizeof(node), "/dev/%s", name);
	/* devtmpfs makes the node as the disk is added. */
	for (int i = 0; i < 3000 && access(node, F_OK); i++)
		usleep(10000);
	return access(node, F_OK);
}

/* Deletes the disk (as a hot-unplug would), then the configfs entry. */
static int nullb_remove(const char *name)
{
	char path[128];

	snprintf(path, sizeof(path), NULLB "/%s", name);
	if (write_attr(name, "power", "0"))
		return -1;
	return rmdir(path);
}

/* Finds the SCSI disk at target @target (address 0:0:@target:0). */
static int scsi_disk(int target, char *path, size_t len)
{
	DIR *d = opendir("/sys/block");
	struct dirent *e;
	char want[32], link[256], dev[300];
	int ret = -1;

	snprintf(want, sizeof(want), "/0:0:%d:0", target);
	while (d && (e = readdir(d))) {
		ssize_t n;

		if (strncmp(e->d_name, "sd", 2))
			continue;
		snprintf(dev, sizeof(dev), "/sys/block/%s/device", e->d_name);
		n = readlink(dev, link, sizeof(link) - 1);
		if (n <= 0)
			continue;
		link[n] = 0;
		n = strlen(link) - strlen(want);
		if (n >= 0 && !strcmp(link + n, want)) {
			snprintf(path, len, "/dev/%.32s", e->d_name);
			ret = 0;
			break;
		}
	}
	if (d)
		closedir(d);
	return ret;
}

/* Waits up to 60 s for @path to go. */
static int gone(const char *path)
{
	for (int i = 0; i < 6000 && !access(path, F_OK); i++)
		usleep(10000);
	return access(path, F_OK) ? 0 : -1;
}

FIXTURE(rm) {
	int fd;
	struct blk_snap_dev a;
	struct blk_snap_snapshot_event *ev;
};

FIXTURE_VARIANT(rm) {
	int unplug;	/* QEMU hot-unplug, not null_blk */
};

FIXTURE_VARIANT_ADD(rm, nullb) {
	.unplug = 0,
};

FIXTURE_VARIANT_ADD(rm, unplug) {
	.unplug = 1,
};

static const char *const nullb_names[] = { "rmtrk", "rmorig", "rmstore" };

/* Disk @which (0: tracked, 1: original, 2: storage) of 32 MiB, in @path. */
static int disk_add(const FIXTURE_VARIANT(rm) *v, int which, char *path, size_t len)
{
	if (v->unplug)
		return scsi_disk(which, path, len);
	snprintf(path, len, "/dev/%s", nullb_names[which]);
	return nullb_add(nullb_names[which], "32");
}

/* Deletes disk @which, as a hot-unplug does, even while it is open. */
static int disk_remove(const FIXTURE_VARIANT(rm) *v, int which, const char *path)
{
	if (!v->unplug)
		return nullb_remove(nullb_names[which]);
	printf("BSVM-UNPLUG hp%d\n", which);
	fflush(stdout);
	return gone(path);
}

FIXTURE_SETUP(rm)
{
	self->fd = open(BLK_SNAP_CTL, O_RDWR);
	if (self->fd < 0)
		SKIP(return, BLK_SNAP_CTL " missing: module not loaded");
	if (dev_id(DISK_A, &self->a))
		SKIP(return, "test disks missing");
	self->ev = calloc(1, sizeof(*self->ev));
	ASSERT_NE(NULL, self->ev);
	blksnap_reset(self->fd);
	set_param("diff_storage_wait_ms", 5000);
	if (access(NULLB, F_OK)) {
		ASSERT_EQ(0, system("insmod /lib/modules/null_blk.ko nr_devices=0"));
		mount("configfs", "/sys/kernel/config", "configfs", 0, NULL);
	}
	ASSERT_EQ(0, access(NULLB, F_OK));
	if (variant->unplug && access("/sys/bus/scsi", F_OK))
		SKIP(return, "no SCSI in the kernel: no hot-pluggable disks");
}

FIXTURE_TEARDOWN(rm)
{
	if (self->fd >= 0) {
		blksnap_reset(self->fd);
		close(self->fd);
	}
	free(self->ev);
}

/* Between backups (a tracker, no snapshot) the device goes: tracking ends. */
TEST_F_TIMEOUT(rm, tracked_device_removed, 60)
{
	struct blk_snap_uuid id;
	struct blk_snap_dev d;
	char dev[64];

	ASSERT_EQ(0, disk_add(variant, 0, dev, sizeof(dev)));
	ASSERT_EQ(0, dev_id(dev, &d));
	ASSERT_EQ(0, snapshot_create(self->fd, &d, 1, &id));
	ASSERT_EQ(0, snapshot_destroy(self->fd, &id));
	ASSERT_EQ(0, fill(dev, 0, 1 << 20, 130));
	ASSERT_EQ(1, tracked(self->fd, &d));
	ASSERT_EQ(0, disk_remove(variant, 0, dev));
	EXPECT_EQ(0, tracked(self->fd, &d));
	EXPECT_EQ(-ENODEV, tracker_remove(self->fd, &d));
}

/*
 * The original of a taken snapshot goes while its image is open: the image
 * fails with EIO, a corrupted event names the device, and everything can
 * be torn down.
 */
TEST_F_TIMEOUT(rm, original_removed_under_open_image, 120)
{
	struct blk_snap_uuid id;
	struct blk_snap_dev d;
	char img[160], dev[64];
	unsigned char *buf;
	int ifd;

	ASSERT_EQ(0, disk_add(variant, 1, dev, sizeof(dev)));
	ASSERT_EQ(0, dev_id(dev, &d));
	ASSERT_EQ(0, fill(dev, 0, 16 << 20, 131));
	ASSERT_EQ(0, snapshot_create(self->fd, &d, 1, &id));
	ASSERT_EQ(0, append_storage(self->fd, &id, PART_B2, 0, 32 << 11));
	ASSERT_EQ(0, take(self->fd, &id));
	/* A chunk saved to storage, and one still on the original. */
	ASSERT_EQ(0, fill(dev, 0, 1 << 20, 132));
	ASSERT_EQ(0, image_path(self->fd, &id, &d, img, sizeof(img)));
	ASSERT_EQ(0, posix_memalign((void **)&buf, 4096, 1 << 20));
	ifd = open(img, O_RDONLY | O_DIRECT);
	ASSERT_LE(0, ifd);
	ASSERT_EQ(1 << 20, pread(ifd, buf, 1 << 20, 0));
	ASSERT_EQ(1 << 20, pread(ifd, buf, 1 << 20, 8 << 20));

	ASSERT_EQ(0, disk_remove(variant, 1, dev));
	EXPECT_EQ(ENODEV, corrupted_event(self->fd, &id, &d, self->ev, 5000));
	errno = 0;
	EXPECT_EQ(-1, pread(ifd, buf, 1 << 20, 0));
	EXPECT_EQ(EIO, errno);
	errno = 0;
	EXPECT_EQ(-1, pread(ifd, buf, 1 << 20, 8 << 20));
	EXPECT_EQ(EIO, errno);
	/* Writes elsewhere go on. */
	EXPECT_EQ(0, fill(DISK_A, 0, 1 << 20, 133));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
	close(ifd);
	EXPECT_EQ(0, tracked(self->fd, &d));
	free(buf);
}

/*
 * The storage of a taken snapshot goes: copies fail, the image is
 * corrupted (EIO), and writes to the original still succeed.
 */
TEST_F_TIMEOUT(rm, storage_removed_under_taken_snapshot, 120)
{
	struct blk_snap_uuid id;
	struct blk_snap_dev s;
	char img[160], dev[64];
	unsigned char *buf;
	int ifd, err;

	ASSERT_EQ(0, disk_add(variant, 2, dev, sizeof(dev)));
	ASSERT_EQ(0, dev_id(dev, &s));
	ASSERT_EQ(0, fill(DISK_A, 0, 8 << 20, 141));
	ASSERT_EQ(0, snapshot_create(self->fd, &self->a, 1, &id));
	ASSERT_EQ(0, append_storage(self->fd, &id, dev, 0, 32 << 11));
	ASSERT_EQ(0, take(self->fd, &id));
	ASSERT_EQ(0, fill(DISK_A, 0, 1 << 20, 142));
	ASSERT_EQ(0, image_path(self->fd, &id, &self->a, img, sizeof(img)));
	ASSERT_EQ(0, posix_memalign((void **)&buf, 4096, 1 << 20));
	ifd = open(img, O_RDONLY | O_DIRECT);
	ASSERT_LE(0, ifd);
	ASSERT_EQ(1 << 20, pread(ifd, buf, 1 << 20, 0));

	ASSERT_EQ(0, disk_remove(variant, 2, dev));
	/* The next copy cannot be stored; the write itself succeeds. */
	EXPECT_EQ(0, fill(DISK_A, 4 << 20, 1 << 20, 143));
	err = corrupted_event(self->fd, &id, &self->a, self->ev, 5000);
	EXPECT_LT(0, err);
	errno = 0;
	EXPECT_EQ(-1, pread(ifd, buf, 1 << 20, 0));
	EXPECT_EQ(EIO, errno);
	close(ifd);
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
	EXPECT_EQ(0, tracker_remove(self->fd, &self->a));
	free(buf);
}

TEST_HARNESS_MAIN
