#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# `make demo`: install what is missing, build the kernel (cached), the module
# and the tool, then boot QEMU and run the narrated demo (tests/demo/run.sh).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
export PATH="$HOME/.cargo/bin:$PATH"
say() { printf '\n== %s\n' "$*"; }

say "Installing dependencies (first run only)"
scripts/install-deps.sh
say "Building the patched 6.12 kernel with Rust (cached after the first run)"
KDIR=$(scripts/build-kernel.sh)
say "Building the blksnap module and tool"
make -s module KDIR="$KDIR"
make -s tool >/dev/null
make -s selftests KDIR="$KDIR"
say "Booting the kernel in QEMU and running the demo"
KERNEL=$KDIR/arch/x86/boot/bzImage MODULE=$top/blksnap.ko \
	TOOL=$top/tools/target/x86_64-unknown-linux-musl/release/blksnap \
	SELFTESTS=$top/build/selftests OUT=$top/build/demo VM_TIMEOUT=${VM_TIMEOUT:-1200} \
	tests/vm/run.sh demo
