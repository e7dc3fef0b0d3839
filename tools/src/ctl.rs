// SPDX-License-Identifier: GPL-2.0

//! The control device `/dev/blksnap` and safe wrappers of its ioctls.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::uapi;

/// An open control device.
pub struct Control {
    file: File,
}

/// What went wrong talking to the module, with advice a person can act on.
#[derive(Debug)]
pub enum CtlError {
    /// The control device does not exist.
    NotLoaded,
    /// The caller may not open it.
    Permission,
    /// An ioctl failed.
    Ioctl { call: &'static str, err: io::Error },
    /// Opening failed otherwise.
    Open(io::Error),
}

impl std::fmt::Display for CtlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CtlError::NotLoaded => write!(
                f,
                "{} not found: load the module with `modprobe blksnap` (or `insmod blksnap.ko`)",
                uapi::BLK_SNAP_CTL
            ),
            CtlError::Permission => {
                write!(f, "{}: permission denied: blksnap needs root (CAP_SYS_ADMIN)", uapi::BLK_SNAP_CTL)
            }
            CtlError::Ioctl { call, err } => write!(f, "{call} failed: {}", errno_text(err)),
            CtlError::Open(e) => write!(f, "cannot open {}: {}", uapi::BLK_SNAP_CTL, errno_text(e)),
        }
    }
}

impl std::error::Error for CtlError {}

/// `ENOTTY (Inappropriate ioctl for device)`: the errno's name first, for logs and searches.
pub fn errno_text(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(n) => format!("{} ({})", errno_name(n), io::Error::from_raw_os_error(n)),
        None => err.to_string(),
    }
}

/// The symbolic name of an errno value.
pub fn errno_name(n: i32) -> &'static str {
    match n {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOTTY => "ENOTTY",
        libc::ENOSPC => "ENOSPC",
        libc::ENODATA => "ENODATA",
        libc::EALREADY => "EALREADY",
        libc::EAGAIN => "EAGAIN",
        _ => "E?",
    }
}

impl Control {
    /// Opens the control device at its standard path.
    pub fn open() -> Result<Self, CtlError> {
        Self::open_path(Path::new(uapi::BLK_SNAP_CTL))
    }

    /// Opens a control device at `path`.
    pub fn open_path(path: &Path) -> Result<Self, CtlError> {
        match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => Ok(Self { file }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(CtlError::NotLoaded),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Err(CtlError::Permission),
            Err(e) => Err(CtlError::Open(e)),
        }
    }

    /// Issues `request` with a pointer to `arg`; returns the ioctl's value.
    fn ioctl<T>(&self, call: &'static str, request: u32, arg: &mut T) -> Result<i32, CtlError> {
        // SAFETY: `arg` is a live, exclusive reference to a `#[repr(C)]` ABI
        // structure of the size encoded in `request`; the kernel reads and
        // writes at most that many bytes through it.
        let ret = unsafe {
            libc::ioctl(self.file.as_raw_fd(), request as _, arg as *mut T)
        };
        if ret < 0 {
            Err(CtlError::Ioctl { call, err: io::Error::last_os_error() })
        } else {
            Ok(ret)
        }
    }

    /// IOCTL_BLK_SNAP_VERSION.
    pub fn version(&self) -> Result<uapi::BlkSnapVersion, CtlError> {
        let mut v = uapi::BlkSnapVersion::default();
        self.ioctl("VERSION", uapi::IOCTL_BLK_SNAP_VERSION, &mut v)?;
        Ok(v)
    }
}

impl std::fmt::Display for uapi::BlkSnapVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}.{}", self.major, self.minor, self.revision, self.build)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_text_names_the_errno() {
        let t = errno_text(&io::Error::from_raw_os_error(libc::ENOTTY));
        assert!(t.starts_with("ENOTTY ("), "{t}");
    }

    #[test]
    fn missing_device_says_how_to_load() {
        let e = Control::open_path(Path::new("/nonexistent/blksnap")).err().map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("modprobe blksnap"));
    }

    #[test]
    fn version_displays_dotted() {
        assert_eq!(uapi::VERSION.to_string(), "1.0.0.0");
    }

    #[test]
    fn ioctl_numbers_match_contract() {
        // Also asserted at compile time in uapi.rs; this keeps a readable failure.
        assert_eq!(uapi::IOCTL_BLK_SNAP_VERSION, 0x4008_5600);
        assert_eq!(uapi::IOCTL_BLK_SNAP_SNAPSHOT_WAIT_EVENT, 0x5000_560b);
        assert_eq!(std::mem::size_of::<uapi::BlkSnapSnapshotEvent>(), 4096);
        assert_eq!(std::mem::size_of::<uapi::BlkSnapCbtInfo>(), 48);
    }
}
