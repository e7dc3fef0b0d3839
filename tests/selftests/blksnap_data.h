/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Data helpers of the snapshot selftests: patterns, checksums, writers,
 * storage, TAKE, images, module parameters, events.
 */
#ifndef BLKSNAP_DATA_H
#define BLKSNAP_DATA_H

#include <stdlib.h>

#include "blksnap_util.h"

#define BLK (64 << 10)			/* checksum block */
#define MIB (1 << 20)

static inline uint64_t fnv(const unsigned char *p, size_t n)
{
	uint64_t h = 1469598103934665603ULL;

	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 1099511628211ULL;
	return h;
}

static inline void pattern(unsigned char *buf, size_t len, uint64_t off, unsigned int seed)
{
	for (size_t i = 0; i < len; i += 8) {
		uint64_t v = ((off + i) / 8) * 0x9e3779b97f4a7c15ULL ^ seed;

		memcpy(buf + i, &v, 8);
	}
}

static inline uint64_t dev_size(int fd)
{
	uint64_t size = 0;

	ioctl(fd, BLKGETSIZE64, &size);
	return size;
}

/* Fills [off, off + len) of fd with pattern `seed`, O_DIRECT, in 1 MiB writes. */
static inline int fill(const char *path, uint64_t off, uint64_t len, unsigned int seed)
{
	unsigned char *buf;
	int fd = open(path, O_RDWR | O_DIRECT);
	int ret = 0;

	if (fd < 0 || posix_memalign((void **)&buf, 4096, MIB))
		return -1;
	for (uint64_t done = 0; done < len && !ret; done += MIB) {
		size_t n = len - done < MIB ? len - done : MIB;

		pattern(buf, n, off + done, seed);
		if (pwrite(fd, buf, n, off + done) != (ssize_t)n)
			ret = -1;
	}
	if (fsync(fd))
		ret = -1;
	close(fd);
	free(buf);
	return ret;
}

/*
 * Compares `len` bytes at `off` of `path` (O_DIRECT) with pattern `seed`:
 * 0 if equal, 1 if not, -1 if they cannot be read.
 */
static inline int same_as_pattern(const char *path, uint64_t off, size_t len, unsigned int seed)
{
	unsigned char *buf, *want;
	int fd = open(path, O_RDONLY | O_DIRECT), ret = -1;

	if (fd < 0 || posix_memalign((void **)&buf, 4096, len) || posix_memalign((void **)&want, 4096, len))
		return -1;
	if (pread(fd, buf, len, off) == (ssize_t)len) {
		pattern(want, len, off, seed);
		ret = memcmp(buf, want, len) ? 1 : 0;
	}
	close(fd);
	free(buf);
	free(want);
	return ret;
}

/* Checksums every BLK of a device into a new array; *n gets the count. */
static inline uint64_t *checksums(const char *path, size_t *n)
{
	unsigned char *buf;
	int fd = open(path, O_RDONLY | O_DIRECT);
	uint64_t size, *sums;

	if (fd < 0)
		return NULL;
	size = dev_size(fd);
	*n = size / BLK;
	sums = calloc(*n, sizeof(*sums));
	if (!sums || posix_memalign((void **)&buf, 4096, MIB)) {
		close(fd);
		return NULL;
	}
	for (uint64_t off = 0; off < *n * (uint64_t)BLK; off += MIB) {
		size_t len = *n * (uint64_t)BLK - off < MIB ? *n * (uint64_t)BLK - off : MIB;

		if (pread(fd, buf, len, off) != (ssize_t)len) {
			free(sums);
			sums = NULL;
			break;
		}
		for (size_t i = 0; i < len; i += BLK)
			sums[(off + i) / BLK] = fnv(buf + i, BLK);
	}
	close(fd);
	free(buf);
	return sums;
}

/* Number of blocks where two checksum arrays differ (or -1 if sizes do). */
static inline long differing(const uint64_t *a, size_t na, const uint64_t *b, size_t nb)
{
	long d = 0;

	if (na != nb)
		return -1;
	for (size_t i = 0; i < na; i++)
		d += a[i] != b[i];
	return d;
}

struct writer {
	const char *path;
	unsigned int seed;
	uint64_t span;		/* bytes of the device to hit */
	int count;
	int failed;
};

/* Random writes of 4..64 KiB, O_DIRECT, page aligned. */
static inline void *random_writer(void *arg)
{
	struct writer *w = arg;
	unsigned int r = w->seed;
	unsigned char *buf;
	int fd = open(w->path, O_RDWR | O_DIRECT);

	if (fd < 0 || posix_memalign((void **)&buf, 4096, 64 << 10)) {
		w->failed = 1;
		return NULL;
	}
	for (int i = 0; i < w->count; i++) {
		size_t len = 4096 * (1 + rand_r(&r) % 16);
		uint64_t off = (uint64_t)(rand_r(&r) % (w->span / 4096 - 16)) * 4096;

		pattern(buf, len, off, w->seed);
		if (pwrite(fd, buf, len, off) != (ssize_t)len)
			w->failed = 1;
	}
	close(fd);
	free(buf);
	return NULL;
}

static inline int append_storage(int fd, const struct blk_snap_uuid *id, const char *dev,
			  uint64_t sector, uint64_t count)
{
	struct blk_snap_block_range r = { sector, count };
	struct blk_snap_snapshot_append_storage a = { .id = *id, .count = 1, .ranges = &r };

	if (dev_id(dev, &a.dev_id))
		return -ENODEV;
	return xioctl(fd, IOCTL_BLK_SNAP_SNAPSHOT_APPEND_STORAGE, &a);
}

static inline int take(int fd, const struct blk_snap_uuid *id)
{
	struct blk_snap_snapshot_take t = { .id = *id };

	return xioctl(fd, IOCTL_BLK_SNAP_SNAPSHOT_TAKE, &t);
}

/* Path of the image of `orig` in snapshot `id`, into buf. */
static inline int image_path(int fd, const struct blk_snap_uuid *id,
		      const struct blk_snap_dev *orig, char *buf, size_t len)
{
	struct blk_snap_image_info info[8];
	struct blk_snap_snapshot_collect_images c = { .id = *id, .count = 8,
						      .image_info_array = info };
	char sys[128];
	FILE *f;

	if (len < 160 || xioctl(fd, IOCTL_BLK_SNAP_SNAPSHOT_COLLECT_IMAGES, &c))
		return -1;
	for (unsigned int i = 0; i < c.count; i++) {
		if (info[i].orig_dev_id.mj != orig->mj || info[i].orig_dev_id.mn != orig->mn)
			continue;
		snprintf(sys, sizeof(sys), "/sys/dev/block/%u:%u/uevent",
			 info[i].image_dev_id.mj, info[i].image_dev_id.mn);
		f = fopen(sys, "r");
		if (!f)
			return -1;
		while (fgets(sys, sizeof(sys), f))
			if (!strncmp(sys, "DEVNAME=", 8)) {
				sys[strcspn(sys, "\n")] = 0;
				snprintf(buf, 160, "/dev/%.120s", sys + 8);
				fclose(f);
				return 0;
			}
		fclose(f);
	}
	return -1;
}

/*
 * A snapshot of `dev` with `sectors` sectors of `store` (from sector 0) as
 * storage, taken; its id into `id` and its image's path into `img` (160
 * bytes).  0, or the first failing call's error.
 */
static inline int taken_snapshot(int fd, const struct blk_snap_dev *dev, const char *store,
				 uint64_t sectors, struct blk_snap_uuid *id, char *img)
{
	int ret = snapshot_create(fd, dev, 1, id);

	if (!ret)
		ret = append_storage(fd, id, store, 0, sectors);
	if (!ret)
		ret = take(fd, id);
	if (!ret)
		ret = image_path(fd, id, dev, img, 160);
	return ret;
}

static inline void set_param(const char *name, unsigned long v)
{
	char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "/sys/module/blksnap/parameters/%s", name);
	f = fopen(path, "w");
	if (f) {
		fprintf(f, "%lu\n", v);
		fclose(f);
	}
}

static inline int next_event(int fd, const struct blk_snap_uuid *id, unsigned int ms,
		      struct blk_snap_snapshot_event *ev)
{
	ev->id = *id;
	ev->timeout_ms = ms;
	return xioctl(fd, IOCTL_BLK_SNAP_SNAPSHOT_WAIT_EVENT, ev);
}

/*
 * What TRACKER_COLLECT says of `dev`, into `out`: 1 if it lists it, 0 if
 * not, -1 if the call fails.
 */
static inline int cbt_info(int fd, const struct blk_snap_dev *dev, struct blk_snap_cbt_info *out)
{
	struct blk_snap_cbt_info info[16];
	struct blk_snap_tracker_collect tc = { .count = 16, .cbt_info_array = info };

	if (xioctl(fd, IOCTL_BLK_SNAP_TRACKER_COLLECT, &tc))
		return -1;
	for (unsigned int i = 0; i < tc.count; i++)
		if (info[i].dev_id.mj == dev->mj && info[i].dev_id.mn == dev->mn) {
			if (out)
				*out = info[i];
			return 1;
		}
	return 0;
}

/* Whether TRACKER_COLLECT lists `dev` (-1 if the call fails). */
static inline int tracked(int fd, const struct blk_snap_dev *dev)
{
	return cbt_info(fd, dev, NULL);
}

/*
 * Waits up to `ms` between events for a corrupted event of `dev` in
 * snapshot `id`; returns its errno, or -1 if none comes.
 */
static inline int corrupted_event(int fd, const struct blk_snap_uuid *id, const struct blk_snap_dev *dev,
				  struct blk_snap_snapshot_event *ev, unsigned int ms)
{
	while (next_event(fd, id, ms, ev) == 0) {
		struct blk_snap_event_corrupted *c = (void *)ev->data;

		if (ev->code == blk_snap_event_code_corrupted &&
		    c->orig_dev_id.mj == dev->mj && c->orig_dev_id.mn == dev->mn)
			return c->err_code;
	}
	return -1;
}

#endif
