// SPDX-License-Identifier: GPL-2.0

//! Diff storage bookkeeping: the sector ranges user space hands over, their
//! validation, and carving chunk-sized regions out of them.
//!
//! Ranges are appended over a snapshot's life. Regions are allocated in
//! order, each inside one range and aligned to a page, so a region never
//! straddles two ranges; the tail of a range too short for the next region
//! is skipped.

/// A run of sectors on one storage device (`dev` is the caller's handle).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StorageRange {
    pub dev: u32,
    pub start: u64,
    pub len: u64,
}

/// Why ranges are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeError {
    /// Zero length.
    Empty,
    /// Start or length not a multiple of the device's logical block.
    Unaligned,
    /// Past the end of the device.
    PastEnd,
    /// Overlaps another range given now or before.
    Overlap,
}

/// Checks ranges `new` (`(start, len)` in sectors, sorted in place) for a
/// device of `dev_sectors` sectors with `align` sectors per logical block,
/// against the ranges already given on that device.
pub fn validate_ranges(
    new: &mut [(u64, u64)],
    existing: impl Iterator<Item = (u64, u64)> + Clone,
    dev_sectors: u64,
    align: u64,
) -> Result<(), RangeError> {
    let align = align.max(1);
    for &(start, len) in new.iter() {
        if len == 0 {
            return Err(RangeError::Empty);
        }
        if start % align != 0 || len % align != 0 {
            return Err(RangeError::Unaligned);
        }
        match start.checked_add(len) {
            Some(end) if end <= dev_sectors => {}
            _ => return Err(RangeError::PastEnd),
        }
    }
    new.sort_unstable();
    for w in new.windows(2) {
        // Sorted and in bounds, so the sums cannot overflow.
        if w[0].0 + w[0].1 > w[1].0 {
            return Err(RangeError::Overlap);
        }
    }
    for (s, l) in existing {
        if overlaps_sorted(new, s, l) {
            return Err(RangeError::Overlap);
        }
    }
    Ok(())
}

/// Whether `[start, start + len)` overlaps one of `sorted`: `(start, len)`
/// ranges sorted by start, disjoint, none past `u64::MAX`.
pub fn overlaps_sorted(sorted: &[(u64, u64)], start: u64, len: u64) -> bool {
    let end = start.saturating_add(len);
    // First range ending after `start`; it overlaps if it starts before `end`.
    let i = sorted.partition_point(|&(s, l)| s.saturating_add(l) <= start);
    matches!(sorted.get(i), Some(&(s, _)) if s < end)
}

/// A region handed out for one chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub dev: u32,
    pub sector: u64,
    pub len: u64,
}

/// Sectors in a page: regions start on page boundaries.
pub const PAGE_SECTORS: u64 = 8;

/// Allocation state over a growing list of ranges that the caller keeps.
///
/// The caller passes the same list, only ever appended to, on every call.
#[derive(Clone, Copy, Debug, Default)]
pub struct Allocator {
    /// Index of the range allocation continues in.
    range: usize,
    /// Sectors used at the start of that range (alignment gaps included).
    offset: u64,
    /// Sectors appended in all.
    total: u64,
    /// Sectors allocated or skipped.
    consumed: u64,
    /// Whether a low free space event may fire.
    armed: bool,
}

impl Allocator {
    pub const fn new() -> Self {
        Self {
            range: 0,
            offset: 0,
            total: 0,
            consumed: 0,
            armed: true,
        }
    }

    /// Makes every range free again, as appended (a TAKE that failed after
    /// copies began: what they stored belongs to no snapshot).
    pub fn release_all(&mut self) {
        *self = Self {
            total: self.total,
            ..Self::new()
        };
    }

    /// Records that a range of `len` sectors was appended to the list. Arms
    /// the low free space event again.
    pub fn appended(&mut self, len: u64) {
        self.total = self.total.saturating_add(len);
        self.armed = true;
    }

    /// Sectors appended in all.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Sectors allocated or skipped so far (alignment gaps and the skipped
    /// tails of ranges included): what the snapshot has consumed.
    pub fn used(&self) -> u64 {
        self.consumed
    }

    /// Sectors still free (alignment gaps and skipped tails excluded once
    /// passed).
    pub fn free(&self) -> u64 {
        self.total.saturating_sub(self.consumed)
    }

    /// Takes `len` sectors, page aligned, from `ranges`; `None` when no
    /// range left has room.
    pub fn alloc(&mut self, ranges: &[StorageRange], len: u64) -> Option<Region> {
        while let Some(r) = ranges.get(self.range) {
            let at = r.start + self.offset;
            let pad = (PAGE_SECTORS - at % PAGE_SECTORS) % PAGE_SECTORS;
            if self.offset + pad + len <= r.len {
                self.offset += pad + len;
                self.consumed = self.consumed.saturating_add(pad + len);
                return Some(Region {
                    dev: r.dev,
                    sector: at + pad,
                    len,
                });
            }
            // The rest of this range is too short: skip it.
            self.consumed = self.consumed.saturating_add(r.len - self.offset);
            self.range += 1;
            self.offset = 0;
        }
        None
    }

    /// Whether a low free space event is due now: free space fell below
    /// `threshold` and no event fired since the last append. Disarms.
    pub fn low_space_due(&mut self, threshold: u64) -> bool {
        if self.armed && self.free() < threshold {
            self.armed = false;
            return true;
        }
        false
    }
}

#[cfg(test)]
#[path = "tests/storage.rs"]
mod tests;
