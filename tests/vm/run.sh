#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Boots the blksnap test kernel under QEMU (TCG) with an initramfs holding
# busybox, the module, the blksnap tool and the selftests, then judges the
# run: every TAP point, every test's exit status, the VM's own end, and the
# kernel log, where any splat (BUG, WARNING, Oops, KASAN, lockdep, hung task,
# Rust panic, kmemleak) fails the run.
#
#   run.sh test [TEST]   run the selftests (or one) and report
#   run.sh boots TEST    run TEST over several boots of the same disks
#   run.sh demo          run the demo script
#   run.sh shell         interactive shell on the console
#
# In "boots" mode the VM boots again (boot number bsvm_boot=2, 3, ... on
# the kernel command line) for as long as TEST asks, at most BOOTS_MAX
# times (default 8): a
# line "BSVM-REBOOT" says it ends this boot itself (a clean reboot); a
# line "BSVM-POWERCUT" asks the host to kill the VM at once, as a power
# cut would, with whatever it is doing (QMP "quit": no shutdown, no
# flush). The results of each boot go, in order, to the one report; a
# boot cut short ends TEST's output at its request.
#
# Environment: KERNEL (bzImage), MODULE (blksnap.ko), TOOL (static blksnap
# binary), SELFTESTS (directory of built selftests), OUT (work directory),
# VM_TIMEOUT (seconds, default 4500: a cap for a hung VM; each test has its
# own, much smaller, budget), VM_MEM (default 2G), FUZZ_N and FUZZ_SEED (the
# fuzzer's call count and seed), SOAK_MINUTES (the soak's duration),
# BOOTS_CUTS (bsvm_cuts= on the command line: reboot.sh's power cuts).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
mode=${1:-test}
only=${2:-}
: "${KERNEL:?KERNEL=path to bzImage}"
: "${MODULE:?MODULE=path to blksnap.ko}"
: "${TOOL:?TOOL=path to the static blksnap binary}"
: "${SELFTESTS:?SELFTESTS=directory of built selftests}"
OUT=${OUT:-$top/build/vm}
VM_TIMEOUT=${VM_TIMEOUT:-4500}
VM_MEM=${VM_MEM:-2G}

say() { printf '[vm] %s\n' "$*"; }

rm -rf "$OUT"
mkdir -p "$OUT/root"/{bin,sbin,etc,proc,sys,dev,tmp,root,lib/modules,tests,demo}
root=$OUT/root
cp /bin/busybox "$root/bin/busybox"
file "$root/bin/busybox" 2>/dev/null | grep -q 'statically linked' ||
	{ echo "/bin/busybox is not static: install busybox-static" >&2; exit 1; }
cp "$here/init" "$root/init"
cp "$MODULE" "$root/lib/modules/blksnap.ko"
# null_blk, from the tree the kernel was built in: it makes zoned devices.
kdir=$(cd "$(dirname "$KERNEL")/../../.." && pwd)
if [ -f "$kdir/drivers/block/null_blk/null_blk.ko" ]; then
	cp "$kdir/drivers/block/null_blk/null_blk.ko" "$root/lib/modules/"
fi
cp "$TOOL" "$root/bin/blksnap"
cp "$here/runner.sh" "$here/list" "$root/tests/"
cp -r "$SELFTESTS"/. "$root/tests/"
[ -d "$top/tests/demo" ] && cp -r "$top/tests/demo"/. "$root/demo/"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$OUT/initramfs.cpio.gz"

# Scratch disks for the tests: /dev/vda (plain) and /dev/vdb (two
# partitions, vdb1 and vdb2) inside the VM.
for d in disk0 disk1; do
	truncate -s 256M "$OUT/$d.img"
done
printf 'label: dos\nsize=96MiB, type=83\ntype=83\n' | sfdisk --quiet "$OUT/disk1.img"
# /dev/vdc and /dev/vdd: empty ext4 file systems (busybox makes only ext2).
truncate -s 128M "$OUT/disk2.img"
truncate -s 768M "$OUT/disk3.img"
for d in disk2 disk3; do
	mkfs.ext4 -q -F "$OUT/$d.img"
done
# /dev/vde: a partitioned disk, ext4 on vde1 (1 MiB to 129 MiB), vde2 raw.
truncate -s 224M "$OUT/disk4.img"
printf 'label: dos\nstart=2048, size=128MiB, type=83\ntype=83\n' | sfdisk --quiet "$OUT/disk4.img"
mkfs.ext4 -q -F -E offset=1048576,lazy_itable_init=0,lazy_journal_init=0 "$OUT/disk4.img" 128M
# /dev/vdf and /dev/vdg: 4Kn disks (4096-byte logical blocks), an original
# and storage; /dev/vdh: a 512-byte disk whose size (64 MiB + 3 sectors) is
# no whole number of pages or chunks.
truncate -s 64M "$OUT/disk5.img"
truncate -s 64M "$OUT/disk6.img"
truncate -s $((64 * 1024 * 1024 + 3 * 512)) "$OUT/disk7.img"
# /dev/vdi: 128 MiB that discards and zeroes out in bios of at most 64
# sectors, so that one 64 MiB discard is a chain of about 2,000 bios.
truncate -s 128M "$OUT/disk8.img"
# /dev/vdj: a small ext4 file system whose restore points points.sh makes.
truncate -s 24M "$OUT/disk9.img"
mkfs.ext4 -q -F "$OUT/disk9.img"

# Every disk as an explicit virtio-blk-pci device, in this order, so that
# the guest names them vda, vdb, ... as listed (QEMU would place -drive
# if=virtio disks after -device ones).
disks=()
n=0
for d in disk0 disk1 disk2 disk3 disk4 disk5:4k disk6:4k disk7 disk8:chain disk9; do
	dev="virtio-blk-pci,drive=d$n"
	drive=
	case "$d" in
	*:4k) dev="$dev,logical_block_size=4096,physical_block_size=4096" ;;
	*:chain)
		dev="$dev,max-discard-sectors=64,max-write-zeroes-sectors=64"
		drive=",discard=unmap"
		;;
	esac
	disks+=(-drive "file=$OUT/${d%:*}.img,if=none,id=d$n,format=raw,cache=unsafe$drive" -device "$dev")
	n=$((n + 1))
done
# Hot-pluggable disks hp0..hp2: SCSI disks on a virtio-scsi controller
# (targets 0..2), which QEMU unplugs with device_del when a selftest
# prints "BSVM-UNPLUG hpN" (removal.c).
disks+=(-device virtio-scsi-pci,id=scsi0)
for i in 0 1 2; do
	truncate -s 0 "$OUT/hp$i.img"
	truncate -s 32M "$OUT/hp$i.img"
	disks+=(-drive "file=$OUT/hp$i.img,if=none,id=hpd$i,format=raw,cache=unsafe"
		-device "scsi-hd,bus=scsi0.0,scsi-id=$i,lun=0,drive=hpd$i,id=hp$i")
done

vmmode=$mode
[ "$mode" = boots ] && vmmode=test
cmdline="console=ttyS0 rdinit=/init panic=-1 bsvm_mode=$vmmode"
cmdline="$cmdline rcupdate.rcu_cpu_stall_timeout=300 hung_task_timeout_secs=240"
cmdline="$cmdline kmemleak=on"
# ACPI gives the guest its second vCPU (MADT); PCI interrupt routing comes
# from the BIOS table instead, since the pc machine's ACPI _PRT method is
# a loop that times out (30 s per device) under TCG with KASAN.
cmdline="$cmdline pci=noacpi"
[ -n "$only" ] && cmdline="$cmdline bsvm_only=$only"
# The fuzzer's call count and seed (tests/selftests/fuzz.c).
[ -n "${FUZZ_N:-}" ] && cmdline="$cmdline bsfuzz_n=$FUZZ_N"
[ -n "${FUZZ_SEED:-}" ] && cmdline="$cmdline bsfuzz_seed=$FUZZ_SEED"
# The soak's duration (tests/selftests/soak.c).
[ -n "${SOAK_MINUTES:-}" ] && cmdline="$cmdline bsoak_minutes=$SOAK_MINUTES"
[ -n "${BOOTS_CUTS:-}" ] && cmdline="$cmdline bsvm_cuts=$BOOTS_CUTS"

qemu=(qemu-system-x86_64 -machine pc -accel tcg -cpu max,la57=off -smp 2 -m "$VM_MEM"
	-kernel "$KERNEL" -initrd "$OUT/initramfs.cpio.gz"
	-display none -monitor none -no-reboot
	-qmp "unix:$OUT/qmp.sock,server=on,wait=off"
	"${disks[@]}")

if [ "$mode" = shell ]; then
	exec "${qemu[@]}" -append "$cmdline" -serial mon:stdio -serial "file:$OUT/results.log"
fi

# boot_vm CMDLINE RESULTS CONSOLE: one boot of the VM, its results shown
# as they arrive, the selftests' requests to the host (unplug a disk, cut
# the power) carried out; sets $qrc to QEMU's exit status.
boot_vm() {
	local res=$2 con=$3 qpid tpid upid
	: >"$res"
	timeout --kill-after=10 "$VM_TIMEOUT" "${qemu[@]}" -append "$1" \
		-serial "file:$con" -serial "file:$res" &
	qpid=$!
	# Show the results as they arrive.
	if [ "$mode" = demo ]; then
		tail -n +1 -s 0.2 -f --pid="$qpid" "$res" | grep -av -e '^BLKSNAP-VM-DONE' -e '^demo-exit:' &
	else
		tail -n +1 -s 0.2 -f --pid="$qpid" "$res" | sed -u 's/^/  | /' &
	fi
	tpid=$!
	tail -n +1 -s 0.2 -f --pid="$qpid" "$res" | while IFS= read -r line; do
		case "$line" in
		*"BSVM-UNPLUG hp"[0-9]*)
			id=$(printf '%s\n' "$line" | sed -n 's/.*BSVM-UNPLUG \(hp[0-9]\).*/\1/p')
			"$here/qmp.py" "$OUT/qmp.sock" device_del "id=$id" >>"$OUT/qmp.log" 2>&1 ||
				echo "device_del $id failed" >>"$OUT/qmp.log"
			;;
		*"BSVM-POWERCUT"*)
			"$here/qmp.py" "$OUT/qmp.sock" quit >>"$OUT/qmp.log" 2>&1 ||
				echo "quit failed" >>"$OUT/qmp.log"
			;;
		esac
	done &
	upid=$!
	set +e
	wait "$qpid"
	qrc=$?
	set -e
	# tail ends by itself once QEMU is gone and it has shown the last lines.
	( sleep 5; kill "$tpid" "$upid" 2>/dev/null ) &
	wait "$tpid" "$upid" 2>/dev/null || true
}

: >"$OUT/results.log"
: >"$OUT/console.log"
: >"$OUT/qmp.log"
if [ "$mode" != boots ]; then
	say "booting the test kernel (TCG, timeout ${VM_TIMEOUT}s)"
	boot_vm "$cmdline" "$OUT/results.log" "$OUT/console.log"
else
	: "${only:?boots mode needs a TEST}"
	boot=1
	while :; do
		say "boot $boot of $only (TCG, timeout ${VM_TIMEOUT}s)"
		boot_vm "$cmdline bsvm_boot=$boot" "$OUT/results-$boot.log" "$OUT/console-$boot.log"
		cat "$OUT/console-$boot.log" >>"$OUT/console.log"
		if grep -aq '^BSVM-POWERCUT' "$OUT/results-$boot.log"; then
			# Cut short at the test's request: its output ends there.
			sed -n '1,/^BSVM-POWERCUT/p' "$OUT/results-$boot.log" >>"$OUT/results.log"
			echo "# exit: ${only%%:*} 0 0" >>"$OUT/results.log"
		else
			cat "$OUT/results-$boot.log" >>"$OUT/results.log"
			if grep -aq '^BSVM-REBOOT' "$OUT/results-$boot.log"; then
				echo "# exit: ${only%%:*} 0 0" >>"$OUT/results.log"
			else
				break
			fi
		fi
		boot=$((boot + 1))
		if [ $boot -gt "${BOOTS_MAX:-8}" ]; then
			say "$only asked for more than ${BOOTS_MAX:-8} boots"
			break
		fi
	done
fi

if [ "$mode" = demo ]; then
	. "$here/splats.sh"
	if find_splats "$OUT/console.log" >"$OUT/splats.txt"; then
		say "the kernel log shows a bug:"
		head -20 "$OUT/splats.txt"
		exit 1
	fi
	grep -q '^demo-exit: 0' "$OUT/results.log"
	exit $?
fi
exec "$here/judge.sh" "$OUT" "$qrc" "$only"
