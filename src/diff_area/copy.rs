// SPDX-License-Identifier: GPL-2.0

//! The copy engine: a device's copy slots, each a work item made at TAKE,
//! and the three steps of a copy (storage and a buffer, then the read of
//! the original; the write to storage once the data is in memory; the
//! record of the stored chunk). Completions only queue the slot again; no
//! thread waits for the I/O. A slot that finishes starts the next queued
//! chunk, or goes back to the device's idle slots.
//!
//! The steps of a device's slots run in two batches, each one work item
//! that runs the steps due one after another under a block plug: the
//! first steps on the start queue, the later ones on the copy queue. Steps
//! that are due together thus submit their I/O together, and the copies
//! of neighbouring chunks merge into larger requests.
//!
//! It takes chunk buffers from `buffers.rs`, storage from the snapshot's
//! `Storage`, and records results in the chunk map (`chunks.rs`).

use kernel::alloc::flags::__GFP_NOWARN;
use kernel::alloc::flags::GFP_KERNEL;
use kernel::page::{Page, PAGE_SIZE};
use kernel::prelude::*;
use kernel::sync::{Arc, SpinLock, UniqueArc};
use kernel::workqueue::{Work, WorkItem};
use kernel::{impl_has_work, new_spinlock, new_work, pin_init};

use crate::kernel_ext::bio_list::BioList;
use crate::kernel_ext::block::{with_plug, BdevFile};
use crate::kernel_ext::mem::{zero_page_tail, NoIo};
use crate::kernel_ext::page_io::{AsyncIo, Dir, IoPages, IoWaker};
use crate::kernel_ext::workqueue::WorkQueue;
use crate::logic::fifo::Fifo;
use crate::logic::storage::{Region, PAGE_SECTORS};

use super::chunks::{ChunkData, State};
use super::{DiffArea, COPIES_AT_ONCE};

/// One copy slot of a device, made at TAKE, so that starting a copy
/// allocates nothing. A copy is three short steps, each run by one of the
/// device's batches: the first gets storage and a buffer and starts the
/// read of the original; the read's completion queues the slot's work
/// item, which makes the second step due: it lets the held writes go and
/// starts the write to storage; that write's completion makes the third
/// due, which records the chunk as stored. No thread waits for the I/O.
/// A slot that finishes a copy starts the next one queued, or goes back to
/// the device's idle slots.
#[pin_data]
pub(super) struct CopyWork {
    #[pin]
    pub(super) work: Work<CopyWork>,
    /// The copy under way, set before the slot is queued or its I/O
    /// started.
    #[pin]
    pub(super) job: SpinLock<Option<Job>>,
    /// The copy's I/O in flight.
    pub(super) io: AsyncIo,
    /// Where the slot's work runs (the I/O completions queue it there).
    pub(super) wq: Arc<WorkQueue>,
}

/// A copy in a slot: the device, the chunk and how far it got.
pub(super) struct Job {
    pub(super) area: Arc<DiffArea>,
    pub(super) idx: u32,
    pub(super) step: Step,
}

pub(super) enum Step {
    /// Storage and a buffer to get, then the read of the original.
    Start,
    /// The read of the original is in flight; its data goes to `region`.
    Reading { region: Region, dev: Arc<BdevFile> },
    /// The write to storage is in flight; `shared` is the data that image
    /// reads copy meanwhile (none if there was no memory to share it).
    Writing {
        region: Region,
        dev: Arc<BdevFile>,
        shared: Option<Arc<ChunkData>>,
    },
}

impl IoWaker for CopyWork {
    fn io_completed(this: Arc<Self>) {
        // The slot is not queued while its I/O runs. The clone is never
        // the queue's last reference: the module's control holds one until
        // every completion has returned (`page_io::wait_idle`).
        let wq = this.wq.clone();
        let _ = wq.enqueue(this);
    }
}

impl_has_work! {
    impl HasWork<Self> for CopyWork { self.work }
}

impl CopyWork {
    pub(super) fn new(wq: Arc<WorkQueue>) -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self {
                work <- new_work!("blksnap_copy"),
                job <- new_spinlock!(None, "blksnap_copy_job"),
                io: AsyncIo::new(),
                wq,
            }),
            GFP_KERNEL,
        )
    }
}

impl WorkItem for CopyWork {
    type Pointer = Arc<CopyWork>;

    /// The slot's I/O completed: its next step joins the device's batch.
    fn run(this: Arc<CopyWork>) {
        let area = this.job.lock().as_ref().map(|job| job.area.clone());
        if let Some(area) = area {
            area.make_due(Batch::Steps, this);
        }
    }
}

/// The two batches of a device's copy steps: the first steps, which may
/// wait for storage or a buffer and run on the start queue, and the later
/// ones, which never wait for either and run on the copy queue.
#[derive(Clone, Copy)]
pub(super) enum Batch {
    Start,
    Steps,
}

/// The work item of each batch in [`DiffArea`].
pub(super) const START_BATCH: u64 = 1;
pub(super) const STEP_BATCH: u64 = 2;

/// Copy slots whose next step is due, oldest first, with a place for every
/// slot of the device: a slot is due in at most one batch at a time, so
/// queueing one never allocates and never fails.
pub(super) struct SlotRing {
    places: KVec<Option<Arc<CopyWork>>>,
    queue: Fifo,
}

impl SlotRing {
    pub(super) fn new(places: usize) -> Result<Self> {
        Ok(Self {
            places: KVec::from_elem(None, places, GFP_KERNEL)?,
            queue: Fifo::new(),
        })
    }

    /// Queues `slot`; hands it back if the ring is full.
    fn push(&mut self, slot: Arc<CopyWork>) -> core::result::Result<(), Arc<CopyWork>> {
        self.queue.put(&mut self.places, slot)
    }

    fn pop(&mut self) -> Option<Arc<CopyWork>> {
        self.queue.take(&mut self.places)
    }
}

/// The device's due copy steps, in their two batches.
pub(super) struct Due {
    pub(super) start: SlotRing,
    pub(super) steps: SlotRing,
}

impl Due {
    fn ring(&mut self, batch: Batch) -> &mut SlotRing {
        match batch {
            Batch::Start => &mut self.start,
            Batch::Steps => &mut self.steps,
        }
    }
}

impl_has_work! {
    impl HasWork<Self, START_BATCH> for DiffArea { self.start_batch }
    impl HasWork<Self, STEP_BATCH> for DiffArea { self.step_batch }
}

impl WorkItem<START_BATCH> for DiffArea {
    type Pointer = Arc<DiffArea>;

    fn run(this: Arc<DiffArea>) {
        this.run_batch(Batch::Start);
    }
}

impl WorkItem<STEP_BATCH> for DiffArea {
    type Pointer = Arc<DiffArea>;

    fn run(this: Arc<DiffArea>) {
        this.run_batch(Batch::Steps);
    }
}

/// Steps one run of a batch takes at most before it lets other work run;
/// the rest run in the batch's next run, queued at once.
const BATCH_RUN: usize = 2 * COPIES_AT_ONCE as usize;

/// What a finished copy leaves to do once the chunk lock is dropped.
pub(super) struct Settled {
    /// Writes that waited for the chunk.
    pub(super) released: BioList,
    /// The copy slot, handed to the oldest queued chunk.
    pub(super) next: Option<(Arc<CopyWork>, u32)>,
    /// Data the cache let go of.
    pub(super) evicted: Option<Arc<ChunkData>>,
}

impl DiffArea {
    /// Runs the copies noted by [`Self::start_or_queue`].
    pub(super) fn spawn_copies(self: &Arc<Self>, start: KVec<(Arc<CopyWork>, u32)>) {
        for (slot, idx) in start {
            self.start_copy(slot, idx);
        }
    }

    /// Runs the copy of chunk `idx` in `slot`, a slot of ours not queued.
    pub(super) fn start_copy(self: &Arc<Self>, slot: Arc<CopyWork>, idx: u32) {
        *slot.job.lock() = Some(Job {
            area: self.clone(),
            idx,
            step: Step::Start,
        });
        self.make_due(Batch::Start, slot);
    }

    /// Queues the next step of `slot` (its job is set) in `batch`, and
    /// the batch's run if it is not queued yet.
    ///
    /// Steps run in batches, one after another under one block plug, so
    /// that the copies of neighbouring chunks that are due together (the
    /// reads a burst of first writes starts, the storage writes of reads
    /// that completed together) reach the disks together: the block layer
    /// merges neighbouring reads of the original, and neighbouring writes
    /// to storage, into larger requests, and a disk that pays per request
    /// (a hard disk's seeks, a virtual disk's throttle) does fewer.
    pub(super) fn make_due(self: &Arc<Self>, batch: Batch, slot: Arc<CopyWork>) {
        let refused = self.due.lock().ring(batch).push(slot);
        if let Err(slot) = refused {
            // Every slot has a place in each ring, and a slot is due in
            // one batch at a time: this never happens. Should it, a later
            // step runs here, unbatched (this is its worker), and a first
            // step, whose caller may not wait, fails the copy (and the
            // image) rather than be lost.
            let job = slot.job.lock().take();
            if let Some(job) = job {
                match (batch, job.step) {
                    (Batch::Steps, step) => self.copy_step(slot, job.idx, step),
                    (Batch::Start, _) => self.copy_end(slot, job.idx, Err(EIO), None),
                }
            }
            return;
        }
        self.kick(batch);
    }

    /// Queues the run of `batch`, unless it is queued already (and not yet
    /// running): then that run takes the new steps too.
    fn kick(self: &Arc<Self>, batch: Batch) {
        let _ = match batch {
            Batch::Start => self.start_wq.enqueue_as::<_, START_BATCH>(self.clone()),
            Batch::Steps => self.copy_wq.enqueue_as::<_, STEP_BATCH>(self.clone()),
        };
    }

    /// Worker: runs the due steps of `batch` under one block plug.
    fn run_batch(self: &Arc<Self>, batch: Batch) {
        let more = with_plug(|| {
            for _ in 0..BATCH_RUN {
                let slot = self.due.lock().ring(batch).pop();
                let Some(slot) = slot else {
                    return false;
                };
                // Only this device's slots are due here: the job's area
                // is `self`.
                let job = slot.job.lock().take();
                if let Some(job) = job {
                    self.copy_step(slot, job.idx, job.step);
                }
            }
            true
        });
        // A step queued meanwhile has queued the next run already; this
        // one only covers steps left over by the cap.
        if more {
            self.kick(batch);
        }
    }

    /// Worker: the next step of the copy of chunk `idx` in `slot`.
    pub(super) fn copy_step(self: &Arc<Self>, slot: Arc<CopyWork>, idx: u32, step: Step) {
        let _noio = NoIo::enter();
        match step {
            Step::Start => {
                if let Err(e) = self.copy_read(&slot, idx) {
                    self.copy_end(slot, idx, Err(e), None);
                }
            }
            Step::Reading { region, dev } => match slot.io.finish() {
                Some((IoPages::Own(pages), Ok(()))) => {
                    self.copy_write(slot, idx, pages, region, dev)
                }
                other => {
                    let err = self.give_back(other);
                    self.copy_end(slot, idx, Err(err), None);
                }
            },
            Step::Writing {
                region,
                dev,
                shared,
            } => {
                let result = match slot.io.finish() {
                    Some((pages, Ok(()))) => {
                        self.release(pages);
                        Ok((region, dev))
                    }
                    other => Err(self.give_back(other)),
                };
                self.copy_end(slot, idx, result, shared);
            }
        }
    }

    /// First step of a copy: storage for chunk `idx`, a buffer, and the
    /// read of the original into it, started.
    pub(super) fn copy_read(self: &Arc<Self>, slot: &Arc<CopyWork>, idx: u32) -> Result {
        // A corrupted image needs no more copies: the queued ones end at
        // once, and their held writes go on, rather than each waiting for
        // storage in turn.
        if self.is_corrupted() {
            return Err(EIO);
        }
        let len = self.geometry.unit_len(idx);
        let bytes = usize::try_from(len * 512).map_err(|_| EINVAL)?;
        let alloc_len = len.div_ceil(PAGE_SECTORS) * PAGE_SECTORS;
        let (region, dev) = self.storage.alloc(alloc_len, &self.corrupted)?;
        let pages = core::mem::take(&mut self.get_buffer().pages);
        *slot.job.lock() = Some(Job {
            area: self.clone(),
            idx,
            step: Step::Reading { region, dev },
        });
        let start = self.geometry.unit_start(idx);
        let started = slot.io.start(
            &self.orig,
            start,
            IoPages::Own(pages),
            bytes,
            Dir::Read,
            slot.clone(),
        );
        if let Err((e, pages)) = started {
            slot.job.lock().take();
            self.release(pages);
            return Err(e);
        }
        Ok(())
    }

    /// Second step: the chunk's data at TAKE is in `pages`. It is shared
    /// with image reads and the writes held on the chunk go on; then the
    /// write to storage starts.
    pub(super) fn copy_write(
        self: &Arc<Self>,
        slot: Arc<CopyWork>,
        idx: u32,
        mut pages: KVec<Page>,
        region: Region,
        dev: Arc<BdevFile>,
    ) {
        let bytes = (self.geometry.unit_len(idx) * 512) as usize;
        let npages = bytes.div_ceil(PAGE_SIZE);
        // The last chunk of a device whose size is not a whole number of
        // pages ends inside its last page: that page goes to storage whole,
        // so its tail is zeroed (no stale memory on the disk).
        if bytes % PAGE_SIZE != 0 {
            if let Some(last) = pages.get_mut(npages.saturating_sub(1)) {
                if let Err(e) = zero_page_tail(last, bytes % PAGE_SIZE) {
                    self.put_buffer(pages);
                    self.copy_end(slot, idx, Err(e), None);
                    return;
                }
            }
        }
        let (io_pages, shared) = match self.share(idx, pages) {
            Ok(data) => (IoPages::Shared(data.clone()), Some(data)),
            Err(pages) => (IoPages::Own(pages), None),
        };
        *slot.job.lock() = Some(Job {
            area: self.clone(),
            idx,
            step: Step::Writing {
                region,
                dev: dev.clone(),
                shared: shared.clone(),
            },
        });
        // Storage writes are whole, aligned pages, whatever the storage
        // device's logical block size.
        let started = slot.io.start(
            &dev,
            region.sector,
            io_pages,
            npages * PAGE_SIZE,
            Dir::Write,
            slot.clone(),
        );
        if let Err((e, io_pages)) = started {
            slot.job.lock().take();
            self.release(io_pages);
            self.copy_end(slot, idx, Err(e), shared);
        }
    }

    /// Last step (or the end of a failed copy): records the chunk's state,
    /// passes the slot on, and gives back the data no chunk refers to any
    /// more (this one's, unless it stays in the cache, and the one it
    /// pushed out).
    pub(super) fn copy_end(
        self: &Arc<Self>,
        slot: Arc<CopyWork>,
        idx: u32,
        result: Result<(Region, Arc<BdevFile>)>,
        shared: Option<Arc<ChunkData>>,
    ) {
        let evicted = self.finish_copy(slot, idx, result);
        self.reclaim(shared);
        self.reclaim(evicted);
    }

    /// Takes back the pages of an I/O: a buffer of the copy's goes back to
    /// the pool, shared data is reclaimed if nothing else holds it.
    pub(super) fn release(&self, pages: IoPages) {
        match pages {
            IoPages::Own(pages) => self.put_buffer(pages),
            IoPages::Shared(data) => self.reclaim(Some(data)),
        }
    }

    /// Takes back the pages of a collected I/O that failed; returns the
    /// error to record (`EIO` when there was nothing to collect).
    pub(super) fn give_back(&self, io: Option<(IoPages, Result)>) -> Error {
        match io {
            Some((pages, r)) => {
                self.release(pages);
                r.err().unwrap_or(EIO)
            }
            None => EIO,
        }
    }

    /// The copy of chunk `idx` has read its data into `pages`: moves them
    /// into a shared `ChunkData` that the chunk refers to until the storage
    /// write is done, and lets the writes waiting for the chunk go on.
    /// Without memory for it, the writes wait for the storage write and
    /// the pages come back.
    pub(super) fn share(
        self: &Arc<Self>,
        idx: u32,
        pages: KVec<Page>,
    ) -> Result<Arc<ChunkData>, KVec<Page>> {
        let Ok(place) = UniqueArc::<ChunkData>::new_uninit(GFP_KERNEL | __GFP_NOWARN) else {
            return Err(pages);
        };
        let data: Arc<ChunkData> = place.write(ChunkData::new(pages)).into();
        let mut released = {
            let mut c = self.chunks.lock();
            match c.map.get_mut(&idx) {
                Some(chunk) if matches!(chunk.state, State::Copying) => {
                    chunk.mem = Some(data.clone());
                    if chunk.writable() {
                        chunk.held.take()
                    } else {
                        BioList::new()
                    }
                }
                _ => BioList::new(),
            }
        };
        while let Some(bio) = released.pop() {
            self.hold_or_release(bio);
        }
        Ok(data)
    }

    /// A copy ended (or could not start): records the chunk's state, hands
    /// the copy slot to the oldest queued chunk, and lets the writes that
    /// waited for the chunk go on.
    pub(super) fn finish_copy(
        self: &Arc<Self>,
        slot: Arc<CopyWork>,
        idx: u32,
        result: Result<(Region, Arc<BdevFile>)>,
    ) -> Option<Arc<ChunkData>> {
        let err = result.as_ref().err().copied();
        let Settled {
            mut released,
            next,
            evicted,
        } = self.settle(slot, idx, result);
        self.settled.notify_all();
        if let Some(e) = err {
            self.corrupt(e);
        }
        while let Some(bio) = released.pop() {
            self.hold_or_release(bio);
        }
        if let Some((slot, n)) = next {
            self.start_copy(slot, n);
        }
        evicted
    }

    /// Under the chunk lock: frees the copy slot of chunk `idx` and gives it
    /// to the oldest queued chunk (returned), and records the chunk's state;
    /// returns its held writes if it is writable now. A stored chunk keeps
    /// its data in memory, in the cache, whose oldest entry may give way
    /// (its data is returned).
    pub(super) fn settle(
        &self,
        slot: Arc<CopyWork>,
        idx: u32,
        result: Result<(Region, Arc<BdevFile>)>,
    ) -> Settled {
        let mut released = BioList::new();
        let mut next = None;
        let mut evicted = None;
        let mut cache = false;
        let mut guard = self.chunks.lock();
        let c = &mut *guard;
        match if c.closed {
            None
        } else {
            c.queued.pop(&c.ring)
        } {
            Some(n) => next = Some((slot, n)),
            // The slot came from `idle`, which has a place for every slot.
            None => {
                if let Some(place) = c.idle.iter_mut().find(|s| s.is_none()) {
                    *place = Some(slot);
                }
            }
        }
        let cache_room = !c.closed && !c.cache_ring.is_empty();
        if let Some(chunk) = c.map.get_mut(&idx) {
            match result {
                Ok((region, dev)) => {
                    chunk.state = State::Stored(region);
                    chunk.storage = Some(dev);
                    cache = cache_room && chunk.mem.is_some();
                }
                Err(_) => chunk.state = State::Failed,
            }
            if !cache {
                chunk.mem = None;
            }
            if chunk.writable() {
                released = chunk.held.take();
            }
        }
        if cache {
            if c.cached.room(&c.cache_ring) == 0 {
                evicted = c.evict();
            }
            // `evict` made room (the ring has at least one place).
            if !c.cached.push(&mut c.cache_ring, idx) {
                if let Some(chunk) = c.map.get_mut(&idx) {
                    chunk.mem = None;
                }
            }
        }
        Settled {
            released,
            next,
            evicted,
        }
    }
}
