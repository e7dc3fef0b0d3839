// SPDX-License-Identifier: GPL-2.0
/*
 * Devices as they come: 4Kn originals and storage (4096-byte logical
 * blocks), and an original whose size is no whole number of pages or
 * chunks.  Every image is checked against the original's data at TAKE.
 *
 * Disks: /dev/vdf (4Kn, original), /dev/vdg (4Kn, storage), /dev/vdh
 * (512-byte blocks, 64 MiB + 3 sectors), /dev/vda (512-byte original) and
 * /dev/vdb2 (512-byte storage).  A one-stripe dm "striped" device over
 * /dev/vdh stands for a RAID whose minimum I/O is larger than a chunk.
 */
#include <stdlib.h>

#include "blksnap_util.h"
#include "blksnap_data.h"
#include "blksnap_dm.h"
#include "kselftest_harness.h"

#define ORIG_4K "/dev/vdf"
#define STORE_4K "/dev/vdg"
#define ODD "/dev/vdh"
#define ODD_BYTES ((64ULL << 20) + 3 * 512)

#define STRIPED "blksnap_striped"

/* Reads attribute NAME of image IMG (a /dev path) from sysfs; -1 if none. */
static long long image_attr(const char *img, const char *name)
{
	char path[256];
	long long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/block/%s/blksnap/%s", strrchr(img, '/') + 1, name);
	f = fopen(path, "r");
	if (f) {
		if (fscanf(f, "%lld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

static int block_size(const char *path)
{
	int fd = open(path, O_RDONLY), bs = -1;

	if (fd >= 0) {
		if (ioctl(fd, BLKSSZGET, &bs))
			bs = -1;
		close(fd);
	}
	return bs;
}

FIXTURE(bs) {
	int fd;
	struct blk_snap_dev a, orig4k, odd;
};

FIXTURE_SETUP(bs)
{
	self->fd = open(BLK_SNAP_CTL, O_RDWR);
	if (self->fd < 0)
		SKIP(return, BLK_SNAP_CTL " missing: module not loaded");
	if (dev_id(DISK_A, &self->a) || dev_id(ORIG_4K, &self->orig4k) || dev_id(ODD, &self->odd) ||
	    access(STORE_4K, F_OK))
		SKIP(return, "test disks missing");
	/* The VM gives these disks the geometry the tests are about. */
	ASSERT_EQ(4096, block_size(ORIG_4K));
	ASSERT_EQ(4096, block_size(STORE_4K));
	ASSERT_EQ(512, block_size(ODD));
	blksnap_reset(self->fd);
	set_param("diff_storage_wait_ms", 5000);
}

FIXTURE_TEARDOWN(bs)
{
	if (self->fd >= 0) {
		blksnap_reset(self->fd);
		close(self->fd);
	}
	dm_remove(STRIPED);
}

/* A 4Kn original: its image has 4096-byte blocks and the data of TAKE. */
TEST_F_TIMEOUT(bs, four_k_original, 180)
{
	struct blk_snap_uuid id;
	uint64_t *before, *after;
	size_t nb = 0, na = 0;
	unsigned char *w;
	char img[160];
	int ifd;

	ASSERT_EQ(0, fill(ORIG_4K, 0, 32 << 20, 101));
	before = checksums(ORIG_4K, &nb);
	ASSERT_NE(NULL, before);
	ASSERT_EQ(0, snapshot_create(self->fd, &self->orig4k, 1, &id));
	ASSERT_EQ(0, append_storage(self->fd, &id, PART_B2, 0, 64 << 11));
	ASSERT_EQ(0, take(self->fd, &id));
	ASSERT_EQ(0, fill(ORIG_4K, 4 << 20, 16 << 20, 102));
	ASSERT_EQ(0, image_path(self->fd, &id, &self->orig4k, img, sizeof(img)));
	EXPECT_EQ(4096, block_size(img));
	after = checksums(img, &na);
	ASSERT_NE(NULL, after);
	EXPECT_EQ(0, differing(before, nb, after, na));
	/* An image write of one block stays in the image. */
	ASSERT_EQ(0, posix_memalign((void **)&w, 4096, 4096));
	pattern(w, 4096, 8192, 103);
	ifd = open(img, O_RDWR | O_DIRECT);
	ASSERT_LE(0, ifd);
	EXPECT_EQ(4096, pwrite(ifd, w, 4096, 8192));
	close(ifd);
	EXPECT_EQ(0, same_as_pattern(img, 8192, 4096, 103));
	EXPECT_EQ(0, same_as_pattern(ORIG_4K, 8192, 4096, 101));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
	free(before), free(after), free(w);
}

/*
 * 4Kn storage under a 512-byte original: ranges not aligned to 4096 bytes
 * are refused; 512-byte image reads and writes still work.
 */
TEST_F_TIMEOUT(bs, four_k_storage_under_512_byte_original, 180)
{
	struct blk_snap_uuid id;
	uint64_t *before, *after;
	size_t nb = 0, na = 0;
	unsigned char *w;
	char img[160];
	int ifd;

	ASSERT_EQ(0, fill(DISK_A, 0, 16 << 20, 111));
	before = checksums(DISK_A, &nb);
	ASSERT_NE(NULL, before);
	ASSERT_EQ(0, snapshot_create(self->fd, &self->a, 1, &id));
	EXPECT_EQ(-EINVAL, append_storage(self->fd, &id, STORE_4K, 1, 8));
	EXPECT_EQ(-EINVAL, append_storage(self->fd, &id, STORE_4K, 8, 4));
	ASSERT_EQ(0, append_storage(self->fd, &id, STORE_4K, 0, 48 << 11));
	ASSERT_EQ(0, take(self->fd, &id));
	ASSERT_EQ(0, fill(DISK_A, 0, 8 << 20, 112));
	ASSERT_EQ(0, image_path(self->fd, &id, &self->a, img, sizeof(img)));
	EXPECT_EQ(512, block_size(img));
	after = checksums(img, &na);
	ASSERT_NE(NULL, after);
	EXPECT_EQ(0, differing(before, nb, after, na));
	/* Single sectors, read from chunks stored on the 4Kn device. */
	for (int s = 1; s < 16; s += 3)
		EXPECT_EQ(0, same_as_pattern(img, (1 << 20) + s * 512, 512, 111));
	/* One-sector image writes, into a stored chunk and into a fresh one. */
	ASSERT_EQ(0, posix_memalign((void **)&w, 4096, 4096));
	ifd = open(img, O_RDWR | O_DIRECT);
	ASSERT_LE(0, ifd);
	pattern(w, 512, 5 * 512, 113);
	EXPECT_EQ(512, pwrite(ifd, w, 512, 5 * 512));
	pattern(w, 512, (12 << 20) + 3 * 512, 113);
	EXPECT_EQ(512, pwrite(ifd, w, 512, (12 << 20) + 3 * 512));
	close(ifd);
	EXPECT_EQ(0, same_as_pattern(img, 5 * 512, 512, 113));
	EXPECT_EQ(0, same_as_pattern(img, 0, 5 * 512, 111));
	EXPECT_EQ(0, same_as_pattern(img, 6 * 512, 4096 - 6 * 512, 111));
	EXPECT_EQ(0, same_as_pattern(img, (12 << 20) + 3 * 512, 512, 113));
	EXPECT_EQ(0, same_as_pattern(img, 12 << 20, 3 * 512, 111));
	EXPECT_EQ(0, same_as_pattern(img, (12 << 20) + 4 * 512, 4 * 512, 111));
	/* The original never sees image writes. */
	EXPECT_EQ(0, same_as_pattern(DISK_A, 12 << 20, 4096, 111));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
	free(before), free(after), free(w);
}

/*
 * An original of 64 MiB + 3 sectors, with 4Kn storage: its last chunk is
 * short and ends inside a page, yet it is saved and read back exactly.
 */
TEST_F_TIMEOUT(bs, odd_sized_original, 180)
{
	struct blk_snap_uuid id;
	uint64_t *before, *after, size = 0;
	size_t nb = 0, na = 0;
	char img[160];
	int ifd;

	ASSERT_EQ(0, fill(ODD, 0, ODD_BYTES, 121));
	before = checksums(ODD, &nb);
	ASSERT_NE(NULL, before);
	ASSERT_EQ(0, snapshot_create(self->fd, &self->odd, 1, &id));
	ASSERT_EQ(0, append_storage(self->fd, &id, STORE_4K, 0, 32 << 11));
	ASSERT_EQ(0, take(self->fd, &id));
	/* Overwrite the last MiB and the tail, and a stretch in the middle. */
	ASSERT_EQ(0, fill(ODD, ODD_BYTES - (1 << 20) - 1536, (1 << 20) + 1536, 122));
	ASSERT_EQ(0, fill(ODD, 20 << 20, 2 << 20, 122));
	ASSERT_EQ(0, image_path(self->fd, &id, &self->odd, img, sizeof(img)));
	ifd = open(img, O_RDONLY);
	ASSERT_LE(0, ifd);
	size = dev_size(ifd);
	close(ifd);
	EXPECT_EQ(ODD_BYTES, size);
	after = checksums(img, &na);
	ASSERT_NE(NULL, after);
	EXPECT_EQ(0, differing(before, nb, after, na));
	/* checksums() covers whole 64 KiB blocks: check the tail itself. */
	EXPECT_EQ(0, same_as_pattern(img, ODD_BYTES - 4096 - 1536, 4096 + 1536, 121));
	EXPECT_EQ(0, same_as_pattern(ODD, ODD_BYTES - 4096 - 1536, 4096 + 1536, 122));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
	free(before), free(after);
}

/*
 * An original whose minimum I/O (512 KiB, a stripe unit) is larger than
 * the smallest chunk (256 KiB by default): its chunks grow to the stripe
 * unit.  The image's sysfs attributes show the chunk size and the storage
 * appended and consumed, which grows by one chunk per chunk first written.
 */
TEST_F_TIMEOUT(bs, chunks_follow_io_min_and_storage_use_is_shown, 180)
{
	const uint64_t len = 64ULL << 20, stripe = 1024;
	struct blk_snap_dev striped;
	struct blk_snap_uuid id;
	uint64_t *before, *after;
	size_t nb = 0, na = 0;
	char dm[64], table[128], img[160];

	snprintf(table, sizeof(table), "1 %llu %s 0", (unsigned long long)stripe, ODD);
	ASSERT_EQ(0, dm_create(STRIPED, "striped", table, len >> 9, dm, sizeof(dm)));
	ASSERT_EQ(0, dev_id(dm, &striped));
	ASSERT_EQ(0, fill(dm, 0, len, 131));
	before = checksums(dm, &nb);
	ASSERT_NE(NULL, before);
	ASSERT_EQ(0, taken_snapshot(self->fd, &striped, PART_B2, 32 << 11, &id, img));
	EXPECT_EQ((long long)stripe, image_attr(img, "chunk_sectors"));
	EXPECT_EQ(32 << 11, image_attr(img, "diff_storage_total"));
	EXPECT_EQ(0, image_attr(img, "diff_storage_used"));
	/* One 4 KiB write in each of chunks 0, 2 and 16, two in chunk 2. */
	ASSERT_EQ(0, fill(dm, 0, 4096, 132));
	ASSERT_EQ(0, fill(dm, 1 << 20, 4096, 132));
	ASSERT_EQ(0, fill(dm, (1 << 20) + 8192, 4096, 132));
	ASSERT_EQ(0, fill(dm, 8 << 20, 4096, 132));
	EXPECT_EQ((long long)(3 * stripe), image_attr(img, "diff_storage_used"));
	EXPECT_EQ(32 << 11, image_attr(img, "diff_storage_total"));
	after = checksums(img, &na);
	ASSERT_NE(NULL, after);
	EXPECT_EQ(0, differing(before, nb, after, na));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
	free(before), free(after);
}

TEST_HARNESS_MAIN
