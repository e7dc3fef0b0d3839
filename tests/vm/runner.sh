#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Runs the selftests listed in /tests/list inside the VM, each under a time
# limit, framing each one's TAP output for the host-side parser:
#   # selftest: NAME
#   ...the test's own output...
#   # exit: NAME RC
# An argument names one test to run instead of the whole list (kmemleak.sh
# still runs last).
cd /tests || exit 1
list=$(grep -v '^#' list)
if [ -n "$1" ]; then
	list="module_load.sh $1 kmemleak.sh"
fi
for t in $list; do
	limit=$(sed -n "s/^# timeout $t //p" list)
	limit=${limit:-300}
	echo "# selftest: $t"
	timeout "$limit" "./$t" 2>&1
	rc=$?
	# timeout(1) reports a killed test as 124 or 128+signal.
	echo "# exit: $t $rc"
done
