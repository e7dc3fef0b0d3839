// SPDX-License-Identifier: GPL-2.0

//! `blksnap`: command-line control of the blksnap kernel module.
//!
//! Exit codes: 0 success, 1 the operation failed, 2 bad usage (clap),
//! 3 the module is not loaded or not accessible, 4 a snapshot image was
//! corrupted during a backup, 5 an incremental backup cannot continue its
//! chain (a full backup is needed), 6 a target differs from its device
//! (backup --verify) or a restore point is damaged, 130 interrupted.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};

use blksnap::ctl::{Control, CtlError};
use blksnap::uapi::{BlkSnapBlockRange, BlkSnapDev};
use blksnap::util::parse_dev;

mod cmd_backup;
mod cmd_maint;
mod cmd_points;
mod cmd_snapshot;
mod cmd_tracker;

use cmd_backup::{do_backup, BackupArgs};
use cmd_maint::{cleanup, generate};
use cmd_snapshot::{snapshot, SnapCmd};
use cmd_tracker::{tracker, TrackerCmd};

/// Snapshots of live block devices and changed block tracking, for backup.
#[derive(Parser, Debug)]
#[command(
    name = "blksnap",
    version,
    propagate_version = true,
    after_long_help = "Exit status: 0 success, 1 failure, 2 bad usage, 3 module not loaded or \
                       not permitted, 4 an image was corrupted during a backup, 5 an incremental \
                       backup cannot continue its chain (a full backup is needed), 6 --verify found \
                       a target that differs from its device, or a restore point is damaged, \
                       130 interrupted.\n\n\
                       Change tracking lives in memory: after a reboot, an incremental backup \
                       cannot continue (exit 5) and the next backup of every device is a full one \
                       (--full). A device with a store (blksnap tracker persist) keeps its maps \
                       across a module reload."
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
        after_help = "Change tracking lives in memory: after a reboot, an incremental \
                            cannot continue (exit 5) and the next backup of every device is a full \
                            one (--full). A device with a store (blksnap tracker persist) keeps its \
                            maps across a module reload."
    )]
    Backup(BackupArgs),
    /// List the restore points of a backup target (a file target keeps
    /// one per backup run: the target holds the newest, a delta beside it
    /// each older one).
    Points {
        /// The target file given to backup.
        target: PathBuf,
    },
    /// Write restore point N of a target to a device or a file, checking
    /// every block against its checksum (exit 6 at a damaged one).
    Restore {
        /// The target file given to backup.
        target: PathBuf,
        /// The point to restore (see `blksnap points`).
        #[arg(long)]
        point: u32,
        /// Where to write it: a file (created, with the device's size) or
        /// a device at least as large.
        #[arg(long)]
        to: PathBuf,
        /// Write a device even if it is mounted or tracked.
        #[arg(long)]
        force: bool,
    },
    /// Check every stored block of a target's restore points against its
    /// checksum, without the source device; exit 6 naming each damaged one.
    Verify {
        /// The target file given to backup.
        target: PathBuf,
    },
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
    /// fish) to standard output; used when packaging. With --dir, man
    /// writes there a page per command (blksnap.8, blksnap-backup.8, ...).
    #[command(hide = true)]
    Generate {
        /// man, bash, zsh or fish
        what: String,
        /// Directory for the manual pages, one per command.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
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
        Cmd::Points { target } => cmd_points::list(target, json)?,
        Cmd::Restore {
            target,
            point,
            to,
            force,
        } => cmd_points::restore(target, *point, to, *force)?,
        Cmd::Verify { target } => cmd_points::verify(target)?,
        Cmd::Cleanup {
            storage_dir,
            destroy,
        } => cleanup(storage_dir, *destroy)?,
        Cmd::Generate { what, dir } => generate(what, dir.as_deref())?,
    }
    Ok(())
}

fn devs(list: &[String]) -> Result<Vec<BlkSnapDev>, Fail> {
    list.iter()
        .map(|d| parse_dev(d).map_err(|e| Fail(2, e)))
        .collect()
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
    fn manual_pages_cover_every_command() {
        let dir = std::env::temp_dir().join(format!("blksnap-man-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(cmd_maint::generate("man", Some(&dir)).is_ok());
        let page = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
        for sub in Cli::command()
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
        {
            let p = page(&format!("blksnap-{}.8", sub.get_name()));
            assert!(p.starts_with(".ie"), "{}: not a page", sub.get_name());
        }
        assert!(page("blksnap.8").contains("restore"));
        assert!(page("blksnap-backup.8").contains("keep"));
        assert!(page("blksnap-restore.8").contains("point"));
        assert!(page("blksnap-tracker-cbt.8").contains("DEVICE"));
        assert!(!dir.join("blksnap-generate.8").exists());
        assert!(!dir.join("blksnap-help.8").exists());
        std::fs::remove_dir_all(&dir).unwrap();
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
