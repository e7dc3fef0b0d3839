// SPDX-License-Identifier: GPL-2.0

//! The manifest of a backup target: a small JSON file beside it that says
//! which device it is a copy of and where that device's incremental chain
//! stands, so that the next incremental needs no arguments but the target.
//!
//! It is written only once a run has succeeded, and atomically (a new file,
//! synced, renamed over the old one, the directory synced): after a failed
//! or interrupted run it still names the last good state, and rerunning
//! repairs the target (every block changed since that state is copied
//! again).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Runs kept in a manifest; older ones are dropped.
const MAX_RUNS: usize = 1000;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// 1.
    pub format: u32,
    /// The device backed up, as MAJOR:MINOR.
    pub device: String,
    /// Its capacity in bytes.
    pub capacity: u64,
    /// The change tracking generation that the chain continues.
    pub generation: String,
    /// The next incremental copies the blocks changed after this snapshot
    /// number.
    pub next_since: u8,
    /// The runs that made the target what it is, oldest first.
    pub runs: Vec<Run>,
    /// The restore points kept, oldest first: the last is what the target
    /// holds, each other one has a delta (see `points.rs`). Empty for a
    /// target made before restore points, or a device target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub points: Vec<Point>,
}

/// A restore point: the device as one run copied it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Point {
    /// Numbered from 1, never reused.
    pub number: u32,
    /// Seconds since the epoch, at the end of its run.
    pub time: u64,
    /// The run that made it: "full" or "incremental".
    pub run: String,
    /// The change tracking generation and snapshot number of its run.
    pub generation: String,
    pub snapshot: u8,
    /// Bytes of its delta (0 for the newest, which the target holds).
    pub bytes: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// Seconds since the epoch, at the end of the run.
    pub time: u64,
    /// "full" or "incremental".
    pub kind: String,
    /// An incremental's starting point.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub since: Option<u8>,
    /// Bytes read from the image.
    pub read: u64,
    /// Bytes written to the target.
    pub written: u64,
    /// Bytes of zeros left as holes in the target.
    pub skipped: u64,
    /// The device's CBT store at the run, if it had one: what keeps its
    /// chain going across restarts.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub store: Option<RunStore>,
}

/// What a run records of the device's CBT store (PERSIST_STATUS).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunStore {
    /// The reset reason of the store's attach (0: the chain went on).
    pub reset: u32,
    /// The sequence number of the store's last checkpoint.
    pub checkpoint: u64,
}

/// Where the manifest of `target` lives: beside it, or nowhere if the
/// target is a block device (a file in /dev would not survive a reboot).
pub fn path_for(target: &Path) -> Option<PathBuf> {
    beside(target, ".blksnap.json")
}

/// The file named `target` + `suffix` beside a file target; `None` for a
/// device target.
fn beside(target: &Path, suffix: &str) -> Option<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(m) = std::fs::metadata(target) {
        if m.file_type().is_block_device() {
            return None;
        }
    }
    let mut name = target.file_name()?.to_os_string();
    name.push(suffix);
    Some(target.with_file_name(name))
}

/// A lock on a target, held while a run writes it ([`lock`]).
#[derive(Debug)]
pub struct TargetLock {
    _file: Option<File>,
}

/// Locks `target` against other runs of the tool: `exclusive` for a
/// backup, which writes it, shared for what only reads it (points,
/// restore, verify). Fails at once, saying so, if a run that conflicts
/// holds it. A file target's lock is the empty file `TARGET.blksnap.lock`
/// beside it (created, never removed, so that no two runs can lock two
/// different files of that name); a device target's is the device node.
/// The lock goes with the process, however it ends.
pub fn lock(target: &Path, exclusive: bool) -> Result<TargetLock, String> {
    let path = beside(target, ".blksnap.lock").unwrap_or_else(|| target.to_path_buf());
    let file = match OpenOptions::new()
        .read(true)
        .write(exclusive && path != target)
        .create(exclusive && path != target)
        .truncate(false)
        .open(&path)
    {
        Ok(f) => f,
        // No backup ever made one: none runs now (a read-only medium
        // stays readable).
        Err(e) if !exclusive && e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(TargetLock { _file: None })
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    match crate::util::try_lock(&file, exclusive) {
        Ok(true) => {}
        Ok(false) => {
            return Err(format!(
                "{}: another blksnap run is using it now (a backup writing it, or a restore or verify reading it); try again when it ends",
                target.display()
            ))
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    }
    Ok(TargetLock { _file: Some(file) })
}

/// The manifest of `target`, if it has one.
pub fn load(target: &Path) -> Result<Option<Manifest>, String> {
    let Some(path) = path_for(target) else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let m: Manifest =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if m.format != 1 {
        return Err(format!(
            "{}: unknown manifest format {}",
            path.display(),
            m.format
        ));
    }
    Ok(Some(m))
}

/// Writes the manifest of `target` atomically (no-op for block devices).
pub fn store(target: &Path, m: &Manifest) -> Result<(), String> {
    let Some(path) = path_for(target) else {
        return Ok(());
    };
    let mut m = m.clone();
    if m.runs.len() > MAX_RUNS {
        m.runs.drain(..m.runs.len() - MAX_RUNS);
    }
    let text = serde_json::to_string_pretty(&m).map_err(|e| e.to_string())?;
    let mut tmp = path.clone().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.write_all(b"\n").map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)?;
    sync_dir(&path)
}

/// Syncs the directory holding `path`, so that a new or renamed entry
/// survives a crash.
pub fn sync_dir(path: &Path) -> Result<(), String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("{}: {e}", dir.display()))
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_backup_at_a_time_and_no_read_during_it() {
        let dir = std::env::temp_dir().join(format!("bs-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let t = dir.join("t.img");
        // Nothing ran yet: reading needs no lock file.
        assert!(lock(&t, false).is_ok());
        let w = lock(&t, true).unwrap();
        assert!(lock(&t, true).unwrap_err().contains("another blksnap run"));
        assert!(lock(&t, false).is_err());
        drop(w);
        let r1 = lock(&t, false).unwrap();
        let r2 = lock(&t, false).unwrap();
        assert!(lock(&t, true).is_err());
        drop((r1, r2));
        assert!(lock(&t, true).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn sample() -> Manifest {
        Manifest {
            format: 1,
            device: "253:0".into(),
            capacity: 1 << 30,
            generation: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into(),
            next_since: 4,
            runs: vec![
                Run {
                    time: 1,
                    kind: "full".into(),
                    since: None,
                    read: 10,
                    written: 8,
                    skipped: 2,
                    store: None,
                },
                Run {
                    time: 2,
                    kind: "incremental".into(),
                    since: Some(3),
                    read: 4,
                    written: 4,
                    skipped: 0,
                    store: Some(RunStore {
                        reset: 0,
                        checkpoint: 12,
                    }),
                },
            ],
            points: vec![Point {
                number: 1,
                time: 2,
                run: "incremental".into(),
                generation: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0".into(),
                snapshot: 4,
                bytes: 0,
            }],
        }
    }

    #[test]
    fn path_is_beside_the_target() {
        assert_eq!(
            path_for(Path::new("/b/sdb1.img")),
            Some(PathBuf::from("/b/sdb1.img.blksnap.json"))
        );
    }

    #[test]
    fn stored_manifest_loads_back_and_replaces_the_old_one() {
        let dir = std::env::temp_dir().join(format!("bs-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("t.img");
        assert_eq!(load(&target), Ok(None));
        let mut m = sample();
        store(&target, &m).unwrap();
        assert_eq!(load(&target), Ok(Some(m.clone())));
        m.next_since = 5;
        store(&target, &m).unwrap();
        assert_eq!(load(&target).unwrap().unwrap().next_since, 5);
        assert!(!dir.join("t.img.blksnap.json.tmp").exists());
        // A manifest written before restore points loads with none.
        let mut old = sample();
        old.points.clear();
        let text = serde_json::to_string(&old).unwrap();
        assert!(!text.contains("points"));
        std::fs::write(dir.join("t.img.blksnap.json"), text).unwrap();
        assert_eq!(load(&target).unwrap().unwrap().points, vec![]);
        std::fs::write(dir.join("t.img.blksnap.json"), "{\"format\":2}").unwrap();
        assert!(load(&target).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
