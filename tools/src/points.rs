// SPDX-License-Identifier: GPL-2.0

//! Restore points of a backup target, kept as reverse deltas.
//!
//! The target file always holds the newest point, so that it is a plain
//! image of the device as at the last run (mounted, read by `qemu-img`,
//! updated in place by the next incremental). Each older point is a delta
//! file beside it, `TARGET.points/NNNNNNNN.delta`, with the blocks that the
//! run after it overwrote, as they were at that point: a point costs what
//! changed. Point N is restored by taking the target and, for each block,
//! the copy in the delta of the lowest point at or after N that holds it.
//!
//! Retention drops the oldest points by deleting their deltas: there is no
//! merge to interrupt. A run saves a block's old content into the new
//! delta, and syncs it, before it overwrites the block in the target; if
//! the run is interrupted, [`Points::recover`] puts the saved blocks back,
//! so the target is again the newest point the manifest names, and the
//! run can be done again.
//!
//! Blocks are [`BLOCK`] bytes (the last one of a device may be shorter).
//! Every block of the target has a checksum in `TARGET.points/sums`, and
//! every block in a delta carries the checksum of what it holds, so that
//! `verify` and `restore` name any damaged block (point and offset).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::manifest::sync_dir;

/// Bytes per block of a point.
pub const BLOCK: u64 = 1 << 20;
const MAGIC: &[u8; 8] = b"BSPDELTA";
const SUMS_MAGIC: &[u8; 8] = b"BSPSUMS1";
const VERSION: u32 = 1;
/// Bytes of a delta's header, and of each record's head.
const HEAD: u64 = 24;
/// A record's index that ends a complete delta.
const END: u64 = u64::MAX;

/// FNV-1a, 64 bits: the checksum of a block's bytes.
pub fn checksum(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn err(what: &Path, e: io::Error) -> String {
    format!("{}: {e}", what.display())
}

/// A block found damaged: where, and in which point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The point whose copy is damaged (the target's newest point for the
    /// target itself).
    pub point: u32,
    /// The block's offset in the device, in bytes.
    pub offset: u64,
    /// What holds it: the target, or a delta file.
    pub file: PathBuf,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "point {}: block at offset {} is damaged ({})",
            self.point,
            self.offset,
            self.file.display()
        )
    }
}

/// One block saved in a delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    index: u64,
    sum: u64,
    len: u32,
    /// Where its data starts in the delta file.
    at: u64,
}

/// What a delta file holds.
#[derive(Debug)]
struct Delta {
    records: Vec<Record>,
    /// It ends with the end record: its run finished writing it.
    complete: bool,
}

/// The restore points beside one target.
pub struct Points {
    target: PathBuf,
    dir: PathBuf,
    capacity: u64,
}

impl Points {
    /// The points of `target`, a copy of a device of `capacity` bytes.
    pub fn new(target: &Path, capacity: u64) -> Self {
        let mut dir = target.as_os_str().to_owned();
        dir.push(".points");
        Self {
            target: target.to_path_buf(),
            dir: PathBuf::from(dir),
            capacity,
        }
    }

    fn blocks(&self) -> u64 {
        self.capacity.div_ceil(BLOCK)
    }

    fn block_len(&self, index: u64) -> u64 {
        (self.capacity - index * BLOCK).min(BLOCK)
    }

    /// The delta of point `n`, complete or being written.
    pub fn delta_path(&self, n: u32, partial: bool) -> PathBuf {
        let ext = if partial { "delta.partial" } else { "delta" };
        self.dir.join(format!("{n:08}.{ext}"))
    }

    fn sums_path(&self) -> PathBuf {
        self.dir.join("sums")
    }

    /// The checksums of the target's blocks, as the last good run left
    /// them; `None` if there are none yet.
    pub fn load_sums(&self) -> Result<Option<Vec<u64>>, String> {
        let path = self.sums_path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err(&path, e)),
        };
        let n = self.blocks() as usize;
        if bytes.len() != 16 + 8 * n
            || &bytes[..8] != SUMS_MAGIC
            || bytes[8..16] != self.capacity.to_le_bytes()
        {
            return Err(format!(
                "{}: not the checksums of a {}-byte target",
                path.display(),
                self.capacity
            ));
        }
        Ok(Some(
            bytes[16..]
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect(),
        ))
    }

    fn store_sums(&self, sums: &[u64]) -> Result<(), String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| err(&self.dir, e))?;
        let path = self.sums_path();
        let tmp = self.dir.join("sums.tmp");
        let mut bytes = Vec::with_capacity(16 + 8 * sums.len());
        bytes.extend_from_slice(SUMS_MAGIC);
        bytes.extend_from_slice(&self.capacity.to_le_bytes());
        for s in sums {
            bytes.extend_from_slice(&s.to_le_bytes());
        }
        let mut f = File::create(&tmp).map_err(|e| err(&tmp, e))?;
        f.write_all(&bytes).map_err(|e| err(&tmp, e))?;
        f.sync_all().map_err(|e| err(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| err(&path, e))?;
        sync_dir(&path)
    }

    /// Checksums of every block of the target as it is now (after a full
    /// copy, or to start points on a target made before them).
    pub fn rebuild_sums(&self) -> Result<(), String> {
        let t = File::open(&self.target).map_err(|e| err(&self.target, e))?;
        let mut buf = vec![0u8; BLOCK as usize];
        let mut sums = Vec::with_capacity(self.blocks() as usize);
        for i in 0..self.blocks() {
            let n = self.block_len(i) as usize;
            read_block(&t, &mut buf[..n], i * BLOCK).map_err(|e| err(&self.target, e))?;
            sums.push(checksum(&buf[..n]));
        }
        self.store_sums(&sums)
    }

    /// Starts a run that takes the target from point `newest` to the next:
    /// the blocks it overwrites are saved in `newest`'s delta first.
    pub fn begin_run(&self, newest: u32) -> Result<Run<'_>, String> {
        std::fs::create_dir_all(&self.dir).map_err(|e| err(&self.dir, e))?;
        let path = self.delta_path(newest, true);
        let mut delta = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| err(&path, e))?;
        let mut head = Vec::with_capacity(HEAD as usize);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&VERSION.to_le_bytes());
        head.extend_from_slice(&newest.to_le_bytes());
        head.extend_from_slice(&self.capacity.to_le_bytes());
        delta.write_all(&head).map_err(|e| err(&path, e))?;
        delta.sync_all().map_err(|e| err(&path, e))?;
        sync_dir(&path)?;
        let target = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.target)
            .map_err(|e| err(&self.target, e))?;
        Ok(Run {
            points: self,
            point: newest,
            target,
            delta,
            delta_path: path,
            end: HEAD,
            saved: BTreeSet::new(),
            old: vec![0u8; BLOCK as usize],
        })
    }

    /// Reads delta `path`: its records, up to the first that is torn (a
    /// run interrupted while writing it), and whether it is complete.
    fn read_delta(&self, path: &Path, point: u32) -> Result<Delta, String> {
        let f = File::open(path).map_err(|e| err(path, e))?;
        let size = f.metadata().map_err(|e| err(path, e))?.len();
        let mut head = [0u8; HEAD as usize];
        f.read_exact_at(&mut head, 0).map_err(|e| err(path, e))?;
        if &head[..8] != MAGIC
            || head[8..12] != VERSION.to_le_bytes()
            || head[12..16] != point.to_le_bytes()
            || head[16..24] != self.capacity.to_le_bytes()
        {
            return Err(format!(
                "{}: not a delta of point {point} of this target",
                path.display()
            ));
        }
        let mut records = Vec::new();
        let mut at = HEAD;
        let mut complete = false;
        while at + HEAD <= size {
            let mut rh = [0u8; HEAD as usize];
            f.read_exact_at(&mut rh, at).map_err(|e| err(path, e))?;
            let index = u64::from_le_bytes(rh[..8].try_into().unwrap_or_default());
            let sum = u64::from_le_bytes(rh[8..16].try_into().unwrap_or_default());
            let len = u32::from_le_bytes(rh[16..20].try_into().unwrap_or_default());
            if index == END {
                complete = sum == records.len() as u64;
                break;
            }
            if index >= self.blocks()
                || u64::from(len) != self.block_len(index)
                || at + HEAD + u64::from(len) > size
            {
                break;
            }
            records.push(Record {
                index,
                sum,
                len,
                at: at + HEAD,
            });
            at += HEAD + u64::from(len);
        }
        Ok(Delta { records, complete })
    }

    /// Puts the target back to point `newest`, the newest the manifest
    /// names, after a run that was interrupted (its delta of `newest` is
    /// still there, complete or not, while the manifest does not name a
    /// newer point). Returns whether there was anything to undo. Deltas of
    /// points the manifest no longer keeps (`oldest` and later are kept)
    /// are deleted.
    pub fn recover(&self, newest: u32, oldest: u32) -> Result<bool, String> {
        let mut undone = false;
        for partial in [true, false] {
            let path = self.delta_path(newest, partial);
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if partial && meta.len() < HEAD {
                // Killed before its head was written, so before any
                // write to the target (which waits for the head's sync):
                // nothing to undo.
                std::fs::remove_file(&path).map_err(|e| err(&path, e))?;
                continue;
            }
            let delta = self.read_delta(&path, newest)?;
            let t = OpenOptions::new()
                .write(true)
                .open(&self.target)
                .map_err(|e| err(&self.target, e))?;
            let d = File::open(&path).map_err(|e| err(&path, e))?;
            let loaded = self.load_sums()?;
            let had_sums = loaded.is_some();
            let mut sums = loaded.unwrap_or_else(|| vec![0; self.blocks() as usize]);
            let mut buf = vec![0u8; BLOCK as usize];
            for r in &delta.records {
                let data = &mut buf[..r.len as usize];
                d.read_exact_at(data, r.at).map_err(|e| err(&path, e))?;
                if checksum(data) != r.sum {
                    // Torn as it was written: its block was not
                    // overwritten yet (the delta is synced first).
                    break;
                }
                t.write_all_at(data, r.index * BLOCK)
                    .map_err(|e| err(&self.target, e))?;
                if let Some(s) = sums.get_mut(r.index as usize) {
                    *s = r.sum;
                }
            }
            t.sync_all().map_err(|e| err(&self.target, e))?;
            if had_sums {
                self.store_sums(&sums)?;
            } else {
                // Lost: what the target holds again is the whole answer.
                self.rebuild_sums()?;
            }
            std::fs::remove_file(&path).map_err(|e| err(&path, e))?;
            undone = true;
        }
        // Deltas retention dropped from the manifest, and any other delta
        // of no kept point.
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                let Some(num) = name.strip_suffix(".delta") else {
                    continue;
                };
                match num.parse::<u32>() {
                    Ok(n) if n >= oldest && n < newest => {}
                    _ => {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
        Ok(undone)
    }

    /// Deletes the delta of point `n` (retention; the manifest no longer
    /// names the point).
    pub fn drop_point(&self, n: u32) -> Result<(), String> {
        let path = self.delta_path(n, false);
        match std::fs::remove_file(&path) {
            Ok(()) => sync_dir(&path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err(&path, e)),
        }
    }

    /// Where each block of point `n` lives: the delta of the lowest point
    /// from `n` to `newest - 1` that holds it, else the target.
    fn sources(&self, n: u32, newest: u32) -> Result<BTreeMap<u64, (u32, Record)>, String> {
        let mut map = BTreeMap::new();
        for p in (n..newest).rev() {
            let path = self.delta_path(p, false);
            let delta = self.read_delta(&path, p)?;
            if !delta.complete {
                return Err(format!("{}: the delta is incomplete", path.display()));
            }
            for r in delta.records {
                map.insert(r.index, (p, r));
            }
        }
        Ok(map)
    }

    /// Writes point `n` (`newest` being the target's own) to `out`, block
    /// by block, each checked against its checksum before it is written;
    /// `progress` is told the bytes done. A damaged block stops it.
    pub fn restore(
        &self,
        n: u32,
        newest: u32,
        out: &File,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), RestoreError> {
        if n == 0 || n > newest {
            return Err(RestoreError::Other(format!(
                "no point {n}: the newest is {newest}"
            )));
        }
        let sums = self.load_sums()?.ok_or_else(|| {
            RestoreError::Other(format!("{}: no checksums", self.sums_path().display()))
        })?;
        let map = self.sources(n, newest)?;
        let t = File::open(&self.target).map_err(|e| err(&self.target, e))?;
        let mut files: BTreeMap<u32, File> = BTreeMap::new();
        let mut buf = vec![0u8; BLOCK as usize];
        for i in 0..self.blocks() {
            let len = self.block_len(i) as usize;
            let data = &mut buf[..len];
            let (point, file, want) = match map.get(&i) {
                Some((p, r)) => {
                    let path = self.delta_path(*p, false);
                    if !files.contains_key(p) {
                        let f = File::open(&path).map_err(|e| err(&path, e))?;
                        files.insert(*p, f);
                    }
                    if let Some(f) = files.get(p) {
                        f.read_exact_at(data, r.at).map_err(|e| err(&path, e))?;
                    }
                    (*p, path, r.sum)
                }
                None => {
                    read_block(&t, data, i * BLOCK).map_err(|e| err(&self.target, e))?;
                    (
                        newest,
                        self.target.clone(),
                        sums.get(i as usize).copied().unwrap_or(0),
                    )
                }
            };
            if checksum(data) != want {
                return Err(RestoreError::Damaged(Damage {
                    point,
                    offset: i * BLOCK,
                    file,
                }));
            }
            out.write_all_at(data, i * BLOCK)
                .map_err(|e| RestoreError::Other(format!("writing at {}: {e}", i * BLOCK)))?;
            progress(len as u64);
        }
        out.sync_all()
            .map_err(|e| RestoreError::Other(format!("syncing the restored copy: {e}")))?;
        Ok(())
    }

    /// Checks every stored block: the target's against its checksums, and
    /// each delta of points `oldest..newest`. Returns the damaged ones.
    pub fn verify(&self, oldest: u32, newest: u32) -> Result<Vec<Damage>, String> {
        let mut bad = Vec::new();
        let sums = self
            .load_sums()?
            .ok_or_else(|| format!("{}: no checksums", self.sums_path().display()))?;
        let t = File::open(&self.target).map_err(|e| err(&self.target, e))?;
        let mut buf = vec![0u8; BLOCK as usize];
        for i in 0..self.blocks() {
            let data = &mut buf[..self.block_len(i) as usize];
            read_block(&t, data, i * BLOCK).map_err(|e| err(&self.target, e))?;
            if Some(&checksum(data)) != sums.get(i as usize) {
                bad.push(Damage {
                    point: newest,
                    offset: i * BLOCK,
                    file: self.target.clone(),
                });
            }
        }
        for p in oldest..newest {
            let path = self.delta_path(p, false);
            let delta = self.read_delta(&path, p)?;
            let d = File::open(&path).map_err(|e| err(&path, e))?;
            for r in &delta.records {
                let data = &mut buf[..r.len as usize];
                d.read_exact_at(data, r.at).map_err(|e| err(&path, e))?;
                if checksum(data) != r.sum {
                    bad.push(Damage {
                        point: p,
                        offset: r.index * BLOCK,
                        file: path.clone(),
                    });
                }
            }
            if !delta.complete {
                return Err(format!("{}: the delta is incomplete", path.display()));
            }
        }
        Ok(bad)
    }
}

/// Why a restore stopped.
#[derive(Debug)]
pub enum RestoreError {
    /// A block failed its checksum: nothing past it was written.
    Damaged(Damage),
    Other(String),
}

impl From<String> for RestoreError {
    fn from(s: String) -> Self {
        RestoreError::Other(s)
    }
}

impl std::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestoreError::Damaged(d) => d.fmt(f),
            RestoreError::Other(s) => f.write_str(s),
        }
    }
}

/// Reads `buf.len()` bytes at `off`; past the end of the file, zeros (a
/// target cut short reads as holes).
fn read_block(f: &File, buf: &mut [u8], off: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => {
                buf[done..].fill(0);
                break;
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A run under way (see [`Points::begin_run`]).
pub struct Run<'a> {
    points: &'a Points,
    point: u32,
    target: File,
    delta: File,
    delta_path: PathBuf,
    end: u64,
    saved: BTreeSet<u64>,
    old: Vec<u8>,
}

impl Run<'_> {
    /// Writes `data` at `off` of the target, after saving in the delta
    /// (and syncing it) every block it changes that was not saved yet.
    /// Parts of blocks that already hold the same bytes are not written:
    /// a full copy over a target with points writes only what changed, and
    /// leaves its holes. Returns the bytes written.
    pub fn write(&mut self, off: u64, data: &[u8]) -> Result<u64, String> {
        let p = self.points;
        let end = off + data.len() as u64;
        if end > p.capacity {
            return Err(format!("a write past the device's end, at {off}"));
        }
        // The parts to write, found (and their blocks saved) first, so
        // that one sync of the delta covers them all.
        let mut parts: Vec<(u64, u64)> = Vec::new();
        let mut appended = false;
        let mut i = off / BLOCK;
        while i * BLOCK < end {
            let start = i * BLOCK;
            let len = p.block_len(i) as usize;
            let from = off.max(start);
            let to = end.min(start + len as u64);
            let new = &data[(from - off) as usize..(to - off) as usize];
            let differs = if self.saved.contains(&i) {
                true
            } else {
                let old = &mut self.old[..len];
                read_block(&self.target, old, start).map_err(|e| err(&p.target, e))?;
                let was = &old[(from - start) as usize..(to - start) as usize];
                if new != was {
                    let mut rh = Vec::with_capacity(HEAD as usize);
                    rh.extend_from_slice(&i.to_le_bytes());
                    rh.extend_from_slice(&checksum(old).to_le_bytes());
                    rh.extend_from_slice(&(len as u32).to_le_bytes());
                    rh.extend_from_slice(&[0; 4]);
                    self.delta
                        .write_all_at(&rh, self.end)
                        .and_then(|()| self.delta.write_all_at(old, self.end + HEAD))
                        .map_err(|e| err(&self.delta_path, e))?;
                    self.end += HEAD + len as u64;
                    self.saved.insert(i);
                    appended = true;
                    true
                } else {
                    false
                }
            };
            if differs {
                match parts.last_mut() {
                    Some(last) if last.1 == from => last.1 = to,
                    _ => parts.push((from, to)),
                }
            }
            i += 1;
        }
        if appended {
            self.delta
                .sync_data()
                .map_err(|e| err(&self.delta_path, e))?;
        }
        let mut written = 0;
        for (from, to) in parts {
            let part = &data[(from - off) as usize..(to - off) as usize];
            self.target
                .write_all_at(part, from)
                .map_err(|e| err(&p.target, e))?;
            written += to - from;
        }
        Ok(written)
    }

    /// Ends the run: the target synced, the delta completed and named as
    /// point `self.point`'s, the target's checksums updated. The caller
    /// then records the new point in the manifest. Returns the bytes of
    /// the delta.
    pub fn finish(mut self) -> Result<u64, String> {
        let p = self.points;
        self.target.sync_all().map_err(|e| err(&p.target, e))?;
        let mut sums = match p.load_sums()? {
            Some(s) => s,
            None => return Err(format!("{}: no checksums", p.sums_path().display())),
        };
        for &i in &self.saved {
            let len = p.block_len(i) as usize;
            let buf = &mut self.old[..len];
            read_block(&self.target, buf, i * BLOCK).map_err(|e| err(&p.target, e))?;
            if let Some(s) = sums.get_mut(i as usize) {
                *s = checksum(buf);
            }
        }
        let mut tail = Vec::with_capacity(HEAD as usize);
        tail.extend_from_slice(&END.to_le_bytes());
        tail.extend_from_slice(&(self.saved.len() as u64).to_le_bytes());
        tail.extend_from_slice(&[0; 8]);
        self.delta
            .write_all_at(&tail, self.end)
            .and_then(|()| self.delta.sync_all())
            .map_err(|e| err(&self.delta_path, e))?;
        let done = p.delta_path(self.point, false);
        std::fs::rename(&self.delta_path, &done).map_err(|e| err(&done, e))?;
        sync_dir(&done)?;
        p.store_sums(&sums)?;
        Ok(self.end + HEAD)
    }
}

/// Applies retention to a manifest's points (oldest first): keeps the
/// newest `keep` (at least 1); returns the numbers of the points dropped,
/// whose deltas go once the manifest without them is stored.
pub fn retain(points: &mut Vec<crate::manifest::Point>, keep: Option<u32>) -> Vec<u32> {
    let Some(keep) = keep else {
        return Vec::new();
    };
    let keep = keep.max(1) as usize;
    if points.len() <= keep {
        return Vec::new();
    }
    let n = points.len() - keep;
    points.drain(..n).map(|p| p.number).collect()
}

impl Points {
    /// Forgets every point (a fresh history: the target was overwritten
    /// whole, or is a copy of another size).
    pub fn reset(&self) -> Result<(), String> {
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err(&self.dir, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Self {
            let d = std::env::temp_dir().join(format!("bs-points-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Dir(d)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A device of 5.5 blocks, its state at each run.
    const CAP: u64 = 5 * BLOCK + BLOCK / 2;

    fn state(seed: u8) -> Vec<u8> {
        (0..CAP)
            .map(|i| (i as u8).wrapping_mul(seed) ^ (i >> 20) as u8)
            .collect()
    }

    /// Runs from `from` to `to` as a backup would: writes the ranges that
    /// differ, in 256 KiB pieces.
    fn run<'a>(points: &'a Points, newest: u32, from: &[u8], to: &[u8]) -> Run<'a> {
        let mut r = points.begin_run(newest).unwrap();
        for off in (0..CAP).step_by(256 << 10) {
            let end = (off + (256 << 10)).min(CAP) as usize;
            let off = off as usize;
            if from[off..end] != to[off..end] {
                r.write(off as u64, &to[off..end]).unwrap();
            }
        }
        r
    }

    fn restored(points: &Points, n: u32, newest: u32, dir: &Path) -> Result<Vec<u8>, RestoreError> {
        let out = dir.join(format!("restored-{n}"));
        let f = File::create(&out).unwrap();
        points.restore(n, newest, &f, &mut |_| {})?;
        Ok(std::fs::read(&out).unwrap())
    }

    /// Point 1 is a full copy of `states[0]`; run k makes point k + 1.
    fn with_points(dir: &Path, states: &[Vec<u8>]) -> Points {
        let target = dir.join("t.img");
        std::fs::write(&target, &states[0]).unwrap();
        let points = Points::new(&target, CAP);
        points.rebuild_sums().unwrap();
        for k in 1..states.len() {
            let r = run(&points, k as u32, &states[k - 1], &states[k]);
            r.finish().unwrap();
        }
        points
    }

    #[test]
    fn every_point_restores_as_it_was() {
        let dir = Dir::new("restore");
        // Run 2 changes blocks 0-1, run 3 block 4 and the short tail.
        let mut states = vec![state(3)];
        let mut s = states[0].clone();
        s[10..(BLOCK as usize + 5)].fill(0xee);
        states.push(s.clone());
        s[(4 * BLOCK) as usize..].fill(0x11);
        states.push(s.clone());
        let points = with_points(&dir.0, &states);
        for (k, st) in states.iter().enumerate() {
            let got = restored(&points, k as u32 + 1, 3, &dir.0).unwrap();
            assert!(got == *st, "point {} differs", k + 1);
        }
        // A point costs what changed: two blocks, then one and a half.
        let size = |n| {
            std::fs::metadata(points.delta_path(n, false))
                .unwrap()
                .len()
        };
        assert_eq!(size(1), HEAD + 2 * (HEAD + BLOCK) + HEAD);
        assert_eq!(size(2), HEAD + (HEAD + BLOCK) + (HEAD + BLOCK / 2) + HEAD);
        assert_eq!(points.verify(1, 3).unwrap(), vec![]);
    }

    #[test]
    fn an_interrupted_run_is_undone() {
        let dir = Dir::new("undo");
        let a = state(5);
        let mut b = a.clone();
        b[..(3 * BLOCK) as usize].fill(7);
        let points = with_points(&dir.0, std::slice::from_ref(&a));
        // Killed after two of three blocks were written: the delta is
        // partial, the target half new.
        {
            let mut r = points.begin_run(1).unwrap();
            r.write(0, &b[..(2 * BLOCK) as usize]).unwrap();
        }
        assert!(points.delta_path(1, true).exists());
        assert!(points.recover(1, 1).unwrap());
        assert!(std::fs::read(&points.target).unwrap() == a);
        assert!(!points.delta_path(1, true).exists());
        assert_eq!(points.verify(1, 1).unwrap(), vec![]);
        // Killed after the delta was complete, before the manifest named
        // the new point: undone as well.
        let r = run(&points, 1, &a, &b);
        r.finish().unwrap();
        assert!(points.recover(1, 1).unwrap());
        assert!(std::fs::read(&points.target).unwrap() == a);
        assert_eq!(points.verify(1, 1).unwrap(), vec![]);
        // Killed between creating the delta and writing its head: an
        // empty delta, nothing to undo (and no error).
        std::fs::write(points.delta_path(1, true), b"").unwrap();
        assert!(!points.recover(1, 1).unwrap());
        assert!(!points.delta_path(1, true).exists());
        // Nothing to undo once the manifest names it.
        let r = run(&points, 1, &a, &b);
        r.finish().unwrap();
        assert!(!points.recover(2, 1).unwrap());
        assert!(restored(&points, 1, 2, &dir.0).unwrap() == a);
    }

    #[test]
    fn lost_checksums_come_back_at_recovery() {
        let dir = Dir::new("nosums");
        let a = state(7);
        let points = with_points(&dir.0, std::slice::from_ref(&a));
        {
            let mut r = points.begin_run(1).unwrap();
            r.write(BLOCK, &vec![3u8; BLOCK as usize]).unwrap();
        }
        std::fs::remove_file(points.sums_path()).unwrap();
        assert!(points.recover(1, 1).unwrap());
        assert!(std::fs::read(&points.target).unwrap() == a);
        assert_eq!(points.verify(1, 1).unwrap(), vec![]);
    }

    #[test]
    fn a_torn_record_is_not_put_back() {
        let dir = Dir::new("torn");
        let a = state(9);
        let points = with_points(&dir.0, std::slice::from_ref(&a));
        {
            let mut r = points.begin_run(1).unwrap();
            r.write(0, &vec![1u8; BLOCK as usize]).unwrap();
        }
        // A second record cut in its data, whose block the run never
        // overwrote (the record comes first).
        let path = points.delta_path(1, true);
        let f = OpenOptions::new().append(true).open(&path).unwrap();
        let mut rh = Vec::new();
        rh.extend_from_slice(&2u64.to_le_bytes());
        rh.extend_from_slice(&0u64.to_le_bytes());
        rh.extend_from_slice(&(BLOCK as u32).to_le_bytes());
        rh.extend_from_slice(&[0; 4]);
        (&f).write_all(&rh).unwrap();
        (&f).write_all(&[0xab; 100]).unwrap();
        assert!(points.recover(1, 1).unwrap());
        assert!(std::fs::read(&points.target).unwrap() == a);
    }

    #[test]
    fn retention_drops_the_oldest_points() {
        let dir = Dir::new("keep");
        let states: Vec<Vec<u8>> = (1..=5).map(state).collect();
        let points = with_points(&dir.0, &states);
        // Keep the 3 newest: points 3, 4 and 5.
        for n in 1..3 {
            points.drop_point(n).unwrap();
        }
        for n in 3..=5u32 {
            assert!(restored(&points, n, 5, &dir.0).unwrap() == states[n as usize - 1]);
        }
        assert!(restored(&points, 2, 5, &dir.0).is_err());
        // A delta left by an interrupted retention goes at recovery.
        std::fs::write(points.delta_path(1, false), b"stale").unwrap();
        assert!(!points.recover(5, 3).unwrap());
        assert!(!points.delta_path(1, false).exists());
        assert!(points.delta_path(3, false).exists());
    }

    #[test]
    fn a_flipped_byte_is_named() {
        let dir = Dir::new("flip");
        let a = state(2);
        let mut b = a.clone();
        b[(2 * BLOCK) as usize..(3 * BLOCK) as usize].fill(0x5a);
        let points = with_points(&dir.0, &[a, b.clone()]);
        // One byte of point 1's copy of block 2.
        let path = points.delta_path(1, false);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[(2 * HEAD + 1000) as usize] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let bad = points.verify(1, 2).unwrap();
        assert_eq!(
            bad,
            vec![Damage {
                point: 1,
                offset: 2 * BLOCK,
                file: path.clone()
            }]
        );
        match restored(&points, 1, 2, &dir.0) {
            Err(RestoreError::Damaged(d)) => assert_eq!(d.offset, 2 * BLOCK),
            other => panic!("{other:?}"),
        }
        // The newest point does not need that delta.
        assert!(restored(&points, 2, 2, &dir.0).unwrap() == b);
        // A byte of the target itself.
        let mut t = std::fs::read(&points.target).unwrap();
        t[7] ^= 0x80;
        std::fs::write(&points.target, &t).unwrap();
        let bad = points.verify(1, 2).unwrap();
        assert_eq!(bad[0].point, 2);
        assert_eq!(bad[0].offset, 0);
    }

    #[test]
    fn retention_keeps_the_newest() {
        let p = |number| crate::manifest::Point {
            number,
            time: 0,
            run: "incremental".into(),
            generation: String::new(),
            snapshot: 0,
            bytes: 0,
        };
        let mut v: Vec<_> = (1..=5).map(p).collect();
        assert_eq!(retain(&mut v, None), Vec::<u32>::new());
        assert_eq!(retain(&mut v, Some(3)), vec![1, 2]);
        assert_eq!(
            v.iter().map(|p| p.number).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        assert_eq!(retain(&mut v, Some(0)), vec![3, 4]);
        assert_eq!(retain(&mut v, Some(1)), Vec::<u32>::new());
    }

    #[test]
    fn checksum_is_fnv1a() {
        assert_eq!(checksum(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(checksum(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
