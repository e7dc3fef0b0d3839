// SPDX-License-Identifier: GPL-2.0

//! Sleeping.
//!
//! C header: [`include/linux/delay.h`](srctree/include/linux/delay.h)

use kernel::bindings;
use kernel::error::{code::EINTR, Result};

/// Sleeps for about `ms` milliseconds; fails with `EINTR` if a signal is
/// pending (at once, or when it arrives during the sleep).
pub(crate) fn sleep_interruptible(ms: u32) -> Result {
    // SAFETY: Called in process context, where sleeping is allowed.
    let left = unsafe { bindings::msleep_interruptible(ms) };
    if left != 0 || kernel::current!().signal_pending() {
        return Err(EINTR);
    }
    Ok(())
}

/// Sleeps for about `ms` milliseconds, signals or not (for waits that
/// must not be cut short, such as a seal at unload).
pub(crate) fn sleep(ms: u32) {
    // SAFETY: Called in process context, where sleeping is allowed.
    unsafe { bindings::msleep(ms) };
}
