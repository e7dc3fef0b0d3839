#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# `make package-check`: blksnap as a distribution ships it, installed and run
# in a real Debian 12 system.
#
#  1. builds the packages (scripts/package/build-packages.sh, with lintian);
#  2. makes a minimal Debian 12 root file system with debootstrap (cached
#     outside the repository, like the kernel), with systemd, DKMS, the LLVM
#     toolchain and, for the negative check, Debian's own 6.12 headers;
#  3. installs our kernel and headers packages into a copy of it, the rustc
#     that the headers name (rust/TOOLCHAIN; copied from this machine, since
#     Debian 12 has no such rustc), then blksnap-dkms, whose postinst has
#     DKMS build and install the module for our kernel, then blksnap-tools;
#  4. checks that DKMS skips Debian's stock kernel (no Rust, no filter), and
#     that a direct build against it fails with blksnap's own message;
#  5. boots the system in QEMU (TCG) with systemd as init; a unit runs
#     tests/package/vm-check.sh: modprobe, a full and an incremental backup
#     of an ext4 file system with `blksnap backup`, checked by checksums,
#     then CBT stores for the root and the data disk, and a reboot, whose
#     shutdown hook seals them;
#  6. boots the same disks again, with the initramfs the VM made: the
#     stores go on from their seals, the backup after the reboot is an
#     incremental, checked by checksums; then `dkms remove`.
#
# Prints PASS:/FAIL: per step and ends with "N passed, M failed".
# --rootfs: only make (or find) the cached root file system.
# BLKSNAP_CACHE as for build-kernel.sh; DEBIAN_MIRROR (default
# http://deb.debian.org/debian).
set -uo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
export PATH="$HOME/.cargo/bin:$PATH"
CACHE=${BLKSNAP_CACHE:-$HOME/.cache/blksnap}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
B=$top/build/package-check
PKGS=$top/build/packages
VERSION=$(cat "$top/VERSION")
VM_TIMEOUT=${VM_TIMEOUT:-1200}

passed=0
failed=0
say() { printf '[package-check] %s\n' "$*"; }
pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
finish() {
	echo
	echo "$passed passed, $failed failed"
	[ "$failed" -eq 0 ]
	exit $?
}
# Runs a step quietly into the log; PASS or FAIL with its last lines.
run() { # NAME COMMAND...
	local name=$1 rc
	shift
	"$@" >"$B/step.log" 2>&1
	rc=$?
	cat "$B/step.log" >>"$B/log"
	if [ $rc -eq 0 ]; then
		pass "$name"
	else
		fail "$name"
		tail -15 "$B/step.log" | sed 's/^/    /'
		return 1
	fi
}

if [ "$(id -u)" -ne 0 ]; then
	echo "package-check needs root (debootstrap, chroot, mounts)" >&2
	exit 1
fi
rm -rf "$B"
mkdir -p "$B"
: >"$B/log"
say "log: $B/log"

say "installing what packaging needs"
run "packaging tools installed" "$top/scripts/install-deps.sh" --packaging || finish

# --- the Debian root file system (cached) -----------------------------------
ROOT_PKGS="systemd,systemd-sysv,udev,dbus,kmod,e2fsprogs,initramfs-tools,util-linux,procps,dkms,make,clang,lld,llvm,gcc,libc6-dev,ca-certificates"
STOCK_HEADERS=linux-headers-6.12.107+deb12-amd64
key=$(printf '%s\n' 1 bookworm "$MIRROR" "$ROOT_PKGS" "$STOCK_HEADERS" | sha256sum | cut -c1-16)
ROOTFS=$CACHE/rootfs-bookworm-$key.tar
if [ ! -f "$ROOTFS" ]; then
	say "making the Debian 12 root file system with debootstrap (a few minutes, cached)"
	rm -rf "$B/debootstrap"
	if debootstrap --variant=minbase --include="$ROOT_PKGS" bookworm "$B/debootstrap" "$MIRROR" >>"$B/log" 2>&1 &&
		printf 'deb %s bookworm-security main\n' "$SECURITY" >"$B/debootstrap/etc/apt/sources.list.d/security.list" &&
		chroot "$B/debootstrap" apt-get update -qq >>"$B/log" 2>&1 &&
		DEBIAN_FRONTEND=noninteractive chroot "$B/debootstrap" apt-get install -y -qq --no-install-recommends \
			"$STOCK_HEADERS" >>"$B/log" 2>&1; then
		chroot "$B/debootstrap" apt-get clean
		tar -C "$B/debootstrap" -cf "$ROOTFS.tmp" . && mv "$ROOTFS.tmp" "$ROOTFS"
		rm -rf "$B/debootstrap"
		pass "Debian 12 root file system made (debootstrap)"
	else
		fail "Debian 12 root file system made (debootstrap)"
		tail -15 "$B/log" | sed 's/^/    /'
		finish
	fi
else
	pass "Debian 12 root file system from the cache ($(basename "$ROOTFS"))"
fi

[ "${1:-}" = --rootfs ] && finish

say "building the packages (the production kernel takes about 6 minutes the first time)"
if "$top/scripts/package/build-packages.sh" >>"$B/log" 2>&1; then
	pass "packages build: $(cd "$PKGS" && ls ./*.deb | xargs -n1 basename | tr '\n' ' ')"
	for l in "$PKGS"/*.deb.lintian; do
		pass "lintian: $(basename "$l" .lintian): no errors"
	done
else
	fail "packages build"
	tail -30 "$B/log" | sed 's/^/    /'
	finish
fi
IMAGE_DEB=$(ls "$PKGS"/linux-image-*.deb)
RELEASE=$(dpkg-deb -f "$IMAGE_DEB" Package | sed 's/^linux-image-//')

R=$B/root
mkdir -p "$R"
tar -C "$R" -xf "$ROOTFS"
mounts=()
for m in proc sys dev; do
	mount --bind "/$m" "$R/$m" && mounts+=("$R/$m")
done
cleanup() {
	for m in "${mounts[@]}"; do
		umount -l "$m" 2>/dev/null
	done
}
trap cleanup EXIT
in_root() { DEBIAN_FRONTEND=noninteractive chroot "$R" "$@"; }

# --- install into it ----------------------------------------------------------
cp "$PKGS"/*.deb "$R/tmp/"
# Our kernel decompresses gzip initramfs images only (RD_GZIP).
sed -i 's/^COMPRESS=.*/COMPRESS=gzip/' "$R/etc/initramfs-tools/initramfs.conf"
run "kernel and headers packages install ($RELEASE)" \
	in_root sh -c 'dpkg -i /tmp/linux-image-*.deb /tmp/linux-headers-*.deb' || finish

# The rustc the headers were built with: only rustc itself and its
# libraries, not cargo, the docs or rust-src.
want=$(sed -n 's/^RUSTC: //p' "$R/usr/src/linux-headers-$RELEASE/rust/TOOLCHAIN" 2>/dev/null)
if [ -n "$want" ] && [ "$(rustc --version)" = "$want" ]; then
	sysroot=$(rustc --print sysroot)
	mkdir -p "$R/opt/rust/bin" "$R/opt/rust/lib/rustlib/x86_64-unknown-linux-gnu"
	cp -a "$sysroot/bin/rustc" "$R/opt/rust/bin/"
	cp -a "$sysroot"/lib/*.so* "$R/opt/rust/lib/"
	cp -a "$sysroot/lib/rustlib/x86_64-unknown-linux-gnu/lib" \
		"$R/opt/rust/lib/rustlib/x86_64-unknown-linux-gnu/"
	ln -sf /opt/rust/bin/rustc "$R/usr/local/bin/rustc"
	run "rustc the headers name installed ($want)" in_root rustc --version
else
	fail "the headers name their rustc (rust/TOOLCHAIN: '$want', this machine: $(rustc --version))"
fi

run "blksnap-dkms installs (DKMS builds the module)" in_root sh -c 'dpkg -i /tmp/blksnap-dkms_*.deb'
if [ -f "$R/lib/modules/$RELEASE/updates/dkms/blksnap.ko" ]; then
	pass "DKMS installed blksnap.ko for $RELEASE"
else
	fail "DKMS installed blksnap.ko for $RELEASE"
	in_root dkms status 2>&1 | sed 's/^/    /'
fi
run "dkms status lists blksnap as installed" \
	in_root sh -c "dkms status -m blksnap | grep -q '$RELEASE.*installed'"

# A kernel without Rust and the filter: DKMS skips it, a direct build says why.
stock=${STOCK_HEADERS#linux-headers-}
# Passes NAME if COMMAND fails with output matching PATTERN.
refused() { # NAME PATTERN COMMAND...
	local name=$1 pattern=$2 out rc
	shift 2
	out=$("$@" 2>&1)
	rc=$?
	echo "$out" >>"$B/log"
	if [ $rc -ne 0 ] && echo "$out" | grep -q "$pattern"; then
		pass "$name"
	else
		fail "$name (exit $rc)"
		echo "$out" | tail -5 | sed 's/^/    /'
	fi
}
refused "DKMS refuses Debian's stock $stock (BUILD_EXCLUSIVE_CONFIG)" 'BUILD_EXCLUSIVE' \
	in_root dkms build -m blksnap -v "$VERSION" -k "$stock"
refused "a direct build against $stock fails with blksnap's message" \
	'blksnap: kernel .* has no Rust support' \
	in_root make -C "/usr/src/linux-headers-$stock" M="/usr/src/blksnap-$VERSION" LLVM=1 modules
rm -rf "$R/usr/src/blksnap-$VERSION/.tmp_versions" "$R/usr/src/blksnap-$VERSION"/*.o 2>/dev/null

run "blksnap-tools installs" in_root sh -c 'dpkg -i /tmp/blksnap-tools_*.deb && blksnap --version'
run "manual pages and completions installed" test -f "$R/usr/share/man/man8/blksnap.8.gz" \
	-a -f "$R/usr/share/man/man8/blksnap-restore.8.gz" \
	-a -f "$R/usr/share/bash-completion/completions/blksnap"

# --- the VM -------------------------------------------------------------------
install -m 0755 "$top/tests/package/vm-check.sh" "$R/usr/local/sbin/blksnap-vm-check"
cat >"$R/etc/systemd/system/blksnap-vm-check.service" <<EOF
[Unit]
Description=blksnap package check
After=local-fs.target systemd-udev-settle.service systemd-modules-load.service

[Service]
Type=oneshot
Environment=BLKSNAP_VERSION=$VERSION
ExecStart=/usr/local/sbin/blksnap-vm-check
StandardOutput=file:/dev/ttyS1
StandardError=journal+console
ExecStopPost=/bin/systemctl reboot --no-block

[Install]
WantedBy=multi-user.target
EOF
ln -sf /etc/systemd/system/blksnap-vm-check.service \
	"$R/etc/systemd/system/multi-user.target.wants/blksnap-vm-check.service"
echo blksnap-vm >"$R/etc/hostname"
echo "/dev/vda / ext4 rw,errors=remount-ro 0 1" >"$R/etc/fstab"
rm -f "$R"/tmp/*.deb
cp "$R/boot/vmlinuz-$RELEASE" "$B/kernel"
cleanup
trap - EXIT
mounts=()

say "making the VM's disk"
size=$(( $(du -sm "$R" | cut -f1) + 1024 ))
truncate -s 0 "$B/root.img"
truncate -s "${size}M" "$B/root.img"
run "root disk made (${size} MiB)" mkfs.ext4 -q -F -d "$R" "$B/root.img" || finish
truncate -s 128M "$B/data.img"
truncate -s 512M "$B/backup.img"
rm -rf "$R"

# Boots the VM once: BOOT (1 or 2) and, for the second, the initramfs.
boot_vm() { # BOOT [INITRD]
	local n=$1 qrc
	local initrd=()
	[ -n "${2:-}" ] && initrd=(-initrd "$2")
	: >"$B/results$n.log"
	timeout --kill-after=10 "$VM_TIMEOUT" qemu-system-x86_64 -machine pc -accel tcg -cpu max,la57=off \
		-smp 2 -m 2G -display none -monitor none -no-reboot \
		-kernel "$B/kernel" "${initrd[@]}" -append "root=/dev/vda rw console=ttyS0 panic=-1" \
		-drive "file=$B/root.img,if=virtio,format=raw,cache=unsafe" \
		-drive "file=$B/data.img,if=virtio,format=raw,cache=unsafe" \
		-drive "file=$B/backup.img,if=virtio,format=raw,cache=unsafe" \
		-serial "file:$B/console$n.log" -serial "file:$B/results$n.log" >>"$B/log" 2>&1
	qrc=$?
	grep -E '^(PASS|FAIL): ' "$B/results$n.log" | tr -d '\r' | while IFS= read -r line; do
		echo "$line (in the VM, boot $n)"
	done
	passed=$((passed + $(grep -c '^PASS: ' "$B/results$n.log")))
	failed=$((failed + $(grep -c '^FAIL: ' "$B/results$n.log")))
	if grep -q "^VM-CHECK-DONE $n" "$B/results$n.log"; then
		pass "the VM ran boot $n's check to the end"
	else
		fail "the VM ran boot $n's check to the end (QEMU exit $qrc; console: $B/console$n.log)"
		tail -20 "$B/console$n.log" | sed 's/^/    /'
		return 1
	fi
	if grep -qE 'BUG:|WARNING:|Oops|Call Trace:|Kernel panic' "$B/console$n.log"; then
		fail "console log free of splats (boot $n)"
		grep -m5 -E 'BUG:|WARNING:|Oops|Call Trace:|Kernel panic' "$B/console$n.log" | sed 's/^/    /'
	else
		pass "console log free of splats (boot $n)"
	fi
}

say "booting Debian 12 with systemd in QEMU (TCG, up to ${VM_TIMEOUT}s)"
boot_vm 1 || finish
# The shutdown hook ran after the file systems were read-only.
sealed=$(grep -c 'blksnap: stopped tracking .*, its store sealed' "$B/console1.log")
if [ "$sealed" -eq 2 ]; then
	pass "the system-shutdown hook sealed both stores at the reboot"
else
	fail "the system-shutdown hook sealed both stores at the reboot ($sealed sealed)"
	grep -i 'blksnap' "$B/console1.log" | tail -10 | sed 's/^/    /'
fi
rm -f "$B/initrd"
debugfs -R "dump /boot/initrd.img-$RELEASE $B/initrd" "$B/root.img" >>"$B/log" 2>&1
if [ -s "$B/initrd" ]; then
	pass "the initramfs the VM made is on its root disk"
else
	fail "the initramfs the VM made is on its root disk (/boot/initrd.img-$RELEASE)"
	finish
fi
say "booting it again, with that initramfs (TCG, up to ${VM_TIMEOUT}s)"
boot_vm 2 "$B/initrd"
finish
