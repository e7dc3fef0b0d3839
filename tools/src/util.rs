// SPDX-License-Identifier: GPL-2.0

//! Small parsers and formatters: sizes, UUIDs, device names, JSON strings;
//! a flock that does not wait.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::logic::devices::shares_blocks;
use crate::uapi::{BlkSnapDev, BlkSnapUuid};

/// Takes a flock on `file` without waiting: `Ok(false)` if another open
/// file holds a lock that conflicts. The lock goes with the last
/// descriptor of that open file, however the process ends.
pub fn try_lock(file: &fs::File, exclusive: bool) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    let how = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    // SAFETY: flock on a descriptor `file` owns; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), how | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Parses `1048576`, `64K`, `256M`, `2G`, `1T` (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("bad size '{s}': use a number with K, M, G or T")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|_| format!("bad size '{s}'"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("size '{s}' too large"))
}

/// `1.5 GiB`-style rendering.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Canonical 8-4-4-4-12 form.
pub fn uuid_to_string(u: &BlkSnapUuid) -> String {
    let h: String = u.b.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Parses a UUID with or without dashes.
pub fn parse_uuid(s: &str) -> Result<BlkSnapUuid, String> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "bad UUID '{s}': expected 32 hex digits, e.g. 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
        ));
    }
    let mut u = BlkSnapUuid::default();
    for (i, b) in u.b.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(u)
}

/// A device named by path (`/dev/vdb`) or `MAJOR:MINOR`.
pub fn parse_dev(s: &str) -> Result<BlkSnapDev, String> {
    if let Some((a, b)) = s.split_once(':') {
        if let (Ok(mj), Ok(mn)) = (a.parse(), b.parse()) {
            return Ok(BlkSnapDev { mj, mn });
        }
    }
    let md = fs::metadata(s).map_err(|e| format!("{s}: {e}"))?;
    if !md.file_type().is_block_device() {
        return Err(format!("{s} is not a block device"));
    }
    let rdev = md.rdev();
    Ok(BlkSnapDev {
        mj: libc::major(rdev),
        mn: libc::minor(rdev),
    })
}

pub fn dev_to_string(d: &BlkSnapDev) -> String {
    format!("{}:{}", d.mj, d.mn)
}

/// The /dev path of a block device, from sysfs (`/dev/<DEVNAME>`).
pub fn dev_path(d: &BlkSnapDev) -> Option<PathBuf> {
    let uevent = fs::read_to_string(format!("/sys/dev/block/{}:{}/uevent", d.mj, d.mn)).ok()?;
    uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .map(|n| Path::new("/dev").join(n))
}

/// A name for logs: `/dev/vdb (254:16)`, or just the numbers.
pub fn dev_label(d: &BlkSnapDev) -> String {
    match dev_path(d) {
        Some(p) => format!("{} ({})", p.display(), dev_to_string(d)),
        None => dev_to_string(d),
    }
}

/// A block device and the whole disk it is on (itself if it is one), from
/// sysfs.
fn with_whole(d: BlkSnapDev) -> (BlkSnapDev, BlkSnapDev) {
    let dir = PathBuf::from(format!("/sys/dev/block/{}:{}", d.mj, d.mn));
    if !dir.join("partition").exists() {
        return (d, d);
    }
    let whole = fs::canonicalize(&dir)
        .ok()
        .and_then(|p| fs::read_to_string(p.parent()?.join("dev")).ok())
        .and_then(|s| parse_dev(s.trim()).ok())
        .unwrap_or(d);
    (d, whole)
}

/// The devices that `d` is built on, by sysfs (`slaves/` of the device and
/// of its disk, and theirs in turn), `d` itself first, each with its whole
/// disk. What a loop device's backing file lives on is not listed.
pub fn lower_devices(d: BlkSnapDev) -> Vec<(BlkSnapDev, BlkSnapDev)> {
    let mut out = vec![with_whole(d)];
    let mut i = 0;
    // Stacks are shallow; the bound only guards against a strange sysfs.
    while i < out.len() && out.len() < 64 {
        let (dev, whole) = out[i];
        i += 1;
        for base in [dev, whole] {
            let slaves = format!("/sys/dev/block/{}:{}/slaves", base.mj, base.mn);
            let Ok(entries) = fs::read_dir(slaves) else {
                continue;
            };
            for e in entries.flatten() {
                let lower = fs::read_to_string(e.path().join("dev"))
                    .ok()
                    .and_then(|s| parse_dev(s.trim()).ok());
                if let Some(l) = lower {
                    if !out.iter().any(|(o, _)| *o == l) {
                        out.push(with_whole(l));
                    }
                }
            }
        }
    }
    out
}

/// The first of `devs` that storage on `storage` reaches (itself, through a
/// disk and its partition, or through the devices it is built on), with
/// the device on the storage side that reaches it.
pub fn storage_reaches(
    storage: BlkSnapDev,
    devs: &[BlkSnapDev],
) -> Option<(BlkSnapDev, BlkSnapDev)> {
    let lower = lower_devices(storage);
    devs.iter().find_map(|&d| {
        let d = with_whole(d);
        lower
            .iter()
            .find(|&&s| shares_blocks(s, d))
            .map(|s| (s.0, d.0))
    })
}

/// The block device a directory's file system is on.
pub fn dir_device(dir: &Path) -> Option<BlkSnapDev> {
    let md = fs::metadata(dir).ok()?;
    Some(BlkSnapDev {
        mj: libc::major(md.dev()),
        mn: libc::minor(md.dev()),
    })
}

/// `secs` since the epoch as a UTC date and time, "YYYY-MM-DD HH:MM:SS".
pub fn utc_time(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Days to a civil date (proleptic Gregorian), after H. Hinnant.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("256m"), Ok(256 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert!(parse_size("1X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
    }

    #[test]
    fn uuids_round_trip() {
        let u = BlkSnapUuid {
            b: [
                0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78, 0x87, 0x96, 0xa5, 0xb4, 0xc3, 0xd2,
                0xe1, 0xf0,
            ],
        };
        let s = uuid_to_string(&u);
        assert_eq!(s, "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");
        assert_eq!(parse_uuid(&s), Ok(u));
        assert_eq!(parse_uuid(&s.replace('-', "")), Ok(u));
        assert!(parse_uuid("xyz").is_err());
        assert!(parse_uuid(&s[..30]).is_err());
    }

    #[test]
    fn devices() {
        assert_eq!(parse_dev("8:16"), Ok(BlkSnapDev { mj: 8, mn: 16 }));
        assert!(parse_dev("/nonexistent/dev").is_err());
        assert!(parse_dev("/etc/hostname")
            .unwrap_err()
            .contains("not a block device"));
        assert_eq!(dev_to_string(&BlkSnapDev { mj: 254, mn: 0 }), "254:0");
    }

    #[test]
    fn utc_times() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00");
        assert_eq!(utc_time(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc_time(1_796_172_811), "2026-12-02 00:53:31");
    }

    #[test]
    fn json_escapes() {
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
    }
}
