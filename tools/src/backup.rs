// SPDX-License-Identifier: GPL-2.0

//! Full and incremental backups: snapshot the devices, copy each image (or
//! only the blocks the CBT marks as changed) to a target, keep the snapshot
//! supplied with storage meanwhile, and destroy it at the end whatever
//! happens.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::ctl::Control;
use crate::logic::cbt::changed_runs;
use crate::storage::{watch, StorageDir, WatchStats};
use crate::uapi::{BlkSnapDev, BlkSnapUuid};
use crate::util::{dev_label, dev_path, human_bytes, uuid_to_string};

/// What to back up and how.
pub struct Options {
    pub devices: Vec<BlkSnapDev>,
    pub targets: Vec<PathBuf>,
    pub storage_dir: PathBuf,
    pub storage_step: u64,
    pub storage_limit: u64,
    /// Incremental: blocks changed after this snapshot number, in this
    /// generation.
    pub since: Option<(u8, BlkSnapUuid)>,
}

/// The outcome for one device.
pub struct DeviceReport {
    pub dev: BlkSnapDev,
    pub target: PathBuf,
    pub capacity: u64,
    pub copied: u64,
    pub snap_number: u8,
    pub generation: BlkSnapUuid,
}

pub struct Report {
    pub snapshot: BlkSnapUuid,
    pub devices: Vec<DeviceReport>,
    pub storage_used: u64,
    pub low_space_events: u32,
    pub seconds: f64,
}

/// Destroys the snapshot and removes its storage files when dropped.
struct SnapshotGuard<'a> {
    ctl: &'a Control,
    id: BlkSnapUuid,
    sd: StorageDir,
    log: &'a dyn Fn(&str),
}

impl Drop for SnapshotGuard<'_> {
    fn drop(&mut self) {
        match self.ctl.snapshot_destroy(&self.id) {
            Ok(()) => (self.log)(&format!("snapshot {} destroyed", uuid_to_string(&self.id))),
            Err(e) => (self.log)(&format!("WARNING: destroying snapshot {}: {e}", uuid_to_string(&self.id))),
        }
        self.sd.remove_files();
    }
}

/// Progress of a copy: a bar on a terminal, a line every few seconds
/// otherwise.
struct Progress<'a> {
    what: String,
    total: u64,
    done: u64,
    start: Instant,
    last: Instant,
    tty: bool,
    log: &'a dyn Fn(&str),
}

impl<'a> Progress<'a> {
    fn new(what: String, total: u64, log: &'a dyn Fn(&str)) -> Self {
        let now = Instant::now();
        Self { what, total, done: 0, start: now, last: now, tty: std::io::stderr().is_terminal(), log }
    }

    fn add(&mut self, n: u64) {
        self.done += n;
        let now = Instant::now();
        let every = if self.tty { Duration::from_millis(200) } else { Duration::from_secs(5) };
        if now.duration_since(self.last) >= every {
            self.last = now;
            self.show(false);
        }
    }

    fn show(&self, end: bool) {
        let secs = self.start.elapsed().as_secs_f64().max(0.001);
        let rate = self.done as f64 / secs;
        let pct = if self.total == 0 { 100.0 } else { self.done as f64 * 100.0 / self.total as f64 };
        let eta = if rate > 0.0 { (self.total.saturating_sub(self.done)) as f64 / rate } else { 0.0 };
        let line = format!(
            "{}: {:5.1}% {} / {}, {}/s, ETA {:.0}s",
            self.what, pct, human_bytes(self.done), human_bytes(self.total), human_bytes(rate as u64), eta
        );
        if self.tty {
            let width = 24;
            let filled = ((pct / 100.0) * width as f64) as usize;
            let bar: String = (0..width).map(|i| if i < filled { '#' } else { '.' }).collect();
            eprint!("\r[{bar}] {line}   ");
            if end {
                eprintln!();
            }
        } else {
            (self.log)(&line);
        }
    }
}

/// Copies `[off, off + len)` of `src` to the same place in `dst`.
fn copy_range(src: &File, dst: &File, off: u64, len: u64, buf: &mut [u8], p: &mut Progress, stop: &AtomicBool) -> Result<(), String> {
    let mut done = 0;
    while done < len {
        if stop.load(Ordering::Relaxed) {
            return Err("interrupted".into());
        }
        let n = (len - done).min(buf.len() as u64) as usize;
        src.read_exact_at(&mut buf[..n], off + done).map_err(|e| format!("reading the image at {}: {e}", off + done))?;
        dst.write_all_at(&buf[..n], off + done).map_err(|e| format!("writing the target at {}: {e}", off + done))?;
        done += n as u64;
        p.add(n as u64);
    }
    Ok(())
}

fn device_size(f: &mut File) -> Result<u64, String> {
    f.seek(SeekFrom::End(0)).map_err(|e| e.to_string())
}

/// Runs a backup; `stop` is set by Ctrl-C.
pub fn run(ctl: &Control, opts: &Options, stop: &AtomicBool, log: &(dyn Fn(&str) + Sync)) -> Result<Report, String> {
    if opts.devices.len() != opts.targets.len() {
        return Err("give one --target for each device".into());
    }
    let start = Instant::now();
    let id = ctl.snapshot_create(&opts.devices).map_err(|e| e.to_string())?;
    log(&format!("snapshot {} created for {} device(s)", uuid_to_string(&id), opts.devices.len()));
    let mut guard = SnapshotGuard {
        ctl,
        id,
        sd: StorageDir::new(opts.storage_dir.clone(), opts.storage_step, opts.storage_limit),
        log,
    };
    // The module asks for storage at once; the first file answers it.
    let _ = ctl.wait_event(&id, 1000);
    guard.sd.add(ctl, &id, log)?;
    ctl.snapshot_take(&id).map_err(|e| e.to_string())?;
    log(&format!("snapshot {} taken", uuid_to_string(&id)));

    let trackers = ctl.tracker_list().map_err(|e| e.to_string())?;
    let images = ctl.snapshot_images(&id).map_err(|e| e.to_string())?;
    let mut plan = Vec::new();
    for (dev, target) in opts.devices.iter().zip(&opts.targets) {
        let info = trackers.iter().find(|t| t.dev_id == *dev).ok_or("a device has no tracker")?;
        let img = images.iter().find(|i| i.orig_dev_id == *dev).ok_or("a device has no image")?;
        let path = dev_path(&img.image_dev_id).ok_or("the image has no /dev node")?;
        if let Some((_, generation)) = &opts.since {
            if info.generation_id != *generation {
                return Err(format!(
                    "{}: the change tracking generation is {} now, not {}: the earlier copy cannot be updated, make a full backup",
                    dev_label(dev), uuid_to_string(&info.generation_id), uuid_to_string(generation)
                ));
            }
        }
        plan.push((*dev, target.clone(), path, *info));
    }

    let watcher_stop = AtomicBool::new(false);
    let mut stats = WatchStats::default();
    let sd = &mut guard.sd;
    let result = std::thread::scope(|s| {
        let w = s.spawn(|| watch(ctl, &id, sd, &watcher_stop, log, &mut stats));
        let r = copy_all(ctl, opts, &plan, stop, log);
        watcher_stop.store(true, Ordering::Relaxed);
        let _ = w.join();
        r
    });
    let devices = result?;
    if !stats.corrupted.is_empty() {
        return Err(format!("the snapshot was corrupted during the copy: {}", stats.corrupted.join("; ")));
    }
    Ok(Report {
        snapshot: id,
        devices,
        storage_used: guard.sd.used(),
        low_space_events: stats.low_space_events,
        seconds: start.elapsed().as_secs_f64(),
    })
}

fn copy_all(
    ctl: &Control,
    opts: &Options,
    plan: &[(BlkSnapDev, PathBuf, PathBuf, crate::uapi::BlkSnapCbtInfo)],
    stop: &AtomicBool,
    log: &dyn Fn(&str),
) -> Result<Vec<DeviceReport>, String> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    for (dev, target, image, info) in plan {
        let mut src = File::open(image).map_err(|e| format!("{}: {e}", image.display()))?;
        let capacity = device_size(&mut src)?;
        let copied = match &opts.since {
            None => {
                let dst = OpenOptions::new().write(true).create(true).truncate(false).open(target)
                    .map_err(|e| format!("{}: {e}", target.display()))?;
                if dst.metadata().map(|m| m.file_type().is_file()).unwrap_or(false) {
                    dst.set_len(capacity).map_err(|e| e.to_string())?;
                }
                let mut p = Progress::new(format!("full copy of {}", dev_label(dev)), capacity, log);
                copy_range(&src, &dst, 0, capacity, &mut buf, &mut p, stop)?;
                p.show(true);
                dst.sync_all().map_err(|e| e.to_string())?;
                capacity
            }
            Some((since, _)) => {
                let dst = OpenOptions::new().write(true).open(target).map_err(|e| {
                    format!("{}: {e}: an incremental backup updates the copy made earlier", target.display())
                })?;
                let map = ctl.read_cbt_map(*dev, info.blk_count).map_err(|e| e.to_string())?;
                let bs = u64::from(info.blk_size);
                let runs: Vec<(u64, u64)> = changed_runs(&map, *since)
                    .map(|(first, n)| {
                        let off = first as u64 * bs;
                        (off, (n as u64 * bs).min(capacity.saturating_sub(off)))
                    })
                    .collect();
                let total: u64 = runs.iter().map(|r| r.1).sum();
                log(&format!(
                    "{}: {} changed block(s) of {} since snapshot {}: {} to copy",
                    dev_label(dev), runs.iter().map(|r| r.1.div_ceil(bs)).sum::<u64>(), human_bytes(bs), since, human_bytes(total)
                ));
                let mut p = Progress::new(format!("incremental copy of {}", dev_label(dev)), total, log);
                for (off, len) in runs {
                    copy_range(&src, &dst, off, len, &mut buf, &mut p, stop)?;
                }
                p.show(true);
                dst.sync_all().map_err(|e| e.to_string())?;
                total
            }
        };
        out.push(DeviceReport {
            dev: *dev,
            target: target.clone(),
            capacity,
            copied,
            snap_number: info.snap_number,
            generation: info.generation_id,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_range_copies_in_place() {
        let dir = std::env::temp_dir();
        let a = dir.join(format!("bs-src-{}", std::process::id()));
        let b = dir.join(format!("bs-dst-{}", std::process::id()));
        std::fs::write(&a, (0..10000u32).map(|i| i as u8).collect::<Vec<_>>()).unwrap();
        std::fs::write(&b, vec![0u8; 10000]).unwrap();
        let src = File::open(&a).unwrap();
        let dst = OpenOptions::new().write(true).open(&b).unwrap();
        let log = |_: &str| {};
        let mut p = Progress::new("t".into(), 100, &log);
        let stop = AtomicBool::new(false);
        copy_range(&src, &dst, 1000, 100, &mut [0u8; 64], &mut p, &stop).unwrap();
        let got = std::fs::read(&b).unwrap();
        assert!(got[..1000].iter().all(|&x| x == 0));
        assert_eq!(&got[1000..1100], &(1000..1100u32).map(|i| i as u8).collect::<Vec<_>>()[..]);
        assert!(got[1100..].iter().all(|&x| x == 0));
        stop.store(true, Ordering::Relaxed);
        assert!(copy_range(&src, &dst, 0, 10, &mut [0u8; 64], &mut p, &stop).is_err());
        std::fs::remove_file(a).unwrap();
        std::fs::remove_file(b).unwrap();
    }
}
