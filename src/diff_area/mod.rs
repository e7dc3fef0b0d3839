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
//! module's own bio set. A copy's first step, the only one that waits (for
//! storage, a buffer or a bio), runs on a queue of its own: the later
//! steps, which give buffers and bios back, never queue behind it.
//!
//! Locking: one spinlock per device guards its chunk map and copy queue (no
//! global lock on the write path); allocations happen before taking it.
//!
//! The work is split by job, each file with a module comment of its own:
//!
//! - `mod.rs`: the per-device object that ties the others together, its
//!   creation, corruption and end;
//! - `chunks.rs`: the chunk map and its state machine, and the write path;
//! - `copy.rs`: the copy engine (slots, steps, completions);
//! - `buffers.rs`: the chunk buffer pool and the pages behind it;
//! - `image.rs`: the image disk (reads, writes, bounce).

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use kernel::alloc::flags::GFP_KERNEL;
use kernel::page::Page;
use kernel::prelude::*;
use kernel::rbtree::RBTree;
use kernel::sync::{Arc, CondVar, Mutex, SpinLock};
use kernel::workqueue::Work;
use kernel::{new_condvar, new_mutex, new_spinlock, new_work, pin_init};

use crate::event_queue::EventQueue;
use crate::kernel_ext::bio::IncomingBio;
use crate::kernel_ext::bio_list::BioList;
use crate::kernel_ext::block::{BdevFile, DevT};
use crate::kernel_ext::params::Param;
use crate::kernel_ext::workqueue::WorkQueue;
use crate::logic::events::Event;
use crate::logic::fifo::Fifo;
use crate::logic::geometry::{io_shift, Geometry};
use crate::storage::Storage;
use crate::tracker::{CopyOnWrite, Tracker};

mod buffers;
mod chunks;
mod copy;
mod image;

use self::buffers::alloc_buffer;
use self::chunks::{Chunks, State};
use self::copy::{CopyWork, Due, SlotRing, START_BATCH, STEP_BATCH};

/// Most chunks a device keeps in memory after copying them, whatever
/// `chunk_maximum_in_cache` says, and most bytes they may take (large
/// chunks get fewer places). Memory pressure takes them back before that
/// (the device's shrinker, see `buffers.rs`).
const CACHE_MAX: u64 = 1024;
const CACHE_MAX_BYTES: u64 = 64 << 20;

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
    /// Where copies start (their first step, which may wait for storage or
    /// for a chunk buffer). Their later steps, which give buffers and bios
    /// back and never wait for either, run on the copy queue their slots
    /// hold: a copy waiting for a buffer never keeps the copy that would
    /// give one back from running, even when memory is so short that each
    /// queue has only its rescuer.
    start_wq: Arc<WorkQueue>,
    /// Where the later steps of copies run, in batches (`copy.rs`).
    copy_wq: Arc<WorkQueue>,
    /// Copy steps due, in their two batches.
    #[pin]
    due: SpinLock<Due>,
    /// The runs of the two batches, on `start_wq` and `copy_wq`.
    #[pin]
    start_batch: Work<DiffArea, START_BATCH>,
    #[pin]
    step_batch: Work<DiffArea, STEP_BATCH>,
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
        start_wq: Arc<WorkQueue>,
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
        let cache_places = Param::ChunkMaximumInCache
            .get()
            .min(CACHE_MAX)
            .min(CACHE_MAX_BYTES / u64::from(geometry.unit_bytes().max(1)));
        let cache_ring = KVec::from_elem(0u32, cache_places as usize, GFP_KERNEL)?;
        let due = Due {
            start: SlotRing::new(COPIES_AT_ONCE as usize)?,
            steps: SlotRing::new(COPIES_AT_ONCE as usize)?,
        };
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
                start_wq,
                copy_wq,
                due <- new_spinlock!(due, "blksnap_due"),
                start_batch <- new_work!("blksnap_start_batch"),
                step_batch <- new_work!("blksnap_step_batch"),
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
}
