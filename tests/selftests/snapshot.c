// SPDX-License-Identifier: GPL-2.0
/*
 * Snapshots proven on data: every image is compared, block by block, with
 * checksums of what the original held at TAKE, while the original is being
 * overwritten.  Also: APPEND_STORAGE and TAKE input checks, image writes,
 * CBT after TAKE, and storage that runs short (appended in time, or not).
 *
 * Disks: /dev/vda is the original; storage lies on /dev/vdb2.
 */
#include <pthread.h>
#include <stdlib.h>

#include "blksnap_util.h"
#include "blksnap_data.h"
#include "blksnap_dm.h"
#include "kselftest_harness.h"

FIXTURE(snap) {
	int fd;
	struct blk_snap_dev a, b1, b2;
	struct blk_snap_snapshot_event *ev;
};

FIXTURE_SETUP(snap)
{
	self->fd = open(BLK_SNAP_CTL, O_RDWR);
	if (self->fd < 0)
		SKIP(return, BLK_SNAP_CTL " missing: module not loaded");
	if (dev_id(DISK_A, &self->a) || dev_id(PART_B1, &self->b1) || dev_id(PART_B2, &self->b2))
		SKIP(return, "test disks missing");
	self->ev = calloc(1, sizeof(*self->ev));
	ASSERT_NE(NULL, self->ev);
	blksnap_reset(self->fd);
	set_param("diff_storage_wait_ms", 5000);
	set_param("diff_storage_minimum", 2097152);
}

FIXTURE_TEARDOWN(snap)
{
	if (self->fd >= 0) {
		blksnap_reset(self->fd);
		close(self->fd);
	}
	set_param("diff_storage_wait_ms", 5000);
	set_param("diff_storage_minimum", 2097152);
	set_param("chunk_maximum_in_cache", 32);
	free(self->ev);
}

TEST_F_TIMEOUT(snap, append_and_take_check_input, 60)
{
	struct blk_snap_uuid id, none;
	struct blk_snap_block_range r[2] = { { 0, 8 }, { 4, 8 } };
	struct blk_snap_snapshot_append_storage a = { .count = 1, .ranges = r };
	uint64_t b2_sectors;
	int dfd = open(PART_B2, O_RDONLY);

	ASSERT_LE(0, dfd);
	b2_sectors = dev_size(dfd) / 512;
	close(dfd);
	memset(&none, 0x77, sizeof(none));
	ASSERT_EQ(0, snapshot_create(self->fd, &self->a, 1, &id));
	EXPECT_EQ(-ENOSPC, take(self->fd, &id));
	EXPECT_EQ(-ESRCH, take(self->fd, &none));

	a.id = none;
	a.dev_id = self->b2;
	EXPECT_EQ(-ESRCH, xioctl(self->fd, IOCTL_BLK_SNAP_SNAPSHOT_APPEND_STORAGE, &a));
	a.id = id;
	a.count = 0;
	EXPECT_EQ(-EINVAL, xioctl(self->fd, IOCTL_BLK_SNAP_SNAPSHOT_APPEND_STORAGE, &a));
	a.count = 65537;
	EXPECT_EQ(-EINVAL, xioctl(self->fd, IOCTL_BLK_SNAP_SNAPSHOT_APPEND_STORAGE, &a));
	a.count = 2;	/* the two ranges overlap */
	EXPECT_EQ(-EINVAL, xioctl(self->fd, IOCTL_BLK_SNAP_SNAPSHOT_APPEND_STORAGE, &a));
	a.count = 1;
	a.dev_id.mj = 250;
	EXPECT_EQ(-ENODEV, xioctl(self->fd, IOCTL_BLK_SNAP_SNAPSHOT_APPEND_STORAGE, &a));
	a.dev_id = self->b2;
	a.ranges = NULL;
	EXPECT_EQ(-EFAULT, xioctl(self->fd, IOCTL_BLK_SNAP_SNAPSHOT_APPEND_STORAGE, &a));
	EXPECT_EQ(-EINVAL, append_storage(self->fd, &id, PART_B2, 0, 0));
	EXPECT_EQ(-EINVAL, append_storage(self->fd, &id, PART_B2, b2_sectors - 8, 16));
	EXPECT_EQ(-EINVAL, append_storage(self->fd, &id, PART_B2, ~0ULL - 7, 16));
	ASSERT_EQ(0, append_storage(self->fd, &id, PART_B2, 0, 64 << 11));
	EXPECT_EQ(-EINVAL, append_storage(self->fd, &id, PART_B2, 1000, 8));
	EXPECT_EQ(0, append_storage(self->fd, &id, PART_B2, 64 << 11, 8));
	ASSERT_EQ(0, take(self->fd, &id));
	EXPECT_EQ(-EALREADY, take(self->fd, &id));
	/* Appending after TAKE is fine. */
	EXPECT_EQ(0, append_storage(self->fd, &id, PART_B2, 80 << 11, 1 << 11));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
}

/*
 * Storage is one space module-wide, in whole-disk sectors: a range given to
 * one snapshot cannot be given to another, through the partition or through
 * the whole disk; an image is never storage.
 */
TEST_F_TIMEOUT(snap, storage_overlap_is_checked_module_wide, 60)
{
	struct blk_snap_uuid ida, idb;
	struct blk_snap_block_range r = { 0, 2048 };
	struct blk_snap_snapshot_append_storage a = { .count = 1, .ranges = &r };
	struct blk_snap_dev disk_b, img_dev;
	unsigned long long b2_start = 0;
	char img[160];
	struct stat st;
	FILE *f;

	ASSERT_EQ(0, dev_id(DISK_B, &disk_b));
	f = fopen("/sys/class/block/vdb2/start", "r");
	ASSERT_NE(NULL, f);
	ASSERT_EQ(1, fscanf(f, "%llu", &b2_start));
	fclose(f);
	ASSERT_EQ(0, snapshot_create(self->fd, &self->a, 1, &ida));
	ASSERT_EQ(0, snapshot_create(self->fd, &self->b1, 1, &idb));
	ASSERT_EQ(0, append_storage(self->fd, &ida, PART_B2, 0, 2048));
	/* The same sectors for B: through vdb2, and through vdb. */
	EXPECT_EQ(-EINVAL, append_storage(self->fd, &idb, PART_B2, 1024, 2048));
	EXPECT_EQ(-EINVAL, append_storage(self->fd, &idb, DISK_B, b2_start + 2040, 8));
	/* Next to them is fine, either way. */
	EXPECT_EQ(0, append_storage(self->fd, &idb, PART_B2, 2048, 2048));
	EXPECT_EQ(0, append_storage(self->fd, &idb, DISK_B, b2_start + 4096, 2048));
	/* A's own second range may not reuse B's through the disk either. */
	EXPECT_EQ(-EINVAL, append_storage(self->fd, &ida, PART_B2, 4096, 8));
	ASSERT_EQ(0, take(self->fd, &ida));
	/* An image as storage would copy on write into itself. */
	ASSERT_EQ(0, image_path(self->fd, &ida, &self->a, img, sizeof(img)));
	ASSERT_EQ(0, stat(img, &st));
	img_dev.mj = major(st.st_rdev);
	img_dev.mn = minor(st.st_rdev);
	a.id = idb;
	a.dev_id = img_dev;
	r.sector_offset = 1 << 20;
	EXPECT_EQ(-EINVAL, xioctl(self->fd, IOCTL_BLK_SNAP_SNAPSHOT_APPEND_STORAGE, &a));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &ida));
	/* A's ranges are free again once A is gone. */
	EXPECT_EQ(0, append_storage(self->fd, &idb, PART_B2, 0, 2048));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &idb));
}

/* One full cycle on vda with writers; returns blocks that differ. */
static long cycle(struct __test_metadata *_metadata, FIXTURE_DATA(snap) *self,
		  unsigned int seed)
{
	struct blk_snap_uuid id;
	uint64_t *before, *after;
	size_t nb = 0, na = 0;
	char img[160];
	pthread_t th[3];
	struct writer w[3];
	long diff;

	before = checksums(DISK_A, &nb);
	if (!before)
		return -100;
	if (snapshot_create(self->fd, &self->a, 1, &id))
		return -101;
	if (append_storage(self->fd, &id, PART_B2, 0, 140 << 11))
		return -102;
	if (take(self->fd, &id))
		return -103;
	for (int i = 0; i < 3; i++) {
		w[i] = (struct writer){ DISK_A, seed * 10 + i, 64ULL << 20, 300, 0 };
		pthread_create(&th[i], NULL, random_writer, &w[i]);
	}
	/* And a sequential overwrite of 16 MiB. */
	if (fill(DISK_A, 100ULL << 20, 16 << 20, seed + 100))
		return -104;
	for (int i = 0; i < 3; i++) {
		pthread_join(th[i], NULL);
		if (w[i].failed)
			return -105;
	}
	if (image_path(self->fd, &id, &self->a, img, sizeof(img)))
		return -106;
	after = checksums(img, &na);
	if (!after)
		return -107;
	diff = differing(before, nb, after, na);
	/* No corrupted event: the storage (140 MiB) covers what changed. */
	while (next_event(self->fd, &id, 0, self->ev) == 0)
		if (self->ev->code == blk_snap_event_code_corrupted)
			diff = -110;
	/* The original did change. */
	free(after);
	after = checksums(DISK_A, &na);
	if (!after || differing(before, nb, after, na) <= 0)
		diff = -108;
	free(before);
	free(after);
	if (snapshot_destroy(self->fd, &id))
		return -109;
	return diff;
}

TEST_F_TIMEOUT(snap, image_holds_data_at_take_under_writers, 180)
{
	ASSERT_EQ(0, fill(DISK_A, 0, 256ULL << 20, 1));
	EXPECT_EQ(0, cycle(_metadata, self, 2));
	/* A second cycle, over what the first left behind. */
	EXPECT_EQ(0, cycle(_metadata, self, 3));
}

TEST_F_TIMEOUT(snap, two_devices_one_instant, 120)
{
	struct blk_snap_uuid id;
	struct blk_snap_dev both[2] = { self->a, self->b1 };
	uint64_t *ba, *bb, *ia, *ib;
	size_t na = 0, nb = 0, nia = 0, nib = 0;
	char img_a[160], img_b[160];

	ASSERT_EQ(0, fill(DISK_A, 0, 32 << 20, 5));
	ASSERT_EQ(0, fill(PART_B1, 0, 32 << 20, 6));
	ba = checksums(DISK_A, &na);
	bb = checksums(PART_B1, &nb);
	ASSERT_NE(NULL, ba);
	ASSERT_NE(NULL, bb);
	ASSERT_EQ(0, snapshot_create(self->fd, both, 2, &id));
	ASSERT_EQ(0, append_storage(self->fd, &id, PART_B2, 0, 100 << 11));
	ASSERT_EQ(0, take(self->fd, &id));
	ASSERT_EQ(0, fill(DISK_A, 0, 16 << 20, 7));
	ASSERT_EQ(0, fill(PART_B1, 8 << 20, 16 << 20, 8));
	ASSERT_EQ(0, image_path(self->fd, &id, &self->a, img_a, sizeof(img_a)));
	ASSERT_EQ(0, image_path(self->fd, &id, &self->b1, img_b, sizeof(img_b)));
	EXPECT_NE(0, strcmp(img_a, img_b));
	ia = checksums(img_a, &nia);
	ib = checksums(img_b, &nib);
	ASSERT_NE(NULL, ia);
	ASSERT_NE(NULL, ib);
	EXPECT_EQ(0, differing(ba, na, ia, nia));
	EXPECT_EQ(0, differing(bb, nb, ib, nib));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
	free(ba), free(bb), free(ia), free(ib);
}

TEST_F_TIMEOUT(snap, image_writes_stay_in_the_snapshot, 120)
{
	struct blk_snap_uuid id;
	uint64_t *before, *after;
	size_t nb = 0, na = 0;
	char img[160];
	unsigned char *w, *r;
	int ifd;

	ASSERT_EQ(0, fill(DISK_A, 0, 16 << 20, 9));
	before = checksums(DISK_A, &nb);
	ASSERT_NE(NULL, before);
	ASSERT_EQ(0, taken_snapshot(self->fd, &self->a, PART_B2, 100 << 11, &id, img));
	ASSERT_EQ(0, posix_memalign((void **)&w, 4096, 1 << 20));
	ASSERT_EQ(0, posix_memalign((void **)&r, 4096, 1 << 20));
	pattern(w, 1 << 20, 0, 42);
	ifd = open(img, O_RDWR | O_DIRECT);
	ASSERT_LE(0, ifd);
	ASSERT_EQ(1 << 20, pwrite(ifd, w, 1 << 20, (5 << 20) + 4096 * 3));
	ASSERT_EQ(0, fsync(ifd));
	ASSERT_EQ(1 << 20, pread(ifd, r, 1 << 20, (5 << 20) + 4096 * 3));
	EXPECT_EQ(0, memcmp(w, r, 1 << 20));
	close(ifd);
	after = checksums(DISK_A, &na);
	ASSERT_NE(NULL, after);
	EXPECT_EQ(0, differing(before, nb, after, na));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
	free(before), free(after), free(w), free(r);
}

/*
 * Chunks copied by writes to the original stay in memory (the cache of
 * chunk_maximum_in_cache): image reads of them give the data of TAKE, an
 * image write replaces it in the image and not in a stale cached copy, and
 * with a cache of 2 chunks the ones pushed out are read from storage.
 */
TEST_F_TIMEOUT(snap, cached_chunks_read_back_and_follow_image_writes, 120)
{
	const uint64_t chunk = 256 << 10;
	struct blk_snap_uuid id;
	uint64_t *before, *after;
	size_t nb = 0, na = 0;
	unsigned char *w, *r;
	char img[160];
	int ifd;

	set_param("chunk_maximum_in_cache", 2);
	ASSERT_EQ(0, fill(DISK_A, 0, 8 << 20, 51));
	before = checksums(DISK_A, &nb);
	ASSERT_NE(NULL, before);
	ASSERT_EQ(0, taken_snapshot(self->fd, &self->a, PART_B2, 100 << 11, &id, img));
	/* Copies of chunks 0..7, in order: 6 and 7 stay cached. */
	for (int i = 0; i < 8; i++)
		ASSERT_EQ(0, fill(DISK_A, i * chunk + 4096, 4096, 52));
	after = checksums(img, &na);
	ASSERT_NE(NULL, after);
	EXPECT_EQ(0, differing(before, nb, after, na));
	/* An image write into cached chunk 7, then into evicted chunk 1. */
	ASSERT_EQ(0, posix_memalign((void **)&w, 4096, 8192));
	ASSERT_EQ(0, posix_memalign((void **)&r, 4096, 8192));
	ifd = open(img, O_RDWR | O_DIRECT);
	ASSERT_LE(0, ifd);
	for (int i = 7; i >= 1; i -= 6) {
		pattern(w, 8192, i * chunk + 8192, 53);
		ASSERT_EQ(8192, pwrite(ifd, w, 8192, i * chunk + 8192));
		ASSERT_EQ(8192, pread(ifd, r, 8192, i * chunk + 8192));
		EXPECT_EQ(0, memcmp(w, r, 8192));
		/* The rest of the chunk still holds the data of TAKE. */
		EXPECT_EQ(0, same_as_pattern(img, i * chunk + 16384, chunk - 16384, 51));
	}
	close(ifd);
	/* The original never sees image writes. */
	EXPECT_EQ(0, same_as_pattern(DISK_A, 7 * chunk + 8192, 8192, 51));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
	set_param("chunk_maximum_in_cache", 32);
	free(before), free(after), free(w), free(r);
}

TEST_F_TIMEOUT(snap, cbt_shows_changes_since_last_snapshot, 60)
{
	struct blk_snap_uuid id;
	struct blk_snap_cbt_info info[4];
	struct blk_snap_tracker_collect tc = { .count = 4, .cbt_info_array = info };
	unsigned char map[4096];
	struct blk_snap_tracker_read_cbt_bitmap rd = {
		.dev_id = self->a, .offset = 0, .length = sizeof(map), .buff = map,
	};
	struct blk_snap_block_range dirty = { (200ULL << 20) / 512, 1 };
	struct blk_snap_tracker_mark_dirty_blocks md = { .count = 1, .dirty_blocks_array = &dirty };
	char img[160];
	struct stat st;
	int n;

	ASSERT_EQ(0, snapshot_create(self->fd, &self->a, 1, &id));
	ASSERT_EQ(0, append_storage(self->fd, &id, PART_B2, 0, 100 << 11));
	ASSERT_EQ(0, take(self->fd, &id));
	ASSERT_EQ(0, snapshot_destroy(self->fd, &id));
	/* Blocks of 64 KiB: write into blocks 10, 11 (straddling) and 300. */
	ASSERT_EQ(0, fill(DISK_A, 10 * 65536 + 61440, 8192, 11));
	ASSERT_EQ(0, fill(DISK_A, 300 * 65536, 4096, 12));
	ASSERT_EQ(0, snapshot_create(self->fd, &self->a, 1, &id));
	ASSERT_EQ(0, append_storage(self->fd, &id, PART_B2, 0, 100 << 11));
	ASSERT_EQ(0, take(self->fd, &id));
	ASSERT_EQ(0, xioctl(self->fd, IOCTL_BLK_SNAP_TRACKER_COLLECT, &tc));
	ASSERT_EQ(1, tc.count);
	ASSERT_EQ(2, info[0].snap_number);
	n = xioctl(self->fd, IOCTL_BLK_SNAP_TRACKER_READ_CBT_MAP, &rd);
	ASSERT_EQ(4096, n);
	for (int i = 0; i < 4096; i++) {
		int want = i == 10 || i == 11 || i == 300;

		EXPECT_EQ(want, map[i] > 1) {
			TH_LOG("block %d holds %d", i, map[i]);
		}
	}
	/* Offsets: the tail, past the end. */
	rd.offset = 4000;
	EXPECT_EQ(96, xioctl(self->fd, IOCTL_BLK_SNAP_TRACKER_READ_CBT_MAP, &rd));
	rd.offset = 4096;
	EXPECT_EQ(0, xioctl(self->fd, IOCTL_BLK_SNAP_TRACKER_READ_CBT_MAP, &rd));
	rd.offset = 0xffffffff;
	EXPECT_EQ(0, xioctl(self->fd, IOCTL_BLK_SNAP_TRACKER_READ_CBT_MAP, &rd));
	/* MARK_DIRTY on the original shows in the map read now. */
	rd.offset = 0;
	md.dev_id = self->a;
	ASSERT_EQ(0, xioctl(self->fd, IOCTL_BLK_SNAP_TRACKER_MARK_DIRTY_BLOCKS, &md));
	ASSERT_EQ(4096, xioctl(self->fd, IOCTL_BLK_SNAP_TRACKER_READ_CBT_MAP, &rd));
	EXPECT_EQ(2, map[3200]);
	/* ... and on the image, it marks the original's tracker. */
	ASSERT_EQ(0, image_path(self->fd, &id, &self->a, img, sizeof(img)));
	ASSERT_EQ(0, stat(img, &st));
	md.dev_id.mj = major(st.st_rdev);
	md.dev_id.mn = minor(st.st_rdev);
	dirty.sector_offset = (100ULL << 20) / 512;
	ASSERT_EQ(0, xioctl(self->fd, IOCTL_BLK_SNAP_TRACKER_MARK_DIRTY_BLOCKS, &md));
	ASSERT_EQ(4096, xioctl(self->fd, IOCTL_BLK_SNAP_TRACKER_READ_CBT_MAP, &rd));
	EXPECT_EQ(2, map[1600]);
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
}

struct bg_fill {
	const char *path;
	uint64_t off, len;
	unsigned int seed;
	int ret;
};

static void *bg_fill_fn(void *arg)
{
	struct bg_fill *f = arg;

	f->ret = fill(f->path, f->off, f->len, f->seed);
	return NULL;
}

TEST_F_TIMEOUT(snap, storage_appended_in_time_keeps_image_whole, 300)
{
	struct blk_snap_uuid id;
	uint64_t *before, *after;
	size_t nb = 0, na = 0;
	char img[160];
	pthread_t th;
	struct bg_fill f = { DISK_A, 20 << 20, 8 << 20, 21, -1 };
	int got_low = 0;

	set_param("diff_storage_minimum", 4096);	/* 2 MiB */
	set_param("diff_storage_wait_ms", 20000);
	ASSERT_EQ(0, fill(DISK_A, 0, 32 << 20, 20));
	before = checksums(DISK_A, &nb);
	ASSERT_NE(NULL, before);
	ASSERT_EQ(0, snapshot_create(self->fd, &self->a, 1, &id));
	ASSERT_EQ(0, next_event(self->fd, &id, 1000, self->ev));	/* the first request */
	ASSERT_EQ(0, append_storage(self->fd, &id, PART_B2, 0, 1 << 11));	/* 1 MiB */
	ASSERT_EQ(0, take(self->fd, &id));
	pthread_create(&th, NULL, bg_fill_fn, &f);	/* needs 8 MiB */
	for (uint64_t next = 1 << 11; next < (16 << 11);) {
		int ret = next_event(self->fd, &id, 15000, self->ev);

		if (ret == -ENOENT)
			break;
		ASSERT_EQ(0, ret);
		ASSERT_EQ(blk_snap_event_code_low_free_space, self->ev->code);
		got_low++;
		ASSERT_EQ(0, append_storage(self->fd, &id, PART_B2, next, 4 << 11));
		next += 4 << 11;
	}
	pthread_join(th, NULL);
	ASSERT_EQ(0, f.ret);
	EXPECT_LT(0, got_low);
	ASSERT_EQ(0, image_path(self->fd, &id, &self->a, img, sizeof(img)));
	after = checksums(img, &na);
	ASSERT_NE(NULL, after);
	EXPECT_EQ(0, differing(before, nb, after, na));
	/* No corrupted event came. */
	while (next_event(self->fd, &id, 0, self->ev) == 0)
		EXPECT_EQ(blk_snap_event_code_low_free_space, self->ev->code);
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
	free(before), free(after);
}

TEST_F_TIMEOUT(snap, storage_exhausted_corrupts_image_not_original, 120)
{
	struct blk_snap_uuid id;
	char img[160];
	unsigned char *buf;
	int ifd, corrupted = 0;

	set_param("diff_storage_wait_ms", 500);
	ASSERT_EQ(0, snapshot_create(self->fd, &self->a, 1, &id));
	ASSERT_EQ(0, append_storage(self->fd, &id, PART_B2, 0, 1 << 11));	/* 1 MiB */
	ASSERT_EQ(0, take(self->fd, &id));
	/* 8 MiB of writes need 8 MiB of storage: they still all succeed. */
	ASSERT_EQ(0, fill(DISK_A, 40 << 20, 8 << 20, 31));
	while (next_event(self->fd, &id, 2000, self->ev) == 0) {
		if (self->ev->code == blk_snap_event_code_corrupted) {
			struct blk_snap_event_corrupted *c = (void *)self->ev->data;

			EXPECT_EQ(self->a.mj, c->orig_dev_id.mj);
			EXPECT_EQ(self->a.mn, c->orig_dev_id.mn);
			EXPECT_EQ(ENOSPC, c->err_code);
			corrupted++;
		}
	}
	EXPECT_EQ(1, corrupted);
	/* The original has the new data. */
	EXPECT_EQ(0, same_as_pattern(DISK_A, 40 << 20, 8 << 20, 31));
	ASSERT_EQ(0, posix_memalign((void **)&buf, 4096, 1 << 20));
	/* The image fails reads. */
	ASSERT_EQ(0, image_path(self->fd, &id, &self->a, img, sizeof(img)));
	ifd = open(img, O_RDONLY | O_DIRECT);
	ASSERT_LE(0, ifd);
	errno = 0;
	EXPECT_EQ(-1, pread(ifd, buf, 4096, 0));
	EXPECT_EQ(EIO, errno);
	close(ifd);
	/* The original stays writable. */
	ASSERT_EQ(0, fill(DISK_A, 60 << 20, 1 << 20, 32));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
	free(buf);
}

TEST_F_TIMEOUT(snap, same_chunks_from_many_writers_and_large_writes, 120)
{
	struct blk_snap_uuid id;
	uint64_t *before, *after;
	size_t nb = 0, na = 0;
	char img[160];
	pthread_t th[8];
	struct writer w[8];
	unsigned char *big;
	int dfd;

	ASSERT_EQ(0, fill(DISK_A, 0, 64 << 20, 51));
	before = checksums(DISK_A, &nb);
	ASSERT_NE(NULL, before);
	ASSERT_EQ(0, snapshot_create(self->fd, &self->a, 1, &id));
	ASSERT_EQ(0, append_storage(self->fd, &id, PART_B2, 0, 140 << 11));
	ASSERT_EQ(0, take(self->fd, &id));
	/* Eight writers on the same 1 MiB: four chunks, each copied once. */
	for (int i = 0; i < 8; i++) {
		w[i] = (struct writer){ DISK_A, 60 + i, 1 << 20, 200, 0 };
		pthread_create(&th[i], NULL, random_writer, &w[i]);
	}
	/* One 16 MiB write across 64 chunks at once. */
	ASSERT_EQ(0, posix_memalign((void **)&big, 4096, 16 << 20));
	pattern(big, 16 << 20, 32 << 20, 70);
	dfd = open(DISK_A, O_RDWR | O_DIRECT);
	ASSERT_LE(0, dfd);
	EXPECT_EQ(16 << 20, pwrite(dfd, big, 16 << 20, 32 << 20));
	close(dfd);
	for (int i = 0; i < 8; i++) {
		pthread_join(th[i], NULL);
		EXPECT_EQ(0, w[i].failed);
	}
	ASSERT_EQ(0, image_path(self->fd, &id, &self->a, img, sizeof(img)));
	after = checksums(img, &na);
	ASSERT_NE(NULL, after);
	EXPECT_EQ(0, differing(before, nb, after, na));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
	free(before), free(after), free(big);
}

TEST_F_TIMEOUT(snap, image_held_open_across_destroy, 60)
{
	struct blk_snap_uuid id;
	char img[160];
	unsigned char *buf;
	int ifd;

	ASSERT_EQ(0, posix_memalign((void **)&buf, 4096, 4096));
	ASSERT_EQ(0, taken_snapshot(self->fd, &self->a, PART_B2, 16 << 11, &id, img));
	ifd = open(img, O_RDONLY | O_DIRECT);
	ASSERT_LE(0, ifd);
	ASSERT_EQ(4096, pread(ifd, buf, 4096, 0));
	/*
	 * The image goes while open: it reads as empty (capacity 0) or fails,
	 * and closing it afterwards is clean (KASAN watches the release).
	 */
	ASSERT_EQ(0, snapshot_destroy(self->fd, &id));
	EXPECT_GE(0, pread(ifd, buf, 4096, 0));
	EXPECT_EQ(0, close(ifd));
	free(buf);
}

struct bg_write {
	const char *path;
	uint64_t off, len;
	unsigned int seed;
	volatile int done;
	int ret;
};

/* One large O_DIRECT write, as a database or a VM image would issue it. */
static void *bg_write_fn(void *arg)
{
	struct bg_write *b = arg;
	unsigned char *buf;
	int fd = open(b->path, O_RDWR | O_DIRECT);

	b->ret = -1;
	if (fd >= 0 && !posix_memalign((void **)&buf, 4096, b->len)) {
		pattern(buf, b->len, b->off, b->seed);
		if (pwrite(fd, buf, b->len, b->off) == (ssize_t)b->len)
			b->ret = 0;
		free(buf);
	}
	if (fd >= 0)
		close(fd);
	b->done = 1;
	return NULL;
}

/*
 * A snapshot starved of storage (its copies wait for APPEND_STORAGE) does
 * not slow another snapshot: the other's writes complete and its image stays
 * whole while the first still waits; DESTROY of the starved one ends its
 * waits at once and lets its writes through.
 */
TEST_F_TIMEOUT(snap, starved_snapshot_never_slows_another, 300)
{
	struct blk_snap_uuid ida, idb;
	struct bg_write wa = { DISK_A, 64 << 20, 32 << 20, 81, 0, -1 };
	uint64_t *before, *after;
	size_t nb = 0, na = 0;
	char img[160];
	pthread_t th;
	int64_t t0, destroy_ms;

	/* The wait would outlast the test: only DESTROY can end it. */
	set_param("diff_storage_wait_ms", 1000000);
	ASSERT_EQ(0, fill(PART_B1, 0, 32 << 20, 82));
	before = checksums(PART_B1, &nb);
	ASSERT_NE(NULL, before);

	/* A: 1 MiB of storage for a 32 MiB write. */
	ASSERT_EQ(0, snapshot_create(self->fd, &self->a, 1, &ida));
	ASSERT_EQ(0, next_event(self->fd, &ida, 1000, self->ev));	/* the first request */
	ASSERT_EQ(0, append_storage(self->fd, &ida, PART_B2, 0, 1 << 11));
	ASSERT_EQ(0, take(self->fd, &ida));
	ASSERT_EQ(0, pthread_create(&th, NULL, bg_write_fn, &wa));
	/* Copies began (the first allocation asks for more storage)... */
	ASSERT_EQ(0, next_event(self->fd, &ida, 60000, self->ev));
	EXPECT_EQ(blk_snap_event_code_low_free_space, self->ev->code);
	/* ...and, a little later, all of A's copy slots wait for storage. */
	usleep(500000);

	/* B, on another device with storage enough, works meanwhile. */
	ASSERT_EQ(0, snapshot_create(self->fd, &self->b1, 1, &idb));
	ASSERT_EQ(0, append_storage(self->fd, &idb, PART_B2, 8 << 11, 64 << 11));
	ASSERT_EQ(0, take(self->fd, &idb));
	ASSERT_EQ(0, fill(PART_B1, 0, 16 << 20, 83));
	EXPECT_EQ(0, wa.done) {
		TH_LOG("A's write finished before B's: A was never starved");
	}
	ASSERT_EQ(0, image_path(self->fd, &idb, &self->b1, img, sizeof(img)));
	after = checksums(img, &na);
	ASSERT_NE(NULL, after);
	EXPECT_EQ(0, differing(before, nb, after, na));

	/* DESTROY of A returns at once and lets A's write through. */
	t0 = now_ns();
	EXPECT_EQ(0, snapshot_destroy(self->fd, &ida));
	destroy_ms = (now_ns() - t0) / 1000000;
	TH_LOG("DESTROY of the starved snapshot took %lld ms", (long long)destroy_ms);
	EXPECT_GT(10000, destroy_ms);
	pthread_join(th, NULL);
	EXPECT_EQ(0, wa.ret);
	EXPECT_EQ(0, same_as_pattern(DISK_A, 64 << 20, 32 << 20, 81));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &idb));
	free(before), free(after);
}

struct checker {
	const char *img;
	unsigned int seed;		/* of the data at TAKE */
	volatile int *stop;
	long good, failed, wrong;
};

/* Reads random 64 KiB blocks of the image; counts every wrong byte block. */
static void *image_checker(void *arg)
{
	struct checker *c = arg;
	unsigned int r = c->seed * 7 + (unsigned int)(uintptr_t)&r;
	unsigned char *buf, *want;
	int fd = open(c->img, O_RDONLY | O_DIRECT);

	if (fd < 0 || posix_memalign((void **)&buf, 4096, 1 << 16) ||
	    posix_memalign((void **)&want, 4096, 1 << 16)) {
		c->failed = -1;
		return NULL;
	}
	while (!*c->stop) {
		uint64_t off = (uint64_t)(rand_r(&r) % 1024) << 16;	/* within 64 MiB */

		if (pread(fd, buf, 1 << 16, off) != 1 << 16) {
			c->failed++;
			continue;
		}
		pattern(want, 1 << 16, off, c->seed);
		if (memcmp(buf, want, 1 << 16))
			c->wrong++;
		else
			c->good++;
	}
	close(fd);
	free(buf);
	free(want);
	return NULL;
}

/*
 * Image readers and original writers run through storage exhaustion (the
 * image goes corrupted) and DESTROY: a read may fail, but every read that
 * succeeds returns the data of TAKE.
 */
TEST_F_TIMEOUT(snap, image_reads_never_return_data_written_after_take, 300)
{
	struct blk_snap_uuid id;
	volatile int stop = 0;
	struct checker c[3];
	struct writer w[2];
	pthread_t tc[3], tw[2];
	char img[160];
	long good = 0, wrong = 0;
	int corrupted = 0;

	set_param("diff_storage_wait_ms", 100);
	ASSERT_EQ(0, fill(DISK_A, 0, 64 << 20, 95));
	ASSERT_EQ(0, taken_snapshot(self->fd, &self->a, PART_B2, 4 << 11, &id, img));
	for (int i = 0; i < 3; i++) {
		c[i] = (struct checker){ img, 95, &stop, 0, 0, 0 };
		ASSERT_EQ(0, pthread_create(&tc[i], NULL, image_checker, &c[i]));
	}
	for (int i = 0; i < 2; i++) {
		w[i] = (struct writer){ DISK_A, 96 + i, 64 << 20, 400, 0 };
		ASSERT_EQ(0, pthread_create(&tw[i], NULL, random_writer, &w[i]));
	}
	/* 4 MiB of storage cannot hold what the writers change. */
	while (!corrupted && next_event(self->fd, &id, 60000, self->ev) == 0)
		corrupted = self->ev->code == blk_snap_event_code_corrupted;
	EXPECT_EQ(1, corrupted);
	usleep(200000);
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
	usleep(200000);
	stop = 1;
	for (int i = 0; i < 2; i++) {
		pthread_join(tw[i], NULL);
		EXPECT_EQ(0, w[i].failed);
	}
	for (int i = 0; i < 3; i++) {
		pthread_join(tc[i], NULL);
		ASSERT_LE(0, c[i].failed);
		good += c[i].good;
		wrong += c[i].wrong;
	}
	TH_LOG("%ld reads returned the data of TAKE, %ld other data", good, wrong);
	EXPECT_LT(0, good);
	EXPECT_EQ(0, wrong);
}

/*
 * Writes in flight at TAKE, on a dm-delay device over vda that delays
 * writes by 100 ms (reads go straight through): at TAKE, writes are always
 * in flight.  Each "whole" writer overwrites its own 1 MiB region, which
 * starts half-way into a 256 KiB chunk, with one O_DIRECT write per round,
 * every word stamped with the round.  "Edge" writers keep writing just
 * outside the region, in its first and last chunks, so that right after
 * TAKE those chunks are copied while a whole write may be in flight.  In
 * every image, each region must hold one round: a write racing TAKE is
 * wholly before the snapshot or wholly after it.  The device is tracked
 * before the writers start: the drain at TAKE covers the writes that the
 * tracker's filter saw, not those already below it when it was attached.
 */
#define RACE_DM "blksnap_race"
#define RACE_REGIONS 4
#define RACE_CHUNK (256 << 10)
#define RACE_LEN (1 << 20)

struct race {
	const char *path;
	int region;
	int edge;			/* an edge writer, not a whole writer */
	volatile int *stop;
	int failed;
	long rounds;
};

static uint64_t race_base(int region)
{
	return (128ULL << 20) + (uint64_t)region * (4 << 20);
}

static void *race_writer(void *arg)
{
	struct race *r = arg;
	uint64_t *buf;
	uint64_t base = race_base(r->region);
	int fd = open(r->path, O_RDWR | O_DIRECT);

	if (fd < 0 || posix_memalign((void **)&buf, 4096, RACE_LEN)) {
		r->failed = 1;
		return NULL;
	}
	while (!*r->stop) {
		uint64_t stamp = ((uint64_t)r->region << 40) | (uint64_t)++r->rounds;
		size_t len = r->edge ? 4096 : RACE_LEN;
		uint64_t off = base + RACE_CHUNK / 2 + RACE_LEN;

		for (size_t i = 0; i < len / 8; i++)
			buf[i] = stamp;
		if (!r->edge)
			off = base + RACE_CHUNK / 2;
		else if (r->rounds & 1)
			off = base + (r->rounds % 32) * 4096;
		if (pwrite(fd, buf, len, off) != (ssize_t)len)
			r->failed = 1;
	}
	close(fd);
	free(buf);
	return NULL;
}

/* Returns 0 if the region holds one round throughout, else the words that differ. */
static long race_torn(int fd, int region, uint64_t *buf)
{
	long torn = 0;

	if (pread(fd, buf, RACE_LEN, race_base(region) + RACE_CHUNK / 2) != RACE_LEN)
		return -1;
	for (size_t i = 0; i < RACE_LEN / 8; i++)
		torn += buf[i] != buf[0];
	if (torn)
		printf("# region %d: word 0 %#llx, word 1 %#llx\n", region,
		       (unsigned long long)buf[0], (unsigned long long)buf[1]);
	return torn;
}

TEST_F_TIMEOUT(snap, write_racing_take_is_wholly_before_or_after, 300)
{
	struct race r[2 * RACE_REGIONS];
	pthread_t th[2 * RACE_REGIONS];
	volatile int stop = 0;
	struct blk_snap_uuid tracked;
	struct blk_snap_dev d;
	uint64_t *buf, sectors;
	long torn = 0;
	char img[160], dm[64], table[128];
	int fd;

	fd = open(DISK_A, O_RDONLY);
	ASSERT_LE(0, fd);
	sectors = dev_size(fd) / 512;
	close(fd);
	dm_remove(RACE_DM);
	snprintf(table, sizeof(table), "%s 0 0 %s 0 100", DISK_A, DISK_A);
	if (dm_create(RACE_DM, "delay", table, sectors, dm, sizeof(dm)))
		SKIP(return, "no dm-delay device: %s", strerror(errno));
	ASSERT_EQ(0, dev_id(dm, &d));
	ASSERT_EQ(0, posix_memalign((void **)&buf, 4096, RACE_LEN));
	/*
	 * Each region holds one value (round 0) before any writer starts: a
	 * region whose first write comes after the first TAKE is then whole
	 * in that image too. Left with an earlier test's pattern (a value per
	 * word), it read as torn on two CPUs, where TAKE can come before a
	 * writer's first write.
	 */
	fd = open(dm, O_RDWR | O_DIRECT);
	ASSERT_LE(0, fd);
	for (int g = 0; g < RACE_REGIONS; g++) {
		for (size_t i = 0; i < RACE_LEN / 8; i++)
			buf[i] = (uint64_t)g << 40;
		ASSERT_EQ(RACE_LEN, pwrite(fd, buf, RACE_LEN, race_base(g) + RACE_CHUNK / 2));
	}
	ASSERT_EQ(0, fsync(fd));
	close(fd);
	/* Tracked from now on (the tracker outlives the snapshot). */
	ASSERT_EQ(0, snapshot_create(self->fd, &d, 1, &tracked));
	ASSERT_EQ(0, snapshot_destroy(self->fd, &tracked));
	for (int i = 0; i < 2 * RACE_REGIONS; i++) {
		r[i] = (struct race){ dm, i % RACE_REGIONS, i >= RACE_REGIONS, &stop, 0, 0 };
		ASSERT_EQ(0, pthread_create(&th[i], NULL, race_writer, &r[i]));
	}
	for (int round = 0; round < 8; round++) {
		struct blk_snap_uuid id;
		int ifd;

		ASSERT_EQ(0, snapshot_create(self->fd, &d, 1, &id));
		ASSERT_EQ(0, append_storage(self->fd, &id, PART_B2, 0, 100 << 11));
		usleep(20000 + round * 13000);
		ASSERT_EQ(0, take(self->fd, &id));
		/* Copies of the edge chunks, and of the whole regions. */
		usleep(300000);
		ASSERT_EQ(0, image_path(self->fd, &id, &d, img, sizeof(img)));
		ifd = open(img, O_RDONLY | O_DIRECT);
		ASSERT_LE(0, ifd);
		for (int g = 0; g < RACE_REGIONS; g++) {
			long t = race_torn(ifd, g, buf);

			if (t)
				TH_LOG("round %d: region %d torn (%ld words differ)", round, g, t);
			torn += t != 0;
		}
		close(ifd);
		ASSERT_EQ(0, snapshot_destroy(self->fd, &id));
	}
	stop = 1;
	for (int i = 0; i < 2 * RACE_REGIONS; i++) {
		pthread_join(th[i], NULL);
		EXPECT_EQ(0, r[i].failed);
		EXPECT_LT(0, r[i].rounds);
	}
	free(buf);
	EXPECT_EQ(0, tracker_remove(self->fd, &d));
	EXPECT_EQ(0, dm_remove(RACE_DM));
	EXPECT_EQ(0, torn);
}

/* Leaves a taken snapshot with held state for the unload check. */
TEST_F_TIMEOUT(snap, zz_leave_taken_snapshot_for_unload, 60)
{
	struct blk_snap_uuid id;

	ASSERT_EQ(0, snapshot_create(self->fd, &self->a, 1, &id));
	ASSERT_EQ(0, append_storage(self->fd, &id, PART_B2, 0, 100 << 11));
	ASSERT_EQ(0, take(self->fd, &id));
	ASSERT_EQ(0, fill(DISK_A, 0, 4 << 20, 41));
	close(self->fd);
	self->fd = -1;
}

TEST_HARNESS_MAIN
