// SPDX-License-Identifier: GPL-2.0
/*
 * The integrity soak: snapshot cycles under mixed load, every image byte
 * checked against a model of its device at TAKE.
 *
 * Each cycle: the writers pause and flush, the model of each region is read
 * (a checksum per 512-byte sector), then two snapshots are taken: S1 of
 * /dev/vda and /dev/vdb1 (storage on /dev/vdb2) and S2 of /dev/vdh (storage
 * on /dev/vdg, 4Kn), each starting with 8 MiB of storage that a storage
 * thread grows, 8 MiB per low_free_space event. For the rest of the cycle:
 *
 * - writers on each original: random offsets and sizes from 512 bytes to
 *   1 MiB, O_DIRECT in the first half of the region, buffered and O_SYNC
 *   in the second (direct and buffered writes to the same pages race in
 *   the page cache itself: the kernel warns and fails the buffered ones
 *   with EIO, whatever the device);
 * - image checkers reading each image at random and comparing every sector
 *   with the model;
 * - image writers writing their own ranges of each image and reading them
 *   back (those ranges are left out of the model);
 *
 * then everything stops, each image is verified whole, no corrupted event
 * may have come, and both snapshots are destroyed.
 *
 * Duration: "bsoak_minutes=" on the kernel command line (make soak
 * MINUTES=...), 2 minutes by default. Prints cycles, bytes written, bytes
 * verified and mismatched bytes.
 */
#include <pthread.h>
#include <stdlib.h>

#include "blksnap_util.h"
#include "blksnap_data.h"
#include "kselftest.h"

#define SECT 512
#define REGION_A (64ULL << 20)
#define REGION_B (32ULL << 20)
#define REGION_C (32ULL << 20)
/* The last 4 MiB of each region belong to the image writers. */
#define IMG_OWN (4ULL << 20)
#define STEP_SECTORS (8ULL << 11)	/* storage grows 8 MiB at a time */
#define CYCLE_SECONDS 20

struct dev {
	const char *path;
	uint64_t region;
	struct blk_snap_dev id;
	uint64_t *model;	/* FNV of each sector at TAKE */
	char img[160];
};

static struct dev devs[3] = {
	{ "/dev/vda", REGION_A },
	{ "/dev/vdb1", REGION_B },
	{ "/dev/vdh", REGION_C },
};

static volatile int stop_load, stop_storage;
static uint64_t written, verified, mismatched, img_written, failures;
static pthread_mutex_t stats = PTHREAD_MUTEX_INITIALIZER;

static void add(uint64_t *counter, uint64_t n)
{
	pthread_mutex_lock(&stats);
	*counter += n;
	pthread_mutex_unlock(&stats);
}

static void note_failure(const char *what, const char *path)
{
	ksft_print_msg("%s: %s: %s\n", path, what, strerror(errno));
	add(&failures, 1);
}

/* Reads the model of @d's region (writers paused and flushed). */
static int read_model(struct dev *d)
{
	unsigned char *buf;
	int fd = open(d->path, O_RDONLY | O_DIRECT);
	int ret = -1;

	if (fd < 0 || posix_memalign((void **)&buf, 4096, 1 << 20))
		return -1;
	for (uint64_t off = 0; off < d->region; off += 1 << 20) {
		if (pread(fd, buf, 1 << 20, off) != 1 << 20)
			goto out;
		for (int s = 0; s < (1 << 20) / SECT; s++)
			d->model[off / SECT + s] = fnv(buf + s * SECT, SECT);
	}
	ret = 0;
out:
	close(fd);
	free(buf);
	return ret;
}

/* Compares @len bytes of image data at @off with the model. */
static void compare(struct dev *d, const unsigned char *buf, uint64_t off, size_t len)
{
	uint64_t bad = 0;

	for (size_t s = 0; s < len / SECT; s++) {
		uint64_t sector = off / SECT + s;

		if (sector * SECT >= d->region - IMG_OWN)
			break;
		if (fnv(buf + s * SECT, SECT) != d->model[sector])
			bad += SECT;
	}
	if (bad)
		ksft_print_msg("%s: %llu bytes differ from TAKE near offset %llu\n", d->img,
			       (unsigned long long)bad, (unsigned long long)off);
	add(&mismatched, bad);
	add(&verified, len);
}

struct worker {
	struct dev *d;
	unsigned int seed;
	int mode;		/* writers: 0 O_DIRECT, 1 buffered, 2 O_SYNC */
};

static void *original_writer(void *arg)
{
	struct worker *w = arg;
	int flags = O_RDWR | (w->mode == 0 ? O_DIRECT : w->mode == 2 ? O_SYNC : 0);
	int fd = open(w->d->path, flags);
	unsigned char *buf;

	if (fd < 0 || posix_memalign((void **)&buf, 4096, 1 << 20)) {
		note_failure("open for writing", w->d->path);
		return NULL;
	}
	while (!stop_load) {
		size_t len = (size_t)SECT << (rand_r(&w->seed) % 12);	/* 512 B .. 1 MiB */
		uint64_t half = w->d->region / 2;
		uint64_t span = (half - len) / SECT;
		uint64_t off = (uint64_t)(rand_r(&w->seed) % span) * SECT + (w->mode ? half : 0);

		for (size_t i = 0; i < len; i += 4)
			*(uint32_t *)(buf + i) = rand_r(&w->seed);
		if (pwrite(fd, buf, len, off) != (ssize_t)len)
			note_failure("write to the original", w->d->path);
		else
			add(&written, len);
	}
	if (fsync(fd))
		note_failure("fsync", w->d->path);
	close(fd);
	free(buf);
	return NULL;
}

static void *image_checker(void *arg)
{
	struct worker *w = arg;
	int fd = open(w->d->img, O_RDONLY | O_DIRECT);
	unsigned char *buf;

	if (fd < 0 || posix_memalign((void **)&buf, 4096, 1 << 20)) {
		note_failure("open the image", w->d->img);
		return NULL;
	}
	while (!stop_load) {
		size_t len = (size_t)4096 << (rand_r(&w->seed) % 9);	/* 4 KiB .. 1 MiB */
		uint64_t span = (w->d->region - IMG_OWN - len) / 4096;
		uint64_t off = (uint64_t)(rand_r(&w->seed) % span) * 4096;

		if (pread(fd, buf, len, off) != (ssize_t)len) {
			note_failure("image read", w->d->img);
			break;
		}
		compare(w->d, buf, off, len);
	}
	close(fd);
	free(buf);
	return NULL;
}

/* Writes the image's own ranges and reads each write back. */
static void *image_writer(void *arg)
{
	struct worker *w = arg;
	int fd = open(w->d->img, O_RDWR | O_DIRECT);
	unsigned char *buf, *back;
	uint64_t base = w->d->region - IMG_OWN;

	if (fd < 0 || posix_memalign((void **)&buf, 4096, 256 << 10) ||
	    posix_memalign((void **)&back, 4096, 256 << 10)) {
		note_failure("open the image for writing", w->d->img);
		return NULL;
	}
	while (!stop_load) {
		size_t len = (size_t)4096 << (rand_r(&w->seed) % 7);	/* 4 .. 256 KiB */
		uint64_t off = base + (uint64_t)(rand_r(&w->seed) % ((IMG_OWN - len) / 4096)) * 4096;

		for (size_t i = 0; i < len; i += 4)
			*(uint32_t *)(buf + i) = rand_r(&w->seed);
		if (pwrite(fd, buf, len, off) != (ssize_t)len ||
		    pread(fd, back, len, off) != (ssize_t)len) {
			note_failure("image write and read back", w->d->img);
			break;
		}
		if (memcmp(buf, back, len)) {
			ksft_print_msg("%s: an image write did not read back\n", w->d->img);
			add(&mismatched, len);
		}
		add(&img_written, len);
	}
	close(fd);
	free(buf);
	free(back);
	return NULL;
}

struct store {
	int fd;
	struct blk_snap_uuid id;
	const char *dev;
	uint64_t next, end;	/* sectors of @dev still to hand over */
	int corrupted;
};

/* Answers low_free_space with 8 MiB more; notes corrupted events. */
static void *storage_thread(void *arg)
{
	struct store *s = arg;
	struct blk_snap_snapshot_event *ev = calloc(1, sizeof(*ev));

	while (ev && !stop_storage) {
		if (next_event(s->fd, &s->id, 200, ev))
			continue;
		if (ev->code == blk_snap_event_code_corrupted) {
			ksft_print_msg("snapshot on %s storage: corrupted event\n", s->dev);
			s->corrupted = 1;
		} else if (ev->code == blk_snap_event_code_low_free_space && s->next < s->end) {
			if (append_storage(s->fd, &s->id, s->dev, s->next, STEP_SECTORS))
				note_failure("append storage", s->dev);
			s->next += STEP_SECTORS;
		}
	}
	free(ev);
	return NULL;
}

static int start_snapshot(int fd, struct blk_snap_dev *ids, int n, struct store *s,
			  const char *dev, uint64_t sectors)
{
	*s = (struct store){ .fd = fd, .dev = dev, .next = STEP_SECTORS, .end = sectors };
	if (snapshot_create(fd, ids, n, &s->id) ||
	    append_storage(fd, &s->id, dev, 0, STEP_SECTORS) || take(fd, &s->id))
		return -1;
	return 0;
}

/* One cycle; returns 0 if every check held. */
static int cycle(int fd, unsigned int seed)
{
	struct blk_snap_dev s1[2] = { devs[0].id, devs[1].id };
	struct store st1, st2;
	pthread_t th[32], sth[2];
	struct worker w[32];
	int n = 0, ok = 0;
	time_t end;

	for (int i = 0; i < 3; i++)
		if (read_model(&devs[i]))
			return -1;
	if (start_snapshot(fd, s1, 2, &st1, PART_B2, 152ULL << 11) ||
	    start_snapshot(fd, &devs[2].id, 1, &st2, "/dev/vdg", 64ULL << 11))
		return -1;
	for (int i = 0; i < 2; i++)
		if (image_path(fd, &st1.id, &devs[i].id, devs[i].img, sizeof(devs[i].img)))
			return -1;
	if (image_path(fd, &st2.id, &devs[2].id, devs[2].img, sizeof(devs[2].img)))
		return -1;

	stop_load = 0;
	stop_storage = 0;
	pthread_create(&sth[0], NULL, storage_thread, &st1);
	pthread_create(&sth[1], NULL, storage_thread, &st2);
	for (int i = 0; i < 3; i++) {
		for (int m = 0; m < 3; m++) {
			w[n] = (struct worker){ &devs[i], seed * 97 + n, m };
			pthread_create(&th[n], NULL, original_writer, &w[n]);
			n++;
		}
		for (int c = 0; c < 2; c++) {
			w[n] = (struct worker){ &devs[i], seed * 97 + n, 0 };
			pthread_create(&th[n], NULL, image_checker, &w[n]);
			n++;
		}
		w[n] = (struct worker){ &devs[i], seed * 97 + n, 0 };
		pthread_create(&th[n], NULL, image_writer, &w[n]);
		n++;
	}
	end = time(NULL) + CYCLE_SECONDS;
	while (time(NULL) < end)
		sleep(1);
	stop_load = 1;
	for (int i = 0; i < n; i++)
		pthread_join(th[i], NULL);

	/* Every byte of each image, once more. */
	for (int i = 0; i < 3; i++) {
		int ifd = open(devs[i].img, O_RDONLY | O_DIRECT);
		unsigned char *buf;

		if (ifd < 0 || posix_memalign((void **)&buf, 4096, 1 << 20)) {
			note_failure("open the image", devs[i].img);
			continue;
		}
		for (uint64_t off = 0; off < devs[i].region - IMG_OWN; off += 1 << 20) {
			if (pread(ifd, buf, 1 << 20, off) != 1 << 20) {
				note_failure("image read", devs[i].img);
				break;
			}
			compare(&devs[i], buf, off, 1 << 20);
		}
		close(ifd);
		free(buf);
	}
	stop_storage = 1;
	pthread_join(sth[0], NULL);
	pthread_join(sth[1], NULL);
	if (st1.corrupted || st2.corrupted)
		ok = -1;
	if (snapshot_destroy(fd, &st1.id) || snapshot_destroy(fd, &st2.id))
		ok = -1;
	return ok;
}

static unsigned int minutes(void)
{
	char line[1024] = "";
	FILE *f = fopen("/proc/cmdline", "r");
	char *p;

	if (f) {
		if (!fgets(line, sizeof(line), f))
			line[0] = 0;
		fclose(f);
	}
	p = strstr(line, "bsoak_minutes=");
	return p ? (unsigned int)strtoul(p + 14, NULL, 10) : 2;
}

int main(void)
{
	unsigned int mins = minutes(), cycles = 0, bad_cycles = 0;
	time_t start = time(NULL), end = start + mins * 60;
	int fd;

	ksft_print_header();
	ksft_set_plan(1);
	fd = open(BLK_SNAP_CTL, O_RDWR);
	if (fd < 0)
		ksft_exit_skip(BLK_SNAP_CTL " missing: module not loaded\n");
	for (int i = 0; i < 3; i++) {
		if (dev_id(devs[i].path, &devs[i].id))
			ksft_exit_skip("test disks missing\n");
		devs[i].model = calloc(devs[i].region / SECT, sizeof(uint64_t));
		if (!devs[i].model)
			ksft_exit_fail_msg("no memory for the model\n");
	}
	blksnap_reset(fd);
	set_param("diff_storage_minimum", 2 * STEP_SECTORS);
	ksft_print_msg("soak for %u minutes, %u s cycles\n", mins, CYCLE_SECONDS);
	do {
		if (cycle(fd, cycles + 1))
			bad_cycles++;
		cycles++;
		ksft_print_msg("cycle %u: %llu MiB written, %llu MiB verified, %llu bytes mismatched\n",
			       cycles, (unsigned long long)(written >> 20),
			       (unsigned long long)(verified >> 20), (unsigned long long)mismatched);
	} while (time(NULL) < end);
	blksnap_reset(fd);
	set_param("diff_storage_minimum", 2097152);
	ksft_print_msg("%u cycles in %ld s: %llu bytes written to the originals, %llu to the images, %llu bytes verified, %llu mismatched, %llu failures\n",
		       cycles, (long)(time(NULL) - start), (unsigned long long)written,
		       (unsigned long long)img_written, (unsigned long long)verified,
		       (unsigned long long)mismatched, (unsigned long long)failures);
	ksft_test_result(!bad_cycles && !mismatched && !failures && verified > 0,
			 "soak: %u cycles, %llu bytes verified, %llu mismatched\n", cycles,
			 (unsigned long long)verified, (unsigned long long)mismatched);
	close(fd);
	ksft_finished();
}
