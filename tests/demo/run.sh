#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# The demo, run inside the VM by `make demo`: narrated steps, then a verdict.
# Exits non-zero if any step's check failed.
fails=0
n=0
step() { n=$((n + 1)); printf '\n[%d] %s\n' "$n" "$*"; }
show() { printf '    $ %s\n' "$*"; "$@" 2>&1 | sed 's/^/    /'; }
verify() { # DESCRIPTION COMMAND...
	what=$1
	shift
	if "$@" 2>/dev/null; then
		echo "    ok: $what"
	else
		echo "    FAILED: $what"
		fails=$((fails + 1))
	fi
}

echo "blksnap demo on $(uname -sr)"

step "Load the blksnap module"
show insmod /lib/modules/blksnap.ko
show grep blksnap /proc/modules
verify "module loaded" grep -q '^blksnap ' /proc/modules

step "The control device /dev/blksnap appears (root only)"
show ls -l /dev/blksnap
verify "/dev/blksnap is a character device" test -c /dev/blksnap

step "Ask the module for its version through the blksnap tool"
show blksnap version
v=$(blksnap version 2>&1)
verify "version is 1.0.0.0" test "$v" = "blksnap 1.0.0.0"
show blksnap version --json

step "Unload the module"
show rmmod blksnap
verify "module unloaded" sh -c '! grep -q "^blksnap " /proc/modules'

echo
if [ "$fails" = 0 ]; then
	echo "VERDICT: blksnap works: loaded, answered VERSION through /dev/blksnap, unloaded cleanly."
else
	echo "VERDICT: $fails check(s) failed."
fi
[ "$fails" = 0 ]
