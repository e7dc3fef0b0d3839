// SPDX-License-Identifier: GPL-2.0

//! The two procedures of the CBT store, over any block I/O: a
//! *checkpoint* writes both maps to the map slot that the header does not
//! name, flushes, then writes a header that names them to the header block
//! that does not hold the current one, and flushes again; an *attach* finds
//! the header that counts, checks continuity and every map block, and hands
//! the maps back. `persist.rs` has the format; the module gives these its
//! page I/O, the host tests a store in memory that fails and tears writes.
//! A store that fails any check is never used: the caller starts a new
//! generation with the reason returned.

use super::persist::{
    continuity, newest, next_header_block, replay_intent, BlockHead, BlockKind, DeviceNow, Header,
    Layout, Reset, StoreError, HEAD_BYTES, MAGIC, PAYLOAD, STORE_BLOCK, VERSION,
};

/// A store's blocks, read and written whole ([`STORE_BLOCK`] bytes); each
/// call says whether it succeeded.
pub trait StoreIo {
    /// Reads store block `block` into `buf`.
    fn read(&mut self, block: u64, buf: &mut [u8]) -> bool;
    /// Writes `buf` to store block `block`.
    fn write(&mut self, block: u64, buf: &[u8]) -> bool;
    /// Makes every write that has completed durable.
    fn flush(&mut self) -> bool;
}

/// Why a checkpoint did not complete. The header that counted before it
/// still counts (a checkpoint only ever writes where that one does not
/// point), so the store stays as the last checkpoint left it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointError {
    /// The store is too small for the maps, or a buffer for a block.
    Invalid,
    /// A read, write or flush of the store failed.
    Io,
}

/// The blocks of both maps in map slot `slot`, active map first: whether
/// of the snapshot map, their kind, their index in the map and their
/// place in the store.
fn map_blocks(layout: &Layout, slot: u8) -> impl Iterator<Item = (bool, BlockKind, u32, u64)> + '_ {
    [false, true].into_iter().flat_map(move |snapshot| {
        let kind = if snapshot {
            BlockKind::SnapshotMap
        } else {
            BlockKind::ActiveMap
        };
        (0..layout.map_blocks())
            .map(move |i| (snapshot, kind, i, layout.map_block(slot, snapshot, i)))
    })
}

/// Bytes of map `snapshot` (the snapshot map if true, else the active
/// one) from `offset` into `out`; how many (0 past the map's end).
pub type ReadMap<'a> = dyn Fn(bool, usize, &mut [u8]) -> usize + 'a;

/// Writes a checkpoint of the maps that `maps` reads: `next` is the header
/// to write, but for its sequence numbers, map slot and intent epoch,
/// which follow `current` (the header that counts and its block, `None`
/// for a store being made). The new epoch's intent region is written
/// empty with the maps, so that every block of it checks after a crash.
/// `buf` is one store block of scratch. Returns the header written and
/// its block: the new current header.
pub fn checkpoint(
    io: &mut dyn StoreIo,
    current: Option<(u8, Header)>,
    mut next: Header,
    maps: &ReadMap<'_>,
    buf: &mut [u8],
) -> Result<(u8, Header), CheckpointError> {
    let buf = buf.get_mut(..STORE_BLOCK).ok_or(CheckpointError::Invalid)?;
    let (seq, slot, epoch, block) = match current {
        Some((b, h)) => (h.seq + 1, h.map_slot ^ 1, h.epoch + 1, next_header_block(b)),
        None => (1, 0, 0, 0),
    };
    next.seq = seq;
    next.map_slot = slot;
    next.map_seq = seq;
    next.epoch = epoch;
    let layout = next.layout();
    if layout.total() > next.store_blocks {
        return Err(CheckpointError::Invalid);
    }
    for (snapshot, kind, i, at) in map_blocks(&layout, slot) {
        buf.fill(0);
        if let Some(payload) = buf.get_mut(HEAD_BYTES..) {
            maps(snapshot, i as usize * PAYLOAD, payload);
        }
        let head = BlockHead {
            kind,
            index: at as u32,
            stamp: seq,
        };
        head.seal(buf).map_err(|_| CheckpointError::Invalid)?;
        if !io.write(at, buf) {
            return Err(CheckpointError::Io);
        }
    }
    for i in 0..layout.intent_blocks() {
        buf.fill(0);
        let at = layout.intent_block(epoch, i);
        intent_head(at, epoch)
            .seal(buf)
            .map_err(|_| CheckpointError::Invalid)?;
        if !io.write(at, buf) {
            return Err(CheckpointError::Io);
        }
    }
    if !io.flush() {
        return Err(CheckpointError::Io);
    }
    next.encode(buf).map_err(|_| CheckpointError::Invalid)?;
    if !io.write(u64::from(block), buf) || !io.flush() {
        return Err(CheckpointError::Io);
    }
    Ok((block, next))
}

/// The head of intent block `at` (a store block) of `epoch`.
pub fn intent_head(at: u64, epoch: u64) -> BlockHead {
    BlockHead {
        kind: BlockKind::Intent,
        index: at as u32,
        stamp: epoch,
    }
}

/// Puts bytes into map `snapshot` (as [`ReadMap`]) from `offset`.
pub type WriteMap<'a> = dyn FnMut(bool, usize, &[u8]) + 'a;

/// Reads the store for a tracker attaching to the device as `now` says it
/// is, from a store of `store_blocks` blocks. If the store may be taken
/// up, every block of its maps is checked and handed to `maps` (the
/// tracker's maps, zeroed; map bytes past the device's block count are
/// not handed), and the header that counts and its block are returned;
/// otherwise why a new generation starts. An unsealed store (a crash)
/// passes here only in a later boot; if it kept write-intent marks, each
/// tracking block that its intent region marks is handed to `written`
/// (every block of the region must check, else the store is damaged),
/// to be counted as written with the header's active number.
pub fn attach(
    io: &mut dyn StoreIo,
    store_blocks: u64,
    now: &DeviceNow<'_>,
    maps: &mut WriteMap<'_>,
    written: &mut dyn FnMut(u32),
    buf: &mut [u8],
) -> Result<(u8, Header), Reset> {
    let buf = buf.get_mut(..STORE_BLOCK).ok_or(Reset::StoreDamaged)?;
    let mut read_header = |b: u64, buf: &mut [u8]| {
        if io.read(b, buf) {
            Header::decode(buf)
        } else {
            Err(StoreError::Invalid)
        }
    };
    let a = read_header(0, buf);
    let b = read_header(1, buf);
    let fresh = |r: &Result<Header, StoreError>| r == &Err(StoreError::NotAStore);
    let (block, h) = match newest(a, b) {
        Ok(x) => x,
        // Neither copy has the magic: nothing was ever written here.
        Err(_) if fresh(&a) && fresh(&b) => return Err(Reset::NewStore),
        Err(_) => return Err(Reset::StoreDamaged),
    };
    if h.store_blocks > store_blocks {
        // Cut shorter than it was made: its maps may be gone.
        return Err(Reset::StoreDamaged);
    }
    continuity(&h, now)?;
    let layout: Layout = h.layout();
    let count = h.block_count as usize;
    for (snapshot, kind, i, at) in map_blocks(&layout, h.map_slot) {
        let head = BlockHead {
            kind,
            index: at as u32,
            stamp: h.map_seq,
        };
        if !io.read(at, buf) || head.check(buf).is_err() {
            return Err(Reset::StoreDamaged);
        }
        let offset = i as usize * PAYLOAD;
        let n = count.saturating_sub(offset).min(PAYLOAD);
        if let Some(payload) = buf.get(HEAD_BYTES..HEAD_BYTES + n) {
            maps(snapshot, offset, payload);
        }
    }
    if !h.clean && h.intent {
        for i in 0..layout.intent_blocks() {
            let at = layout.intent_block(h.epoch, i);
            if !io.read(at, buf) || intent_head(at, h.epoch).check(buf).is_err() {
                return Err(Reset::StoreDamaged);
            }
            let payload = buf.get(HEAD_BYTES..).unwrap_or(&[]);
            replay_intent(payload, i, h.block_count, &mut *written);
        }
    }
    Ok((block, h))
}

/// The header that counts and its block, if either copy is valid: where
/// the next checkpoint follows on after an attach that refused the store
/// (its sequence must pass every header still there).
pub fn current_header(io: &mut dyn StoreIo, buf: &mut [u8]) -> Option<(u8, Header)> {
    let buf = buf.get_mut(..STORE_BLOCK)?;
    let mut read = |b: u64| {
        if io.read(b, buf) {
            Header::decode(buf)
        } else {
            Err(StoreError::Invalid)
        }
    };
    let a = read(0);
    let b = read(1);
    newest(a, b).ok()
}

/// Whether a store was ever made here: either header copy has the magic
/// (valid, damaged or spoiled alike). What an attach from recorded ranges
/// checks before it writes anything.
pub fn store_is_there(io: &mut dyn StoreIo, buf: &mut [u8]) -> bool {
    let Some(buf) = buf.get_mut(..STORE_BLOCK) else {
        return false;
    };
    (0..2u64).any(|b| io.read(b, buf) && buf.get(..MAGIC.len()) == Some(&MAGIC[..]))
}

/// Fills `buf` (a store block) with what spoils a header copy: the magic
/// and version with nothing valid after them, so that an attach finds a
/// damaged store (not a new one) and never takes it up. For a store whose
/// marks could not be kept.
pub fn spoiled_header(buf: &mut [u8]) {
    buf.iter_mut().for_each(|b| *b = 0);
    if let Some(head) = buf.get_mut(..12) {
        head[..8].copy_from_slice(&MAGIC);
        head[8..].copy_from_slice(&VERSION.to_le_bytes());
    }
}

/// Sectors per store block.
const BLOCK_SECTORS: u64 = (STORE_BLOCK / 512) as u64;

/// Where a store's blocks lie on its device: the ranges user space gave
/// (a file's extents, or a device range), in the order of the store's
/// blocks.
pub struct Extents<'a> {
    ranges: &'a [(u64, u64)],
    blocks: u64,
}

impl<'a> Extents<'a> {
    /// The store over `ranges` (start sector, sector count) of a device of
    /// `capacity` sectors. Each range must hold whole store blocks, lie on
    /// the device and overlap no other: the store's writes must never land
    /// on each other or on anything else. Quadratic in the number of
    /// ranges, which the caller caps.
    pub fn new(ranges: &'a [(u64, u64)], capacity: u64) -> Result<Self, StoreError> {
        let mut blocks = 0u64;
        for (k, &(start, count)) in ranges.iter().enumerate() {
            let end = start.checked_add(count).ok_or(StoreError::Invalid)?;
            if count == 0
                || start % BLOCK_SECTORS != 0
                || count % BLOCK_SECTORS != 0
                || end > capacity
            {
                return Err(StoreError::Invalid);
            }
            let overlaps = ranges
                .iter()
                .skip(k + 1)
                .any(|&(s, c)| s < end && start < s.saturating_add(c));
            if overlaps {
                return Err(StoreError::Invalid);
            }
            blocks += count / BLOCK_SECTORS;
        }
        Ok(Self { ranges, blocks })
    }

    /// Store blocks the ranges hold.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// The device sector where store block `block` starts, if the store
    /// has that block.
    pub fn sector_of(&self, block: u64) -> Option<u64> {
        let mut first = 0u64;
        for &(start, count) in self.ranges {
            let n = count / BLOCK_SECTORS;
            if block < first + n {
                return Some(start + (block - first) * BLOCK_SECTORS);
            }
            first += n;
        }
        None
    }
}

#[cfg(test)]
#[path = "tests/cbt_store.rs"]
mod tests;
