// SPDX-License-Identifier: GPL-2.0
/*
 * A mounted ext4 file system with files (/dev/vdc), snapshotted while a
 * writer runs, with the diff storage in a file on another mounted ext4 file
 * system (/dev/vdd), handed over as the file's FIEMAP extents.  The image
 * must mount, read-only and read-write, with every file as it was at TAKE;
 * writing to the mounted image must leave the original alone.  Then the
 * same with almost no free memory while a large file is written back.
 */
#include <linux/fiemap.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/wait.h>

#include "blksnap_util.h"
#include "blksnap_data.h"
#include "kselftest_harness.h"

#define ORIG "/dev/vdc"
#define STORE "/dev/vdd"
#define NFILES 16
#define FSIZE (256 << 10)

static volatile int stop_writer;

static int write_file(const char *path, unsigned int seed)
{
	unsigned char *buf = malloc(FSIZE);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	int ret = -1;

	if (buf && fd >= 0) {
		pattern(buf, FSIZE, 0, seed);
		if (write(fd, buf, FSIZE) == FSIZE && !fsync(fd))
			ret = 0;
	}
	if (fd >= 0)
		close(fd);
	free(buf);
	return ret;
}

static uint64_t file_sum(const char *path)
{
	unsigned char *buf = malloc(FSIZE);
	int fd = open(path, O_RDONLY);
	uint64_t h = 0;

	if (buf && fd >= 0 && read(fd, buf, FSIZE) == FSIZE)
		h = fnv(buf, FSIZE);
	if (fd >= 0)
		close(fd);
	free(buf);
	return h;
}

/* Keeps rewriting its own files: the file system is busy during TAKE. */
static void *busy_writer(void *arg)
{
	char path[64];
	unsigned int seed = 1000;

	(void)arg;
	while (!stop_writer) {
		snprintf(path, sizeof(path), "/mnt/c/busy%u", seed % 8);
		write_file(path, seed++);
	}
	return NULL;
}

/* Appends the extents of `path` (on device `dev`) as storage. */
static int append_file_extents(int ctl, const struct blk_snap_uuid *id, const char *path,
			       const char *dev)
{
	size_t n = 256;
	struct fiemap *fm = calloc(1, sizeof(*fm) + n * sizeof(struct fiemap_extent));
	struct blk_snap_block_range *r = calloc(n, sizeof(*r));
	struct blk_snap_snapshot_append_storage a = { .id = *id, .ranges = r };
	int fd = open(path, O_RDONLY), ret = -1;

	if (!fm || !r || fd < 0 || dev_id(dev, &a.dev_id))
		goto out;
	fm->fm_length = ~0ULL;
	fm->fm_flags = FIEMAP_FLAG_SYNC;
	fm->fm_extent_count = n;
	if (ioctl(fd, FS_IOC_FIEMAP, fm))
		goto out;
	for (unsigned int i = 0; i < fm->fm_mapped_extents; i++) {
		struct fiemap_extent *e = &fm->fm_extents[i];

		if (e->fe_flags & (FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC |
				   FIEMAP_EXTENT_ENCODED | FIEMAP_EXTENT_NOT_ALIGNED |
				   FIEMAP_EXTENT_DATA_INLINE | FIEMAP_EXTENT_SHARED))
			goto out;
		r[a.count].sector_offset = e->fe_physical / 512;
		r[a.count].sector_count = e->fe_length / 512;
		a.count++;
	}
	ret = xioctl(ctl, IOCTL_BLK_SNAP_SNAPSHOT_APPEND_STORAGE, &a);
out:
	if (fd >= 0)
		close(fd);
	free(fm);
	free(r);
	return ret;
}

FIXTURE(fs) {
	int fd;
	struct blk_snap_dev orig;
};

FIXTURE_SETUP(fs)
{
	self->fd = open(BLK_SNAP_CTL, O_RDWR);
	if (self->fd < 0)
		SKIP(return, BLK_SNAP_CTL " missing: module not loaded");
	if (dev_id(ORIG, &self->orig) || access(STORE, F_OK))
		SKIP(return, "ext4 test disks missing");
	blksnap_reset(self->fd);
	mkdir("/mnt/c", 0755);
	mkdir("/mnt/d", 0755);
	mkdir("/mnt/img", 0755);
	ASSERT_EQ(0, mount(ORIG, "/mnt/c", "ext4", 0, NULL));
	ASSERT_EQ(0, mount(STORE, "/mnt/d", "ext4", 0, NULL));
}

FIXTURE_TEARDOWN(fs)
{
	umount("/mnt/img");
	umount("/mnt/c");
	umount("/mnt/d");
	if (self->fd >= 0) {
		blksnap_reset(self->fd);
		close(self->fd);
	}
}

TEST_F_TIMEOUT(fs, image_mounts_with_files_as_at_take, 120)
{
	struct blk_snap_uuid id;
	uint64_t want[NFILES];
	char path[64], img[160];
	pthread_t th;
	int sfd;

	for (int i = 0; i < NFILES; i++) {
		snprintf(path, sizeof(path), "/mnt/c/f%d", i);
		ASSERT_EQ(0, write_file(path, i + 1));
		want[i] = file_sum(path);
	}
	sync();
	/* Storage: a 64 MiB file on the other file system. */
	sfd = open("/mnt/d/diff-storage", O_RDWR | O_CREAT, 0600);
	ASSERT_LE(0, sfd);
	ASSERT_EQ(0, fallocate(sfd, 0, 0, 64 << 20));
	close(sfd);

	stop_writer = 0;
	ASSERT_EQ(0, pthread_create(&th, NULL, busy_writer, NULL));
	ASSERT_EQ(0, snapshot_create(self->fd, &self->orig, 1, &id));
	ASSERT_EQ(0, append_file_extents(self->fd, &id, "/mnt/d/diff-storage", STORE));
	ASSERT_EQ(0, take(self->fd, &id));
	/* After TAKE every checked file changes on the original. */
	for (int i = 0; i < NFILES; i++) {
		snprintf(path, sizeof(path), "/mnt/c/f%d", i);
		ASSERT_EQ(0, write_file(path, 100 + i));
	}
	stop_writer = 1;
	pthread_join(th, NULL);
	sync();

	ASSERT_EQ(0, image_path(self->fd, &id, &self->orig, img, sizeof(img)));
	ASSERT_EQ(0, mount(img, "/mnt/img", "ext4", MS_RDONLY, NULL));
	for (int i = 0; i < NFILES; i++) {
		snprintf(path, sizeof(path), "/mnt/img/f%d", i);
		EXPECT_EQ(want[i], file_sum(path)) {
			TH_LOG("%s differs from its state at TAKE", path);
		}
	}
	ASSERT_EQ(0, umount("/mnt/img"));

	/* Read-write: the image takes writes of its own. */
	ASSERT_EQ(0, mount(img, "/mnt/img", "ext4", 0, NULL));
	ASSERT_EQ(0, write_file("/mnt/img/only-in-image", 7));
	EXPECT_EQ(want[3], file_sum("/mnt/img/f3"));
	ASSERT_EQ(0, umount("/mnt/img"));
	EXPECT_NE(0, access("/mnt/c/only-in-image", F_OK));
	snprintf(path, sizeof(path), "/mnt/c/f%d", 3);
	EXPECT_NE(want[3], file_sum(path));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
	unlink("/mnt/d/diff-storage");
}

/* MemAvailable, in bytes. */
static uint64_t mem_available(void)
{
	FILE *f = fopen("/proc/meminfo", "r");
	unsigned long long kb = 0;
	char line[128];

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
			break;
	if (f)
		fclose(f);
	return kb * 1024;
}

/*
 * Starts a process that locks all of the available memory but @leave
 * bytes (no swap in the VM: locked memory cannot be reclaimed), and waits
 * until it holds it.  Returns its pid, or -1.
 */
static pid_t memory_hog(uint64_t leave)
{
	int p[2];
	char c = 0;
	pid_t pid;

	if (pipe(p))
		return -1;
	pid = fork();
	if (pid == 0) {
		uint64_t avail = mem_available();
		size_t len = avail > leave ? avail - leave : 0;
		FILE *adj = fopen("/proc/self/oom_score_adj", "w");
		char *m;

		if (adj) {
			fputs("1000", adj);
			fclose(adj);
		}
		m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (m == MAP_FAILED || mlock(m, len))
			_exit(1);
		c = 1;
		if (write(p[1], &c, 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	close(p[1]);
	if (pid < 0 || read(p[0], &c, 1) != 1 || c != 1) {
		if (pid > 0) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
		}
		pid = -1;
	}
	close(p[0]);
	return pid;
}

/*
 * Copy on write keeps going when memory is short and the tracked device is
 * the one the kernel writes dirty pages back to: with all but 64 MiB of
 * memory locked away, 64 MiB of new file data and rewrites of the checked
 * files go through writeback to the snapshotted file system.  No copy may
 * fail (no corrupted event), the image must mount with every file as at
 * TAKE, and the original must hold what was written.
 */
TEST_F_TIMEOUT(fs, writeback_under_memory_pressure_keeps_image_whole, 360)
{
	struct blk_snap_snapshot_event *ev = calloc(1, sizeof(*ev));
	const size_t big = 64 << 20, step = 1 << 20;
	struct blk_snap_uuid id;
	uint64_t want[NFILES];
	unsigned char *buf = malloc(step), *back = malloc(step);
	char path[64], img[160];
	int corrupted = 0, sfd, bfd;
	pid_t hog;

	ASSERT_NE(NULL, ev);
	ASSERT_NE(NULL, buf);
	ASSERT_NE(NULL, back);
	for (int i = 0; i < NFILES; i++) {
		snprintf(path, sizeof(path), "/mnt/c/f%d", i);
		ASSERT_EQ(0, write_file(path, 300 + i));
		want[i] = file_sum(path);
	}
	unlink("/mnt/c/big");
	sync();
	sfd = open("/mnt/d/diff-storage", O_RDWR | O_CREAT, 0600);
	ASSERT_LE(0, sfd);
	ASSERT_EQ(0, fallocate(sfd, 0, 0, 120 << 20));
	close(sfd);
	ASSERT_EQ(0, snapshot_create(self->fd, &self->orig, 1, &id));
	ASSERT_EQ(0, append_file_extents(self->fd, &id, "/mnt/d/diff-storage", STORE));
	ASSERT_EQ(0, take(self->fd, &id));

	hog = memory_hog(64 << 20);
	ASSERT_LT(0, hog);
	TH_LOG("memory available with the hog: %llu MiB",
	       (unsigned long long)(mem_available() >> 20));
	bfd = open("/mnt/c/big", O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ASSERT_LE(0, bfd);
	for (size_t off = 0; off < big; off += step) {
		pattern(buf, step, off, 77);
		ASSERT_EQ((ssize_t)step, write(bfd, buf, step));
	}
	for (int i = 0; i < NFILES; i++) {
		snprintf(path, sizeof(path), "/mnt/c/f%d", i);
		ASSERT_EQ(0, write_file(path, 400 + i));
	}
	ASSERT_EQ(0, fsync(bfd));
	close(bfd);
	sync();
	kill(hog, SIGKILL);
	waitpid(hog, NULL, 0);

	while (next_event(self->fd, &id, 0, ev) == 0)
		corrupted |= ev->code == blk_snap_event_code_corrupted;
	EXPECT_EQ(0, corrupted);
	/* The original holds what was written. */
	bfd = open("/mnt/c/big", O_RDONLY);
	ASSERT_LE(0, bfd);
	for (size_t off = 0; off < big; off += step) {
		pattern(buf, step, off, 77);
		ASSERT_EQ((ssize_t)step, read(bfd, back, step));
		ASSERT_EQ(0, memcmp(buf, back, step)) {
			TH_LOG("/mnt/c/big differs at %zu MiB", off >> 20);
		}
	}
	close(bfd);
	/* The image holds every file as at TAKE, and no big file. */
	ASSERT_EQ(0, image_path(self->fd, &id, &self->orig, img, sizeof(img)));
	ASSERT_EQ(0, mount(img, "/mnt/img", "ext4", MS_RDONLY, NULL));
	for (int i = 0; i < NFILES; i++) {
		snprintf(path, sizeof(path), "/mnt/img/f%d", i);
		EXPECT_EQ(want[i], file_sum(path)) {
			TH_LOG("%s differs from its state at TAKE", path);
		}
	}
	EXPECT_NE(0, access("/mnt/img/big", F_OK));
	ASSERT_EQ(0, umount("/mnt/img"));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
	unlink("/mnt/c/big");
	unlink("/mnt/d/diff-storage");
	free(ev);
	free(buf);
	free(back);
}

/* Writes `mib` MiB of pattern `seed` to a new file `path` (synced). */
static int write_big(const char *path, unsigned int mib, unsigned int seed)
{
	unsigned char *buf = malloc(1 << 20);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644), ret = -1;

	if (buf && fd >= 0) {
		unsigned int i;

		for (i = 0; i < mib; i++) {
			pattern(buf, 1 << 20, (uint64_t)i << 20, seed);
			if (write(fd, buf, 1 << 20) != 1 << 20)
				break;
		}
		if (i == mib && !fsync(fd))
			ret = 0;
	}
	if (fd >= 0)
		close(fd);
	free(buf);
	return ret;
}

/* Checksum of a whole file, read in 1 MiB pieces (0 if it cannot be read). */
static uint64_t big_sum(const char *path)
{
	unsigned char *buf = malloc(1 << 20);
	int fd = open(path, O_RDONLY);
	uint64_t h = 1469598103934665603ULL;
	ssize_t n = -1;

	while (buf && fd >= 0 && (n = read(fd, buf, 1 << 20)) > 0)
		h = h * 31 + fnv(buf, n);
	if (fd >= 0)
		close(fd);
	free(buf);
	return n == 0 ? h : 0;
}

/* A file of `mib` MiB allocated (not written) and synced. */
static int allocate(const char *path, unsigned int mib)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600), ret = -1;

	if (fd >= 0 && !fallocate(fd, 0, 0, (off_t)mib << 20) && !fsync(fd))
		ret = 0;
	if (fd >= 0)
		close(fd);
	return ret;
}

/*
 * One file system on the host: the storage is a file on the very file
 * system being snapshotted (/dev/vdd). A large file deleted after TAKE
 * frees blocks that storage allocated after TAKE could get; copy on write
 * into them would change the deleted file as the image shows it. Storage
 * there is taken before TAKE only: the append after TAKE is refused, and
 * the file in the image keeps its checksum at TAKE.
 */
TEST_F_TIMEOUT(fs, storage_on_the_snapshotted_file_system, 420)
{
	struct blk_snap_dev dev;
	struct blk_snap_uuid id;
	char img[160];
	uint64_t sum;

	ASSERT_EQ(0, dev_id(STORE, &dev));
	ASSERT_EQ(0, write_big("/mnt/d/big", 150, 61));
	sum = big_sum("/mnt/d/big");
	ASSERT_NE(0, sum);
	ASSERT_EQ(0, allocate("/mnt/d/s0", 96));
	ASSERT_EQ(0, snapshot_create(self->fd, &dev, 1, &id));
	ASSERT_EQ(0, append_file_extents(self->fd, &id, "/mnt/d/s0", STORE));
	ASSERT_EQ(0, take(self->fd, &id));
	ASSERT_EQ(0, image_path(self->fd, &id, &dev, img, sizeof(img)));

	/* The big file goes; storage grown now may get its blocks. */
	ASSERT_EQ(0, unlink("/mnt/d/big"));
	sync();
	ASSERT_EQ(0, allocate("/mnt/d/s1", 150));
	EXPECT_EQ(-EINVAL, append_file_extents(self->fd, &id, "/mnt/d/s1", STORE));
	ASSERT_EQ(0, unlink("/mnt/d/s1"));
	sync();
	/* New data, likely where the big file was: copied on write. */
	ASSERT_EQ(0, write_big("/mnt/d/new", 40, 62));
	sync();

	ASSERT_EQ(0, mount(img, "/mnt/img", "ext4", MS_RDONLY, NULL));
	EXPECT_EQ(sum, big_sum("/mnt/img/big"));
	ASSERT_EQ(0, umount("/mnt/img"));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
	unlink("/mnt/d/new");
	unlink("/mnt/d/s0");
}

/*
 * fstrim on a snapshotted ext4 (/dev/vdc): files deleted after TAKE, their
 * blocks trimmed (discards through the filter), new files written there.
 * The image keeps every deleted file as it was at TAKE. The module cannot
 * tell free blocks from others: a trim after TAKE copies what it discards,
 * so the storage must hold the file system's free space.
 */
TEST_F_TIMEOUT(fs, fstrim_after_take_keeps_deleted_files, 240)
{
	struct fstrim_range range = { .start = 0, .len = ~0ULL, .minlen = 0 };
	struct blk_snap_uuid id;
	uint64_t want[NFILES];
	char path[64], img[160];
	int mfd;

	for (int i = 0; i < NFILES; i++) {
		snprintf(path, sizeof(path), "/mnt/c/t%d", i);
		ASSERT_EQ(0, write_file(path, 300 + i));
		want[i] = file_sum(path);
	}
	sync();
	/* Trimming the free space after TAKE copies all of it first. */
	ASSERT_EQ(0, allocate("/mnt/d/trim-storage", 160));
	ASSERT_EQ(0, snapshot_create(self->fd, &self->orig, 1, &id));
	ASSERT_EQ(0, append_file_extents(self->fd, &id, "/mnt/d/trim-storage", STORE));
	ASSERT_EQ(0, take(self->fd, &id));
	for (int i = 0; i < NFILES; i++) {
		snprintf(path, sizeof(path), "/mnt/c/t%d", i);
		ASSERT_EQ(0, unlink(path));
	}
	sync();
	mfd = open("/mnt/c", O_RDONLY | O_DIRECTORY);
	ASSERT_LE(0, mfd);
	EXPECT_EQ(0, ioctl(mfd, FITRIM, &range));
	close(mfd);
	for (int i = 0; i < NFILES; i++) {
		snprintf(path, sizeof(path), "/mnt/c/n%d", i);
		ASSERT_EQ(0, write_file(path, 400 + i));
	}
	sync();

	ASSERT_EQ(0, image_path(self->fd, &id, &self->orig, img, sizeof(img)));
	ASSERT_EQ(0, mount(img, "/mnt/img", "ext4", MS_RDONLY, NULL));
	for (int i = 0; i < NFILES; i++) {
		snprintf(path, sizeof(path), "/mnt/img/t%d", i);
		EXPECT_EQ(want[i], file_sum(path)) {
			TH_LOG("%s differs from its state at TAKE", path);
		}
	}
	ASSERT_EQ(0, umount("/mnt/img"));
	EXPECT_EQ(0, snapshot_destroy(self->fd, &id));
	for (int i = 0; i < NFILES; i++) {
		snprintf(path, sizeof(path), "/mnt/c/n%d", i);
		unlink(path);
	}
	unlink("/mnt/d/trim-storage");
}

TEST_HARNESS_MAIN
