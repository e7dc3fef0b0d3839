#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Runs inside the Debian 12 VM of `make package-check`, from a systemd unit
# once the system is up: the installed packages at work, over two boots of
# the same disks. Prints PASS:/FAIL: lines, then VM-CHECK-DONE BOOT, and
# reboots: QEMU runs with -no-reboot, so it exits (the kernel has no ACPI
# to power off with), and package-check.sh boots it again.
#
# Boot 1: modprobe, a full and an incremental backup of an ext4 file system
# with `blksnap backup`, checked by checksums; then CBT stores for the root
# file system (attached by the initramfs at the next boot) and for the data
# disk (attached by blksnap-attach.service), more writes, and a reboot by
# systemd, whose system-shutdown hook seals the stores.
# Boot 2: both stores went on from the seal, the file system in fstab was
# mounted on the tracked device, and after more writes a backup driven by
# the target's manifest alone is an incremental that copies about what was
# written, with the files intact; then rmmod and `dkms remove`.
#
# Disks: /dev/vda the root file system, /dev/vdb data (backed up), /dev/vdc
# the backups and the snapshot storage. A state file on the root file
# system tells the boots apart.
VERSION=${BLKSNAP_VERSION:-}
DATA=/mnt/data
BK=/mnt/backup
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; }
check() { # NAME COMMAND...
	local name=$1
	shift
	if "$@" >/tmp/step.log 2>&1; then
		pass "$name"
	else
		fail "$name"
		sed 's/^/    /' /tmp/step.log | tail -10
	fi
}
sums() { (cd "$1" && md5sum files/* | sort); }
# Whether the files of the backup image match the checksums in FILE.
image_matches() { # FILE
	local rc
	mount -o ro,loop,noload $BK/data.img /mnt/check || return 1
	sums /mnt/check | cmp - "$1"
	rc=$?
	umount /mnt/check
	return $rc
}
json_field() { # FILE NAME: a number field of a one-line JSON report
	sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p" "$1"
}
STATE=/var/lib/blksnap-vm-check/state
boot=1
[ -f $STATE ] && boot=2
done_() {
	echo "VM-CHECK-DONE $boot"
	systemctl reboot --no-block
	exit 0
}
# Sectors written to the data disk in this boot (its /sys stat, field 7).
written_sectors() { awk '{ print $7 }' /sys/block/vdb/stat; }
# Stops with what the end of either boot checks: splats, the module gone.
finish() {
	check "rmmod blksnap" rmmod blksnap
	check "dkms remove" dkms remove -m blksnap -v "$VERSION" --all
	check "the module is gone after dkms remove" sh -c "! modinfo blksnap >/dev/null 2>&1"
	splats
	done_
}
splats() {
	if dmesg | grep -qE 'BUG:|WARNING:|Oops|Call Trace:'; then
		fail "kernel log free of splats (boot $boot)"
	else
		pass "kernel log free of splats (boot $boot)"
	fi
}

# --- boot 2: after a clean reboot -----------------------------------------
if [ $boot = 2 ]; then
	. $STATE
	# The initramfs attached the root file system's store before the root
	# was mounted, the unit the data disk's before local-fs-pre.target: both
	# went on from their seals (reset 0), nothing written untracked.
	for d in /dev/vda /dev/vdb; do
		check "$d: its store went on from the seal (reset 0)" sh -c \
			"blksnap --json tracker status $d | tee /dev/stderr | grep -q '\"store\":true,\"reset\":0,'"
	done
	check "blksnap-attach.service ran" systemctl is-active -q blksnap-attach.service
	check "the fstab file system is mounted on the tracked data disk" findmnt -n $DATA
	mkdir -p $BK /mnt/check && mount /dev/vdc $BK || { fail "the backup disk mounted"; finish; }
	for i in 5 23; do
		head -c 150000 /dev/urandom >$DATA/files/f$i
	done
	head -c 400000 /dev/urandom >$DATA/files/after-reboot
	sync
	sums $DATA >/tmp/boot2.md5
	written=$(( (WRITTEN1 + $(written_sectors)) * 512 ))
	check "a backup from the manifest after the reboot" sh -c "blksnap --json backup /dev/vdb \
		--target $BK/data.img --storage-dir $BK/storage --storage-step 16M --storage-limit 64M \
		>/tmp/boot2.json"
	check "it is an incremental one" grep -q '"kind":"incremental"' /tmp/boot2.json
	copied=$(json_field /tmp/boot2.json copied)
	# Each write counts its whole tracking block, so allow twice what the
	# disk was written and a margin for ext4's scattered metadata; marks
	# taken instead of a seal count 4 MiB groups and would go far over.
	limit=$((2 * written + 2097152))
	check "it copied what changed: $copied bytes for $written written (at most $limit, less than the full $FULL)" \
		test -n "$copied" -a "${copied:-0}" -gt 0 -a "${copied:-0}" -le "$limit" -a "${copied:-0}" -lt "$FULL"
	check "its files match their checksums" image_matches /tmp/boot2.md5
	finish
fi

# --- boot 1 ---------------------------------------------------------------
check "the packaged kernel runs ($(uname -r))" test -d "/lib/modules/$(uname -r)"
check "modprobe blksnap" modprobe blksnap
check "blksnap version answers $VERSION" sh -c "blksnap version | grep -q 'blksnap $VERSION'"

mkdir -p $DATA $BK /mnt/check
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 /dev/vdb && mkfs.ext4 -q -F /dev/vdc &&
	mount /dev/vdb $DATA && mount /dev/vdc $BK || { fail "file systems made"; done_; }
mkdir -p $DATA/files $BK/storage
for i in $(seq 1 40); do
	head -c $((i * 37 * 1024)) /dev/urandom >$DATA/files/f$i
done
sync
sums $DATA >/tmp/full.md5

check "full backup with blksnap backup" sh -c "blksnap --json backup /dev/vdb --target $BK/data.img \
	--storage-dir $BK/storage --storage-step 16M --storage-limit 64M >/tmp/full.json"
since=$(json_field /tmp/full.json next_since)
gen=$(sed -n 's/.*"generation":"\([^"]*\)".*/\1/p' /tmp/full.json)
check "the full backup's files match their checksums" image_matches /tmp/full.md5

# Change some files, add some, then an incremental backup into the same target.
for i in 3 7 19; do
	head -c 100000 /dev/urandom >$DATA/files/f$i
done
head -c 3000000 /dev/urandom >$DATA/files/new
sync
sums $DATA >/tmp/inc.md5
check "incremental backup (--since $since --generation $gen)" sh -c "blksnap --json backup /dev/vdb \
	--target $BK/data.img --storage-dir $BK/storage --storage-step 16M --storage-limit 64M \
	--since '$since' --generation '$gen' >/tmp/inc.json"
full=$(json_field /tmp/full.json copied)
inc=$(json_field /tmp/inc.json copied)
check "the incremental backup copied less than the full one ($inc < $full bytes)" \
	test -n "$inc" -a -n "$full" -a "${inc:-0}" -lt "${full:-0}"
check "the incremental backup's files match their checksums" image_matches /tmp/inc.md5

w0=$(written_sectors)

# CBT stores: the root file system's on itself, attached by the initramfs
# at the next boot (hence update-initramfs after its record), and the data
# disk's on its own file system, attached by blksnap-attach.service, which
# has it tracked already: its maps and generation go on (reason 8).
mkdir -p /var/lib/blksnap
check "tracker persist of the root file system (--at-boot)" blksnap tracker persist /dev/vda \
	--store /var/lib/blksnap/root.store --at-boot
if [ -f "/boot/initrd.img-$(uname -r)" ]; then
	check "update-initramfs -u takes in the store's record" update-initramfs -u -k "$(uname -r)"
else
	check "update-initramfs -c takes in the store's record" update-initramfs -c -k "$(uname -r)"
fi
check "the initramfs holds blksnap and the record" sh -c \
	"lsinitramfs /boot/initrd.img-$(uname -r) | grep -q 'usr/sbin/blksnap' &&
	 lsinitramfs /boot/initrd.img-$(uname -r) | grep -q 'etc/blksnap/persist.d/.*json'"
check "tracker persist of the tracked data disk keeps its maps (--at-boot)" sh -c \
	"blksnap --json tracker persist /dev/vdb --store $DATA/.blksnap.store --at-boot | tee /dev/stderr | grep -q '\"reset\":8,'"
echo "/dev/vdb $DATA ext4 defaults 0 2" >>/etc/fstab
for i in 11 29; do
	head -c 120000 /dev/urandom >$DATA/files/f$i
done
sync
mkdir -p "$(dirname $STATE)"
cat >$STATE <<EOF
WRITTEN1=$(( $(written_sectors) - w0 ))
FULL=$full
EOF
sync
splats
# systemd unmounts the file systems, remounts the root read-only, then the
# packages' system-shutdown hook seals both stores (package-check.sh finds
# "its store sealed" twice in this boot's kernel log).
done_
