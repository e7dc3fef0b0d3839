#!/bin/bash
# SPDX-License-Identifier: GPL-2.0
#
# judge.sh OUT QEMU_RC [ONLY]: reads OUT/results.log and OUT/console.log of
# a VM run, prints one line per verdict and writes OUT/summary as
# "PASSED FAILED SKIPPED".  Exits 1 if anything failed.
#
# Every program of tests/vm/list (or module_load.sh, ONLY and kmemleak.sh
# when ONLY names one test) must have run.  A skip is a failure: our own VM
# has every tool and disk the tests need, so a test that skips there is a
# test that did not run.  The summary shows each program's duration and the
# five slowest test points.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$1
qrc=$2
only=${3:-}
res=$out/results.log
con=$out/console.log
pass=0 fail=0 skip=0

verdict() { # ok|fail|skip NAME
	case "$1" in
	ok) pass=$((pass + 1)); echo "PASS: $2" ;;
	fail) fail=$((fail + 1)); echo "FAIL: $2" ;;
	skip) skip=$((skip + 1)); echo "SKIP: $2" ;;
	esac
}

# Per test program: its TAP points, then its exit status.
cur= cur_fail=0 cur_points=0 cur_plan=
ran=" "
: >"$out/durations"
: >"$out/programs"
while IFS= read -r line; do
	line=${line%$'\r'}
	case "$line" in
	"# selftest: "*)
		cur=${line#\# selftest: } cur_fail=0 cur_points=0 cur_plan=
		ran="$ran$cur " ;;
	"# duration: "*)
		echo "${line#\# duration: }" >>"$out/durations" ;;
	1..[0-9]*)
		[ -n "$cur" ] && [ -z "$cur_plan" ] && cur_plan=${line#1..} cur_plan=${cur_plan%% *} ;;
	"# exit: "*)
		set -- ${line#\# exit: }
		rc=${2:-255}
		echo "${3:-0} $cur" >>"$out/programs"
		if [ "$rc" = 4 ] && [ "$cur_points" = 0 ]; then
			verdict fail "$cur: skipped as a whole (our VM has everything it needs)"
		elif [ "$rc" = 124 ] || [ "$rc" -ge 128 ]; then
			verdict fail "$cur: timed out or killed (exit $rc)"
		elif [ "$rc" != 0 ] && [ "$rc" != 4 ] && [ "$cur_fail" = 0 ]; then
			verdict fail "$cur: exit status $rc"
		elif [ "$cur_points" = 0 ] && [ "$rc" = 0 ]; then
			verdict fail "$cur: printed no TAP result"
		elif [ -n "$cur_plan" ] && [ "$cur_plan" != 0 ] && [ "$cur_plan" != "$cur_points" ]; then
			verdict fail "$cur: planned $cur_plan tests, ran $cur_points"
		fi
		cur= ;;
	"ok "*"# SKIP"* | "ok "*"# skip"*)
		cur_points=$((cur_points + 1)) cur_fail=$((cur_fail + 1))
		verdict fail "$cur: skipped: ${line#ok }" ;;
	"ok "*)
		cur_points=$((cur_points + 1))
		verdict ok "$cur: ${line#ok }" ;;
	"not ok "*)
		cur_points=$((cur_points + 1)) cur_fail=$((cur_fail + 1))
		verdict fail "$cur: ${line#not ok }" ;;
	esac
done <"$res"
[ -n "$cur" ] && verdict fail "$cur: did not finish"

# Every listed program ran.
if [ -n "$only" ]; then
	expected="module_load.sh ${only%%:*} kmemleak.sh"
else
	expected=$(grep -v '^#' "$here/list")
fi
for t in $expected; do
	case "$ran" in
	*" $t "*) ;;
	*) verdict fail "$t: did not run" ;;
	esac
done

# Where the time went: every program, then the five slowest points.
if [ -s "$out/programs" ]; then
	echo "durations (s):"
	awk '{ printf "    %7.1f  %s\n", $1 / 100, $2 }' "$out/programs"
	echo "slowest tests (s):"
	sort -rn "$out/durations" | head -5 | awk '{ t = $1; $1 = ""; printf "    %7.1f %s\n", t / 100, $0 }'
fi

if grep -q '^BLKSNAP-VM-DONE' "$res"; then
	verdict ok "VM ran to the end"
elif [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
	verdict fail "VM timed out and was killed"
else
	verdict fail "VM stopped early (qemu exit $qrc)"
fi

# The kernel log: any splat is a failure, whatever the tests said.
. "$(dirname "$0")/splats.sh"
if find_splats "$con" >"$out/splats.txt"; then
	head -20 "$out/splats.txt" | sed 's/^/    /'
	verdict fail "kernel log free of splats (see $con)"
else
	verdict ok "kernel log free of splats"
fi

echo "$pass $fail $skip" >"$out/summary"
[ "$fail" = 0 ]
