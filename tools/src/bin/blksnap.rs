// SPDX-License-Identifier: GPL-2.0

//! `blksnap`: command-line control of the blksnap kernel module.
//!
//! Exit codes: 0 success, 1 the operation failed, 2 bad usage (clap),
//! 3 the module is not loaded or not accessible, 4 a snapshot image was
//! corrupted during a backup, 5 an incremental backup cannot continue its
//! chain (a full backup is needed), 130 interrupted.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Args, CommandFactory, Parser, Subcommand};

use blksnap::backup;
use blksnap::ctl::{Control, CtlError, SnapEvent};
use blksnap::fiemap;
use blksnap::logic::cbt::changed_runs;
use blksnap::storage::{watch, StorageDir, WatchEnd, WatchStats};
use blksnap::uapi::{BlkSnapBlockRange, BlkSnapDev};
use blksnap::util::{
    dev_label, dev_path, dev_to_string, dir_device, human_bytes, json_str, parse_dev, parse_size,
    parse_uuid, storage_reaches, uuid_to_string,
};

/// Snapshots of live block devices and changed block tracking, for backup.
#[derive(Parser, Debug)]
#[command(
    name = "blksnap",
    version,
    propagate_version = true,
    after_long_help = "Exit status: 0 success, 1 failure, 2 bad usage, 3 module not loaded or \
                       not permitted, 4 an image was corrupted during a backup, 5 an incremental \
                       backup cannot continue its chain (a full backup is needed), 6 --verify found \
                       a target that differs from its device, 130 interrupted.\n\n\
                       Change tracking lives in memory: after a reboot or a module reload, an \
                       incremental backup cannot continue (exit 5) and the next backup of every \
                       device is a full one (--full)."
)]
struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print the version of the loaded module.
    Version,
    /// Create, take, list and destroy snapshots.
    #[command(subcommand)]
    Snapshot(SnapCmd),
    /// List and manage change trackers and their maps.
    #[command(subcommand)]
    Tracker(TrackerCmd),
    /// Back up devices: snapshot, copy each image (or only its changes), destroy.
    #[command(
        after_help = "Change tracking lives in memory: after a reboot or a module reload, \
                            an incremental cannot continue (exit 5) and the next backup of every \
                            device is a full one (--full)."
    )]
    Backup(BackupArgs),
    /// Remove the storage files that a killed backup or watch left in a
    /// directory; with --destroy, first destroy the snapshots still using
    /// them (only when no backup is running).
    Cleanup {
        /// The directory given to backup or watch.
        #[arg(long)]
        storage_dir: PathBuf,
        /// Also destroy the snapshots that still use files there.
        #[arg(long)]
        destroy: bool,
    },
    /// Write the manual page (man) or a shell's completions (bash, zsh,
    /// fish) to standard output; used when packaging.
    #[command(hide = true)]
    Generate {
        /// man, bash, zsh or fish
        what: String,
    },
}

#[derive(Subcommand, Debug)]
enum SnapCmd {
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
struct AppendArgs {
    id: String,
    /// Use this file's extents: created with --size, or, without --size,
    /// an existing file allocated in full (e.g. by fallocate).
    #[arg(long, conflicts_with_all = ["device", "range"])]
    file: Option<PathBuf>,
    /// Size of the file to create, e.g. 512M.
    #[arg(long, value_parser = parse_size, requires = "file")]
    size: Option<u64>,
    /// Use ranges of this device.
    #[arg(long, requires = "range")]
    device: Option<String>,
    /// A range START:COUNT in sectors (repeatable).
    #[arg(long, value_parser = parse_range)]
    range: Vec<BlkSnapBlockRange>,
}

#[derive(Subcommand, Debug)]
enum TrackerCmd {
    /// List tracked devices.
    List,
    /// Stop tracking a device.
    Remove { device: String },
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

#[derive(Args, Debug)]
struct BackupArgs {
    /// Devices to back up, in one snapshot.
    #[arg(required = true)]
    devices: Vec<String>,
    /// Target file or device for each device, in order.
    #[arg(long = "target", required = true)]
    targets: Vec<PathBuf>,
    /// Directory for storage files (not on a device being backed up).
    #[arg(long)]
    storage_dir: PathBuf,
    /// Size of each storage file (at least; storage is appended as the
    /// snapshot consumes it, up to --storage-limit).
    #[arg(long, value_parser = parse_size, default_value = "64M")]
    storage_step: u64,
    /// Total storage at most.
    #[arg(long, value_parser = parse_size, default_value = "1G")]
    storage_limit: u64,
    /// Incremental: copy blocks changed after this snapshot number into the
    /// earlier copy (give what the previous run printed; one for each
    /// device, in order). Exit 5 when a chain cannot continue and a full
    /// backup is needed.
    #[arg(long, requires = "generation")]
    since: Vec<u8>,
    /// Incremental: the generation the earlier backup printed (one for each
    /// device, in order).
    #[arg(long, requires = "since")]
    generation: Vec<String>,
    /// A full copy, even of a target whose manifest records a chain.
    /// Without --since and --full, a file target's manifest
    /// (TARGET.blksnap.json) makes the run an incremental that continues
    /// its chain.
    #[arg(long, conflicts_with = "since")]
    full: bool,
    /// Copy nothing: compare each target with a fresh snapshot of its
    /// device, over the blocks its last run wrote that have not changed
    /// since (the target needs its manifest). Exit 6 if any byte differs.
    #[arg(long, conflicts_with_all = ["since", "full"])]
    verify: bool,
    /// As --verify, over every block that has not changed since the last
    /// run.
    #[arg(long, conflicts_with_all = ["since", "full", "verify"])]
    full_verify: bool,
}

fn parse_range(s: &str) -> Result<BlkSnapBlockRange, String> {
    let (a, b) = s
        .split_once(':')
        .ok_or_else(|| format!("bad range '{s}': use START:COUNT in sectors"))?;
    let sector_offset = a.parse().map_err(|_| format!("bad range start '{a}'"))?;
    let sector_count = b.parse().map_err(|_| format!("bad range count '{b}'"))?;
    Ok(BlkSnapBlockRange {
        sector_offset,
        sector_count,
    })
}

/// A failure and its exit code.
struct Fail(u8, String);

impl From<CtlError> for Fail {
    fn from(e: CtlError) -> Self {
        let code = match e {
            CtlError::NotLoaded | CtlError::Permission | CtlError::Open(_) => 3,
            CtlError::Ioctl { .. } => 1,
        };
        Fail(code, e.to_string())
    }
}

impl From<String> for Fail {
    fn from(e: String) -> Self {
        Fail(1, e)
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn catch_signals() {
    // SAFETY: The handler only stores to an atomic, which is async-signal
    // safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}

fn log(msg: &str) {
    eprintln!("blksnap: {msg}");
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(code, msg)) => {
            eprintln!("blksnap: {msg}");
            ExitCode::from(code)
        }
    }
}

fn run(cli: &Cli) -> Result<(), Fail> {
    let json = cli.json;
    match &cli.cmd {
        Cmd::Version => {
            let v = Control::open()?.version()?;
            if json {
                println!(
                    "{{\"major\":{},\"minor\":{},\"revision\":{},\"build\":{}}}",
                    v.major, v.minor, v.revision, v.build
                );
            } else {
                println!("blksnap {v}");
            }
        }
        Cmd::Snapshot(c) => snapshot(c, json)?,
        Cmd::Tracker(c) => tracker(c, json)?,
        Cmd::Backup(a) => do_backup(a, json)?,
        Cmd::Cleanup {
            storage_dir,
            destroy,
        } => cleanup(storage_dir, *destroy)?,
        Cmd::Generate { what } => generate(what)?,
    }
    Ok(())
}

/// One image as JSON: its original, its own number and its node.
fn image_json(i: &blksnap::uapi::BlkSnapImageInfo) -> String {
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

/// `cleanup`: storage files whose snapshot is gone are removed; those of a
/// snapshot still alive only with `destroy`, after destroying it.
fn cleanup(dir: &std::path::Path, destroy: bool) -> Result<(), Fail> {
    let ctl = Control::open()?;
    let files = blksnap::storage::leftovers(dir).map_err(|e| Fail(1, e))?;
    let snaps = ctl.snapshot_list()?;
    let (mut removed, mut bytes, mut kept) = (0, 0u64, 0);
    let mut destroyed: Vec<blksnap::uapi::BlkSnapUuid> = Vec::new();
    for (path, id8) in &files {
        let owner = snaps
            .iter()
            .find(|s| uuid_to_string(s).starts_with(id8.as_str()));
        if let Some(id) = owner {
            if !destroy {
                kept += 1;
                continue;
            }
            if !destroyed.contains(id) {
                ctl.snapshot_destroy(id)?;
                log(&format!("destroyed snapshot {}", uuid_to_string(id)));
                destroyed.push(*id);
            }
        }
        bytes += std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        std::fs::remove_file(path).map_err(|e| Fail(1, format!("{}: {e}", path.display())))?;
        removed += 1;
    }
    println!("removed {removed} storage file(s), {}", human_bytes(bytes));
    if kept > 0 {
        println!(
            "kept {kept} file(s) of snapshots still alive: give --destroy to destroy them (only when no backup is running)"
        );
    }
    Ok(())
}

/// The manual page or the completions of one shell, on standard output.
fn generate(what: &str) -> Result<(), Fail> {
    use clap_complete::Shell;
    use std::io::Write;
    let mut out = std::io::stdout();
    let mut cmd = Cli::command();
    let shell = match what {
        "man" => {
            return clap_mangen::Man::new(cmd)
                .section("8")
                .render(&mut out)
                .map_err(|e| Fail(1, format!("writing the manual page: {e}")));
        }
        "bash" => Shell::Bash,
        "zsh" => Shell::Zsh,
        "fish" => Shell::Fish,
        _ => {
            return Err(Fail(
                2,
                format!("generate: {what}: expected man, bash, zsh or fish"),
            ))
        }
    };
    // Into memory first: `generate` panics on a write error.
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "blksnap", &mut buf);
    out.write_all(&buf)
        .map_err(|e| Fail(1, format!("writing the completions: {e}")))
}

fn devs(list: &[String]) -> Result<Vec<BlkSnapDev>, Fail> {
    list.iter()
        .map(|d| parse_dev(d).map_err(|e| Fail(2, e)))
        .collect()
}

fn snapshot(c: &SnapCmd, json: bool) -> Result<(), Fail> {
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

fn tracker(c: &TrackerCmd, json: bool) -> Result<(), Fail> {
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

fn do_backup(a: &BackupArgs, json: bool) -> Result<(), Fail> {
    catch_signals();
    let ctl = Control::open()?;
    if a.since.len() != a.generation.len() {
        return Err(Fail(
            2,
            "give as many --generation as --since, one pair for each device".into(),
        ));
    }
    let mut since = Vec::new();
    for (n, g) in a.since.iter().zip(&a.generation) {
        since.push((*n, parse_uuid(g).map_err(|e| Fail(2, e))?));
    }
    let opts = backup::Options {
        devices: devs(&a.devices)?,
        targets: a.targets.clone(),
        storage_dir: a.storage_dir.clone(),
        storage_step: a.storage_step,
        storage_limit: a.storage_limit,
        since,
        full: a.full,
        verify: if a.full_verify {
            Some(backup::Verify::Everything)
        } else if a.verify {
            Some(backup::Verify::LastRun)
        } else {
            None
        },
    };
    let report = match backup::run(&ctl, &opts, &INTERRUPTED, &log) {
        Ok(r) => r,
        Err(e) if INTERRUPTED.load(Ordering::Relaxed) => {
            return Err(Fail(130, format!("interrupted: {e}")))
        }
        Err(e) if e.contains("CORRUPTED") => return Err(Fail(4, e)),
        Err(e) if e.contains("a full backup is needed") => return Err(Fail(5, e)),
        Err(e) => return Err(Fail(1, e)),
    };
    if json {
        let items: Vec<String> = report
            .devices
            .iter()
            .map(|d| {
                format!(
                    "{{\"device\":{},\"target\":{},\"kind\":{},\"capacity\":{},\"copied\":{},\"written\":{},\"skipped\":{},\"compared\":{},\"mismatched\":{},\"next_since\":{},\"generation\":{},\"manifest\":{}}}",
                    json_str(&dev_to_string(&d.dev)),
                    json_str(&d.target.display().to_string()),
                    json_str(if opts.verify.is_some() {
                        "verify"
                    } else if d.since.is_some() {
                        "incremental"
                    } else {
                        "full"
                    }),
                    d.capacity,
                    d.copied,
                    d.written,
                    d.skipped,
                    d.compared,
                    d.mismatched,
                    d.next_since,
                    json_str(&uuid_to_string(&d.generation)),
                    d.manifest
                        .as_ref()
                        .map(|m| json_str(&m.display().to_string()))
                        .unwrap_or_else(|| "null".into())
                )
            })
            .collect();
        println!(
            "{{\"snapshot\":{},\"seconds\":{:.3},\"storage_appended\":{},\"storage_files\":{},\"storage_used\":{},\"low_space_events\":{},\"devices\":[{}]}}",
            json_str(&uuid_to_string(&report.snapshot)), report.seconds, report.storage_appended, report.storage_files,
            report.storage_used.map_or("null".to_string(), |u| u.to_string()), report.low_space_events, items.join(",")
        );
    } else {
        for d in report.devices.iter().filter(|_| opts.verify.is_some()) {
            println!(
                "{}: compared {} of {} with the device: {}",
                d.target.display(),
                human_bytes(d.compared),
                human_bytes(d.capacity),
                if d.mismatched == 0 {
                    "identical".to_string()
                } else {
                    format!("{} DIFFER", human_bytes(d.mismatched))
                }
            );
        }
        for d in report.devices.iter().filter(|_| opts.verify.is_none()) {
            let kind = match d.since {
                Some(n) => format!("incremental since snapshot {n}"),
                None => "full copy".into(),
            };
            println!(
                "{}: {kind}: read {} of {}, wrote {}, left {} of zeros as holes, to {}",
                dev_label(&d.dev),
                human_bytes(d.copied),
                human_bytes(d.capacity),
                human_bytes(d.written),
                human_bytes(d.skipped),
                d.target.display()
            );
            if let Some(m) = &d.manifest {
                println!("  manifest: {}", m.display());
            }
        }
        // One command for all devices: each keeps its own chain.
        let mut next = String::from("next incremental: blksnap backup");
        for d in &report.devices {
            next += &format!(
                " {}",
                dev_path(&d.dev)
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| dev_to_string(&d.dev))
            );
        }
        // The manifests carry the chains of file targets; a device target
        // needs its --since and --generation on the command line.
        let explicit = report.devices.iter().any(|d| d.manifest.is_none());
        for d in &report.devices {
            next += &format!(" --target {}", d.target.display());
            if explicit {
                next += &format!(
                    " --since {} --generation {}",
                    d.next_since,
                    uuid_to_string(&d.generation)
                );
            }
        }
        if opts.verify.is_none() {
            println!("  {next} --storage-dir {}", a.storage_dir.display());
            println!(
                "  (change tracking lives in memory: after a reboot or a module reload \
                 that run exits 5, and a full backup with --full is needed)"
            );
        }
        let used = report
            .storage_used
            .map_or("an unknown amount".to_string(), human_bytes);
        println!(
            "done in {:.1}s; storage: {} used of {} appended in {} file(s)",
            report.seconds,
            used,
            human_bytes(report.storage_appended),
            report.storage_files
        );
    }
    let differ: Vec<String> = report
        .devices
        .iter()
        .filter(|d| d.mismatched > 0)
        .map(|d| {
            format!(
                "{} ({} differ)",
                d.target.display(),
                human_bytes(d.mismatched)
            )
        })
        .collect();
    if !differ.is_empty() {
        return Err(Fail(
            6,
            format!(
                "verify: the targets differ from their devices: {}",
                differ.join(", ")
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_backup_incremental() {
        let c = Cli::try_parse_from([
            "blksnap",
            "backup",
            "/dev/vdc",
            "--target",
            "/b/full.img",
            "--storage-dir",
            "/s",
            "--since",
            "3",
            "--generation",
            "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
        ])
        .unwrap();
        match c.cmd {
            Cmd::Backup(a) => {
                assert_eq!(a.since, vec![3]);
                assert_eq!(a.targets, vec![PathBuf::from("/b/full.img")]);
            }
            _ => panic!("not a backup"),
        }
        assert!(Cli::try_parse_from([
            "blksnap",
            "backup",
            "/dev/vdc",
            "--target",
            "x",
            "--storage-dir",
            "/s",
            "--since",
            "3"
        ])
        .is_err());
        // Two devices, each with its own chain.
        let c = Cli::try_parse_from([
            "blksnap",
            "backup",
            "/dev/vdc",
            "/dev/vdd",
            "--target",
            "/b/c.img",
            "--target",
            "/b/d.img",
            "--storage-dir",
            "/s",
            "--since",
            "3",
            "--generation",
            "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
            "--since",
            "0",
            "--generation",
            "1f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
        ])
        .unwrap();
        match c.cmd {
            Cmd::Backup(a) => {
                assert_eq!(a.since, vec![3, 0]);
                assert_eq!(a.generation.len(), 2);
            }
            _ => panic!("not a backup"),
        }
    }

    #[test]
    fn parses_ranges_and_sizes() {
        assert_eq!(
            parse_range("8:16"),
            Ok(BlkSnapBlockRange {
                sector_offset: 8,
                sector_count: 16
            })
        );
        assert!(parse_range("8").is_err());
        let c = Cli::try_parse_from([
            "blksnap",
            "snapshot",
            "watch",
            "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
            "--dir",
            "/s",
            "--limit",
            "2G",
        ])
        .unwrap();
        match c.cmd {
            Cmd::Snapshot(SnapCmd::Watch { limit, step, .. }) => {
                assert_eq!(limit, 2 << 30);
                assert_eq!(step, 256 << 20);
            }
            _ => panic!(),
        }
    }

    #[test]
    fn append_needs_a_source() {
        // An existing file needs no --size; a size needs a file.
        assert!(Cli::try_parse_from([
            "blksnap",
            "snapshot",
            "append-storage",
            "x",
            "--file",
            "/f"
        ])
        .is_ok());
        assert!(Cli::try_parse_from([
            "blksnap",
            "snapshot",
            "append-storage",
            "x",
            "--size",
            "1G"
        ])
        .is_err());
        assert!(Cli::try_parse_from([
            "blksnap",
            "snapshot",
            "append-storage",
            "x",
            "--device",
            "8:1"
        ])
        .is_err());
    }
}
