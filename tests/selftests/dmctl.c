// SPDX-License-Identifier: GPL-2.0
/*
 * dmctl: the device-mapper calls that the shell selftests need (the test
 * VM has no dmsetup). Not a test itself: tests/vm/list does not name it.
 *
 *   dmctl create NAME TYPE SECTORS PARAMS   makes the device, prints its node
 *   dmctl load NAME TYPE SECTORS PARAMS     swaps a new table in
 *   dmctl remove NAME
 */
#include <stdlib.h>

#include "blksnap_dm.h"

int main(int argc, char **argv)
{
	char path[64];

	if (argc == 6 && !strcmp(argv[1], "create")) {
		if (dm_create(argv[2], argv[3], argv[5], strtoull(argv[4], NULL, 0),
			      path, sizeof(path))) {
			perror("dmctl create");
			return 1;
		}
		printf("%s\n", path);
		return 0;
	}
	if (argc == 6 && !strcmp(argv[1], "load")) {
		if (dm_load(argv[2], argv[3], argv[5], strtoull(argv[4], NULL, 0))) {
			perror("dmctl load");
			return 1;
		}
		return 0;
	}
	if (argc == 3 && !strcmp(argv[1], "remove")) {
		if (dm_remove(argv[2])) {
			perror("dmctl remove");
			return 1;
		}
		return 0;
	}
	fprintf(stderr, "usage: dmctl create|load NAME TYPE SECTORS PARAMS | dmctl remove NAME\n");
	return 2;
}
