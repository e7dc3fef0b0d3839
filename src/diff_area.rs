// SPDX-License-Identifier: GPL-2.0

//! The copy-on-write state of one device in a taken snapshot, and its image.
//!
//! The device is cut into chunks. A chunk has an entry in a sparse map only
//! once something happened to it, so memory grows with the data changed, not
//! with the device size:
//!
//! - no entry: the original still holds the chunk's snapshot data;
//! - `Copying`: a worker is saving the chunk to diff storage;
//! - `Stored`: the chunk's snapshot data is in diff storage;
//! - `Failed`: it could not be saved; the image is corrupted.
//!
//! A write to the original covering a chunk that is not stored is taken
//! over by the filter and held on the chunk; a worker reads the chunk from
//! the original, writes it durably to storage, then lets the held writes go
//! on. The filter never waits for that I/O itself.
//!
//! Image reads of chunks not stored go to the original. While such a read is
//! in flight the chunk counts it as a reader, and writes to the original
//! stay held until the last reader is done, so a read never sees data
//! written after the snapshot. Image writes save the chunk first, then
//! write to its copy in storage, so the original is never touched.
//!
//! Locking: one spinlock per device guards its chunk map (no global lock on
//! the write path); allocations happen before taking it.

use core::sync::atomic::{AtomicBool, Ordering};

use kernel::alloc::flags::{GFP_ATOMIC, GFP_KERNEL};
use kernel::page::{Page, PAGE_SIZE};
use kernel::prelude::*;
use kernel::rbtree::{RBTree, RBTreeNodeReservation};
use kernel::sync::{Arc, CondVar, SpinLock};
use kernel::{new_condvar, new_spinlock, pin_init};

use crate::event_queue::EventQueue;
use crate::kernel_ext::bio::{page_io, BioList, BioOp, BlkStatus, IncomingBio, OwnedBio};
use crate::kernel_ext::block::{BdevFile, DevT};
use crate::kernel_ext::errno::eopnotsupp;
use crate::kernel_ext::gendisk::DiskOps;
use crate::kernel_ext::mem::NoIo;
use crate::kernel_ext::params::Param;
use crate::kernel_ext::workqueue::WorkQueue;
use crate::logic::events::Event;
use crate::logic::geometry::Geometry;
use crate::logic::storage::{Region, PAGE_SECTORS};
use crate::storage::Storage;
use crate::tracker::Tracker;

#[derive(Clone, Copy)]
enum State {
    /// Only readers: the data is still on the original.
    Original,
    Copying,
    Stored(Region),
    Failed,
}

struct Chunk {
    state: State,
    /// Image reads in flight against the original.
    readers: u32,
    /// Writes to the original waiting for this chunk.
    held: BioList,
    /// The storage device of `Stored`.
    storage: Option<Arc<BdevFile>>,
}

impl Chunk {
    fn new(state: State) -> Self {
        Self { state, readers: 0, held: BioList::new(), storage: None }
    }

    /// A write to the original may go on.
    fn writable(&self) -> bool {
        match self.state {
            State::Stored(_) => self.readers == 0,
            State::Failed => true,
            State::Original | State::Copying => false,
        }
    }
}

struct Chunks {
    map: RBTree<u32, Chunk>,
    /// The snapshot is going: nothing is held any more.
    closed: bool,
}

/// Where an image read of one chunk goes.
enum Source {
    Original,
    Storage(Region, Arc<BdevFile>),
}

#[pin_data]
pub(crate) struct DiffArea {
    orig: Arc<BdevFile>,
    tracker: Arc<Tracker>,
    geometry: Geometry,
    #[pin]
    chunks: SpinLock<Chunks>,
    /// Signalled when a chunk stops copying.
    #[pin]
    settled: CondVar,
    corrupted: AtomicBool,
    storage: Arc<Storage>,
    events: Arc<EventQueue>,
    /// Chunk copies; few at once, so chunk buffers in memory stay bounded.
    copy_wq: Arc<WorkQueue>,
    /// Image I/O. Separate from copies: an image worker may wait for a
    /// copy, and must never take the place that copy needs to run.
    io_wq: Arc<WorkQueue>,
}

/// The chunk geometry for a device of `capacity` sectors, from the module
/// parameters as they are now.
fn chunk_geometry(capacity: u64) -> Result<Geometry> {
    let min = u32::try_from(Param::ChunkMinimumShift.get()).map_err(|_| EINVAL)?;
    let max = u32::try_from(Param::ChunkMaximumShift.get()).map_err(|_| EINVAL)?;
    // Chunks are whole pages.
    if min < 12 {
        return Err(EINVAL);
    }
    Geometry::new(capacity, min, max, Param::ChunkMaximumCount.get()).map_err(|_| EINVAL)
}

impl DiffArea {
    pub(crate) fn new(
        tracker: Arc<Tracker>,
        storage: Arc<Storage>,
        events: Arc<EventQueue>,
        copy_wq: Arc<WorkQueue>,
        io_wq: Arc<WorkQueue>,
    ) -> Result<Arc<Self>> {
        let orig = tracker.bdev().clone();
        let geometry = chunk_geometry(orig.nr_sectors())?;
        Arc::pin_init(
            pin_init!(Self {
                orig,
                tracker,
                geometry,
                chunks <- new_spinlock!(Chunks { map: RBTree::new(), closed: false }, "blksnap_chunks"),
                settled <- new_condvar!("blksnap_chunk_settled"),
                corrupted: AtomicBool::new(false),
                storage,
                events,
                copy_wq,
                io_wq,
            }),
            GFP_KERNEL,
        )
    }

    pub(crate) fn dev(&self) -> DevT {
        self.orig.dev()
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.geometry.capacity()
    }

    pub(crate) fn tracker(&self) -> &Arc<Tracker> {
        &self.tracker
    }

    fn is_corrupted(&self) -> bool {
        self.corrupted.load(Ordering::Acquire)
    }

    /// Marks the image corrupted (once) and tells user space.
    fn corrupt(&self, err: Error) {
        if !self.corrupted.swap(true, Ordering::AcqRel) {
            let dev = self.dev();
            let errno = -err.to_errno();
            pr_err!("image of {}:{} is corrupted (error {})\n", dev.major(), dev.minor(), errno);
            self.events.push(Event::corrupted(EventQueue::now(), dev.major(), dev.minor(), errno));
        }
    }

    /// The filter's write path: lets `bio` go on if every chunk it covers is
    /// saved, else takes it over until they are.
    pub(crate) fn on_write(self: &Arc<Self>, bio: IncomingBio<'_>) {
        let Some((first, end)) = self.geometry.units_of(bio.sector(), bio.sectors()) else {
            return;
        };
        if self.is_corrupted() {
            return;
        }
        {
            let c = self.chunks.lock();
            if c.closed || (first..end).all(|i| c.map.get(&i).map_or(false, Chunk::writable)) {
                return;
            }
        }
        if bio.is_nowait() {
            bio.take().end(BlkStatus::Again);
            return;
        }
        self.hold_or_release(bio.take());
    }

    /// Resubmits `bio` if its chunks are all saved; otherwise holds it on the
    /// first chunk that is not, and starts saving every chunk it covers that
    /// nobody saves yet (up to `COPY_AHEAD` at a time), so that a large write
    /// waits for its copies in parallel rather than one after another.
    fn hold_or_release(self: &Arc<Self>, bio: OwnedBio) {
        const COPY_AHEAD: u32 = 64;
        let _noio = NoIo::enter();
        let Some((first, end)) = self.geometry.units_of(bio.sector(), bio.sectors()) else {
            bio.resubmit();
            return;
        };
        // Room for the new entries and the copies to start, made before the
        // lock; what does not fit is started on a later pass.
        let want = (end - first).min(COPY_AHEAD) as usize;
        let (Ok(mut reservations), Ok(mut to_copy)) =
            (KVec::with_capacity(want, GFP_KERNEL), KVec::<u32>::with_capacity(want, GFP_KERNEL))
        else {
            self.corrupt(ENOMEM);
            bio.resubmit();
            return;
        };
        for _ in 0..want {
            match RBTreeNodeReservation::new(GFP_KERNEL) {
                // Within capacity: cannot fail.
                Ok(r) => {
                    let _ = reservations.push(Some(r), GFP_KERNEL);
                }
                Err(_) => break,
            }
        }

        let mut c = self.chunks.lock();
        if c.closed || self.is_corrupted() {
            drop(c);
            bio.resubmit();
            return;
        }
        let mut holder = None;
        for idx in first..end {
            let writable = match c.map.get_mut(&idx) {
                Some(chunk) => {
                    if let State::Original = chunk.state {
                        if to_copy.len() < to_copy.capacity() {
                            chunk.state = State::Copying;
                            // Within capacity: no allocation under the lock.
                            let _ = to_copy.push(idx, GFP_ATOMIC);
                        }
                    }
                    chunk.writable()
                }
                None => {
                    if to_copy.len() < to_copy.capacity() {
                        if let Some(res) = reservations.iter_mut().find_map(Option::take) {
                            c.map.insert(res.into_node(idx, Chunk::new(State::Copying)));
                            let _ = to_copy.push(idx, GFP_ATOMIC);
                        }
                    }
                    false
                }
            };
            if !writable && holder.is_none() {
                holder = Some(idx);
            }
        }
        let Some(holder) = holder else {
            drop(c);
            bio.resubmit();
            return;
        };
        match c.map.get_mut(&holder) {
            Some(chunk) => chunk.held.push(bio),
            None => {
                // No memory for the entry: the chunk cannot be saved.
                drop(c);
                self.corrupt(ENOMEM);
                bio.resubmit();
                return;
            }
        }
        drop(c);
        for &idx in to_copy.iter() {
            let this = self.clone();
            if self.copy_wq.spawn(move || this.copy_chunk(idx)).is_err() {
                self.finish_copy(idx, Err(ENOMEM));
            }
        }
    }

    /// Worker: saves chunk `idx` to diff storage, then lets its writes go.
    fn copy_chunk(self: &Arc<Self>, idx: u32) {
        let _noio = NoIo::enter();
        let result = self.save(idx);
        self.finish_copy(idx, result);
    }

    fn save(&self, idx: u32) -> Result<(Region, Arc<BdevFile>)> {
        let len = self.geometry.unit_len(idx);
        let bytes = usize::try_from(len * 512).map_err(|_| EINVAL)?;
        let alloc_len = len.div_ceil(PAGE_SECTORS) * PAGE_SECTORS;
        let (region, dev) = self.storage.alloc(alloc_len)?;
        let mut pages = KVec::with_capacity(bytes.div_ceil(PAGE_SIZE), GFP_KERNEL)?;
        for _ in 0..bytes.div_ceil(PAGE_SIZE) {
            pages.push(Page::alloc_page(GFP_KERNEL)?, GFP_KERNEL)?;
        }
        page_io(&self.orig, self.geometry.unit_start(idx), &pages, bytes, false)?;
        page_io(&dev, region.sector, &pages, bytes, true)?;
        Ok((region, dev))
    }

    fn finish_copy(self: &Arc<Self>, idx: u32, result: Result<(Region, Arc<BdevFile>)>) {
        let mut released = BioList::new();
        let err = result.as_ref().err().copied();
        {
            let mut c = self.chunks.lock();
            if let Some(chunk) = c.map.get_mut(&idx) {
                match result {
                    Ok((region, dev)) => {
                        chunk.state = State::Stored(region);
                        chunk.storage = Some(dev);
                    }
                    Err(_) => chunk.state = State::Failed,
                }
                if chunk.writable() {
                    released = chunk.held.take();
                }
            }
        }
        self.settled.notify_all();
        if let Some(e) = err {
            self.corrupt(e);
        }
        while let Some(bio) = released.pop() {
            self.hold_or_release(bio);
        }
    }

    /// Lets every held write go and holds no more (DESTROY, unload).
    pub(crate) fn close(&self) {
        let mut all = BioList::new();
        {
            let mut c = self.chunks.lock();
            c.closed = true;
            for chunk in c.map.values_mut() {
                while let Some(bio) = chunk.held.pop() {
                    all.push(bio);
                }
            }
        }
        self.settled.notify_all();
        while let Some(bio) = all.pop() {
            bio.resubmit();
        }
    }

    /// Chooses where an image read of chunk `idx` goes, counting a reader of
    /// the original.
    fn read_source(&self, idx: u32, reservation: &mut Option<RBTreeNodeReservation<u32, Chunk>>) -> Result<Source> {
        let mut c = self.chunks.lock();
        match c.map.get_mut(&idx) {
            Some(chunk) => match chunk.state {
                State::Stored(r) => Ok(Source::Storage(r, chunk.storage.clone().ok_or(EIO)?)),
                State::Failed => Err(EIO),
                State::Original | State::Copying => {
                    chunk.readers += 1;
                    Ok(Source::Original)
                }
            },
            None => {
                let res = reservation.take().ok_or(ENOMEM)?;
                let mut chunk = Chunk::new(State::Original);
                chunk.readers = 1;
                c.map.insert(res.into_node(idx, chunk));
                Ok(Source::Original)
            }
        }
    }

    /// An image read of the original for chunk `idx` is done.
    fn read_done(self: &Arc<Self>, idx: u32) {
        let mut released = BioList::new();
        {
            let mut c = self.chunks.lock();
            let mut forget = false;
            if let Some(chunk) = c.map.get_mut(&idx) {
                chunk.readers = chunk.readers.saturating_sub(1);
                if chunk.writable() {
                    released = chunk.held.take();
                }
                forget = chunk.readers == 0 && matches!(chunk.state, State::Original) && chunk.held.is_empty();
            }
            if forget {
                // Keep memory proportional to changes, not to reads.
                c.map.remove(&idx);
            }
        }
        while let Some(bio) = released.pop() {
            self.hold_or_release(bio);
        }
    }

    /// Makes sure chunk `idx` is in storage (saving it here if needed) and
    /// returns its region, for image writes.
    fn ensure_stored(self: &Arc<Self>, idx: u32) -> Result<(Region, Arc<BdevFile>)> {
        let mut reservation = RBTreeNodeReservation::new(GFP_KERNEL).ok();
        let mut c = self.chunks.lock();
        loop {
            if self.is_corrupted() {
                return Err(EIO);
            }
            match c.map.get_mut(&idx) {
                Some(chunk) => match chunk.state {
                    State::Stored(r) => return Ok((r, chunk.storage.clone().ok_or(EIO)?)),
                    State::Failed => return Err(EIO),
                    State::Copying => {
                        self.settled.wait(&mut c);
                        continue;
                    }
                    State::Original => chunk.state = State::Copying,
                },
                None => {
                    let res = reservation.take().ok_or(ENOMEM)?;
                    c.map.insert(res.into_node(idx, Chunk::new(State::Copying)));
                }
            }
            drop(c);
            let result = self.save(idx);
            let out = result.as_ref().map(|(r, d)| (*r, d.clone())).map_err(|e| *e);
            self.finish_copy(idx, result);
            return out;
        }
    }

    /// Worker: serves one image bio.
    fn image_io(self: &Arc<Self>, bio: OwnedBio) {
        let _noio = NoIo::enter();
        let status = match self.image_io_inner(&bio) {
            Ok(()) => BlkStatus::Ok,
            Err(e) if e == eopnotsupp() => BlkStatus::NotSupp,
            Err(_) => BlkStatus::IoErr,
        };
        bio.end(status);
    }

    fn image_io_inner(self: &Arc<Self>, bio: &OwnedBio) -> Result {
        let write = match bio.op() {
            BioOp::Read => false,
            BioOp::Write => true,
            _ => return Err(eopnotsupp()),
        };
        if self.is_corrupted() {
            return Err(EIO);
        }
        let total = bio.size();
        let mut sector = bio.sector();
        let mut done: u32 = 0;
        while done < total {
            let (idx, _) = self.geometry.units_of(sector, 1).ok_or(EIO)?;
            let chunk_end = self.geometry.unit_start(idx) + self.geometry.unit_len(idx);
            let part = u32::try_from(((chunk_end - sector) * 512).min(u64::from(total - done))).map_err(|_| EIO)?;
            let in_chunk = sector - self.geometry.unit_start(idx);
            if write {
                let (region, dev) = self.ensure_stored(idx)?;
                bio.io_part(done, part, &dev, region.sector + in_chunk)?;
                self.tracker.mark_dirty(sector, u64::from(part >> 9));
            } else {
                let mut reservation = RBTreeNodeReservation::new(GFP_KERNEL).ok();
                match self.read_source(idx, &mut reservation)? {
                    Source::Storage(region, dev) => bio.io_part(done, part, &dev, region.sector + in_chunk)?,
                    Source::Original => {
                        let r = bio.io_part(done, part, &self.orig, sector);
                        self.read_done(idx);
                        r?;
                    }
                }
            }
            done += part;
            sector += u64::from(part >> 9);
        }
        Ok(())
    }
}

impl DiskOps for DiffArea {
    fn submit_bio(this: &Arc<Self>, bio: OwnedBio) {
        let worker = this.clone();
        // If the work item cannot be allocated, the closure and the bio in it
        // are dropped, which ends the bio with an I/O error.
        let _ = this.io_wq.spawn(move || worker.image_io(bio));
    }
}
