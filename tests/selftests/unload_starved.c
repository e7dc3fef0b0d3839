// SPDX-License-Identifier: GPL-2.0
/*
 * Runs just before kmemleak.sh: leaves a taken snapshot whose copies wait
 * for storage (with a wait far longer than any test), and a writer blocked
 * on them in a process of its own.  kmemleak.sh then unloads the module,
 * which must end the waits at once and let the write through.
 *
 * Disks: /dev/vda is the original; storage lies on /dev/vdb2.
 */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>

#include "blksnap_util.h"
#include "blksnap_data.h"
#include "kselftest_harness.h"

/* Where the writer says how its write ended, for kmemleak.sh. */
#define WRITER_RESULT "/tmp/unload-writer.result"
#define WRITER_STARTED "/tmp/unload-writer.started"

FIXTURE(unl) {
	int fd;
	struct blk_snap_dev a;
	struct blk_snap_snapshot_event *ev;
};

FIXTURE_SETUP(unl)
{
	self->fd = open(BLK_SNAP_CTL, O_RDWR);
	if (self->fd < 0)
		SKIP(return, BLK_SNAP_CTL " missing: module not loaded");
	if (dev_id(DISK_A, &self->a))
		SKIP(return, "test disks missing");
	self->ev = calloc(1, sizeof(*self->ev));
	ASSERT_NE(NULL, self->ev);
	blksnap_reset(self->fd);
}

FIXTURE_TEARDOWN(unl)
{
	if (self->fd >= 0)
		close(self->fd);
	free(self->ev);
}

/* The writer: one 16 MiB O_DIRECT write; records "ok" or "failed". */
static void writer(void)
{
	unsigned char *buf;
	const size_t len = 16 << 20;
	const uint64_t off = 128ULL << 20;
	int fd = open(DISK_A, O_RDWR | O_DIRECT);
	int ok = 0;
	FILE *f;

	if (fd >= 0 && !posix_memalign((void **)&buf, 4096, len)) {
		pattern(buf, len, off, 91);
		ok = pwrite(fd, buf, len, off) == (ssize_t)len;
	}
	f = fopen(WRITER_RESULT, "w");
	if (f) {
		fputs(ok ? "ok\n" : "failed\n", f);
		fclose(f);
	}
	_exit(0);
}

TEST_F_TIMEOUT(unl, starved_snapshot_left_for_unload, 120)
{
	struct blk_snap_uuid id;
	pid_t pid;

	unlink(WRITER_RESULT);
	set_param("diff_storage_wait_ms", 1000000);
	ASSERT_EQ(0, snapshot_create(self->fd, &self->a, 1, &id));
	ASSERT_EQ(0, next_event(self->fd, &id, 1000, self->ev));
	ASSERT_EQ(0, append_storage(self->fd, &id, PART_B2, 0, 1 << 11));
	ASSERT_EQ(0, take(self->fd, &id));
	/* A writer in a session of its own, which outlives this test. */
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);

		/*
		 * Neither the control device (it would hold the module) nor
		 * the test's output pipe stays open in it.
		 */
		close(self->fd);
		setsid();
		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
		if (fork() == 0)
			writer();
		_exit(0);
	}
	waitpid(pid, NULL, 0);
	close(open(WRITER_STARTED, O_WRONLY | O_CREAT, 0644));
	/* Its copies began; the first allocation asks for more storage. */
	ASSERT_EQ(0, next_event(self->fd, &id, 60000, self->ev));
	EXPECT_EQ(blk_snap_event_code_low_free_space, self->ev->code);
	EXPECT_NE(0, access(WRITER_RESULT, F_OK));
}

TEST_HARNESS_MAIN
