#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# Print the path of the pinned kernel source tarball (versions.env), fetching
# it first if needed.  The system's linux-source package is used only when it
# is exactly the pinned version; otherwise the pinned .deb is downloaded with
# apt (signed archive, hash checked) and its tarball kept in the cache.  The
# machine's own package is never upgraded or downgraded: an unattended
# upgrade of it must not change, or break, what we build.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
. "$top/scripts/versions.env"

CACHE=${BLKSNAP_CACHE:-$HOME/.cache/blksnap}
say() { printf '[source] %s\n' "$*" >&2; }
die() { printf '[source] error: %s\n' "$*" >&2; exit 1; }

installed=$(dpkg-query -W -f='${Status} ${Version}' "$KERNEL_SOURCE_PKG" 2>/dev/null || true)
system=/usr/src/$KERNEL_SOURCE_PKG.tar.xz
if [ "$installed" = "install ok installed $KERNEL_SOURCE_VERSION" ] && [ -f "$system" ]; then
	echo "$system"
	exit 0
fi

dir=$CACHE/source
tarball=$dir/${KERNEL_SOURCE_PKG}_${KERNEL_SOURCE_VERSION}.tar.xz
if [ -f "$tarball" ]; then
	echo "$tarball"
	exit 0
fi

mkdir -p "$dir"
exec 8>"$dir/.lock"
flock 8
if [ -f "$tarball" ]; then
	echo "$tarball"
	exit 0
fi
tmp=$(mktemp -d "$dir/fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# apt drops to the _apt user when it can; let it write here.
chmod 0777 "$tmp"
fetch() { (cd "$tmp" && apt-get download -qq "$KERNEL_SOURCE_PKG=$KERNEL_SOURCE_VERSION") >/dev/null 2>&1; }
say "downloading $KERNEL_SOURCE_PKG $KERNEL_SOURCE_VERSION (about 150 MB)"
if ! fetch; then
	# The package lists may predate the pinned version.
	SUDO=
	[ "$(id -u)" -eq 0 ] || SUDO=sudo
	$SUDO apt-get update -qq >/dev/null 2>&1 || true
	fetch || die "$KERNEL_SOURCE_PKG $KERNEL_SOURCE_VERSION is not offered by apt (see scripts/versions.env)"
fi
deb=$(ls "$tmp"/*.deb)
dpkg-deb --fsys-tarfile "$deb" | tar -xOf - "./usr/src/$KERNEL_SOURCE_PKG.tar.xz" >"$tmp/src.tar.xz" ||
	die "$deb holds no usr/src/$KERNEL_SOURCE_PKG.tar.xz"
mv "$tmp/src.tar.xz" "$tarball"
echo "$tarball"
