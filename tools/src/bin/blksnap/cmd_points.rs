// SPDX-License-Identifier: GPL-2.0

//! `blksnap points`, `blksnap restore` and `blksnap verify`: the restore
//! points of a backup target (the work is in the library's `points`
//! module).

use std::fs::OpenOptions;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use blksnap::ctl::Control;
use blksnap::manifest::{self, Manifest};
use blksnap::points::{Points, RestoreError};
use blksnap::util::{dev_to_string, human_bytes, json_str, parse_dev, utc_time};

use crate::{log, Fail};

/// The manifest of `target`, which has points, and a shared lock on it
/// (no backup writes it while the caller reads).
fn manifest_of(target: &Path) -> Result<(Manifest, manifest::TargetLock), Fail> {
    let lock = manifest::lock(target, false).map_err(|e| Fail(1, e))?;
    match manifest::load(target)? {
        Some(m) if !m.points.is_empty() => Ok((m, lock)),
        Some(_) => Err(Fail(
            1,
            format!(
                "{}: no restore points yet (the next backup into it starts them)",
                target.display()
            ),
        )),
        None => Err(Fail(
            1,
            format!(
                "{}: no manifest: restore points live beside a file target",
                target.display()
            ),
        )),
    }
}

fn newest_oldest(m: &Manifest) -> (u32, u32) {
    let newest = m.points.last().map_or(0, |p| p.number);
    let oldest = m.points.first().map_or(0, |p| p.number);
    (newest, oldest)
}

/// `blksnap points TARGET`.
pub(crate) fn list(target: &Path, json: bool) -> Result<(), Fail> {
    let (m, _lock) = manifest_of(target)?;
    if json {
        let items: Vec<String> = m
            .points
            .iter()
            .map(|p| {
                format!(
                    "{{\"point\":{},\"time\":{},\"run\":{},\"generation\":{},\"snapshot\":{},\"bytes\":{}}}",
                    p.number,
                    p.time,
                    json_str(&p.run),
                    json_str(&p.generation),
                    p.snapshot,
                    p.bytes
                )
            })
            .collect();
        println!("[{}]", items.join(","));
        return Ok(());
    }
    println!(
        "{}: {} restore point(s) of {}",
        target.display(),
        m.points.len(),
        m.device
    );
    for p in &m.points {
        let held = if p.bytes == 0 {
            "the target itself".to_string()
        } else {
            format!("delta of {}", human_bytes(p.bytes))
        };
        println!(
            "  point {:>4}  {} UTC  {:<11}  snapshot {:>3}  {}",
            p.number,
            utc_time(p.time),
            p.run,
            p.snapshot,
            held
        );
    }
    Ok(())
}

/// Why `dev` (MAJOR:MINOR) must not be written: mounted, or tracked.
fn in_use(dev: &str) -> Option<String> {
    if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
        for line in info.lines() {
            let mut f = line.split_whitespace();
            let (Some(_), Some(_), Some(d), Some(_), Some(at)) =
                (f.next(), f.next(), f.next(), f.next(), f.next())
            else {
                continue;
            };
            if d == dev {
                return Some(format!("it is mounted on {at}"));
            }
        }
    }
    let tracked = Control::open()
        .ok()
        .and_then(|c| c.tracker_list().ok())
        .is_some_and(|l| l.iter().any(|t| dev_to_string(&t.dev_id) == dev));
    tracked.then(|| "blksnap tracks it (its next backup would be wrong)".to_string())
}

/// `blksnap restore TARGET --point N --to PATH`.
pub(crate) fn restore(target: &Path, point: u32, to: &PathBuf, force: bool) -> Result<(), Fail> {
    let (m, _lock) = manifest_of(target)?;
    let (newest, oldest) = newest_oldest(&m);
    if point < oldest || point > newest {
        return Err(Fail(
            2,
            format!(
                "{}: no point {point}: points {oldest} to {newest} are kept",
                target.display()
            ),
        ));
    }
    let device = std::fs::metadata(to)
        .map(|md| md.file_type().is_block_device())
        .unwrap_or(false);
    if device && !force {
        let dev = parse_dev(&to.display().to_string()).map_err(|e| Fail(2, e))?;
        if let Some(why) = in_use(&dev_to_string(&dev)) {
            return Err(Fail(
                1,
                format!("{}: {why}; give --force to write it anyway", to.display()),
            ));
        }
    }
    let out = OpenOptions::new()
        .write(true)
        .create(!device)
        .truncate(false)
        .open(to)
        .map_err(|e| Fail(1, format!("{}: {e}", to.display())))?;
    if !device {
        // A file gets the device's size, and holes where it is not written.
        out.set_len(0)
            .and_then(|()| out.set_len(m.capacity))
            .map_err(|e| Fail(1, format!("{}: {e}", to.display())))?;
    }
    let pts = Points::new(target, m.capacity);
    let start = Instant::now();
    let mut last = Instant::now();
    let mut done = 0u64;
    let mut progress = |n: u64| {
        done += n;
        if last.elapsed().as_secs() >= 5 {
            last = Instant::now();
            log(&format!(
                "restoring point {point}: {} of {}",
                human_bytes(done),
                human_bytes(m.capacity)
            ));
        }
    };
    match pts.restore(point, newest, &out, &mut progress) {
        Ok(()) => {
            println!(
                "restored point {point} of {} to {} ({}, {:.1}s): every block matched its checksum",
                target.display(),
                to.display(),
                human_bytes(m.capacity),
                start.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Err(RestoreError::Damaged(d)) => Err(Fail(
            6,
            format!(
                "{d}: the restore stopped there; {} is incomplete",
                to.display()
            ),
        )),
        Err(RestoreError::Other(e)) => Err(Fail(1, e)),
    }
}

/// `blksnap verify TARGET`.
pub(crate) fn verify(target: &Path) -> Result<(), Fail> {
    let (m, _lock) = manifest_of(target)?;
    let (newest, oldest) = newest_oldest(&m);
    let pts = Points::new(target, m.capacity);
    if pts.delta_path(newest, true).exists() || pts.delta_path(newest, false).exists() {
        return Err(Fail(
            1,
            format!(
                "{}: an interrupted backup left it between point {newest} and the next; \
                 the next backup into it undoes that first",
                target.display()
            ),
        ));
    }
    let bad = pts.verify(oldest, newest)?;
    if bad.is_empty() {
        println!(
            "{}: points {oldest} to {newest}: every stored block matches its checksum",
            target.display()
        );
        return Ok(());
    }
    for d in &bad {
        println!("{d}");
    }
    Err(Fail(
        6,
        format!("{}: {} damaged block(s)", target.display(), bad.len()),
    ))
}
