#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# The incremental chain of `blksnap backup` across the wrap of the change
# numbers: a full backup, 250-odd snapshots later an incremental whose TAKE
# wraps the numbers (previous number 255, new generation), then the next
# incremental with what that one printed. Each copy must equal the device
# byte for byte. Two devices backed up at one instant keep a chain each.
# And what cannot continue a chain says so with exit 5, never copying
# nothing with success.
. "$(dirname "$0")/lib.sh"

[ -c /dev/blksnap ] || { echo "1..0 # SKIP /dev/blksnap missing"; exit $KSFT_SKIP; }
DEV=/dev/vdh
D=/mnt/chain
T=$D/chain.img
tap_plan 14

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

# --- two devices at one instant, each with a chain of its own -------------
T2=$D/chain-f.img
rm -f $T2
dd if=/dev/urandom of=/dev/vdf bs=1M count=4 2>/dev/null
sync
both() {
	blksnap --json backup $DEV /dev/vdf --target $T --target $T2 --storage-dir $D/storage \
		--storage-step 16M "$@"
}
# dev_field NAME JSON TARGET: "NAME" of the device backed up into TARGET.
dev_field() { echo "$2" | tr '{' '\n' | grep "\"target\":\"$3\"" | sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p"; }
out=$(both)
rc=$?
s1=$(dev_field next_since "$out" $T)
g1=$(dev_field generation "$out" $T)
s2=$(dev_field next_since "$out" $T2)
g2=$(dev_field generation "$out" $T2)
check "two devices backed up at one instant (exit $rc)" sh -c "[ $rc = 0 ] && [ -n '$g1' ] && [ -n '$g2' ]"
check "each has a chain of its own" [ "$g1" != "$g2" ]
dd if=/dev/urandom of=$DEV bs=64K count=2 seek=300 2>/dev/null
dd if=/dev/urandom of=/dev/vdf bs=64K count=2 seek=30 2>/dev/null
sync
both --since "$s1" --generation "$g1" --since "$s2" --generation "$g2" >/dev/null
rc=$?
check "the incremental of both, each from its own chain (exit $rc)" [ "$rc" = 0 ]
check "both copies equal their devices" sh -c "cmp -s $T $DEV && cmp -s $T2 /dev/vdf"

# A target's manifest names its device: another device's backup into it
# is refused (exit 5), not an incremental onto the wrong copy.
blksnap backup /dev/vdf --target $T --storage-dir $D/storage >/dev/null 2>&1
rc=$?
check "a target holding another device's copy needs --full (exit $rc)" [ "$rc" = 5 ]

rm -rf $T $T2 $T.blksnap.json $T2.blksnap.json $D/storage
blksnap tracker remove $DEV 2>/dev/null
blksnap tracker remove /dev/vdf 2>/dev/null
umount $D
tap_exit
