// SPDX-License-Identifier: GPL-2.0

//! The chunk map of a device in a taken snapshot and its state machine,
//! and the write path that drives it.
//!
//! A chunk has an entry only once something happened to it (see the parent
//! module for the states). The filter's writes come here: a write whose
//! chunks are all saved goes on; otherwise it is held on the first chunk
//! that is not, and copies of the chunks it covers are started or queued
//! (the copy engine, `copy.rs`, runs them). Everything here runs under the
//! device's chunk spinlock, with the memory it needs reserved before.

use kernel::alloc::flags::{GFP_ATOMIC, GFP_KERNEL};
use kernel::prelude::*;
use kernel::rbtree::{RBTree, RBTreeNodeReservation};
use kernel::sync::Arc;

use crate::kernel_ext::bio::{BlkStatus, IncomingBio, OwnedBio};
use crate::kernel_ext::bio_list::BioList;
use crate::kernel_ext::block::BdevFile;
use crate::kernel_ext::mem::NoIo;
use crate::kernel_ext::page_io::PageVec;
use crate::logic::fifo::Fifo;
use crate::logic::storage::Region;

use super::copy::CopyWork;
use super::DiffArea;
#[derive(Clone, Copy)]
pub(super) enum State {
    /// Only readers: the data is still on the original.
    Original,
    Copying,
    Stored(Region),
    Failed,
}

pub(super) struct Chunk {
    pub(super) state: State,
    /// Image reads in flight against the original.
    pub(super) readers: u32,
    /// Writes to the original waiting for this chunk.
    pub(super) held: BioList,
    /// The storage device of `Stored`.
    pub(super) storage: Option<Arc<BdevFile>>,
    /// In `Copying`, once the copy has read the chunk: its data at TAKE,
    /// in memory until the storage write completes. Writes to the
    /// original go on from then, and image reads are served from here.
    pub(super) mem: Option<Arc<ChunkData>>,
}

/// A chunk's data at TAKE, in memory while it goes to storage (and after,
/// in the cache).
pub(super) type ChunkData = PageVec;

impl Chunk {
    pub(super) fn new(state: State) -> Self {
        Self {
            state,
            readers: 0,
            held: BioList::new(),
            storage: None,
            mem: None,
        }
    }

    /// A write to the original may go on: the chunk's data at TAKE is
    /// safe elsewhere (or lost), and no image read of the original is in
    /// flight.
    pub(super) fn writable(&self) -> bool {
        match self.state {
            State::Stored(_) => self.readers == 0,
            State::Failed => true,
            State::Copying => self.mem.is_some() && self.readers == 0,
            State::Original => false,
        }
    }
}

pub(super) struct Chunks {
    pub(super) map: RBTree<u32, Chunk>,
    /// The snapshot is going: nothing is held any more.
    pub(super) closed: bool,
    /// One place per copy slot, holding the slot while it is not in use.
    pub(super) idle: KVec<Option<Arc<CopyWork>>>,
    /// Chunks in `Copying` waiting for a copy slot, in `ring`. Every chunk
    /// in `Copying` is either running or queued here.
    pub(super) queued: Fifo,
    pub(super) ring: KVec<u32>,
    /// Stored chunks whose data stays in memory for image reads, oldest
    /// first, in `cache_ring` (`chunk_maximum_in_cache` places). A chunk
    /// listed here may have lost its data since (an image write); every
    /// `Stored` chunk with data in memory is listed.
    pub(super) cached: Fifo,
    pub(super) cache_ring: KVec<u32>,
}

impl Chunks {
    /// Takes the data of the oldest cached chunk that still has some.
    pub(super) fn evict(&mut self) -> Option<Arc<ChunkData>> {
        while let Some(idx) = self.cached.pop(&self.cache_ring) {
            if let Some(data) = self.map.get_mut(&idx).and_then(|c| c.mem.take()) {
                return Some(data);
            }
        }
        None
    }
}

impl DiffArea {
    /// The filter's write path: lets `bio` go on if every chunk it covers is
    /// saved, else takes it over until they are.
    pub(super) fn write(self: &Arc<Self>, bio: IncomingBio<'_>) {
        let Some((first, end)) = self.geometry.units_of(bio.sector(), bio.sectors()) else {
            return;
        };
        if self.is_corrupted() {
            return;
        }
        {
            let c = self.chunks.lock();
            if c.closed || (first..end).all(|i| c.map.get(&i).is_some_and(Chunk::writable)) {
                return;
            }
        }
        if bio.is_nowait() {
            bio.take().end(BlkStatus::Again);
            return;
        }
        self.hold_or_release(bio.take());
    }

    /// Makes sure the queue of chunks waiting for a copy slot has room for
    /// `want` more, growing its ring outside the lock.
    pub(super) fn queue_room(&self, want: usize) -> Result {
        loop {
            let need = {
                let c = self.chunks.lock();
                if c.queued.room(&c.ring) >= want {
                    return Ok(());
                }
                (c.ring.len() * 2).max(c.queued.len() + want).max(64)
            };
            let mut bigger = KVec::from_elem(0u32, need, GFP_KERNEL)?;
            let mut c = self.chunks.lock();
            let c = &mut *c;
            if c.queued.room(&c.ring) < want && c.queued.move_to(&c.ring, &mut bigger) {
                core::mem::swap(&mut c.ring, &mut bigger);
            }
            // The old ring (or the unused new one) is freed after the lock.
        }
    }

    /// Under the chunk lock: starts a copy of `idx` (already in `Copying`)
    /// now if a slot is free, noting it in `start`, or queues it. The caller
    /// made room in both.
    pub(super) fn start_or_queue(c: &mut Chunks, idx: u32, start: &mut KVec<(Arc<CopyWork>, u32)>) {
        let slot = if start.len() < start.capacity() {
            c.idle.iter_mut().find_map(Option::take)
        } else {
            None
        };
        if let Some(slot) = slot {
            // Within capacity: no allocation under the lock, no failure.
            let _ = start.push((slot, idx), GFP_ATOMIC);
        } else {
            // The caller checked the room under this lock: it fits.
            let _ = c.queued.push(&mut c.ring, idx);
        }
    }

    /// Resubmits `bio` if its chunks are all saved; otherwise holds it on the
    /// first chunk that is not, and starts saving every chunk it covers that
    /// nobody saves yet (up to `COPY_AHEAD` at a time), so that a large write
    /// waits for its copies in parallel rather than one after another.
    /// Copies beyond the device's slots wait in the queue, in order.
    pub(super) fn hold_or_release(self: &Arc<Self>, bio: OwnedBio) {
        let _noio = NoIo::enter();
        let Some((first, end)) = self.geometry.units_of(bio.sector(), bio.sectors()) else {
            bio.resubmit();
            return;
        };
        // Room for the new entries, the copies to start and the queue, made
        // before the lock; what does not fit is started on a later pass.
        let want = (end - first).min(COPY_AHEAD) as usize;
        let Ok(mut room) = Room::new(want) else {
            self.corrupt(ENOMEM);
            bio.resubmit();
            return;
        };
        // Room in the queue, checked again under the lock: another writer
        // may have used it in between.
        let mut guard = loop {
            if self.queue_room(want).is_err() {
                self.corrupt(ENOMEM);
                bio.resubmit();
                return;
            }
            let c = self.chunks.lock();
            if c.queued.room(&c.ring) >= want {
                break c;
            }
        };
        let c = &mut *guard;
        if c.closed || self.is_corrupted() {
            drop(guard);
            bio.resubmit();
            return;
        }
        let holder = Self::mark_copies(c, first..end, &mut room);
        let unheld = match holder.map(|h| c.map.get_mut(&h)) {
            None => Some(bio),
            Some(Some(chunk)) => {
                chunk.held.push(bio);
                None
            }
            // No memory for the entry: the chunk cannot be saved.
            Some(None) => {
                drop(guard);
                self.spawn_copies(room.to_start);
                self.corrupt(ENOMEM);
                bio.resubmit();
                return;
            }
        };
        drop(guard);
        self.spawn_copies(room.to_start);
        // Every chunk the bio covers is saved: it goes on.
        if let Some(bio) = unheld {
            bio.resubmit();
        }
    }

    /// Under the chunk lock: puts every chunk of `units` that nobody saves
    /// yet in `Copying` and starts or queues its copy (at most what `room`
    /// has room for); returns the first chunk that is not writable, which
    /// the write waits on, if any.
    fn mark_copies(c: &mut Chunks, units: core::ops::Range<u32>, room: &mut Room) -> Option<u32> {
        let mut holder = None;
        // Copies started or queued by this pass, at most `room.want`, what
        // the queue has room for.
        let mut fresh = 0;
        let want = room.want;
        for idx in units {
            let writable = match c.map.get_mut(&idx) {
                Some(chunk) => {
                    let copy = matches!(chunk.state, State::Original) && fresh < want;
                    if copy {
                        chunk.state = State::Copying;
                    }
                    let w = chunk.writable();
                    if copy {
                        fresh += 1;
                        Self::start_or_queue(c, idx, &mut room.to_start);
                    }
                    w
                }
                None => {
                    if fresh < want {
                        if let Some(res) = room.nodes.iter_mut().find_map(Option::take) {
                            c.map.insert(res.into_node(idx, Chunk::new(State::Copying)));
                            fresh += 1;
                            Self::start_or_queue(c, idx, &mut room.to_start);
                        }
                    }
                    false
                }
            };
            if !writable && holder.is_none() {
                holder = Some(idx);
            }
        }
        holder
    }
}

/// Copies one pass of the write path starts at most; a larger write starts
/// the rest as these finish.
const COPY_AHEAD: u32 = 64;

/// What one pass of [`DiffArea::hold_or_release`] may need under the chunk
/// lock, allocated before it: map entries for chunks not in the map yet,
/// and room for the copies to start.
struct Room {
    want: usize,
    nodes: KVec<Option<RBTreeNodeReservation<u32, Chunk>>>,
    to_start: KVec<(Arc<CopyWork>, u32)>,
}

impl Room {
    /// Room for `want` chunks. Fewer map entries than asked for is not an
    /// error: the chunks left out are saved on a later pass.
    fn new(want: usize) -> Result<Self> {
        let mut nodes = KVec::with_capacity(want, GFP_KERNEL)?;
        let to_start = KVec::with_capacity(want, GFP_KERNEL)?;
        for _ in 0..want {
            match RBTreeNodeReservation::new(GFP_KERNEL) {
                // Within capacity: cannot fail, nothing to drop.
                Ok(r) => {
                    let _ = nodes.push(Some(r), GFP_KERNEL);
                }
                Err(_) => break,
            }
        }
        Ok(Self {
            want,
            nodes,
            to_start,
        })
    }
}
