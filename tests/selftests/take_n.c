// SPDX-License-Identifier: GPL-2.0
/*
 * A helper of chain.sh, not a test: `take_n DEV STORAGE N` runs N snapshot
 * cycles (CREATE, APPEND_STORAGE, TAKE, DESTROY) on DEV, moving its change
 * tracking numbers on by N without writing anything.  Exits 0 or 1.
 */
#include <stdlib.h>

#include "blksnap_util.h"
#include "blksnap_data.h"

int main(int argc, char **argv)
{
	struct blk_snap_dev d;
	struct blk_snap_uuid id;
	int fd, n;

	if (argc != 4 || dev_id(argv[1], &d)) {
		fprintf(stderr, "usage: take_n DEV STORAGE N\n");
		return 1;
	}
	n = atoi(argv[3]);
	fd = open(BLK_SNAP_CTL, O_RDWR);
	if (fd < 0)
		return 1;
	for (int i = 0; i < n; i++) {
		if (snapshot_create(fd, &d, 1, &id) || append_storage(fd, &id, argv[2], 0, 2048) ||
		    take(fd, &id) || snapshot_destroy(fd, &id)) {
			fprintf(stderr, "take_n: cycle %d failed: %s\n", i, strerror(errno));
			return 1;
		}
	}
	close(fd);
	return 0;
}
