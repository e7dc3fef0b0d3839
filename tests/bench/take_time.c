// SPDX-License-Identifier: GPL-2.0
/*
 * take_time ORIGINAL STORAGE: times SNAPSHOT_CREATE (which starts tracking
 * the device), APPEND_STORAGE of 64 MiB of STORAGE and SNAPSHOT_TAKE, and
 * prints the nanoseconds of the three, then of CREATE alone and of TAKE
 * alone; then destroys the snapshot (the tracker stays).
 * make bench runs it on a 1 TiB and a 1 GiB disk: their times should not
 * differ by more than the CBT map's share.
 */
#include <stdio.h>

#include "blksnap_util.h"
#include "blksnap_data.h"

int main(int argc, char **argv)
{
	struct blk_snap_uuid id;
	struct blk_snap_dev dev;
	int64_t t0, t1, t2, t3;
	int fd, ret;

	if (argc != 3 || dev_id(argv[1], &dev)) {
		fprintf(stderr, "usage: take_time ORIGINAL STORAGE\n");
		return 2;
	}
	fd = open(BLK_SNAP_CTL, O_RDWR);
	if (fd < 0) {
		perror(BLK_SNAP_CTL);
		return 1;
	}
	t0 = now_ns();
	ret = snapshot_create(fd, &dev, 1, &id);
	t1 = now_ns();
	if (!ret)
		ret = append_storage(fd, &id, argv[2], 0, 64 << 11);
	t2 = now_ns();
	if (!ret)
		ret = take(fd, &id);
	t3 = now_ns();
	if (ret) {
		fprintf(stderr, "take_time %s: error %d\n", argv[1], ret);
		return 1;
	}
	snapshot_destroy(fd, &id);
	printf("%lld %lld %lld\n", (long long)(t3 - t0), (long long)(t1 - t0),
	       (long long)(t3 - t2));
	return 0;
}
