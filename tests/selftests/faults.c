// SPDX-License-Identifier: GPL-2.0
/*
 * Failing disks and allocations, through the kernel's own fault injection:
 * fail_make_request with the per-disk make-it-fail switch, and failslab
 * limited to this test's task.
 *
 * Expected: the affected image reports corrupted (event, EIO); other
 * images and every original keep their data; writers on the original are
 * never failed by the snapshot; no splat; everything can be destroyed
 * (and the module unloaded, by kmemleak.sh).
 *
 * Disks: originals /dev/vda (storage on /dev/vdb2) and /dev/vdf (4Kn,
 * storage on /dev/vdg); failures are injected on /dev/vdb, and on reads of
 * the original through a dm-flakey device over /dev/vda.
 */
#include <stdlib.h>

#include "blksnap_util.h"
#include "blksnap_data.h"
#include "blksnap_dm.h"
#include "kselftest_harness.h"

#define FMR "/sys/kernel/debug/fail_make_request"
#define FSLAB "/sys/kernel/debug/failslab"

/* Every bio to /dev/vdb (and its partitions) fails, or none does. */
static int fail_vdb(int on)
{
	if (on && (put(FMR "/probability", "100") || put(FMR "/interval", "1") ||
		   put(FMR "/times", "-1") || put(FMR "/verbose", "0")))
		return -1;
	return put("/sys/block/vdb/make-it-fail", on ? "1" : "0");
}

static int read_fails_eio(const char *path, uint64_t off)
{
	unsigned char *buf;
	int fd = open(path, O_RDONLY | O_DIRECT), ret;

	if (fd < 0 || posix_memalign((void **)&buf, 4096, 65536))
		return 0;
	errno = 0;
	ret = pread(fd, buf, 65536, off) == -1 && errno == EIO;
	close(fd);
	free(buf);
	return ret;
}

FIXTURE(flt) {
	int fd;
	struct blk_snap_dev a, f4k;
	struct blk_snap_snapshot_event *ev;
};

FIXTURE_SETUP(flt)
{
	self->fd = open(BLK_SNAP_CTL, O_RDWR);
	if (self->fd < 0)
		SKIP(return, BLK_SNAP_CTL " missing: module not loaded");
	if (dev_id(DISK_A, &self->a) || dev_id("/dev/vdf", &self->f4k) || access(FMR, F_OK) ||
	    access(FSLAB, F_OK))
		SKIP(return, "test disks or fault injection missing");
	self->ev = calloc(1, sizeof(*self->ev));
	ASSERT_NE(NULL, self->ev);
	blksnap_reset(self->fd);
	set_param("diff_storage_wait_ms", 5000);
}

FIXTURE_TEARDOWN(flt)
{
	fail_vdb(0);
	put(FSLAB "/probability", "0");
	put("/proc/self/make-it-fail", "0");
	if (self->fd >= 0) {
		blksnap_reset(self->fd);
		close(self->fd);
	}
	set_param("chunk_maximum_in_cache", 32);
	free(self->ev);
}

/*
 * Storage writes fail during copy-on-write: that image is corrupted, the
 * writes to its original succeed with their data, and a second snapshot
 * on other disks keeps its image whole.
 */
TEST_F_TIMEOUT(flt, storage_write_errors_during_copy_on_write, 180)
{
	struct blk_snap_uuid ida, idf;
	uint64_t *before, *after;
	size_t nb = 0, na = 0;
	char img_a[160], img_f[160];

	ASSERT_EQ(0, fill(DISK_A, 0, 8 << 20, 151));
	ASSERT_EQ(0, fill("/dev/vdf", 0, 8 << 20, 152));
	before = checksums("/dev/vdf", &nb);
	ASSERT_NE(NULL, before);
	ASSERT_EQ(0, snapshot_create(self->fd, &self->a, 1, &ida));
	ASSERT_EQ(0, append_storage(self->fd, &ida, PART_B2, 0, 32 << 11));
	ASSERT_EQ(0, take(self->fd, &ida));
	ASSERT_EQ(0, snapshot_create(self->fd, &self->f4k, 1, &idf));
	ASSERT_EQ(0, append_storage(self->fd, &idf, "/dev/vdg", 0, 32 << 11));
	ASSERT_EQ(0, take(self->fd, &idf));
	ASSERT_EQ(0, image_path(self->fd, &ida, &self->a, img_a, sizeof(img_a)));
	ASSERT_EQ(0, image_path(self->fd, &idf, &self->f4k, img_f, sizeof(img_f)));

	ASSERT_EQ(0, fail_vdb(1));
	/* Never failed by the snapshot, and the data is there. */
	EXPECT_EQ(0, fill(DISK_A, 0, 4 << 20, 153));
	ASSERT_EQ(0, fill("/dev/vdf", 0, 4 << 20, 154));
	ASSERT_EQ(0, fail_vdb(0));
	EXPECT_EQ(EIO, corrupted_event(self->fd, &ida, &self->a, self->ev, 5000));
	EXPECT_TRUE(read_fails_eio(img_a, 8 << 20));
	after = checksums(img_f, &na);
	ASSERT_NE(NULL, after);
	EXPECT_EQ(0, differing(before, nb, after, na));
	EXPECT_EQ(-1, corrupted_event(self->fd, &idf, &self->f4k, self->ev, 0));
	/* The writes to the original all landed. */
	EXPECT_EQ(0, same_as_pattern(DISK_A, 0, 4 << 20, 153));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &ida));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &idf));
	free(before), free(after);
}

/*
 * Reads of the original fail while a chunk is copied (dm-flakey over vda,
 * always "down" with error_reads: reads fail, writes go through): that
 * image is corrupted, every write to the original succeeds with its data,
 * and a second snapshot on another disk keeps its image whole.
 */
TEST_F_TIMEOUT(flt, original_read_errors_during_copy, 120)
{
	struct blk_snap_uuid id, idf;
	struct blk_snap_dev d;
	uint64_t *before, *after, sectors;
	size_t nb = 0, na = 0;
	char dm[64], table[160], img[160], img_f[160];
	int fd;

	fd = open(DISK_A, O_RDONLY);
	ASSERT_LE(0, fd);
	sectors = dev_size(fd) / 512;
	close(fd);
	ASSERT_EQ(0, fill(DISK_A, 0, 8 << 20, 171));
	ASSERT_EQ(0, fill("/dev/vdf", 0, 8 << 20, 172));
	before = checksums("/dev/vdf", &nb);
	ASSERT_NE(NULL, before);
	dm_remove("blksnap_flaky");
	snprintf(table, sizeof(table), "%s 0 0 3600 1 error_reads", DISK_A);
	ASSERT_EQ(0, dm_create("blksnap_flaky", "flakey", table, sectors, dm, sizeof(dm)));
	ASSERT_EQ(0, dev_id(dm, &d));
	ASSERT_EQ(0, snapshot_create(self->fd, &d, 1, &id));
	ASSERT_EQ(0, append_storage(self->fd, &id, PART_B2, 0, 32 << 11));
	ASSERT_EQ(0, take(self->fd, &id));
	ASSERT_EQ(0, snapshot_create(self->fd, &self->f4k, 1, &idf));
	ASSERT_EQ(0, append_storage(self->fd, &idf, "/dev/vdg", 0, 32 << 11));
	ASSERT_EQ(0, take(self->fd, &idf));
	ASSERT_EQ(0, image_path(self->fd, &id, &d, img, sizeof(img)));
	ASSERT_EQ(0, image_path(self->fd, &idf, &self->f4k, img_f, sizeof(img_f)));

	/* The copies cannot read the original; the writes still succeed. */
	EXPECT_EQ(0, fill(dm, 0, 4 << 20, 173));
	ASSERT_EQ(0, fill("/dev/vdf", 0, 4 << 20, 174));
	EXPECT_EQ(EIO, corrupted_event(self->fd, &id, &d, self->ev, 5000));
	EXPECT_TRUE(read_fails_eio(img, 0));
	after = checksums(img_f, &na);
	ASSERT_NE(NULL, after);
	EXPECT_EQ(0, differing(before, nb, after, na));
	EXPECT_EQ(-1, corrupted_event(self->fd, &idf, &self->f4k, self->ev, 0));
	/* The writes all landed (read back below the failing device). */
	EXPECT_EQ(0, same_as_pattern(DISK_A, 0, 4 << 20, 173));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &idf));
	EXPECT_EQ(0, tracker_remove(self->fd, &d));
	EXPECT_EQ(0, dm_remove("blksnap_flaky"));
	free(before), free(after);
}

/*
 * Storage reads fail under image reads: EIO, and the image is corrupted.
 * With no cache of copied chunks, so that the reads go to storage.
 */
TEST_F_TIMEOUT(flt, storage_read_errors_under_image_reads, 120)
{
	struct blk_snap_uuid id;
	char img[160];

	set_param("chunk_maximum_in_cache", 0);
	ASSERT_EQ(0, fill(DISK_A, 0, 8 << 20, 161));
	ASSERT_EQ(0, snapshot_create(self->fd, &self->a, 1, &id));
	ASSERT_EQ(0, append_storage(self->fd, &id, PART_B2, 0, 32 << 11));
	ASSERT_EQ(0, take(self->fd, &id));
	ASSERT_EQ(0, fill(DISK_A, 0, 2 << 20, 162));	/* chunks now in storage */
	ASSERT_EQ(0, image_path(self->fd, &id, &self->a, img, sizeof(img)));
	ASSERT_EQ(0, fail_vdb(1));
	EXPECT_TRUE(read_fails_eio(img, 0));
	ASSERT_EQ(0, fail_vdb(0));
	EXPECT_EQ(EIO, corrupted_event(self->fd, &id, &self->a, self->ev, 5000));
	EXPECT_TRUE(read_fails_eio(img, 4 << 20));
	EXPECT_EQ(0, fill(DISK_A, 0, 1 << 20, 163));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
}

/*
 * Memory reclaim takes the cache of copied chunks back (the image's
 * shrinker, run here by drop_caches): while cached, the chunks read back
 * with storage failing; after reclaim they read from storage, with the
 * data of TAKE, and fail once storage does.
 */
TEST_F_TIMEOUT(flt, reclaim_takes_cached_chunks_back, 120)
{
	struct blk_snap_uuid id;
	char img[160];

	set_param("chunk_maximum_in_cache", 32);
	ASSERT_EQ(0, fill(DISK_A, 0, 8 << 20, 165));
	ASSERT_EQ(0, snapshot_create(self->fd, &self->a, 1, &id));
	ASSERT_EQ(0, append_storage(self->fd, &id, PART_B2, 0, 32 << 11));
	ASSERT_EQ(0, take(self->fd, &id));
	ASSERT_EQ(0, image_path(self->fd, &id, &self->a, img, sizeof(img)));
	/* 2 MiB of chunks copied: in storage, and cached. */
	ASSERT_EQ(0, fill(DISK_A, 0, 2 << 20, 166));
	ASSERT_EQ(0, fail_vdb(1));
	EXPECT_EQ(0, same_as_pattern(img, 0, 2 << 20, 165));
	ASSERT_EQ(0, fail_vdb(0));
	/* Reclaim empties the cache: the same reads now go to storage. */
	ASSERT_EQ(0, put("/proc/sys/vm/drop_caches", "2"));
	EXPECT_EQ(0, same_as_pattern(img, 0, 2 << 20, 165));
	ASSERT_EQ(0, fail_vdb(1));
	EXPECT_TRUE(read_fails_eio(img, 0));
	ASSERT_EQ(0, fail_vdb(0));
	EXPECT_EQ(EIO, corrupted_event(self->fd, &id, &self->a, self->ev, 5000));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
}

/*
 * Storage fails under image writes: to a chunk already in storage, and to
 * one that must be copied there first. Both writes fail with EIO, the
 * image is corrupted, and the original keeps its data.
 */
TEST_F_TIMEOUT(flt, storage_errors_under_image_writes, 120)
{
	struct blk_snap_uuid id;
	unsigned char *buf;
	char img[160];
	int ifd;

	ASSERT_EQ(0, fill(DISK_A, 0, 8 << 20, 181));
	ASSERT_EQ(0, snapshot_create(self->fd, &self->a, 1, &id));
	ASSERT_EQ(0, append_storage(self->fd, &id, PART_B2, 0, 32 << 11));
	ASSERT_EQ(0, take(self->fd, &id));
	ASSERT_EQ(0, fill(DISK_A, 0, 1 << 20, 182));	/* chunks now in storage */
	ASSERT_EQ(0, image_path(self->fd, &id, &self->a, img, sizeof(img)));
	ASSERT_EQ(0, posix_memalign((void **)&buf, 4096, 65536));
	memset(buf, 0x5a, 65536);
	ifd = open(img, O_RDWR | O_DIRECT);
	ASSERT_LE(0, ifd);
	ASSERT_EQ(0, fail_vdb(1));
	errno = 0;
	EXPECT_EQ(-1, pwrite(ifd, buf, 65536, 0));		/* stored chunk */
	EXPECT_EQ(EIO, errno);
	errno = 0;
	EXPECT_EQ(-1, pwrite(ifd, buf, 65536, 6 << 20));	/* to be copied */
	EXPECT_EQ(EIO, errno);
	ASSERT_EQ(0, fail_vdb(0));
	EXPECT_EQ(EIO, corrupted_event(self->fd, &id, &self->a, self->ev, 5000));
	EXPECT_TRUE(read_fails_eio(img, 4 << 20));
	close(ifd);
	/* The original: what was written after TAKE, and the rest as before. */
	EXPECT_EQ(0, same_as_pattern(DISK_A, 0, 1 << 20, 182));
	EXPECT_EQ(0, same_as_pattern(DISK_A, 1 << 20, 7 << 20, 181));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
	free(buf);
}

/*
 * Allocations fail (failslab, this task only) all through the ioctl paths:
 * every call answers 0 or an errno of the ABI, and once the failures stop,
 * the module works from a clean slate.
 */
TEST_F_TIMEOUT(flt, allocation_failures_in_ioctls, 300)
{
	struct blk_snap_uuid id;
	struct blk_snap_snapshot_take t;
	struct blk_snap_block_range r = { 0, 16 << 11 };
	struct blk_snap_snapshot_append_storage a = { .count = 1, .ranges = &r };
	long ok = 0, enomem = 0, other = 0;
	uint64_t *before, *after;
	size_t nb = 0, na = 0;
	char img[160];

	/* Named before any allocation may fail (a stat() could fail too). */
	ASSERT_EQ(0, dev_id(PART_B2, &a.dev_id));
	/*
	 * Every 211th allocation of this task fails: the same failures on
	 * every run, walking through the allocation sites cycle by cycle.
	 */
	ASSERT_EQ(0, put(FSLAB "/probability", "100"));
	ASSERT_EQ(0, put(FSLAB "/interval", "211"));
	ASSERT_EQ(0, put(FSLAB "/times", "-1"));
	ASSERT_EQ(0, put(FSLAB "/verbose", "0"));
	ASSERT_EQ(0, put(FSLAB "/task-filter", "Y"));
	ASSERT_EQ(0, put(FSLAB "/ignore-gfp-wait", "N"));
	ASSERT_EQ(0, put("/proc/self/make-it-fail", "1"));
	for (int i = 0; i < 200; i++) {
		const char *step = "create";
		int ret = snapshot_create(self->fd, &self->a, 1, &id);

		if (!ret) {
			step = "append";
			a.id = id;
			ret = xioctl(self->fd, IOCTL_BLK_SNAP_SNAPSHOT_APPEND_STORAGE, &a);
			if (!ret) {
				step = "take";
				t.id = id;
				ret = xioctl(self->fd, IOCTL_BLK_SNAP_SNAPSHOT_TAKE, &t);
			}
			/* DESTROY allocates nothing: it must always work. */
			EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
		}
		if (i % 4 == 0)
			tracker_remove(self->fd, &self->a);
		if (ret == 0)
			ok++;
		else if (ret == -ENOMEM)
			enomem++;
		else if (ret != -EBUSY) {
			other++;
			TH_LOG("cycle %d: %s gave errno %d", i, step, -ret);
		}
	}
	/* Turning failures off allocates too, and may fail: try again. */
	for (int i = 0; i < 1000 && put("/proc/self/make-it-fail", "0"); i++)
		;
	ASSERT_EQ(0, put(FSLAB "/probability", "0"));
	TH_LOG("%ld cycles whole, %ld ENOMEM, %ld other errors", ok, enomem, other);
	EXPECT_EQ(0, other);
	EXPECT_LT(0, enomem);

	/* From a clean slate, a snapshot holds its data. */
	blksnap_reset(self->fd);
	ASSERT_EQ(0, fill(DISK_A, 0, 4 << 20, 171));
	before = checksums(DISK_A, &nb);
	ASSERT_NE(NULL, before);
	ASSERT_EQ(0, snapshot_create(self->fd, &self->a, 1, &id));
	ASSERT_EQ(0, append_storage(self->fd, &id, PART_B2, 0, 16 << 11));
	ASSERT_EQ(0, take(self->fd, &id));
	ASSERT_EQ(0, fill(DISK_A, 0, 2 << 20, 172));
	ASSERT_EQ(0, image_path(self->fd, &id, &self->a, img, sizeof(img)));
	after = checksums(img, &na);
	ASSERT_NE(NULL, after);
	EXPECT_EQ(0, differing(before, nb, after, na));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
	free(before), free(after);
}

/* The snap_number TRACKER_COLLECT reports for `dev` (-1 if none). */
static int snap_number(int fd, const struct blk_snap_dev *dev)
{
	struct blk_snap_cbt_info info;

	return cbt_info(fd, dev, &info) == 1 ? info.snap_number : -1;
}

/*
 * TAKE is all or nothing: one allocation of TAKE fails (the i-th of this
 * task's, for i = 1, 2, ...), which walks the failure through TAKE's
 * allocation sites, those after the switch included (making the image).
 * A TAKE that fails leaves the change map's numbering as it was, raises
 * no corrupted event, and the next TAKE works and holds the data.
 */
TEST_F_TIMEOUT(flt, a_failed_take_leaves_nothing_behind, 300)
{
	struct blk_snap_snapshot_event ev;
	struct blk_snap_uuid id;
	char interval[16], img[160];
	int failed = 0;

	ASSERT_EQ(0, fill(DISK_A, 0, 4 << 20, 181));
	ASSERT_EQ(0, put(FSLAB "/probability", "100"));
	ASSERT_EQ(0, put(FSLAB "/verbose", "0"));
	ASSERT_EQ(0, put(FSLAB "/task-filter", "Y"));
	ASSERT_EQ(0, put(FSLAB "/ignore-gfp-wait", "N"));
	for (int i = 1; i <= 48; i++) {
		int before, ret;

		ASSERT_EQ(0, snapshot_create(self->fd, &self->a, 1, &id));
		ASSERT_EQ(0, append_storage(self->fd, &id, PART_B2, 0, 16 << 11));
		before = snap_number(self->fd, &self->a);
		ASSERT_LE(0, before);
		snprintf(interval, sizeof(interval), "%d", i);
		ASSERT_EQ(0, put(FSLAB "/interval", interval));
		ASSERT_EQ(0, put(FSLAB "/times", "1"));
		ASSERT_EQ(0, put("/proc/self/make-it-fail", "1"));
		ret = take(self->fd, &id);
		for (int k = 0; k < 1000 && put("/proc/self/make-it-fail", "0"); k++)
			;
		if (ret) {
			EXPECT_EQ(-ENOMEM, ret);
			failed++;
			EXPECT_EQ(before, snap_number(self->fd, &self->a));
			EXPECT_EQ(-1, corrupted_event(self->fd, &id, &self->a, &ev, 10));
			ASSERT_EQ(0, take(self->fd, &id));
		}
		EXPECT_EQ((before + 1) % 256, snap_number(self->fd, &self->a));
		ASSERT_EQ(0, image_path(self->fd, &id, &self->a, img, sizeof(img)));
		ASSERT_EQ(0, fill(DISK_A, 0, 1 << 20, 182 + i));
		EXPECT_EQ(0, same_as_pattern(img, 0, 4 << 20, 181));
		ASSERT_EQ(0, snapshot_destroy(self->fd, &id));
		ASSERT_EQ(0, fill(DISK_A, 0, 1 << 20, 181));
	}
	ASSERT_EQ(0, put(FSLAB "/probability", "0"));
	TH_LOG("%d of 48 TAKEs failed and left nothing behind", failed);
	EXPECT_LT(0, failed);
}

/*
 * CREATE is all or nothing: one allocation of CREATE fails (the i-th of
 * this thread's, through fail-nth), on two untracked devices (vdb1, vdf) and one tracked
 * already (vda). A CREATE that fails leaves the new devices untracked and
 * without a filter (vdb can be tracked afterwards: a filter left on its
 * partition would refuse it; one left on vdf would fail the last CREATE),
 * and the tracked one as it was. Then a snapshot of the three holds their
 * data.
 */
TEST_F_TIMEOUT(flt, a_failed_create_leaves_nothing_behind, 300)
{
	struct blk_snap_dev devs[3], disk_b;
	struct blk_snap_cbt_info was, now;
	struct blk_snap_uuid id;
	char nth[16], img[160];
	int failed = 0, ret, nfd;

	/* vda tracked (by a first snapshot), vdb1 and vdf new each round. */
	ASSERT_EQ(0, dev_id(PART_B1, &devs[0]));
	devs[1] = self->f4k;
	devs[2] = self->a;
	ASSERT_EQ(0, dev_id(DISK_B, &disk_b));
	ASSERT_EQ(0, snapshot_create(self->fd, &self->a, 1, &id));
	ASSERT_EQ(0, snapshot_destroy(self->fd, &id));
	ASSERT_EQ(1, cbt_info(self->fd, &self->a, &was));
	ASSERT_EQ(0, put(FSLAB "/verbose", "0"));
	ASSERT_EQ(0, put(FSLAB "/ignore-gfp-wait", "N"));
	for (int i = 1; i <= 64; i++) {
		/* This thread's i-th allocation from now fails (once). */
		snprintf(nth, sizeof(nth), "%d", i);
		nfd = open("/proc/thread-self/fail-nth", O_WRONLY);
		ASSERT_LE(0, nfd);
		ASSERT_EQ((ssize_t)strlen(nth), write(nfd, nth, strlen(nth)));
		ret = snapshot_create(self->fd, devs, 3, &id);
		ASSERT_EQ(1, write(nfd, "0", 1));
		close(nfd);
		if (!ret) {
			/* The failure hit elsewhere: back to two new devices. */
			ASSERT_EQ(0, snapshot_destroy(self->fd, &id));
			ASSERT_EQ(0, tracker_remove(self->fd, &devs[0]));
			ASSERT_EQ(0, tracker_remove(self->fd, &devs[1]));
			ASSERT_EQ(1, cbt_info(self->fd, &self->a, &was));
			continue;
		}
		EXPECT_EQ(-ENOMEM, ret);
		failed++;
		EXPECT_EQ(0, tracked(self->fd, &devs[0]));
		EXPECT_EQ(0, tracked(self->fd, &devs[1]));
		ASSERT_EQ(1, cbt_info(self->fd, &self->a, &now));
		EXPECT_EQ(0, memcmp(&was, &now, sizeof(was)));
		/* No filter left on vdb1: its disk can be tracked. */
		ASSERT_EQ(0, snapshot_create(self->fd, &disk_b, 1, &id));
		ASSERT_EQ(0, snapshot_destroy(self->fd, &id));
		ASSERT_EQ(0, tracker_remove(self->fd, &disk_b));
	}
	TH_LOG("%d of 64 CREATEs failed and left nothing behind", failed);
	EXPECT_LT(0, failed);
	ASSERT_EQ(0, snapshot_create(self->fd, devs, 3, &id));

	/* The snapshot of the three devices holds their data at TAKE. */
	ASSERT_EQ(0, fill(PART_B1, 0, 2 << 20, 201));
	ASSERT_EQ(0, fill(DISK_A, 0, 2 << 20, 202));
	ASSERT_EQ(0, append_storage(self->fd, &id, PART_B2, 0, 32 << 11));
	ASSERT_EQ(0, take(self->fd, &id));
	ASSERT_EQ(0, fill(PART_B1, 0, 1 << 20, 203));
	ASSERT_EQ(0, fill(DISK_A, 0, 1 << 20, 204));
	ASSERT_EQ(0, image_path(self->fd, &id, &devs[0], img, sizeof(img)));
	EXPECT_EQ(0, same_as_pattern(img, 0, 2 << 20, 201));
	ASSERT_EQ(0, image_path(self->fd, &id, &self->a, img, sizeof(img)));
	EXPECT_EQ(0, same_as_pattern(img, 0, 2 << 20, 202));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
}

TEST_HARNESS_MAIN
