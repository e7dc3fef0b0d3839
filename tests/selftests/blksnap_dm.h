/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Device-mapper devices for the selftests, made through the DM ioctls
 * directly: the test VM has no dmsetup.
 */
#ifndef BLKSNAP_DM_H
#define BLKSNAP_DM_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <linux/dm-ioctl.h>

struct dm_req {
	struct dm_ioctl io;
	struct dm_target_spec spec;
	char params[512];
};

static inline void dm_req_init(struct dm_req *r, const char *name)
{
	memset(r, 0, sizeof(*r));
	r->io.version[0] = DM_VERSION_MAJOR;
	r->io.data_size = sizeof(*r);
	r->io.data_start = sizeof(r->io);
	snprintf(r->io.name, sizeof(r->io.name), "%s", name);
}

static inline int dm_call(unsigned long nr, struct dm_req *r)
{
	int fd = open("/dev/mapper/control", O_RDWR);
	int ret;

	if (fd < 0)
		return -1;
	ret = ioctl(fd, nr, &r->io);
	close(fd);
	return ret;
}

/*
 * Loads a table of one target of @type over @sectors sectors into @name
 * and makes it live (a resume swaps it in, suspending the device first
 * if it is live): what lvreduce and lvextend do to an LV.
 */
static inline int dm_load(const char *name, const char *type, const char *params,
			  uint64_t sectors)
{
	struct dm_req r;

	dm_req_init(&r, name);
	r.io.target_count = 1;
	r.spec.sector_start = 0;
	r.spec.length = sectors;
	snprintf(r.spec.target_type, sizeof(r.spec.target_type), "%s", type);
	snprintf(r.params, sizeof(r.params), "%s", params);
	if (dm_call(DM_TABLE_LOAD, &r))
		return -1;
	dm_req_init(&r, name);
	return dm_call(DM_DEV_SUSPEND, &r);	/* no DM_SUSPEND_FLAG: resume */
}

/*
 * Creates /dev/dm-N named @name with one target of @type over @sectors
 * sectors, and activates it; its node goes to @path.
 */
static inline int dm_create(const char *name, const char *type, const char *params,
			    uint64_t sectors, char *path, size_t path_len)
{
	struct dm_req r;

	dm_req_init(&r, name);
	if (dm_call(DM_DEV_CREATE, &r))
		return -1;
	snprintf(path, path_len, "/dev/dm-%u", minor((dev_t)r.io.dev));
	if (dm_load(name, type, params, sectors))
		goto remove;
	/* devtmpfs makes the node; wait for it (a few ms). */
	for (int i = 0; i < 1000 && access(path, F_OK); i++)
		usleep(10000);
	return access(path, F_OK);
remove:
	dm_req_init(&r, name);
	dm_call(DM_DEV_REMOVE, &r);
	return -1;
}

static inline int dm_remove(const char *name)
{
	struct dm_req r;

	dm_req_init(&r, name);
	return dm_call(DM_DEV_REMOVE, &r);
}

#endif
