// SPDX-License-Identifier: GPL-2.0

//! `blksnap backup ...`: its options and the command (the work is in
//! the library's `backup` module).

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use clap::Args;

use blksnap::backup;
use blksnap::ctl::Control;
use blksnap::util::{
    dev_label, dev_path, dev_to_string, human_bytes, json_str, parse_size, parse_uuid,
    uuid_to_string,
};

use crate::{catch_signals, devs, log, Fail, INTERRUPTED};

#[derive(Args, Debug)]
pub(crate) struct BackupArgs {
    /// Devices to back up, in one snapshot.
    #[arg(required = true)]
    pub(crate) devices: Vec<String>,
    /// Target file or device for each device, in order.
    #[arg(long = "target", required = true)]
    pub(crate) targets: Vec<PathBuf>,
    /// Directory for storage files, best not on a device being backed up.
    /// If it is, all storage is allocated before the snapshot is taken
    /// (--storage-limit, at most half the free space), since storage added
    /// later could take the blocks of a file deleted since.
    #[arg(long)]
    pub(crate) storage_dir: PathBuf,
    /// Size of each storage file (at least; storage is appended as the
    /// snapshot consumes it, up to --storage-limit).
    #[arg(long, value_parser = parse_size, default_value = "64M")]
    pub(crate) storage_step: u64,
    /// Total storage at most.
    #[arg(long, value_parser = parse_size, default_value = "1G")]
    pub(crate) storage_limit: u64,
    /// Incremental: copy blocks changed after this snapshot number into the
    /// earlier copy (give what the previous run printed; one for each
    /// device, in order). Exit 5 when a chain cannot continue and a full
    /// backup is needed.
    #[arg(long, requires = "generation")]
    pub(crate) since: Vec<u8>,
    /// Incremental: the generation the earlier backup printed (one for each
    /// device, in order).
    #[arg(long, requires = "since")]
    pub(crate) generation: Vec<String>,
    /// A full copy, even of a target whose manifest records a chain.
    /// Without --since and --full, a file target's manifest
    /// (TARGET.blksnap.json) makes the run an incremental that continues
    /// its chain.
    #[arg(long, conflicts_with = "since")]
    pub(crate) full: bool,
    /// Copy nothing: compare each target with a fresh snapshot of its
    /// device, over the blocks its last run wrote that have not changed
    /// since (the target needs its manifest). Exit 6 if any byte differs.
    #[arg(long, conflicts_with_all = ["since", "full"])]
    pub(crate) verify: bool,
    /// As --verify, over every block that has not changed since the last
    /// run.
    #[arg(long, conflicts_with_all = ["since", "full", "verify"])]
    pub(crate) full_verify: bool,
    /// Restore points to keep in each file target after a good run (the
    /// newest N; older ones are deleted). Default: all. See `blksnap points`.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) keep: Option<u32>,
}

pub(crate) fn do_backup(a: &BackupArgs, json: bool) -> Result<(), Fail> {
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
        keep: a.keep,
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
                    "{{\"device\":{},\"target\":{},\"kind\":{},\"capacity\":{},\"copied\":{},\"written\":{},\"skipped\":{},\"compared\":{},\"mismatched\":{},\"next_since\":{},\"generation\":{},\"manifest\":{},\"point\":{}}}",
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
                        .unwrap_or_else(|| "null".into()),
                    d.point.map_or("null".to_string(), |p| p.number.to_string())
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
            if let Some(p) = d.point {
                println!(
                    "  restore point {} (blksnap points {})",
                    p.number,
                    d.target.display()
                );
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
