#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Runs the selftests listed in /tests/list inside the VM, each under its own
# time limit, framing each one's TAP output for the host-side judge:
#   # selftest: NAME
#   ...the test's own output; after each top-level TAP point:
#   # duration: CENTISECONDS NAME: POINT
#   # exit: NAME RC CENTISECONDS
# A point's duration runs from the previous point (or the program's start).
# An argument names one test to run instead of the whole list (kmemleak.sh
# still runs last); PROGRAM:TEST runs one test of a C program.
cd /tests || exit 1
list=$(grep -v '^#' list)
args=
if [ -n "$1" ]; then
	list="module_load.sh ${1%%:*} kmemleak.sh"
	case "$1" in *:*) args="-t ${1#*:}" ;; esac
fi

# Sets $cs to the uptime in centiseconds (/proc/uptime has two decimals);
# no fork, so it is cheap under TCG.
uptime_cs() {
	read -r _up _rest </proc/uptime
	cs=${_up%.*}${_up#*.}
}

for t in $list; do
	limit=$(sed -n "s/^# timeout $t //p" list)
	limit=${limit:-300}
	# A soak asked to run longer (make soak MINUTES=...) gets the time.
	m=$(sed -n 's/.*bsoak_minutes=\([0-9]*\).*/\1/p' /proc/cmdline)
	[ "$t" = soak ] && [ -n "$m" ] && limit=$((m * 60 + 900))
	echo "# selftest: $t"
	uptime_cs
	start=$cs
	{
		# shellcheck disable=SC2086 # $args is empty or "-t TEST"
		timeout "$limit" "./$t" $(case "$1" in "$t":*) echo "$args" ;; esac) 2>&1
		# timeout(1) reports a killed test as 124 or 128+signal.
		echo "#-rc: $?"
	} | {
		last=$start
		while IFS= read -r line; do
			case "$line" in
			"#-rc: "*)
				uptime_cs
				echo "# exit: $t ${line#\#-rc: } $((cs - start))"
				;;
			"ok "* | "not ok "*)
				echo "$line"
				uptime_cs
				echo "# duration: $((cs - last)) $t: ${line#* [0-9]* }"
				last=$cs
				;;
			*)
				echo "$line"
				;;
			esac
		done
	}
done
