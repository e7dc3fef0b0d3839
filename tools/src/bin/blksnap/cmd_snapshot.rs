// SPDX-License-Identifier: GPL-2.0

//! `blksnap snapshot ...`: create, storage, take, images, events, watch,
//! destroy, list.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use blksnap::ctl::{Control, SnapEvent};
use blksnap::fiemap;
use blksnap::storage::{watch, StorageDir, WatchEnd, WatchStats};
use blksnap::uapi::{BlkSnapBlockRange, BlkSnapDev};
use blksnap::util::{
    dev_label, dev_path, dev_to_string, dir_device, human_bytes, json_str, parse_dev, parse_size,
    parse_uuid, storage_reaches, uuid_to_string,
};

use crate::{catch_signals, devs, log, parse_range, Fail, INTERRUPTED};

#[derive(Subcommand, Debug)]
pub(crate) enum SnapCmd {
    /// Create a snapshot of devices (paths like /dev/vdb or MAJOR:MINOR); prints its id.
    Create {
        #[arg(required = true)]
        devices: Vec<String>,
    },
    /// Take a created snapshot (needs storage appended).
    Take { id: String },
    /// Destroy a snapshot: images go, trackers stay.
    Destroy { id: String },
    /// List snapshots, each with its devices' images once taken.
    List,
    /// List a snapshot's images.
    Images { id: String },
    /// Wait for one event of a snapshot.
    WaitEvent {
        id: String,
        /// How long to wait, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u32,
    },
    /// Hand storage to a snapshot: a new file (--file, --size) or ranges of a device.
    AppendStorage(AppendArgs),
    /// Keep a snapshot supplied with storage files in a directory, as it
    /// consumes them, until it goes.
    Watch {
        id: String,
        /// Directory for storage files (on a disk-backed file system).
        #[arg(long)]
        dir: PathBuf,
        /// Total size of storage files at most, e.g. 4G.
        #[arg(long, value_parser = parse_size, default_value = "1G")]
        limit: u64,
        /// Size of each file (at least), e.g. 256M.
        #[arg(long, value_parser = parse_size, default_value = "256M")]
        step: u64,
    },
}

#[derive(Args, Debug)]
pub(crate) struct AppendArgs {
    pub(crate) id: String,
    /// Use this file's extents: created with --size, or, without --size,
    /// an existing file allocated in full (e.g. by fallocate).
    #[arg(long, conflicts_with_all = ["device", "range"])]
    pub(crate) file: Option<PathBuf>,
    /// Size of the file to create, e.g. 512M.
    #[arg(long, value_parser = parse_size, requires = "file")]
    pub(crate) size: Option<u64>,
    /// Use ranges of this device.
    #[arg(long, requires = "range")]
    pub(crate) device: Option<String>,
    /// A range START:COUNT in sectors (repeatable).
    #[arg(long, value_parser = parse_range)]
    pub(crate) range: Vec<BlkSnapBlockRange>,
}

/// One image as JSON: its original, its own number and its node.
pub(crate) fn image_json(i: &blksnap::uapi::BlkSnapImageInfo) -> String {
    let path = dev_path(&i.image_dev_id)
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    format!(
        "{{\"original\":{},\"image\":{},\"path\":{}}}",
        json_str(&dev_to_string(&i.orig_dev_id)),
        json_str(&dev_to_string(&i.image_dev_id)),
        json_str(&path)
    )
}

pub(crate) fn snapshot(c: &SnapCmd, json: bool) -> Result<(), Fail> {
    let ctl = Control::open()?;
    let id_of = |s: &str| parse_uuid(s).map_err(|e| Fail(2, e));
    match c {
        SnapCmd::Create { devices } => {
            let id = ctl.snapshot_create(&devs(devices)?)?;
            if json {
                println!("{{\"id\":{}}}", json_str(&uuid_to_string(&id)));
            } else {
                println!("{}", uuid_to_string(&id));
            }
        }
        SnapCmd::Take { id } => ctl.snapshot_take(&id_of(id)?)?,
        SnapCmd::Destroy { id } => ctl.snapshot_destroy(&id_of(id)?)?,
        SnapCmd::List => {
            let ids = ctl.snapshot_list()?;
            let mut items = Vec::new();
            for i in ids {
                // Images exist once the snapshot is taken.
                let imgs = ctl.snapshot_images(&i).unwrap_or_default();
                if json {
                    let im: Vec<String> = imgs.iter().map(image_json).collect();
                    items.push(format!(
                        "{{\"id\":{},\"taken\":{},\"images\":[{}]}}",
                        json_str(&uuid_to_string(&i)),
                        !imgs.is_empty(),
                        im.join(",")
                    ));
                } else if imgs.is_empty() {
                    println!("{}  not taken", uuid_to_string(&i));
                } else {
                    let im: Vec<String> = imgs
                        .iter()
                        .map(|m| {
                            format!(
                                "{} -> {}",
                                dev_label(&m.orig_dev_id),
                                dev_label(&m.image_dev_id)
                            )
                        })
                        .collect();
                    println!("{}  taken: {}", uuid_to_string(&i), im.join(", "));
                }
            }
            if json {
                println!("[{}]", items.join(","));
            }
        }
        SnapCmd::Images { id } => {
            let imgs = ctl.snapshot_images(&id_of(id)?)?;
            if json {
                let items: Vec<String> = imgs.iter().map(image_json).collect();
                println!("[{}]", items.join(","));
            } else {
                for i in imgs {
                    println!(
                        "{} -> {}",
                        dev_label(&i.orig_dev_id),
                        dev_label(&i.image_dev_id)
                    );
                }
            }
        }
        SnapCmd::WaitEvent { id, timeout_ms } => match ctl.wait_event(&id_of(id)?, *timeout_ms)? {
            None => return Err(Fail(1, format!("no event within {timeout_ms} ms"))),
            Some(SnapEvent::LowFreeSpace {
                time_ns,
                requested_sectors,
            }) => {
                if json {
                    println!("{{\"event\":\"low_free_space\",\"time_ns\":{time_ns},\"requested_sectors\":{requested_sectors}}}");
                } else {
                    println!(
                        "low_free_space: {} requested",
                        human_bytes(requested_sectors * 512)
                    );
                }
            }
            Some(SnapEvent::Corrupted {
                time_ns,
                dev,
                errno,
            }) => {
                if json {
                    println!("{{\"event\":\"corrupted\",\"time_ns\":{time_ns},\"device\":{},\"errno\":{errno}}}", json_str(&dev_to_string(&dev)));
                } else {
                    println!(
                        "corrupted: image of {} ({})",
                        dev_label(&dev),
                        blksnap::ctl::errno_name(errno)
                    );
                }
            }
            Some(SnapEvent::Unknown { code, .. }) => println!("event code {code}"),
        },
        SnapCmd::AppendStorage(a) => {
            let id = id_of(&a.id)?;
            if let Some(file) = &a.file {
                let sf = match a.size {
                    Some(size) => fiemap::allocate(file, size)?,
                    None => {
                        let f = std::fs::File::open(file)
                            .map_err(|e| Fail(1, format!("{}: {e}", file.display())))?;
                        fiemap::map_file(file, &f)?
                    }
                };
                ctl.append_storage(&id, sf.dev, &sf.ranges)?;
                log(&format!(
                    "appended {} ({} extents on {})",
                    human_bytes(sf.bytes),
                    sf.ranges.len(),
                    dev_label(&sf.dev)
                ));
            } else if let Some(dev) = &a.device {
                let d = parse_dev(dev).map_err(|e| Fail(2, e))?;
                ctl.append_storage(&id, d, &a.range)?;
            } else {
                return Err(Fail(
                    2,
                    "give --file (with --size to create it), or --device and --range".into(),
                ));
            }
        }
        SnapCmd::Watch {
            id,
            dir,
            limit,
            step,
        } => {
            catch_signals();
            let id = id_of(id)?;
            // After TAKE, storage on a device of the snapshot could get the
            // blocks of a file deleted since: the module refuses it, and
            // this says why before the first file.
            let origs: Vec<BlkSnapDev> = ctl
                .snapshot_images(&id)
                .unwrap_or_default()
                .iter()
                .map(|i| i.orig_dev_id)
                .collect();
            if let Some((on, orig)) = dir_device(dir).and_then(|d| storage_reaches(d, &origs)) {
                return Err(Fail(
                    1,
                    format!(
                        "{} is on {}, which reaches {} of the taken snapshot: storage \
                         there can only be added before TAKE (blksnap backup does that); \
                         give a --dir outside the snapshot",
                        dir.display(),
                        dev_label(&on),
                        dev_label(&orig)
                    ),
                ));
            }
            let mut sd = StorageDir::new(dir.clone(), *step, *limit);
            let mut stats = WatchStats::default();
            log(&format!(
                "watching snapshot {} (storage in {}, at most {})",
                uuid_to_string(&id),
                dir.display(),
                human_bytes(*limit)
            ));
            let end = watch(&ctl, &id, &mut sd, &INTERRUPTED, &log, &mut stats)?;
            match end {
                WatchEnd::SnapshotGone => log("the snapshot is gone; storage files removed"),
                WatchEnd::Stopped => log("stopped; storage files removed"),
            }
            sd.remove_files();
            if !stats.corrupted.is_empty() {
                return Err(Fail(4, stats.corrupted.join("; ")));
            }
        }
    }
    Ok(())
}
