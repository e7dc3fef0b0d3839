// SPDX-License-Identifier: GPL-2.0
/*
 * The control device's ioctl dispatch: VERSION, unknown numbers, bad user
 * pointers and callers without CAP_SYS_ADMIN.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/blksnap-persist.h>

#include "kselftest_harness.h"

FIXTURE(ctl) {
	int fd;
};

FIXTURE_SETUP(ctl)
{
	self->fd = open(BLK_SNAP_CTL, O_RDWR);
	if (self->fd < 0 && errno == ENOENT)
		SKIP(return, BLK_SNAP_CTL " missing: module not loaded");
	ASSERT_LE(0, self->fd);
}

FIXTURE_TEARDOWN(ctl)
{
	if (self->fd >= 0)
		close(self->fd);
}

TEST_F_TIMEOUT(ctl, version, 60)
{
	struct blk_snap_version v;

	memset(&v, 0xa5, sizeof(v));
	ASSERT_EQ(0, ioctl(self->fd, IOCTL_BLK_SNAP_VERSION, &v));
	EXPECT_EQ(1, v.major);
	EXPECT_EQ(0, v.minor);
	EXPECT_EQ(0, v.revision);
	EXPECT_EQ(0, v.build);
}

TEST_F_TIMEOUT(ctl, device_node_is_admin_only, 60)
{
	struct stat st;

	ASSERT_EQ(0, fstat(self->fd, &st));
	EXPECT_TRUE(S_ISCHR(st.st_mode));
	EXPECT_EQ(0600, st.st_mode & 07777);
	EXPECT_EQ(0, st.st_uid);
}

TEST_F_TIMEOUT(ctl, unknown_ioctl_is_enotty, 60)
{
	struct blk_snap_version v;
	char big[64] = { 0 };
	unsigned long numbers[] = {
		_IOW(BLK_SNAP, 12, struct blk_snap_version),	/* nr past the last */
		_IOW(BLK_SNAP, 255, struct blk_snap_version),
		_IOW('W', 0, struct blk_snap_version),		/* other type */
		_IOR(BLK_SNAP, 0, struct blk_snap_version),	/* other direction */
		_IOWR(BLK_SNAP, 0, struct blk_snap_version),
		_IOW(BLK_SNAP, 0, uint32_t),			/* other size */
		_IO(BLK_SNAP, 0),
		0,
		TCGETS,
	};

	for (size_t i = 0; i < sizeof(numbers) / sizeof(numbers[0]); i++) {
		errno = 0;
		EXPECT_EQ(-1, ioctl(self->fd, numbers[i], big)) {
			TH_LOG("ioctl 0x%lx", numbers[i]);
		}
		EXPECT_EQ(ENOTTY, errno) {
			TH_LOG("ioctl 0x%lx", numbers[i]);
		}
	}
	/* The right number still works afterwards. */
	EXPECT_EQ(0, ioctl(self->fd, IOCTL_BLK_SNAP_VERSION, &v));
}

TEST_F_TIMEOUT(ctl, null_pointer_is_efault, 60)
{
	errno = 0;
	EXPECT_EQ(-1, ioctl(self->fd, IOCTL_BLK_SNAP_VERSION, NULL));
	EXPECT_EQ(EFAULT, errno);
}

TEST_F_TIMEOUT(ctl, every_call_with_null_is_efault, 60)
{
	unsigned long all[] = {
		IOCTL_BLK_SNAP_VERSION, IOCTL_BLK_SNAP_TRACKER_REMOVE,
		IOCTL_BLK_SNAP_TRACKER_COLLECT, IOCTL_BLK_SNAP_TRACKER_READ_CBT_MAP,
		IOCTL_BLK_SNAP_TRACKER_MARK_DIRTY_BLOCKS, IOCTL_BLK_SNAP_SNAPSHOT_CREATE,
		IOCTL_BLK_SNAP_SNAPSHOT_DESTROY, IOCTL_BLK_SNAP_SNAPSHOT_APPEND_STORAGE,
		IOCTL_BLK_SNAP_SNAPSHOT_TAKE, IOCTL_BLK_SNAP_SNAPSHOT_COLLECT,
		IOCTL_BLK_SNAP_SNAPSHOT_COLLECT_IMAGES, IOCTL_BLK_SNAP_SNAPSHOT_WAIT_EVENT,
		/* The extensions (blksnap-persist.h). */
		IOCTL_BLK_SNAP_TRACKER_PERSIST, IOCTL_BLK_SNAP_TRACKER_DETACH,
		IOCTL_BLK_SNAP_TRACKER_PERSIST_STATUS,
	};

	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		errno = 0;
		EXPECT_EQ(-1, ioctl(self->fd, all[i], NULL));
		EXPECT_EQ(EFAULT, errno) {
			TH_LOG("ioctl 0x%lx", all[i]);
		}
	}
}

TEST_F_TIMEOUT(ctl, wild_pointers_are_efault, 60)
{
	void *unmapped;
	void *readonly;
	long page = sysconf(_SC_PAGESIZE);

	/* A page that was mapped and is gone. */
	unmapped = mmap(NULL, page, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, unmapped);
	ASSERT_EQ(0, munmap(unmapped, page));
	errno = 0;
	EXPECT_EQ(-1, ioctl(self->fd, IOCTL_BLK_SNAP_VERSION, unmapped));
	EXPECT_EQ(EFAULT, errno);

	/* A kernel address. */
	errno = 0;
	EXPECT_EQ(-1, ioctl(self->fd, IOCTL_BLK_SNAP_VERSION,
			    (void *)0xffff888000000000UL));
	EXPECT_EQ(EFAULT, errno);

	/* Read-only memory for a call that writes its answer. */
	readonly = mmap(NULL, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, readonly);
	errno = 0;
	EXPECT_EQ(-1, ioctl(self->fd, IOCTL_BLK_SNAP_VERSION, readonly));
	EXPECT_EQ(EFAULT, errno);
	munmap(readonly, page);

	/* The last bytes of a mapping: the structure runs off its end. */
	unmapped = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, unmapped);
	ASSERT_EQ(0, munmap((char *)unmapped + page, page));
	errno = 0;
	EXPECT_EQ(-1, ioctl(self->fd, IOCTL_BLK_SNAP_VERSION,
			    (char *)unmapped + page - 4));
	EXPECT_EQ(EFAULT, errno);
	munmap(unmapped, page);
}

/*
 * Runs fn in a child that has dropped root for the nobody user: no
 * capabilities left.  The child's exit status is the errno it saw, or 0.
 */
static int as_nobody(int fd, unsigned long nr, void *arg)
{
	pid_t pid = fork();
	int status;

	if (pid == 0) {
		if (setgid(65534) || setuid(65534))
			_exit(100);
		if (ioctl(fd, nr, arg) < 0)
			_exit(errno);
		_exit(0);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

TEST_F_TIMEOUT(ctl, unprivileged_caller_is_eperm, 60)
{
	struct blk_snap_tracker_collect collect = { 0 };
	struct blk_snap_snapshot_collect snaps = { 0 };
	struct blk_snap_tracker_remove rm = { 0 };

	EXPECT_EQ(EPERM, as_nobody(self->fd, IOCTL_BLK_SNAP_TRACKER_COLLECT, &collect));
	EXPECT_EQ(EPERM, as_nobody(self->fd, IOCTL_BLK_SNAP_SNAPSHOT_COLLECT, &snaps));
	EXPECT_EQ(EPERM, as_nobody(self->fd, IOCTL_BLK_SNAP_TRACKER_REMOVE, &rm));
}

TEST_F_TIMEOUT(ctl, unprivileged_version_is_allowed, 60)
{
	struct blk_snap_version v = { 0 };

	EXPECT_EQ(0, as_nobody(self->fd, IOCTL_BLK_SNAP_VERSION, &v));
}

TEST_HARNESS_MAIN
