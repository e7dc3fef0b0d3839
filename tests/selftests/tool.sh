#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# The blksnap tool against the module: snapshot subcommands, tracker
# subcommands, `watch` answering low free space events with files, and
# `backup` full and `--since` incremental copies that end byte-identical to
# the device.
. "$(dirname "$0")/lib.sh"

[ -c /dev/blksnap ] || { echo "1..0 # SKIP /dev/blksnap missing"; exit $KSFT_SKIP; }
P=/sys/module/blksnap/parameters
D=/mnt/tool
tap_plan 62

mkdir -p $D
mount /dev/vdd $D || { tap_diag "cannot mount /dev/vdd"; }
sum() { dd if="$1" bs=1M count="${2:-256}" 2>/dev/null | md5sum | cut -d' ' -f1; }
# backup_taken TARGET LOG: a backup of /dev/vda into TARGET, started in
# the background ($bp is the tool's pid); returns once LOG says its
# snapshot is taken (or after 30 s).
backup_taken() {
	blksnap backup /dev/vda --target "$1" --storage-dir $D >/dev/null 2>"$2" &
	bp=$!
	n=0
	while ! grep -q ' taken$' "$2" && [ $n -lt 300 ]; do n=$((n + 1)); sleep 0.1; done
}
# watched_snapshot LIMIT STEP LOG: a snapshot of /dev/vda ($id) that
# `blksnap snapshot watch` ($wpid) supplies with storage, taken once the
# watch has answered the first request.
watched_snapshot() {
	id=$(blksnap snapshot create /dev/vda)
	blksnap snapshot watch "$id" --dir $D --limit "$1" --step "$2" >"$3" 2>&1 &
	wpid=$!
	n=0
	until blksnap snapshot take "$id" 2>/dev/null || [ $n -ge 50 ]; do
		n=$((n + 1))
		sleep 0.2
	done
}

# --- snapshot and tracker subcommands -------------------------------------
out=$(blksnap version)
check "version: $out" test "$out" = "blksnap 1.0.0.0"
id=$(blksnap snapshot create /dev/vda)
check "snapshot create prints an id ($id)" sh -c "echo '$id' | grep -Eq '^[0-9a-f]{8}-[0-9a-f]{4}-'"
check "snapshot list shows it" sh -c "blksnap snapshot list | grep -q '$id'"
check "wait-event reports the storage request" sh -c "blksnap snapshot wait-event $id | grep -q '^low_free_space'"
check "append-storage with device ranges" blksnap snapshot append-storage "$id" --device /dev/vdb2 --range 0:131072
dd if=/dev/zero of=$D/pre.storage bs=1M count=8 2>/dev/null && sync
check "append-storage of an existing file" blksnap snapshot append-storage "$id" --file $D/pre.storage
check "snapshot list says it is not taken" sh -c "blksnap snapshot list | grep -q '$id  not taken'"
check "snapshot take" blksnap snapshot take "$id"
check "snapshot list names its image once taken" sh -c "blksnap snapshot list | grep '$id  taken: ' | grep -q 'blksnap-image'"
check "snapshot images names the image" sh -c "blksnap snapshot images $id | grep -q '/dev/blksnap-image'"
check "tracker list --json" sh -c "blksnap --json tracker list | grep -q '\"snap_number\":1'"
check "tracker cbt lists ranges" sh -c "blksnap tracker cbt /dev/vda | grep -q 'changed since snapshot 0'"
check "tracker mark-dirty" blksnap tracker mark-dirty /dev/vda --range 0:8
blksnap tracker mark-dirty /dev/vda --file $D/pre.storage 2>/dev/null
rc=$?
check "mark-dirty --file refuses a file on another device (exit $rc)" test $rc = 2
blksnap snapshot destroy "$(blksnap snapshot create /dev/vdd)"
check "mark-dirty --file marks a file's blocks" sh -c \
	"blksnap tracker mark-dirty /dev/vdd --file $D/pre.storage 2>&1 | grep -q 'marked [1-9][0-9]* range'"
blksnap tracker remove /dev/vdd
check "snapshot destroy" blksnap snapshot destroy "$id"
msg=$(blksnap snapshot destroy "$id" 2>&1)
rc=$?
check "destroying again fails, naming ESRCH (exit $rc)" sh -c "[ $rc = 1 ] && echo '$msg' | grep -q ESRCH"
blksnap tracker remove /dev/vda
check "tracker remove" sh -c "! blksnap tracker list | grep -q '(254:0)'"
rm -f $D/pre.storage

# --- watch answers low free space with files -------------------------------
echo 8192 >$P/diff_storage_minimum	# 4 MiB: events come early
echo 20000 >$P/diff_storage_wait_ms
watched_snapshot 64M 4M /tmp/watch.log
before=$(sum /dev/vda 32)
dd if=/dev/urandom of=/dev/vda bs=1M count=16 seek=4 oflag=direct 2>/dev/null
img=$(blksnap --json snapshot images "$id" | sed 's/.*"path":"\([^"]*\)".*/\1/')
after=$(sum "$img" 32)
check "watch kept the image whole ($img)" test "$before" = "$after"
check "watch added storage files more than once" sh -c "[ \$(grep -c 'storage: added' /tmp/watch.log) -ge 2 ]"
check "no corrupted event" sh -c "! grep -q CORRUPTED /tmp/watch.log"
blksnap snapshot destroy "$id"
wait $wpid
check "watch exits when the snapshot goes, removing its files" sh -c "grep -q 'snapshot is gone' /tmp/watch.log && ! ls $D | grep -q '^blksnap-.*[.]storage$'"
sed 's/^/# /' /tmp/watch.log
echo 2097152 >$P/diff_storage_minimum
echo 5000 >$P/diff_storage_wait_ms

# --- storage follows what the snapshot consumes ------------------------------
# The default diff_storage_minimum (1 GiB) asks again after every append:
# answered event by event, a 1 GiB limit would be appended at once.
echo 20000 >$P/diff_storage_wait_ms
watched_snapshot 1G 16M /tmp/need.log
before=$(sum /dev/vda)
img=$(blksnap --json snapshot images "$id" | sed 's/.*"path":"\([^"]*\)".*/\1/')
S=/sys/block/${img##*/}/blksnap
dd if=/dev/urandom of=/dev/vda bs=1M count=2 seek=100 oflag=direct 2>/dev/null
used=$(cat $S/diff_storage_used)
total=$(cat $S/diff_storage_total)
check "2 MiB written: 8 chunks used ($used sectors), at most 2 steps appended ($total)" \
	sh -c "[ '$used' = $((8 * 512)) ] && [ '$total' -le 65536 ]"
dd if=/dev/urandom of=/dev/vda bs=1M count=64 seek=128 oflag=direct 2>/dev/null
used=$(cat $S/diff_storage_used)
total=$(cat $S/diff_storage_total)
check "64 MiB more: storage grew with use ($used of $total sectors), far below the limit" \
	sh -c "[ '$used' -ge $((66 * 2048)) ] && [ '$total' -ge '$used' ] && [ '$total' -le $((512 * 2048)) ]"
check "and the image is the device at TAKE" test "$(sum "$img")" = "$before"
blksnap snapshot destroy "$id"
wait $wpid
check "no corrupted event, no limit reached" sh -c "! grep -q 'CORRUPTED\\|limit' /tmp/need.log"
sed 's/^/# /' /tmp/need.log
echo 5000 >$P/diff_storage_wait_ms

# --- backup: full, then incremental ----------------------------------------
# 8 MiB of zeros on the device: a full copy leaves them as holes (the
# file system's own extent blocks take a few KiB).
dd if=/dev/zero of=/dev/vda bs=1M count=8 seek=200 oflag=direct 2>/dev/null
rm -f $D/full.img $D/full.img.blksnap.json
blksnap --json backup /dev/vda --target $D/full.img --storage-dir $D --storage-step 16M >/tmp/full.json 2>/tmp/full.log
check "full backup" test $? = 0
check "it reports storage used and appended" grep -q '"storage_appended":[1-9][0-9]*,"storage_files":[1-9][0-9]*,"storage_used":[0-9]' /tmp/full.json
s1=$(sum /dev/vda)
check "full copy equals the device" test "$(sum $D/full.img)" = "$s1"
skipped=$(sed 's/.*"skipped":\([0-9]*\).*/\1/' /tmp/full.json)
used=$(du -k $D/full.img | cut -f1)
check "the full copy left zeros as holes (skipped $skipped bytes, $used KiB used of 262144)" \
	sh -c "[ '$skipped' -ge 8388608 ] && [ '$used' -le $((262144 - 8192 + 1024)) ]"
check "the full backup wrote its manifest" grep -q '"kind": "full"' $D/full.img.blksnap.json
since=$(sed 's/.*"next_since":\([0-9]*\).*/\1/' /tmp/full.json)
gen=$(sed 's/.*"generation":"\([^"]*\)".*/\1/' /tmp/full.json)
dd if=/dev/urandom of=/dev/vda bs=64K count=3 seek=100 oflag=direct 2>/dev/null
dd if=/dev/urandom of=/dev/vda bs=4K count=1 seek=50000 oflag=direct 2>/dev/null
blksnap --json backup /dev/vda --target $D/full.img --storage-dir $D --since "$since" --generation "$gen" >/tmp/inc.json 2>/tmp/inc.log
rc=$?
copied=$(sed 's/.*"copied":\([0-9]*\).*/\1/' /tmp/inc.json)
check "incremental backup --since $since copied $copied bytes (exit $rc)" sh -c "[ $rc = 0 ] && [ '$copied' -gt 0 ] && [ '$copied' -le 1048576 ]"
s2=$(sum /dev/vda)
check "incremental copy equals the device" test "$(sum $D/full.img)" = "$s2"
sed 's/^/# /' /tmp/full.log /tmp/inc.log

# --- the manifest continues the chain, with nothing but the target ----------
dd if=/dev/urandom of=/dev/vda bs=64K count=2 seek=300 oflag=direct 2>/dev/null
blksnap --json backup /dev/vda --target $D/full.img --storage-dir $D >/tmp/man.json 2>/tmp/man.log
rc=$?
copied=$(sed 's/.*"copied":\([0-9]*\).*/\1/' /tmp/man.json)
check "a backup with only the target continues its chain (exit $rc, $copied bytes)" \
	sh -c "[ $rc = 0 ] && grep -q '\"kind\":\"incremental\"' /tmp/man.json && [ '$copied' -gt 0 ] && [ '$copied' -le 1048576 ]"
s3=$(sum /dev/vda)
check "and the copy equals the device" test "$(sum $D/full.img)" = "$s3"
check "the manifest records three runs" test "$(grep -c '"kind"' $D/full.img.blksnap.json)" = 3
sed 's/^/# /' /tmp/man.log

# --- restore points: one per run, each restores as the device was ----------
check "three restore points" test "$(blksnap --json points $D/full.img | grep -o '"point":' | wc -l)" = 3
n=1
for s in "$s1" "$s2" "$s3"; do
	blksnap restore $D/full.img --point $n --to $D/r.img >/dev/null 2>/tmp/rst.log
	rc=$?
	check "point $n restores the device as it was at run $n (exit $rc)" \
		sh -c "[ $rc = 0 ] && [ '$(sum $D/r.img)' = '$s' ]"
	n=$((n + 1))
done
check "verify: every point intact" blksnap verify $D/full.img
# --keep 2: a fourth run keeps points 3 and 4.
dd if=/dev/urandom of=/dev/vda bs=64K count=2 seek=700 oflag=direct 2>/dev/null
blksnap backup /dev/vda --target $D/full.img --storage-dir $D --keep 2 >/dev/null 2>/tmp/keep.log
rc=$?
s4=$(sum /dev/vda)
pts=$(blksnap --json points $D/full.img | grep -o '"point":[0-9]*' | cut -d: -f2 | tr '\n' ' ')
check "--keep 2 keeps points 3 and 4 (exit $rc, points: $pts)" \
	sh -c "[ $rc = 0 ] && [ '$pts' = '3 4 ' ] && [ ! -e $D/full.img.points/00000001.delta ]"
check "point 4 is the target itself, as the device is" test "$(sum $D/full.img)" = "$s4"
# A run killed at any moment (before, during or after its copy): the next
# run undoes what it left and succeeds, and no point is lost.
dd if=/dev/urandom of=/dev/vda bs=1M count=16 seek=120 oflag=direct 2>/dev/null
backup_taken $D/full.img /tmp/kill2.log
sleep 1
kill -KILL $bp
wait $bp 2>/dev/null
blksnap cleanup --storage-dir $D --destroy >/dev/null 2>&1
blksnap backup /dev/vda --target $D/full.img --storage-dir $D >/dev/null 2>/tmp/kill3.log
rc=$?
check "after a killed run the next one succeeds and equals the device (exit $rc)" \
	sh -c "[ $rc = 0 ] && [ '$(sum $D/full.img)' = '$(sum /dev/vda)' ]"
blksnap restore $D/full.img --point 4 --to $D/r.img >/dev/null 2>/tmp/rst.log
check "and point 4 still restores as it was" test "$(sum $D/r.img)" = "$s4"
sed 's/^/# /' /tmp/kill3.log
# One byte of point 3's delta, changed: verify and restore name it.
d3=$D/full.img.points/00000003.delta
b=$(od -An -tu1 -j100 -N1 $d3 | tr -d ' ')
printf "$(printf '\\%03o' $(((b + 1) % 256)))" | dd of=$d3 bs=1 seek=100 conv=notrunc 2>/dev/null
blksnap verify $D/full.img >/tmp/vfy.out 2>&1
rc=$?
check "a changed byte in a delta: verify exits 6 naming point 3 (got $rc)" \
	sh -c "[ $rc = 6 ] && grep -q 'point 3:' /tmp/vfy.out"
blksnap restore $D/full.img --point 3 --to $D/r.img >/dev/null 2>/tmp/rst.log
rc=$?
check "and restoring point 3 stops there with exit 6 (got $rc)" \
	sh -c "[ $rc = 6 ] && grep -q 'point 3:' /tmp/rst.log"
sed 's/^/# /' /tmp/keep.log /tmp/vfy.out /tmp/rst.log
rm -f $D/r.img

# --- --verify: the target against a fresh snapshot ---------------------------
blksnap --json backup /dev/vda --target $D/full.img --storage-dir $D --verify >/tmp/ver.json 2>/tmp/ver.log
rc=$?
cmpd=$(sed 's/.*"compared":\([0-9]*\).*/\1/' /tmp/ver.json)
check "--verify compares the last run's blocks: identical (exit $rc, $cmpd bytes)" \
	sh -c "[ $rc = 0 ] && [ '$cmpd' -gt 0 ] && grep -q '\"mismatched\":0' /tmp/ver.json"
blksnap --json backup /dev/vda --target $D/full.img --storage-dir $D --full-verify >/tmp/ver.json 2>>/tmp/ver.log
rc=$?
cmpd=$(sed 's/.*"compared":\([0-9]*\).*/\1/' /tmp/ver.json)
check "--full-verify compares every block: identical (exit $rc, $cmpd bytes)" \
	sh -c "[ $rc = 0 ] && [ '$cmpd' -ge 260000000 ] && grep -q '\"mismatched\":0' /tmp/ver.json"
printf 'X' | dd of=$D/full.img bs=1 seek=4096 conv=notrunc 2>/dev/null
blksnap --json backup /dev/vda --target $D/full.img --storage-dir $D --full-verify >/tmp/ver.json 2>>/tmp/ver.log
rc=$?
check "a damaged target fails --full-verify with exit 6 (got $rc)" \
	sh -c "[ $rc = 6 ] && ! grep -q '\"mismatched\":0' /tmp/ver.json"
sed 's/^/# /' /tmp/ver.log

# --- a snapshot that runs out of storage: exit 4, naming the device ---------
echo 100 >$P/diff_storage_wait_ms
blksnap backup /dev/vda --target $D/cor.img --storage-dir $D --storage-step 8M \
	--storage-limit 8M >/dev/null 2>/tmp/cor.log &
bp=$!
n=0
while ! grep -q ' taken$' /tmp/cor.log && [ $n -lt 100 ]; do n=$((n + 1)); sleep 0.1; done
dd if=/dev/urandom of=/dev/vda bs=1M count=48 seek=64 oflag=direct 2>/dev/null
wait $bp
rc=$?
check "a backup whose image is corrupted exits 4, naming the device (got $rc)" \
	sh -c "[ $rc = 4 ] && grep -q 'CORRUPTED' /tmp/cor.log && grep -q '254:0' /tmp/cor.log"
sed 's/^/# /' /tmp/cor.log | tail -5
echo 5000 >$P/diff_storage_wait_ms
rm -f $D/cor.img $D/cor.img.blksnap.json

# --- Ctrl-C during a backup -------------------------------------------------
backup_taken $D/int.img /tmp/int.log
sleep 1
kill -INT $bp
wait $bp
rc=$?
check "Ctrl-C ends a backup with exit 130 (got $rc)" test $rc = 130
check "and destroys its snapshot" test -z "$(blksnap snapshot list)"
check "and removes its storage files" sh -c "! ls $D | grep -q '^blksnap-.*[.]storage\$'"
check "and writes no manifest" test ! -e $D/int.img.blksnap.json
sed 's/^/# /' /tmp/int.log
rm -f $D/int.img

# --- cleanup after a killed backup --------------------------------------------
# A backup's run record in its storage directory stays locked while it
# runs (stopped here, so that it is surely still there): cleanup keeps
# its snapshot. Once it is killed, its unlocked record says its snapshot
# has no owner left: cleanup destroys it, with or without --destroy.
backup_taken $D/kill.img /tmp/kill.log
kill -STOP $bp
blksnap cleanup --storage-dir $D >/tmp/clean.log 2>&1
check "cleanup keeps the snapshot of a backup still running" sh -c \
	"[ -n \"\$(blksnap snapshot list)\" ] && ls $D | grep -q '^blksnap-.*[.]storage\$'"
kill -KILL $bp
wait $bp 2>/dev/null
blksnap cleanup --storage-dir $D >>/tmp/clean.log 2>&1
rc=$?
check "cleanup destroys the snapshot of the killed backup (exit $rc)" sh -c "[ $rc = 0 ] && [ -z \"\$(blksnap snapshot list)\" ]"
check "and removes its storage files and its run record" sh -c "! ls $D | grep -q '^blksnap-.*[.]\(storage\|run\)\$'"
sed 's/^/# /' /tmp/clean.log
# A run killed before its first storage file leaves only its record
# (made here by hand): the next backup with that storage directory
# destroys the snapshot itself, instead of failing with EBUSY.
id=$(blksnap snapshot create /dev/vda)
echo "snapshot $id" >$D/blksnap-1-1.run
blksnap backup /dev/vda --target $D/kill.img --storage-dir $D >/dev/null 2>/tmp/reap.log
rc=$?
check "the next backup destroys a killed run's snapshot that had no storage yet (exit $rc)" sh -c \
	"[ $rc = 0 ] && grep -q 'was killed' /tmp/reap.log && [ -z \"\$(blksnap snapshot list)\" ] && [ ! -e $D/blksnap-1-1.run ]"
grep -v '^$' /tmp/reap.log | head -3 | sed 's/^/# /'
rm -f $D/kill.img $D/kill.img.blksnap.json
blksnap tracker remove /dev/vda 2>/dev/null
rm -f $D/full.img $D/full.img.blksnap.json

# --- storage on the file system being backed up --------------------------------
# The common host: one file system. A large file deleted after TAKE frees
# blocks that storage added after TAKE could get; the tool allocates all
# of its storage before TAKE instead, and the backup keeps the file.
dd if=/dev/urandom of=$D/big bs=1M count=150 2>/dev/null && sync
bigsum=$(md5sum <$D/big | cut -d' ' -f1)
blksnap backup /dev/vdd --target /tmp/same.img --storage-dir $D --storage-limit 128M \
	>/dev/null 2>/tmp/same.log &
bp=$!
n=0
while ! grep -q ' taken$' /tmp/same.log && [ $n -lt 300 ]; do n=$((n + 1)); sleep 0.1; done
rm $D/big && sync
dd if=/dev/urandom of=$D/new bs=1M count=50 2>/dev/null && sync
wait $bp
rc=$?
check "a backup with its storage on the file system it backs up works (exit $rc)" test $rc = 0
check "it allocated all of its storage before TAKE" grep -q 'allocated before TAKE' /tmp/same.log
sed 's/^/# /' /tmp/same.log | grep -v '^# copied'
mkdir -p /mnt/same
mount -o ro,loop /tmp/same.img /mnt/same
check "the file deleted after TAKE is whole in the backup" \
	test "$(md5sum </mnt/same/big 2>/dev/null | cut -d' ' -f1)" = "$bigsum"
umount /mnt/same
rm -f /tmp/same.img /tmp/same.img.blksnap.json $D/new
blksnap tracker remove /dev/vdd 2>/dev/null
umount $D
tap_exit
