#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# The demo, run inside the VM by `make demo`: a full and an incremental
# backup of two live ext4 file systems (a disk and a partition of another
# disk) through one snapshot taken at one instant, narrated, verified, with
# a verdict.
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
# field JSON TARGET KEY: KEY of TARGET's entry in a backup's JSON output.
field() { sed 's/},{/}\n{/g' "$1" | grep "\"target\":\"$2\"" | sed "s/.*\"$3\":\"\{0,1\}\([^,\"]*\).*/\1/"; }
# top JSON KEY: a number of the report itself (after the device entries).
top() { sed "s/.*\"$2\":\([0-9a-z]*\).*/\1/" "$1"; }
mib() { echo "$(($1 / 1048576)) MiB"; }

echo "blksnap demo on $(uname -sr)"

step "Load the blksnap module; /dev/blksnap appears"
show insmod /lib/modules/blksnap.ko
show blksnap version
verify "module answers VERSION" sh -c 'blksnap version | grep -q "1.0.0.0"'

step "Two ext4 file systems: documents on /dev/vdc, a ledger on partition /dev/vde1; backups go to /dev/vdd"
LEDGER=/mnt/ledger
mkdir -p $DATA $LEDGER $BK /mnt/check
mount /dev/vdc $DATA && mount /dev/vde1 $LEDGER && mount /dev/vdd $BK
mkdir -p $DATA/docs $DATA/live $BK/storage
i=0
while [ $i -lt 24 ]; do
	dd if=/dev/urandom of=$DATA/docs/file$i bs=4k count=$((1 + i * 13 % 97)) 2>/dev/null
	i=$((i + 1))
done
echo 0 >$DATA/live/counter
echo 0 >$LEDGER/counter
sync
show df -h $DATA $LEDGER $BK
say "24 files in $DATA/docs, $(du -sk $DATA/docs | cut -f1) KiB"
sums $DATA >/tmp/at-take.md5

step "Start a writer that keeps changing both file systems"
# Each round writes its number to the documents' counter, then to the
# ledger's (each by rename, so a file is always whole): a consistent
# picture of both has ledger = documents or documents - 1.
(
	k=1
	while [ ! -e /tmp/stop-writer ]; do
		dd if=/dev/urandom of=$DATA/live/log$((k % 5)) bs=16k count=4 2>/dev/null
		echo $k >$DATA/live/.counter && mv $DATA/live/.counter $DATA/live/counter
		dd if=/dev/urandom of=$LEDGER/entry$((k % 7)) bs=4k count=2 2>/dev/null
		echo $k >$LEDGER/.counter && mv $LEDGER/.counter $LEDGER/counter
		# Once the snapshot is taken, it rewrites the documents too.
		if [ -e /tmp/taken ]; then
			dd if=/dev/urandom of=$DATA/docs/file$((k % 24)) bs=4k count=3 2>/dev/null
		fi
		k=$((k + 1))
	done
) &
writer=$!
sleep 1
say "writer running (pid $writer): rewriting $DATA/live/* and $LEDGER/*, and after TAKE $DATA/docs/*"

step "Full backup of both live file systems through one snapshot"
show blksnap backup --help
echo
say "\$ blksnap backup /dev/vdc /dev/vde1 --target $BK/data.img --target $BK/ledger.img --storage-dir $BK/storage"
blksnap --json backup /dev/vdc /dev/vde1 --target $BK/data.img --target $BK/ledger.img \
	--storage-dir $BK/storage --storage-step 16M --storage-limit 512M >/tmp/full.json 2>/tmp/full.log &
bpid=$!
# Let the writer hit the documents as soon as the snapshot is taken.
while kill -0 $bpid 2>/dev/null && ! grep -q ' taken$' /tmp/full.log; do sleep 0.1; done
touch /tmp/taken
wait $bpid
rc=$?
sed 's/^/    /' /tmp/full.log
verify "full backup of both devices succeeded (exit $rc)" test $rc = 0
if [ $rc != 0 ]; then
	echo
	echo "VERDICT: FAIL: the full backup failed."
	exit 1
fi
full=$(field /tmp/full.json $BK/data.img copied)
fullL=$(field /tmp/full.json $BK/ledger.img copied)
say "copied $(mib $full) of documents and $(mib $fullL) of ledger"
say "storage: $(mib $(top /tmp/full.json storage_used)) used of $(mib $(top /tmp/full.json storage_appended)) appended in $(top /tmp/full.json storage_files) file(s), though the module asked for 1 GiB"
say "each target now has a manifest: the next run needs nothing but the targets"
show ls $BK

step "The backups hold both file systems as they were at one instant"
show mount -o loop,ro $BK/data.img /mnt/check
sums /mnt/check >/tmp/backup.md5
d=$(cat /mnt/check/live/counter)
umount /mnt/check
show mount -o loop,ro $BK/ledger.img /mnt/check
l=$(cat /mnt/check/counter)
umount /mnt/check
# The writer runs on: give it time to reach the documents (a minute at most).
n=0
while [ "$(sums $DATA | grep -vxFf /tmp/at-take.md5 | grep -c .)" = 0 ] && [ $n -lt 600 ]; do
	sleep 0.1
	n=$((n + 1))
done
changed=$(sums $DATA | grep -vxFf /tmp/at-take.md5 | grep -c .)
verify "all 24 documents in the backup equal their checksums at TAKE" cmp -s /tmp/at-take.md5 /tmp/backup.md5
verify "the writer changed $changed documents on the live system meanwhile" test "$changed" -gt 0
say "round counter in the documents' backup: $d, in the ledger's backup: $l (live now: $(cat $DATA/live/counter))"
verify "the two backups are one instant of the writer (ledger = documents or documents - 1)" \
	sh -c "[ '$l' = '$d' ] || [ '$l' = $((d - 1)) ]"

step "Stop the writer, change files on both, and hold the devices still"
touch /tmp/stop-writer
wait $writer
rm -f /tmp/taken
dd if=/dev/urandom of=$DATA/docs/file3 bs=4k count=5 2>/dev/null
echo "a new document" >$DATA/docs/new-file
rm -f $DATA/docs/file7
echo "closing entry" >$LEDGER/closing
sync
umount $DATA
umount $LEDGER
say "changed file3, added new-file, removed file7, added a ledger entry; unmounted both for a byte-for-byte check"

step "Incremental backup of both: only the blocks the CBT marks as changed"
say "\$ blksnap backup /dev/vdc /dev/vde1 --target $BK/data.img --target $BK/ledger.img --storage-dir $BK/storage"
blksnap --json backup /dev/vdc /dev/vde1 --target $BK/data.img --target $BK/ledger.img \
	--storage-dir $BK/storage --storage-step 16M --storage-limit 512M >/tmp/inc.json 2>/tmp/inc.log
rc=$?
sed 's/^/    /' /tmp/inc.log
verify "incremental backup of both devices succeeded (exit $rc)" test $rc = 0
inc=$(field /tmp/inc.json $BK/data.img copied)
incL=$(field /tmp/inc.json $BK/ledger.img copied)
verify "each continued its own chain from its manifest" \
	sh -c "[ \$(grep -o '\"kind\":\"incremental\"' /tmp/inc.json | grep -c .) = 2 ]"
say "documents: copied $inc bytes, the full copy $full ($((inc * 100 / full))%)"
say "ledger:    copied $incL bytes, the full copy $fullL ($((incL * 100 / fullL))%)"
verify "each incremental copy moved less than its full one" sh -c "[ $inc -lt $full ] && [ $incL -lt $fullL ]"

step "Each backup equals its device byte for byte"
a=$(md5sum </dev/vdc | cut -d' ' -f1)
b=$(md5sum <$BK/data.img | cut -d' ' -f1)
aL=$(md5sum </dev/vde1 | cut -d' ' -f1)
bL=$(md5sum <$BK/ledger.img | cut -d' ' -f1)
say "/dev/vdc:  $a   data.img:   $b"
say "/dev/vde1: $aL   ledger.img: $bL"
verify "data.img == /dev/vdc" test "$a" = "$b"
verify "ledger.img == /dev/vde1" test "$aL" = "$bL"
mount -o loop,ro $BK/data.img /mnt/check
verify "the backup holds the new file" grep -q "a new document" /mnt/check/docs/new-file
verify "and not the removed one" test ! -e /mnt/check/docs/file7
umount /mnt/check
mount -o loop,ro $BK/ledger.img /mnt/check
verify "the ledger's backup holds its new entry" grep -q "closing entry" /mnt/check/closing
umount /mnt/check

step "Restore points: the first backup is still there"
say "each run added a point; data.img holds the newest, a delta beside it the older one"
show blksnap points $BK/data.img
say "\$ blksnap restore $BK/data.img --point 1 --to $BK/point1.img"
blksnap restore $BK/data.img --point 1 --to $BK/point1.img >/tmp/rst.out 2>&1
rc=$?
sed 's/^/    /' /tmp/rst.out
verify "point 1 restored, every block checked against its checksum (exit $rc)" test $rc = 0
mount -o loop,ro $BK/point1.img /mnt/check
sums /mnt/check >/tmp/point1.md5
verify "point 1 holds all 24 documents as at the first TAKE, file7 included" \
	cmp -s /tmp/at-take.md5 /tmp/point1.md5
umount /mnt/check
rm -f $BK/point1.img
verify "blksnap verify: every stored block of every point matches its checksum" \
	sh -c "blksnap verify $BK/data.img >/dev/null"
umount $BK
rmmod blksnap

echo
if [ "$fails" = 0 ]; then
	echo "VERDICT: PASS: two live ext4 file systems (a disk and a partition) were backed up in full through one snapshot at one instant (files exact as of TAKE while a writer ran), then incrementally from their manifests with the CBT ($inc of $full and $incL of $fullL bytes), each ending byte-identical to its device; the first backup's point restored its documents as at the first TAKE."
else
	echo "VERDICT: FAIL: $fails check(s) failed."
fi
[ "$fails" = 0 ]
