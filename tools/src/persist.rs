// SPDX-License-Identifier: GPL-2.0

//! CBT store files for `blksnap tracker persist`: a file sized for the
//! device's maps, written out (so that its extents are fixed and not
//! unwritten), mapped to sectors; the boot id and the device's identity
//! that the module compares with the store's.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::fiemap::{map_file, StorageFile};
use crate::logic::persist::{Layout, Reset, IDENTITY_BYTES, STORE_BLOCK};
use crate::uapi::{BlkSnapBlockRange, BlkSnapDev, BLK_SNAP_PERSIST_IN_MEMORY};

/// A module parameter, or `default` if it cannot be read.
fn param(name: &str, default: u64) -> u64 {
    std::fs::read_to_string(format!("/sys/module/blksnap/parameters/{name}"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default)
}

/// Bytes a store needs for a device of `capacity` bytes: the maps at the
/// smallest tracking block the module may choose, capped at its largest
/// block count (so never fewer blocks than it uses).
pub fn store_bytes(capacity: u64) -> u64 {
    let shift = param("tracking_block_minimum_shift", 16).min(40);
    let max = param("tracking_block_maximum_count", 2_097_152).min(u64::from(u32::MAX));
    let count = capacity.div_ceil(1 << shift).clamp(1, max);
    Layout::new(count as u32).total() * STORE_BLOCK as u64
}

/// The store at `path` for a device of `capacity` bytes: a block device
/// (its first sectors, as many as the store needs), or a file, made (zeros,
/// synced) if it is not there and mapped to sectors of its device.
pub fn prepare(path: &Path, capacity: u64, tracked: &BlkSnapDev) -> Result<StorageFile, String> {
    let size = store_bytes(capacity);
    if let Ok(md) = std::fs::metadata(path) {
        if md.file_type().is_block_device() {
            let store = device_store(path, md.rdev(), size)?;
            let (s, t) = (store.dev, *tracked);
            let same = |a: BlkSnapDev, b: BlkSnapDev| a == b;
            if same(s, t)
                || whole_of(&t).is_some_and(|w| same(w, s))
                || whole_of(&s).is_some_and(|w| same(w, t))
            {
                return Err(format!(
                    "{}: the store would overwrite the tracked device's own blocks: give a file on it, or another device",
                    path.display()
                ));
            }
            return Ok(store);
        }
    }
    if !path.exists() {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("cannot create the store {}: {e}", path.display()))?;
        // On a file system with blocks under 4 KiB the extents need not
        // start or end on whole store blocks: some room to trim them to.
        let small_blocks = f
            .metadata()
            .is_ok_and(|md| md.blksize() < STORE_BLOCK as u64);
        let zeros = vec![0u8; 1 << 20];
        let mut left = if small_blocks {
            size + size / 8 + (64 << 10)
        } else {
            size
        };
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            f.write_all(&zeros[..n])
                .map_err(|e| format!("{}: {e}", path.display()))?;
            left -= n as u64;
        }
        f.sync_all()
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    if len < size {
        return Err(format!(
            "{}: {len} bytes, but a store for this device needs {size}: remove it to have it made again",
            path.display()
        ));
    }
    let mut file = map_file(path, &f)?;
    file.ranges = whole_blocks(&file.ranges);
    file.bytes = file.ranges.iter().map(|r| r.sector_count * 512).sum();
    if file.bytes < size {
        return Err(format!(
            "{}: only {} of its bytes lie in whole 4 KiB blocks of the device (its file system's blocks are smaller), but the store needs {size}: remove it to have it made again with room, or put it on a file system with 4 KiB blocks",
            path.display(),
            file.bytes
        ));
    }
    Ok(file)
}

/// The part of each range that covers whole 4 KiB store blocks of the
/// device (the module takes nothing else): a file on a file system with
/// smaller blocks may start or end an extent inside one. Ranges left
/// empty are dropped.
pub fn whole_blocks(ranges: &[BlkSnapBlockRange]) -> Vec<BlkSnapBlockRange> {
    const SECTORS: u64 = STORE_BLOCK as u64 / 512;
    ranges
        .iter()
        .filter_map(|r| {
            let start = r.sector_offset.checked_next_multiple_of(SECTORS)?;
            let end = (r.sector_offset.saturating_add(r.sector_count) / SECTORS) * SECTORS;
            let sector_count = end.checked_sub(start).filter(|&n| n > 0)?;
            Some(BlkSnapBlockRange {
                sector_offset: start,
                sector_count,
            })
        })
        .collect()
}

/// A store on the block device `path` (number `rdev`): its first `size`
/// bytes, which it must have.
fn device_store(path: &Path, rdev: u64, size: u64) -> Result<StorageFile, String> {
    let dev = BlkSnapDev {
        mj: libc::major(rdev),
        mn: libc::minor(rdev),
    };
    let sectors = std::fs::read_to_string(format!("/sys/dev/block/{}:{}/size", dev.mj, dev.mn))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| format!("{}: cannot read its size", path.display()))?;
    if sectors * 512 < size {
        return Err(format!(
            "{}: {} bytes, but a store for this device needs {size}",
            path.display(),
            sectors * 512
        ));
    }
    Ok(StorageFile {
        dev,
        ranges: vec![BlkSnapBlockRange {
            sector_offset: 0,
            sector_count: size / 512,
        }],
        bytes: size,
    })
}

/// The whole disk of `dev` (itself if it is one), from sysfs.
fn whole_of(dev: &BlkSnapDev) -> Option<BlkSnapDev> {
    let p = std::fs::canonicalize(format!("/sys/dev/block/{}:{}", dev.mj, dev.mn)).ok()?;
    if !p.join("partition").exists() {
        return Some(*dev);
    }
    let s = std::fs::read_to_string(p.parent()?.join("dev")).ok()?;
    let (a, b) = s.trim().split_once(':')?;
    Some(BlkSnapDev {
        mj: a.parse().ok()?,
        mn: b.parse().ok()?,
    })
}

/// Where `tracker persist --at-boot` records the stores that the boot
/// scripts attach (`tracker boot`): on the root file system, which the
/// initramfs copies, since `/var` may not be mounted yet at that point.
pub const BOOT_RECORDS: &str = "/etc/blksnap/persist.d";

/// What the boot-time attach needs of a store: the device, where the
/// store's blocks are (so that no file system has to be mounted to find
/// them) and the identity text. One JSON file per device.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BootRecord {
    pub format: u32,
    /// The tracked device as given (a stable name such as
    /// /dev/disk/by-partuuid/... survives a change of device numbers).
    pub device: String,
    /// The store as given (a file or a device), for messages.
    pub store: String,
    /// The device that holds the store's blocks, and the blocks (start
    /// sector, sector count).
    pub store_device: String,
    pub ranges: Vec<(u64, u64)>,
    /// The identity text (`--identity`, or the default).
    pub identity: String,
}

/// The record file of `device` in `dir`.
pub fn boot_record_path(dir: &Path, device: &str) -> std::path::PathBuf {
    let name: String = device
        .trim_start_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("{name}.json"))
}

/// Writes `rec` into `dir` (made if missing), atomically.
pub fn save_boot_record(dir: &Path, rec: &BootRecord) -> Result<std::path::PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = boot_record_path(dir, &rec.device);
    let text = serde_json::to_string_pretty(rec).map_err(|e| e.to_string())?;
    let tmp = path.with_extension("json.tmp");
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.write_all(b"\n").map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)?;
    crate::manifest::sync_dir(&path)?;
    Ok(path)
}

/// Every record in `dir` (none if it does not exist), in name order; a
/// record that cannot be read is reported as an error of its own.
pub fn load_boot_records(dir: &Path) -> Vec<(std::path::PathBuf, Result<BootRecord, String>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let r = std::fs::read_to_string(&p)
                .map_err(|e| e.to_string())
                .and_then(|t| serde_json::from_str::<BootRecord>(&t).map_err(|e| e.to_string()))
                .and_then(|r| {
                    if r.format == 1 {
                        Ok(r)
                    } else {
                        Err(format!("unknown record format {}", r.format))
                    }
                })
                .map_err(|e| format!("{}: {e}", p.display()));
            (p, r)
        })
        .collect()
}

/// Where the store file of `rec` lies now, if it can be read (its file
/// system is mounted): `Err` if its blocks are not those recorded (it was
/// moved, or made again), since the attach would write over the recorded
/// ones. A store that cannot be read (in the initramfs) or is a device
/// passes.
pub fn check_record_file(rec: &BootRecord) -> Result<(), String> {
    let path = Path::new(&rec.store);
    let Ok(md) = std::fs::metadata(path) else {
        return Ok(());
    };
    if !md.file_type().is_file() {
        return Ok(());
    }
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let now = whole_blocks(&map_file(path, &f)?.ranges);
    let ranges: Vec<(u64, u64)> = now
        .iter()
        .map(|r| (r.sector_offset, r.sector_count))
        .collect();
    // The record covers the store's first blocks, which is all it uses.
    if !ranges.starts_with(&rec.ranges) {
        return Err(format!(
            "{}: its blocks moved since it was recorded: run blksnap tracker persist --at-boot again",
            path.display()
        ));
    }
    Ok(())
}

/// Makes a store file immutable (chattr +i, or undoes that if not `pin`),
/// so that nothing moves or rewrites its blocks behind the boot record (a
/// defragmenter, an editor); `Err` says why not (a file system without the
/// flag). A device is left as it is.
pub fn pin_store(path: &Path, pin: bool) -> Result<(), String> {
    const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
    const FS_IOC_SETFLAGS: libc::c_ulong = 0x4008_6602;
    const FS_IMMUTABLE_FL: libc::c_long = 0x10;
    let md = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !md.file_type().is_file() {
        return Ok(());
    }
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    let mut flags: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one long to the pointer, which is
    // valid for it.
    if unsafe { libc::ioctl(fd, FS_IOC_GETFLAGS as _, &mut flags) } != 0 {
        return Err(format!(
            "cannot read its flags ({}): keep it from being moved",
            std::io::Error::last_os_error()
        ));
    }
    if pin {
        flags |= FS_IMMUTABLE_FL;
    } else {
        flags &= !FS_IMMUTABLE_FL;
    }
    // SAFETY: FS_IOC_SETFLAGS reads one long from the pointer.
    if unsafe { libc::ioctl(fd, FS_IOC_SETFLAGS as _, &flags) } != 0 {
        return Err(format!(
            "cannot make it immutable ({}): keep it from being moved",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// This boot's id, as 16 bytes.
pub fn boot_id() -> Result<[u8; 16], String> {
    let s = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map_err(|e| format!("/proc/sys/kernel/random/boot_id: {e}"))?;
    crate::util::parse_uuid(s.trim()).map(|u| u.b)
}

/// `text` as an identity field (cut to its size, zero padded).
pub fn identity(text: &str) -> [u8; IDENTITY_BYTES] {
    let mut id = [0u8; IDENTITY_BYTES];
    for (d, s) in id.iter_mut().zip(text.bytes()) {
        *d = s;
    }
    id
}

/// What the module's reset number says, for the user.
pub fn reason(reset: u32) -> String {
    if reset == 0 {
        return "the change maps go on from the store".into();
    }
    if reset == BLK_SNAP_PERSIST_IN_MEMORY {
        return "the device was tracked already: its maps in memory go on".into();
    }
    match Reset::from_number(reset) {
        Some(r) => format!("tracking starts afresh: {}", r.describe()),
        None => format!("tracking starts afresh (reason {reset})"),
    }
}

/// Why the tracking generation `generation` began, if it began afresh when
/// a store was attached (from PERSIST_STATUS): what a backup that must be
/// a full one tells the user.
pub fn afresh_reason(
    st: &crate::uapi::BlkSnapTrackerPersistStatus,
    generation: &crate::uapi::BlkSnapUuid,
) -> Option<String> {
    let attached = st.flags & crate::uapi::BLK_SNAP_PERSIST_STATUS_STORE != 0;
    let afresh = st.reset != 0 && st.reset != BLK_SNAP_PERSIST_IN_MEMORY;
    (attached && afresh && st.generation == *generation).then(|| reason(st.reset))
}

/// Whether `/proc/self/mountinfo` text `mountinfo` has a file system of
/// device `dev` mounted read-write (its major:minor field, and its mount
/// options starting with `rw`). `tracker shutdown` leaves such a device
/// alone: a seal while writes may still come would speak for them.
pub fn mounted_rw(mountinfo: &str, dev: &BlkSnapDev) -> bool {
    let want = format!("{}:{}", dev.mj, dev.mn);
    mountinfo.lines().any(|line| {
        let mut f = line.split(' ');
        let numbers = f.nth(2);
        let options = f.nth(2);
        numbers == Some(want.as_str()) && options.is_some_and(|o| o.split(',').next() == Some("rw"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_blocks_trims_to_store_blocks() {
        let r = |sector_offset, sector_count| BlkSnapBlockRange {
            sector_offset,
            sector_count,
        };
        assert_eq!(
            whole_blocks(&[r(8, 16), r(64, 8)]),
            vec![r(8, 16), r(64, 8)]
        );
        // 1 KiB blocks: extents at sector 2 and 130.
        assert_eq!(whole_blocks(&[r(2, 30), r(130, 4)]), vec![r(8, 24)]);
        assert_eq!(whole_blocks(&[r(3, 13)]), vec![r(8, 8)]);
        assert!(whole_blocks(&[r(1, 6)]).is_empty());
        assert!(whole_blocks(&[r(u64::MAX - 3, 3)]).is_empty());
    }

    #[test]
    fn mounted_rw_reads_mountinfo() {
        let info = "22 1 254:0 / / ro,relatime shared:1 - ext4 /dev/vda ro\n\
                    23 22 254:16 / /mnt/data rw,relatime shared:2 - ext4 /dev/vdb rw\n\
                    24 22 0:5 / /dev rw,nosuid shared:3 - devtmpfs udev rw\n";
        let dev = |mj, mn| BlkSnapDev { mj, mn };
        assert!(!mounted_rw(info, &dev(254, 0)));
        assert!(mounted_rw(info, &dev(254, 16)));
        assert!(!mounted_rw(info, &dev(254, 32)));
        assert!(!mounted_rw(info, &dev(254, 1)));
        assert!(!mounted_rw("", &dev(254, 16)));
        assert!(!mounted_rw("short line", &dev(254, 16)));
    }

    #[test]
    fn boot_records_round_trip() {
        let dir = std::env::temp_dir().join(format!("blksnap-records-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(load_boot_records(&dir).is_empty());
        let rec = BootRecord {
            format: 1,
            device: "/dev/disk/by-partuuid/1234-01".into(),
            store: "/var/lib/blksnap/root.store".into(),
            store_device: "/dev/vda1".into(),
            ranges: vec![(2048, 64), (4096, 8)],
            identity: "partuuid:1234-01".into(),
        };
        let path = save_boot_record(&dir, &rec).unwrap();
        assert_eq!(path, dir.join("dev_disk_by-partuuid_1234-01.json"));
        std::fs::write(dir.join("bad.json"), "{").unwrap();
        std::fs::write(dir.join("notes.txt"), "not a record").unwrap();
        let got = load_boot_records(&dir);
        assert_eq!(got.len(), 2);
        assert!(got[0].1.is_err(), "bad.json sorts first and fails alone");
        assert_eq!(got[1].1.as_ref().unwrap(), &rec);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_store_holds_the_largest_maps_the_module_makes() {
        // 1 GiB at 64 KiB blocks: 16384 blocks, 5 blocks per map.
        assert_eq!(store_bytes(1 << 30), (2 + 4 * 5 + 2) * 4096);
        assert!(store_bytes(1) >= 8 * 4096);
        assert_eq!(identity("PARTUUID=1")[..10], *b"PARTUUID=1");
        assert_eq!(identity(&"x".repeat(100)).len(), IDENTITY_BYTES);
        assert!(reason(6).contains("written while untracked"));
        assert!(reason(9).contains("power cut"));
        let g = crate::uapi::BlkSnapUuid { b: [7; 16] };
        let mut st = crate::uapi::BlkSnapTrackerPersistStatus {
            flags: crate::uapi::BLK_SNAP_PERSIST_STATUS_STORE,
            reset: 9,
            generation: g,
            ..Default::default()
        };
        assert!(afresh_reason(&st, &g).unwrap().contains("power cut"));
        // Another generation began since (a wrap), or the chain went on.
        assert_eq!(
            afresh_reason(&st, &crate::uapi::BlkSnapUuid::default()),
            None
        );
        st.reset = 0;
        assert_eq!(afresh_reason(&st, &g), None);
        assert!(reason(0).contains("go on"));
    }
}
