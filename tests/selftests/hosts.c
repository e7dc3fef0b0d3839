// SPDX-License-Identifier: GPL-2.0
/*
 * Layouts of real hosts, each of which once gave a crash or a silently
 * wrong image:
 *
 * - a tracked device whose driver module is unloaded after the device went
 *   away: every ioctl afterwards works (no reference to the gone disk may
 *   outlive its driver);
 * - storage appended after TAKE on a device of the snapshot, directly or
 *   through a device mapper device built on it: refused with EINVAL, since
 *   its blocks may hold data the image still needs;
 * - storage on a dm-linear device over the tracked disk itself, given
 *   before TAKE: the module's storage writes pass the disk's filter, so a
 *   1 MiB write uses a few chunks of storage, not all of it;
 * - a long chain of discard and write-zeroes bios (/dev/vdi splits them
 *   into 32 KiB bios) whose first link waits for copy on write while the
 *   others complete: the image keeps the data of TAKE and the CBT marks
 *   every block of the range;
 * - the module unloaded under copies and writes in flight: unload waits
 *   until every completion has left the module's code, and no write is
 *   lost.
 */
#include <pthread.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include "blksnap_util.h"
#include "blksnap_data.h"
#include "blksnap_dm.h"
#include "kselftest_harness.h"

#define NULLB "/sys/kernel/config/nullb"
/* 128 MiB, discards and write-zeroes in bios of at most 64 sectors. */
#define DISK_DISCARD "/dev/vdi"

FIXTURE(host) {
	int fd;
};

FIXTURE_SETUP(host)
{
	self->fd = open("/dev/blksnap", O_RDWR);
	ASSERT_LE(0, self->fd);
	blksnap_reset(self->fd);
}

FIXTURE_TEARDOWN(host)
{
	if (self->fd >= 0) {
		blksnap_reset(self->fd);
		close(self->fd);
	}
}

/* Snapshot storage used, in sectors, from the image's sysfs attribute. */
static long storage_used(const char *img)
{
	char path[200];
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/block/%s/blksnap/diff_storage_used",
		 strrchr(img, '/') + 1);
	f = fopen(path, "r");
	if (!f)
		return -1;
	if (fscanf(f, "%ld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

/*
 * A null_blk disk tracked and snapshotted, the disk deleted, its driver
 * unloaded: then every ioctl. A reference to the disk kept past its
 * deletion would call into the unloaded driver's code when it is dropped.
 */
TEST_F_TIMEOUT(host, driver_unloaded_then_every_ioctl, 180)
{
	int fd = self->fd;
	struct blk_snap_dev dev, store;
	struct blk_snap_uuid id;
	struct blk_snap_cbt_info info[16];
	struct blk_snap_tracker_collect tc = { .count = 16, .cbt_info_array = info };
	unsigned char map[64];
	struct blk_snap_tracker_read_cbt_bitmap rd = {
		.offset = 0, .length = sizeof(map), .buff = map,
	};
	char img[160];

	ASSERT_EQ(0, dev_id(DISK_B, &store));
	(void)system("rmmod null_blk 2>/dev/null");
	ASSERT_EQ(0, system("insmod /lib/modules/null_blk.ko nr_devices=0"));
	mkdir("/sys/kernel/config", 0755);
	mount("configfs", "/sys/kernel/config", "configfs", 0, NULL);
	ASSERT_EQ(0, mkdir(NULLB "/gone", 0755));
	ASSERT_EQ(0, put(NULLB "/gone/size", "16"));
	ASSERT_EQ(0, put(NULLB "/gone/memory_backed", "1"));
	ASSERT_EQ(0, put(NULLB "/gone/power", "1"));
	for (int i = 0; i < 3000 && access("/dev/gone", F_OK); i++)
		usleep(10000);
	ASSERT_EQ(0, dev_id("/dev/gone", &dev));
	ASSERT_EQ(0, fill("/dev/gone", 0, 16 << 20, 41));

	/* A snapshot whose image is read whole, then destroyed: the tracker stays. */
	ASSERT_EQ(0, taken_snapshot(fd, &dev, PART_B1, 16 << 11, &id, img));
	ASSERT_EQ(0, fill("/dev/gone", 0, 1 << 20, 42));
	EXPECT_EQ(0, same_as_pattern(img, 0, 16 << 20, 41));
	ASSERT_EQ(0, snapshot_destroy(fd, &id));
	ASSERT_EQ(1, tracked(fd, &dev));

	/* The disk goes, then its driver. */
	ASSERT_EQ(0, put(NULLB "/gone/power", "0"));
	ASSERT_EQ(0, rmdir(NULLB "/gone"));
	ASSERT_EQ(0, system("rmmod null_blk"));

	/* Every call that looks at trackers, on the gone device and others. */
	EXPECT_EQ(0, tracked(fd, &dev));
	EXPECT_EQ(0, xioctl(fd, IOCTL_BLK_SNAP_TRACKER_COLLECT, &tc));
	EXPECT_EQ(-ENODEV, tracker_remove(fd, &dev));
	EXPECT_EQ(-ENODEV, snapshot_create(fd, &dev, 1, &id));
	rd.dev_id = dev;
	EXPECT_GT(0, xioctl(fd, IOCTL_BLK_SNAP_TRACKER_READ_CBT_MAP, &rd));
	/* The module still works for a device that is there. */
	ASSERT_EQ(0, snapshot_create(fd, &store, 1, &id));
	EXPECT_EQ(0, snapshot_destroy(fd, &id));
}

/*
 * After TAKE, storage on a device of the snapshot, on its whole disk, or
 * on a device mapper device built on it is refused; storage elsewhere is
 * not.
 */
TEST_F_TIMEOUT(host, storage_after_take_on_a_snapshot_device_is_refused, 180)
{
	int fd = self->fd;
	struct blk_snap_dev part, other;
	struct blk_snap_uuid id;
	char img[160], lv[64], table[64];

	ASSERT_EQ(0, dev_id(PART_B2, &part));
	ASSERT_EQ(0, dev_id(DISK_A, &other));
	ASSERT_EQ(0, fill(PART_B2, 0, 16 << 20, 7));
	/* An LV over the first 32 MiB of the partition. */
	snprintf(table, sizeof(table), "%u:%u 0", part.mj, part.mn);
	ASSERT_EQ(0, dm_create("bs_lv_on_b2", "linear", table, 32 << 11, lv, sizeof(lv)));

	ASSERT_EQ(0, taken_snapshot(fd, &part, DISK_A, 32 << 11, &id, img));
	EXPECT_EQ(-EINVAL, append_storage(fd, &id, PART_B2, 100 << 11, 2048));
	EXPECT_EQ(-EINVAL, append_storage(fd, &id, DISK_B, 0, 2048));
	EXPECT_EQ(-EINVAL, append_storage(fd, &id, lv, 0, 2048));
	/* The partition beside it, and another disk, are fine. */
	EXPECT_EQ(0, append_storage(fd, &id, PART_B1, 0, 2048));
	EXPECT_EQ(0, append_storage(fd, &id, DISK_A, 64 << 11, 2048));
	/* Nothing of the refused storage was written: the image is whole. */
	EXPECT_EQ(0, same_as_pattern(img, 0, 16 << 20, 7));
	EXPECT_EQ(0, snapshot_destroy(fd, &id));
	EXPECT_EQ(0, dm_remove("bs_lv_on_b2"));
	(void)other;
}

/*
 * Storage on a dm-linear device over the second half of the tracked disk,
 * given before TAKE: each storage write reaches the disk's filter through
 * device mapper's clone. It must not be copied on write again (and again,
 * until storage runs out).
 */
TEST_F_TIMEOUT(host, storage_on_a_device_stacked_over_the_original, 180)
{
	int fd = self->fd;
	struct blk_snap_dev disk;
	struct blk_snap_uuid id;
	struct blk_snap_snapshot_event ev;
	char img[160], lv[64], table[64];
	long used;

	ASSERT_EQ(0, dev_id(DISK_A, &disk));
	ASSERT_EQ(0, fill(DISK_A, 0, 64 << 20, 11));
	/* 64 MiB at 128 MiB of vda: the storage. */
	snprintf(table, sizeof(table), "%u:%u %u", disk.mj, disk.mn, 128 << 11);
	ASSERT_EQ(0, dm_create("bs_store_on_a", "linear", table, 64 << 11, lv, sizeof(lv)));

	ASSERT_EQ(0, snapshot_create(fd, &disk, 1, &id));
	ASSERT_EQ(0, append_storage(fd, &id, lv, 0, 64 << 11));
	ASSERT_EQ(0, take(fd, &id));
	ASSERT_EQ(0, image_path(fd, &id, &disk, img, sizeof(img)));
	ASSERT_EQ(0, fill(DISK_A, 0, 1 << 20, 12));
	/* Any cascade would have used up storage in well under this. */
	sleep(2);
	used = storage_used(img);
	ASSERT_LE(0, used);
	/* 1 MiB of writes: a few chunks, whatever their size. */
	EXPECT_GE(8 << 11, used);
	EXPECT_EQ(0, same_as_pattern(img, 0, 64 << 20, 11));
	EXPECT_EQ(-1, corrupted_event(fd, &id, &disk, &ev, 100));
	EXPECT_EQ(0, snapshot_destroy(fd, &id));
	EXPECT_EQ(0, dm_remove("bs_store_on_a"));
}

/*
 * The smallest and largest CBT map byte (the number of the snapshot a
 * block last changed in) of [first, end) of `dev`'s snapshot map.
 */
static int cbt_span(int fd, const struct blk_snap_dev *dev, unsigned int first,
		    unsigned int end, unsigned int *lo, unsigned int *hi)
{
	unsigned char map[4096];
	struct blk_snap_tracker_read_cbt_bitmap rd = {
		.dev_id = *dev, .offset = first, .length = end - first, .buff = map,
	};

	if (end <= first || end - first > sizeof(map) ||
	    xioctl(fd, IOCTL_BLK_SNAP_TRACKER_READ_CBT_MAP, &rd) < (int)(end - first))
		return -1;
	*lo = 255;
	*hi = 0;
	for (unsigned int i = 0; i < end - first; i++) {
		*lo = map[i] < *lo ? map[i] : *lo;
		*hi = map[i] > *hi ? map[i] : *hi;
	}
	return 0;
}

/* CBT block size of `dev`, from TRACKER_COLLECT (0 if not tracked). */
static uint32_t cbt_block(int fd, const struct blk_snap_dev *dev)
{
	struct blk_snap_cbt_info info;

	return cbt_info(fd, dev, &info) == 1 ? info.blk_size : 0;
}

/*
 * A 64 MiB discard, then a 64 MiB write-zeroes, each split into about
 * 2,000 chained bios, after TAKE, with every chunk of the range but the
 * first already copied: the first link waits for its copy while the
 * others complete, and its completion then ends the whole chain.
 */
TEST_F_TIMEOUT(host, long_discard_and_zeroout_chains, 240)
{
	int fd = self->fd, dfd;
	struct blk_snap_dev dev;
	struct blk_snap_uuid id;
	char img[160];
	uint64_t range[2] = { 32 << 20, 64 << 20 };
	unsigned int dlo, dhi, ulo, uhi;
	uint32_t blk;

	ASSERT_EQ(0, dev_id(DISK_DISCARD, &dev));
	ASSERT_EQ(0, fill(DISK_DISCARD, 0, 128 << 20, 21));
	ASSERT_EQ(0, taken_snapshot(fd, &dev, DISK_A, 128 << 11, &id, img));
	/* Every chunk of the range but the first is copied. */
	ASSERT_EQ(0, fill(DISK_DISCARD, (32 << 20) + (1 << 20), (64 << 20) - (1 << 20), 22));
	dfd = open(DISK_DISCARD, O_RDWR);
	ASSERT_LE(0, dfd);
	EXPECT_EQ(0, ioctl(dfd, BLKDISCARD, range));
	EXPECT_EQ(0, same_as_pattern(img, 0, 128 << 20, 21));
	EXPECT_EQ(0, snapshot_destroy(fd, &id));

	/* The next snapshot: its map shows the range changed, then zeroes. */
	ASSERT_EQ(0, fill(DISK_DISCARD, 0, 128 << 20, 23));
	ASSERT_EQ(0, taken_snapshot(fd, &dev, DISK_A, 128 << 11, &id, img));
	ASSERT_EQ(0, fill(DISK_DISCARD, (32 << 20) + (1 << 20), (64 << 20) - (1 << 20), 24));
	EXPECT_EQ(0, ioctl(dfd, BLKZEROOUT, range));
	EXPECT_EQ(0, same_as_pattern(img, 0, 128 << 20, 23));
	EXPECT_EQ(0, snapshot_destroy(fd, &id));

	/* A discard alone, between snapshots: the next map marks its blocks. */
	range[0] = 100 << 20;
	range[1] = 8 << 20;
	EXPECT_EQ(0, ioctl(dfd, BLKDISCARD, range));
	ASSERT_EQ(0, taken_snapshot(fd, &dev, DISK_A, 128 << 11, &id, img));
	blk = cbt_block(fd, &dev);
	ASSERT_LT(0, blk);
	/* Every discarded block changed later than any block left alone. */
	ASSERT_EQ(0, cbt_span(fd, &dev, (100 << 20) / blk, (108 << 20) / blk, &dlo, &dhi));
	ASSERT_EQ(0, cbt_span(fd, &dev, 0, (8 << 20) / blk, &ulo, &uhi));
	EXPECT_EQ(dlo, dhi);
	EXPECT_LT(uhi, dlo);
	EXPECT_EQ(0, snapshot_destroy(fd, &id));
	close(dfd);
}

struct filler {
	const char *path;
	uint64_t off, len;
	unsigned int seed;
	int ret;
	int64_t ended;		/* now_ns() when the write returned */
};

static void *filler_run(void *arg)
{
	struct filler *f = arg;

	f->ret = fill(f->path, f->off, f->len, f->seed);
	f->ended = now_ns();
	return NULL;
}

static void *take_run(void *arg)
{
	struct { int fd; struct blk_snap_uuid id; int ret; } *t = arg;

	t->ret = take(t->fd, &t->id);
	return NULL;
}

/*
 * Two snapshots on two devices. One TAKEs a dm-delay device with a write
 * in flight (its drain waits 12 s); meanwhile the other, short of storage,
 * gets more. Its copies wait for storage at most 4 s: if the first TAKE
 * kept its appends out, they would give up and corrupt its image.
 */
TEST_F_TIMEOUT(host, two_snapshots_never_wait_for_each_other, 240)
{
	int fd = self->fd;
	struct blk_snap_dev slow, fast;
	struct blk_snap_uuid sid;
	struct blk_snap_snapshot_event ev;
	struct { int fd; struct blk_snap_uuid id; int ret; } tk = { .fd = fd, .ret = -1 };
	struct filler inflight = { .seed = 32 }, w = { .seed = 33 };
	pthread_t tw, tt, tf;
	char img[160], slow_img[160], dm[64], table[160];
	struct blk_snap_dev b1;

	ASSERT_EQ(0, dev_id(PART_B1, &b1));
	ASSERT_EQ(0, dev_id(PART_B2, &fast));
	ASSERT_EQ(0, fill(PART_B1, 0, 16 << 20, 30));
	ASSERT_EQ(0, fill(PART_B2, 0, 32 << 20, 31));
	snprintf(table, sizeof(table), "%u:%u 0 0 %u:%u 0 12000", b1.mj, b1.mn, b1.mj, b1.mn);
	dm_remove("bs_slow");
	ASSERT_EQ(0, dm_create("bs_slow", "delay", table, 16 << 11, dm, sizeof(dm)));
	ASSERT_EQ(0, dev_id(dm, &slow));
	set_param("diff_storage_wait_ms", 4000);

	/* The fast device's snapshot, taken, with 2 MiB of storage. */
	ASSERT_EQ(0, taken_snapshot(fd, &fast, DISK_A, 2 << 11, &sid, img));
	/* The slow one: tracked before its write, so that TAKE drains it. */
	ASSERT_EQ(0, snapshot_create(fd, &slow, 1, &tk.id));
	ASSERT_EQ(0, append_storage(fd, &tk.id, DISK_A, 64 << 11, 16 << 11));
	inflight.path = dm;
	inflight.len = 1 << 20;
	ASSERT_EQ(0, pthread_create(&tw, NULL, filler_run, &inflight));
	usleep(500000);
	ASSERT_EQ(0, pthread_create(&tt, NULL, take_run, &tk));
	usleep(500000);

	/* 8 MiB of writes to the fast device need 8 MiB of storage. */
	w.path = PART_B2;
	w.len = 8 << 20;
	ASSERT_EQ(0, pthread_create(&tf, NULL, filler_run, &w));
	usleep(500000);
	EXPECT_EQ(0, append_storage(fd, &sid, DISK_A, 96 << 11, 32 << 11));
	pthread_join(tf, NULL);
	EXPECT_EQ(0, w.ret);
	EXPECT_EQ(-1, corrupted_event(fd, &sid, &fast, &ev, 100));
	EXPECT_EQ(0, same_as_pattern(img, 0, 32 << 20, 31));

	pthread_join(tt, NULL);
	pthread_join(tw, NULL);
	EXPECT_EQ(0, tk.ret);
	EXPECT_EQ(0, inflight.ret);
	/* The write in flight at TAKE is wholly before it. */
	if (!tk.ret) {
		ASSERT_EQ(0, image_path(fd, &tk.id, &slow, slow_img, sizeof(slow_img)));
		EXPECT_EQ(0, same_as_pattern(slow_img, 0, 1 << 20, 32));
		EXPECT_EQ(0, same_as_pattern(slow_img, 1 << 20, 15 << 20, 30));
	}
	EXPECT_EQ(0, snapshot_destroy(fd, &tk.id));
	EXPECT_EQ(0, snapshot_destroy(fd, &sid));
	set_param("diff_storage_wait_ms", 5000);
	blksnap_reset(fd);
	EXPECT_EQ(0, dm_remove("bs_slow"));
}

/*
 * A device whose storage ran out: after its corrupted event, every
 * queued copy ends at once and the writes it held go on. 32 writers of
 * 1 MiB each (about 128 chunks, 8 chunks' worth of storage) all return
 * within the storage wait (3 s) plus a margin after the event; each
 * queued chunk waiting out its own storage wait would take minutes.
 */
TEST_F_TIMEOUT(host, writers_go_on_once_the_image_is_corrupted, 240)
{
	int fd = self->fd;
	struct blk_snap_dev dev;
	struct blk_snap_uuid id;
	struct blk_snap_snapshot_event ev;
	struct filler w[32];
	pthread_t th[32];
	char img[160];
	int64_t corrupted, last = 0;

	ASSERT_EQ(0, dev_id(PART_B2, &dev));
	set_param("diff_storage_wait_ms", 3000);
	ASSERT_EQ(0, taken_snapshot(fd, &dev, DISK_A, 2 << 11, &id, img));
	for (int i = 0; i < 32; i++) {
		w[i] = (struct filler){ .path = PART_B2, .off = (uint64_t)i << 21,
					.len = 1 << 20, .seed = 50 + i };
		ASSERT_EQ(0, pthread_create(&th[i], NULL, filler_run, &w[i]));
	}
	EXPECT_EQ(ENOSPC, corrupted_event(fd, &id, &dev, &ev, 60000));
	corrupted = now_ns();
	for (int i = 0; i < 32; i++) {
		pthread_join(th[i], NULL);
		EXPECT_EQ(0, w[i].ret);
		last = w[i].ended > last ? w[i].ended : last;
	}
	/* Time is what this tests: 3 s of wait, 7 s of margin for a slow VM. */
	EXPECT_GT(10000000000LL, last - corrupted);
	TH_LOG("last writer returned %lld ms after the corrupted event",
	       (long long)(last - corrupted) / 1000000);
	EXPECT_EQ(0, snapshot_destroy(fd, &id));
	set_param("diff_storage_wait_ms", 5000);
}

/* Checksum of `len` bytes at 0 of `path` (O_DIRECT), 0 if unreadable. */
static uint64_t region_sum(const char *path, size_t len)
{
	unsigned char *buf;
	int fd = open(path, O_RDONLY | O_DIRECT);
	uint64_t h = 0;

	if (fd < 0 || posix_memalign((void **)&buf, 4096, len))
		return 0;
	if (pread(fd, buf, len, 0) == (ssize_t)len)
		h = fnv(buf, len) | 1;
	close(fd);
	free(buf);
	return h;
}

struct image_writer {
	const char *path;
	volatile int *stop;
	unsigned int seed;
};

/* Writes 64 KiB pieces to the first 8 MiB of an image until told to stop
 * (or until the image goes). */
static void *image_writer_run(void *arg)
{
	struct image_writer *w = arg;
	unsigned char *buf;
	int fd = open(w->path, O_RDWR | O_DIRECT);

	if (fd < 0 || posix_memalign((void **)&buf, 4096, 65536))
		return NULL;
	memset(buf, w->seed, 65536);
	while (!*w->stop) {
		w->seed = w->seed * 1103515245 + 12345;
		if (pwrite(fd, buf, 65536, (off_t)(w->seed % 128) << 16) < 0)
			break;
	}
	close(fd);
	free(buf);
	return NULL;
}

/*
 * DESTROY while image writes are in flight: once it returns, nothing more
 * reaches the storage (which the tool then deletes, and whose blocks go
 * to other files).
 */
TEST_F_TIMEOUT(host, destroy_waits_for_image_io, 240)
{
	int fd = self->fd;
	struct blk_snap_dev dev;
	struct blk_snap_uuid id;
	char img[160];

	ASSERT_EQ(0, dev_id(DISK_A, &dev));
	for (int round = 0; round < 8; round++) {
		struct image_writer w[4];
		pthread_t th[4];
		volatile int stop = 0;
		uint64_t a, b;

		ASSERT_EQ(0, taken_snapshot(fd, &dev, PART_B2, 32 << 11, &id, img));
		for (int i = 0; i < 4; i++) {
			w[i] = (struct image_writer){ img, &stop, 7 * round + i + 1 };
			ASSERT_EQ(0, pthread_create(&th[i], NULL, image_writer_run, &w[i]));
		}
		usleep(300000);
		ASSERT_EQ(0, snapshot_destroy(fd, &id));
		a = region_sum(PART_B2, 32 << 20);
		usleep(500000);
		b = region_sum(PART_B2, 32 << 20);
		stop = 1;
		for (int i = 0; i < 4; i++)
			pthread_join(th[i], NULL);
		ASSERT_NE(0, a);
		EXPECT_EQ(a, b) {
			TH_LOG("round %d: storage changed after DESTROY returned", round);
		}
	}
}

/* The CBT generation of `dev` from TRACKER_COLLECT into `gen`; 0 or -1. */
static int generation(int fd, const struct blk_snap_dev *dev, struct blk_snap_uuid *gen)
{
	struct blk_snap_cbt_info info;

	if (cbt_info(fd, dev, &info) != 1)
		return -1;
	*gen = info.generation_id;
	return 0;
}

/*
 * An LV shrunk and extended again between two backups (what lvreduce and
 * lvextend do: its table replaced twice, no bio through it): its size is
 * what it was, but what it holds past the cut is not. The next snapshot
 * starts a new generation, so that no incremental backup trusts a map
 * that missed the change.
 */
TEST_F_TIMEOUT(host, an_lv_shrunk_and_extended_starts_a_new_generation, 120)
{
	int fd = self->fd;
	struct blk_snap_dev lvdev, b1;
	struct blk_snap_uuid id, g0, g1, g2;
	char lv[64], table[64];

	ASSERT_EQ(0, dev_id(PART_B1, &b1));
	snprintf(table, sizeof(table), "%u:%u 0", b1.mj, b1.mn);
	dm_remove("bs_lv");
	ASSERT_EQ(0, dm_create("bs_lv", "linear", table, 32 << 11, lv, sizeof(lv)));
	ASSERT_EQ(0, dev_id(lv, &lvdev));
	ASSERT_EQ(0, snapshot_create(fd, &lvdev, 1, &id));
	ASSERT_EQ(0, snapshot_destroy(fd, &id));
	ASSERT_EQ(0, generation(fd, &lvdev, &g0));

	/* Nothing happened to it: the next snapshot continues the chain. */
	ASSERT_EQ(0, snapshot_create(fd, &lvdev, 1, &id));
	ASSERT_EQ(0, snapshot_destroy(fd, &id));
	ASSERT_EQ(0, generation(fd, &lvdev, &g1));
	EXPECT_EQ(0, memcmp(&g0, &g1, sizeof(g0)));

	/* Shrunk to 16 MiB, extended to 32 MiB, now over other blocks. */
	ASSERT_EQ(0, dm_load("bs_lv", "linear", table, 16 << 11));
	snprintf(table, sizeof(table), "%u:%u %u", b1.mj, b1.mn, 40 << 11);
	ASSERT_EQ(0, dm_load("bs_lv", "linear", table, 32 << 11));
	ASSERT_EQ(0, snapshot_create(fd, &lvdev, 1, &id));
	ASSERT_EQ(0, snapshot_destroy(fd, &id));
	ASSERT_EQ(0, generation(fd, &lvdev, &g2));
	EXPECT_NE(0, memcmp(&g1, &g2, sizeof(g1)));
	blksnap_reset(fd);
	EXPECT_EQ(0, dm_remove("bs_lv"));
}

struct looper {
	const char *path;
	uint64_t off;
	volatile int *stop;
	unsigned int seed;	/* in: the first is seed + 1; out: the last written */
	int ret, rounds;
};

/* Rewrites 1 MiB at `off` with a new pattern each time until told to stop. */
static void *looper_run(void *arg)
{
	struct looper *l = arg;

	while (!*l->stop) {
		if (fill(l->path, l->off, 1 << 20, l->seed + 1)) {
			l->ret = -1;
			break;
		}
		l->seed++;
		l->rounds++;
	}
	return NULL;
}

/*
 * Unload under copies and writes in flight, 4 rounds: a snapshot of a
 * dm-delay device (20 ms a bio) is taken, 4 writers keep rewriting it and
 * the image is read, then the module is unloaded under the writers. Unload
 * waits until every completion has left the module's code (one still
 * returning into unloaded code would oops); every write returns whole and
 * the device holds what was written last.
 */
TEST_F_TIMEOUT(host, unload_under_copies_and_writes_in_flight, 300)
{
	struct blk_snap_dev slow, b1;
	struct blk_snap_uuid id;
	char dm[64], table[160], img[160];

	ASSERT_EQ(0, dev_id(PART_B1, &b1));
	snprintf(table, sizeof(table), "%u:%u 0 20", b1.mj, b1.mn);
	dm_remove("bs_unl");
	ASSERT_EQ(0, dm_create("bs_unl", "delay", table, 16 << 11, dm, sizeof(dm)));
	ASSERT_EQ(0, dev_id(dm, &slow));
	blksnap_reset(self->fd);
	close(self->fd);
	self->fd = -1;
	for (int round = 0; round < 4; round++) {
		volatile int stop = 0;
		struct looper w[4];
		pthread_t th[4];
		int fd;

		ASSERT_EQ(0, system("grep -q '^blksnap ' /proc/modules || "
				    "insmod /lib/modules/blksnap.ko"));
		fd = open("/dev/blksnap", O_RDWR);
		ASSERT_LE(0, fd);
		ASSERT_EQ(0, fill(dm, 0, 16 << 20, 60 + round));
		ASSERT_EQ(0, taken_snapshot(fd, &slow, DISK_A, 32 << 11, &id, img));
		for (int i = 0; i < 4; i++) {
			w[i] = (struct looper){ .path = dm, .off = (uint64_t)i << 22,
						.stop = &stop, .seed = 1000 * (round + 1) + 100 * i };
			ASSERT_EQ(0, pthread_create(&th[i], NULL, looper_run, &w[i]));
		}
		EXPECT_EQ(0, same_as_pattern(img, 0, 16 << 20, 60 + round));
		close(fd);
		EXPECT_EQ(0, system("rmmod blksnap"));
		stop = 1;
		for (int i = 0; i < 4; i++) {
			pthread_join(th[i], NULL);
			EXPECT_EQ(0, w[i].ret);
			EXPECT_LT(0, w[i].rounds);
			EXPECT_EQ(0, same_as_pattern(dm, (uint64_t)i << 22, 1 << 20, w[i].seed)) {
				TH_LOG("round %d: writer %d's last write is not on the device",
				       round, i);
			}
		}
	}
	ASSERT_EQ(0, system("insmod /lib/modules/blksnap.ko"));
	self->fd = open("/dev/blksnap", O_RDWR);
	ASSERT_LE(0, self->fd);
	EXPECT_EQ(0, dm_remove("bs_unl"));
}

TEST_HARNESS_MAIN
