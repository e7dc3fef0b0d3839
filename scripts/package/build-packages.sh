#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# `make packages`: the Debian packages of blksnap, in build/packages/:
#
#   linux-image-<release>, linux-headers-<release>
#                   our patched 6.12 kernel in its production configuration
#                   (scripts/kconfig/base.config + production.config), built
#                   by the kernel's own bindeb-pkg; the headers carry the
#                   Rust metadata that external Rust modules need (patch 0004)
#   blksnap-dkms    the module's sources and dkms.conf
#   blksnap-tools   the blksnap command, its manual page and completions
#
# Versions come from ./VERSION (the tool's Cargo version and the module's
# VERSION answer are checked against it by `cargo test`). Each package is
# checked with lintian when lintian is installed (errors fail the build).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
export PATH="$HOME/.cargo/bin:$PATH"
VERSION=$(cat "$top/VERSION")
OUT=${PKG_OUT:-$top/build/packages}
STAGE=$top/build/pkgstage
MAINTAINER="blksnap developers <blksnap-devel@example.org>"
# bindeb-pkg takes the kernel packages' maintainer from these.
export DEBFULLNAME="blksnap developers" DEBEMAIL="blksnap-devel@example.org"

say() { printf '[packages] %s\n' "$*" >&2; }
die() { printf '[packages] error: %s\n' "$*" >&2; exit 1; }

rm -rf "$OUT" "$STAGE"
mkdir -p "$OUT" "$STAGE"

# --- the kernel -------------------------------------------------------------
say "kernel: the production flavour (cached like the test kernel)"
KDIR=$(BLKSNAP_FLAVOUR=production "$top/scripts/build-kernel.sh")
cp "$KDIR"/debs/linux-image-*.deb "$KDIR"/debs/linux-headers-*.deb "$OUT/"
# bindeb-pkg leaves the host programs of the headers package (fixdep,
# modpost, objtool, libmacros.so, ...) unstripped; Debian's own packaging
# strips them (dh_strip), and lintian requires it. Strip, and refresh the
# package's md5sums.
for deb in "$OUT"/linux-headers-*.deb; do
	d=$STAGE/headers
	rm -rf "$d"
	dpkg-deb -R "$deb" "$d"
	find "$d" -path "$d/DEBIAN" -prune -o -type f -print | while IFS= read -r f; do
		case "$(file -b "$f")" in
		ELF*executable* | ELF*shared\ object*) strip --strip-unneeded "$f" ;;
		esac
	done
	(cd "$d" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
		xargs -0 md5sum >DEBIAN/md5sums)
	dpkg-deb --root-owner-group -Zxz --build "$d" "$deb" >/dev/null
	rm -rf "$d"
done
RELEASE=$(cat "$KDIR/include/config/kernel.release")
say "kernel $RELEASE: $(cd "$OUT" && ls linux-*.deb | tr '\n' ' ')"

# --- common parts of our own packages ---------------------------------------
# Documentation every Debian package carries: copyright and changelog.
doc_files() { # PACKAGE ROOT
	local d=$2/usr/share/doc/$1
	mkdir -p "$d"
	cat >"$d/copyright" <<-EOF
	Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
	Upstream-Name: blksnap
	Source: https://github.com/blksnap/blksnap-rust

	Files: *
	Copyright: 2026 blksnap developers
	License: GPL-2.0
	 On Debian systems, the complete text of the GNU General Public License
	 version 2 can be found in "/usr/share/common-licenses/GPL-2".
	EOF
	printf '%s (%s) unstable; urgency=medium\n\n  * Release %s.\n\n -- %s  %s\n' \
		"$1" "$VERSION" "$VERSION" "$MAINTAINER" \
		"$(date -R -d "@$(git -C "$top" log -1 --format=%ct 2>/dev/null || date +%s)")" |
		gzip -9n >"$d/changelog.gz"
}

# Builds a .deb from ROOT (with ROOT/DEBIAN/control) and checks it.
build_deb() { # PACKAGE ROOT
	local deb=$OUT/${1}_${VERSION}_$(sed -n 's/^Architecture: //p' "$2/DEBIAN/control").deb
	find "$2" -type d -exec chmod 0755 {} +
	dpkg-deb --root-owner-group -Zxz --build "$2" "$deb" >/dev/null
	say "built $(basename "$deb")"
}

# --- blksnap-dkms -------------------------------------------------------------
say "blksnap-dkms $VERSION"
R=$STAGE/blksnap-dkms
SRC=$R/usr/src/blksnap-$VERSION
mkdir -p "$SRC" "$R/DEBIAN"
(cd "$top" && git ls-files Kbuild src include | tar -c -T - -f -) | tar -x -C "$SRC"
sed "s/@VERSION@/$VERSION/" "$top/scripts/package/dkms.conf.in" >"$SRC/dkms.conf"
find "$SRC" -type f -exec chmod 0644 {} +
doc_files blksnap-dkms "$R"
cat >"$R/DEBIAN/control" <<EOF
Package: blksnap-dkms
Version: $VERSION
Architecture: all
Maintainer: $MAINTAINER
Section: kernel
Priority: optional
Depends: dkms (>= 3.0), make, clang, lld, llvm
Recommends: blksnap-tools
Homepage: https://github.com/blksnap/blksnap-rust
Description: snapshots and changed block tracking for block devices (DKMS)
 blksnap takes consistent point-in-time snapshots of live block devices,
 copying changed blocks on write into storage that user space hands over,
 and tracks changed blocks for incremental backups.
 .
 This package builds the blksnap kernel module with DKMS. The module is
 written in Rust: it builds only for kernels with Rust support and the
 blksnap bio filter patches (CONFIG_RUST and CONFIG_BLK_FILTER), with the
 rustc and LLVM that the kernel was built with (see rust/TOOLCHAIN in the
 kernel's headers). Other kernels are skipped.
EOF
cat >"$R/DEBIAN/postinst" <<EOF
#!/bin/sh
set -e
if [ "\$1" = configure ]; then
	# Builds and installs the module for every kernel that has headers and
	# suits it (BUILD_EXCLUSIVE_CONFIG); other kernels are skipped.
	/usr/lib/dkms/common.postinst blksnap $VERSION "" "" "\$2"
fi
EOF
cat >"$R/DEBIAN/prerm" <<EOF
#!/bin/sh
set -e
if [ "\$1" = remove ] || [ "\$1" = upgrade ] || [ "\$1" = deconfigure ]; then
	dkms remove -m blksnap -v $VERSION --all || true
fi
EOF
chmod 0755 "$R/DEBIAN/postinst" "$R/DEBIAN/prerm"
build_deb blksnap-dkms "$R"

# --- blksnap-tools ------------------------------------------------------------
say "blksnap-tools $VERSION"
make -s -C "$top" tool >/dev/null
TOOL=$top/tools/target/x86_64-unknown-linux-musl/release/blksnap
R=$STAGE/blksnap-tools
mkdir -p "$R/DEBIAN" "$R/usr/sbin" "$R/usr/share/man/man8" "$R/etc/modules-load.d" \
	"$R/usr/share/bash-completion/completions" "$R/usr/share/zsh/vendor-completions" \
	"$R/usr/share/fish/vendor_completions.d"
install -m 0755 -s "$TOOL" "$R/usr/sbin/blksnap"
# A page per command (blksnap.8, blksnap-backup.8, blksnap-restore.8, ...).
"$TOOL" generate man --dir "$R/usr/share/man/man8"
gzip -9n "$R"/usr/share/man/man8/*.8
"$TOOL" generate bash >"$R/usr/share/bash-completion/completions/blksnap"
"$TOOL" generate zsh >"$R/usr/share/zsh/vendor-completions/_blksnap"
"$TOOL" generate fish >"$R/usr/share/fish/vendor_completions.d/blksnap.fish"
cat >"$R/etc/modules-load.d/blksnap.conf" <<EOF
# Load the blksnap module at boot (it comes from blksnap-dkms): uncomment.
# Change tracking starts when a backup first snapshots a device and lives in
# memory, so loading early only matters to tools that track from boot.
#blksnap
EOF
# The boot-time attach of CBT stores (Documentation/persistence.rst): a
# systemd unit before local-fs-pre.target, and for the root file system an
# initramfs-tools hook and local-top script; and the seal at shutdown, a
# systemd-shutdown hook that runs once the file systems are read-only.
mkdir -p "$R/lib/systemd/system" "$R/lib/systemd/system-shutdown" \
	"$R/usr/share/initramfs-tools/hooks" "$R/usr/share/initramfs-tools/scripts/local-top"
install -m 0644 "$top/scripts/package/blksnap-attach.service" "$R/lib/systemd/system/blksnap-attach.service"
install -m 0755 "$top/scripts/package/initramfs-hook" "$R/usr/share/initramfs-tools/hooks/blksnap"
install -m 0755 "$top/scripts/package/initramfs-local-top" "$R/usr/share/initramfs-tools/scripts/local-top/blksnap"
install -m 0755 "$top/scripts/package/blksnap-shutdown" "$R/lib/systemd/system-shutdown/blksnap"
cat >"$R/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ] && command -v deb-systemd-helper >/dev/null; then
	deb-systemd-helper enable blksnap-attach.service >/dev/null || true
fi
if [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
fi
EOF
cat >"$R/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = purge ] && command -v deb-systemd-helper >/dev/null; then
	deb-systemd-helper purge blksnap-attach.service >/dev/null || true
fi
EOF
chmod 0755 "$R/DEBIAN/postinst" "$R/DEBIAN/postrm"
chmod 0644 "$R"/usr/share/man/man8/* "$R"/usr/share/*/*completions*/* "$R/etc/modules-load.d/blksnap.conf"
echo /etc/modules-load.d/blksnap.conf >"$R/DEBIAN/conffiles"
# Static on purpose: it runs in rescue systems and initramfs images, and a
# backup tool should not break with the C library.
mkdir -p "$R/usr/share/lintian/overrides"
echo "blksnap-tools: statically-linked-binary [usr/sbin/blksnap]" >"$R/usr/share/lintian/overrides/blksnap-tools"
chmod 0644 "$R/usr/share/lintian/overrides/blksnap-tools"
doc_files blksnap-tools "$R"
cat >"$R/DEBIAN/control" <<EOF
Package: blksnap-tools
Version: $VERSION
Architecture: amd64
Maintainer: $MAINTAINER
Section: admin
Priority: optional
Recommends: blksnap-dkms
Homepage: https://github.com/blksnap/blksnap-rust
Description: snapshots and changed block tracking for block devices (tools)
 blksnap takes consistent point-in-time snapshots of live block devices,
 copying changed blocks on write into storage that user space hands over,
 and tracks changed blocks for incremental backups.
 .
 This package holds the blksnap command: snapshots, change trackers and
 full or incremental backups of one or several devices at one instant.
EOF
build_deb blksnap-tools "$R"

# --- lintian ------------------------------------------------------------------
if command -v lintian >/dev/null; then
	for deb in "$OUT"/*.deb; do
		if ! lintian --fail-on error "$deb" >"$deb.lintian" 2>&1; then
			cat "$deb.lintian" >&2
			die "lintian reports errors in $(basename "$deb")"
		fi
		say "lintian: $(basename "$deb"): no errors ($(grep -c '^W:' "$deb.lintian" || true) warnings)"
	done
else
	say "lintian not installed: packages not checked"
fi
say "done: $OUT"
ls -1 "$OUT"/*.deb
