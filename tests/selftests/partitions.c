// SPDX-License-Identifier: GPL-2.0
/*
 * A whole disk with partitions, snapshotted as a whole while ext4 is
 * mounted on its first partition and written to through it.
 *
 * Disk: /dev/vde, partition 1 at 1 MiB (128 MiB, ext4), partition 2 after
 * it (raw).  Storage lies on /dev/vdb2.
 *
 * What must hold: the whole disk's tracker sees every write sent through a
 * partition (copy-on-write keeps the image as it was at TAKE, byte for byte,
 * and the next CBT map marks every block written); TAKE freezes the file
 * system on the partition (files written before TAKE are in the image, each
 * whole); the file system in the image mounts through a loop device at the
 * partition's offset, with every file as it was at TAKE.
 */
#include <linux/fiemap.h>
#include <linux/loop.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mount.h>

#include "blksnap_util.h"
#include "blksnap_data.h"
#include "kselftest_harness.h"

#define DISK "/dev/vde"
#define PART1 "/dev/vde1"
#define PART2 "/dev/vde2"
#define P1_START (1ULL << 20)		/* bytes, from the host's sfdisk */
#define P1_SIZE (128ULL << 20)
#define MNT "/mnt/p1"
#define IMG_MNT "/mnt/p1img"
#define FSIZE (64 << 10)
#define MAX_FILES 4096
#define RAW_LEN (16 << 20)		/* written raw on partition 2 */

/*
 * A file of the writer holds FSIZE bytes of pattern(seed = its number),
 * written with one write(2), so that a freeze sees it whole or not at all.
 */
struct fs_writer {
	volatile int stop;
	volatile int done;		/* files completely written */
	int failed;
};

static void file_name(char *buf, size_t len, const char *dir, int n)
{
	snprintf(buf, len, "%s/w%04d", dir, n);
}

static void *fs_writer_fn(void *arg)
{
	struct fs_writer *w = arg;
	unsigned char *buf = malloc(FSIZE);
	char path[64];

	if (!buf) {
		w->failed = 1;
		return NULL;
	}
	for (int n = 0; !w->stop && n < MAX_FILES; n++) {
		int fd;

		file_name(path, sizeof(path), MNT, n);
		pattern(buf, FSIZE, 0, n);
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd < 0 || write(fd, buf, FSIZE) != FSIZE)
			w->failed = 1;
		if (fd >= 0)
			close(fd);
		w->done = n + 1;
	}
	free(buf);
	return NULL;
}

/* Waits (without a deadline: the test's budget is the limit) for n files. */
static void wait_files(struct fs_writer *w, int n)
{
	while (w->done < n && !w->failed)
		usleep(10000);
}

/* 0 if `path` holds writer file n whole, 1 if it is missing or empty, -1 if torn. */
static int check_file(const char *path, int n)
{
	unsigned char *buf = malloc(FSIZE + 1), *want = malloc(FSIZE);
	int fd = open(path, O_RDONLY);
	ssize_t got;
	int ret = -1;

	if (fd < 0) {
		ret = 1;
		goto out;
	}
	if (!buf || !want)
		goto out;
	got = read(fd, buf, FSIZE + 1);
	if (got == 0) {
		ret = 1;
	} else if (got == FSIZE) {
		pattern(want, FSIZE, 0, n);
		ret = memcmp(buf, want, FSIZE) ? -1 : 0;
	}
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	free(want);
	return ret;
}

/*
 * Attaches `file` read-only to a free loop device at [off, off + size);
 * returns the open loop device (the device detaches itself once that is
 * closed and nothing else holds it) or -1.
 */
static int loop_attach(const char *file, uint64_t off, uint64_t size, char *loopdev, size_t len)
{
	struct loop_config cfg = { 0 };
	int ctl = open("/dev/loop-control", O_RDWR);
	int nr, lfd;

	if (ctl < 0)
		return -1;
	nr = ioctl(ctl, LOOP_CTL_GET_FREE);
	close(ctl);
	if (nr < 0)
		return -1;
	snprintf(loopdev, len, "/dev/loop%d", nr);
	cfg.fd = open(file, O_RDONLY);
	lfd = open(loopdev, O_RDONLY);
	if (cfg.fd >= 0 && lfd >= 0) {
		cfg.info.lo_offset = off;
		cfg.info.lo_sizelimit = size;
		cfg.info.lo_flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR;
		if (ioctl(lfd, LOOP_CONFIGURE, &cfg)) {
			close(lfd);
			lfd = -1;
		}
	}
	if (cfg.fd >= 0)
		close(cfg.fd);
	return lfd;
}

/* Mounts partition 1's region of `img` read-only at IMG_MNT. */
static int mount_image_part1(const char *img, char *loopdev, size_t len)
{
	int lfd = loop_attach(img, P1_START, P1_SIZE, loopdev, len);
	int ret;

	if (lfd < 0)
		return -1;
	/* At TAKE the file system was frozen: its journal needs no replay. */
	ret = mount(loopdev, IMG_MNT, "ext4", MS_RDONLY, "noload");
	/* The mount holds the loop device now; unmounting detaches it. */
	close(lfd);
	return ret;
}

/* Reads the whole CBT map of `dev` (in a taken snapshot) into a new buffer. */
static unsigned char *read_map(int ctl, const struct blk_snap_dev *dev, uint32_t *blk_size,
			       uint64_t *count, uint8_t *number)
{
	struct blk_snap_cbt_info info[16];
	struct blk_snap_tracker_collect tc = { .count = 16, .cbt_info_array = info };
	struct blk_snap_tracker_read_cbt_bitmap rd = { .dev_id = *dev };
	unsigned char *map;

	if (xioctl(ctl, IOCTL_BLK_SNAP_TRACKER_COLLECT, &tc))
		return NULL;
	for (unsigned int i = 0; i < tc.count; i++) {
		if (info[i].dev_id.mj != dev->mj || info[i].dev_id.mn != dev->mn)
			continue;
		*blk_size = info[i].blk_size;
		*count = info[i].blk_count;
		*number = info[i].snap_number;
		map = calloc(1, info[i].blk_count);
		if (!map)
			return NULL;
		rd.length = info[i].blk_count;
		rd.buff = map;
		if (xioctl(ctl, IOCTL_BLK_SNAP_TRACKER_READ_CBT_MAP, &rd) != (int)info[i].blk_count) {
			free(map);
			return NULL;
		}
		return map;
	}
	return NULL;
}

/*
 * Counts the blocks of [off, off + len) (disk bytes) that the map does not
 * mark as changed since snapshot number `since`.
 */
static long unmarked(const unsigned char *map, uint64_t count, uint32_t blk,
		     uint8_t since, uint64_t off, uint64_t len)
{
	long miss = 0;

	for (uint64_t b = off / blk; b <= (off + len - 1) / blk; b++)
		miss += b >= count || map[b] <= since;
	return miss;
}

/* Adds to `miss` the unmarked blocks under the extents of `path` (on partition 1). */
static int file_unmarked(const char *path, const unsigned char *map, uint64_t count,
			 uint32_t blk, uint8_t since, long *miss)
{
	struct fiemap *fm = calloc(1, sizeof(*fm) + 32 * sizeof(struct fiemap_extent));
	int fd = open(path, O_RDONLY), ret = -1;

	if (!fm || fd < 0)
		goto out;
	fm->fm_length = ~0ULL;
	fm->fm_flags = FIEMAP_FLAG_SYNC;
	fm->fm_extent_count = 32;
	if (ioctl(fd, FS_IOC_FIEMAP, fm) || fm->fm_mapped_extents == 0)
		goto out;
	for (unsigned int i = 0; i < fm->fm_mapped_extents; i++)
		*miss += unmarked(map, count, blk, since,
				  P1_START + fm->fm_extents[i].fe_physical,
				  fm->fm_extents[i].fe_length);
	ret = 0;
out:
	if (fd >= 0)
		close(fd);
	free(fm);
	return ret;
}

FIXTURE(part) {
	int fd;
	struct blk_snap_dev disk;
	uint64_t p2_start;		/* bytes */
	char loopdev[32];
};

FIXTURE_SETUP(part)
{
	char sys[96];
	unsigned long long start = 0;
	FILE *f;

	self->fd = open(BLK_SNAP_CTL, O_RDWR);
	if (self->fd < 0)
		SKIP(return, BLK_SNAP_CTL " missing: module not loaded");
	if (dev_id(DISK, &self->disk) || access(PART1, F_OK) || access(PART2, F_OK))
		SKIP(return, "partitioned test disk missing");
	snprintf(sys, sizeof(sys), "/sys/class/block/%s/start", PART2 + 5);
	f = fopen(sys, "r");
	ASSERT_NE(NULL, f);
	ASSERT_EQ(1, fscanf(f, "%llu", &start));
	fclose(f);
	self->p2_start = start * 512;
	blksnap_reset(self->fd);
	set_param("diff_storage_wait_ms", 5000);
	mkdir(MNT, 0755);
	mkdir(IMG_MNT, 0755);
	ASSERT_EQ(0, mount(PART1, MNT, "ext4", 0, NULL)) {
		TH_LOG("mount %s: %s", PART1, strerror(errno));
	}
}

FIXTURE_TEARDOWN(part)
{
	char path[64];

	umount(IMG_MNT);
	for (int n = 0; n < MAX_FILES; n++) {
		file_name(path, sizeof(path), MNT, n);
		if (unlink(path))
			break;
	}
	if (umount(MNT))
		TH_LOG("umount %s: %s", MNT, strerror(errno));
	if (self->fd >= 0) {
		blksnap_reset(self->fd);
		close(self->fd);
	}
}

/*
 * The image of the whole disk is the disk at TAKE, byte for byte, although
 * both partitions are written to after TAKE; the next map marks every block
 * written through them.
 */
TEST_F_TIMEOUT(part, whole_disk_image_and_cbt_see_partition_writes, 300)
{
	struct blk_snap_uuid id, id2;
	struct fs_writer w = { 0 };
	uint64_t *before, *after;
	size_t nb = 0, na = 0;
	int want[MAX_FILES], nwant, first_after, mfd;
	char img[160], path[64];
	unsigned char *map;
	uint32_t blk = 0;
	uint64_t count = 0;
	uint8_t number = 0, since;
	long miss = 0;
	pthread_t th;

	ASSERT_EQ(0, fill(PART2, 0, RAW_LEN, 71));
	ASSERT_EQ(0, snapshot_create(self->fd, &self->disk, 1, &id));
	ASSERT_EQ(0, append_storage(self->fd, &id, PART_B2, 0, 140 << 11));
	ASSERT_EQ(0, pthread_create(&th, NULL, fs_writer_fn, &w));
	wait_files(&w, 16);

	/*
	 * The state at TAKE: freeze the file system ourselves, read the disk,
	 * TAKE (which freezes it once more), thaw.  Nothing writes the disk in
	 * between, so what was read is what the image must hold.
	 */
	mfd = open(MNT, O_RDONLY | O_DIRECTORY);
	ASSERT_LE(0, mfd);
	ASSERT_EQ(0, ioctl(mfd, FIFREEZE, 0));
	before = checksums(DISK, &nb);
	nwant = 0;
	for (int n = 0; n < MAX_FILES; n++) {
		file_name(path, sizeof(path), MNT, n);
		if (access(path, F_OK))
			break;
		want[nwant++] = check_file(path, n);
	}
	EXPECT_EQ(0, take(self->fd, &id));
	EXPECT_EQ(0, ioctl(mfd, FITHAW, 0));
	close(mfd);
	ASSERT_NE(NULL, before);
	first_after = w.done;

	/* After TAKE: new files through partition 1, raw writes to partition 2. */
	ASSERT_EQ(0, fill(PART2, 0, RAW_LEN, 72));
	wait_files(&w, first_after + 16);
	w.stop = 1;
	pthread_join(th, NULL);
	ASSERT_EQ(0, w.failed);
	sync();

	ASSERT_EQ(0, image_path(self->fd, &id, &self->disk, img, sizeof(img)));
	after = checksums(img, &na);
	ASSERT_NE(NULL, after);
	EXPECT_EQ(0, differing(before, nb, after, na));
	ASSERT_EQ(0, mount_image_part1(img, self->loopdev, sizeof(self->loopdev)));
	for (int n = 0; n < nwant; n++) {
		file_name(path, sizeof(path), IMG_MNT, n);
		EXPECT_EQ(want[n], check_file(path, n)) {
			TH_LOG("%s is not as it was at TAKE", path);
		}
	}
	file_name(path, sizeof(path), IMG_MNT, nwant);
	EXPECT_NE(0, access(path, F_OK));
	EXPECT_EQ(0, umount(IMG_MNT));

	/* The next snapshot's map marks what was written since the first. */
	map = read_map(self->fd, &self->disk, &blk, &count, &since);
	ASSERT_NE(NULL, map);
	free(map);
	ASSERT_EQ(0, snapshot_destroy(self->fd, &id));
	ASSERT_EQ(0, snapshot_create(self->fd, &self->disk, 1, &id2));
	ASSERT_EQ(0, append_storage(self->fd, &id2, PART_B2, 0, 140 << 11));
	ASSERT_EQ(0, take(self->fd, &id2));
	map = read_map(self->fd, &self->disk, &blk, &count, &number);
	ASSERT_NE(NULL, map);
	EXPECT_EQ(since + 1, number);
	EXPECT_EQ(0, unmarked(map, count, blk, since, self->p2_start, RAW_LEN));
	for (int n = first_after; n < w.done; n++) {
		file_name(path, sizeof(path), MNT, n);
		ASSERT_EQ(0, file_unmarked(path, map, count, blk, since, &miss));
	}
	EXPECT_EQ(0, miss);
	free(map);
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id2));
	free(before);
	free(after);
}

/*
 * TAKE freezes the file system on the partition: every file whose write(2)
 * returned before TAKE is in the image, whole, though none was synced.
 */
TEST_F_TIMEOUT(part, take_freezes_filesystems_on_partitions, 300)
{
	struct blk_snap_uuid id;
	struct fs_writer w = { 0 };
	char img[160], path[64];
	int before_take, present = 0, torn = 0, missing = 0;
	pthread_t th;

	ASSERT_EQ(0, snapshot_create(self->fd, &self->disk, 1, &id));
	ASSERT_EQ(0, append_storage(self->fd, &id, PART_B2, 0, 140 << 11));
	ASSERT_EQ(0, pthread_create(&th, NULL, fs_writer_fn, &w));
	wait_files(&w, 16);
	before_take = w.done;
	ASSERT_EQ(0, take(self->fd, &id));
	wait_files(&w, w.done + 8);
	w.stop = 1;
	pthread_join(th, NULL);
	ASSERT_EQ(0, w.failed);

	ASSERT_EQ(0, image_path(self->fd, &id, &self->disk, img, sizeof(img)));
	ASSERT_EQ(0, mount_image_part1(img, self->loopdev, sizeof(self->loopdev)));
	for (int n = 0; n < w.done; n++) {
		int r;

		file_name(path, sizeof(path), IMG_MNT, n);
		r = check_file(path, n);
		if (r < 0)
			torn++;
		else if (r == 0)
			present++;
		else if (n < before_take)
			missing++;
	}
	TH_LOG("%d files written before TAKE, %d whole in the image", before_take, present);
	EXPECT_EQ(0, torn);
	EXPECT_EQ(0, missing);
	EXPECT_LE(before_take, present);
	EXPECT_EQ(0, umount(IMG_MNT));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
}

/* A partition of the tracked disk cannot be tracked too, and vice versa. */
TEST_F_TIMEOUT(part, disk_and_its_partitions_exclude_each_other, 60)
{
	struct blk_snap_uuid id;
	struct blk_snap_dev p1;

	ASSERT_EQ(0, dev_id(PART1, &p1));
	ASSERT_EQ(0, snapshot_create(self->fd, &self->disk, 1, &id));
	EXPECT_EQ(-EBUSY, snapshot_create(self->fd, &p1, 1, NULL));
	ASSERT_EQ(0, snapshot_destroy(self->fd, &id));
	ASSERT_EQ(0, tracker_remove(self->fd, &self->disk));
	ASSERT_EQ(0, snapshot_create(self->fd, &p1, 1, &id));
	EXPECT_EQ(-EBUSY, snapshot_create(self->fd, &self->disk, 1, NULL));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
}

TEST_HARNESS_MAIN
