#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# The module parameters are visible, with their defaults, and writable.
. "$(dirname "$0")/lib.sh"

P=/sys/module/blksnap/parameters
[ -d "$P" ] || { echo "1..0 # SKIP $P missing: module not loaded"; exit $KSFT_SKIP; }

defaults="tracking_block_minimum_shift=16 tracking_block_maximum_shift=26
tracking_block_maximum_count=2097152 chunk_minimum_shift=18 chunk_maximum_shift=26
chunk_maximum_count=2097152 chunk_maximum_in_cache=32 free_diff_buffer_pool_size=128
diff_storage_minimum=2097152 diff_storage_wait_ms=5000"

tap_plan 12
for kv in $defaults; do
	name=${kv%%=*}
	want=${kv#*=}
	got=$(cat "$P/$name" 2>/dev/null)
	check "$name is $want (got ${got:-nothing})" test "$got" = "$want"
done
echo 1234 >"$P/diff_storage_wait_ms"
check "diff_storage_wait_ms is writable" test "$(cat $P/diff_storage_wait_ms)" = 1234
echo 5000 >"$P/diff_storage_wait_ms"
mode=$(stat -c %a "$P/diff_storage_minimum")
check "parameters are root-writable (mode $mode)" test "$mode" = 644
tap_exit
