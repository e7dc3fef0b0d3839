#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# The incremental chain of `blksnap backup` across the wrap of the change
# numbers: a full backup, 250-odd snapshots later an incremental whose TAKE
# wraps the numbers (previous number 255, new generation), then the next
# incremental with what that one printed. Each copy must equal the device
# byte for byte. And what cannot continue a chain says so with exit 5,
# never copying nothing with success.
. "$(dirname "$0")/lib.sh"

[ -c /dev/blksnap ] || { echo "1..0 # SKIP /dev/blksnap missing"; exit $KSFT_SKIP; }
DEV=/dev/vdh
D=/mnt/chain
T=$D/chain.img
tap_plan 9

mkdir -p $D
mount /dev/vdd $D || tap_diag "cannot mount /dev/vdd"
mkdir -p $D/storage
rm -f $T
blksnap tracker remove $DEV 2>/dev/null
# Some data: 8 MiB of a pattern, written through the page cache and synced.
dd if=/dev/urandom of=$DEV bs=1M count=8 2>/dev/null
sync

# field NAME JSON: the value of "NAME" in the tool's JSON output.
field() { echo "$2" | sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p"; }
backup() { blksnap --json backup $DEV --target $T --storage-dir $D/storage --storage-step 16M "$@"; }

out=$(backup)
check "full backup (exit $?)" [ -n "$out" ]
since=$(field next_since "$out")
gen=$(field generation "$out")
check "the copy equals the device" cmp -s $T $DEV

# Move the numbers on until the last snapshot taken is 254: the next TAKE
# (the incremental's) wraps them.
/tests/take_n $DEV /dev/vdb2 $((254 - since))
dd if=/dev/urandom of=$DEV bs=64K count=4 seek=20 2>/dev/null
sync
out=$(backup --since "$since" --generation "$gen")
rc=$?
check "the incremental whose TAKE wraps the numbers (exit $rc)" [ "$rc" = 0 ]
since2=$(field next_since "$out")
gen2=$(field generation "$out")
check "it asks the next one for changes since 0 of a new generation (got $since2)" \
	sh -c "[ '$since2' = 0 ] && [ '$gen2' != '$gen' ]"
check "the copy equals the device" cmp -s $T $DEV

dd if=/dev/urandom of=$DEV bs=64K count=4 seek=100 2>/dev/null
sync
out=$(backup --since "$since2" --generation "$gen2")
rc=$?
copied=$(field copied "$out")
check "the incremental after the wrap copies the change (exit $rc, $copied bytes)" \
	sh -c "[ $rc = 0 ] && [ '$copied' -ge 262144 ]"
check "the copy equals the device" cmp -s $T $DEV

# What cannot continue the chain: exit 5, not a silent empty copy.
backup --since 200 --generation "$gen2" >/dev/null 2>&1
rc=$?
check "--since above the last snapshot needs a full backup (exit $rc)" [ "$rc" = 5 ]
backup --since 0 --generation "$gen" >/dev/null 2>&1
rc=$?
check "an old generation needs a full backup (exit $rc)" [ "$rc" = 5 ]

rm -rf $T $D/storage
blksnap tracker remove $DEV 2>/dev/null
umount $D
tap_exit
