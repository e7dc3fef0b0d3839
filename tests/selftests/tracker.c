// SPDX-License-Identifier: GPL-2.0
/*
 * Trackers and snapshots before TAKE: SNAPSHOT_CREATE, DESTROY, COLLECT,
 * TRACKER_COLLECT, REMOVE, READ_CBT_MAP and MARK_DIRTY_BLOCKS with good and
 * bad input, WAIT_EVENT's first event, timeout and signal, disk and
 * partition exclusion, zoned devices refused, removal of a tracked device,
 * and that a tracked device still reads back what is written to it.
 */
#include <linux/loop.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/wait.h>

#include "blksnap_util.h"
#include "blksnap_data.h"
#include "kselftest_harness.h"

FIXTURE(trk) {
	int fd;
	struct blk_snap_dev a, b, b1, b2;
};

FIXTURE_SETUP(trk)
{
	self->fd = open(BLK_SNAP_CTL, O_RDWR);
	if (self->fd < 0)
		SKIP(return, BLK_SNAP_CTL " missing: module not loaded");
	if (dev_id(DISK_A, &self->a) || dev_id(DISK_B, &self->b) ||
	    dev_id(PART_B1, &self->b1) || dev_id(PART_B2, &self->b2))
		SKIP(return, "test disks missing");
	blksnap_reset(self->fd);
}

FIXTURE_TEARDOWN(trk)
{
	if (self->fd >= 0) {
		blksnap_reset(self->fd);
		close(self->fd);
	}
}

TEST_F_TIMEOUT(trk, create_rejects_bad_counts_and_pointers, 60)
{
	struct blk_snap_dev devs[2] = { self->a, self->a };
	struct blk_snap_snapshot_create c = { 0 };
	struct blk_snap_dev *many;

	c.count = 0;
	c.dev_id_array = devs;
	EXPECT_EQ(-EINVAL, xioctl(self->fd, IOCTL_BLK_SNAP_SNAPSHOT_CREATE, &c));
	c.count = 257;
	EXPECT_EQ(-EINVAL, xioctl(self->fd, IOCTL_BLK_SNAP_SNAPSHOT_CREATE, &c));
	c.count = 0xffffffff;
	EXPECT_EQ(-EINVAL, xioctl(self->fd, IOCTL_BLK_SNAP_SNAPSHOT_CREATE, &c));
	c.count = 1;
	c.dev_id_array = NULL;
	EXPECT_EQ(-EFAULT, xioctl(self->fd, IOCTL_BLK_SNAP_SNAPSHOT_CREATE, &c));
	c.dev_id_array = (void *)0x10;
	EXPECT_EQ(-EFAULT, xioctl(self->fd, IOCTL_BLK_SNAP_SNAPSHOT_CREATE, &c));
	/* The array ends in unmapped memory. */
	many = guarded_tail(sizeof(*many));
	ASSERT_NE(NULL, many);
	many[0] = self->a;
	c.dev_id_array = many;
	c.count = 2;
	EXPECT_EQ(-EFAULT, xioctl(self->fd, IOCTL_BLK_SNAP_SNAPSHOT_CREATE, &c));
	/* The same device twice. */
	c.dev_id_array = devs;
	c.count = 2;
	EXPECT_EQ(-EINVAL, xioctl(self->fd, IOCTL_BLK_SNAP_SNAPSHOT_CREATE, &c));
	EXPECT_EQ(-EFAULT, xioctl(self->fd, IOCTL_BLK_SNAP_SNAPSHOT_CREATE, NULL));
}

TEST_F_TIMEOUT(trk, create_rejects_unknown_devices, 60)
{
	struct blk_snap_dev none[] = { { 250, 250 }, { 0, 0 }, { 0xffffffff, 0xffffffff } };

	for (int i = 0; i < 3; i++)
		EXPECT_EQ(-ENODEV, snapshot_create(self->fd, &none[i], 1, NULL));
	/* Nothing half-done stays behind. */
	struct blk_snap_tracker_collect tc = { 0 };
	ASSERT_EQ(0, xioctl(self->fd, IOCTL_BLK_SNAP_TRACKER_COLLECT, &tc));
	EXPECT_EQ(0, tc.count);
}

TEST_F_TIMEOUT(trk, create_collect_destroy, 60)
{
	struct blk_snap_uuid id, id2, ids[4];
	struct blk_snap_snapshot_collect sc = { 0 };
	struct blk_snap_dev two[2] = { self->b1, self->b2 };

	ASSERT_EQ(0, snapshot_create(self->fd, &self->a, 1, &id));
	ASSERT_EQ(0, snapshot_create(self->fd, two, 2, &id2));
	EXPECT_NE(0, memcmp(&id, &id2, sizeof(id)));

	/* NULL array: the count only. */
	ASSERT_EQ(0, xioctl(self->fd, IOCTL_BLK_SNAP_SNAPSHOT_COLLECT, &sc));
	EXPECT_EQ(2, sc.count);
	/* Too small: ENODATA and the count needed. */
	sc.count = 1;
	sc.ids = ids;
	EXPECT_EQ(-ENODATA, xioctl(self->fd, IOCTL_BLK_SNAP_SNAPSHOT_COLLECT, &sc));
	EXPECT_EQ(2, sc.count);
	sc.count = 4;
	ASSERT_EQ(0, xioctl(self->fd, IOCTL_BLK_SNAP_SNAPSHOT_COLLECT, &sc));
	ASSERT_EQ(2, sc.count);
	EXPECT_TRUE((!memcmp(&ids[0], &id, 16) && !memcmp(&ids[1], &id2, 16)) ||
		    (!memcmp(&ids[1], &id, 16) && !memcmp(&ids[0], &id2, 16)));

	/* Both stay findable; each destroys once. */
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id2));
	EXPECT_EQ(-ESRCH, snapshot_destroy(self->fd, &id2));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
	sc.count = 4;
	ASSERT_EQ(0, xioctl(self->fd, IOCTL_BLK_SNAP_SNAPSHOT_COLLECT, &sc));
	EXPECT_EQ(0, sc.count);
}

TEST_F_TIMEOUT(trk, trackers_outlive_snapshots, 60)
{
	struct blk_snap_uuid id;
	struct blk_snap_cbt_info info[4];
	struct blk_snap_tracker_collect tc = { 0 };
	struct blk_snap_dev unknown = { 250, 1 };

	ASSERT_EQ(0, snapshot_create(self->fd, &self->a, 1, &id));
	ASSERT_EQ(0, xioctl(self->fd, IOCTL_BLK_SNAP_TRACKER_COLLECT, &tc));
	ASSERT_EQ(1, tc.count);
	tc.count = 0;
	tc.cbt_info_array = info;
	EXPECT_EQ(-ENODATA, xioctl(self->fd, IOCTL_BLK_SNAP_TRACKER_COLLECT, &tc));
	EXPECT_EQ(1, tc.count);
	tc.count = 4;
	memset(info, 0xa5, sizeof(info));
	ASSERT_EQ(0, xioctl(self->fd, IOCTL_BLK_SNAP_TRACKER_COLLECT, &tc));
	ASSERT_EQ(1, tc.count);
	EXPECT_EQ(self->a.mj, info[0].dev_id.mj);
	EXPECT_EQ(self->a.mn, info[0].dev_id.mn);
	EXPECT_EQ(65536, info[0].blk_size);
	EXPECT_EQ(256ULL << 20, info[0].device_capacity);
	EXPECT_EQ(4096, info[0].blk_count);
	EXPECT_EQ(0, info[0].snap_number);
	/* Padding is zeroed, not leaked. */
	EXPECT_EQ(0, *(uint32_t *)((char *)&info[0] + 12));
	EXPECT_EQ(0, ((uint8_t *)&info[0])[45] | ((uint8_t *)&info[0])[46] | ((uint8_t *)&info[0])[47]);

	/* In a snapshot the tracker stays. */
	EXPECT_EQ(-EBUSY, tracker_remove(self->fd, &self->a));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
	tc.count = 4;
	ASSERT_EQ(0, xioctl(self->fd, IOCTL_BLK_SNAP_TRACKER_COLLECT, &tc));
	EXPECT_EQ(1, tc.count);
	EXPECT_EQ(0, tracker_remove(self->fd, &self->a));
	EXPECT_EQ(-ENODEV, tracker_remove(self->fd, &self->a));
	EXPECT_EQ(-ENODEV, tracker_remove(self->fd, &unknown));
	/* A second snapshot of the same device after the first is gone. */
	ASSERT_EQ(0, snapshot_create(self->fd, &self->a, 1, &id));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
}

TEST_F_TIMEOUT(trk, one_snapshot_per_device, 60)
{
	struct blk_snap_uuid id;
	struct blk_snap_dev pair[2] = { self->b2, self->a };

	ASSERT_EQ(0, snapshot_create(self->fd, &self->a, 1, &id));
	EXPECT_EQ(-EBUSY, snapshot_create(self->fd, &self->a, 1, NULL));
	EXPECT_EQ(-EBUSY, snapshot_create(self->fd, pair, 2, NULL));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
}

TEST_F_TIMEOUT(trk, disk_and_partition_never_together, 60)
{
	struct blk_snap_uuid id;
	struct blk_snap_dev both[2] = { self->b, self->b1 };

	EXPECT_EQ(-EBUSY, snapshot_create(self->fd, both, 2, NULL));
	ASSERT_EQ(0, snapshot_create(self->fd, &self->b1, 1, &id));
	EXPECT_EQ(-EBUSY, snapshot_create(self->fd, &self->b, 1, NULL));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
	/* The partition's tracker outlives the snapshot and still excludes. */
	EXPECT_EQ(-EBUSY, snapshot_create(self->fd, &self->b, 1, NULL));
	EXPECT_EQ(0, tracker_remove(self->fd, &self->b1));
	ASSERT_EQ(0, snapshot_create(self->fd, &self->b, 1, &id));
	EXPECT_EQ(-EBUSY, snapshot_create(self->fd, &self->b2, 1, NULL));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
}

/*
 * A zoned device is refused: copy-on-write would have to follow its write
 * pointers.  null_blk (a module in the test VM) makes one.
 */
TEST_F_TIMEOUT(trk, zoned_devices_are_refused, 60)
{
	struct blk_snap_dev z;
	struct blk_snap_cbt_info info[4];
	struct blk_snap_tracker_collect tc = { .count = 4, .cbt_info_array = info };

	ASSERT_EQ(0, system("insmod /lib/modules/null_blk.ko nr_devices=1 zoned=1 gb=1 zone_size=64"));
	ASSERT_EQ(0, dev_id("/dev/nullb0", &z));
	EXPECT_EQ(-EOPNOTSUPP, snapshot_create(self->fd, &z, 1, NULL));
	/* Nothing was left tracking it. */
	ASSERT_EQ(0, xioctl(self->fd, IOCTL_BLK_SNAP_TRACKER_COLLECT, &tc));
	EXPECT_EQ(0, tc.count);
	EXPECT_EQ(0, system("rmmod null_blk"));
}

/*
 * Attaches a new 16 MiB file to loop device `nr` (a free one if negative);
 * returns its number.
 */
static int loop_new(const char *file, int nr)
{
	struct loop_config cfg = { 0 };
	char dev[32];
	int fd, lfd;

	if (nr < 0) {
		int ctl = open("/dev/loop-control", O_RDWR);

		nr = ctl < 0 ? -1 : ioctl(ctl, LOOP_CTL_GET_FREE);
		if (ctl >= 0)
			close(ctl);
	}
	if (nr < 0)
		return -1;
	fd = open(file, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || ftruncate(fd, 16 << 20))
		return -1;
	snprintf(dev, sizeof(dev), "/dev/loop%d", nr);
	lfd = open(dev, O_RDWR);
	cfg.fd = fd;
	if (lfd < 0 || ioctl(lfd, LOOP_CONFIGURE, &cfg))
		nr = -1;
	if (lfd >= 0)
		close(lfd);
	close(fd);
	return nr;
}

/* Detaches the file of loop device `dev` (losetup -d); 0 or -errno. */
static int loop_clear(const char *dev)
{
	int lfd = open(dev, O_RDWR), ret;

	if (lfd < 0)
		return -errno;
	ret = ioctl(lfd, LOOP_CLR_FD, 0) ? -errno : 0;
	close(lfd);
	return ret;
}

/*
 * A tracker does not pin its device: between backups (tracker left, no
 * snapshot) an administrator can remove the device, which ends its tracking;
 * a new device with the same number starts afresh.
 */
TEST_F_TIMEOUT(trk, removing_a_tracked_device_ends_its_tracking, 60)
{
	struct blk_snap_uuid id;
	struct blk_snap_dev ld;
	char dev[32];
	int nr, ctl;

	nr = loop_new("/tmp/trk-loop.img", -1);
	ASSERT_LE(0, nr);
	snprintf(dev, sizeof(dev), "/dev/loop%d", nr);
	ASSERT_EQ(0, dev_id(dev, &ld));
	ASSERT_EQ(0, snapshot_create(self->fd, &ld, 1, &id));
	ASSERT_EQ(0, snapshot_destroy(self->fd, &id));
	ASSERT_EQ(1, tracked(self->fd, &ld));

	/* losetup -d, then remove the device, as a tool tidying up would. */
	EXPECT_EQ(0, loop_clear(dev));
	ctl = open("/dev/loop-control", O_RDWR);
	ASSERT_LE(0, ctl);
	EXPECT_EQ(nr, ioctl(ctl, LOOP_CTL_REMOVE, nr)) {
		TH_LOG("removing loop%d: %s (does the tracker hold it open?)", nr, strerror(errno));
	}
	EXPECT_EQ(0, tracked(self->fd, &ld));

	/* The same number again: a device of its own, tracked afresh. */
	ASSERT_EQ(nr, ioctl(ctl, LOOP_CTL_ADD, nr));
	close(ctl);
	ASSERT_EQ(nr, loop_new("/tmp/trk-loop.img", nr));
	ASSERT_EQ(0, snapshot_create(self->fd, &ld, 1, &id));
	EXPECT_EQ(1, tracked(self->fd, &ld));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
	EXPECT_EQ(0, tracker_remove(self->fd, &ld));
	EXPECT_EQ(0, loop_clear(dev));
	unlink("/tmp/trk-loop.img");
}

TEST_F_TIMEOUT(trk, first_event_asks_for_storage, 60)
{
	struct blk_snap_uuid id;
	struct blk_snap_snapshot_event *ev = calloc(1, sizeof(*ev));
	int64_t before = now_ns();

	ASSERT_NE(NULL, ev);
	ASSERT_EQ(0, snapshot_create(self->fd, &self->a, 1, &id));
	ev->id = id;
	ev->timeout_ms = 1000;
	ASSERT_EQ(0, xioctl(self->fd, IOCTL_BLK_SNAP_SNAPSHOT_WAIT_EVENT, ev));
	EXPECT_EQ(blk_snap_event_code_low_free_space, ev->code);
	EXPECT_EQ(2097152, ((struct blk_snap_event_low_free_space *)ev->data)->requested_nr_sect);
	EXPECT_LE(before, ev->time_label);
	EXPECT_GE(now_ns(), ev->time_label);
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
	free(ev);
}

TEST_F_TIMEOUT(trk, wait_event_timeout_is_milliseconds, 60)
{
	struct blk_snap_uuid id;
	struct blk_snap_snapshot_event *ev = calloc(1, sizeof(*ev));
	int64_t t0, dt;

	ASSERT_NE(NULL, ev);
	ASSERT_EQ(0, snapshot_create(self->fd, &self->a, 1, &id));
	ev->id = id;
	ev->timeout_ms = 0;
	ASSERT_EQ(0, xioctl(self->fd, IOCTL_BLK_SNAP_SNAPSHOT_WAIT_EVENT, ev));
	ev->timeout_ms = 300;
	t0 = now_ns();
	EXPECT_EQ(-ENOENT, xioctl(self->fd, IOCTL_BLK_SNAP_SNAPSHOT_WAIT_EVENT, ev));
	dt = (now_ns() - t0) / 1000000;
	EXPECT_GE(dt, 290);
	EXPECT_LT(dt, 3000);
	ev->timeout_ms = 0;
	EXPECT_EQ(-ENOENT, xioctl(self->fd, IOCTL_BLK_SNAP_SNAPSHOT_WAIT_EVENT, ev));
	memset(&ev->id, 0x5a, sizeof(ev->id));
	EXPECT_EQ(-ESRCH, xioctl(self->fd, IOCTL_BLK_SNAP_SNAPSHOT_WAIT_EVENT, ev));
	EXPECT_EQ(-EFAULT, xioctl(self->fd, IOCTL_BLK_SNAP_SNAPSHOT_WAIT_EVENT, NULL));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
	free(ev);
}

static void on_alarm(int sig)
{
	(void)sig;
}

TEST_F_TIMEOUT(trk, wait_event_signal_is_eintr, 60)
{
	struct blk_snap_uuid id;
	struct blk_snap_snapshot_event *ev = calloc(1, sizeof(*ev));
	struct sigaction sa = { .sa_handler = on_alarm };	/* no SA_RESTART */
	int64_t t0, dt;

	ASSERT_NE(NULL, ev);
	ASSERT_EQ(0, sigaction(SIGALRM, &sa, NULL));
	ASSERT_EQ(0, snapshot_create(self->fd, &self->a, 1, &id));
	ev->id = id;
	ev->timeout_ms = 0;
	ASSERT_EQ(0, xioctl(self->fd, IOCTL_BLK_SNAP_SNAPSHOT_WAIT_EVENT, ev));
	ev->timeout_ms = 20000;
	alarm(1);
	t0 = now_ns();
	EXPECT_EQ(-EINTR, xioctl(self->fd, IOCTL_BLK_SNAP_SNAPSHOT_WAIT_EVENT, ev));
	dt = (now_ns() - t0) / 1000000;
	EXPECT_LT(dt, 10000);
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
	free(ev);
}

TEST_F_TIMEOUT(trk, read_cbt_map_needs_a_taken_snapshot, 60)
{
	struct blk_snap_uuid id;
	uint8_t buf[64];
	struct blk_snap_tracker_read_cbt_bitmap r = {
		.dev_id = self->a, .offset = 0, .length = sizeof(buf), .buff = buf,
	};

	EXPECT_EQ(-ENODEV, xioctl(self->fd, IOCTL_BLK_SNAP_TRACKER_READ_CBT_MAP, &r));
	ASSERT_EQ(0, snapshot_create(self->fd, &self->a, 1, &id));
	EXPECT_EQ(-EPERM, xioctl(self->fd, IOCTL_BLK_SNAP_TRACKER_READ_CBT_MAP, &r));
	EXPECT_EQ(-EFAULT, xioctl(self->fd, IOCTL_BLK_SNAP_TRACKER_READ_CBT_MAP, NULL));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
	EXPECT_EQ(-EPERM, xioctl(self->fd, IOCTL_BLK_SNAP_TRACKER_READ_CBT_MAP, &r));
}

TEST_F_TIMEOUT(trk, mark_dirty_blocks_checks_input, 60)
{
	struct blk_snap_uuid id;
	struct blk_snap_block_range ranges[2] = { { 0, 8 }, { 1 << 20, 0 } };
	struct blk_snap_tracker_mark_dirty_blocks m = {
		.dev_id = self->a, .count = 1, .dirty_blocks_array = ranges,
	};

	EXPECT_EQ(-ENODEV, xioctl(self->fd, IOCTL_BLK_SNAP_TRACKER_MARK_DIRTY_BLOCKS, &m));
	ASSERT_EQ(0, snapshot_create(self->fd, &self->a, 1, &id));
	EXPECT_EQ(0, xioctl(self->fd, IOCTL_BLK_SNAP_TRACKER_MARK_DIRTY_BLOCKS, &m));
	m.count = 2;	/* the second range is empty */
	EXPECT_EQ(-EINVAL, xioctl(self->fd, IOCTL_BLK_SNAP_TRACKER_MARK_DIRTY_BLOCKS, &m));
	m.count = 0;
	EXPECT_EQ(-EINVAL, xioctl(self->fd, IOCTL_BLK_SNAP_TRACKER_MARK_DIRTY_BLOCKS, &m));
	m.count = 65537;
	EXPECT_EQ(-EINVAL, xioctl(self->fd, IOCTL_BLK_SNAP_TRACKER_MARK_DIRTY_BLOCKS, &m));
	m.count = 65536;	/* allowed, but the array is short */
	m.dirty_blocks_array = guarded_tail(2 * sizeof(ranges[0]));
	ASSERT_NE(NULL, m.dirty_blocks_array);
	memcpy(m.dirty_blocks_array, ranges, sizeof(ranges[0]));
	m.dirty_blocks_array[1] = ranges[0];
	EXPECT_EQ(-EFAULT, xioctl(self->fd, IOCTL_BLK_SNAP_TRACKER_MARK_DIRTY_BLOCKS, &m));
	m.count = 1;
	m.dirty_blocks_array = NULL;
	EXPECT_EQ(-EFAULT, xioctl(self->fd, IOCTL_BLK_SNAP_TRACKER_MARK_DIRTY_BLOCKS, &m));
	/* Ranges past the end are clipped, not an error. */
	ranges[0].sector_offset = ~0ULL - 4;
	ranges[0].sector_count = ~0ULL;
	m.dirty_blocks_array = ranges;
	EXPECT_EQ(0, xioctl(self->fd, IOCTL_BLK_SNAP_TRACKER_MARK_DIRTY_BLOCKS, &m));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
}

TEST_F_TIMEOUT(trk, tracked_device_reads_back_writes, 60)
{
	struct blk_snap_uuid id;
	const size_t len = 1 << 20;
	unsigned char *w, *r;
	int dfd;

	ASSERT_EQ(0, snapshot_create(self->fd, &self->a, 1, &id));
	ASSERT_EQ(0, posix_memalign((void **)&w, 4096, len));
	ASSERT_EQ(0, posix_memalign((void **)&r, 4096, len));
	for (size_t i = 0; i < len; i++)
		w[i] = (unsigned char)(i * 7 + 3);
	dfd = open(DISK_A, O_RDWR | O_DIRECT);
	ASSERT_LE(0, dfd);
	ASSERT_EQ((ssize_t)len, pwrite(dfd, w, len, 3 << 20));
	ASSERT_EQ(0, fsync(dfd));
	ASSERT_EQ((ssize_t)len, pread(dfd, r, len, 3 << 20));
	EXPECT_EQ(0, memcmp(w, r, len));
	close(dfd);
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
	free(w);
	free(r);
}

TEST_F_TIMEOUT(trk, create_freezes_a_mounted_filesystem, 60)
{
	struct blk_snap_uuid id;
	FILE *f;

	mkdir("/mnt/b2", 0755);
	if (system("mke2fs -q /dev/vdb2 >/dev/null 2>&1") != 0)
		SKIP(return, "mke2fs failed");
	ASSERT_EQ(0, mount(PART_B2, "/mnt/b2", "ext2", 0, NULL));
	f = fopen("/mnt/b2/file", "w");
	ASSERT_NE(NULL, f);
	fputs("before\n", f);
	fclose(f);
	ASSERT_EQ(0, snapshot_create(self->fd, &self->b2, 1, &id));
	/* Thawed again: writes go on. */
	f = fopen("/mnt/b2/file2", "w");
	ASSERT_NE(NULL, f);
	fputs("after\n", f);
	EXPECT_EQ(0, fclose(f));
	sync();
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
	EXPECT_EQ(0, umount("/mnt/b2"));
}

TEST_F_TIMEOUT(trk, tracked_devices_stay_open_to_exclusive_users, 60)
{
	struct blk_snap_uuid id;
	int fd;

	ASSERT_EQ(0, snapshot_create(self->fd, &self->a, 1, &id));
	/* Tools may claim the original exclusively: the module holds no claim. */
	fd = open(DISK_A, O_RDONLY | O_EXCL);
	EXPECT_LE(0, fd);
	if (fd >= 0)
		close(fd);
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
}

/* Leaves a tracker and a snapshot behind for the unload check. */
TEST_F_TIMEOUT(trk, zz_leave_state_for_unload, 60)
{
	struct blk_snap_uuid id;

	ASSERT_EQ(0, snapshot_create(self->fd, &self->a, 1, &id));
	close(self->fd);
	self->fd = -1;
}

TEST_HARNESS_MAIN
