#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Runs last: unloads blksnap and asks kmemleak for objects leaked since boot.
. "$(dirname "$0")/lib.sh"

KML=/sys/kernel/debug/kmemleak
WRITER_RESULT=/tmp/unload-writer.result
WRITER_STARTED=/tmp/unload-writer.started
tap_plan 4
# unload_starved left a snapshot whose copies wait for storage far longer
# than this test may take: unloading must end the waits at once.
read -r up _ </proc/uptime
t0=${up%.*}
if grep -q '^blksnap ' /proc/modules; then
	check "rmmod blksnap at the end" rmmod blksnap
else
	tap_ok "blksnap not loaded at the end"
fi
read -r up _ </proc/uptime
took=$((${up%.*} - t0))
tap_diag "rmmod took ${took}s"
check "rmmod ends the waits for storage at once (under 30 s)" [ "$took" -lt 30 ]
# The blocked writer's write goes through once the snapshot is gone (when
# unload_starved ran: a run of one test has no such writer).
if [ -e "$WRITER_STARTED" ]; then
	n=0
	while [ ! -s "$WRITER_RESULT" ] && [ "$n" -lt 600 ]; do
		sleep 0.1
		n=$((n + 1))
	done
	check "the write held by the starved snapshot completes" grep -qx ok "$WRITER_RESULT"
else
	tap_ok "no write held by a starved snapshot (unload_starved did not run)"
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
