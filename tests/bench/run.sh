#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# The benchmark, run inside the VM by `make bench` (and, small, by `make
# check`), once per disk model: fio on a plain disk, on the same disk
# tracked by blksnap, under a blksnap snapshot, under dm-snapshot and under
# a dm-thin snapshot, in the same VM. Each result is a line
#   BENCH <case> <system> <trial> <value>
# (IOPS for writes, KiB/s for reads, nanoseconds for take); a run that
# moved no data prints "BENCH-ERROR" with fio's own report instead of a
# zero, and the run fails. Besides:
#   MODEL <name> <iops> <bytes/s> <region MiB> <fresh MiB>
#   CURVE <system> <trial> <IOPS in each second of the fresh-snapshot run>
#   MEM <what> <MiB> <kernel memory delta KiB> <slab delta KiB>
#
# Disks: /dev/vda original, /dev/vdb storage (blksnap's range, dm's COW
# device), /dev/vdc 1 TiB sparse, /dev/vdd 1 GiB, /dev/vde storage for
# those two and the CBT store, /dev/vdf the thin pool. On a throttled
# model, vda, vdb, vde and vdf share one budget: one physical disk.
# The original's written region holds random data written by the host.
#
# Settings from the kernel command line: bsbench_model (its name),
# bsbench_iops and bsbench_bps (the model's budget, 0 for none; printed
# for the report), bsbench_region (MiB of the original written and read),
# bsbench_fresh (MiB the fresh-snapshot writes cover), bsbench_trials,
# bsbench_seconds (one random or read run), bsbench_fresh_seconds,
# bsbench_engine (libaio, or psync on a kernel without AIO),
# bsbench_profile=1 (after the trials, profile the fresh-snapshot writes
# and the image read with perf), bsbench_take=1 (CREATE+TAKE timings).
ORIG=/dev/vda
STORE=/dev/vdb
THINDISK=/dev/vdf
MODEL=cpu
IOPS=0
BPS=0
TRIALS=3
SECS=6
FSECS=20
MIB=512
FMIB=128
ENGINE=libaio
TAKE=0
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	bsbench_model=*) MODEL=${arg#*=} ;;
	bsbench_iops=*) IOPS=${arg#*=} ;;
	bsbench_bps=*) BPS=${arg#*=} ;;
	bsbench_trials=*) TRIALS=${arg#*=} ;;
	bsbench_seconds=*) SECS=${arg#*=} ;;
	bsbench_fresh_seconds=*) FSECS=${arg#*=} ;;
	bsbench_region=*) MIB=${arg#*=} ;;
	bsbench_fresh=*) FMIB=${arg#*=} ;;
	bsbench_engine=*) ENGINE=${arg#*=} ;;
	bsbench_profile=*) PROFILE=${arg#*=} ;;
	bsbench_take=*) TAKE=${arg#*=} ;;
	esac
done
CHUNK_KIB=256
errors=0

say() { echo "# $MODEL: $*"; }

# fio_run FIELD FIO-ARGS...: prints fio's value (terse field FIELD) or
# reports an error. Fields: 8 read IOPS, 7 read KiB/s, 49 write IOPS.
# Jobs are reported as one group, so numjobs=2 gives their sum.
fio_run() {
	field=$1
	shift
	out=$(fio --name=bench --direct=1 --thread --ioengine=$ENGINE --iodepth=16 \
		--group_reporting --output-format=terse --terse-version=3 "$@" 2>&1)
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
fail() {
	echo "BENCH-ERROR $*"
	errors=$((errors + 1))
}

SIZE="--size=${MIB}M"
rand() { # DEV [JOBS]
	fio_run 49 --filename="$1" --rw=randwrite --bs=4k $SIZE --norandommap \
		--randrepeat=0 --runtime=$SECS --time_based --numjobs="${2:-1}"
}
# One 4 KiB write at the start of every chunk of the region: every write
# is a first write to its chunk.
strided() { fio_run 49 --filename="$1" --rw=write:$((CHUNK_KIB - 4))k --bs=4k $SIZE; }
# Read passes over the region for as long as the random runs.
seqread() { fio_run 7 --filename="$1" --rw=read --bs=1M $SIZE --runtime=$SECS --time_based; }
# Random writes to a fresh snapshot over a region small enough that the
# run goes from all first writes to all repeat writes; the IOPS of each
# second of the run are printed as a CURVE line.
fresh() { # DEV SYSTEM TRIAL
	rm -f /tmp/curve_iops.*.log
	v=$(fio_run 49 --filename="$1" --rw=randwrite --bs=4k --size=${FMIB}M --norandommap \
		--randrepeat=0 --runtime=$FSECS --time_based \
		--write_iops_log=/tmp/curve --log_avg_msec=1000)
	result fresh "$2" "$3" "$v"
	# Each line: msec, IOPS in that second, direction, block size, ...
	[ -f /tmp/curve_iops.1.log ] &&
		echo "CURVE $2 $3 $(cut -d, -f2 /tmp/curve_iops.1.log | tr -d ' ' | tr '\n' ' ')"
}

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

# dm-thin, as an LVM thin volume and its snapshot: a pool on /dev/vdf
# (64 MiB of metadata, then data, 256 KiB blocks as blksnap's chunks), a
# thin origin holding a copy of the region, snapshots by create_snap.
thin_setup() {
	meta=131072
	total=$(blockdev --getsz $THINDISK)
	dd if=/dev/zero of=$THINDISK bs=4k count=1 oflag=direct 2>/dev/null
	dmsetup create bs_tmeta --table "0 $meta linear $THINDISK 0" &&
		dmsetup create bs_tdata --table "0 $((total - meta)) linear $THINDISK $meta" &&
		dmsetup create bs_pool --table "0 $((total - meta)) thin-pool /dev/mapper/bs_tmeta /dev/mapper/bs_tdata $((CHUNK_KIB * 2)) 64 1 skip_block_zeroing" &&
		dmsetup message bs_pool 0 "create_thin 0" &&
		dmsetup create bs_thin --table "0 $((MIB * 2048)) thin /dev/mapper/bs_pool 0" &&
		ready /dev/mapper/bs_thin &&
		dd if=$ORIG of=/dev/mapper/bs_thin bs=1M count=$MIB iflag=direct oflag=direct 2>/dev/null
}
thin_snapshot() {
	dmsetup suspend bs_thin &&
		dmsetup message bs_pool 0 "create_snap 1 0" &&
		dmsetup resume bs_thin &&
		dmsetup create bs_tsnap --table "0 $((MIB * 2048)) thin /dev/mapper/bs_pool 1" &&
		ready /dev/mapper/bs_tsnap
}
# What the thin pool did in a run: "<data blocks in use> <sectors read>
# <sectors written>" of the pool and of its disk (/dev/vdf), before and
# after, show whether its first writes copied their blocks.
thin_io() {
	used=$(dmsetup status bs_pool | awk '{ split($6, a, "/"); print a[1] }')
	echo "$used $(awk '{ print $3, $7 }' /sys/block/vdf/stat)"
}
thin_remove() {
	dmsetup remove bs_tsnap 2>/dev/null
	dmsetup message bs_pool 0 "delete 1" 2>/dev/null
}
thin_teardown() {
	for d in bs_thin bs_pool bs_tdata bs_tmeta; do
		dmsetup remove $d 2>/dev/null
	done
}

# Kernel memory in use, in KiB, once the caches are dropped: "<used> <slab>"
# (used: what is neither free nor page cache nor buffers).
kmem() {
	sync
	echo 3 >/proc/sys/vm/drop_caches
	awk '/^MemTotal:/ { t = $2 } /^MemFree:/ { f = $2 } /^Buffers:/ { b = $2 }
		/^Cached:/ { c = $2 } /^Slab:/ { s = $2 } END { print t - f - b - c, s }' /proc/meminfo
}

echo "MODEL $MODEL $IOPS $BPS $MIB $FMIB"
echo "bench: $(uname -r), $(nproc) CPUs, model $MODEL, $TRIALS trial(s), ${SECS}s runs, ${FSECS}s fresh runs, ${MIB} MiB region, $ENGINE"
insmod /lib/modules/blksnap.ko || { echo "BENCH-ERROR insmod"; exit 1; }
say "dm-thin pool and origin (a copy of the region)"
thin_setup || fail "dm-thin setup"

t=1
while [ $t -le $TRIALS ]; do
	say "trial $t: plain disk"
	result rand plain $t "$(rand $ORIG)"
	result rand2 plain $t "$(rand $ORIG 2)"
	result strided plain $t "$(strided $ORIG)"
	result read plain $t "$(seqread $ORIG)"

	say "trial $t: blksnap"
	id=$(blksnap_snapshot) || fail "blksnap snapshot"
	# A fresh snapshot: first writes (one per chunk) copy every chunk...
	result first blksnap $t "$(strided $ORIG)"
	# ... so that these writes find every chunk copied.
	result repeat blksnap $t "$(rand $ORIG)"
	result repeat2 blksnap $t "$(rand $ORIG 2)"
	blksnap snapshot destroy "$id"
	id=$(blksnap_snapshot) || fail "blksnap snapshot"
	# Reading a fresh image: every chunk is still on the original.
	result read blksnap $t "$(seqread "$(cat /tmp/img)")"
	fresh $ORIG blksnap $t
	blksnap snapshot destroy "$id"
	# The tracker stays: writes with change tracking alone.
	result tracked blksnap $t "$(rand $ORIG)"
	result tracked2 blksnap $t "$(rand $ORIG 2)"
	blksnap tracker remove $ORIG
	# With a CBT store (on /dev/vde): the first write to each group of
	# tracking blocks waits for its write-intent mark, as after a reboot;
	# once every group is marked, none waits.
	if blksnap tracker persist $ORIG --store /dev/vde >/dev/null; then
		result marks blksnap $t "$(rand $ORIG)"
		result persist blksnap $t "$(rand $ORIG)"
		blksnap tracker detach $ORIG
	else
		fail "blksnap tracker persist"
	fi

	say "trial $t: dm-snapshot"
	dm_snapshot || fail "dm-snapshot"
	result first dm $t "$(strided /dev/mapper/bs_origin)"
	result repeat dm $t "$(rand /dev/mapper/bs_origin)"
	dm_remove
	dm_snapshot || fail "dm-snapshot"
	result read dm $t "$(seqread /dev/mapper/bs_snap)"
	fresh /dev/mapper/bs_origin dm $t
	dm_remove

	say "trial $t: dm-thin"
	thin_snapshot || fail "dm-thin snapshot"
	before=$(thin_io)
	result first thin $t "$(strided /dev/mapper/bs_thin)"
	echo "THIN $t $((MIB * 1024 / CHUNK_KIB)) $before $(thin_io)"
	result repeat thin $t "$(rand /dev/mapper/bs_thin)"
	thin_remove
	thin_snapshot || fail "dm-thin snapshot"
	result read thin $t "$(seqread /dev/mapper/bs_tsnap)"
	fresh /dev/mapper/bs_thin thin $t
	thin_remove
	t=$((t + 1))
done
thin_teardown

say "kernel memory"
set -- $(kmem)
id=$(blksnap snapshot create /dev/vdc) && blksnap snapshot destroy "$id" >/dev/null
set -- "$@" $(kmem)
echo "MEM tracked $((1024 * 1024)) $(($3 - $1)) $(($4 - $2))"
blksnap tracker remove /dev/vdc
set -- $(kmem)
id=$(blksnap_snapshot) || fail "blksnap snapshot"
strided $ORIG >/dev/null
set -- "$@" $(kmem)
echo "MEM changed $MIB $(($3 - $1)) $(($4 - $2))"
blksnap snapshot destroy "$id"
blksnap tracker remove $ORIG

# Where the time goes: a system-wide profile of one run of each of two
# cases, printed as "PROFILE <case> <line>".
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
		profile fresh sh -c "fio --name=p --direct=1 --thread --ioengine=$ENGINE --iodepth=16 --filename=$ORIG --rw=randwrite --bs=4k --size=${FMIB}M --norandommap --runtime=$SECS --time_based"
		blksnap snapshot destroy "$id"
	}
	blksnap tracker remove $ORIG
fi

if [ "$TAKE" = 1 ]; then
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
fi
rmmod blksnap
echo "bench-errors: $errors"
[ $errors = 0 ]
