#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# `make check`: install what is missing, build the kernel (cached), the
# module, the tool and the selftests, run the host tests and the QEMU
# selftests, and end with the line "N passed, M failed".
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
export PATH="$HOME/.cargo/bin:$PATH"
B=$top/build
mkdir -p "$B"
LOG=$B/check.log
: >"$LOG"

passed=0 failed=0 skipped=0
start=$(date +%s)
step() { printf '\n== %s  (%ss)\n' "$*" $(( $(date +%s) - start )); }
pass() { passed=$((passed + 1)); echo "PASS: $*"; }
fail() { failed=$((failed + 1)); echo "FAIL: $*"; }
finish() {
	printf '\n'
	if [ "$skipped" -gt 0 ]; then
		echo "$passed passed, $failed failed, $skipped skipped"
	else
		echo "$passed passed, $failed failed"
	fi
	[ "$failed" = 0 ]
	exit $?
}
# run NAME CMD...: a build step; its output goes to the log unless it fails.
run() {
	local name=$1
	shift
	if "$@" >"$B/step.log" 2>&1; then
		cat "$B/step.log" >>"$LOG"
		pass "$name"
		return 0
	fi
	cat "$B/step.log" >>"$LOG"
	tail -30 "$B/step.log" | sed 's/^/    /'
	fail "$name"
	return 1
}

step "dependencies"
"$top/scripts/install-deps.sh" || { fail "dependencies installed"; finish; }

step "kernel (cached in ${BLKSNAP_CACHE:-~/.cache/blksnap})"
KDIR=$("$top/scripts/build-kernel.sh") || { fail "kernel builds"; finish; }
pass "kernel builds ($KDIR)"
export KDIR

step "kernel patches"
# checkpatch from the kernel tree, run outside any git checkout so that it
# reads each file as the patch it is.
if (cd /tmp && for p in "$top"/patches/*.patch; do
	perl "$KDIR/scripts/checkpatch.pl" --no-tree --quiet "$p" || exit 1
done) >"$B/checkpatch.log" 2>&1; then
	pass "patches pass checkpatch"
else
	sed 's/^/    /' "$B/checkpatch.log" | head -30
	fail "patches pass checkpatch"
fi

step "host tests"
"$top/tests/abi/check.sh" && pass "ABI header probe: ours == reference == Rust mirror" ||
	fail "ABI header probe"
run "UAPI header compiles in the kernel" make -s -C "$KDIR" M="$top/tests/abi/kernel" LLVM=1 modules
if (cd tools && cargo test --locked 2>&1) >"$B/cargo-test.log"; then :; fi
cat "$B/cargo-test.log" >>"$LOG"
read -r cp cf < <(awk '/^test result:/ { for (i = 1; i <= NF; i++) {
		if ($(i) ~ /^passed;?$/) p += $(i - 1); if ($(i) ~ /^failed;?$/) f += $(i - 1) } }
	END { print p + 0, f + 0 }' "$B/cargo-test.log")
if grep -q '^test result:' "$B/cargo-test.log"; then
	passed=$((passed + cp)) failed=$((failed + cf))
	echo "cargo test (tools/): $cp passed, $cf failed"
	grep -E '^test .* FAILED$' "$B/cargo-test.log" | sed 's/^/    /'
else
	tail -30 "$B/cargo-test.log" | sed 's/^/    /'
	fail "cargo test (tools/) did not run"
fi

step "Rust hygiene"
# The module as the kernel formats its own Rust (the tree's .rustfmt.toml);
# the tool crate, which shares the ABI and logic sources, likewise.
run "module formatted (rustfmt, the kernel's .rustfmt.toml)" \
	rustfmt --edition 2021 --config-path "$KDIR/.rustfmt.toml" --check "$top/src/blksnap.rs"
run "tools formatted (cargo fmt)" sh -c "cd '$top/tools' && cargo fmt --check"
run "tools pass clippy" sh -c "cd '$top/tools' && cargo clippy --locked --all-targets -- -D warnings"

step "module"
module_ok=0
# Built with clippy-driver (CLIPPY=1): the lints come with the build.
if run "blksnap.ko builds" make -s module KDIR="$KDIR" CLIPPY=1; then
	module_ok=1
	if grep -E '^(warning|error)' "$B/step.log" >/dev/null; then
		grep -E '^(warning|error)' -A4 "$B/step.log" | head -30 | sed 's/^/    /'
		fail "blksnap.ko builds without warnings (rustc and clippy)"
	else
		pass "blksnap.ko builds without warnings (rustc and clippy)"
	fi
fi

step "user space"
run "blksnap tool builds (static)" make -s tool || module_ok=0
run "selftests build" make -s selftests KDIR="$KDIR" || module_ok=0

# vm_run WHAT TARGET OUTDIR: a make target that runs the VM and leaves a
# summary in $B/OUTDIR, whose counts join ours.
vm_run() {
	if [ "$module_ok" != 1 ]; then
		fail "$1 not run: the build failed"
		return
	fi
	make -s "$2" KDIR="$KDIR" 2>&1 | tee "$B/$2.log"
	if [ -f "$B/$3/summary" ]; then
		read -r vp vf vs <"$B/$3/summary"
		passed=$((passed + vp)) failed=$((failed + vf)) skipped=$((skipped + vs))
	else
		fail "$1 produced no summary"
	fi
}

step "QEMU selftests"
vm_run "QEMU selftests" vm-test vm

step "QEMU reboots"
# Tracking across reboots and a power cut: reboot.sh over several boots.
vm_run "QEMU reboots" vm-boots boots

step "demo"
# make demo's VM part, so that what the README shows users cannot rot.
if [ "$module_ok" = 1 ]; then
	run "make demo: two devices backed up at one instant, full and incremental (VERDICT: PASS)" \
		env KERNEL="$KDIR/arch/x86/boot/bzImage" MODULE="$top/blksnap.ko" TOOL="$top/tools/target/x86_64-unknown-linux-musl/release/blksnap" \
		SELFTESTS="$B/selftests" OUT="$B/demo" VM_TIMEOUT=1200 "$top/tests/vm/run.sh" demo
else
	fail "demo not run: the build failed"
fi

step "benchmark smoke run"
# make bench's program, one short trial of every disk model on the test
# kernel, so that it cannot rot.
if [ "$module_ok" = 1 ]; then
	run "make bench's cases all run and move data on every disk model (smoke run)" "$top/scripts/bench.sh" --smoke
else
	fail "benchmark smoke run not run: the build failed"
fi
finish
