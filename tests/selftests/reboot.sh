#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Change tracking across reboots of the VM (run.sh boots reboot.sh): the
# same disks over four boots, the store attached at each boot before the
# device's file system is mounted, as the boot scripts do
# (Documentation/persistence.rst).
#
#   boot 1: a new store; a full backup of a live ext4; more writes; the
#           shutdown detaches (seals) the store; a clean reboot.
#   boot 2: the maps go on; writes; the incremental copies about what was
#           written and equals the device. Then the power is cut under
#           O_DIRECT and buffered writes.
#   boot 3: the store was not sealed: tracking starts afresh saying why,
#           the next backup refuses an incremental (exit 5), a full one
#           equals the device. Sealed again, a clean reboot.
#   boot 4: the device is written before the module is there (as in a
#           boot without it): afresh, written while untracked, exit 5,
#           and a full backup equals the device.
. "$(dirname "$0")/lib.sh"

[ -c /dev/blksnap ] || { echo "1..0 # SKIP /dev/blksnap missing"; exit $KSFT_SKIP; }
boot=$(sed -n 's/.*bsvm_boot=\([0-9]*\).*/\1/p' /proc/cmdline)
[ -n "$boot" ] || { echo "1..0 # SKIP not booted by run.sh boots"; exit $KSFT_SKIP; }
KO=/lib/modules/blksnap.ko
DEV=/dev/vdc
FS=/mnt/fs
D=/mnt/keep
T=$D/r.img
S=$D/r.store

sum() { md5sum <"$1" | cut -d' ' -f1; }
field() { echo "$2" | sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p"; }
backup() { blksnap --json backup $DEV --target $T --storage-dir $D/storage --storage-step 16M "$@"; }
# The attach of the boot scripts: before any mount of $DEV.
persist() { blksnap --json tracker persist $DEV --store $S --identity test-vdc 2>&1; }
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

mkdir -p $FS $D
case "$boot" in
1)
	tap_plan 3
	mount /dev/vdd $D || tap_diag "cannot mount /dev/vdd"
	rm -rf $D/storage $T* $S
	mkdir -p $D/storage
	out=$(persist)
	check "boot 1: a new store ($(field reason "$out"))" \
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
	# The power cut: under writes, direct and buffered, at a moment
	# that varies.
	mount $DEV $FS
	(while :; do dd if=/dev/urandom of=$FS/direct bs=64K count=32 oflag=direct conv=notrunc 2>/dev/null; done) &
	(while :; do dd if=/dev/urandom of=$FS/buffered bs=64K count=32 2>/dev/null; done) &
	sleep "$(($(od -An -tu1 -N1 /dev/urandom | tr -d ' ') % 3 + 1))"
	tap_diag "the power is cut"
	echo "BSVM-POWERCUT"
	sleep 600
	;;
3)
	tap_plan 5
	mount /dev/vdd $D || tap_diag "cannot mount /dev/vdd"
	out=$(persist)
	check "boot 3: after a power cut tracking starts afresh ($(field reason "$out"))" \
		sh -c "echo '$out' | grep -q '\"reset\":9,'"
	out=$(blksnap --json tracker status $DEV 2>&1)
	check "tracker status says so (checkpoint $(field checkpoint "$out"))" \
		sh -c "echo '$out' | grep -q '\"store\":true,\"reset\":9,'"
	# The journal's replay writes: tracked, like any write.
	mount $DEV $FS && umount $FS
	full_needed 'power cut'
	shutdown "the shutdown seals the store again"
	;;
4)
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
	check "boot 4: written before the attach, tracking starts afresh ($(field reason "$out"))" \
		sh -c "echo '$out' | grep -q '\"reset\":6,'"
	full_needed 'written while untracked'
	grep -v '^$' /tmp/reboot.log | tail -4 | sed 's/^/# /'
	blksnap tracker remove $DEV 2>/dev/null
	rm -rf $D/storage $T* $S
	umount $D
	;;
*)
	tap_plan 1
	tap_not_ok "boot $boot: reboot.sh has four boots"
	;;
esac
tap_exit
