// SPDX-License-Identifier: GPL-2.0

//! The copy-on-write state of one device in a taken snapshot, and its image.
//!
//! The device is cut into chunks. A chunk has an entry in a sparse map only
//! once something happened to it, so memory grows with the data changed, not
//! with the device size:
//!
//! - no entry: the original still holds the chunk's snapshot data;
//! - `Copying`: a worker is saving the chunk to diff storage (its data is
//!   in memory once read), or the chunk waits in the device's queue for one
//!   of its copy slots;
//! - `Stored`: the chunk's snapshot data is in diff storage;
//! - `Failed`: it could not be saved; the image is corrupted.
//!
//! A write to the original covering a chunk that is not stored is taken
//! over by the filter and held on the chunk; a worker reads the chunk from
//! the original into a buffer, and from then on the chunk's data at TAKE is
//! safe in memory: the held writes go on, and image reads of the chunk copy
//! from that buffer, while the worker writes it to storage. When that write
//! has completed the chunk is `Stored` and the buffer goes back to the
//! pool. The storage write has no FUA: a snapshot does not survive a
//! reboot, so only the order of completions matters. The filter never
//! waits for that I/O itself.
//!
//! Image reads of chunks not copied go to the original. While such a read is
//! in flight the chunk counts it as a reader, and writes to the original
//! stay held until the last reader is done, so a read never sees data
//! written after the snapshot. Once the image is corrupted or the snapshot
//! is being destroyed, writes are no longer held: a read of the original
//! that ends after that fails with `EIO` rather than risk returning them.
//! Image writes save the chunk first, then write to its copy in storage, so
//! the original is never touched.
//!
//! At most `COPIES_AT_ONCE` copies of one device run at once; the others
//! wait in a FIFO, in `Copying`, and start as running ones finish. Image
//! writes go through the same slots. A device whose copies wait for storage
//! thus never holds up another's.
//!
//! Copy on write must keep moving while memory is short, since it runs while
//! the kernel writes dirty pages back to the tracked device to free memory.
//! So nothing a copy needs is allocated in a way that can fail: each copy
//! slot is a work item made at TAKE, chunk buffers come from a pool that
//! TAKE fills with one buffer and that keeps up to
//! `free_diff_buffer_pool_size` spare ones (a copy that finds no buffer and
//! no memory waits for a running copy's buffer), and bios come from the
//! module's own bio set.
//!
//! Locking: one spinlock per device guards its chunk map and copy queue (no
//! global lock on the write path); allocations happen before taking it.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use kernel::alloc::flags::__GFP_NOWARN;
use kernel::alloc::flags::{GFP_ATOMIC, GFP_KERNEL};
use kernel::c_str;
use kernel::page::{Page, PAGE_SIZE};
use kernel::prelude::*;
use kernel::rbtree::{RBTree, RBTreeNodeReservation};
use kernel::sync::{Arc, CondVar, Mutex, SpinLock, UniqueArc};
use kernel::time::msecs_to_jiffies;
use kernel::workqueue::{Work, WorkItem};
use kernel::{impl_has_work, new_condvar, new_mutex, new_spinlock, new_work, pin_init};

use crate::event_queue::EventQueue;
use crate::kernel_ext::async_io::{AsyncIo, IoPages, IoWaker, PageVec};
use crate::kernel_ext::bio::{page_io, BioList, BioOp, BlkStatus, IncomingBio, OwnedBio};
use crate::kernel_ext::block::{BdevFile, DevT};
use crate::kernel_ext::errno::eopnotsupp;
use crate::kernel_ext::gendisk::DiskOps;
use crate::kernel_ext::mem::{zero_page_tail, NoIo};
use crate::kernel_ext::params::Param;
use crate::kernel_ext::workqueue::WorkQueue;
use crate::logic::events::Event;
use crate::logic::fifo::Fifo;
use crate::logic::geometry::{io_shift, Geometry};
use crate::logic::storage::{Region, PAGE_SECTORS};
use crate::storage::Storage;
use crate::tracker::{CopyOnWrite, Tracker};

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
    /// In `Copying`, once the copy has read the chunk: its data at TAKE,
    /// in memory until the storage write completes. Writes to the
    /// original go on from then, and image reads are served from here.
    mem: Option<Arc<ChunkData>>,
}

/// A chunk's data at TAKE, in memory while it goes to storage (and after,
/// in the cache).
type ChunkData = PageVec;

impl Chunk {
    fn new(state: State) -> Self {
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
    fn writable(&self) -> bool {
        match self.state {
            State::Stored(_) => self.readers == 0,
            State::Failed => true,
            State::Copying => self.mem.is_some() && self.readers == 0,
            State::Original => false,
        }
    }
}

struct Chunks {
    map: RBTree<u32, Chunk>,
    /// The snapshot is going: nothing is held any more.
    closed: bool,
    /// One place per copy slot, holding the slot while it is not in use.
    idle: KVec<Option<Arc<CopyWork>>>,
    /// Chunks in `Copying` waiting for a copy slot, in `ring`. Every chunk
    /// in `Copying` is either running or queued here.
    queued: Fifo,
    ring: KVec<u32>,
    /// Stored chunks whose data stays in memory for image reads, oldest
    /// first, in `cache_ring` (`chunk_maximum_in_cache` places). A chunk
    /// listed here may have lost its data since (an image write); every
    /// `Stored` chunk with data in memory is listed.
    cached: Fifo,
    cache_ring: KVec<u32>,
}

impl Chunks {
    /// Takes the data of the oldest cached chunk that still has some.
    fn evict(&mut self) -> Option<Arc<ChunkData>> {
        while let Some(idx) = self.cached.pop(&self.cache_ring) {
            if let Some(data) = self.map.get_mut(&idx).and_then(|c| c.mem.take()) {
                return Some(data);
            }
        }
        None
    }
}

/// Most chunks a device keeps in memory after copying them, whatever
/// `chunk_maximum_in_cache` says.
const CACHE_MAX: u64 = 1024;

/// Chunk copies running at once for one device: each holds a chunk buffer,
/// so this bounds their memory (16 x 256 KiB with default chunks). The bound
/// is per device, so that one snapshot waiting for storage never takes the
/// copy slots of another.
const COPIES_AT_ONCE: u32 = 16;

impl CopyOnWrite for DiffArea {
    fn on_write(self: Arc<Self>, bio: IncomingBio<'_>) {
        self.write(bio);
    }

    /// The original went away (hot-unplug, driver removal): the image is
    /// corrupted.
    fn original_gone(&self) {
        self.corrupt(ENODEV);
    }
}

/// One copy slot of a device: a work item made at TAKE, so that starting a
/// copy allocates nothing. A copy is three short runs of the work item: the
/// first gets storage and a buffer and starts the read of the original;
/// the read's completion queues the second, which lets the held writes go
/// and starts the write to storage; that write's completion queues the
/// third, which records the chunk as stored. No thread waits for the I/O.
/// A slot that finishes a copy starts the next one queued, or goes back to
/// the device's idle slots.
#[pin_data]
struct CopyWork {
    #[pin]
    work: Work<CopyWork>,
    /// The copy under way, set before the slot is queued or its I/O
    /// started.
    #[pin]
    job: SpinLock<Option<Job>>,
    /// The copy's I/O in flight.
    io: AsyncIo,
    /// Where the slot's work runs (the I/O completions queue it there).
    wq: Arc<WorkQueue>,
}

/// A copy in a slot: the device, the chunk and how far it got.
struct Job {
    area: Arc<DiffArea>,
    idx: u32,
    step: Step,
}

enum Step {
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
        // The slot is not queued while its I/O runs.
        let wq = this.wq.clone();
        let _ = wq.enqueue(this);
    }
}

impl_has_work! {
    impl HasWork<Self> for CopyWork { self.work }
}

impl CopyWork {
    fn new(wq: Arc<WorkQueue>) -> Result<Arc<Self>> {
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

    fn run(this: Arc<CopyWork>) {
        let job = this.job.lock().take();
        if let Some(job) = job {
            let area = job.area.clone();
            area.copy_step(this, job.idx, job.step);
        }
    }
}

/// A chunk buffer from a device's pool, given back when dropped.
struct Buffer<'a> {
    area: &'a DiffArea,
    pages: KVec<Page>,
}

impl Drop for Buffer<'_> {
    fn drop(&mut self) {
        let pages = core::mem::take(&mut self.pages);
        self.area.put_buffer(pages);
    }
}

/// What a finished copy leaves to do once the chunk lock is dropped.
struct Settled {
    /// Writes that waited for the chunk.
    released: BioList,
    /// The copy slot, handed to the oldest queued chunk.
    next: Option<(Arc<CopyWork>, u32)>,
    /// Data the cache let go of.
    evicted: Option<Arc<ChunkData>>,
}

/// Where an image read of one chunk goes.
enum Source {
    Original,
    Storage(Region, Arc<BdevFile>),
    Memory(Arc<ChunkData>),
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
    /// Serialises bounced read-modify-write cycles on storage.
    #[pin]
    bounce: Mutex<()>,
    /// Spare chunk buffers (see the module documentation), one place per
    /// copy slot.
    #[pin]
    buffers: SpinLock<KVec<Option<KVec<Page>>>>,
    /// Signalled when a buffer comes back.
    #[pin]
    buffer_back: CondVar,
    /// Spare buffers kept: `free_diff_buffer_pool_size`, at least 1 and at
    /// most [`COPIES_AT_ONCE`] (more could never be in use).
    keep_buffers: usize,
    corrupted: AtomicBool,
    /// Set by DESTROY before it ends the storage waits.
    going: AtomicBool,
    /// Image bios accepted and not ended yet: DESTROY waits for them, so
    /// that none reaches storage after it returned (when the storage file
    /// may be deleted and its blocks another file's). Changed under the
    /// chunk lock, and `settled` is signalled when it falls to 0.
    image_ios: AtomicUsize,
    storage: Arc<Storage>,
    events: Arc<EventQueue>,
    /// Chunk copies, at most [`COPIES_AT_ONCE`] of this device's at once.
    copy_wq: Arc<WorkQueue>,
    /// Image I/O. Separate from copies: an image worker may wait for a
    /// copy, and must never take the place that copy needs to run.
    io_wq: Arc<WorkQueue>,
}

/// The chunk geometry for `orig`, from the module parameters as they are
/// now and the device's own I/O sizes.
fn chunk_geometry(orig: &BdevFile) -> Result<Geometry> {
    let min = u32::try_from(Param::ChunkMinimumShift.get()).map_err(|_| EINVAL)?;
    let max = u32::try_from(Param::ChunkMaximumShift.get()).map_err(|_| EINVAL)?;
    // Chunks are whole pages.
    if min < 12 {
        return Err(EINVAL);
    }
    let io = io_shift(
        orig.logical_block_size(),
        orig.physical_block_size(),
        orig.io_min(),
    );
    Geometry::new(
        orig.nr_sectors(),
        min.max(io).min(max),
        max,
        Param::ChunkMaximumCount.get(),
    )
    .map_err(|_| EINVAL)
}

impl DiffArea {
    /// The copy-on-write state of `tracker`'s device, open for I/O as
    /// `orig`, in a snapshot with `storage` and `events`.
    pub(crate) fn new(
        tracker: Arc<Tracker>,
        orig: Arc<BdevFile>,
        storage: Arc<Storage>,
        events: Arc<EventQueue>,
        copy_wq: Arc<WorkQueue>,
        io_wq: Arc<WorkQueue>,
    ) -> Result<Arc<Self>> {
        let geometry = chunk_geometry(&orig)?;
        let mut idle = KVec::with_capacity(COPIES_AT_ONCE as usize, GFP_KERNEL)?;
        for _ in 0..COPIES_AT_ONCE {
            idle.push(Some(CopyWork::new(copy_wq.clone())?), GFP_KERNEL)?;
        }
        let mut spare = KVec::with_capacity(COPIES_AT_ONCE as usize, GFP_KERNEL)?;
        spare.push(Some(alloc_buffer(&geometry, GFP_KERNEL)?), GFP_KERNEL)?;
        for _ in 1..COPIES_AT_ONCE {
            spare.push(None, GFP_KERNEL)?;
        }
        let keep = Param::FreeDiffBufferPoolSize
            .get()
            .clamp(1, COPIES_AT_ONCE.into());
        let cache_ring = KVec::from_elem(
            0u32,
            Param::ChunkMaximumInCache.get().min(CACHE_MAX) as usize,
            GFP_KERNEL,
        )?;
        Arc::pin_init(
            pin_init!(Self {
                orig,
                tracker,
                geometry,
                chunks <- new_spinlock!(
                    Chunks {
                        map: RBTree::new(),
                        closed: false,
                        idle,
                        queued: Fifo::new(),
                        ring: KVec::new(),
                        cached: Fifo::new(),
                        cache_ring,
                    },
                    "blksnap_chunks"
                ),
                settled <- new_condvar!("blksnap_chunk_settled"),
                bounce <- new_mutex!((), "blksnap_bounce"),
                buffers <- new_spinlock!(spare, "blksnap_buffers"),
                buffer_back <- new_condvar!("blksnap_buffer_back"),
                keep_buffers: keep as usize,
                corrupted: AtomicBool::new(false),
                going: AtomicBool::new(false),
                image_ios: AtomicUsize::new(0),
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

    /// The original's logical block size, which the image reports too.
    pub(crate) fn logical_block_size(&self) -> u32 {
        self.orig.logical_block_size()
    }

    pub(crate) fn tracker(&self) -> &Arc<Tracker> {
        &self.tracker
    }

    fn is_corrupted(&self) -> bool {
        self.corrupted.load(Ordering::Acquire)
    }

    /// The snapshot is being destroyed: failures from now on are its own
    /// doing, not news for user space.
    pub(crate) fn set_going(&self) {
        self.going.store(true, Ordering::Release);
    }

    /// Marks the image corrupted (once) and tells user space, unless the
    /// snapshot is going anyway.
    fn corrupt(&self, err: Error) {
        let first = !self.corrupted.swap(true, Ordering::AcqRel);
        if first {
            // Copies of this device waiting for storage give up now.
            self.storage.kick();
        }
        if first && !self.going.load(Ordering::Acquire) {
            let dev = self.dev();
            let errno = -err.to_errno();
            pr_err!(
                "image of {}:{} is corrupted (error {})\n",
                dev.major(),
                dev.minor(),
                errno
            );
            self.events.push(Event::corrupted(
                EventQueue::now(),
                dev.major(),
                dev.minor(),
                errno,
            ));
        }
    }

    /// The filter's write path: lets `bio` go on if every chunk it covers is
    /// saved, else takes it over until they are.
    fn write(self: &Arc<Self>, bio: IncomingBio<'_>) {
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
    fn queue_room(&self, want: usize) -> Result {
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
    fn start_or_queue(c: &mut Chunks, idx: u32, start: &mut KVec<(Arc<CopyWork>, u32)>) {
        let slot = if start.len() < start.capacity() {
            c.idle.iter_mut().find_map(Option::take)
        } else {
            None
        };
        if let Some(slot) = slot {
            // Within capacity: no allocation under the lock.
            let _ = start.push((slot, idx), GFP_ATOMIC);
        } else {
            // The caller checked the room under this lock.
            let _ = c.queued.push(&mut c.ring, idx);
        }
    }

    /// Runs the copies noted by [`Self::start_or_queue`].
    fn spawn_copies(self: &Arc<Self>, start: KVec<(Arc<CopyWork>, u32)>) {
        for (slot, idx) in start {
            self.start_copy(slot, idx);
        }
    }

    /// Runs the copy of chunk `idx` in `slot`, a slot of ours not queued.
    fn start_copy(self: &Arc<Self>, slot: Arc<CopyWork>, idx: u32) {
        *slot.job.lock() = Some(Job {
            area: self.clone(),
            idx,
            step: Step::Start,
        });
        // A slot is queued only by whoever took it from the idle ones or
        // finished its last copy in it: it cannot be pending already.
        let _ = self.copy_wq.enqueue(slot);
    }

    /// Resubmits `bio` if its chunks are all saved; otherwise holds it on the
    /// first chunk that is not, and starts saving every chunk it covers that
    /// nobody saves yet (up to `COPY_AHEAD` at a time), so that a large write
    /// waits for its copies in parallel rather than one after another.
    /// Copies beyond the device's slots wait in the queue, in order.
    fn hold_or_release(self: &Arc<Self>, bio: OwnedBio) {
        const COPY_AHEAD: u32 = 64;
        let _noio = NoIo::enter();
        let Some((first, end)) = self.geometry.units_of(bio.sector(), bio.sectors()) else {
            bio.resubmit();
            return;
        };
        // Room for the new entries, the copies to start and the queue, made
        // before the lock; what does not fit is started on a later pass.
        let want = (end - first).min(COPY_AHEAD) as usize;
        let (Ok(mut reservations), Ok(mut to_start)) = (
            KVec::with_capacity(want, GFP_KERNEL),
            KVec::<(Arc<CopyWork>, u32)>::with_capacity(want, GFP_KERNEL),
        ) else {
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
        let mut holder = None;
        // Copies started or queued by this pass, at most `want`.
        let mut fresh = 0;
        for idx in first..end {
            let writable = match c.map.get_mut(&idx) {
                Some(chunk) => {
                    let copy = matches!(chunk.state, State::Original) && fresh < want;
                    if copy {
                        chunk.state = State::Copying;
                    }
                    let w = chunk.writable();
                    if copy {
                        fresh += 1;
                        Self::start_or_queue(c, idx, &mut to_start);
                    }
                    w
                }
                None => {
                    if fresh < want {
                        if let Some(res) = reservations.iter_mut().find_map(Option::take) {
                            c.map.insert(res.into_node(idx, Chunk::new(State::Copying)));
                            fresh += 1;
                            Self::start_or_queue(c, idx, &mut to_start);
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
            drop(guard);
            self.spawn_copies(to_start);
            bio.resubmit();
            return;
        };
        let unheld = match c.map.get_mut(&holder) {
            Some(chunk) => {
                chunk.held.push(bio);
                None
            }
            // No memory for the entry: the chunk cannot be saved.
            None => Some(bio),
        };
        drop(guard);
        self.spawn_copies(to_start);
        if let Some(bio) = unheld {
            self.corrupt(ENOMEM);
            bio.resubmit();
        }
    }

    /// Worker: the next step of the copy of chunk `idx` in `slot`.
    fn copy_step(self: &Arc<Self>, slot: Arc<CopyWork>, idx: u32, step: Step) {
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
    fn copy_read(self: &Arc<Self>, slot: &Arc<CopyWork>, idx: u32) -> Result {
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
            false,
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
    fn copy_write(
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
            true,
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
    fn copy_end(
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
    fn release(&self, pages: IoPages) {
        match pages {
            IoPages::Own(pages) => self.put_buffer(pages),
            IoPages::Shared(data) => self.reclaim(Some(data)),
        }
    }

    /// Takes back the pages of a collected I/O that failed; returns the
    /// error to record (`EIO` when there was nothing to collect).
    fn give_back(&self, io: Option<(IoPages, Result)>) -> Error {
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
    fn share(self: &Arc<Self>, idx: u32, pages: KVec<Page>) -> Result<Arc<ChunkData>, KVec<Page>> {
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

    /// Gives `data`'s pages back to the pool, unless someone else still
    /// holds it: an image read copying from it (the pages then go when it
    /// is done), or the cache.
    fn reclaim(&self, data: Option<Arc<ChunkData>>) {
        if let Some(pages) = data.and_then(PageVec::into_pages) {
            self.put_buffer(pages);
        }
    }

    /// A chunk buffer: a spare one, a new one, or, when memory is short,
    /// the next one a running copy gives back (or memory that an image
    /// read gives back). Some copy or read always holds a buffer if none
    /// is spare (TAKE made one, and the pool never lets the last one go),
    /// so the wait ends.
    fn get_buffer(&self) -> Buffer<'_> {
        loop {
            if let Some(pages) = self.buffers.lock().iter_mut().find_map(Option::take) {
                return Buffer { area: self, pages };
            }
            if let Ok(pages) = alloc_buffer(&self.geometry, GFP_KERNEL | __GFP_NOWARN) {
                return Buffer { area: self, pages };
            }
            // Memory is short: the cache gives way to copies.
            let evicted = self.chunks.lock().evict();
            if let Some(pages) = evicted.and_then(PageVec::into_pages) {
                if !pages.is_empty() {
                    return Buffer { area: self, pages };
                }
            }
            let mut spare = self.buffers.lock();
            if spare.iter().all(Option::is_none) {
                // A buffer whose pages an image read still held is freed,
                // not given back, when that read ends: memory may come
                // back with no signal, so look again now and then.
                let _ = self
                    .buffer_back
                    .wait_interruptible_timeout(&mut spare, msecs_to_jiffies(20));
            }
        }
    }

    /// Takes a buffer back: kept as a spare, or freed if enough are.
    fn put_buffer(&self, pages: KVec<Page>) {
        // A buffer whose pages went to a `ChunkData` comes back empty.
        if pages.is_empty() {
            return;
        }
        let extra = {
            let mut spare = self.buffers.lock();
            let kept = spare.iter().filter(|b| b.is_some()).count();
            match spare.iter_mut().find(|b| b.is_none()) {
                Some(place) if kept < self.keep_buffers => {
                    *place = Some(pages);
                    None
                }
                _ => Some(pages),
            }
        };
        self.buffer_back.notify_all();
        drop(extra);
    }

    /// A copy ended (or could not start): records the chunk's state, hands
    /// the copy slot to the oldest queued chunk, and lets the writes that
    /// waited for the chunk go on.
    fn finish_copy(
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
    fn settle(
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

    /// Lets every held write go and holds no more (DESTROY, unload).
    /// Queued copies never start; then waits for the running ones to end
    /// (their I/O runs with no thread behind it, so only their slots
    /// coming back show that they are done).
    pub(crate) fn close(&self) {
        let mut all = BioList::new();
        {
            let mut guard = self.chunks.lock();
            let c = &mut *guard;
            c.closed = true;
            while let Some(idx) = c.queued.pop(&c.ring) {
                if let Some(chunk) = c.map.get_mut(&idx) {
                    chunk.state = State::Failed;
                }
            }
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
        let mut c = self.chunks.lock();
        while c.idle.iter().any(Option::is_none) || self.image_ios.load(Ordering::Acquire) != 0 {
            self.settled.wait(&mut c);
        }
    }

    /// Chooses where an image read of chunk `idx` goes, counting a reader of
    /// the original.
    fn read_source(
        &self,
        idx: u32,
        reservation: &mut Option<RBTreeNodeReservation<u32, Chunk>>,
    ) -> Result<Source> {
        let mut c = self.chunks.lock();
        match c.map.get_mut(&idx) {
            Some(chunk) => match chunk.state {
                State::Stored(_) | State::Copying if chunk.mem.is_some() => {
                    Ok(Source::Memory(chunk.mem.clone().ok_or(EIO)?))
                }
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
                forget = chunk.readers == 0
                    && matches!(chunk.state, State::Original)
                    && chunk.held.is_empty();
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

    /// Makes sure chunk `idx` is in storage and returns its region, for
    /// image writes. The copy goes through the device's copy slots like any
    /// other, so image writes add nothing to the memory copies use.
    fn ensure_stored(self: &Arc<Self>, idx: u32) -> Result<(Region, Arc<BdevFile>)> {
        let mut reservation = RBTreeNodeReservation::new(GFP_KERNEL).ok();
        self.queue_room(1)?;
        let mut to_start = KVec::<(Arc<CopyWork>, u32)>::with_capacity(1, GFP_KERNEL)?;
        let mut guard = self.chunks.lock();
        loop {
            if self.is_corrupted() || guard.closed {
                return Err(EIO);
            }
            let c = &mut *guard;
            let copy = match c.map.get_mut(&idx) {
                Some(chunk) => match chunk.state {
                    State::Stored(r) => {
                        // The image write makes the cached data stale.
                        let stale = chunk.mem.take();
                        let dev = chunk.storage.clone().ok_or(EIO);
                        drop(guard);
                        self.reclaim(stale);
                        return Ok((r, dev?));
                    }
                    State::Failed => return Err(EIO),
                    State::Copying => false,
                    State::Original => {
                        chunk.state = State::Copying;
                        true
                    }
                },
                None => {
                    let res = reservation.take().ok_or(ENOMEM)?;
                    c.map.insert(res.into_node(idx, Chunk::new(State::Copying)));
                    true
                }
            };
            if copy {
                if c.queued.room(&c.ring) == 0 {
                    // Used up since `queue_room`: give the chunk back.
                    if let Some(chunk) = c.map.get_mut(&idx) {
                        chunk.state = State::Original;
                    }
                    drop(guard);
                    self.queue_room(1)?;
                    guard = self.chunks.lock();
                    continue;
                }
                Self::start_or_queue(c, idx, &mut to_start);
                drop(guard);
                // The slot taken goes to its copy before anything can fail:
                // a slot dropped here would never come back, and the chunk
                // would stay `Copying` (its writes, DESTROY and unload
                // waiting for ever).
                self.spawn_copies(core::mem::take(&mut to_start));
                to_start = KVec::with_capacity(1, GFP_KERNEL)?;
                guard = self.chunks.lock();
                continue;
            }
            self.settled.wait(&mut guard);
        }
    }

    /// Performs bytes `[done, done + part)` of image bio `bio` on storage
    /// device `dev` at `sector`. A storage device whose logical blocks are
    /// larger than the image's (4Kn storage under a 512-byte original)
    /// cannot take a part that is not aligned to them: such a part goes
    /// through a bounce buffer of whole blocks (read, and for a write,
    /// modify and write back, one at a time per device).
    fn storage_io(
        &self,
        bio: &OwnedBio,
        done: u32,
        part: u32,
        dev: &BdevFile,
        sector: u64,
        write: bool,
    ) -> Result {
        let lbs = u64::from(dev.logical_block_size() >> 9).max(1);
        let n = u64::from(part >> 9);
        if sector % lbs == 0 && n % lbs == 0 {
            return bio.io_part(done, part, dev, sector);
        }
        let first = sector / lbs * lbs;
        let end = sector.checked_add(n).ok_or(EIO)?.div_ceil(lbs) * lbs;
        let bytes = usize::try_from((end - first) * 512).map_err(|_| EIO)?;
        let at = usize::try_from((sector - first) * 512).map_err(|_| EIO)?;
        let pages = alloc_pages(bytes.div_ceil(PAGE_SIZE), GFP_KERNEL)?;
        let _rmw = self.bounce.lock();
        page_io(dev, first, &pages, bytes, false)?;
        bio.copy_pages(done as usize, &pages, at, part as usize, !write)?;
        if write {
            page_io(dev, first, &pages, bytes, true)?;
        }
        Ok(())
    }

    /// [`Self::storage_io`] on a chunk's copy in storage: if that fails,
    /// the snapshot's data is lost or cannot be reached, so the image is
    /// corrupted (the event tells user space), not just this bio failed.
    fn stored_io(
        &self,
        bio: &OwnedBio,
        done: u32,
        part: u32,
        dev: &BdevFile,
        sector: u64,
        write: bool,
    ) -> Result {
        let r = self.storage_io(bio, done, part, dev, sector, write);
        if let Err(e) = r {
            if e != ENOMEM {
                self.corrupt(EIO);
            }
        }
        r
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
        // The source of the chunk after a run of reads, found while
        // extending the run (an original source counts a reader).
        let mut pending: Option<(u32, Source)> = None;
        while done < total {
            let (idx, _) = self.geometry.units_of(sector, 1).ok_or(EIO)?;
            let part = self.part_in_chunk(idx, sector, total - done)?;
            let in_chunk = sector - self.geometry.unit_start(idx);
            if write {
                let (region, dev) = self.ensure_stored(idx)?;
                self.stored_io(bio, done, part, &dev, region.sector + in_chunk, true)?;
                self.tracker.mark_dirty(sector, u64::from(part >> 9))?;
                done += part;
                sector += u64::from(part >> 9);
                continue;
            }
            let src = match pending.take() {
                Some((i, src)) if i == idx => src,
                other => {
                    self.drop_source(other);
                    let mut reservation = RBTreeNodeReservation::new(GFP_KERNEL).ok();
                    self.read_source(idx, &mut reservation)?
                }
            };
            // The chunks after this one that read from where this one ends
            // (the original, or the next region of the same storage) join
            // it: one I/O for the run.
            let (len, last) = self.extend_run(&src, idx, done + part, total, part, &mut pending);
            let r = match &src {
                Source::Storage(region, dev) => {
                    self.stored_io(bio, done, len, dev, region.sector + in_chunk, false)
                }
                Source::Memory(data) => {
                    let at = usize::try_from(in_chunk * 512).map_err(|_| EIO)?;
                    bio.copy_pages(done as usize, data.pages(), at, len as usize, true)
                }
                Source::Original => {
                    let r = bio.io_part(done, len, &self.orig, sector);
                    // Writes to the original stop being held once the
                    // image is corrupted or the snapshot is going, and one
                    // may have landed while this read was in flight: only
                    // a read that ended before either is known to hold the
                    // data of TAKE.
                    let stale = self.is_corrupted() || self.going.load(Ordering::Acquire);
                    for i in idx..=last {
                        self.read_done(i);
                    }
                    if r.is_ok() && stale {
                        Err(EIO)
                    } else {
                        r
                    }
                }
            };
            if let Err(e) = r {
                self.drop_source(pending.take());
                return Err(e);
            }
            done += len;
            sector += u64::from(len >> 9);
        }
        self.drop_source(pending);
        Ok(())
    }

    /// Bytes of an image bio from `sector` that lie in chunk `idx`, at most
    /// `left`.
    fn part_in_chunk(&self, idx: u32, sector: u64, left: u32) -> Result<u32> {
        let chunk_end = self.geometry.unit_start(idx) + self.geometry.unit_len(idx);
        u32::try_from(((chunk_end - sector) * 512).min(u64::from(left))).map_err(|_| EIO)
    }

    /// Extends an image read that starts in chunk `first` with `len` bytes
    /// (its first chunk's part) over the following chunks whose data lies
    /// right after it on the same device, up to byte `total` of the bio
    /// (`at` is where the run ends so far). Returns the run's length and
    /// last chunk; the source of the first chunk that does not join goes
    /// to `pending`.
    fn extend_run(
        &self,
        src: &Source,
        first: u32,
        mut at: u32,
        total: u32,
        mut len: u32,
        pending: &mut Option<(u32, Source)>,
    ) -> (u32, u32) {
        let mut last = first;
        let mut end_sector = match src {
            Source::Storage(r, _) => r.sector + self.geometry.unit_sectors(),
            // Data in memory is one chunk's: no run.
            Source::Memory(_) => return (len, last),
            Source::Original => 0,
        };
        while at < total {
            let n = last + 1;
            let part = match self.part_in_chunk(n, self.geometry.unit_start(n), total - at) {
                Ok(p) if p > 0 => p,
                _ => break,
            };
            let mut reservation = RBTreeNodeReservation::new(GFP_KERNEL).ok();
            let Ok(next) = self.read_source(n, &mut reservation) else {
                break;
            };
            let joins = match (src, &next) {
                (Source::Original, Source::Original) => true,
                (Source::Storage(_, dev), Source::Storage(r, d)) => {
                    Arc::ptr_eq(d, dev) && r.sector == end_sector
                }
                _ => false,
            };
            if !joins {
                *pending = Some((n, next));
                break;
            }
            end_sector += self.geometry.unit_sectors();
            len += part;
            at += part;
            last = n;
        }
        (len, last)
    }

    /// Gives up a source found but not used (an original source counted a
    /// reader).
    fn drop_source(self: &Arc<Self>, src: Option<(u32, Source)>) {
        if let Some((idx, Source::Original)) = src {
            self.read_done(idx);
        }
    }
}

impl DiskOps for DiffArea {
    /// `/sys/block/<image>/blksnap/`: the snapshot's diff storage, appended
    /// and consumed, in 512-byte sectors (shared by the snapshot's images),
    /// and this device's chunk size. Tools grow storage as it is consumed.
    const ATTR_GROUP: &'static CStr = c_str!("blksnap");
    const ATTRS: &'static [&'static CStr] = &[
        c_str!("diff_storage_total"),
        c_str!("diff_storage_used"),
        c_str!("chunk_sectors"),
    ];

    fn submit_bio(this: &Arc<Self>, bio: OwnedBio) {
        let counted = ImageIo::new(this.clone());
        // If the work item cannot be allocated, the closure and the bio in it
        // are dropped, which ends the bio with an I/O error (and then drops
        // the count): nothing else to do with the error.
        let _ = this.io_wq.spawn(move || {
            counted.0.image_io(bio);
            drop(counted);
        });
    }

    fn attr(this: &Arc<Self>, index: usize) -> u64 {
        match index {
            0 => this.storage.total(),
            1 => this.storage.used(),
            _ => this.geometry.unit_sectors(),
        }
    }
}

/// One image bio counted in [`DiffArea::image_ios`] until this is dropped,
/// after the bio ended.
struct ImageIo(Arc<DiffArea>);

impl ImageIo {
    fn new(area: Arc<DiffArea>) -> Self {
        // No lock needed: DESTROY waits only after the image disk is
        // deleted, when no bio comes in any more.
        area.image_ios.fetch_add(1, Ordering::AcqRel);
        Self(area)
    }
}

impl Drop for ImageIo {
    fn drop(&mut self) {
        let _c = self.0.chunks.lock();
        if self.0.image_ios.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.settled.notify_all();
        }
    }
}

/// A chunk buffer of `geometry`'s chunk size.
fn alloc_buffer(geometry: &Geometry, flags: kernel::alloc::Flags) -> Result<KVec<Page>> {
    let bytes = usize::try_from(geometry.unit_sectors() * 512).map_err(|_| EINVAL)?;
    alloc_pages(bytes.div_ceil(PAGE_SIZE), flags)
}

/// `n` pages.
fn alloc_pages(n: usize, flags: kernel::alloc::Flags) -> Result<KVec<Page>> {
    let mut pages = KVec::with_capacity(n, flags)?;
    for _ in 0..n {
        pages.push(Page::alloc_page(flags)?, flags)?;
    }
    Ok(pages)
}
