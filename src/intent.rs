// SPDX-License-Identifier: GPL-2.0

//! Write-intent marks of a tracker with a CBT store
//! (`Documentation/persistence.rst`, "Checkpoints and the write-intent
//! protocol"): the bitmap of the store's current epoch, the writes that
//! wait until their marks are durable, where the marks go, and the work
//! item that writes them. `logic::persist::Intent` decides what is
//! durable; the tracker runs the protocol on its write path
//! (`tracker.rs`); this holds the memory and does the store's I/O.

use kernel::alloc::flags::GFP_KERNEL;
use kernel::page::Page;
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex, SpinLock};
use kernel::workqueue::{Work, WorkItem};
use kernel::{impl_has_work, new_mutex, new_spinlock, new_work, pin_init};

use crate::kernel_ext::bio_list::BioList;
use crate::kernel_ext::block::BdevFile;
use crate::kernel_ext::mem::copy_to_page;
use crate::kernel_ext::page_io::{page_io, Dir};
use crate::kernel_ext::workqueue::WorkQueue;
use crate::logic::cbt_store::{intent_head, spoiled_header, Extents};
use crate::logic::persist::{intent_bytes, Intent, Layout, HEAD_BYTES, STORE_BLOCK};
use crate::tracker::Tracker;

/// Where a store's marks go: its device, and the device sector of each
/// block of both intent regions and of both header copies. Fixed for the
/// store's life, shared by the logs of its epochs.
pub(crate) struct MarkDest {
    bdev: Arc<BdevFile>,
    layout: Layout,
    /// Region 0's blocks, then region 1's.
    sectors: KVec<u64>,
    headers: [u64; 2],
}

impl MarkDest {
    /// The intent regions and headers of a store at `extents` of `bdev`,
    /// for `block_count` tracking blocks. `EINVAL` if the store lacks a
    /// block of them.
    pub(crate) fn new(
        bdev: Arc<BdevFile>,
        extents: &Extents<'_>,
        block_count: u32,
    ) -> Result<Self> {
        let layout = Layout::new(block_count);
        let n = layout.intent_blocks();
        let mut sectors = KVec::with_capacity(2 * n as usize, GFP_KERNEL)?;
        for epoch in 0..2u64 {
            for i in 0..n {
                let sector = extents
                    .sector_of(layout.intent_block(epoch, i))
                    .ok_or(EINVAL)?;
                sectors.push(sector, GFP_KERNEL)?;
            }
        }
        let header = |b: u64| extents.sector_of(b).ok_or(EINVAL);
        Ok(Self {
            headers: [header(0)?, header(1)?],
            bdev,
            layout,
            sectors,
        })
    }

    /// The tracking block count it was made for.
    pub(crate) fn block_count(&self) -> u32 {
        self.layout.block_count()
    }

    /// Writes intent block `i` of `epoch` from `buf` (whose payload is in
    /// place), with its head. Durable when this returns (FUA): one round
    /// trip to the disk, where a write and a flush would take two.
    pub(crate) fn write_block(&self, buf: &mut MarkBuf, epoch: u64, i: u32) -> Result {
        let n = self.layout.intent_blocks() as usize;
        let at = (epoch & 1) as usize * n + i as usize;
        let sector = *self.sectors.get(at).ok_or(EINVAL)?;
        intent_head(self.layout.intent_block(epoch, i), epoch)
            .seal(&mut buf.bytes)
            .map_err(|_| EINVAL)?;
        buf.write(&self.bdev, sector, Dir::WriteDurable)
    }

    /// Makes the store fail its checks at its next attach: both header
    /// copies keep the magic and lose their checksum. For when marks could
    /// not be written: the store must never be taken up with them.
    pub(crate) fn spoil(&self, buf: &mut MarkBuf) -> Result {
        spoiled_header(&mut buf.bytes);
        for &sector in self.headers.iter() {
            buf.write(&self.bdev, sector, Dir::Write)?;
        }
        self.bdev.flush()
    }
}

/// One store block of memory for the marks' I/O, and the page it goes
/// through.
pub(crate) struct MarkBuf {
    bytes: KVec<u8>,
    page: Page,
}

impl MarkBuf {
    pub(crate) fn new() -> Result<Self> {
        Ok(Self {
            bytes: KVec::from_elem(0u8, STORE_BLOCK, GFP_KERNEL)?,
            page: Page::alloc_page(GFP_KERNEL)?,
        })
    }

    /// Where an intent block's payload goes.
    pub(crate) fn payload_mut(&mut self) -> &mut [u8] {
        self.bytes.get_mut(HEAD_BYTES..).unwrap_or(&mut [])
    }

    fn write(&mut self, bdev: &BdevFile, sector: u64, dir: Dir) -> Result {
        copy_to_page(&mut self.page, &self.bytes)?;
        page_io(
            bdev,
            sector,
            core::slice::from_ref(&self.page),
            STORE_BLOCK,
            dir,
        )
    }
}

/// The marks of one epoch of a tracker's store: what is durable, the
/// writes that wait for a flush, and the worker's state. Lives in the
/// tracker's write-path state, under its lock.
pub(crate) struct MarkLog {
    pub(crate) bits: Intent<KVec<u8>>,
    /// The store's epoch these marks belong to.
    pub(crate) epoch: u64,
    /// Writes waiting for the flush in flight (`[0]`) and for the next one
    /// (`[1]`).
    pub(crate) waiting: [BioList; 2],
    /// The work item is queued or running.
    pub(crate) busy: bool,
    /// A checkpoint is under way: no flush starts (writes that need one
    /// wait).
    pub(crate) paused: bool,
    pub(crate) dest: Arc<MarkDest>,
    pub(crate) work: Arc<MarkWork>,
    pub(crate) wq: Arc<WorkQueue>,
}

impl MarkLog {
    /// Empty marks of `epoch` for `block_count` tracking blocks.
    pub(crate) fn new(
        dest: Arc<MarkDest>,
        epoch: u64,
        block_count: u32,
        wq: Arc<WorkQueue>,
    ) -> Result<Self> {
        let (nb, nd) = intent_bytes(block_count);
        let bits = || KVec::from_elem(0u8, nb, GFP_KERNEL);
        let blocks = || KVec::from_elem(0u8, nd, GFP_KERNEL);
        let intent = Intent::new(
            [bits()?, bits()?, bits()?],
            [blocks()?, blocks()?],
            block_count,
        )
        .map_err(|_| EINVAL)?;
        Ok(Self {
            bits: intent,
            epoch,
            waiting: [BioList::new(), BioList::new()],
            busy: false,
            paused: false,
            dest,
            work: MarkWork::new()?,
            wq,
        })
    }

    /// Holds a write until flush `ticket` (of [`Intent::note`]) completes.
    /// Returns the work item to queue, if the worker must be started.
    pub(crate) fn wait_for(
        &mut self,
        ticket: u64,
        bio: crate::kernel_ext::bio::OwnedBio,
    ) -> Option<(Arc<MarkWork>, Arc<WorkQueue>)> {
        let in_flight = self.bits.in_flight() && ticket == self.bits.completed() + 1;
        let slot = if in_flight { 0 } else { 1 };
        if let Some(list) = self.waiting.get_mut(slot) {
            list.push(bio);
        }
        self.kick()
    }

    /// The work item to queue if writes wait and no worker runs.
    pub(crate) fn kick(&mut self) -> Option<(Arc<MarkWork>, Arc<WorkQueue>)> {
        if self.busy || self.paused || self.waiting.iter().all(|l| l.is_empty()) {
            return None;
        }
        self.busy = true;
        Some((self.work.clone(), self.wq.clone()))
    }

    /// Every write waiting, taken out.
    pub(crate) fn take_waiting(&mut self) -> BioList {
        let [a, b] = &mut self.waiting;
        let mut all = a.take();
        all.append(b.take());
        all
    }
}

/// The work item that flushes a tracker's marks: queued with the tracker
/// it works for, run by one worker at a time (`MarkLog::busy`).
#[pin_data]
pub(crate) struct MarkWork {
    #[pin]
    work: Work<MarkWork>,
    /// The tracker, set before the item is queued, taken when it runs.
    #[pin]
    pub(crate) job: SpinLock<Option<Arc<Tracker>>>,
    /// The worker's block of memory.
    #[pin]
    pub(crate) buf: Mutex<MarkBuf>,
}

impl_has_work! {
    impl HasWork<Self> for MarkWork { self.work }
}

impl MarkWork {
    fn new() -> Result<Arc<Self>> {
        let buf = MarkBuf::new()?;
        Arc::pin_init(
            pin_init!(Self {
                work <- new_work!("blksnap_marks"),
                job <- new_spinlock!(None, "blksnap_marks_job"),
                buf <- new_mutex!(buf, "blksnap_marks_buf"),
            }),
            GFP_KERNEL,
        )
    }

    /// Queues the item for `tracker` on `wq`.
    pub(crate) fn start(this: Arc<Self>, wq: &WorkQueue, tracker: Arc<Tracker>) {
        *this.job.lock() = Some(tracker);
        let _ = wq.enqueue(this);
    }
}

impl WorkItem for MarkWork {
    type Pointer = Arc<MarkWork>;

    fn run(this: Arc<MarkWork>) {
        let tracker = this.job.lock().take();
        if let Some(t) = tracker {
            t.flush_marks(&this);
        }
    }
}
