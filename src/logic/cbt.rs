// SPDX-License-Identifier: GPL-2.0

//! Changed block tracking (CBT): one byte per tracking block holding the
//! change number of the block's last write.
//!
//! A tracker keeps two maps. Writes update the *active* map with the active
//! change number; the *snapshot* map is the active map as it was when the
//! last snapshot was taken, and is what user space reads. A block whose byte
//! is greater than `k` changed after snapshot `k` (within one generation).
//!
//! Taking a snapshot switches: the active map is copied into the snapshot
//! map, the active number becomes the previous number and grows by one.
//! When it would pass 255 the generation ends: the active map is cleared,
//! numbering restarts at 1 and a new generation identifier is drawn, which
//! tells backup tools that an incremental copy is no longer possible.

use super::geometry::Geometry;

/// Byte storage for a map, in pages of equal size, so that large maps need
/// no large contiguous allocation. A map may be sparse: an absent page
/// reads as zeros and must be put in place (zeroed) before it is written.
pub trait PagedBytes {
    /// Bytes per page (a power of two).
    const PAGE: usize;
    /// A zeroed page that [`PagedBytes::put`] takes.
    type Page;
    /// Number of pages.
    fn pages(&self) -> usize;
    /// Whether page `i` is there (`i < pages()`).
    fn present(&self, i: usize) -> bool;
    /// Page `i`, `PAGE` bytes long (zeros if absent); `i < pages()`.
    fn page(&self, i: usize) -> &[u8];
    /// Page `i`, `PAGE` bytes long, if present; `i < pages()`.
    fn page_mut(&mut self, i: usize) -> &mut [u8];
    /// Puts zeroed `page` in place of absent page `i`.
    fn put(&mut self, i: usize, page: Self::Page);
}

/// Pages needed for `bytes` bytes.
pub fn pages_for<M: PagedBytes>(bytes: usize) -> usize {
    bytes.div_ceil(M::PAGE)
}

/// Bytes of the `differs` map of a tracker whose maps have `bytes` bytes:
/// one per page.
pub fn differs_bytes<M: PagedBytes>(bytes: usize) -> usize {
    pages_for::<M>(bytes)
}

/// Why a map cannot back a tracker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CbtError {
    /// A map has fewer bytes than the geometry has blocks.
    MapTooSmall,
    /// Stored maps and numbers that no tracker could have held.
    Inconsistent,
}

/// The two maps of a tracker and its numbering.
///
/// # Invariants
///
/// Both maps hold at least `geometry.count()` bytes; `active_number >= 1`;
/// every byte of the active map is `<= active_number`; the active map and
/// `differs` have every page present. `differs` has a byte for every page
/// of the maps, and where it is 0 the two maps' pages are equal: taking a
/// snapshot copies only the pages written since the last one, so that its
/// time grows with the changes, not with the device. The snapshot map is
/// sparse: a page gets memory only when something nonzero goes there.
/// The numbering of a tracker, as [`Cbt::numbers`] gives it: what a TAKE
/// that fails after its switch puts back with [`Cbt::undo_switch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Numbers {
    previous: u8,
    active: u8,
    generation: [u8; 16],
}

pub struct Cbt<M: PagedBytes> {
    geometry: Geometry,
    active: M,
    snapshot: M,
    differs: M,
    active_number: u8,
    previous_number: u8,
    generation: [u8; 16],
}

impl<M: PagedBytes> Cbt<M> {
    /// A fresh tracker: the maps must be zeroed; `differs` needs a byte for
    /// each page of the maps ([`differs_bytes`]).
    pub fn new(
        geometry: Geometry,
        active: M,
        snapshot: M,
        differs: M,
        generation: [u8; 16],
    ) -> Result<Self, CbtError> {
        let need = geometry.count() as usize;
        for m in [&active, &snapshot] {
            if m.pages().saturating_mul(M::PAGE) < need {
                return Err(CbtError::MapTooSmall);
            }
        }
        if differs.pages().saturating_mul(M::PAGE) < differs_bytes::<M>(need) {
            return Err(CbtError::MapTooSmall);
        }
        Ok(Self {
            geometry,
            active,
            snapshot,
            differs,
            active_number: 1,
            previous_number: 0,
            generation,
        })
    }

    /// The tracking geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Change number of the last snapshot taken (0 before the first).
    pub fn previous_number(&self) -> u8 {
        self.previous_number
    }

    /// Change number that writes store now.
    pub fn active_number(&self) -> u8 {
        self.active_number
    }

    /// Whether a device now `capacity` sectors long has outgrown (or shrunk
    /// below) this map: then it needs a fresh map and generation, since
    /// block numbers no longer mean the same ranges.
    pub fn resized(&self, capacity: u64) -> bool {
        self.geometry.capacity() != capacity
    }

    /// The generation identifier.
    pub fn generation(&self) -> &[u8; 16] {
        &self.generation
    }

    /// Records a write of `len` sectors at `sector` in the active map.
    pub fn mark_write(&mut self, sector: u64, len: u64) {
        if let Some((first, end)) = self.geometry.units_of(sector, len) {
            raise(
                &mut self.active,
                first as usize,
                end as usize,
                self.active_number,
            );
            self.note_differs(first as usize, end as usize);
        }
    }

    /// Snapshot map pages that [`Cbt::switch`] needs put in place first.
    pub fn missing_for_switch(&self) -> usize {
        let pages = pages_for::<M>(self.geometry.count() as usize);
        (0..pages)
            .filter(|&i| self.flagged(i) && !self.snapshot.present(i))
            .count()
    }

    /// Snapshot map pages that [`Cbt::mark_dirty`] of these sectors needs
    /// put in place first.
    pub fn missing_for_dirty(&self, sector: u64, len: u64) -> usize {
        match self.geometry.units_of(sector, len) {
            Some((first, end)) => (first as usize / M::PAGE..=(end as usize - 1) / M::PAGE)
                .filter(|&i| !self.snapshot.present(i))
                .count(),
            None => 0,
        }
    }

    /// Whether page `i` of the maps may differ.
    fn flagged(&self, i: usize) -> bool {
        self.differs
            .page(i / M::PAGE)
            .get(i % M::PAGE)
            .is_some_and(|&f| f != 0)
    }

    /// Puts pages from `supply` in place of the absent snapshot map pages
    /// among `wanted`; `false` if `supply` ran out first.
    fn materialize(
        snapshot: &mut M,
        wanted: impl Iterator<Item = usize>,
        supply: &mut dyn FnMut() -> Option<M::Page>,
    ) -> bool {
        for i in wanted {
            if !snapshot.present(i) {
                match supply() {
                    Some(p) => snapshot.put(i, p),
                    None => return false,
                }
            }
        }
        true
    }

    /// Notes that the pages holding bytes `[first, end)` may differ between
    /// the maps.
    fn note_differs(&mut self, first: usize, end: usize) {
        if first >= end {
            return;
        }
        raise(
            &mut self.differs,
            first / M::PAGE,
            (end - 1) / M::PAGE + 1,
            1,
        );
    }

    /// Records a change that user space reports or that was written to a
    /// snapshot image: the active map gets the active number, the snapshot
    /// map the previous number, so the change shows both in the map read now
    /// and in the one read after the next snapshot.
    /// The snapshot map's pages come from `supply` where absent
    /// ([`Cbt::missing_for_dirty`] says how many); if it runs out, nothing
    /// is marked and `false` is returned.
    pub fn mark_dirty(
        &mut self,
        sector: u64,
        len: u64,
        supply: &mut dyn FnMut() -> Option<M::Page>,
    ) -> bool {
        if let Some((first, end)) = self.geometry.units_of(sector, len) {
            let pages = first as usize / M::PAGE..=(end as usize - 1) / M::PAGE;
            if !Self::materialize(&mut self.snapshot, pages, supply) {
                return false;
            }
            raise(
                &mut self.active,
                first as usize,
                end as usize,
                self.active_number,
            );
            raise(
                &mut self.snapshot,
                first as usize,
                end as usize,
                self.previous_number,
            );
            self.note_differs(first as usize, end as usize);
        }
        true
    }

    /// Takes a snapshot of the map. `new_generation` is called when the
    /// numbers wrap and a new generation starts. The snapshot map's pages
    /// come from `supply` where absent ([`Cbt::missing_for_switch`] says
    /// how many). If it runs out, the map cannot be copied whole: the
    /// generation changes instead (user space then knows that the changes
    /// since earlier snapshots are lost), and `false` is returned.
    pub fn switch(
        &mut self,
        new_generation: impl FnOnce() -> [u8; 16],
        supply: &mut dyn FnMut() -> Option<M::Page>,
    ) -> bool {
        let count = self.geometry.count() as usize;
        let pages = pages_for::<M>(count);
        let wanted: KeepFlagged<'_, M> = KeepFlagged {
            differs: &self.differs,
            next: 0,
            end: pages,
        };
        let whole = Self::materialize(&mut self.snapshot, wanted, supply);
        if !whole {
            // Start over: both maps zero (the snapshot map's present pages
            // are cleared), a new generation, numbering from 1 after this
            // snapshot.
            for i in 0..pages {
                self.snapshot.page_mut(i).fill(0);
                self.active.page_mut(i).fill(0);
            }
            for i in 0..self.differs.pages() {
                self.differs.page_mut(i).fill(0);
            }
            self.previous_number = 0;
            self.active_number = 1;
            self.generation = new_generation();
            return false;
        }
        for fp in 0..pages_for::<M>(pages) {
            let flags = self.differs.page_mut(fp);
            for (j, flag) in flags.iter_mut().enumerate() {
                let i = fp * M::PAGE + j;
                if *flag == 0 || i >= pages {
                    continue;
                }
                *flag = 0;
                // Present: materialised above.
                let dst = self.snapshot.page_mut(i);
                for (d, a) in dst.iter_mut().zip(self.active.page(i)) {
                    *d = *a;
                }
            }
        }
        self.previous_number = self.active_number;
        if self.active_number == u8::MAX {
            for i in 0..self.active.pages() {
                self.active.page_mut(i).fill(0);
            }
            // The snapshot map keeps the old numbers: every page differs.
            self.note_differs(0, count);
            self.active_number = 1;
            self.generation = new_generation();
        } else {
            self.active_number += 1;
        }
        true
    }

    /// The numbering now, to undo a switch with.
    pub fn numbers(&self) -> Numbers {
        Numbers {
            previous: self.previous_number,
            active: self.active_number,
            generation: self.generation,
        }
    }

    /// Undoes the numbering of a switch whose snapshot could not be taken
    /// (its images could not be made), `before` being [`Cbt::numbers`]
    /// from just before that [`Cbt::switch`]: the next TAKE gets the number
    /// this one would have had. The maps stay: the snapshot map holds the
    /// active map as it was at the switch, and every page written since is
    /// flagged, so the next switch copies what it must; blocks written
    /// since carry the undone number, above that of every snapshot kept,
    /// so no change is lost (at worst, one is reported once more). A
    /// switch that started a new generation cannot be undone (its cleared
    /// map does not come back): `false`, and the new generation stays.
    pub fn undo_switch(&mut self, before: Numbers) -> bool {
        if self.generation != before.generation {
            return false;
        }
        self.previous_number = before.previous;
        self.active_number = before.active;
        true
    }

    /// Puts bytes that a CBT store kept into map `snapshot` (the snapshot
    /// map if true, else the active one) of a fresh tracker, from byte
    /// `offset`, before [`Cbt::adopt`]. The snapshot map's pages come from
    /// `supply` where absent and something nonzero goes there; `false` if
    /// it ran out (nothing is lost: the caller then starts afresh).
    pub fn load_bytes(
        &mut self,
        snapshot: bool,
        offset: usize,
        bytes: &[u8],
        supply: &mut dyn FnMut() -> Option<M::Page>,
    ) -> bool {
        let count = self.geometry.count() as usize;
        let end = offset.saturating_add(bytes.len()).min(count);
        let mut i = offset;
        while i < end {
            let page = i / M::PAGE;
            let from = i % M::PAGE;
            let to = (end - page * M::PAGE).min(M::PAGE);
            let src = &bytes[i - offset..i - offset + (to - from)];
            let map = if snapshot {
                &mut self.snapshot
            } else {
                &mut self.active
            };
            if !map.present(page) {
                if src.iter().all(|&b| b == 0) {
                    i = (page + 1) * M::PAGE;
                    continue;
                }
                match supply() {
                    Some(p) => map.put(page, p),
                    None => return false,
                }
            }
            map.page_mut(page)[from..to].copy_from_slice(src);
            i = (page + 1) * M::PAGE;
        }
        true
    }

    /// Goes on with the numbering a CBT store kept, once its maps are in
    /// place ([`Cbt::load_bytes`]): the next incremental continues the
    /// chain. Refused, with the tracker as it was, unless the maps are what
    /// a tracker with these numbers holds (active bytes at most `active`,
    /// snapshot bytes at most `previous`, `previous < active`): a store
    /// that passed its checksums but says otherwise is not trusted.
    pub fn adopt(
        &mut self,
        previous: u8,
        active: u8,
        generation: [u8; 16],
    ) -> Result<(), CbtError> {
        if active == 0 || previous >= active {
            return Err(CbtError::Inconsistent);
        }
        let count = self.geometry.count() as usize;
        let pages = pages_for::<M>(count);
        for i in 0..pages {
            let n = (count - i * M::PAGE).min(M::PAGE);
            if self.active.page(i)[..n].iter().any(|&b| b > active)
                || self.snapshot.page(i)[..n].iter().any(|&b| b > previous)
            {
                return Err(CbtError::Inconsistent);
            }
        }
        self.previous_number = previous;
        self.active_number = active;
        self.generation = generation;
        // Any page may differ: the next switch compares them all.
        self.note_differs(0, count);
        Ok(())
    }

    /// Copies snapshot map bytes from `offset` into `out`; returns how many
    /// (0 at or past the end).
    pub fn read_snapshot(&self, offset: usize, out: &mut [u8]) -> usize {
        read_bytes(&self.snapshot, self.geometry.count() as usize, offset, out)
    }

    /// Copies active map bytes (for diagnostics and tests).
    pub fn read_active(&self, offset: usize, out: &mut [u8]) -> usize {
        read_bytes(&self.active, self.geometry.count() as usize, offset, out)
    }

    /// Copies bytes of the snapshot map if `snapshot`, else of the active
    /// map (what a CBT store's checkpoint writes).
    pub fn read_map(&self, snapshot: bool, offset: usize, out: &mut [u8]) -> usize {
        if snapshot {
            self.read_snapshot(offset, out)
        } else {
            self.read_active(offset, out)
        }
    }
}

/// The pages of the maps that `differs` flags, in `next..end`.
struct KeepFlagged<'a, M: PagedBytes> {
    differs: &'a M,
    next: usize,
    end: usize,
}

impl<M: PagedBytes> Iterator for KeepFlagged<'_, M> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        while self.next < self.end {
            let i = self.next;
            self.next += 1;
            if self
                .differs
                .page(i / M::PAGE)
                .get(i % M::PAGE)
                .is_some_and(|&f| f != 0)
            {
                return Some(i);
            }
        }
        None
    }
}

/// Sets bytes `[first, end)` of `map` to `value` where they are smaller.
fn raise<M: PagedBytes>(map: &mut M, first: usize, end: usize, value: u8) {
    let mut i = first;
    while i < end {
        let page = i / M::PAGE;
        let from = i % M::PAGE;
        let to = (end - page * M::PAGE).min(M::PAGE);
        for b in &mut map.page_mut(page)[from..to] {
            if *b < value {
                *b = value;
            }
        }
        i = (page + 1) * M::PAGE;
    }
}

/// Copies bytes `[offset, len)` of `map` into `out`, as many as fit.
fn read_bytes<M: PagedBytes>(map: &M, len: usize, offset: usize, out: &mut [u8]) -> usize {
    if offset >= len {
        return 0;
    }
    let total = (len - offset).min(out.len());
    let mut done = 0;
    while done < total {
        let pos = offset + done;
        let page = pos / M::PAGE;
        let from = pos % M::PAGE;
        let n = (M::PAGE - from).min(total - done);
        out[done..done + n].copy_from_slice(&map.page(page)[from..from + n]);
        done += n;
    }
    total
}

/// Runs of blocks in `map` changed after snapshot `since`, as
/// `(first block, block count)`.
pub fn changed_runs(map: &[u8], since: u8) -> impl Iterator<Item = (usize, usize)> + '_ {
    runs_where(map, move |v| v > since)
}

/// Runs `(first block, count)` of the blocks whose map value `keep` accepts.
pub fn runs_where<'a>(
    map: &'a [u8],
    keep: impl Fn(u8) -> bool + 'a,
) -> impl Iterator<Item = (usize, usize)> + 'a {
    let mut i = 0;
    core::iter::from_fn(move || {
        while i < map.len() && !keep(map[i]) {
            i += 1;
        }
        if i >= map.len() {
            return None;
        }
        let first = i;
        while i < map.len() && keep(map[i]) {
            i += 1;
        }
        Some((first, i - first))
    })
}

#[cfg(test)]
#[path = "tests/cbt.rs"]
mod tests;
