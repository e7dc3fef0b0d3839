#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Install everything blksnap needs on a Debian 12 x86_64 machine: the kernel
# build toolchain (LLVM=1), the Rust pieces Rust for Linux wants, QEMU and a
# static busybox for the test VM (with --packaging, the Debian packaging
# tools too).  Idempotent: a second run does nothing but check.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.env"

say() { printf '[deps] %s\n' "$*"; }

SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo

pkgs="clang lld llvm libclang-dev flex bison bc libelf-dev libssl-dev cpio
      xz-utils zstd make gcc g++ libc6-dev file musl-tools qemu-system-x86 busybox-static
      e2fsprogs fdisk kmod python3 rsync fio dmsetup"
# --packaging: also what `make packages` and `make package-check` need.
if [ "${1:-}" = --packaging ]; then
	pkgs="$pkgs dpkg-dev debhelper fakeroot lintian debootstrap"
fi

missing=
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
		missing="$missing $p"
done

if [ -n "$missing" ]; then
	say "installing Debian packages:$missing"
	export DEBIAN_FRONTEND=noninteractive
	$SUDO apt-get update -qq
	# shellcheck disable=SC2086
	$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
	say "Debian packages present"
fi
# The pinned kernel source, kept apart from the system's linux-source
# package (whatever version that is, if any).
"$here/kernel-source.sh" >/dev/null

export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v rustup >/dev/null; then
	echo "rustup not found: install the Rust toolchain $RUST_TOOLCHAIN with rustup first" >&2
	exit 1
fi
active=$(rustc --version | awk '{print $2}')
if [ "$active" != "$RUST_TOOLCHAIN" ]; then
	say "WARNING: rustc is $active, pinned $RUST_TOOLCHAIN (the kernel cache is keyed on it)"
fi
for c in $RUST_COMPONENTS; do
	rustup component list --installed | grep -q "^$c" || {
		say "adding rustup component $c"
		rustup component add "$c"
	}
done
for t in $RUST_TARGETS; do
	rustup target list --installed | grep -qx "$t" || {
		say "adding rustup target $t"
		rustup target add "$t"
	}
done
if ! bindgen --version 2>/dev/null | grep -q " $BINDGEN_VERSION\$"; then
	say "building bindgen-cli $BINDGEN_VERSION (a few minutes)"
	cargo install --locked --quiet bindgen-cli --version "$BINDGEN_VERSION"
fi
say "toolchain ready: $(rustc --version), $(bindgen --version), $(clang --version | head -1)"
