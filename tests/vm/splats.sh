# SPDX-License-Identifier: GPL-2.0
# Sourced: find_splats CONSOLE_LOG prints the kernel log lines that show a
# bug (BUG, WARNING, Oops, KASAN, lockdep, hung task, RCU stall, Rust
# panic, kmemleak, list corruption, the OOM killer) and succeeds if there is any.
find_splats() {
	local re='(BUG:|WARNING:|Oops|Kernel panic|KASAN|UBSAN|kernel BUG|general protection fault'
	re="$re|possible recursive locking|possible circular locking|inconsistent lock state"
	re="$re|suspicious RCU usage|lock held when returning|bad unlock balance|DEBUG_LOCKS_WARN_ON"
	re="$re|INFO: task .* blocked|soft lockup|hard LOCKUP|self-detected stall|rcu: INFO"
	re="$re|unreferenced object|panicked at|Call Trace:|list_add corruption|list_del corruption"
	re="$re|invoked oom-killer|Out of memory|oom-kill:|page allocation failure)"
	grep -En "$re" "$1"
}
