// SPDX-License-Identifier: GPL-2.0

//! The control device `/dev/blksnap`: checks the caller, copies arguments in
//! and out of user space, and dispatches each ioctl to the part that
//! implements it.

use core::mem::size_of;

use kernel::prelude::*;
use kernel::types::{AsBytes, FromBytes};
use kernel::uaccess::UserSlice;

use crate::kernel_ext::cred;
use crate::kernel_ext::misc::FileOperations;
use crate::uapi;

/// Copies a `T` in from the user address `arg`.
#[allow(dead_code)]
fn read_arg<T: FromBytes>(arg: usize) -> Result<T> {
    UserSlice::new(arg, size_of::<T>()).reader().read::<T>()
}

/// Copies `value` out to the user address `arg`.
fn write_arg<T: AsBytes>(arg: usize, value: &T) -> Result {
    UserSlice::new(arg, size_of::<T>()).writer().write(value)
}

/// State behind `/dev/blksnap`.
pub(crate) struct Control;

impl Control {
    pub(crate) fn new() -> Self {
        Control
    }

    fn version(&self, arg: usize) -> Result<isize> {
        write_arg(arg, &uapi::VERSION)?;
        Ok(0)
    }
}

impl FileOperations for Control {
    fn ioctl(&self, cmd: u32, arg: usize) -> Result<isize> {
        // Dispatch on the full number: type, nr, size and direction bits.
        match cmd {
            uapi::IOCTL_BLK_SNAP_VERSION => return self.version(arg),
            uapi::IOCTL_BLK_SNAP_TRACKER_REMOVE
            | uapi::IOCTL_BLK_SNAP_TRACKER_COLLECT
            | uapi::IOCTL_BLK_SNAP_TRACKER_READ_CBT_MAP
            | uapi::IOCTL_BLK_SNAP_TRACKER_MARK_DIRTY_BLOCKS
            | uapi::IOCTL_BLK_SNAP_SNAPSHOT_CREATE
            | uapi::IOCTL_BLK_SNAP_SNAPSHOT_DESTROY
            | uapi::IOCTL_BLK_SNAP_SNAPSHOT_APPEND_STORAGE
            | uapi::IOCTL_BLK_SNAP_SNAPSHOT_TAKE
            | uapi::IOCTL_BLK_SNAP_SNAPSHOT_COLLECT
            | uapi::IOCTL_BLK_SNAP_SNAPSHOT_COLLECT_IMAGES
            | uapi::IOCTL_BLK_SNAP_SNAPSHOT_WAIT_EVENT => {}
            _ => return Err(ENOTTY),
        }
        if !cred::capable_sys_admin() {
            return Err(EPERM);
        }
        // Not implemented yet: no call pretends to succeed.
        Err(ENOTTY)
    }
}
