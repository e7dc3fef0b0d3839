#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# `make bench`: blksnap against a plain disk and against dm-snapshot, on the
# same disks in one QEMU VM, with a non-debug build of the patched kernel
# (its own cached build: BLKSNAP_FLAVOUR=bench). Prints the table of median
# ratios over the trials with each trial's values, and writes it to
# Documentation/performance.rst.
#
# `scripts/bench.sh --smoke` (run by make check): one short trial on a
# small original, which only checks that every case runs and moves data.
# It runs on the test kernel (BENCH_FLAVOUR=bench for the bench one), so
# that make check builds a single kernel.
#
# Environment: TRIALS (3), SECONDS_PER_RUN (6), MIB (size of the original
# used, 512), BENCH_REF (a git revision: benchmark the module as it was
# there, for a before/after comparison; the page is not written then).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
export PATH="$HOME/.cargo/bin:$PATH"
smoke=0
[ "${1:-}" = --smoke ] && smoke=1
say() { printf '[bench] %s\n' "$*" >&2; }

if [ $smoke = 1 ]; then
	TRIALS=1 SECS=1 MIB=64 ENGINE=libaio FLAVOUR=${BENCH_FLAVOUR:-test}
else
	TRIALS=${TRIALS:-3} SECS=${SECONDS_PER_RUN:-6} MIB=${MIB:-512} ENGINE=libaio FLAVOUR=bench
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
tar -xJf "/usr/src/linux-source-6.12.tar.xz" -C "$ks" --strip-components=1 \
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

# /dev/vda original, /dev/vdb storage, /dev/vdc 1 TiB, /dev/vdd 1 GiB,
# /dev/vde storage for those two.
truncate -s "${MIB}M" "$OUT/orig.img"
truncate -s "$((MIB * 2 + 64))M" "$OUT/store.img"
truncate -s 1T "$OUT/big.img"
truncate -s 1G "$OUT/small.img"
truncate -s 128M "$OUT/store2.img"
disks=()
n=0
for d in orig store big small store2; do
	disks+=(-drive "file=$OUT/$d.img,if=none,id=d$n,format=raw,cache=unsafe"
		-device "virtio-blk-pci,drive=d$n")
	n=$((n + 1))
done
# tsc=reliable: under TCG the clocksource watchdog marks the TSC unstable
# after a few minutes, and the jiffies clock left would time a run to 4 ms.
# pci=noacpi: see tests/vm/run.sh (ACPI is there for the second vCPU).
cmdline="console=ttyS0 rdinit=/init panic=-1 bsvm_mode=bench tsc=reliable pci=noacpi"
cmdline="$cmdline bsbench_trials=$TRIALS bsbench_seconds=$SECS bsbench_mib=$MIB bsbench_engine=$ENGINE"
[ $smoke = 1 ] || cmdline="$cmdline bsbench_profile=1"
say "booting the $FLAVOUR kernel: $TRIALS trial(s), about $((TRIALS * 3 + 1)) minutes"
: >"$OUT/results.log"
timeout --kill-after=10 $((600 + TRIALS * 900)) \
	qemu-system-x86_64 -machine pc -accel tcg -cpu max,la57=off -smp 2 -m 2G \
	-kernel "$KDIR/arch/x86/boot/bzImage" -initrd "$OUT/initramfs.cpio.gz" -append "$cmdline" \
	-display none -monitor none -no-reboot "${disks[@]}" \
	-serial "file:$OUT/console.log" -serial "file:$OUT/results.log" &
qpid=$!
tail -n +1 -s 0.5 -f --pid=$qpid "$OUT/results.log" | grep -a --line-buffered -e '^#' -e '^bench' -e 'ERROR' >&2 &
wait $qpid || true
sleep 1

. tests/vm/splats.sh
if find_splats "$OUT/console.log" >"$OUT/splats.txt"; then
	say "the kernel log shows a bug:"
	head -20 "$OUT/splats.txt" >&2
	exit 1
fi
grep -q '^bench-exit: 0' "$OUT/results.log" || { say "the benchmark failed (see $OUT/results.log)"; exit 1; }

machine="$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores, $(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1048576)) GiB; QEMU $(qemu-system-x86_64 --version | head -1 | awk '{print $4}') TCG, 2 vCPUs, 2 GiB"
if [ $smoke = 1 ]; then
	python3 tests/bench/report.py --smoke "$OUT/results.log"
elif [ -n "${BENCH_REF:-}" ]; then
	python3 tests/bench/report.py "$OUT/results.log"
else
	python3 tests/bench/report.py "$OUT/results.log" --rst Documentation/performance.rst \
		--machine "$machine" --settings "$TRIALS trials, ${SECS} s random runs, ${MIB} MiB original, 256 KiB chunks, fio libaio iodepth 16, O_DIRECT"
fi
