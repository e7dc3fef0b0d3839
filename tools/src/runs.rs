// SPDX-License-Identifier: GPL-2.0

//! Run records: which snapshot a backup created, so that whoever comes
//! after a backup that was killed can tell its snapshot from one of a
//! backup still running.
//!
//! A snapshot lives in the module until it is destroyed, whoever created
//! it; a backup killed with SIGKILL leaves its snapshot holding its
//! devices, and every later `SNAPSHOT_CREATE` of them fails with `EBUSY`.
//! Its storage files name the snapshot, but a run killed before its first
//! file leaves none. So each backup keeps a record in its storage
//! directory, `blksnap-<pid>-<nanoseconds>.run`, locked (flock) for as long
//! as it runs: made before `SNAPSHOT_CREATE`, naming the snapshot once it
//! exists, removed after the snapshot is destroyed. A record that nobody
//! holds locked belongs to a run that is gone, however it ended; its
//! snapshot, if still there, has no owner left and can be destroyed.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::ctl::Control;
use crate::uapi::BlkSnapUuid;
use crate::util::{parse_uuid, try_lock, uuid_to_string};

/// What a record holds before its snapshot exists.
const CREATING: &str = "creating\n";

/// The record of this run (see the module's documentation); removed when
/// dropped.
///
/// # Invariants
///
/// `file` is `path`, open, holding an exclusive flock.
pub struct RunRecord {
    file: File,
    path: PathBuf,
}

impl RunRecord {
    /// Makes and locks this run's record in `dir`, before its snapshot is
    /// created.
    pub fn begin(dir: &Path) -> Result<Self, String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = dir.join(format!("blksnap-{}-{nanos}.run", std::process::id()));
        let fail = |e: std::io::Error| format!("{}: {e}", path.display());
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(fail)?;
        // A name nobody else has: the lock is ours at once.
        if !try_lock(&file, true).map_err(fail)? {
            return Err(format!("{}: locked by another run", path.display()));
        }
        file.write_all(CREATING.as_bytes()).map_err(fail)?;
        Ok(Self { file, path })
    }

    /// Names the snapshot this run created (a snapshot does not outlive a
    /// reboot, so the record needs no sync).
    pub fn created(&self, id: &BlkSnapUuid) -> Result<(), String> {
        let text = format!("snapshot {}\n", uuid_to_string(id));
        self.file
            .write_all_at(text.as_bytes(), 0)
            .map_err(|e| format!("{}: {e}", self.path.display()))
    }
}

impl Drop for RunRecord {
    fn drop(&mut self) {
        // Gone already is what we want anyway.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The snapshot a record names, if it names one.
fn recorded(text: &str) -> Option<BlkSnapUuid> {
    let id = text.lines().next()?.strip_prefix("snapshot ")?;
    parse_uuid(id.trim()).ok()
}

/// Destroys the snapshots of the runs recorded in `dir` that are gone
/// (their records unlocked), and removes those records; returns the ids
/// destroyed. A run that died while creating its snapshot left no id: its
/// record goes, and a snapshot it may have created shows in `blksnap
/// snapshot list` (its devices then fail with `EBUSY`, which says so).
pub fn reap(ctl: &Control, dir: &Path, log: &dyn Fn(&str)) -> Result<Vec<BlkSnapUuid>, String> {
    let mut destroyed = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(destroyed),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let alive = ctl.snapshot_list().map_err(|e| e.to_string())?;
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("blksnap-") && name.ends_with(".run")) {
            continue;
        }
        let path = e.path();
        let Ok(mut file) = OpenOptions::new().read(true).write(true).open(&path) else {
            continue;
        };
        // Held: its run goes on (or another reaper has it).
        if !try_lock(&file, true).map_err(|e| format!("{}: {e}", path.display()))? {
            continue;
        }
        let mut text = String::new();
        // Unreadable: as if it named nothing.
        let _ = file.read_to_string(&mut text);
        match recorded(&text) {
            Some(id) if alive.contains(&id) => {
                ctl.snapshot_destroy(&id).map_err(|e| e.to_string())?;
                log(&format!(
                    "destroyed snapshot {}: the backup that created it was killed",
                    uuid_to_string(&id)
                ));
                destroyed.push(id);
            }
            Some(_) => {}
            None => log(&format!(
                "{}: a backup was killed while creating its snapshot; if a device is busy, see `blksnap snapshot list`",
                path.display()
            )),
        }
        std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(destroyed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_names_its_snapshot_once_created() {
        let dir = std::env::temp_dir().join(format!("blksnap-runs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let r = RunRecord::begin(&dir).unwrap();
        let text = std::fs::read_to_string(&r.path).unwrap();
        assert_eq!(recorded(&text), None);
        let id = parse_uuid("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0").unwrap();
        r.created(&id).unwrap();
        let text = std::fs::read_to_string(&r.path).unwrap();
        assert_eq!(recorded(&text), Some(id));
        // Held while the run lasts.
        let other = File::open(&r.path).unwrap();
        assert!(!try_lock(&other, true).unwrap());
        let path = r.path.clone();
        drop(r);
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
