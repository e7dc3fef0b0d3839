# SPDX-License-Identifier: GPL-2.0
# TAP helpers for the shell selftests (busybox sh).

KSFT_PASS=0
KSFT_FAIL=1
KSFT_SKIP=4

_tap_n=0
_tap_failed=0

tap_plan() {
	echo "TAP version 13"
	echo "1..$1"
}

tap_ok() {
	_tap_n=$((_tap_n + 1))
	echo "ok $_tap_n $*"
}

tap_not_ok() {
	_tap_n=$((_tap_n + 1))
	_tap_failed=$((_tap_failed + 1))
	echo "not ok $_tap_n $*"
}

tap_skip() {
	_tap_n=$((_tap_n + 1))
	echo "ok $_tap_n $* # SKIP"
}

# check NAME COMMAND...: one test point from a command's exit status.
check() {
	_name=$1
	shift
	if "$@"; then tap_ok "$_name"; else tap_not_ok "$_name"; fi
}

tap_diag() {
	echo "# $*"
}

tap_exit() {
	if [ "$_tap_failed" -gt 0 ]; then exit $KSFT_FAIL; fi
	exit $KSFT_PASS
}
