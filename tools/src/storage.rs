// SPDX-License-Identifier: GPL-2.0

//! Keeping a snapshot supplied with storage: files allocated in a directory
//! on demand, up to a limit, and the event loop that answers the module's
//! requests.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::ctl::{Control, SnapEvent};
use crate::fiemap;
use crate::uapi::BlkSnapUuid;
use crate::util::{dev_label, human_bytes, uuid_to_string};

/// Storage files of one snapshot in one directory.
pub struct StorageDir {
    dir: PathBuf,
    pub(crate) limit: u64,
    step: u64,
    used: u64,
    files: Vec<PathBuf>,
    limit_reported: bool,
}

impl StorageDir {
    /// Files of `step` bytes (or what is asked for, if more) in `dir`, at
    /// most `limit` bytes in all.
    pub fn new(dir: PathBuf, step: u64, limit: u64) -> Self {
        Self {
            dir,
            limit,
            step: step.max(1 << 20),
            used: 0,
            files: Vec::new(),
            limit_reported: false,
        }
    }

    pub fn used(&self) -> u64 {
        self.used
    }

    /// Allocates one more file of the step size (less if the limit is
    /// near) for `id` and appends it; returns the bytes added. Requests are
    /// answered a step at a time: the module asks again while it is short,
    /// and the limit bounds the whole.
    pub fn add(
        &mut self,
        ctl: &Control,
        id: &BlkSnapUuid,
        log: &dyn Fn(&str),
    ) -> Result<u64, String> {
        let left = self.limit.saturating_sub(self.used);
        let size = self.step.min(left) & !4095;
        if size == 0 {
            return Err(format!(
                "storage limit of {} reached in {}",
                human_bytes(self.limit),
                self.dir.display()
            ));
        }
        let name = format!(
            "blksnap-{}-{}.storage",
            &uuid_to_string(id)[..8],
            self.files.len()
        );
        let path = self.dir.join(name);
        let sf = fiemap::allocate(&path, size)?;
        self.files.push(path.clone());
        ctl.append_storage(id, sf.dev, &sf.ranges)
            .map_err(|e| e.to_string())?;
        self.used += size;
        log(&format!(
            "storage: added {} ({} extents on {}), {} of {} used",
            human_bytes(size),
            sf.ranges.len(),
            dev_label(&sf.dev),
            human_bytes(self.used),
            human_bytes(self.limit)
        ));
        Ok(size)
    }

    /// Removes the files (after the snapshot is gone).
    pub fn remove_files(&mut self) {
        for f in self.files.drain(..) {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// How a watch ended.
#[derive(Debug, PartialEq, Eq)]
pub enum WatchEnd {
    /// The snapshot was destroyed.
    SnapshotGone,
    /// Asked to stop.
    Stopped,
}

/// What the watch saw.
#[derive(Debug, Default)]
pub struct WatchStats {
    pub low_space_events: u32,
    pub corrupted: Vec<String>,
}

/// Waits for the snapshot's events and answers them until the snapshot goes
/// or `stop` is set: more storage for low_free_space, a loud report for
/// corrupted.
pub fn watch(
    ctl: &Control,
    id: &BlkSnapUuid,
    sd: &mut StorageDir,
    stop: &AtomicBool,
    log: &dyn Fn(&str),
    stats: &mut WatchStats,
) -> Result<WatchEnd, String> {
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(WatchEnd::Stopped);
        }
        match ctl.wait_event(id, 250) {
            Ok(None) => continue,
            Ok(Some(SnapEvent::LowFreeSpace {
                requested_sectors, ..
            })) => {
                stats.low_space_events += 1;
                log(&format!(
                    "event: low free space, {} requested",
                    human_bytes(requested_sectors * 512)
                ));
                if sd.used() < sd.limit {
                    if let Err(e) = sd.add(ctl, id, log) {
                        log(&format!("WARNING: cannot add storage: {e}"));
                    }
                } else if !sd.limit_reported {
                    sd.limit_reported = true;
                    log(&format!(
                        "WARNING: storage limit of {} reached: no more storage will be added",
                        human_bytes(sd.limit)
                    ));
                }
            }
            Ok(Some(SnapEvent::Corrupted { dev, errno, .. })) => {
                let msg = format!(
                    "ERROR: the snapshot image of {} is CORRUPTED ({}): its backup is not usable",
                    dev_label(&dev),
                    crate::ctl::errno_name(errno)
                );
                log(&msg);
                stats.corrupted.push(msg);
            }
            Ok(Some(SnapEvent::Unknown { code, .. })) => {
                log(&format!("event: unknown code {code}"))
            }
            Err(e) if e.errno() == Some(libc::ESRCH) => return Ok(WatchEnd::SnapshotGone),
            Err(e) if e.errno() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The storage files this tool left in `dir` (after a backup or watch was
/// killed), each with the first 8 hex digits of its snapshot's id, which
/// its name carries (`blksnap-<id8>-<n>.storage`).
pub fn leftovers(dir: &std::path::Path) -> Result<Vec<(PathBuf, String)>, String> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(prefix) = storage_file_owner(&name) {
            out.push((e.path(), prefix.to_string()));
        }
    }
    out.sort();
    Ok(out)
}

/// The snapshot id prefix a storage file's name carries, if it is one.
fn storage_file_owner(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("blksnap-")?.strip_suffix(".storage")?;
    let (id8, n) = rest.split_once('-')?;
    let hex = id8.len() == 8 && id8.bytes().all(|b| b.is_ascii_hexdigit());
    (hex && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(id8)
}

#[cfg(test)]
mod leftover_tests {
    use super::storage_file_owner;

    #[test]
    fn storage_file_names_carry_their_snapshot() {
        assert_eq!(
            storage_file_owner("blksnap-0f1e2d3c-4.storage"),
            Some("0f1e2d3c")
        );
        assert_eq!(storage_file_owner("blksnap-0f1e2d3c-.storage"), None);
        assert_eq!(storage_file_owner("blksnap-0f1e2d3-4.storage"), None);
        assert_eq!(storage_file_owner("data.img"), None);
        assert_eq!(storage_file_owner("blksnap-0f1e2d3c-4.storage.tmp"), None);
    }
}
