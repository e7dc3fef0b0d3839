#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Restore points of `blksnap backup` over a live ext4 file system:
# - ten runs, with writes between and during them and a file deleted after
#   the fifth: every point restores exactly what its run copied (the image
#   at its TAKE), a restored point mounts with `mount -o loop,ro`, and the
#   deleted file is there in the points before its deletion only;
# - --keep 3 over the same ten runs keeps three points, each restorable;
# - twenty runs with --keep 3 killed with SIGKILL at random moments: the
#   next run succeeds, and no point that retention keeps is lost or wrong.
. "$(dirname "$0")/lib.sh"

[ -c /dev/blksnap ] || { echo "1..0 # SKIP /dev/blksnap missing"; exit $KSFT_SKIP; }
DEV=/dev/vdj
FS=/mnt/live
D=/mnt/points
A=$D/a.img
B=$D/b.img
tap_plan 18

mkdir -p $FS $D /mnt/look
mount /dev/vdd $D || tap_diag "cannot mount /dev/vdd"
rm -rf $D/storage $A* $B* $D/r.img
mkdir -p $D/storage
blksnap tracker remove $DEV 2>/dev/null
mount -t ext4 $DEV $FS || tap_diag "cannot mount $DEV"

sum() { md5sum <"$1" | cut -d' ' -f1; }
backup() {
	t=$1
	shift
	blksnap backup $DEV --target "$t" --storage-dir $D/storage --storage-step 16M "$@"
}
# points TARGET: its points' numbers, oldest first, on one line.
points() { blksnap --json points "$1" 2>/dev/null | grep -o '"point":[0-9]*' | cut -d: -f2 | tr '\n' ' '; }
newest() { points "$1" | awk '{ print $NF }'; }
# rnd N: a random number from 0 to N - 1.
rnd() { echo $(($(od -An -tu2 -N2 /dev/urandom | tr -d ' ') % $1)); }
# now: centiseconds since boot.
now() { cut -d' ' -f1 /proc/uptime | tr -d .; }
# change I: new files, a file grown, a block of another rewritten in place.
change() {
	dd if=/dev/urandom of=$FS/new.$1 bs=64K count=$((1 + $(rnd 4))) 2>/dev/null
	dd if=/dev/urandom bs=4K count=4 2>/dev/null >>$FS/grown
	dd if=/dev/urandom of=$FS/fixed bs=64K count=1 seek=$(rnd 16) conv=notrunc 2>/dev/null
	sync
}
# restores TARGET POINT FILE: restores a point and prints its checksum.
restores() { blksnap restore "$1" --point "$2" --to "$3" >/dev/null 2>>/tmp/points.log && sum "$3"; }

dd if=/dev/urandom of=$FS/fixed bs=64K count=16 2>/dev/null
dd if=/dev/urandom of=$FS/victim bs=64K count=8 2>/dev/null
vsum=$(sum $FS/victim)
sync
: >/tmp/points.log

# --- ten runs, two targets -----------------------------------------------------
# A writer rewrites a file in place all along: the runs copy a live device.
(while [ -e /tmp/points.live ]; do
	dd if=/dev/urandom of=$FS/busy bs=64K count=4 conv=notrunc 2>/dev/null
	sleep 0.2
done) &
touch /tmp/points.live
bad=0
i=1
while [ $i -le 10 ]; do
	change $i
	[ $i = 6 ] && rm $FS/victim && sync
	backup $A >/dev/null 2>>/tmp/points.log || bad=$((bad + 1))
	eval "sa_$i=$(sum $A)"
	t0=$(now)
	backup $B --keep 3 >/dev/null 2>>/tmp/points.log || bad=$((bad + 1))
	took=$(($(now) - t0))
	eval "sb_$i=$(sum $B)"
	i=$((i + 1))
done
rm -f /tmp/points.live
wait
check "twenty runs over a live ext4 succeed ($bad failed)" test $bad = 0
pa=$(points $A)
check "ten runs, ten restore points ($pa)" test "$pa" = "1 2 3 4 5 6 7 8 9 10 "

n=1
while [ $n -le 10 ]; do
	got=$(restores $A $n $D/r.img)
	want=$(eval echo "\$sa_$n")
	seen=absent
	if mount -o loop,ro,noload $D/r.img /mnt/look 2>>/tmp/points.log; then
		[ -e /mnt/look/victim ] && seen=$(sum /mnt/look/victim)
		umount -d /mnt/look
	else
		seen="not mountable"
	fi
	if [ $n -le 5 ]; then expect=$vsum; else expect=absent; fi
	check "point $n restores run $n's image, which mounts; deleted file: $seen" \
		sh -c "[ '$got' = '$want' ] && [ '$seen' = '$expect' ]"
	n=$((n + 1))
done
check "verify: every point of ten intact" sh -c "blksnap verify $A >/dev/null"

pb=$(points $B)
ok=1
for n in $pb; do
	[ "$(restores $B $n $D/r.img)" = "$(eval echo "\$sb_$n")" ] || ok=0
done
check "--keep 3 over ten runs keeps three points ($pb), each as it was" \
	sh -c "[ '$pb' = '8 9 10 ' ] && [ $ok = 1 ]"
rm -f $A* 2>/dev/null
rm -rf $A.points

# --- twenty runs killed at random moments -------------------------------------
# A run took $took cs: the kill comes anywhere from its start to a little
# after its end. Whatever it hit, the next run must succeed (undoing what
# the killed one left), and the points kept must be the three newest, each
# as recorded when its run ended.
tap_diag "a run with --keep 3 took ${took}0 ms; killing twenty at random moments"
lost=0
failed=0
grew=0
k=1
while [ $k -le 20 ]; do
	before=$(newest $B)
	change k$k
	# The tool itself in the background (not a subshell): the kill is its.
	blksnap backup $DEV --target $B --storage-dir $D/storage --storage-step 16M \
		--keep 3 >/dev/null 2>/tmp/killed.log &
	bp=$!
	if [ $k = 1 ]; then
		# While it runs (it locks the target before it creates its
		# snapshot), another run into the same target is refused.
		n=0
		while ! grep -q 'created' /tmp/killed.log && [ $n -lt 300 ]; do
			n=$((n + 1))
			sleep 0.1
		done
		out=$(backup $B --keep 3 2>&1)
		rc=$?
		check "a second backup into the target while one runs is refused (exit $rc)" \
			sh -c "[ $rc != 0 ] && echo '$out' | grep -q 'another blksnap run'"
	fi
	d=$(rnd $((took + 20)))
	sleep "$((d / 100)).$(printf %02d $((d % 100)))"
	kill -KILL $bp 2>/dev/null
	wait $bp 2>/dev/null
	cat /tmp/killed.log >>/tmp/points.log
	blksnap cleanup --storage-dir $D/storage --destroy >/dev/null 2>&1
	# A run killed once its point was recorded left the target as that
	# point (its manifest names it): that is what the point holds.
	nb=$(newest $B)
	if [ "$nb" != "$before" ]; then
		eval "sb_$nb=$(sum $B)"
		grew=$((grew + 1))
	fi
	if ! backup $B --keep 3 >/dev/null 2>/tmp/next.log; then
		failed=$((failed + 1))
		tap_diag "kill $k (after $d cs): the next run failed:"
		tail -3 /tmp/next.log | sed 's/^/#   /'
	fi
	cat /tmp/next.log >>/tmp/points.log
	nb=$(newest $B)
	eval "sb_$nb=$(sum $B)"
	pb=$(points $B)
	[ "$pb" = "$((nb - 2)) $((nb - 1)) $nb " ] || {
		tap_diag "kill $k (after $d cs): points $pb, newest $nb"
		lost=$((lost + 1))
	}
	# The newest point is the target itself; the two older ones are
	# restored (each through the deltas after it).
	[ "$(sum $B)" = "$(eval echo "\$sb_$nb")" ] || {
		tap_diag "kill $k (after $d cs): the target is not point $nb as recorded"
		lost=$((lost + 1))
	}
	for n in $((nb - 2)) $((nb - 1)); do
		[ "$(restores $B $n $D/r.img)" = "$(eval echo "\$sb_$n")" ] || {
			tap_diag "kill $k (after $d cs): point $n does not restore as recorded:"
			tail -1 /tmp/points.log | sed 's/^/#   /'
			lost=$((lost + 1))
		}
	done
	k=$((k + 1))
done
tap_diag "$grew of the twenty killed runs had recorded their point"
check "after each of twenty kills the next run succeeds ($failed failed)" test $failed = 0
check "and the three newest points stay, each as it was ($lost wrong)" test $lost = 0
blksnap verify $B >/tmp/verify.log 2>&1
rc=$?
[ $rc = 0 ] || tail -5 /tmp/verify.log | sed 's/^/# /'
check "verify: the points kept are intact (exit $rc)" test $rc = 0

grep -v '^$' /tmp/points.log | tail -20 | sed 's/^/# /'
umount $FS
blksnap tracker remove $DEV 2>/dev/null
rm -rf $A* $B* $D/r.img $D/storage
umount $D
tap_exit
