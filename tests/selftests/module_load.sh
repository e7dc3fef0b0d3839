#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Loading and unloading blksnap, the control device node, and that an open
# control device holds the module.  Leaves the module loaded.
. "$(dirname "$0")/lib.sh"

KO=${BLKSNAP_KO:-/lib/modules/blksnap.ko}
[ -f "$KO" ] || { echo "1..0 # SKIP $KO missing"; exit $KSFT_SKIP; }

tap_plan 9
rmmod blksnap 2>/dev/null

check "insmod blksnap.ko" insmod "$KO"
check "module listed in /proc/modules" grep -q '^blksnap ' /proc/modules
check "/dev/blksnap is a character device" test -c /dev/blksnap
mode=$(stat -c %a /dev/blksnap 2>/dev/null)
check "/dev/blksnap has mode 0600 (got $mode)" test "$mode" = 600
out=$(blksnap version 2>&1)
check "blksnap version prints 1.0.0.0 (got: $out)" test "$out" = "blksnap 1.0.0.0"

exec 3</dev/blksnap
if rmmod blksnap 2>/dev/null; then
	tap_not_ok "rmmod refused while /dev/blksnap is open"
	insmod "$KO"
else
	tap_ok "rmmod refused while /dev/blksnap is open"
fi
exec 3<&-

check "rmmod once the device is closed" rmmod blksnap
check "/dev/blksnap gone after rmmod" test ! -e /dev/blksnap
check "insmod again" insmod "$KO"
tap_exit
