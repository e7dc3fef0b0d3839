#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Runs inside the Debian 12 VM of `make package-check`, from a systemd unit
# once the system is up: the installed packages at work. Prints PASS:/FAIL:
# lines, then VM-CHECK-DONE, and reboots: QEMU runs with -no-reboot, so it
# exits (the kernel has no ACPI to power off with).
#
# Disks: /dev/vda the root file system, /dev/vdb data (backed up), /dev/vdc
# the backups and the snapshot storage.
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
done_() {
	echo VM-CHECK-DONE
	systemctl reboot --no-block
	exit 0
}

check "the packaged kernel runs ($(uname -r))" test -d "/lib/modules/$(uname -r)"
check "modprobe blksnap" modprobe blksnap
check "blksnap version answers $VERSION" sh -c "blksnap version | grep -q 'blksnap $VERSION'"

mkdir -p $DATA $BK /mnt/check
mkfs.ext4 -q -F /dev/vdb && mkfs.ext4 -q -F /dev/vdc &&
	mount /dev/vdb $DATA && mount /dev/vdc $BK || { fail "file systems made"; done_; }
mkdir -p $DATA/files $BK/storage
for i in $(seq 1 40); do
	head -c $((i * 37 * 1024)) /dev/urandom >$DATA/files/f$i
done
sync
sums $DATA >/tmp/full.md5

check "full backup with blksnap backup" sh -c "blksnap --json backup /dev/vdb --target $BK/data.img \
	--storage-dir $BK/storage --storage-step 16M --storage-limit 64M >/tmp/full.json"
since=$(sed -n 's/.*"next_since":\([0-9]*\).*/\1/p' /tmp/full.json)
gen=$(sed -n 's/.*"generation":"\([^"]*\)".*/\1/p' /tmp/full.json)
check "the full backup's files match their checksums" sh -c \
	"mount -o ro,loop,noload $BK/data.img /mnt/check && (cd /mnt/check && md5sum files/* | sort) | cmp - /tmp/full.md5; rc=\$?; umount /mnt/check; exit \$rc"

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
full=$(sed -n 's/.*"copied":\([0-9]*\).*/\1/p' /tmp/full.json)
inc=$(sed -n 's/.*"copied":\([0-9]*\).*/\1/p' /tmp/inc.json)
check "the incremental backup copied less than the full one ($inc < $full bytes)" \
	test -n "$inc" -a -n "$full" -a "${inc:-0}" -lt "${full:-0}"
check "the incremental backup's files match their checksums" sh -c \
	"mount -o ro,loop,noload $BK/data.img /mnt/check && (cd /mnt/check && md5sum files/* | sort) | cmp - /tmp/inc.md5; rc=\$?; umount /mnt/check; exit \$rc"

check "rmmod blksnap" rmmod blksnap
check "dkms remove" dkms remove -m blksnap -v "$VERSION" --all
check "the module is gone after dkms remove" sh -c "! modinfo blksnap >/dev/null 2>&1"
if dmesg | grep -qE 'BUG:|WARNING:|Oops|Call Trace:'; then
	fail "kernel log free of splats"
else
	pass "kernel log free of splats"
fi
done_
