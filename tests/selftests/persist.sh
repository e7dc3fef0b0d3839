#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Change tracking across a module reload, with a CBT store
# (Documentation/persistence.rst): a full backup, `blksnap tracker persist`,
# writes, rmmod (which seals the store) and insmod, persist again: the
# next incremental goes on and copies only what was written. And what
# must start afresh does, saying why, so that the next backup is a full
# one and never a stale incremental: a write while the module was out, a
# damaged store, a removal without a seal. DETACH seals without rmmod.
# Writes with a store wait until their write-intent marks are durable
# (tracker status counts the flushes); a store on a failing device
# (dm-flakey) stops the marks, loses nothing, and is whole again after a
# seal; a store on the tracked device's own file system (the one-disk
# host) attaches, seals and goes on under writes. reboot.sh cuts the
# power.
. "$(dirname "$0")/lib.sh"

[ -c /dev/blksnap ] || { echo "1..0 # SKIP /dev/blksnap missing"; exit $KSFT_SKIP; }
KO=/lib/modules/blksnap.ko
DEV=/dev/vdh
D=/mnt/persist
T=$D/p.img
S=$D/p.store
tap_plan 24

mkdir -p $D
mount /dev/vdd $D || tap_diag "cannot mount /dev/vdd"
rm -rf $D/storage $T* $S
mkdir -p $D/storage
blksnap tracker remove $DEV 2>/dev/null
dd if=/dev/urandom of=$DEV bs=1M count=8 2>/dev/null
sync

sum() { md5sum <"$1" | cut -d' ' -f1; }
backup() { blksnap --json backup $DEV --target $T --storage-dir $D/storage --storage-step 16M "$@"; }
field() { echo "$2" | sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p"; }
persist() { blksnap --json tracker persist $DEV --store $S --identity test-vdh 2>&1; }
reload() {
	rmmod blksnap && insmod $KO
}
# incremental NAME: the next backup must be an incremental that equals
# the device.
incremental() {
	out=$(backup 2>>/tmp/persist.log)
	rc=$?
	check "$1 (exit $rc)" \
		sh -c "[ $rc = 0 ] && echo '$out' | grep -q '\"kind\":\"incremental\"' && [ '$(sum $T)' = '$(sum $DEV)' ]"
}
# write MIB SEEK: random data at a MiB offset, direct.
write() { dd if=/dev/urandom of=$DEV bs=1M count="$1" seek="$2" oflag=direct 2>/dev/null; }

out=$(backup 2>/tmp/persist.log)
check "full backup (exit $?)" [ "$(sum $T)" = "$(sum $DEV)" ]
out=$(persist)
check "persist on a tracked device keeps its maps ($(field reason "$out"))" \
	sh -c "echo '$out' | grep -q '\"reset\":8'"
out=$(blksnap tracker persist /dev/vdb2 --store $S --identity other 2>&1)
rc=$?
check "the same store for another device is refused (exit $rc)" \
	sh -c "[ $rc = 1 ] && echo '$out' | grep -q EBUSY"
write 1 10
out=$(blksnap --json tracker status $DEV 2>&1)
flushes=$(field intent_flushes "$out")
check "writes wait for their write-intent marks ($flushes flushes)" \
	sh -c "[ '${flushes:-0}' -gt 0 ]"
reload
out=$(persist)
check "after rmmod and insmod the maps go on ($(field reason "$out"))" \
	sh -c "echo '$out' | grep -q '\"reset\":0,'"
out=$(backup 2>>/tmp/persist.log)
rc=$?
copied=$(field copied "$out")
check "the incremental after the reload copies what was written (exit $rc, $copied bytes)" \
	sh -c "[ $rc = 0 ] && echo '$out' | grep -q '\"kind\":\"incremental\"' && [ '$copied' -gt 0 ] && [ '$copied' -le 2097152 ]"
check "and the copy equals the device" [ "$(sum $T)" = "$(sum $DEV)" ]

# A write while the module was out: afresh, and the backup says a full one
# is needed (exit 5) rather than copy a stale incremental.
rmmod blksnap
write 1 20
insmod $KO
out=$(persist)
check "a write while unloaded starts afresh ($(field reason "$out"))" \
	sh -c "echo '$out' | grep -q '\"reset\":6,'"
backup >/dev/null 2>>/tmp/persist.log
rc=$?
check "and the next backup refuses an incremental (exit $rc)" test $rc = 5
out=$(backup --full 2>>/tmp/persist.log)
check "a full backup then equals the device" [ "$(sum $T)" = "$(sum $DEV)" ]

# A damaged store: a byte of each map block (both slots: the device's map
# fits one block), written through the file system while the module is
# out.
reload
out=$(persist)
check "the store goes on after a clean reload ($(field reason "$out"))" \
	sh -c "echo '$out' | grep -q '\"reset\":0,'"
rmmod blksnap
echo 3 >/proc/sys/vm/drop_caches
for b in 2 3 4 5; do
	printf '\377' | dd of=$S bs=1 seek=$((b * 4096 + 100)) conv=notrunc 2>/dev/null
done
sync
insmod $KO
out=$(persist)
check "a damaged store starts afresh ($(field reason "$out"))" \
	sh -c "echo '$out' | grep -q '\"reset\":2,'"
backup --full >/dev/null 2>>/tmp/persist.log

# Removed without a seal: the store is left marked in use.
reload
persist >/dev/null
blksnap tracker remove $DEV
out=$(persist)
check "a removal without a seal leaves nothing to go on from ($(field reason "$out"))" \
	sh -c "echo '$out' | grep -q '\"reset\":7,'"
backup --full >/dev/null 2>>/tmp/persist.log

# DETACH seals without unloading.
write 1 30
blksnap tracker detach $DEV
rc=$?
out=$(persist)
check "detach seals the store (exit $rc): the maps go on ($(field reason "$out"))" \
	sh -c "[ $rc = 0 ] && echo '$out' | grep -q '\"reset\":0,'"
incremental "and the incremental equals the device"
blksnap tracker detach /dev/vdb2 >/dev/null 2>&1
rc=$?
check "detach of an untracked device fails (exit $rc)" test $rc != 0

# A store on a failing device (dm-flakey over /dev/vdb2, given as the
# store itself): while its writes fail, the device's writes still
# complete and the tracker stops its marks, saying so; once the store's
# device works again, the seal makes the store whole: nothing is lost.
DMCTL="$(dirname "$0")/dmctl"
blksnap tracker detach $DEV 2>>/tmp/persist.log
size=$(cat /sys/class/block/vdb2/size)
FL=$($DMCTL create bsflaky linear "$size" "/dev/vdb2 0")
dd if=/dev/zero of="$FL" bs=1M count=1 2>/dev/null
out=$(blksnap --json tracker persist $DEV --store "$FL" --identity test-vdh-flaky 2>&1)
check "a store on a device ($FL: $(field reason "$out")$(echo "$out" | grep -v '^{')" \
	sh -c "echo '$out' | grep -q '\"reset\":1,'"
backup --full >/dev/null 2>>/tmp/persist.log
$DMCTL load bsflaky flakey "$size" "/dev/vdb2 0 0 3600 1 error_writes"
write 1 40
rc=$?
check "with its store failing, a write completes (exit $rc) and the marks stop, said in the log" \
	sh -c "[ $rc = 0 ] && dmesg | grep -q 'write-intent write to its CBT store failed'"
dmesg | grep 'CBT store' | tail -3 | sed 's/^/# /'
$DMCTL load bsflaky linear "$size" "/dev/vdb2 0"
blksnap tracker detach $DEV 2>>/tmp/persist.log
rc=$?
out=$(blksnap --json tracker persist $DEV --store "$FL" --identity test-vdh-flaky 2>&1)
check "its device back, the seal makes the store whole (exit $rc, $(field reason "$out"))" \
	sh -c "[ $rc = 0 ] && echo '$out' | grep -q '\"reset\":0,'"
incremental "and the incremental equals the device"
blksnap tracker remove $DEV 2>/dev/null
$DMCTL remove bsflaky

# A store on the tracked device itself, a file of the file system on it,
# as the root file system of a one-disk host has it: each checkpoint
# flushes that very device while its writes are held (a flush changes no
# data, so the hold lets it by), and the file system is busy throughout.
# The store's own writes are not changes: a backup's copy of the store
# file is stale, so the copy is checked by its files.
SELF=/dev/vdc
M=/mnt/self
R=/tmp/persist-records
BUSY=/tmp/persist-busy
busy() {
	i=0
	while [ -f $BUSY ]; do
		i=$((i + 1))
		dd if=/dev/urandom of=$M/busy/f$((i % 8)) bs=64k count=4 conv=fsync 2>/dev/null
	done
}
sself() { blksnap --json backup $SELF --target $D/self.img --storage-dir $D/storage --storage-step 16M; }
blksnap tracker remove $SELF 2>/dev/null
rm -rf $R
mkdir -p $M
mount $SELF $M || tap_diag "cannot mount $SELF"
mkdir -p $M/busy
touch $BUSY
busy &
bpid=$!
out=$(timeout 300 blksnap --json tracker persist $SELF --store $M/.store --identity test-self \
	--at-boot --records $R 2>&1)
check "a store on the tracked device's own file system attaches under writes ($(field reason "$out"))" \
	sh -c "echo '$out' | grep -q '\"reset\":1,'"
echo "$out" | grep -v '^{' | tail -3 | sed 's/^/# /'
out=$(sself 2>>/tmp/persist.log)
rc=$?
check "a full backup of it under writes (exit $rc)" \
	sh -c "[ $rc = 0 ] && echo '$out' | grep -q '\"kind\":\"full\"'"
rm -f $BUSY
wait $bpid
umount $M
timeout 300 blksnap tracker detach $SELF 2>>/tmp/persist.log
rc=$?
timeout 300 blksnap tracker boot --records $R >>/tmp/persist.log 2>&1
out=$(blksnap --json tracker status $SELF 2>&1)
check "sealed (exit $rc) and attached again from its boot record, it goes on ($(field reason "$out"))" \
	sh -c "[ $rc = 0 ] && echo '$out' | grep -q '\"store\":true,\"reset\":0,'"
[ $rc = 0 ] || tail -3 /tmp/persist.log | sed 's/^/# /'
mount $SELF $M && dd if=/dev/urandom of=$M/busy/after bs=1M count=2 conv=fsync 2>/dev/null
umount $M
out=$(sself 2>>/tmp/persist.log)
rc=$?
# The store's own writes are not changes, so its blocks in the copy are
# as they were: the files are compared, not the whole device.
mkdir -p /mnt/selfimg
mount -o ro $SELF $M && mount -o ro,loop,noload $D/self.img /mnt/selfimg
a=$(cd $M/busy && md5sum * | md5sum)
b=$(cd /mnt/selfimg/busy && md5sum * | md5sum)
umount /mnt/selfimg
umount $M
check "the incremental after it holds the file system's files (exit $rc)" \
	sh -c "[ $rc = 0 ] && echo '$out' | grep -q '\"kind\":\"incremental\"' && [ '$a' = '$b' ]"
blksnap tracker remove $SELF 2>/dev/null
mount $SELF $M && blksnap tracker forget $SELF --records $R >>/tmp/persist.log 2>&1
rm -rf $M/busy $M/.store $R $D/self.img*
umount $M

grep -v '^$' /tmp/persist.log | tail -12 | sed 's/^/# /'
blksnap tracker remove $DEV 2>/dev/null
rm -rf $D/storage $T* $S
umount $D
tap_exit
