// SPDX-License-Identifier: GPL-2.0

//! Keeping a snapshot supplied with storage: files allocated in a directory
//! as the snapshot consumes them, up to a limit, and the event loop that
//! watches the snapshot.
//!
//! The module asks for storage with `low_free_space` events, but it asks
//! after every append while free space is below half of its
//! `diff_storage_minimum` (1 GiB by default), so answering every event
//! would append the whole limit at once. Once the snapshot is taken, its
//! images show the storage appended and consumed in sysfs
//! (`/sys/block/<image>/blksnap/diff_storage_{total,used}`); the watch reads
//! them four times a second and appends when free storage falls below what
//! the snapshot consumes in two seconds (at least one step). Events only
//! wake it up early.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::ctl::{Control, SnapEvent};
use crate::fiemap;
use crate::uapi::BlkSnapUuid;
use crate::util::{dev_label, human_bytes, uuid_to_string};

/// Storage files of one snapshot in one directory.
pub struct StorageDir {
    dir: PathBuf,
    pub(crate) limit: u64,
    step: u64,
    appended: u64,
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
            appended: 0,
            files: Vec::new(),
            limit_reported: false,
        }
    }

    /// Bytes appended so far.
    pub fn appended(&self) -> u64 {
        self.appended
    }

    /// Storage files made so far.
    pub fn files(&self) -> usize {
        self.files.len()
    }

    /// Allocates one more file of the step size (less if the limit is
    /// near) for `id` and appends it; returns the bytes added.
    pub fn add(
        &mut self,
        ctl: &Control,
        id: &BlkSnapUuid,
        log: &dyn Fn(&str),
    ) -> Result<u64, String> {
        self.add_sized(ctl, id, self.step, log)
    }

    /// Allocates one more file of `size` bytes (rounded up to 4 KiB, less
    /// if the limit is near) for `id` and appends it; returns the bytes
    /// added.
    pub fn add_sized(
        &mut self,
        ctl: &Control,
        id: &BlkSnapUuid,
        size: u64,
        log: &dyn Fn(&str),
    ) -> Result<u64, String> {
        let left = self.limit.saturating_sub(self.appended);
        let size = size.max(4096).saturating_add(4095).min(left) & !4095;
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
        self.appended += size;
        log(&format!(
            "storage: added {} ({} extents on {}), {} of {} appended",
            human_bytes(size),
            sf.ranges.len(),
            dev_label(&sf.dev),
            human_bytes(self.appended),
            human_bytes(self.limit)
        ));
        Ok(size)
    }

    /// No storage beyond what is appended now: the watch appends nothing
    /// more (storage on a device of the snapshot, allocated before TAKE).
    pub fn fix_limit(&mut self) {
        self.limit = self.appended;
    }

    /// Removes the files (after the snapshot is gone).
    pub fn remove_files(&mut self) {
        for f in self.files.drain(..) {
            // Cleanup: a file removed already is what we want anyway.
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
    /// Storage the snapshot had consumed when last seen, in bytes.
    pub storage_used: Option<u64>,
}

/// Storage appended to a snapshot and consumed by it, in bytes, as its
/// images show them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub total: u64,
    pub used: u64,
}

/// Where a snapshot's storage use is shown: the sysfs directory of one of
/// its images (`None` before TAKE, when it has none).
pub fn usage_dir(ctl: &Control, id: &BlkSnapUuid) -> Option<PathBuf> {
    let images = ctl.snapshot_images(id).ok()?;
    let i = images.first()?;
    let dir = PathBuf::from(format!(
        "/sys/dev/block/{}:{}/blksnap",
        i.image_dev_id.mj, i.image_dev_id.mn
    ));
    dir.is_dir().then_some(dir)
}

/// Reads a snapshot's storage use from `dir` (see [`usage_dir`]).
pub fn read_usage(dir: &Path) -> Option<Usage> {
    let num = |name: &str| -> Option<u64> {
        std::fs::read_to_string(dir.join(name))
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()?
            .checked_mul(512)
    };
    Some(Usage {
        total: num("diff_storage_total")?,
        used: num("diff_storage_used")?,
    })
}

/// When to append storage, and how much: enough that free storage covers
/// what the snapshot consumes in [`Grower::AHEAD_SECS`] seconds at its
/// recent rate, and at least one step, in whole steps.
#[derive(Debug)]
pub struct Grower {
    step: u64,
    last: Option<(f64, u64)>,
    /// Consumption rate, bytes per second, smoothed.
    rate: f64,
}

impl Grower {
    /// Seconds of consumption that free storage should cover.
    pub const AHEAD_SECS: f64 = 2.0;
    /// Shortest time over which the rate is measured.
    pub const WINDOW_SECS: f64 = 1.0;

    pub fn new(step: u64) -> Self {
        Self {
            step: step.max(1 << 20),
            last: None,
            rate: 0.0,
        }
    }

    /// Bytes to append now, seeing `u` at `t` seconds: 0 while free
    /// storage covers the margin. The rate is measured over windows of at
    /// least [`Grower::WINDOW_SECS`], so that a look right after another
    /// (an event woke the watch) does not make a burst of a few chunks look
    /// like a flood.
    pub fn decide(&mut self, t: f64, u: Usage) -> u64 {
        match self.last {
            None => self.last = Some((t, u.used)),
            Some((t0, used0)) if t - t0 >= Self::WINDOW_SECS => {
                let r = u.used.saturating_sub(used0) as f64 / (t - t0);
                self.rate = (self.rate + r) / 2.0;
                self.last = Some((t, u.used));
            }
            Some(_) => {}
        }
        let margin = ((self.rate * Self::AHEAD_SECS) as u64).max(self.step);
        let free = u.total.saturating_sub(u.used);
        if free >= margin {
            return 0;
        }
        (margin - free).div_ceil(self.step) * self.step
    }
}

/// Keeps snapshot `id` supplied with storage, and reports what it sees,
/// until the snapshot goes or `stop` is set: appends as the snapshot
/// consumes storage (or a step per low_free_space event before it is
/// taken), and reports corrupted events loudly.
pub fn watch(
    ctl: &Control,
    id: &BlkSnapUuid,
    sd: &mut StorageDir,
    stop: &AtomicBool,
    log: &dyn Fn(&str),
    stats: &mut WatchStats,
) -> Result<WatchEnd, String> {
    let start = Instant::now();
    let mut grower = Grower::new(sd.step);
    let mut dir: Option<PathBuf> = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(WatchEnd::Stopped);
        }
        if dir.is_none() {
            dir = usage_dir(ctl, id);
        }
        let usage = dir.as_deref().and_then(read_usage);
        if let Some(u) = usage {
            stats.storage_used = Some(u.used);
            let want = grower.decide(start.elapsed().as_secs_f64(), u);
            if want > 0 {
                grow(ctl, id, sd, want, log);
            }
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
                // Before TAKE nothing shows consumption: a step answers.
                // After it, the next pass decides from what is consumed.
                if usage.is_none() {
                    grow(ctl, id, sd, sd.step, log);
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

/// Appends `want` bytes to `id` in one file, within the limit; says so once
/// when the limit stops it.
fn grow(ctl: &Control, id: &BlkSnapUuid, sd: &mut StorageDir, want: u64, log: &dyn Fn(&str)) {
    if sd.appended < sd.limit {
        if let Err(e) = sd.add_sized(ctl, id, want, log) {
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
mod grower_tests {
    use super::{Grower, Usage};

    const MIB: u64 = 1 << 20;

    fn u(total: u64, used: u64) -> Usage {
        Usage {
            total: total * MIB,
            used: used * MIB,
        }
    }

    #[test]
    fn nothing_while_a_step_is_free() {
        let mut g = Grower::new(16 * MIB);
        assert_eq!(g.decide(0.0, u(16, 0)), 0);
        assert_eq!(g.decide(10.0, u(32, 16)), 0);
    }

    #[test]
    fn one_step_when_free_falls_below_a_step() {
        let mut g = Grower::new(16 * MIB);
        assert_eq!(g.decide(0.0, u(16, 0)), 0);
        // 1 MiB consumed in 100 s: the rate is negligible.
        assert_eq!(g.decide(100.0, u(16, 1)), 16 * MIB);
    }

    #[test]
    fn fast_consumption_asks_for_two_seconds_of_it() {
        let mut g = Grower::new(16 * MIB);
        assert_eq!(g.decide(0.0, u(64, 0)), 0);
        // 200 MiB/s over a second, smoothed to 100 MiB/s; two seconds of it
        // are 200 MiB, of which 14 are free: 186, in whole steps.
        assert_eq!(g.decide(1.0, u(214, 200)), 192 * MIB);
    }

    #[test]
    fn a_burst_seen_twice_in_a_moment_is_not_a_flood() {
        let mut g = Grower::new(16 * MIB);
        assert_eq!(g.decide(0.0, u(16, 0)), 0);
        // 2 MiB consumed, seen 1 ms later: one step, not 4 GiB.
        assert_eq!(g.decide(0.001, u(16, 2)), 16 * MIB);
        assert_eq!(g.decide(0.002, u(32, 2)), 0);
    }

    #[test]
    fn steps_below_a_mebibyte_are_raised() {
        let mut g = Grower::new(4096);
        assert_eq!(g.decide(0.0, u(0, 0)), MIB);
    }
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
