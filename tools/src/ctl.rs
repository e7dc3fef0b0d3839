// SPDX-License-Identifier: GPL-2.0

//! The control device `/dev/blksnap` and safe wrappers of its ioctls.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::uapi::{self, *};

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

impl CtlError {
    /// The errno of a failed ioctl.
    pub fn errno(&self) -> Option<i32> {
        match self {
            CtlError::Ioctl { err, .. } => err.raw_os_error(),
            _ => None,
        }
    }
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
                write!(
                    f,
                    "{}: permission denied: blksnap needs root (CAP_SYS_ADMIN)",
                    uapi::BLK_SNAP_CTL
                )
            }
            CtlError::Ioctl { call, err } => {
                write!(f, "{call} failed: {}", errno_text(err))?;
                if let Some(hint) = err.raw_os_error().and_then(|e| hint(call, e)) {
                    write!(f, " ({hint})")?;
                }
                Ok(())
            }
            CtlError::Open(e) => write!(f, "cannot open {}: {}", uapi::BLK_SNAP_CTL, errno_text(e)),
        }
    }
}

impl std::error::Error for CtlError {}

/// What an errno most likely means for a call.
fn hint(call: &str, errno: i32) -> Option<&'static str> {
    Some(match (call, errno) {
        (_, libc::EPERM) if call == "READ_CBT_MAP" => "the device must be in a taken snapshot",
        (_, libc::EPERM) => "run as root",
        (_, libc::ESRCH) => "no snapshot with that id: see `blksnap snapshot list`",
        (_, libc::EBUSY) if call == "TRACKER_REMOVE" => {
            "the device is in a snapshot: destroy it first"
        }
        (_, libc::EBUSY) if call == "TRACKER_PERSIST" => {
            "the device already has a store or is in a snapshot, or the store shares blocks with another store or with snapshot storage, or its writes would reach a device in a snapshot"
        }
        (_, libc::EBUSY) if call == "TRACKER_DETACH" => {
            "the device is in a snapshot, or its store's writes would reach one: destroy it first"
        }
        (_, libc::ENOENT) if call == "TRACKER_DETACH" => {
            "the device has no store: see `blksnap tracker persist`"
        }
        (_, libc::ENOSPC) if call == "TRACKER_PERSIST" => "the store is too small for the device's maps",
        (_, libc::ENOTTY) if call == "TRACKER_PERSIST_STATUS" => {
            "the loaded module is older than this tool: load the module of this version"
        }
        (_, libc::EBUSY) => {
            "a device is already in a snapshot (another backup's, or one a killed run left: see `blksnap snapshot list` and `blksnap cleanup`), or a disk and its partition were named"
        }
        (_, libc::ENOSPC) => "append storage first",
        (_, libc::EALREADY) => "the snapshot is already taken",
        (_, libc::ENODEV) => "no such block device, or it is not tracked",
        _ => return None,
    })
}

/// `ENOTTY (Inappropriate ioctl for device)`: the errno's name first.
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
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        _ => "E?",
    }
}

/// A snapshot event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapEvent {
    LowFreeSpace {
        time_ns: i64,
        requested_sectors: u64,
    },
    Corrupted {
        time_ns: i64,
        dev: BlkSnapDev,
        errno: i32,
    },
    Unknown {
        time_ns: i64,
        code: u32,
    },
}

/// The collect protocol from user space: ask for the count, then fill an
/// array that big, asking again if more entries appeared in between.
/// `call` issues the ioctl with a pointer to the array (or NULL) and its
/// room, and returns the count reported.
fn collect<T: Clone + Default>(
    mut call: impl FnMut(*mut T, u32) -> Result<u32, CtlError>,
) -> Result<Vec<T>, CtlError> {
    loop {
        let need = call(std::ptr::null_mut(), 0)?;
        let mut v = vec![T::default(); need as usize];
        match call(v.as_mut_ptr(), need) {
            Ok(n) => {
                v.truncate(n as usize);
                return Ok(v);
            }
            Err(e) if e.errno() == Some(libc::ENODATA) => continue,
            Err(e) => return Err(e),
        }
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
        // structure of the size encoded in `request`; any arrays it points
        // to are set up by the callers below to the sizes they announce.
        let ret = unsafe { libc::ioctl(self.file.as_raw_fd(), request as _, arg as *mut T) };
        if ret < 0 {
            Err(CtlError::Ioctl {
                call,
                err: io::Error::last_os_error(),
            })
        } else {
            Ok(ret)
        }
    }

    /// IOCTL_BLK_SNAP_VERSION.
    pub fn version(&self) -> Result<BlkSnapVersion, CtlError> {
        let mut v = BlkSnapVersion::default();
        self.ioctl("VERSION", IOCTL_BLK_SNAP_VERSION, &mut v)?;
        Ok(v)
    }

    /// IOCTL_BLK_SNAP_SNAPSHOT_CREATE.
    pub fn snapshot_create(&self, devs: &[BlkSnapDev]) -> Result<BlkSnapUuid, CtlError> {
        let mut arg = BlkSnapSnapshotCreate {
            count: devs.len() as u32,
            dev_id_array: devs.as_ptr() as u64,
            ..Default::default()
        };
        self.ioctl("SNAPSHOT_CREATE", IOCTL_BLK_SNAP_SNAPSHOT_CREATE, &mut arg)?;
        Ok(arg.id)
    }

    /// IOCTL_BLK_SNAP_SNAPSHOT_DESTROY.
    pub fn snapshot_destroy(&self, id: &BlkSnapUuid) -> Result<(), CtlError> {
        let mut arg = BlkSnapSnapshotDestroy { id: *id };
        self.ioctl(
            "SNAPSHOT_DESTROY",
            IOCTL_BLK_SNAP_SNAPSHOT_DESTROY,
            &mut arg,
        )
        .map(|_| ())
    }

    /// IOCTL_BLK_SNAP_SNAPSHOT_APPEND_STORAGE.
    pub fn append_storage(
        &self,
        id: &BlkSnapUuid,
        dev: BlkSnapDev,
        ranges: &[BlkSnapBlockRange],
    ) -> Result<(), CtlError> {
        let mut arg = BlkSnapSnapshotAppendStorage {
            id: *id,
            dev_id: dev,
            count: ranges.len() as u32,
            ranges: ranges.as_ptr() as u64,
            ..Default::default()
        };
        self.ioctl(
            "SNAPSHOT_APPEND_STORAGE",
            IOCTL_BLK_SNAP_SNAPSHOT_APPEND_STORAGE,
            &mut arg,
        )
        .map(|_| ())
    }

    /// IOCTL_BLK_SNAP_SNAPSHOT_TAKE.
    pub fn snapshot_take(&self, id: &BlkSnapUuid) -> Result<(), CtlError> {
        let mut arg = BlkSnapSnapshotTake { id: *id };
        self.ioctl("SNAPSHOT_TAKE", IOCTL_BLK_SNAP_SNAPSHOT_TAKE, &mut arg)
            .map(|_| ())
    }

    /// IOCTL_BLK_SNAP_SNAPSHOT_COLLECT: every snapshot id.
    pub fn snapshot_list(&self) -> Result<Vec<BlkSnapUuid>, CtlError> {
        collect(|ptr, count| {
            let mut arg = BlkSnapSnapshotCollect {
                count,
                ids: ptr as u64,
                ..Default::default()
            };
            self.ioctl(
                "SNAPSHOT_COLLECT",
                IOCTL_BLK_SNAP_SNAPSHOT_COLLECT,
                &mut arg,
            )?;
            Ok(arg.count)
        })
    }

    /// IOCTL_BLK_SNAP_SNAPSHOT_COLLECT_IMAGES.
    pub fn snapshot_images(&self, id: &BlkSnapUuid) -> Result<Vec<BlkSnapImageInfo>, CtlError> {
        collect(|ptr, count| {
            let mut arg = BlkSnapSnapshotCollectImages {
                id: *id,
                count,
                image_info_array: ptr as u64,
                ..Default::default()
            };
            self.ioctl(
                "SNAPSHOT_COLLECT_IMAGES",
                IOCTL_BLK_SNAP_SNAPSHOT_COLLECT_IMAGES,
                &mut arg,
            )?;
            Ok(arg.count)
        })
    }

    /// IOCTL_BLK_SNAP_SNAPSHOT_WAIT_EVENT: `Ok(None)` on timeout.
    pub fn wait_event(
        &self,
        id: &BlkSnapUuid,
        timeout_ms: u32,
    ) -> Result<Option<SnapEvent>, CtlError> {
        let mut ev = Box::new(BlkSnapSnapshotEvent {
            id: *id,
            timeout_ms,
            code: 0,
            time_label: 0,
            data: [0; EVENT_DATA_SIZE],
        });
        match self.ioctl(
            "SNAPSHOT_WAIT_EVENT",
            IOCTL_BLK_SNAP_SNAPSHOT_WAIT_EVENT,
            &mut *ev,
        ) {
            Ok(_) => {}
            Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        }
        let d = &ev.data;
        let word = |at: usize| u32::from_ne_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]]);
        Ok(Some(match ev.code {
            BLK_SNAP_EVENT_CODE_LOW_FREE_SPACE => SnapEvent::LowFreeSpace {
                time_ns: ev.time_label,
                requested_sectors: u64::from(word(0)) | (u64::from(word(4)) << 32),
            },
            BLK_SNAP_EVENT_CODE_CORRUPTED => SnapEvent::Corrupted {
                time_ns: ev.time_label,
                dev: BlkSnapDev {
                    mj: word(0),
                    mn: word(4),
                },
                errno: word(8) as i32,
            },
            code => SnapEvent::Unknown {
                time_ns: ev.time_label,
                code,
            },
        }))
    }

    /// IOCTL_BLK_SNAP_TRACKER_COLLECT.
    pub fn tracker_list(&self) -> Result<Vec<BlkSnapCbtInfo>, CtlError> {
        collect(|ptr, count| {
            let mut arg = BlkSnapTrackerCollect {
                count,
                cbt_info_array: ptr as u64,
                ..Default::default()
            };
            self.ioctl("TRACKER_COLLECT", IOCTL_BLK_SNAP_TRACKER_COLLECT, &mut arg)?;
            Ok(arg.count)
        })
    }

    /// IOCTL_BLK_SNAP_TRACKER_REMOVE.
    pub fn tracker_remove(&self, dev: BlkSnapDev) -> Result<(), CtlError> {
        let mut arg = BlkSnapTrackerRemove { dev_id: dev };
        self.ioctl("TRACKER_REMOVE", IOCTL_BLK_SNAP_TRACKER_REMOVE, &mut arg)
            .map(|_| ())
    }

    /// IOCTL_BLK_SNAP_TRACKER_PERSIST: attaches a CBT store at `ranges`
    /// of `store_dev` to `dev`; the answer says how tracking goes on.
    pub fn tracker_persist(
        &self,
        dev: BlkSnapDev,
        store_dev: BlkSnapDev,
        ranges: &[BlkSnapBlockRange],
        identity: &[u8; BLK_SNAP_PERSIST_IDENTITY_SIZE],
        boot_id: &[u8; 16],
        existing: bool,
    ) -> Result<BlkSnapTrackerPersist, CtlError> {
        let mut arg = BlkSnapTrackerPersist {
            dev_id: dev,
            store_dev_id: store_dev,
            count: ranges.len() as u32,
            ranges: ranges.as_ptr() as u64,
            identity: *identity,
            boot_id: *boot_id,
            flags: if existing {
                crate::uapi::BLK_SNAP_PERSIST_EXISTING
            } else {
                0
            },
            ..Default::default()
        };
        self.ioctl("TRACKER_PERSIST", IOCTL_BLK_SNAP_TRACKER_PERSIST, &mut arg)?;
        Ok(arg)
    }

    /// IOCTL_BLK_SNAP_TRACKER_DETACH: seals the store, stops tracking.
    pub fn tracker_detach(&self, dev: BlkSnapDev) -> Result<(), CtlError> {
        let mut arg = BlkSnapTrackerDetach {
            dev_id: dev,
            ..Default::default()
        };
        self.ioctl("TRACKER_DETACH", IOCTL_BLK_SNAP_TRACKER_DETACH, &mut arg)
            .map(|_| ())
    }

    /// IOCTL_BLK_SNAP_TRACKER_PERSIST_STATUS: what `dev`'s store says.
    pub fn tracker_persist_status(
        &self,
        dev: BlkSnapDev,
    ) -> Result<BlkSnapTrackerPersistStatus, CtlError> {
        let mut arg = BlkSnapTrackerPersistStatus {
            dev_id: dev,
            ..Default::default()
        };
        self.ioctl(
            "TRACKER_PERSIST_STATUS",
            IOCTL_BLK_SNAP_TRACKER_PERSIST_STATUS,
            &mut arg,
        )?;
        Ok(arg)
    }

    /// IOCTL_BLK_SNAP_TRACKER_READ_CBT_MAP, the whole map.
    pub fn read_cbt_map(&self, dev: BlkSnapDev, len: u32) -> Result<Vec<u8>, CtlError> {
        let mut map = vec![0u8; len as usize];
        let mut off = 0u32;
        while off < len {
            let chunk = (len - off).min(1 << 20);
            let mut arg = BlkSnapTrackerReadCbtBitmap {
                dev_id: dev,
                offset: off,
                length: chunk,
                buff: map[off as usize..].as_mut_ptr() as u64,
            };
            let n = self.ioctl(
                "READ_CBT_MAP",
                IOCTL_BLK_SNAP_TRACKER_READ_CBT_MAP,
                &mut arg,
            )?;
            if n <= 0 {
                // A shorter map would silently leave changed blocks out
                // of an incremental copy.
                return Err(CtlError::Ioctl {
                    call: "READ_CBT_MAP",
                    err: io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the change map ended after {off} of its {len} bytes"),
                    ),
                });
            }
            off += n as u32;
        }
        Ok(map)
    }

    /// IOCTL_BLK_SNAP_TRACKER_MARK_DIRTY_BLOCKS.
    pub fn mark_dirty(
        &self,
        dev: BlkSnapDev,
        ranges: &[BlkSnapBlockRange],
    ) -> Result<(), CtlError> {
        let mut arg = BlkSnapTrackerMarkDirtyBlocks {
            dev_id: dev,
            count: ranges.len() as u32,
            dirty_blocks_array: ranges.as_ptr() as u64,
            ..Default::default()
        };
        self.ioctl(
            "MARK_DIRTY_BLOCKS",
            IOCTL_BLK_SNAP_TRACKER_MARK_DIRTY_BLOCKS,
            &mut arg,
        )
        .map(|_| ())
    }
}

impl std::fmt::Display for uapi::BlkSnapVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{}.{}.{}",
            self.major, self.minor, self.revision, self.build
        )
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
        let e = Control::open_path(Path::new("/nonexistent/blksnap"))
            .err()
            .map(|e| e.to_string());
        assert!(e.unwrap_or_default().contains("modprobe blksnap"));
    }

    #[test]
    fn failed_calls_explain() {
        let e = CtlError::Ioctl {
            call: "SNAPSHOT_TAKE",
            err: io::Error::from_raw_os_error(libc::ENOSPC),
        };
        let s = e.to_string();
        assert!(s.contains("ENOSPC") && s.contains("append storage"), "{s}");
    }

    #[test]
    fn version_displays_dotted() {
        assert_eq!(uapi::VERSION.to_string(), "1.0.0.0");
    }

    #[test]
    fn ioctl_numbers_match_contract() {
        assert_eq!(uapi::IOCTL_BLK_SNAP_VERSION, 0x4008_5600);
        assert_eq!(uapi::IOCTL_BLK_SNAP_SNAPSHOT_WAIT_EVENT, 0x5000_560b);
        assert_eq!(std::mem::size_of::<uapi::BlkSnapSnapshotEvent>(), 4096);
        assert_eq!(std::mem::size_of::<uapi::BlkSnapCbtInfo>(), 48);
    }
}
