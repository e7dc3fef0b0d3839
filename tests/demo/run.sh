#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# The demo, run inside the VM by `make demo`: a full and an incremental
# backup of a live ext4 file system, narrated, verified, with a verdict.
# Exits non-zero if any verification failed.
fails=0
n=0
DATA=/mnt/data
BK=/mnt/backup
step() { n=$((n + 1)); printf '\n[%d] %s\n' "$n" "$*"; }
say() { printf '    %s\n' "$*"; }
show() { printf '    $ %s\n' "$*"; "$@" 2>&1 | sed 's/^/    /'; }
verify() { # DESCRIPTION COMMAND...
	what=$1
	shift
	if "$@" 2>/dev/null; then
		echo "    ok: $what"
	else
		echo "    FAILED: $what"
		fails=$((fails + 1))
	fi
}
sums() { (cd "$1" && md5sum docs/*) ; }

echo "blksnap demo on $(uname -sr)"

step "Load the blksnap module; /dev/blksnap appears"
show insmod /lib/modules/blksnap.ko
show blksnap version
verify "module answers VERSION" sh -c 'blksnap version | grep -q "1.0.0.0"'

step "An ext4 file system with files on /dev/vdc; backups go to /dev/vdd"
mkdir -p $DATA $BK /mnt/check
mount /dev/vdc $DATA && mount /dev/vdd $BK
mkdir -p $DATA/docs $DATA/live $BK/storage
i=0
while [ $i -lt 24 ]; do
	dd if=/dev/urandom of=$DATA/docs/file$i bs=4k count=$((1 + i * 13 % 97)) 2>/dev/null
	i=$((i + 1))
done
sync
show df -h $DATA $BK
say "24 files in $DATA/docs, $(du -sk $DATA/docs | cut -f1) KiB"
sums $DATA >/tmp/at-take.md5

step "Start a writer that keeps changing files"
(
	k=0
	while [ ! -e /tmp/stop-writer ]; do
		dd if=/dev/urandom of=$DATA/live/log$((k % 5)) bs=16k count=4 2>/dev/null
		# Once the snapshot is taken, it rewrites the documents too.
		if [ -e /tmp/taken ]; then
			dd if=/dev/urandom of=$DATA/docs/file$((k % 24)) bs=4k count=3 2>/dev/null
		fi
		k=$((k + 1))
	done
) &
writer=$!
sleep 1
say "writer running (pid $writer): rewriting $DATA/live/*, and after TAKE $DATA/docs/*"

step "Full backup of the live file system through a snapshot"
show blksnap backup --help
echo
blksnap --json backup /dev/vdc --target $BK/data.img --storage-dir $BK/storage \
	--storage-step 16M --storage-limit 128M >/tmp/full.json 2>/tmp/full.log &
bpid=$!
# Let the writer hit the documents as soon as the snapshot is taken.
while kill -0 $bpid 2>/dev/null && ! grep -q ' taken$' /tmp/full.log; do sleep 0.1; done
touch /tmp/taken
wait $bpid
rc=$?
sed 's/^/    /' /tmp/full.log
verify "full backup succeeded (exit $rc)" test $rc = 0
if [ $rc != 0 ]; then
	echo
	echo "VERDICT: FAIL: the full backup failed."
	exit 1
fi
full=$(sed 's/.*"copied":\([0-9]*\).*/\1/' /tmp/full.json)
since=$(sed 's/.*"next_since":\([0-9]*\).*/\1/' /tmp/full.json)
gen=$(sed 's/.*"generation":"\([^"]*\)".*/\1/' /tmp/full.json)
say "copied $full bytes; next incremental: --since $since --generation $gen"

step "The backup's files match their state at TAKE, while the live ones changed"
show mount -o loop,ro $BK/data.img /mnt/check
sums /mnt/check >/tmp/backup.md5
changed=$(sums $DATA | grep -vxFf /tmp/at-take.md5 | grep -c .)
verify "all 24 documents in the backup equal their checksums at TAKE" cmp -s /tmp/at-take.md5 /tmp/backup.md5
verify "the writer changed $changed documents on the live system meanwhile" test "$changed" -gt 0
umount /mnt/check

step "Stop the writer, change some files, and hold the device still"
touch /tmp/stop-writer
wait $writer
rm -f /tmp/taken
dd if=/dev/urandom of=$DATA/docs/file3 bs=4k count=5 2>/dev/null
echo "a new document" >$DATA/docs/new-file
rm -f $DATA/docs/file7
sync
umount $DATA
say "changed file3, added new-file, removed file7; unmounted $DATA for a byte-for-byte check"

step "Incremental backup: only the blocks the CBT marks as changed"
say "\$ blksnap backup /dev/vdc --target $BK/data.img --storage-dir $BK/storage --since $since --generation $gen"
blksnap --json backup /dev/vdc --target $BK/data.img --storage-dir $BK/storage \
	--storage-step 16M --storage-limit 128M --since "$since" --generation "$gen" >/tmp/inc.json 2>/tmp/inc.log
rc=$?
sed 's/^/    /' /tmp/inc.log
verify "incremental backup succeeded (exit $rc)" test $rc = 0
inc=$(sed 's/.*"copied":\([0-9]*\).*/\1/' /tmp/inc.json)
say "incremental copied $inc bytes, the full copy $full bytes ($((inc * 100 / full))%)"
verify "the incremental copy moved less than the full one" test "$inc" -lt "$full"

step "The incremental result equals the second snapshot byte for byte"
a=$(md5sum </dev/vdc | cut -d' ' -f1)
b=$(md5sum <$BK/data.img | cut -d' ' -f1)
say "device (held still since the snapshot): $a"
say "backup after the incremental:          $b"
verify "backup == device" test "$a" = "$b"
mount -o loop,ro $BK/data.img /mnt/check
verify "the backup holds the new file" grep -q "a new document" /mnt/check/docs/new-file
verify "and not the removed one" test ! -e /mnt/check/docs/file7
umount /mnt/check
umount $BK
rmmod blksnap

echo
if [ "$fails" = 0 ]; then
	echo "VERDICT: PASS: a live ext4 file system was backed up in full through a snapshot (files exact as of TAKE while a writer ran), then incrementally with the CBT ($inc of $full bytes), ending byte-identical to the device."
else
	echo "VERDICT: FAIL: $fails check(s) failed."
fi
[ "$fails" = 0 ]
