#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# The header probe: compiles tests/abi/probe.c against the reference header
# (BLKSNAP_SEED_HEADER, default ../shared/seed/blksnap.h beside the repo) and
# against include/uapi/linux/blksnap.h, runs the Rust mirror's probe, and
# requires all three outputs to be identical: every ioctl number, constant,
# structure size and alignment, and every field's offset and size.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
seed=${BLKSNAP_SEED_HEADER:-$top/../shared/seed/blksnap.h}
out=$top/build/abi
mkdir -p "$out"

probe() { # NAME HEADER
	gcc -std=gnu11 -Wall -Wextra -Werror -DBLKSNAP_HEADER="\"$2\"" \
		"$here/probe.c" -o "$out/probe-$1"
	"$out/probe-$1" >"$out/$1.txt"
}

probe ours "$top/include/uapi/linux/blksnap.h"
(cd "$top/tools" && cargo run --quiet --locked --example abi_probe) >"$out/rust.txt"
diff -u "$out/ours.txt" "$out/rust.txt" || { echo "Rust mirror differs from the header" >&2; exit 1; }
if [ -f "$seed" ]; then
	probe seed "$seed"
	diff -u "$out/seed.txt" "$out/ours.txt" || { echo "header differs from $seed" >&2; exit 1; }
	echo "ABI probe: $(grep -c . "$out/ours.txt") facts identical in the reference header, ours and the Rust mirror"
else
	echo "ABI probe: reference header $seed not found; compared ours with the Rust mirror only" >&2
fi
# Our header stands alone in C and C++ user space.
echo '#include <linux/blksnap.h>' | gcc -x c -std=c11 -Wall -Werror -I"$top/include/uapi" -fsyntax-only -
echo '#include <linux/blksnap.h>' | g++ -x c++ -std=c++11 -Wall -Werror -I"$top/include/uapi" -fsyntax-only -
# The extensions' header: the sizes and numbers the Rust mirror asserts.
cat >"$out/persist.c" <<'EOF'
#include <linux/blksnap-persist.h>
_Static_assert(sizeof(struct blk_snap_tracker_persist) == 136, "persist size");
_Static_assert(__builtin_offsetof(struct blk_snap_tracker_persist, generation) == 112, "generation");
_Static_assert(sizeof(struct blk_snap_tracker_detach) == 16, "detach size");
_Static_assert(IOCTL_BLK_SNAP_TRACKER_PERSIST == 0xc088560c, "persist number");
_Static_assert(IOCTL_BLK_SNAP_TRACKER_DETACH == 0x4010560d, "detach number");
_Static_assert(sizeof(struct blk_snap_tracker_persist_status) == 48, "status size");
_Static_assert(__builtin_offsetof(struct blk_snap_tracker_persist_status, checkpoint) == 32, "checkpoint");
_Static_assert(IOCTL_BLK_SNAP_TRACKER_PERSIST_STATUS == 0xc030560e, "status number");
_Static_assert(blk_snap_persist_unclean_shutdown == 9, "reason 9");
EOF
gcc -x c -std=c11 -Wall -Werror -I"$top/include/uapi" -fsyntax-only "$out/persist.c"
echo '#include <linux/blksnap-persist.h>' | g++ -x c++ -std=c++11 -Wall -Werror -I"$top/include/uapi" -fsyntax-only -
