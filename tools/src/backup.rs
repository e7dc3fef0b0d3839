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

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::ctl::Control;
use crate::logic::cbt::{changed_runs, runs_where};
use crate::manifest::{self, Manifest, Point, Run};
use crate::points::{retain, Points};
use crate::storage::{watch, StorageDir, WatchStats};
use crate::uapi::{BlkSnapDev, BlkSnapUuid};
use crate::util::{
    dev_label, dev_path, dev_to_string, dir_device, human_bytes, parse_uuid, uuid_to_string,
};

/// What to back up and how.
pub struct Options {
    pub devices: Vec<BlkSnapDev>,
    pub targets: Vec<PathBuf>,
    pub storage_dir: PathBuf,
    pub storage_step: u64,
    pub storage_limit: u64,
    /// Incremental: for each device, in order, the blocks changed after
    /// this snapshot number, in this generation. Each device has a chain of
    /// its own. Empty: each device continues the chain its target's
    /// manifest records, or gets a full copy if it has none.
    pub since: Vec<(u8, BlkSnapUuid)>,
    /// A full copy of every device, whatever the manifests say.
    pub full: bool,
    /// Copy nothing: compare each target with a fresh snapshot instead.
    pub verify: Option<Verify>,
    /// Restore points each file target keeps after a good run (the newest
    /// this many); `None`: all.
    pub keep: Option<u32>,
}

/// What `--verify` compares of a target with a fresh snapshot's image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// The blocks the last run wrote that have not changed since.
    LastRun,
    /// Every block that has not changed since the last run.
    Everything,
}

/// Why an incremental backup cannot update the earlier copy: the next one
/// must be a full backup. Never "copy nothing and succeed".
#[derive(Debug, PartialEq, Eq)]
pub struct FullNeeded(pub String);

impl std::fmt::Display for FullNeeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a full backup is needed: {}", self.0)
    }
}

/// What an incremental needs of a device's change tracking, from
/// TRACKER_COLLECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chain {
    pub generation: BlkSnapUuid,
    /// The last snapshot taken (`snap_number`).
    pub number: u8,
    /// Bytes.
    pub capacity: u64,
}

impl Chain {
    pub fn of(info: &crate::uapi::BlkSnapCbtInfo) -> Self {
        Self {
            generation: info.generation_id,
            number: info.snap_number,
            capacity: info.device_capacity,
        }
    }
}

/// Checks, with the tracker as it was just before TAKE (`before`) and just
/// after (`after`), that an incremental copy of the blocks changed after
/// snapshot `since` of generation `generation` into a target of
/// `target_len` bytes gives the device as it is at TAKE.
///
/// The map TAKE hands over is `before`'s: when TAKE wraps the numbers
/// (previous number 255), a new generation starts for the writes after it,
/// yet the map of this snapshot is still the old generation's.
pub fn check_incremental(
    since: u8,
    generation: &BlkSnapUuid,
    before: &Chain,
    after: &Chain,
    target_len: Option<u64>,
) -> Result<(), FullNeeded> {
    if before.generation != *generation {
        return Err(FullNeeded(format!(
            "the change tracking generation is {}, not {} (tracking restarted: module reload, device resize or removal)",
            uuid_to_string(&before.generation),
            uuid_to_string(generation)
        )));
    }
    if since > before.number {
        return Err(FullNeeded(format!(
            "--since {since} is above the last snapshot taken of the device ({})",
            before.number
        )));
    }
    if after.capacity != before.capacity {
        return Err(FullNeeded(format!(
            "the device changed size ({} to {} bytes)",
            before.capacity, after.capacity
        )));
    }
    let wrapped = after.generation != before.generation && after.number == u8::MAX;
    if after.generation != before.generation && !wrapped {
        return Err(FullNeeded(
            "change tracking restarted during the snapshot".into(),
        ));
    }
    if let Some(len) = target_len {
        if len != after.capacity {
            return Err(FullNeeded(format!(
                "the target holds {len} bytes, the device {}",
                after.capacity
            )));
        }
    }
    Ok(())
}

/// What the next incremental after this snapshot needs: changes after this
/// snapshot's number, in the generation now current. When this TAKE wrapped
/// the numbers, the new generation's map started empty, so every block
/// written since holds a number above 0.
pub fn next_since(before: &Chain, after: &Chain) -> (u8, BlkSnapUuid) {
    if after.generation != before.generation {
        (0, after.generation)
    } else {
        (after.number, after.generation)
    }
}

/// The outcome for one device.
pub struct DeviceReport {
    pub dev: BlkSnapDev,
    pub target: PathBuf,
    pub capacity: u64,
    /// Bytes of the image copied (read), whether written or left as holes.
    pub copied: u64,
    /// Bytes written to the target.
    pub written: u64,
    /// Bytes of zeros left as holes (a full copy into a file).
    pub skipped: u64,
    /// The incremental this run continued, if any.
    pub since: Option<u8>,
    /// The manifest written beside the target (none for a device).
    pub manifest: Option<PathBuf>,
    /// Verify: bytes compared, and how many of them differ.
    pub compared: u64,
    pub mismatched: u64,
    /// What the next incremental of this device gives as `--since` and
    /// `--generation`.
    pub next_since: u8,
    pub generation: BlkSnapUuid,
    /// The restore point this run made (file targets).
    pub point: Option<PointRun>,
}

/// The restore point a run made: its number, and the point before it
/// (with the bytes of its delta) if the target's history goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PointRun {
    pub number: u32,
    pub prev: Option<(u32, u64)>,
}

pub struct Report {
    pub snapshot: BlkSnapUuid,
    pub devices: Vec<DeviceReport>,
    /// Storage appended to the snapshot, in bytes, and in how many files.
    pub storage_appended: u64,
    pub storage_files: usize,
    /// Storage the snapshot consumed, in bytes (`None` if its images
    /// did not show it).
    pub storage_used: Option<u64>,
    pub low_space_events: u32,
    pub seconds: f64,
}

/// Destroys the snapshot and removes its storage files when dropped, then
/// the run's record (which a later run reads if this one is killed).
struct SnapshotGuard<'a> {
    ctl: &'a Control,
    id: BlkSnapUuid,
    _record: crate::runs::RunRecord,
    sd: StorageDir,
    log: &'a dyn Fn(&str),
}

impl Drop for SnapshotGuard<'_> {
    fn drop(&mut self) {
        match self.ctl.snapshot_destroy(&self.id) {
            Ok(()) => (self.log)(&format!("snapshot {} destroyed", uuid_to_string(&self.id))),
            Err(e) => (self.log)(&format!(
                "WARNING: destroying snapshot {}: {e}",
                uuid_to_string(&self.id)
            )),
        }
        self.sd.remove_files();
    }
}

/// Removes the storage files in `dir` of the snapshots `ids` (destroyed).
fn remove_storage_of(dir: &std::path::Path, ids: &[BlkSnapUuid], log: &dyn Fn(&str)) {
    let Ok(files) = crate::storage::leftovers(dir) else {
        return;
    };
    for (path, id8) in files {
        if ids.iter().any(|id| uuid_to_string(id).starts_with(&id8)) {
            match std::fs::remove_file(&path) {
                Ok(()) => log(&format!("removed {}", path.display())),
                Err(e) => log(&format!("WARNING: {}: {e}", path.display())),
            }
        }
    }
}

/// Progress of a copy: an `indicatif` bar on a terminal; otherwise a line
/// every few seconds through the log, so that a log file or a pipe gets a
/// readable record rather than redraws.
struct Progress<'a> {
    what: String,
    bar: ProgressBar,
    last: Instant,
    tty: bool,
    log: &'a dyn Fn(&str),
}

/// How often a copy logs its progress when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

impl<'a> Progress<'a> {
    fn new(what: String, total: u64, log: &'a dyn Fn(&str)) -> Self {
        let tty = std::io::stderr().is_terminal();
        let bar = if tty {
            ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        bar.set_length(total);
        // The template is fixed, so it always parses; fall back to the
        // default style rather than fail a backup over a progress bar.
        if let Ok(style) = ProgressStyle::with_template(
            "[{bar:24}] {msg}: {percent:>3}% {bytes} / {total_bytes}, {bytes_per_sec}, ETA {eta}",
        ) {
            bar.set_style(style.progress_chars("#>."));
        }
        bar.set_message(what.clone());
        Self {
            what,
            bar,
            last: Instant::now(),
            tty,
            log,
        }
    }

    fn add(&mut self, n: u64) {
        self.bar.inc(n);
        if !self.tty && self.last.elapsed() >= LOG_EVERY {
            self.last = Instant::now();
            self.show(false);
        }
    }

    fn show(&self, end: bool) {
        if self.tty {
            if end {
                self.bar.finish();
            }
            return;
        }
        let done = self.bar.position();
        let total = self.bar.length().unwrap_or(0);
        let secs = self.bar.elapsed().as_secs_f64().max(0.001);
        let rate = done as f64 / secs;
        let pct = if total == 0 {
            100.0
        } else {
            done as f64 * 100.0 / total as f64
        };
        let eta = if rate > 0.0 {
            total.saturating_sub(done) as f64 / rate
        } else {
            0.0
        };
        (self.log)(&format!(
            "{}: {:5.1}% {} / {}, {}/s, ETA {:.0}s",
            self.what,
            pct,
            human_bytes(done),
            human_bytes(total),
            human_bytes(rate as u64),
            eta
        ));
    }
}

/// Bytes a copy wrote, and left as holes.
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
struct Written {
    written: u64,
    skipped: u64,
}

/// Where copied data goes: written at an offset of the target, directly or
/// through its restore points; returns the bytes written.
type Sink<'a> = dyn FnMut(u64, &[u8]) -> Result<u64, String> + 'a;

/// Writes straight to `dst`.
fn direct(dst: &File) -> impl FnMut(u64, &[u8]) -> Result<u64, String> + '_ {
    move |off, data| {
        dst.write_all_at(data, off)
            .map_err(|e| format!("writing the target at {off}: {e}"))?;
        Ok(data.len() as u64)
    }
}

/// Copies `[off, off + len)` of `src` to the same place of the target
/// (`dst`). With `holes`, blocks of zeros are not written: the target is
/// a file whose range is a hole already.
#[allow(clippy::too_many_arguments)]
fn copy_range(
    src: &File,
    dst: &mut Sink<'_>,
    off: u64,
    len: u64,
    buf: &mut [u8],
    holes: bool,
    p: &mut Progress,
    stop: &AtomicBool,
) -> Result<Written, String> {
    let mut done = 0;
    let mut w = Written::default();
    while done < len {
        if stop.load(Ordering::Relaxed) {
            return Err("interrupted".into());
        }
        let n = (len - done).min(buf.len() as u64) as usize;
        src.read_exact_at(&mut buf[..n], off + done)
            .map_err(|e| format!("reading the image at {}: {e}", off + done))?;
        if holes && buf[..n].iter().all(|&b| b == 0) {
            w.skipped += n as u64;
        } else {
            w.written += dst(off + done, &buf[..n])?;
        }
        done += n as u64;
        p.add(n as u64);
    }
    Ok(w)
}

fn device_size(f: &mut File) -> Result<u64, String> {
    f.seek(SeekFrom::End(0)).map_err(|e| e.to_string())
}

/// Runs a backup; `stop` is set by Ctrl-C.
pub fn run(
    ctl: &Control,
    opts: &Options,
    stop: &AtomicBool,
    log: &(dyn Fn(&str) + Sync),
) -> Result<Report, String> {
    if opts.devices.len() != opts.targets.len() {
        return Err("give one --target for each device".into());
    }
    if !opts.since.is_empty() && opts.since.len() != opts.devices.len() {
        return Err("an incremental backup needs one --since and one --generation for each device, in order".into());
    }
    // One run at a time per target, held until this one ends.
    let _locks = opts
        .targets
        .iter()
        .map(|t| manifest::lock(t, opts.verify.is_none()))
        .collect::<Result<Vec<_>, _>>()?;
    // Each device's chain: given, or from its target's manifest.
    let mut chains = Vec::new();
    let mut last_since = Vec::new();
    for (i, (dev, target)) in opts.devices.iter().zip(&opts.targets).enumerate() {
        let recorded = match opts.since.get(i) {
            Some(s) => Some((*s, None)),
            None if opts.full => None,
            None => from_manifest(dev, target)?,
        };
        chains.push(recorded.map(|r| r.0));
        if opts.verify.is_some() {
            // --verify takes neither --since nor --full: the chain is the
            // manifest's, with the last run's own start (a full run wrote
            // every block).
            let Some((_, last)) = recorded else {
                return Err(format!(
                    "{}: no manifest: --verify compares a target with what its manifest records",
                    target.display()
                ));
            };
            last_since.push(last);
        }
    }
    // A killed backup's snapshot would keep the devices busy: gone now
    // if its record says so; then this run's own record.
    let reaped = crate::runs::reap(ctl, &opts.storage_dir, log)?;
    remove_storage_of(&opts.storage_dir, &reaped, log);
    let run_record = crate::runs::RunRecord::begin(&opts.storage_dir)?;
    let start = Instant::now();
    let id = ctl
        .snapshot_create(&opts.devices)
        .map_err(|e| e.to_string())?;
    // First of all: a kill from here on leaves a record that names it.
    let named = run_record.created(&id);
    let mut guard = SnapshotGuard {
        ctl,
        id,
        _record: run_record,
        sd: StorageDir::new(
            opts.storage_dir.clone(),
            opts.storage_step,
            opts.storage_limit,
        ),
        log,
    };
    named?;
    log(&format!(
        "snapshot {} created for {} device(s)",
        uuid_to_string(&id),
        opts.devices.len()
    ));
    // The module asks for storage at once; the first file answers it. No
    // event within the second is fine too: the files are added either way.
    let _ = ctl.wait_event(&id, 1000);
    match storage_reaches(&opts.storage_dir, &opts.devices) {
        None => {
            guard.sd.add(ctl, &id, log)?;
        }
        Some((on, orig)) => {
            // Storage added after TAKE on a device of the snapshot could
            // get the blocks of a file deleted since, which the image must
            // still show (the module refuses it): all of it comes now.
            let size = up_front_storage(&opts.storage_dir, opts.storage_limit);
            log(&format!(
                "storage: {} is on {}, which reaches {} of the snapshot: all storage \
                 ({}) is allocated before TAKE, none after",
                opts.storage_dir.display(),
                dev_label(&on),
                dev_label(&orig),
                human_bytes(size)
            ));
            guard.sd.add_sized(ctl, &id, size, log)?;
            guard.sd.fix_limit();
        }
    }
    // The chain of each device just before TAKE and just after: what the
    // snapshot's map continues, and what the next incremental continues.
    let before = ctl.tracker_list().map_err(|e| e.to_string())?;
    ctl.snapshot_take(&id).map_err(|e| e.to_string())?;
    log(&format!("snapshot {} taken", uuid_to_string(&id)));

    let trackers = ctl.tracker_list().map_err(|e| e.to_string())?;
    let images = ctl.snapshot_images(&id).map_err(|e| e.to_string())?;
    let mut plan = Vec::new();
    for (i, (dev, target)) in opts.devices.iter().zip(&opts.targets).enumerate() {
        let info = trackers
            .iter()
            .find(|t| t.dev_id == *dev)
            .ok_or("a device has no tracker")?;
        let was = before
            .iter()
            .find(|t| t.dev_id == *dev)
            .ok_or("a device has no tracker")?;
        let img = images
            .iter()
            .find(|i| i.orig_dev_id == *dev)
            .ok_or("a device has no image")?;
        let path = dev_path(&img.image_dev_id).ok_or("the image has no /dev node")?;
        let (before, after) = (Chain::of(was), Chain::of(info));
        let since = chains.get(i).copied().flatten();
        if let Some((since, generation)) = &since {
            let target_len = target_size(target);
            check_incremental(*since, generation, &before, &after, target_len).map_err(|e| {
                // The store's attach says why tracking began afresh.
                let why = ctl
                    .tracker_persist_status(*dev)
                    .ok()
                    .and_then(|st| crate::persist::afresh_reason(&st, &before.generation))
                    .map_or(String::new(), |r| format!("; at the store's attach, {r}"));
                format!("{}: {e}{why}", dev_label(dev))
            })?;
        }
        plan.push(Planned {
            dev: *dev,
            target: target.clone(),
            image: path,
            info: *info,
            since,
            next: next_since(&before, &after),
        });
    }

    let watcher_stop = AtomicBool::new(false);
    let mut stats = WatchStats::default();
    let sd = &mut guard.sd;
    let result = std::thread::scope(|s| {
        let w = s.spawn(|| watch(ctl, &id, sd, &watcher_stop, log, &mut stats));
        let r = match opts.verify {
            None => copy_all(ctl, &plan, stop, log),
            Some(v) => compare_all(ctl, &plan, v, &last_since, stop, log),
        };
        watcher_stop.store(true, Ordering::Relaxed);
        // The watcher reports what it saw through `log` and the events;
        // a panic in it has nothing left to tell the backup.
        let _ = w.join();
        r
    });
    // A corrupted image fails its reads (EIO) as well as raising an event,
    // in whichever order: the event decides, and one still queued when the
    // copy failed is read now.
    if result.is_err() && stats.corrupted.is_empty() {
        while let Ok(Some(ev)) = ctl.wait_event(&id, 0) {
            if let crate::ctl::SnapEvent::Corrupted { dev, errno, .. } = ev {
                stats.corrupted.push(format!(
                    "the snapshot image of {} is CORRUPTED ({})",
                    dev_label(&dev),
                    crate::ctl::errno_name(errno)
                ));
            }
        }
    }
    if !stats.corrupted.is_empty() {
        return Err(format!(
            "the snapshot was corrupted during the copy: {}",
            stats.corrupted.join("; ")
        ));
    }
    let mut devices = result?;
    let storage_used = crate::storage::usage_dir(ctl, &id)
        .as_deref()
        .and_then(crate::storage::read_usage)
        .map(|u| u.used)
        .or(stats.storage_used);
    // Only now, with every copy whole, do the manifests move on.
    if opts.verify.is_none() {
        for d in devices.iter_mut() {
            let store = ctl
                .tracker_persist_status(d.dev)
                .ok()
                .filter(|s| s.flags & crate::uapi::BLK_SNAP_PERSIST_STATUS_STORE != 0)
                .map(|s| manifest::RunStore {
                    reset: s.reset,
                    checkpoint: s.checkpoint,
                });
            d.manifest = record(d, opts.keep, store)?;
        }
    }
    Ok(Report {
        snapshot: id,
        devices,
        storage_appended: guard.sd.appended(),
        storage_files: guard.sd.files(),
        storage_used,
        low_space_events: stats.low_space_events,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Where a chain stands: changes after this snapshot number, in this
/// generation.
type Link = (u8, BlkSnapUuid);

/// The chain that `target`'s manifest records for `dev`: `None` without a
/// manifest (a full copy); a full backup is needed if the target holds a
/// copy of another device.
/// Also returns the last run's own start (`None`: it was a full copy).
fn from_manifest(
    dev: &BlkSnapDev,
    target: &std::path::Path,
) -> Result<Option<(Link, Option<u8>)>, String> {
    let Some(m) = manifest::load(target)? else {
        return Ok(None);
    };
    if m.device != dev_to_string(dev) {
        return Err(format!(
            "{}: {}",
            target.display(),
            FullNeeded(format!(
                "its manifest says it is a copy of {}, not {} (give --full to overwrite it)",
                m.device,
                dev_to_string(dev)
            ))
        ));
    }
    let generation = parse_uuid(&m.generation).map_err(|e| format!("{}: {e}", target.display()))?;
    let last = m.runs.last().and_then(|r| r.since);
    Ok(Some(((m.next_since, generation), last)))
}

/// Writes the manifest of a device's target after a good run, with the
/// device's CBT store if it has one; returns its path (none for a device
/// target).
fn record(
    d: &DeviceReport,
    keep: Option<u32>,
    store: Option<manifest::RunStore>,
) -> Result<Option<PathBuf>, String> {
    let Some(path) = manifest::path_for(&d.target) else {
        return Ok(None);
    };
    let old = manifest::load(&d.target)?;
    let kind = if d.since.is_some() {
        "incremental"
    } else {
        "full"
    };
    // An incremental adds a run to the chain; a full copy starts one.
    let mut runs = match (d.since, &old) {
        (Some(_), Some(m)) => m.runs.clone(),
        _ => Vec::new(),
    };
    runs.push(Run {
        time: manifest::now(),
        kind: kind.into(),
        since: d.since,
        read: d.copied,
        written: d.written,
        skipped: d.skipped,
        store,
    });
    // The points go on if this run saved the one before into a delta.
    let mut points = match (d.point.and_then(|p| p.prev), &old) {
        (Some(_), Some(m)) if !m.points.is_empty() => m.points.clone(),
        // The first run with points over an older target: what it held
        // was point 1.
        (Some(_), Some(m)) => vec![Point {
            number: 1,
            time: m.runs.last().map_or(0, |r| r.time),
            run: m.runs.last().map_or("full".into(), |r| r.kind.clone()),
            generation: m.generation.clone(),
            snapshot: m.next_since,
            bytes: 0,
        }],
        _ => Vec::new(),
    };
    let mut dropped = Vec::new();
    if let Some(pr) = d.point {
        if let (Some((prev, bytes)), Some(last)) = (pr.prev, points.last_mut()) {
            if last.number == prev {
                last.bytes = bytes;
            }
        }
        points.push(Point {
            number: pr.number,
            time: manifest::now(),
            run: kind.into(),
            generation: uuid_to_string(&d.generation),
            snapshot: d.next_since,
            bytes: 0,
        });
        dropped = retain(&mut points, keep);
    }
    let m = Manifest {
        format: 1,
        device: dev_to_string(&d.dev),
        capacity: d.capacity,
        generation: uuid_to_string(&d.generation),
        next_since: d.next_since,
        runs,
        points,
    };
    manifest::store(&d.target, &m)?;
    // Only once the manifest no longer names them.
    let pts = Points::new(&d.target, d.capacity);
    for n in dropped {
        pts.drop_point(n)?;
    }
    Ok(Some(path))
}

/// Runs of map blocks of `bs` bytes as byte ranges `(offset, length)` of a
/// device of `capacity` bytes (its last block may be short).
fn byte_runs(
    runs: impl Iterator<Item = (usize, usize)>,
    bs: u64,
    capacity: u64,
) -> Vec<(u64, u64)> {
    runs.map(|(first, n)| {
        let off = first as u64 * bs;
        (off, (n as u64 * bs).min(capacity.saturating_sub(off)))
    })
    .collect()
}

/// The size of an existing target (a file or a device), if it can be read.
fn target_size(path: &std::path::Path) -> Option<u64> {
    let mut f = File::open(path).ok()?;
    device_size(&mut f).ok()
}

/// One device of a backup.
struct Planned {
    dev: BlkSnapDev,
    target: PathBuf,
    image: PathBuf,
    /// Its tracker after TAKE.
    info: crate::uapi::BlkSnapCbtInfo,
    /// Incremental: what it continues; `None`: a full copy.
    since: Option<(u8, BlkSnapUuid)>,
    /// What the next incremental continues.
    next: (u8, BlkSnapUuid),
}

fn copy_all(
    ctl: &Control,
    plan: &[Planned],
    stop: &AtomicBool,
    log: &dyn Fn(&str),
) -> Result<Vec<DeviceReport>, String> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    for Planned {
        dev,
        target,
        image,
        info,
        since,
        next,
    } in plan
    {
        let mut src = File::open(image).map_err(|e| format!("{}: {e}", image.display()))?;
        let capacity = device_size(&mut src)?;
        // A file target keeps restore points (see `points.rs`).
        let kept = kept_points(target, capacity)?;
        // A full copy keeps the history only over a whole earlier copy.
        let history = kept.as_ref().filter(|k| {
            since.is_some() || (!k.is_empty() && target_size(target) == Some(capacity))
        });
        let mut point = None;
        let (copied, w) = match (since, history) {
            (None, None) => {
                let existed = target.exists();
                let dst = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(target)
                    .map_err(|e| format!("{}: {e}", target.display()))?;
                // A file starts over as one hole of the device's size, so
                // that runs of zeros stay holes (a sparse target).
                let file = dst
                    .metadata()
                    .map(|m| m.file_type().is_file())
                    .unwrap_or(false);
                if file {
                    dst.set_len(0).map_err(|e| e.to_string())?;
                    dst.set_len(capacity).map_err(|e| e.to_string())?;
                }
                let mut p =
                    Progress::new(format!("full copy of {}", dev_label(dev)), capacity, log);
                let w = copy_range(
                    &src,
                    &mut direct(&dst),
                    0,
                    capacity,
                    &mut buf,
                    file,
                    &mut p,
                    stop,
                )?;
                p.show(true);
                dst.sync_all().map_err(|e| e.to_string())?;
                if !existed {
                    manifest::sync_dir(target)?;
                }
                if kept.is_some() {
                    // A fresh history: this copy is its first point.
                    let pts = Points::new(target, capacity);
                    pts.reset()?;
                    pts.rebuild_sums()?;
                    point = Some(PointRun {
                        number: 1,
                        prev: None,
                    });
                }
                (capacity, w)
            }
            (Some(_), None) | (_, Some(_)) => {
                let dst = OpenOptions::new().write(true).open(target).map_err(|e| {
                    format!(
                        "{}: {e}: an incremental backup updates the copy made earlier",
                        target.display()
                    )
                })?;
                let (runs, total) = match since {
                    Some((since, _)) => {
                        let map = ctl
                            .read_cbt_map(*dev, info.blk_count)
                            .map_err(|e| e.to_string())?;
                        let bs = u64::from(info.blk_size);
                        let runs = byte_runs(changed_runs(&map, *since), bs, capacity);
                        let total: u64 = runs.iter().map(|r| r.1).sum();
                        log(&format!(
                            "{}: {} changed block(s) of {} since snapshot {}: {} to copy",
                            dev_label(dev),
                            runs.iter().map(|r| r.1.div_ceil(bs)).sum::<u64>(),
                            human_bytes(bs),
                            since,
                            human_bytes(total)
                        ));
                        (runs, total)
                    }
                    // A full copy over a target with points: every block
                    // is compared, only the changed ones are written.
                    None => (vec![(0, capacity)], capacity),
                };
                let kind = if since.is_some() {
                    "incremental"
                } else {
                    "full"
                };
                let mut p = Progress::new(format!("{kind} copy of {}", dev_label(dev)), total, log);
                let mut w = Written::default();
                match history {
                    None => {
                        let mut sink = direct(&dst);
                        for (off, len) in runs {
                            let r = copy_range(
                                &src, &mut sink, off, len, &mut buf, false, &mut p, stop,
                            )?;
                            w.written += r.written;
                        }
                        dst.sync_all().map_err(|e| e.to_string())?;
                    }
                    Some(k) => {
                        let pts = Points::new(target, capacity);
                        let newest = prepare_points(&pts, k, target, log)?;
                        let mut run = pts.begin_run(newest)?;
                        let mut sink = |off: u64, data: &[u8]| run.write(off, data);
                        for (off, len) in runs {
                            let r = copy_range(
                                &src, &mut sink, off, len, &mut buf, false, &mut p, stop,
                            )?;
                            w.written += r.written;
                        }
                        let bytes = run.finish()?;
                        point = Some(PointRun {
                            number: newest + 1,
                            prev: Some((newest, bytes)),
                        });
                    }
                }
                p.show(true);
                (total, w)
            }
        };
        out.push(DeviceReport {
            dev: *dev,
            target: target.clone(),
            capacity,
            copied,
            written: w.written,
            skipped: w.skipped,
            since: since.map(|s| s.0),
            manifest: None,
            compared: 0,
            mismatched: 0,
            next_since: next.0,
            generation: next.1,
            point,
        });
    }
    Ok(out)
}

/// The restore points of a file target whose manifest is for a device of
/// `capacity` bytes (empty if it has none yet); `None` for a device target.
fn kept_points(
    target: &std::path::Path,
    capacity: u64,
) -> Result<Option<Vec<manifest::Point>>, String> {
    if manifest::path_for(target).is_none() {
        return Ok(None);
    }
    Ok(Some(match manifest::load(target)? {
        Some(m) if m.capacity == capacity => m.points,
        _ => Vec::new(),
    }))
}

/// Before a run over `target`'s points (`kept`, oldest first): undoes an
/// interrupted run, or starts the history of a target made before points
/// (what it holds becomes point 1). Returns the newest point.
fn prepare_points(
    pts: &Points,
    kept: &[manifest::Point],
    target: &std::path::Path,
    log: &dyn Fn(&str),
) -> Result<u32, String> {
    let (Some(first), Some(last)) = (kept.first(), kept.last()) else {
        log(&format!(
            "{}: restore points start here: checksumming what it holds (point 1)",
            target.display()
        ));
        pts.reset()?;
        pts.rebuild_sums()?;
        return Ok(1);
    };
    if pts.recover(last.number, first.number)? {
        log(&format!(
            "{}: an interrupted run was undone: it holds point {} again",
            target.display(),
            last.number
        ));
    }
    if pts.load_sums()?.is_none() {
        // Lost (deleted by hand): what the target holds is point `last`.
        log(&format!(
            "{}: its checksums are missing: checksumming what it holds again",
            target.display()
        ));
        pts.rebuild_sums()?;
    }
    Ok(last.number)
}

/// Compares what `target` holds with `image` over `[off, off + len)`;
/// returns how many bytes differ.
fn compare_range(
    image: &File,
    target: &File,
    off: u64,
    len: u64,
    bufs: (&mut [u8], &mut [u8]),
    p: &mut Progress,
    stop: &AtomicBool,
) -> Result<u64, String> {
    let (a, b) = bufs;
    let mut done = 0;
    let mut bad = 0;
    while done < len {
        if stop.load(Ordering::Relaxed) {
            return Err("interrupted".into());
        }
        let n = (len - done).min(a.len() as u64) as usize;
        image
            .read_exact_at(&mut a[..n], off + done)
            .map_err(|e| format!("reading the image at {}: {e}", off + done))?;
        target
            .read_exact_at(&mut b[..n], off + done)
            .map_err(|e| format!("reading the target at {}: {e}", off + done))?;
        bad += a[..n].iter().zip(&b[..n]).filter(|(x, y)| x != y).count() as u64;
        done += n as u64;
        p.add(n as u64);
    }
    Ok(bad)
}

/// `--verify`: compares each target with the image, over the blocks that
/// its last run wrote and that have not changed since ([`Verify::LastRun`]),
/// or over every block not changed since ([`Verify::Everything`]).
fn compare_all(
    ctl: &Control,
    plan: &[Planned],
    what: Verify,
    last_since: &[Option<u8>],
    stop: &AtomicBool,
    log: &dyn Fn(&str),
) -> Result<Vec<DeviceReport>, String> {
    let mut out = Vec::new();
    let (mut a, mut b) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    for (i, pl) in plan.iter().enumerate() {
        let Some((at, _)) = pl.since else {
            return Err("--verify needs the chain a manifest records".into());
        };
        let mut src = File::open(&pl.image).map_err(|e| format!("{}: {e}", pl.image.display()))?;
        let capacity = device_size(&mut src)?;
        let dst = File::open(&pl.target).map_err(|e| format!("{}: {e}", pl.target.display()))?;
        let map = ctl
            .read_cbt_map(pl.dev, pl.info.blk_count)
            .map_err(|e| e.to_string())?;
        let bs = u64::from(pl.info.blk_size);
        let from = match (what, last_since.get(i).copied().flatten()) {
            (Verify::LastRun, Some(prev)) => Some(prev),
            _ => None,
        };
        let runs = byte_runs(
            runs_where(&map, |v| v <= at && from.is_none_or(|f| v > f)),
            bs,
            capacity,
        );
        let total: u64 = runs.iter().map(|r| r.1).sum();
        let mut p = Progress::new(format!("verifying {}", pl.target.display()), total, log);
        let mut bad = 0;
        for (off, len) in runs {
            bad += compare_range(&src, &dst, off, len, (&mut a, &mut b), &mut p, stop)?;
        }
        p.show(true);
        log(&format!(
            "{}: compared {} with {}: {} differ",
            dev_label(&pl.dev),
            human_bytes(total),
            pl.target.display(),
            human_bytes(bad)
        ));
        out.push(DeviceReport {
            dev: pl.dev,
            target: pl.target.clone(),
            capacity,
            copied: 0,
            written: 0,
            skipped: 0,
            since: Some(at),
            manifest: manifest::path_for(&pl.target),
            compared: total,
            mismatched: bad,
            next_since: pl.next.0,
            generation: pl.next.1,
            point: None,
        });
    }
    Ok(out)
}

/// The snapshot device (and the device on the storage side that reaches
/// it) if storage files in `dir` would reach one of `devs`.
fn storage_reaches(dir: &std::path::Path, devs: &[BlkSnapDev]) -> Option<(BlkSnapDev, BlkSnapDev)> {
    crate::util::storage_reaches(dir_device(dir)?, devs)
}

/// What to allocate at once when no storage can come after TAKE: `limit`,
/// but at most half of the space free in `dir`, so that the system keeps
/// room to write while the backup runs.
fn up_front_storage(dir: &std::path::Path, limit: u64) -> u64 {
    let free = free_bytes(dir).unwrap_or(limit);
    limit.min(free / 2).max(1 << 20)
}

/// Bytes free for unprivileged users in `dir`'s file system.
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `st` has room for the result.
    if unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs succeeded and filled `st`.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::useless_conversion)] // not u64 on every libc
    let (avail, frsize) = (u64::from(st.f_bavail), u64::from(st.f_frsize));
    Some(avail.saturating_mul(frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(g: u8, number: u8, capacity: u64) -> Chain {
        Chain {
            generation: BlkSnapUuid { b: [g; 16] },
            number,
            capacity,
        }
    }

    #[test]
    fn incremental_continues_its_chain() {
        let g1 = BlkSnapUuid { b: [1; 16] };
        let (b, a) = (chain(1, 7, 1 << 30), chain(1, 8, 1 << 30));
        assert_eq!(check_incremental(7, &g1, &b, &a, Some(1 << 30)), Ok(()));
        assert_eq!(check_incremental(3, &g1, &b, &a, None), Ok(()));
        assert_eq!(next_since(&b, &a), (8, g1));
    }

    #[test]
    fn a_wrapping_take_keeps_this_copy_and_restarts_the_next() {
        // Before TAKE: last taken 254 (active 255); TAKE wraps to a new
        // generation, whose first map is empty.
        let g1 = BlkSnapUuid { b: [1; 16] };
        let (b, a) = (chain(1, 254, 1 << 30), chain(2, 255, 1 << 30));
        assert_eq!(check_incremental(200, &g1, &b, &a, Some(1 << 30)), Ok(()));
        // Not "--since 255", after which nothing would ever be copied.
        assert_eq!(next_since(&b, &a), (0, BlkSnapUuid { b: [2; 16] }));
    }

    #[test]
    fn what_needs_a_full_backup() {
        let g1 = BlkSnapUuid { b: [1; 16] };
        let b = chain(1, 7, 1 << 30);
        let same = chain(1, 8, 1 << 30);
        assert!(check_incremental(7, &BlkSnapUuid { b: [9; 16] }, &b, &same, None).is_err());
        assert!(check_incremental(8, &g1, &b, &same, None).is_err());
        assert!(check_incremental(7, &g1, &b, &chain(1, 8, 1 << 20), None).is_err());
        assert!(check_incremental(7, &g1, &b, &chain(3, 1, 1 << 30), None).is_err());
        assert!(check_incremental(7, &g1, &b, &same, Some(4096)).is_err());
    }

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
        let w = copy_range(
            &src,
            &mut direct(&dst),
            1000,
            100,
            &mut [0u8; 64],
            false,
            &mut p,
            &stop,
        )
        .unwrap();
        assert_eq!(
            w,
            Written {
                written: 100,
                skipped: 0
            }
        );
        let got = std::fs::read(&b).unwrap();
        assert!(got[..1000].iter().all(|&x| x == 0));
        assert_eq!(
            &got[1000..1100],
            &(1000..1100u32).map(|i| i as u8).collect::<Vec<_>>()[..]
        );
        assert!(got[1100..].iter().all(|&x| x == 0));
        stop.store(true, Ordering::Relaxed);
        assert!(copy_range(
            &src,
            &mut direct(&dst),
            0,
            10,
            &mut [0u8; 64],
            false,
            &mut p,
            &stop
        )
        .is_err());
        std::fs::remove_file(a).unwrap();
        std::fs::remove_file(b).unwrap();
    }
}
