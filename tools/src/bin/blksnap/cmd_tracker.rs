// SPDX-License-Identifier: GPL-2.0

//! `blksnap tracker ...`: list, change maps, marking, removal, and the
//! CBT store that keeps the maps across a module reload.

use std::path::PathBuf;

use clap::Subcommand;

use blksnap::ctl::Control;
use blksnap::fiemap;
use blksnap::logic::cbt::changed_runs;
use blksnap::persist;
use blksnap::uapi::{BlkSnapBlockRange, BlkSnapDev};
use blksnap::util::{
    dev_label, dev_to_string, human_bytes, json_str, parse_dev, parse_uuid, uuid_to_string,
};

use crate::{log, parse_range, Fail};

#[derive(Subcommand, Debug)]
pub(crate) enum TrackerCmd {
    /// List tracked devices.
    List,
    /// Stop tracking a device (its store, if any, is not sealed: the next
    /// attach starts afresh; see detach).
    Remove { device: String },
    /// Keep a device's change maps in a store file, so that after a module
    /// reload (rmmod, insmod, persist again) the next incremental backup
    /// goes on instead of copying everything. Start tracking the device
    /// with the store's maps if nothing can have written it meanwhile.
    Persist {
        device: String,
        /// The store: a file (made if missing, sized for the device) on a
        /// disk-backed file system, which may be on the device itself; or
        /// a block device (its first sectors, as many as the store needs,
        /// are overwritten).
        #[arg(long)]
        store: PathBuf,
        /// What names the device across restarts (e.g. its PARTUUID);
        /// the store is only taken up for the device it names.
        #[arg(long)]
        identity: Option<String>,
        /// Also record the store for the boot scripts (`tracker boot`),
        /// with its blocks, so that the attach at boot needs no mount (the
        /// store file is made immutable, so that nothing moves them).
        /// Name the device by a stable path (/dev/disk/by-partuuid/...);
        /// run update-initramfs -u afterwards for the root file system.
        #[arg(long)]
        at_boot: bool,
        /// Where boot records go.
        #[arg(long, default_value = persist::BOOT_RECORDS)]
        records: PathBuf,
    },
    /// Attach every store recorded with `persist --at-boot`, before the
    /// devices' file systems are mounted (the boot scripts run this): the
    /// chain continues if nothing wrote a device meanwhile. Devices that
    /// already have a store are left alone.
    Boot {
        #[arg(long, default_value = persist::BOOT_RECORDS)]
        records: PathBuf,
    },
    /// Drop a device's boot record (its tracking and store stay as they
    /// are; the store file may be moved or removed again).
    Forget {
        device: String,
        #[arg(long, default_value = persist::BOOT_RECORDS)]
        records: PathBuf,
    },
    /// Seal a device's store and stop tracking it: a later persist goes
    /// on from there (rmmod seals every store too).
    Detach { device: String },
    /// Seal the store of every tracked device that has one, unless a file
    /// system on it is still mounted read-write (left tracked: its marks
    /// speak at the next boot). The system-shutdown hook of the packages
    /// runs this once the file systems are unmounted or read-only.
    Shutdown,
    /// Show whether a tracked device has a store, and why its tracking
    /// started afresh at the store's attach if it did.
    Status { device: String },
    /// Show blocks changed after a snapshot number (the device must be in a taken snapshot).
    Cbt {
        device: String,
        /// Show blocks changed after this snapshot number.
        #[arg(long, default_value_t = 0)]
        since: u8,
        /// Refuse unless the map's generation is this UUID.
        #[arg(long)]
        generation: Option<String>,
        /// Write the raw map (one byte per block) to this file.
        #[arg(long)]
        raw: Option<PathBuf>,
    },
    /// Mark sector ranges START:COUNT, or the blocks of a file on the
    /// device, as changed (the next incremental copies them).
    MarkDirty {
        device: String,
        #[arg(long = "range", value_parser = parse_range, required_unless_present = "file")]
        ranges: Vec<BlkSnapBlockRange>,
        /// A file on the device (e.g. one restored or changed behind the
        /// tracker's back): its extents are marked.
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

pub(crate) fn tracker(c: &TrackerCmd, json: bool) -> Result<(), Fail> {
    let ctl = Control::open()?;
    match c {
        TrackerCmd::List => {
            let list = ctl.tracker_list()?;
            if json {
                let items: Vec<String> = list
                    .iter()
                    .map(|t| {
                        format!(
                            "{{\"device\":{},\"block_size\":{},\"capacity\":{},\"blocks\":{},\"generation\":{},\"snap_number\":{}}}",
                            json_str(&dev_to_string(&t.dev_id)), t.blk_size, t.device_capacity, t.blk_count,
                            json_str(&uuid_to_string(&t.generation_id)), t.snap_number
                        )
                    })
                    .collect();
                println!("[{}]", items.join(","));
            } else {
                println!(
                    "{:<24} {:>10} {:>10} {:>8} {:>5}  generation",
                    "device", "capacity", "block", "blocks", "snap"
                );
                for t in list {
                    println!(
                        "{:<24} {:>10} {:>10} {:>8} {:>5}  {}",
                        dev_label(&t.dev_id),
                        human_bytes(t.device_capacity),
                        human_bytes(u64::from(t.blk_size)),
                        t.blk_count,
                        t.snap_number,
                        uuid_to_string(&t.generation_id)
                    );
                }
            }
        }
        TrackerCmd::Remove { device } => {
            ctl.tracker_remove(parse_dev(device).map_err(|e| Fail(2, e))?)?
        }
        TrackerCmd::Persist {
            device,
            store,
            identity,
            at_boot,
            records,
        } => {
            let rec = persist(&ctl, device, store, identity.as_deref(), json)?;
            if *at_boot {
                if let Err(e) = persist::pin_store(store, true) {
                    log(&format!("{}: {e}", store.display()));
                }
                let path = persist::save_boot_record(records, &rec).map_err(|e| Fail(1, e))?;
                log(&format!(
                    "{device}: attached at boot from now on ({})",
                    path.display()
                ));
            }
        }
        TrackerCmd::Boot { records } => boot(&ctl, records, json)?,
        TrackerCmd::Forget { device, records } => {
            let path = persist::boot_record_path(records, device);
            let rec = persist::load_boot_records(records)
                .into_iter()
                .find(|(p, _)| *p == path)
                .and_then(|(_, r)| r.ok());
            if let Some(rec) = rec {
                // Its store may be moved or removed again.
                if let Err(e) = persist::pin_store(std::path::Path::new(&rec.store), false) {
                    log(&format!("{}: {e}", rec.store));
                }
            }
            std::fs::remove_file(&path).map_err(|e| Fail(1, format!("{}: {e}", path.display())))?;
            log(&format!("{device}: no longer attached at boot"));
        }
        TrackerCmd::Status { device } => status(&ctl, device, json)?,
        TrackerCmd::Detach { device } => {
            ctl.tracker_detach(parse_dev(device).map_err(|e| Fail(2, e))?)?;
            log(&format!("{device}: store sealed, tracking stopped"));
        }
        TrackerCmd::Shutdown => shutdown(&ctl)?,
        TrackerCmd::Cbt {
            device,
            since,
            generation,
            raw,
        } => {
            let dev = parse_dev(device).map_err(|e| Fail(2, e))?;
            let info = ctl
                .tracker_list()?
                .into_iter()
                .find(|t| t.dev_id == dev)
                .ok_or_else(|| Fail(1, format!("{} is not tracked", dev_label(&dev))))?;
            if let Some(g) = generation {
                if parse_uuid(g).map_err(|e| Fail(2, e))? != info.generation_id {
                    return Err(Fail(
                        1,
                        format!(
                            "generation is {}, not {g}: changes cannot be compared",
                            uuid_to_string(&info.generation_id)
                        ),
                    ));
                }
            }
            let map = ctl.read_cbt_map(dev, info.blk_count)?;
            if let Some(path) = raw {
                std::fs::write(path, &map)
                    .map_err(|e| Fail(1, format!("{}: {e}", path.display())))?;
            }
            let bs = u64::from(info.blk_size);
            let runs: Vec<(u64, u64)> = changed_runs(&map, *since)
                .map(|(f, n)| (f as u64 * bs, n as u64 * bs))
                .collect();
            let total: u64 = runs.iter().map(|r| r.1).sum();
            if json {
                let items: Vec<String> = runs
                    .iter()
                    .map(|(o, l)| format!("{{\"offset\":{o},\"length\":{l}}}"))
                    .collect();
                println!(
                    "{{\"device\":{},\"generation\":{},\"snap_number\":{},\"since\":{since},\"block_size\":{bs},\"changed_bytes\":{total},\"ranges\":[{}]}}",
                    json_str(&dev_to_string(&dev)), json_str(&uuid_to_string(&info.generation_id)), info.snap_number, items.join(",")
                );
            } else {
                println!(
                    "{}: generation {}, snapshot {}, blocks of {}",
                    dev_label(&dev),
                    uuid_to_string(&info.generation_id),
                    info.snap_number,
                    human_bytes(bs)
                );
                println!("{:>16} {:>16}", "offset", "length");
                for (o, l) in &runs {
                    println!("{o:>16} {l:>16}");
                }
                println!(
                    "{} changed since snapshot {since} in {} range(s)",
                    human_bytes(total),
                    runs.len()
                );
            }
        }
        TrackerCmd::MarkDirty {
            device,
            ranges,
            file,
        } => {
            let dev = parse_dev(device).map_err(|e| Fail(2, e))?;
            let mut all = ranges.clone();
            if let Some(path) = file {
                use std::os::unix::fs::MetadataExt;
                let f = std::fs::File::open(path)
                    .map_err(|e| Fail(1, format!("{}: {e}", path.display())))?;
                let md = f
                    .metadata()
                    .map_err(|e| Fail(1, format!("{}: {e}", path.display())))?;
                let on = BlkSnapDev {
                    mj: libc::major(md.dev()),
                    mn: libc::minor(md.dev()),
                };
                if on != dev {
                    return Err(Fail(
                        2,
                        format!(
                            "{} is on {}, not {}",
                            path.display(),
                            dev_label(&on),
                            dev_label(&dev)
                        ),
                    ));
                }
                // Holes have no blocks to mark; the extents are synced first.
                let ext = fiemap::extents(&f)
                    .map_err(|e| Fail(1, format!("{}: FIEMAP: {e}", path.display())))?;
                all.extend(
                    fiemap::extents_to_ranges(&ext)
                        .map_err(|e| Fail(1, format!("{}: {e}", path.display())))?,
                );
            }
            ctl.mark_dirty(dev, &all)?;
            log(&format!(
                "marked {} range(s) of {} as changed",
                all.len(),
                dev_label(&dev)
            ));
        }
    }
    Ok(())
}

/// `blksnap tracker persist DEVICE --store FILE`; returns what a boot
/// record of it holds.
fn persist(
    ctl: &Control,
    device: &str,
    store: &std::path::Path,
    identity: Option<&str>,
    json: bool,
) -> Result<persist::BootRecord, Fail> {
    let dev = parse_dev(device).map_err(|e| Fail(2, e))?;
    let capacity = std::fs::read_to_string(format!("/sys/dev/block/{}:{}/size", dev.mj, dev.mn))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| Fail(1, format!("{device}: no such block device")))?
        * 512;
    let file = persist::prepare(store, capacity, &dev).map_err(|e| Fail(1, e))?;
    let name = identity.map_or_else(|| format!("blksnap:{device}:{capacity}"), str::to_owned);
    let rec = persist::BootRecord {
        format: 1,
        device: device.to_owned(),
        store: store.display().to_string(),
        store_device: stable_path(&file.dev),
        ranges: file
            .ranges
            .iter()
            .map(|r| (r.sector_offset, r.sector_count))
            .collect(),
        identity: name,
    };
    attach(ctl, dev, file.dev, &file.ranges, &rec, false, json)?;
    Ok(rec)
}

/// A path that names `dev` in the next boot too, as far as sysfs tells:
/// /dev/mapper/NAME for a device-mapper device (its minor changes), else
/// its /dev node, else MAJOR:MINOR.
fn stable_path(dev: &BlkSnapDev) -> String {
    let sys = format!("/sys/dev/block/{}:{}", dev.mj, dev.mn);
    if let Ok(name) = std::fs::read_to_string(format!("{sys}/dm/name")) {
        return format!("/dev/mapper/{}", name.trim());
    }
    blksnap::util::dev_path(dev).map_or_else(|| dev_to_string(dev), |p| p.display().to_string())
}

/// PERSIST of `dev` with the store at `ranges` of `store_dev`, as `rec`
/// names them (only if a store is there, with `existing`); prints the
/// result.
fn attach(
    ctl: &Control,
    dev: BlkSnapDev,
    store_dev: BlkSnapDev,
    ranges: &[BlkSnapBlockRange],
    rec: &persist::BootRecord,
    existing: bool,
    json: bool,
) -> Result<(), Fail> {
    let boot = persist::boot_id().map_err(|e| Fail(1, e))?;
    let id = persist::identity(&rec.identity);
    let r = ctl.tracker_persist(dev, store_dev, ranges, &id, &boot, existing)?;
    let why = persist::reason(r.reset);
    if json {
        println!(
            "{{\"device\":{},\"reset\":{},\"reason\":{},\"generation\":{},\"previous\":{},\"active\":{}}}",
            json_str(&dev_to_string(&dev)),
            r.reset,
            json_str(&why),
            json_str(&uuid_to_string(&r.generation)),
            r.previous,
            r.active
        );
    } else {
        println!(
            "{}: {why} (generation {}, last snapshot {})",
            dev_label(&dev),
            uuid_to_string(&r.generation),
            r.previous
        );
    }
    Ok(())
}

/// `tracker boot`: every recorded store attached; a failure of one does
/// not stop the others, and makes the exit status 1.
fn boot(ctl: &Control, records: &std::path::Path, json: bool) -> Result<(), Fail> {
    let mut failed = 0;
    for (path, rec) in persist::load_boot_records(records) {
        let r = rec.and_then(|rec| {
            let dev = parse_dev(&rec.device)?;
            let store_dev = parse_dev(&rec.store_device)?;
            Ok((rec, dev, store_dev))
        });
        let (rec, dev, store_dev) = match r {
            Ok(x) => x,
            Err(e) => {
                log(&format!("{}: not attached: {e}", path.display()));
                failed += 1;
                continue;
            }
        };
        if let Ok(st) = ctl.tracker_persist_status(dev) {
            if st.flags & blksnap::uapi::BLK_SNAP_PERSIST_STATUS_STORE != 0 {
                log(&format!("{}: its store is attached already", rec.device));
                continue;
            }
        }
        let ranges: Vec<BlkSnapBlockRange> = rec
            .ranges
            .iter()
            .map(|&(sector_offset, sector_count)| BlkSnapBlockRange {
                sector_offset,
                sector_count,
            })
            .collect();
        if let Err(e) = persist::check_record_file(&rec) {
            log(&format!("{}: not attached: {e}", rec.device));
            failed += 1;
            continue;
        }
        // Recorded ranges: never written unless the store is still there.
        if let Err(Fail(_, e)) = attach(ctl, dev, store_dev, &ranges, &rec, true, json) {
            log(&format!("{}: not attached: {e}", rec.device));
            failed += 1;
        }
    }
    if failed > 0 {
        return Err(Fail(1, format!("{failed} store(s) not attached")));
    }
    Ok(())
}

/// `tracker shutdown`: every store sealed whose device no file system
/// still writes to; a failure of one does not stop the others.
fn shutdown(ctl: &Control) -> Result<(), Fail> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Fail(1, format!("/proc/self/mountinfo: {e}")))?;
    let mut failed = 0;
    for t in ctl.tracker_list()? {
        let dev = t.dev_id;
        let store = ctl
            .tracker_persist_status(dev)
            .is_ok_and(|st| st.flags & blksnap::uapi::BLK_SNAP_PERSIST_STATUS_STORE != 0);
        if !store {
            continue;
        }
        if persist::mounted_rw(&mountinfo, &dev) {
            log(&format!(
                "{}: mounted read-write, not sealed (its marks count at the next attach)",
                dev_label(&dev)
            ));
            continue;
        }
        match ctl.tracker_detach(dev) {
            Ok(()) => log(&format!(
                "{}: store sealed, tracking stopped",
                dev_label(&dev)
            )),
            Err(e) => {
                log(&format!("{}: not sealed: {e}", dev_label(&dev)));
                failed += 1;
            }
        }
    }
    if failed > 0 {
        return Err(Fail(1, format!("{failed} store(s) not sealed")));
    }
    Ok(())
}

/// `tracker status`: PERSIST_STATUS of one device.
fn status(ctl: &Control, device: &str, json: bool) -> Result<(), Fail> {
    let dev = parse_dev(device).map_err(|e| Fail(2, e))?;
    let st = ctl.tracker_persist_status(dev)?;
    let store = st.flags & blksnap::uapi::BLK_SNAP_PERSIST_STATUS_STORE != 0;
    let why = persist::reason(st.reset);
    if json {
        println!(
            "{{\"device\":{},\"store\":{store},\"reset\":{},\"reason\":{},\"generation\":{},\"checkpoint\":{},\"intent_flushes\":{}}}",
            json_str(&dev_to_string(&dev)),
            st.reset,
            json_str(if store { &why } else { "" }),
            json_str(&uuid_to_string(&st.generation)),
            st.checkpoint,
            st.intent_flushes
        );
    } else if store {
        println!(
            "{}: a store is attached; at its attach, {why} (generation {}, checkpoint {})",
            dev_label(&dev),
            uuid_to_string(&st.generation),
            st.checkpoint
        );
    } else {
        println!(
            "{}: tracked, no store (generation {})",
            dev_label(&dev),
            uuid_to_string(&st.generation)
        );
    }
    Ok(())
}
