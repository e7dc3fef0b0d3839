// SPDX-License-Identifier: GPL-2.0

//! Credentials of the calling task.
//!
//! C header: [`include/linux/capability.h`](srctree/include/linux/capability.h)

use kernel::bindings;

/// Whether the current task may administer the system (`CAP_SYS_ADMIN`).
///
/// Like `capable()`, a successful check marks the task as having used the
/// capability (for auditing).
pub(crate) fn capable_sys_admin() -> bool {
    // SAFETY: `capable` may be called from any process context with any
    // capability number; `CAP_SYS_ADMIN` is a valid one.
    unsafe { bindings::capable(bindings::CAP_SYS_ADMIN as i32) }
}
