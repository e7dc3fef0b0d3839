#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Build the blksnap test kernel: Debian's linux-source-6.12, our patches/ in
# series order, the config fragments under scripts/kconfig/, LLVM=1.
#
# The build lives in a cache outside the repository, one directory per key;
# the key hashes everything the result depends on (source package version,
# patches, config fragments, this recipe and the toolchain versions).  A hit
# skips the build.
#
#   build-kernel.sh            build if needed, then print the tree's path
#   build-kernel.sh --kdir     print the path the current inputs map to
#
# BLKSNAP_CACHE overrides the cache root (default ~/.cache/blksnap).
# BLKSNAP_FLAVOUR=production builds the packaged kernel instead (make
# packages): base.config + production.config, no test devices and no
# debugging, built with bindeb-pkg; its Debian packages end up in the
# tree's debs/ directory. BLKSNAP_FLAVOUR=bench builds the benchmark
# kernel (make bench): base.config + bench.config, no debugging.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/scripts/versions.env"
export PATH="$HOME/.cargo/bin:$PATH"

# Bump when the way the tree is built changes in a way the inputs below miss.
RECIPE=1
CACHE=${BLKSNAP_CACHE:-$HOME/.cache/blksnap}
JOBS=${JOBS:-$(($(nproc) + 1))}
FLAVOUR=${BLKSNAP_FLAVOUR:-test}
case "$FLAVOUR" in
test)
	PREFIX=kernel
	FRAGMENTS="$top/scripts/kconfig/base.config $top/scripts/kconfig/test.config $top/scripts/kconfig/debug.config"
	;;
production)
	PREFIX=pkgkernel
	FRAGMENTS="$top/scripts/kconfig/base.config $top/scripts/kconfig/production.config"
	;;
bench)
	PREFIX=benchkernel
	FRAGMENTS="$top/scripts/kconfig/base.config $top/scripts/kconfig/bench.config"
	;;
*)
	echo "BLKSNAP_FLAVOUR=$FLAVOUR: test, production or bench" >&2
	exit 2
	;;
esac

say() { printf '[kernel] %s\n' "$*" >&2; }
die() { printf '[kernel] error: %s\n' "$*" >&2; exit 1; }

patch_list() {
	sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$top/patches/series"
}

cache_key() {
	{
		echo "recipe $RECIPE flavour $FLAVOUR"
		echo "$KERNEL_SOURCE_PKG $KERNEL_SOURCE_VERSION"
		for p in $(patch_list); do
			echo "patch $p"
			cat "$top/patches/$p"
		done
		cat $FRAGMENTS
		rustc --version 2>&1 || true
		bindgen --version 2>&1 || true
		clang --version 2>&1 | head -1 || true
	} | sha256sum | cut -c1-16
}

KDIR=$CACHE/$PREFIX-$(cache_key)
if [ "${1:-}" = "--kdir" ]; then
	echo "$KDIR"
	exit 0
fi

if [ -f "$KDIR/.blksnap-complete" ]; then
	say "cache hit: $KDIR"
	echo "$KDIR"
	exit 0
fi

TARBALL=$("$top/scripts/kernel-source.sh") || die "no kernel source: run scripts/install-deps.sh"
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
say "waiting for the cache lock" && flock 9
if [ -f "$KDIR/.blksnap-complete" ]; then
	echo "$KDIR"
	exit 0
fi

# Failed or interrupted builds are of no use; of the finished ones, keep
# the newest other one (switching back to it is then free) and drop the rest.
rm -rf "$CACHE"/"$PREFIX"-*.tmp
for old in $(ls -dt "$CACHE"/"$PREFIX"-*/.blksnap-complete 2>/dev/null | sed 's#/.blksnap-complete$##' |
	grep -vx "$KDIR" | tail -n +2); do
	say "pruning old build $old"
	rm -rf "$old"
done

start=$(date +%s)
say "cache miss: building into $KDIR"
rm -rf "$KDIR" "$KDIR.tmp"
mkdir -p "$KDIR.tmp"
say "extracting $TARBALL"
tar -xf "$TARBALL" -C "$KDIR.tmp" --strip-components=1
cd "$KDIR.tmp"
for p in $(patch_list); do
	say "applying $p"
	patch -p1 --batch --forward --quiet < "$top/patches/$p" ||
		die "patch $p does not apply"
done

log=$KDIR.tmp/build.log
say "configuring the $FLAVOUR kernel (tinyconfig + fragments, LLVM=1)"
make LLVM=1 tinyconfig >"$log" 2>&1
./scripts/kconfig/merge_config.sh -m .config $FRAGMENTS >>"$log" 2>&1
make LLVM=1 olddefconfig >>"$log" 2>&1
# merge_config drops options whose dependencies are unmet: check every one.
missing=
for f in $FRAGMENTS; do
	while IFS= read -r line; do
		case "$line" in
		CONFIG_*=n) opt=${line%%=*}
			grep -q "^$opt=" .config && missing="$missing $line" ;;
		CONFIG_*) grep -qx "$line" .config || missing="$missing $line" ;;
		esac
	done <"$f"
done
[ -z "$missing" ] || die "options dropped from .config:$missing (see $log; is the Rust toolchain complete?)"

target=
[ "$FLAVOUR" = production ] && target=bindeb-pkg
say "compiling ${target:+($target) }with -j$JOBS (about 6 minutes on 2 cores; log: $log)"
make LLVM=1 -j"$JOBS" $target >>"$log" 2>&1 &
mk=$!
while kill -0 "$mk" 2>/dev/null; do
	sleep 30
	kill -0 "$mk" 2>/dev/null || break
	n=$(grep -cE '^  (CC|RUSTC|AS|LD|AR|BINDGEN)' "$log" || true)
	say "  $(( $(date +%s) - start ))s elapsed, $n build steps done"
done
if ! wait "$mk"; then
	tail -40 "$log" >&2
	die "kernel build failed (full log: $log)"
fi
[ -f arch/x86/boot/bzImage ] && [ -f Module.symvers ] && [ -f rust/kernel.o ] ||
	die "build finished without bzImage, Module.symvers or the Rust kernel crate"
if [ "$FLAVOUR" = production ]; then
	# bindeb-pkg leaves its output beside the tree: keep it in the tree.
	mkdir -p debs
	mv ../linux-*_*.deb ../linux-upstream_*.buildinfo ../linux-upstream_*.changes debs/ 2>/dev/null || true
	ls debs/linux-image-*.deb debs/linux-headers-*.deb >/dev/null 2>&1 ||
		die "bindeb-pkg made no linux-image or linux-headers package"
fi
touch .blksnap-complete
cd /
mv "$KDIR.tmp" "$KDIR"
say "built in $(( $(date +%s) - start ))s"
echo "$KDIR"
