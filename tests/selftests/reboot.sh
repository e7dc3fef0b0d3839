#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Change tracking across reboots and power cuts of the VM (run.sh boots
# reboot.sh): the same disks over CUTS + 4 boots (bsvm_cuts=CUTS on the
# kernel command line, 3 unless given), the store attached at each boot
# before the device's file system is mounted, as the boot scripts do
# (Documentation/persistence.rst).
#
#   boot 1:      a new store; a full backup of a live ext4; more writes;
#                the shutdown detaches (seals) the store; a clean reboot.
#   boot 2:      the maps go on; writes; the incremental copies about what
#                was written and equals the device. Then the power is cut
#                under O_DIRECT and buffered writes, at a random moment.
#   boots 3 to CUTS + 2: the store was not sealed, but its write-intent
#                marks speak for what was written: the chain continues and
#                the incremental equals the device. The power is cut again
#                under writes (CUTS cuts in all), then once more while a
#                snapshot is held (marks are off then).
#   boot CUTS + 3: a crash during a snapshot: tracking starts afresh
#                saying why, the next backup refuses an incremental (exit
#                5), a full one equals the device. Sealed, a clean reboot.
#   boot CUTS + 4: the device is written before the module is there (as in
#                a boot without it): afresh, written while untracked, exit
#                5, and a full backup equals the device.
. "$(dirname "$0")/lib.sh"

[ -c /dev/blksnap ] || { echo "1..0 # SKIP /dev/blksnap missing"; exit $KSFT_SKIP; }
boot=$(sed -n 's/.*bsvm_boot=\([0-9]*\).*/\1/p' /proc/cmdline)
[ -n "$boot" ] || { echo "1..0 # SKIP not booted by run.sh boots"; exit $KSFT_SKIP; }
cuts=$(sed -n 's/.*bsvm_cuts=\([0-9]*\).*/\1/p' /proc/cmdline)
[ -n "$cuts" ] && [ "$cuts" -ge 1 ] || cuts=3
KO=/lib/modules/blksnap.ko
DEV=/dev/vdc
FS=/mnt/fs
D=/mnt/keep
T=$D/r.img
S=$D/r.store

sum() { md5sum <"$1" | cut -d' ' -f1; }
field() { echo "$2" | sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p"; }
backup() { blksnap --json backup $DEV --target $T --storage-dir $D/storage --storage-step 16M "$@"; }
R=$D/records
# The attach of the boot scripts (tracker boot, from the record that
# persist --at-boot made in boot 1): before any mount of $DEV.
persist() { blksnap --json tracker boot --records $R 2>&1; }
# Sectors written to $DEV in this boot.
written() { awk '{ print $7 }' /sys/block/vdc/stat; }
# files N: N MiB of new files on the mounted file system, and a rewrite
# in place of the first MiB of an old one.
files() {
	dd if=/dev/urandom of=$FS/f.$boot.$1 bs=1M count="$1" 2>/dev/null
	[ -e $FS/old ] && dd if=/dev/urandom of=$FS/old bs=64K count=16 conv=notrunc 2>/dev/null
	sync
}
# full_needed WHY: the next backup must refuse an incremental (exit 5),
# saying WHY; then a full one must equal the device.
full_needed() {
	backup >/dev/null 2>/tmp/reboot.log
	rc=$?
	check "and the next backup refuses an incremental, saying why (exit $rc)" \
		sh -c "[ $rc = 5 ] && grep -q '$1' /tmp/reboot.log"
	grep -m1 'full backup is needed' /tmp/reboot.log | sed 's/^/# /'
	out=$(backup --full 2>>/tmp/reboot.log)
	rc=$?
	check "a full backup then equals the device (exit $rc)" \
		sh -c "[ $rc = 0 ] && [ '$(sum $T)' = '$(sum $DEV)' ]"
}
# shutdown NAME: the shutdown of the boot scripts, which detaches (seals)
# the store, checked as NAME; then a clean reboot: the kernel's own
# (busybox reboot -f syncs first), so that what follows is a new boot.
shutdown() {
	blksnap tracker detach $DEV >/dev/null 2>>/tmp/reboot.log
	rc=$?
	check "$1 (detach, exit $rc)" test $rc = 0
	grep -v '^$' /tmp/reboot.log | tail -4 | sed 's/^/# /'
	tap_diag "a clean reboot"
	umount $D
	echo "BSVM-REBOOT"
	sync
	reboot -f
	sleep 600
}

# rnd N: a random number below N.
rnd() { echo $(($(od -An -tu2 -N2 /dev/urandom | tr -d ' ') % $1)); }
# power_cut: the power cut, under writes to the mounted file system, direct and
# buffered, at a moment that varies (0 to 3 s, in tenths).
power_cut() {
	tap_diag "writes, then the power cut"
	mount $DEV $FS
	(while :; do dd if=/dev/urandom of=$FS/direct bs=64K count=32 oflag=direct conv=notrunc 2>/dev/null; done) &
	(while :; do dd if=/dev/urandom of=$FS/buffered bs=64K count=32 2>/dev/null; done) &
	t=$(rnd 30)
	sleep "$((t / 10)).$((t % 10))"
	tap_diag "the power is cut ($((t / 10)).$((t % 10)) s into the writes)"
	echo "BSVM-POWERCUT"
	sleep 600
}
# after_cut K: boot after power cut K; the chain must go on.
after_cut() {
	out=$(persist)
	check "boot $boot: after power cut $1 the maps go on ($(field reason "$out"))" \
		sh -c "echo '$out' | grep -q '\"reset\":0,'"
	# The journal's replay writes: tracked, like any write.
	mount $DEV $FS && umount $FS
	out=$(backup 2>/tmp/reboot.log)
	rc=$?
	copied=$(field copied "$out")
	tap_diag "the incremental after the cut copied $copied bytes"
	check "the incremental after the cut equals the device, its manifest naming the store (exit $rc)" \
		sh -c "[ $rc = 0 ] && echo '$out' | grep -q '\"kind\":\"incremental\"' && [ '$(sum $T)' = '$(sum $DEV)' ] && grep -q '\"checkpoint\"' $T.blksnap.json"
	[ $rc = 0 ] || grep -v '^$' /tmp/reboot.log | tail -4 | sed 's/^/# /'
	out=$(blksnap --json tracker status $DEV 2>&1)
	tap_diag "tracker status: $out"
}
# snapshot_cut: the power cut while a snapshot of the device is held.
snapshot_cut() {
	id=$(blksnap snapshot create $DEV)
	dd if=/dev/zero of=$D/cut.storage bs=1M count=16 2>/dev/null && sync
	blksnap snapshot append-storage "$id" --file $D/cut.storage
	blksnap snapshot take "$id"
	rc=$?
	check "a snapshot is held (take, exit $rc)" test $rc = 0
	mount $DEV $FS
	files 1
	tap_diag "the power is cut with the snapshot held"
	echo "BSVM-POWERCUT"
	sleep 600
}

mkdir -p $FS $D
after=$((cuts + 3))
last=$((cuts + 4))
case "$boot" in
1)
	tap_plan 3
	mount /dev/vdd $D || tap_diag "cannot mount /dev/vdd"
	rm -rf $D/storage $T* $S $R
	mkdir -p $D/storage
	out=$(blksnap --json tracker persist $DEV --store $S --identity test-vdc --at-boot --records $R 2>&1)
	check "boot 1: a new store, recorded for the boot scripts ($(field reason "$out"))" \
		sh -c "echo '$out' | grep -q '\"reset\":1,'"
	mount $DEV $FS
	dd if=/dev/urandom of=$FS/old bs=1M count=8 2>/dev/null
	files 4
	out=$(backup 2>/tmp/reboot.log)
	rc=$?
	check "a full backup of the live ext4 (exit $rc)" \
		sh -c "[ $rc = 0 ] && echo '$out' | grep -q '\"kind\":\"full\"'"
	w0=$(written)
	files 2
	umount $FS
	# What the next incremental must copy, written in this boot.
	echo $((($(written) - w0) * 512)) >$D/written
	shutdown "the shutdown seals the store"
	;;
2)
	tap_plan 3
	mount /dev/vdd $D || tap_diag "cannot mount /dev/vdd"
	out=$(persist)
	check "boot 2: after a clean reboot the maps go on ($(field reason "$out"))" \
		sh -c "echo '$out' | grep -q '\"reset\":0,'"
	w0=$(written)
	mount $DEV $FS
	files 2
	umount $FS
	before=$(cat $D/written)
	now=$((($(written) - w0) * 512))
	bytes=$((before + now))
	out=$(backup 2>/tmp/reboot.log)
	rc=$?
	copied=$(field copied "$out")
	tap_diag "written since the backup: $before bytes before the reboot, $now after; the incremental copied $copied"
	# What was written, rounded out to tracking blocks (64 KiB); writes
	# to one block in both boots count twice in $bytes.
	check "the incremental copies about what was written (exit $rc, $copied of $bytes bytes)" \
		sh -c "[ $rc = 0 ] && echo '$out' | grep -q '\"kind\":\"incremental\"' && [ '$copied' -gt 0 ] && [ '$copied' -le $((bytes * 2 + 1048576)) ]"
	check "and the copy equals the device" [ "$(sum $T)" = "$(sum $DEV)" ]
	grep -v '^$' /tmp/reboot.log | tail -4 | sed 's/^/# /'
	power_cut
	;;
"$after")
	tap_plan 5
	mount /dev/vdd $D || tap_diag "cannot mount /dev/vdd"
	out=$(persist)
	check "boot $boot: after a power cut during a snapshot tracking starts afresh ($(field reason "$out"))" \
		sh -c "echo '$out' | grep -q '\"reset\":9,'"
	out=$(blksnap --json tracker status $DEV 2>&1)
	check "tracker status says so (checkpoint $(field checkpoint "$out"))" \
		sh -c "echo '$out' | grep -q '\"store\":true,\"reset\":9,'"
	rm -f $D/cut.storage
	mount $DEV $FS && umount $FS
	full_needed 'power cut'
	shutdown "the shutdown seals the store again"
	;;
"$last")
	tap_plan 3
	# As in a boot without the module: the file system is mounted and
	# written before any tracker watches the device.
	rmmod blksnap
	mount $DEV $FS
	files 1
	umount $FS
	insmod $KO
	mount /dev/vdd $D || tap_diag "cannot mount /dev/vdd"
	out=$(persist)
	check "boot $boot: written before the attach, tracking starts afresh ($(field reason "$out"))" \
		sh -c "echo '$out' | grep -q '\"reset\":6,'"
	full_needed 'written while untracked'
	grep -v '^$' /tmp/reboot.log | tail -4 | sed 's/^/# /'
	blksnap tracker remove $DEV 2>/dev/null
	blksnap tracker forget $DEV --records $R
	rm -rf $D/storage $T* $S $R
	umount $D
	;;
*)
	if [ "$boot" -gt 2 ] && [ "$boot" -lt "$after" ]; then
		if [ $((boot + 1)) -lt "$after" ]; then
			tap_plan 2
		else
			tap_plan 3
		fi
		mount /dev/vdd $D || tap_diag "cannot mount /dev/vdd"
		after_cut $((boot - 2))
		if [ $((boot + 1)) -lt "$after" ]; then
			power_cut
		else
			snapshot_cut
		fi
	else
		tap_plan 1
		tap_not_ok "boot $boot: reboot.sh has $last boots"
	fi
	;;
esac
tap_exit
