#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# `make bench`: blksnap against a plain disk, dm-snapshot and dm-thin, on
# the same disks in one QEMU VM per disk model (tests/bench/models: QEMU
# I/O throttling makes the disk, not the emulated CPU, bound the plain
# run), with a non-debug build of the patched kernel (its own cached
# build: BLKSNAP_FLAVOUR=bench). Prints, per model, the table of median
# ratios over the trials against each case's physical limit, with each
# trial's values, and writes it to Documentation/performance.rst.
#
# `scripts/bench.sh --smoke` (run by make check): one short trial on a
# small region on every model, which only checks that every case runs and
# moves data.
# It runs on the test kernel (BENCH_FLAVOUR=bench for the bench one), so
# that make check builds a single kernel.
#
# Environment: TRIALS (3), SECONDS_PER_RUN (6), FRESH_SECONDS (20), MIB
# (the region of every model, instead of the models' own), BENCH_REF (a
# git revision: benchmark the module as it was there, for a before/after
# comparison; the page is not written then), MODELS (names from
# tests/bench/models, space-separated: run only those; the page is not
# written then).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
export PATH="$HOME/.cargo/bin:$PATH"
smoke=0
[ "${1:-}" = --smoke ] && smoke=1
say() { printf '[bench] %s\n' "$*" >&2; }

if [ $smoke = 1 ]; then
	TRIALS=1 SECS=1 FSECS=2 ENGINE=libaio FLAVOUR=${BENCH_FLAVOUR:-test}
else
	TRIALS=${TRIALS:-3} SECS=${SECONDS_PER_RUN:-6} FSECS=${FRESH_SECONDS:-20} ENGINE=libaio FLAVOUR=bench
fi
OUT=$top/build/bench
[ $smoke = 1 ] && OUT=$top/build/bench-smoke
[ -n "${BENCH_REF:-}" ] && OUT=$top/build/bench-ref
rm -rf "$OUT"
mkdir -p "$OUT"

scripts/install-deps.sh >&2
command -v perf >/dev/null || [ $smoke = 1 ] || {
	say "installing linux-perf (for the profile)"
	apt-get install -y -qq --no-install-recommends linux-perf >/dev/null
}
say "kernel: the $FLAVOUR flavour (cached after the first build)"
KDIR=$(BLKSNAP_FLAVOUR=$FLAVOUR scripts/build-kernel.sh)
say "module against it, the tool, take_time"
# The module is built from a copy, so that the tree's own blksnap.ko
# (built for the test kernel) stays as it is.
mkdir -p "$OUT/module"
if [ -n "${BENCH_REF:-}" ]; then
	say "the module as of $BENCH_REF ($(git log -1 --format='%h %s' "$BENCH_REF"))"
	git archive "$BENCH_REF" Kbuild VERSION src include | tar -x -C "$OUT/module"
else
	cp -r Kbuild VERSION src include "$OUT/module/"
fi
make -s -C "$KDIR" M="$OUT/module" LLVM=1 modules >"$OUT/module.log" 2>&1 ||
	{ tail -30 "$OUT/module.log" >&2; exit 1; }
make -s tool >/dev/null
tool=$top/tools/target/x86_64-unknown-linux-musl/release/blksnap
ks=$OUT/ks
mkdir -p "$ks"
tar -xJf "$("$top/scripts/kernel-source.sh")" -C "$ks" --strip-components=1 \
	linux-source-6.12/tools/testing/selftests/kselftest_harness.h \
	linux-source-6.12/tools/testing/selftests/kselftest.h
gcc -static -O2 -Wall -Werror -D_GNU_SOURCE -Iinclude/uapi -Itests/selftests \
	-I"$ks/tools/testing/selftests" tests/bench/take_time.c -o "$OUT/take_time"

say "initramfs: busybox, fio, dmsetup and perf with their libraries"
root=$OUT/root
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,root,lib/modules,bench,mnt}
cp /bin/busybox "$root/bin/busybox"
cp tests/vm/init "$root/init"
cp "$OUT/module/blksnap.ko" "$root/lib/modules/"
cp "$tool" "$root/bin/blksnap"
cp tests/bench/run.sh "$OUT/take_time" "$root/bench/"
bins="$(command -v fio) $(command -v dmsetup)"
[ $smoke = 1 ] || bins="$bins $(command -v perf)"
for b in $bins; do
	cp "$b" "$root/bin/"
	ldd "$b" | awk '/=> \// { print $3 } /^\t\/lib/ { print $1 }' | while read -r lib; do
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done
done
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$OUT/initramfs.cpio.gz"

# One VM boot per disk model (tests/bench/models). Disks: /dev/vda the
# original (2 GiB, sparse but for the region, random data written here),
# /dev/vdb storage, /dev/vdc 1 TiB, /dev/vdd 1 GiB, /dev/vde storage for
# those two and the CBT store, /dev/vdf the thin pool. On a throttled
# model vda, vdb, vde and vdf are one throttling group: one disk.
# tsc=reliable: under TCG the clocksource watchdog marks the TSC unstable
# after a few minutes, and the jiffies clock left would time a run to 4 ms.
# pci=noacpi: see tests/vm/run.sh (ACPI is there for the second vCPU).
. tests/vm/splats.sh
dd if=/dev/urandom of="$OUT/rnd" bs=1M count=4 2>/dev/null
logs=()
models=$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' tests/bench/models)
if [ -n "${MODELS:-}" ]; then
	# Only the models named (a look at one model; the page is not written).
	models=$(echo "$models" | awk -v want=" $MODELS " 'index(want, " " $1 " ")')
	[ -n "$models" ] || { say "no model named in MODELS=$MODELS"; exit 1; }
fi
nmodels=$(echo "$models" | wc -l)
while read -r model iops bps region fresh; do
	if [ $smoke = 1 ]; then
		region=16 fresh=8
	elif [ -n "${MIB:-}" ]; then
		region=$MIB fresh=$((MIB / 4))
	fi
	rm -f "$OUT"/*.img
	i=0
	while [ $i -lt "$region" ]; do
		cat "$OUT/rnd"
		i=$((i + 4))
	done >"$OUT/orig.img"
	truncate -s 2G "$OUT/orig.img"
	truncate -s "$((region * 2 + 64))M" "$OUT/store.img"
	truncate -s 1T "$OUT/big.img"
	truncate -s 1G "$OUT/small.img"
	truncate -s 128M "$OUT/store2.img"
	truncate -s "$((region * 2 + 128))M" "$OUT/thin.img"
	throttle=
	[ "$iops" != 0 ] && throttle=",throttling.group=disk,throttling.iops-total=$iops,throttling.bps-total=$bps"
	disks=()
	n=0
	for d in orig store big small store2 thin; do
		t=
		case $d in orig | store | store2 | thin) t=$throttle ;; esac
		disks+=(-drive "file=$OUT/$d.img,if=none,id=d$n,format=raw,cache=unsafe$t"
			-device "virtio-blk-pci,drive=d$n")
		n=$((n + 1))
	done
	cmdline="console=ttyS0 rdinit=/init panic=-1 bsvm_mode=bench tsc=reliable pci=noacpi"
	cmdline="$cmdline bsbench_model=$model bsbench_iops=$iops bsbench_bps=$bps"
	cmdline="$cmdline bsbench_region=$region bsbench_fresh=$fresh bsbench_trials=$TRIALS"
	cmdline="$cmdline bsbench_seconds=$SECS bsbench_fresh_seconds=$FSECS bsbench_engine=$ENGINE"
	[ "$model" = cpu ] && cmdline="$cmdline bsbench_take=1"
	[ $smoke = 1 ] || [ "$model" = hdd ] || cmdline="$cmdline bsbench_profile=1"
	log=$OUT/results-$model.log
	console=$OUT/console-$model.log
	say "model $model: booting the $FLAVOUR kernel, $TRIALS trial(s) (a few minutes each)"
	: >"$log"
	timeout --kill-after=10 $((600 + TRIALS * 1200)) \
		qemu-system-x86_64 -machine pc -accel tcg -cpu max,la57=off -smp 2 -m 2G \
		-kernel "$KDIR/arch/x86/boot/bzImage" -initrd "$OUT/initramfs.cpio.gz" -append "$cmdline" \
		-display none -monitor none -no-reboot "${disks[@]}" \
		-serial "file:$console" -serial "file:$log" </dev/null &
	qpid=$!
	tail -n +1 -s 0.5 -f --pid=$qpid "$log" | grep -a --line-buffered -e '^#' -e '^bench' -e 'ERROR' >&2 &
	wait $qpid || true
	sleep 1
	rm -f "$OUT"/*.img

	if find_splats "$console" >"$OUT/splats.txt"; then
		say "model $model: the kernel log shows a bug:"
		head -20 "$OUT/splats.txt" >&2
		exit 1
	fi
	grep -q '^bench-exit: 0' "$log" || { say "model $model: the benchmark failed (see $log)"; exit 1; }
	logs+=("$log")
done <<<"$models"
[ ${#logs[@]} = "$nmodels" ] || { say "not every model ran"; exit 1; }

machine="$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores, $(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1048576)) GiB; QEMU $(qemu-system-x86_64 --version | head -1 | awk '{print $4}') TCG, 2 vCPUs, 2 GiB"
if [ $smoke = 1 ]; then
	python3 tests/bench/report.py --smoke "${logs[@]}"
elif [ -n "${BENCH_REF:-}" ] || [ -n "${MODELS:-}" ]; then
	python3 tests/bench/report.py "${logs[@]}"
else
	python3 tests/bench/report.py "${logs[@]}" --rst Documentation/performance.rst \
		--machine "$machine" --settings "$TRIALS trials, ${SECS} s random and read runs, ${FSECS} s fresh-snapshot runs, 256 KiB chunks, fio libaio iodepth 16 per job, O_DIRECT"
fi
