#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# The benchmark, run inside the VM by `make bench` (and, small, by `make
# check`): fio on a plain disk, on the same disk tracked by blksnap, under
# a blksnap snapshot and under dm-snapshot, on the same disks in the same
# VM; then CREATE+TAKE on a 1 TiB and a 1 GiB disk. Each result is a line
#   BENCH <case> <system> <trial> <value>
# (IOPS for writes, KiB/s for reads, nanoseconds for take); a run that
# moved no data prints "BENCH-ERROR" with fio's own report instead of a
# zero, and the run fails.
#
# Disks: /dev/vda original, /dev/vdb storage (blksnap's range, dm's COW
# device), /dev/vdc 1 TiB sparse, /dev/vdd 1 GiB, /dev/vde storage for
# those two.
# Settings from the kernel command line: bsbench_trials, bsbench_seconds,
# bsbench_mib (size of the original used), bsbench_engine (libaio, or
# psync on a kernel without AIO), bsbench_profile=1 (after the trials,
# profile the fresh-snapshot writes and the image read with perf).
ORIG=/dev/vda
STORE=/dev/vdb
TRIALS=3
SECS=6
MIB=512
ENGINE=libaio
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	bsbench_trials=*) TRIALS=${arg#*=} ;;
	bsbench_seconds=*) SECS=${arg#*=} ;;
	bsbench_mib=*) MIB=${arg#*=} ;;
	bsbench_engine=*) ENGINE=${arg#*=} ;;
	bsbench_profile=*) PROFILE=${arg#*=} ;;
	esac
done
CHUNK_KIB=256
errors=0

say() { echo "# $*"; }

# fio_run NAME FIELD FIO-ARGS...: prints fio's value (terse field FIELD) or
# reports an error. Fields: 8 read IOPS, 7 read KiB/s, 49 write IOPS.
fio_run() {
	field=$1
	shift
	out=$(fio --name=bench --direct=1 --thread --ioengine=$ENGINE --iodepth=16 \
		--output-format=terse --terse-version=3 "$@" 2>&1)
	rc=$?
	v=$(echo "$out" | tail -1 | cut -d';' -f"$field" | cut -d. -f1)
	err=$(echo "$out" | tail -1 | cut -d';' -f5)
	if [ $rc != 0 ] || [ "$err" != 0 ] || [ -z "$v" ] || [ "$v" = 0 ]; then
		echo "BENCH-ERROR fio $* (exit $rc, error field '$err', value '$v'):" >&2
		echo "$out" | sed 's/^/#   /' >&2
		dmesg | tail -20 | sed 's/^/#   dmesg: /' >&2
		echo 0
		return 1
	fi
	echo "$v"
}

result() { # CASE SYSTEM TRIAL VALUE
	echo "BENCH $1 $2 $3 $4"
	[ "$4" != 0 ] || errors=$((errors + 1))
}

SIZE="--size=${MIB}M"
rand() { fio_run 49 --filename="$1" --rw=randwrite --bs=4k $SIZE --norandommap \
	--randrepeat=0 --runtime=$SECS --time_based; }
# One 4 KiB write at the start of every chunk.
strided() { fio_run 49 --filename="$1" --rw=write:$((CHUNK_KIB - 4))k --bs=4k $SIZE; }
# Read passes over the device for as long as the random runs: one pass
# takes a fraction of a second, too short to time.
seqread() { fio_run 7 --filename="$1" --rw=read --bs=1M $SIZE --runtime=$SECS --time_based; }

# A device node appears a moment after its disk: wait for it to be usable.
ready() {
	n=0
	while ! dd if="$1" of=/dev/null bs=4k count=1 iflag=direct 2>/dev/null; do
		n=$((n + 1))
		[ $n -lt 300 ] || { echo "BENCH-ERROR $1 never became readable" >&2; return 1; }
		sleep 0.1
	done
}

blksnap_snapshot() { # prints the id; the image path goes to /tmp/img
	id=$(blksnap snapshot create $ORIG) || return 1
	blksnap snapshot append-storage "$id" --device $STORE --range 0:$((MIB * 2 * 2048)) >/dev/null ||
		return 1
	blksnap snapshot take "$id" >/dev/null || return 1
	blksnap --json snapshot images "$id" | sed 's/.*"path":"\([^"]*\)".*/\1/' >/tmp/img
	ready "$(cat /tmp/img)" || return 1
	echo "$id"
}

dm_snapshot() {
	size=$(blockdev --getsz $ORIG)
	dmsetup create bs_origin --table "0 $size snapshot-origin $ORIG" &&
		dmsetup create bs_snap --table "0 $size snapshot $ORIG $STORE N $((CHUNK_KIB * 2))" &&
		ready /dev/mapper/bs_snap
}
dm_remove() {
	dmsetup remove bs_snap 2>/dev/null
	dmsetup remove bs_origin 2>/dev/null
}

echo "bench: $(uname -r), $(nproc) CPUs, $TRIALS trial(s), ${SECS}s random runs, ${MIB} MiB, $ENGINE"
insmod /lib/modules/blksnap.ko || { echo "BENCH-ERROR insmod"; exit 1; }
# Real data on the original (not sparse zeros), once.
dd if=/dev/urandom of=/tmp/rnd bs=1M count=4 2>/dev/null
i=0
while [ $i -lt $MIB ]; do
	cat /tmp/rnd
	i=$((i + 4))
done | dd of=$ORIG bs=1M iflag=fullblock oflag=direct 2>/dev/null
rm -f /tmp/rnd

t=1
while [ $t -le $TRIALS ]; do
	say "trial $t: plain disk"
	result rand plain $t "$(rand $ORIG)"
	result strided plain $t "$(strided $ORIG)"
	result read plain $t "$(seqread $ORIG)"

	say "trial $t: blksnap"
	id=$(blksnap_snapshot) || { echo "BENCH-ERROR blksnap snapshot"; errors=$((errors + 1)); }
	img=$(cat /tmp/img)
	# A fresh snapshot: first writes (one per chunk) copy every chunk...
	result first blksnap $t "$(strided $ORIG)"
	# ... so that these writes find every chunk copied.
	result repeat blksnap $t "$(rand $ORIG)"
	blksnap snapshot destroy "$id"
	id=$(blksnap_snapshot) || { echo "BENCH-ERROR blksnap snapshot"; errors=$((errors + 1)); }
	img=$(cat /tmp/img)
	# Reading a fresh image: every chunk is still on the original.
	result read blksnap $t "$(seqread "$img")"
	result fresh blksnap $t "$(rand $ORIG)"
	blksnap snapshot destroy "$id"
	# The tracker stays: writes with change tracking alone.
	result tracked blksnap $t "$(rand $ORIG)"
	blksnap tracker remove $ORIG
	# With a CBT store (on /dev/vde, which CREATE+TAKE uses later): the
	# first write to each tracking block waits for its write-intent mark,
	# as after a reboot; once every block is marked, none waits.
	if blksnap tracker persist $ORIG --store /dev/vde >/dev/null; then
		result marks blksnap $t "$(rand $ORIG)"
		result persist blksnap $t "$(rand $ORIG)"
		blksnap tracker detach $ORIG
	else
		echo "BENCH-ERROR blksnap tracker persist"
		errors=$((errors + 1))
	fi

	say "trial $t: dm-snapshot"
	dm_snapshot || { echo "BENCH-ERROR dm-snapshot"; errors=$((errors + 1)); }
	result first dm $t "$(strided /dev/mapper/bs_origin)"
	result repeat dm $t "$(rand /dev/mapper/bs_origin)"
	dm_remove
	dm_snapshot || { echo "BENCH-ERROR dm-snapshot"; errors=$((errors + 1)); }
	result read dm $t "$(seqread /dev/mapper/bs_snap)"
	result fresh dm $t "$(rand /dev/mapper/bs_origin)"
	dm_remove
	t=$((t + 1))
done

# Where the time goes: a system-wide profile of one run of each of the two
# cases furthest from their goals, printed as "PROFILE <case> <line>".
profile() { # CASE FIO-RUN...
	case=$1
	shift
	perf record -a -g -e cpu-clock -o /tmp/perf.data -- "$@" >/dev/null 2>/tmp/perf.err ||
		{ sed 's/^/# perf: /' /tmp/perf.err; return; }
	perf report -i /tmp/perf.data --stdio --no-children --sort sym -g none 2>/dev/null |
		grep -v '^#' | grep -v '^$' | head -30 | sed "s/^/PROFILE $case /"
}
if [ "${PROFILE:-0}" = 1 ]; then
	say "profiles"
	id=$(blksnap_snapshot) && {
		profile read sh -c "fio --name=p --direct=1 --thread --ioengine=$ENGINE --iodepth=16 --filename=$(cat /tmp/img) --rw=read --bs=1M --size=${MIB}M --runtime=$SECS --time_based"
		profile fresh sh -c "fio --name=p --direct=1 --thread --ioengine=$ENGINE --iodepth=16 --filename=$ORIG --rw=randwrite --bs=4k --size=${MIB}M --norandommap --runtime=$SECS --time_based"
		blksnap snapshot destroy "$id"
	}
	blksnap tracker remove $ORIG
fi

say "CREATE+TAKE on 1 TiB and on 1 GiB"
t=1
while [ $t -le $TRIALS ]; do
	for d in big:/dev/vdc small:/dev/vdd; do
		ns=$(/bench/take_time ${d#*:} /dev/vde) || { ns="0 0 0"; echo "BENCH-ERROR take_time $d" >&2; }
		set -- $ns
		result take ${d%%:*} $t "$1"
		result create ${d%%:*} $t "$2"
		result takeonly ${d%%:*} $t "$3"
		blksnap tracker remove ${d#*:}
	done
	t=$((t + 1))
done
rmmod blksnap
echo "bench-errors: $errors"
[ $errors = 0 ]
