#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Runs last: unloads blksnap and asks kmemleak for objects leaked since boot.
. "$(dirname "$0")/lib.sh"

KML=/sys/kernel/debug/kmemleak
tap_plan 2
if grep -q '^blksnap ' /proc/modules; then
	check "rmmod blksnap at the end" rmmod blksnap
else
	tap_ok "blksnap not loaded at the end"
fi
if [ ! -w "$KML" ]; then
	tap_skip "kmemleak report: $KML not available"
	tap_exit
fi
# Objects freed by RCU and the module's last references need a moment, and
# kmemleak only reports objects that stayed unreferenced over two scans.
sleep 6
echo scan >"$KML"
sleep 1
echo scan >"$KML"
report=$(cat "$KML")
if [ -n "$report" ]; then
	echo "$report" | sed 's/^/# /'
	tap_not_ok "kmemleak reports no leaked objects"
else
	tap_ok "kmemleak reports no leaked objects"
fi
tap_exit
