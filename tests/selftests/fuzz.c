// SPDX-License-Identifier: GPL-2.0
/*
 * An ioctl fuzzer for /dev/blksnap: random and mutated requests from
 * several threads at once, interleaved with valid sequences (CREATE,
 * APPEND_STORAGE, TAKE, image I/O, DESTROY, TRACKER_REMOVE).
 *
 * Every call must come back with 0, a positive count, or an errno of the
 * ABI's table; the kernel log must stay free of splats (the VM's judge
 * checks it) and the module must unload cleanly afterwards (kmemleak.sh).
 *
 * Seeded and reproducible per thread: the seed is printed first, and
 * "bsfuzz_seed=" on the kernel command line replays it.  "bsfuzz_n=" sets
 * the number of calls (default 100000; `make fuzz N=...`).
 *
 * Devices: only /dev/vda, /dev/vdb and its partitions, and images: the
 * file systems other tests use are left alone.
 */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

#include "blksnap_util.h"
#include "kselftest.h"

#define THREADS 4
#define MAX_IDS 16

static int ctl;
static unsigned long long seed;
static long calls = 100000;
static volatile long bad;		/* calls with an errno outside the ABI */
static volatile long takes, image_ios;	/* how far valid sequences got */
static struct blk_snap_dev real[4];
static int nreal;
static unsigned char *guard_page;	/* a mapped page followed by an unmapped one */

static const unsigned long numbers[] = {
	IOCTL_BLK_SNAP_VERSION, IOCTL_BLK_SNAP_TRACKER_REMOVE, IOCTL_BLK_SNAP_TRACKER_COLLECT,
	IOCTL_BLK_SNAP_TRACKER_READ_CBT_MAP, IOCTL_BLK_SNAP_TRACKER_MARK_DIRTY_BLOCKS,
	IOCTL_BLK_SNAP_SNAPSHOT_CREATE, IOCTL_BLK_SNAP_SNAPSHOT_DESTROY,
	IOCTL_BLK_SNAP_SNAPSHOT_APPEND_STORAGE, IOCTL_BLK_SNAP_SNAPSHOT_TAKE,
	IOCTL_BLK_SNAP_SNAPSHOT_COLLECT, IOCTL_BLK_SNAP_SNAPSHOT_COLLECT_IMAGES,
	IOCTL_BLK_SNAP_SNAPSHOT_WAIT_EVENT,
};
#define NNUMBERS (sizeof(numbers) / sizeof(numbers[0]))

/* The errnos of the ABI's table (and EIO from image I/O, not ioctls). */
static int allowed(int err)
{
	switch (err) {
	case EPERM: case EFAULT: case ENOTTY: case EINVAL: case ENODEV: case EBUSY:
	case ESRCH: case EALREADY: case ENOSPC: case ENODATA: case ENOENT: case EINTR:
	case ENOMEM: case EOPNOTSUPP: case EACCES: case EROFS:
		return 1;
	}
	return 0;
}

struct fz {
	unsigned int r;
	int thread;
	struct blk_snap_uuid ids[MAX_IDS];	/* valid, stale or random */
	int nids;
	unsigned char *buf;			/* 2 MiB of scratch */
	long done;
};

static unsigned int rnd(struct fz *f)
{
	return (unsigned int)rand_r(&f->r);
}

static uint64_t rnd64(struct fz *f)
{
	return (uint64_t)rnd(f) << 33 ^ (uint64_t)rnd(f) << 11 ^ rnd(f);
}

/* A count: 0, 1, a cap, a cap + 1, huge, or small and random. */
static uint32_t pick_count(struct fz *f)
{
	static const uint32_t edges[] = { 0, 1, 2, 255, 256, 257, 65535, 65536, 65537, 0x7fffffff, 0xffffffff };

	if (rnd(f) % 3)
		return rnd(f) % 8;
	return edges[rnd(f) % (sizeof(edges) / sizeof(edges[0]))];
}

/* A user pointer to room for `len` bytes, or a bad one. */
static void *pick_ptr(struct fz *f, size_t len)
{
	switch (rnd(f) % 8) {
	case 0: return NULL;
	case 1: return (void *)(uintptr_t)0xdead000000000000ULL;	/* non-canonical */
	case 2: return (void *)(uintptr_t)0xffffffff81000000ULL;	/* kernel text */
	case 3: return (void *)(uintptr_t)(rnd64(f) & 0x7fffffffffffULL);
	case 4:	/* straddles into the unmapped page */
		return guard_page + 4096 - (len > 1 ? len / 2 : 1);
	case 5: return f->buf + 1 + rnd(f) % 64;			/* unaligned */
	default: return f->buf;
	}
}

static struct blk_snap_dev pick_dev(struct fz *f)
{
	struct blk_snap_dev d;

	switch (rnd(f) % 4) {
	case 0:
		d.mj = rnd(f) % 300;
		d.mn = rnd(f) % 300;
		return d;
	case 1:
		d.mj = rnd(f);
		d.mn = rnd(f);
		return d;
	default:
		return real[rnd(f) % nreal];
	}
}

static struct blk_snap_uuid pick_id(struct fz *f)
{
	struct blk_snap_uuid id;

	if (f->nids && rnd(f) % 4) {
		id = f->ids[rnd(f) % f->nids];
	} else {
		for (int i = 0; i < 16; i++)
			id.b[i] = rnd(f);
	}
	return id;
}

static void remember(struct fz *f, const struct blk_snap_uuid *id)
{
	if (f->nids < MAX_IDS)
		f->ids[f->nids++] = *id;
	else
		f->ids[rnd(f) % MAX_IDS] = *id;
}

/* Random bytes in the scratch buffer, with valid-looking fields sprinkled. */
static void scribble(struct fz *f, size_t len)
{
	for (size_t i = 0; i < len; i += 4) {
		uint32_t v = rnd(f);

		memcpy(f->buf + i, &v, 4);
	}
}

static void check(struct fz *f, const char *what, unsigned long nr, int ret)
{
	/*
	 * A mutated number of another type may be one the VFS answers for
	 * every file before the driver sees it: only 'V' calls are ours.
	 */
	if (nr && _IOC_TYPE(nr) != 'V')
		return;
	if (ret < 0 && !allowed(-ret)) {
		__sync_fetch_and_add(&bad, 1);
		ksft_print_msg("thread %d call %ld: %s 0x%lx gave errno %d (seed %llu)\n",
			       f->thread, f->done, what, nr, -ret, seed);
	}
}

/* One random call with a random or mutated argument. */
static void random_call(struct fz *f)
{
	unsigned long nr = numbers[rnd(f) % NNUMBERS];
	size_t size = _IOC_SIZE(nr);
	void *arg;

	scribble(f, size);
	switch (rnd(f) % 10) {
	case 0:	/* a neighbour: other number, size or direction */
		nr ^= 1UL << (rnd(f) % 32);
		break;
	case 1:
		arg = pick_ptr(f, size);
		if (nr == IOCTL_BLK_SNAP_SNAPSHOT_WAIT_EVENT && arg == f->buf)
			((struct blk_snap_snapshot_event *)f->buf)->timeout_ms = 0;
		check(f, "wild", nr, xioctl(ctl, nr, arg));
		return;
	}
	/* Fields a struct may hold: counts, pointers, devices, ids. */
	switch (nr) {
	case IOCTL_BLK_SNAP_SNAPSHOT_CREATE: {
		struct blk_snap_snapshot_create *c = (void *)f->buf;

		c->count = pick_count(f);
		c->dev_id_array = pick_ptr(f, c->count * sizeof(struct blk_snap_dev));
		break;
	}
	case IOCTL_BLK_SNAP_SNAPSHOT_APPEND_STORAGE: {
		struct blk_snap_snapshot_append_storage *a = (void *)f->buf;

		a->id = pick_id(f);
		a->dev_id = pick_dev(f);
		a->count = pick_count(f);
		a->ranges = pick_ptr(f, 16);
		break;
	}
	case IOCTL_BLK_SNAP_TRACKER_READ_CBT_MAP: {
		struct blk_snap_tracker_read_cbt_bitmap *m = (void *)f->buf;

		m->dev_id = pick_dev(f);
		m->offset = rnd(f) % 3 ? rnd(f) % 8192 : rnd(f);
		m->length = rnd(f) % 3 ? rnd(f) % 8192 : rnd(f);
		m->buff = pick_ptr(f, m->length);
		break;
	}
	case IOCTL_BLK_SNAP_TRACKER_MARK_DIRTY_BLOCKS: {
		struct blk_snap_tracker_mark_dirty_blocks *m = (void *)f->buf;

		m->dev_id = pick_dev(f);
		m->count = pick_count(f);
		m->dirty_blocks_array = pick_ptr(f, 16);
		break;
	}
	case IOCTL_BLK_SNAP_TRACKER_REMOVE: {
		struct blk_snap_tracker_remove *t = (void *)f->buf;

		t->dev_id = pick_dev(f);
		break;
	}
	case IOCTL_BLK_SNAP_SNAPSHOT_DESTROY:
	case IOCTL_BLK_SNAP_SNAPSHOT_TAKE: {
		struct blk_snap_uuid *id = (void *)f->buf;

		*id = pick_id(f);
		break;
	}
	case IOCTL_BLK_SNAP_SNAPSHOT_WAIT_EVENT: {
		struct blk_snap_snapshot_event *e = (void *)f->buf;

		e->id = pick_id(f);
		e->timeout_ms = rnd(f) % 3;	/* never block for long */
		break;
	}
	case IOCTL_BLK_SNAP_TRACKER_COLLECT:
	case IOCTL_BLK_SNAP_SNAPSHOT_COLLECT:
	case IOCTL_BLK_SNAP_SNAPSHOT_COLLECT_IMAGES: {
		/* { [id,] count, array }: count first for trackers and snapshots. */
		uint32_t *count = (void *)(f->buf + (nr == IOCTL_BLK_SNAP_SNAPSHOT_COLLECT_IMAGES ? 16 : 0));
		void **array = (void *)(count + 2);

		if (nr == IOCTL_BLK_SNAP_SNAPSHOT_COLLECT_IMAGES)
			*(struct blk_snap_uuid *)f->buf = pick_id(f);
		*count = pick_count(f);
		*array = pick_ptr(f, 64);
		break;
	}
	}
	/* No wait may block for long, whatever number a mutation reached. */
	if (nr == IOCTL_BLK_SNAP_SNAPSHOT_WAIT_EVENT)
		((struct blk_snap_snapshot_event *)f->buf)->timeout_ms = rnd(f) % 3;
	check(f, "random", nr, xioctl(ctl, nr, f->buf));
}

/* A valid sequence: CREATE, APPEND, TAKE, image I/O, DESTROY, REMOVE. */
static void valid_sequence(struct fz *f)
{
	struct blk_snap_dev d = real[rnd(f) % nreal];
	struct blk_snap_uuid id;
	int ret;

	ret = snapshot_create(ctl, &d, 1, &id);
	check(f, "create", IOCTL_BLK_SNAP_SNAPSHOT_CREATE, ret);
	if (ret)
		return;
	remember(f, &id);
	/* Storage on vdb2, in a slice of its own per thread. */
	{
		struct blk_snap_block_range r = { (uint64_t)f->thread * 16384 + (rnd(f) % 4) * 4096, 4096 };
		struct blk_snap_snapshot_append_storage a = { .id = id, .count = 1, .ranges = &r };

		if (!dev_id(PART_B2, &a.dev_id))
			check(f, "append", IOCTL_BLK_SNAP_SNAPSHOT_APPEND_STORAGE,
			      xioctl(ctl, IOCTL_BLK_SNAP_SNAPSHOT_APPEND_STORAGE, &a));
	}
	if (rnd(f) % 4) {
		struct blk_snap_snapshot_take t = { .id = id };

		ret = xioctl(ctl, IOCTL_BLK_SNAP_SNAPSHOT_TAKE, &t);
		check(f, "take", IOCTL_BLK_SNAP_SNAPSHOT_TAKE, ret);
		if (!ret)
			__sync_fetch_and_add(&takes, 1);
		if (!ret && rnd(f) % 2) {
			struct blk_snap_image_info info[4];
			struct blk_snap_snapshot_collect_images c = { .id = id, .count = 4,
								      .image_info_array = info };

			if (!xioctl(ctl, IOCTL_BLK_SNAP_SNAPSHOT_COLLECT_IMAGES, &c) && c.count) {
				/* Image I/O on some image (devtmpfs names them). */
				for (int i = 0; i < 8; i++) {
					char node[32];
					int fd;

					snprintf(node, sizeof(node), "/dev/blksnap-image%d", i);
					fd = open(node, O_RDWR | O_DIRECT);
					if (fd < 0)
						continue;
					if (pread(fd, f->buf, 65536, (off_t)(rnd(f) % 256) << 16) < 0 && errno != EIO)
						check(f, "image read", 0, -errno);
					if (rnd(f) % 2)
						(void)pwrite(fd, f->buf, 4096, (off_t)(rnd(f) % 4096) << 12);
					close(fd);
					__sync_fetch_and_add(&image_ios, 1);
					break;
				}
			}
		}
	}
	if (rnd(f) % 8) {
		struct blk_snap_snapshot_destroy x = { .id = id };

		check(f, "destroy", IOCTL_BLK_SNAP_SNAPSHOT_DESTROY,
		      xioctl(ctl, IOCTL_BLK_SNAP_SNAPSHOT_DESTROY, &x));
	}
	if (rnd(f) % 2) {
		struct blk_snap_tracker_remove t = { .dev_id = d };

		check(f, "remove", IOCTL_BLK_SNAP_TRACKER_REMOVE, xioctl(ctl, IOCTL_BLK_SNAP_TRACKER_REMOVE, &t));
	}
}

static void *worker(void *arg)
{
	struct fz *f = arg;
	long share = calls / THREADS;

	for (f->done = 0; f->done < share; f->done++) {
		if (rnd(f) % 64 == 0)
			valid_sequence(f);
		else
			random_call(f);
	}
	return NULL;
}

static void set_wait_ms(unsigned int ms)
{
	FILE *p = fopen("/sys/module/blksnap/parameters/diff_storage_wait_ms", "w");

	if (p) {
		fprintf(p, "%u\n", ms);
		fclose(p);
	}
}

/* "name=value" from the kernel command line, or `def`. */
static unsigned long long cmdline_param(const char *name, unsigned long long def)
{
	char buf[4096], *p;
	FILE *fp = fopen("/proc/cmdline", "r");
	size_t n;

	if (!fp)
		return def;
	n = fread(buf, 1, sizeof(buf) - 1, fp);
	fclose(fp);
	buf[n] = 0;
	p = strstr(buf, name);
	if (!p || p[strlen(name)] != '=')
		return def;
	return strtoull(p + strlen(name) + 1, NULL, 0);
}

int main(void)
{
	static const char *const paths[] = { DISK_A, DISK_B, PART_B1, PART_B2 };
	struct fz f[THREADS];
	pthread_t th[THREADS];
	struct blk_snap_dev d;
	struct blk_snap_uuid id;
	long total = 0;

	ksft_print_header();
	ksft_set_plan(2);
	ctl = open(BLK_SNAP_CTL, O_RDWR);
	if (ctl < 0)
		ksft_exit_skip(BLK_SNAP_CTL " missing: module not loaded\n");
	for (unsigned int i = 0; i < 4; i++)
		if (!dev_id(paths[i], &real[nreal]))
			nreal++;
	if (!nreal)
		ksft_exit_skip("test disks missing\n");
	seed = cmdline_param("bsfuzz_seed", (unsigned long long)now_ns());
	calls = cmdline_param("bsfuzz_n", calls);
	ksft_print_msg("seed %llu, %ld calls, %d threads (replay: bsfuzz_seed=%llu)\n",
		       seed, calls, THREADS, seed);
	guard_page = guarded_tail(4096);
	if (!guard_page)
		ksft_exit_fail_msg("mmap failed\n");
	signal(SIGPIPE, SIG_IGN);
	blksnap_reset(ctl);
	/* Storage runs out at once rather than keep a thread waiting. */
	set_wait_ms(0);
	for (int i = 0; i < THREADS; i++) {
		f[i] = (struct fz){ .r = (unsigned int)(seed + i * 7919), .thread = i };
		if (posix_memalign((void **)&f[i].buf, 4096, 2 << 20))
			ksft_exit_fail_msg("no memory\n");
		pthread_create(&th[i], NULL, worker, &f[i]);
	}
	for (int i = 0; i < THREADS; i++) {
		pthread_join(th[i], NULL);
		total += f[i].done;
	}
	ksft_print_msg("%ld calls made; %ld snapshots taken, %ld rounds of image I/O\n",
		       total, takes, image_ios);
	ksft_test_result(bad == 0, "every call answered 0 or an errno of the ABI (%ld did not)\n", bad);
	/* The module still works from a clean slate. */
	blksnap_reset(ctl);
	set_wait_ms(5000);
	ksft_test_result(!dev_id(DISK_A, &d) && !snapshot_create(ctl, &d, 1, &id) &&
			 !snapshot_destroy(ctl, &id) && !tracker_remove(ctl, &d),
			 "the module works after the fuzzing\n");
	close(ctl);
	ksft_finished();
}
