// SPDX-License-Identifier: GPL-2.0

//! Trackers: change tracking on one block device.
//!
//! A tracker holds its device by reference until the device goes away, has
//! a bio filter attached to it, and keeps the device's CBT maps. The filter marks every write in the
//! active map under the tracker's own lock: there is no global lock on the
//! write path. It also counts the writes it lets through until they
//! complete, so that TAKE can hold new writes and wait for those in flight:
//! a write racing TAKE is then wholly before the snapshot or wholly after.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kernel::alloc::flags::GFP_KERNEL;
use kernel::page::PAGE_SIZE;
use kernel::prelude::*;
use kernel::sync::{Arc, CondVar, SpinLock};
use kernel::time::Ktime;
use kernel::{new_condvar, new_spinlock, pin_init};

use crate::intent::{MarkBuf, MarkDest, MarkLog, MarkWork};
use crate::kernel_ext::bio::{BlkStatus, IncomingBio};
use crate::kernel_ext::bio_list::BioList;
use crate::kernel_ext::block::{BdevFile, BdevRef, DevT};
use crate::kernel_ext::filter::FilterOps;
use crate::kernel_ext::inflight::{InFlight, WatchPool};
use crate::kernel_ext::mem::{alloc_n, zeroed_box, NoIo};
use crate::kernel_ext::params::Param;
use crate::kernel_ext::random::random_uuid;
use crate::kernel_ext::time::{sleep, sleep_interruptible};
use crate::logic::cbt::{differs_bytes, pages_for, Cbt, Numbers, PagedBytes};
use crate::logic::geometry::Geometry;
use crate::logic::persist::Note;
use crate::uapi;

/// A zeroed page of a CBT map.
type MapPage = KBox<[u8; PAGE_SIZE]>;

/// What an absent page of a sparse map reads as.
static ZEROES: [u8; PAGE_SIZE] = [0; PAGE_SIZE];

/// CBT map bytes, one page-sized allocation per page present.
pub(crate) struct PageMap {
    pages: KVec<Option<MapPage>>,
}

impl PageMap {
    /// A zeroed map of at least `bytes` bytes, every page present.
    fn new(bytes: usize) -> Result<Self> {
        let n = pages_for::<Self>(bytes);
        let pages = alloc_n(n, GFP_KERNEL, || zeroed_box(GFP_KERNEL).map(Some))?;
        Ok(Self { pages })
    }

    /// A zeroed map of at least `bytes` bytes, no page present yet.
    fn sparse(bytes: usize) -> Result<Self> {
        let n = pages_for::<Self>(bytes);
        let pages = alloc_n(n, GFP_KERNEL, || Ok(None))?;
        Ok(Self { pages })
    }
}

/// One zeroed map page (a snapshot map page taken up from a CBT store).
pub(crate) fn map_page() -> Option<MapPage> {
    zeroed_box(GFP_KERNEL).ok()
}

/// `n` zeroed map pages, allocated without I/O (TAKE holds the device's
/// writes meanwhile, and image writes run in the I/O path).
fn map_pages(n: usize) -> Result<KVec<MapPage>> {
    let _noio = NoIo::enter();
    Ok(alloc_n(n, GFP_KERNEL, || zeroed_box(GFP_KERNEL))?)
}

impl PagedBytes for PageMap {
    const PAGE: usize = PAGE_SIZE;
    type Page = MapPage;

    fn pages(&self) -> usize {
        self.pages.len()
    }

    fn present(&self, i: usize) -> bool {
        matches!(self.pages.get(i), Some(Some(_)))
    }

    fn page(&self, i: usize) -> &[u8] {
        match self.pages.get(i) {
            Some(Some(p)) => &p[..],
            _ => &ZEROES[..],
        }
    }

    fn page_mut(&mut self, i: usize) -> &mut [u8] {
        match self.pages.get_mut(i) {
            Some(Some(p)) => &mut p[..],
            _ => &mut [],
        }
    }

    fn put(&mut self, i: usize, page: MapPage) {
        if let Some(slot @ None) = self.pages.get_mut(i) {
            *slot = Some(page);
        }
    }
}

/// The tracking geometry for a device of `capacity` sectors, from the
/// module parameters as they are now.
fn tracking_geometry(capacity: u64) -> Result<Geometry> {
    let min = Param::TrackingBlockMinimumShift.get();
    let max = Param::TrackingBlockMaximumShift.get();
    let count = Param::TrackingBlockMaximumCount.get();
    let (Ok(min), Ok(max)) = (u32::try_from(min), u32::try_from(max)) else {
        return Err(EINVAL);
    };
    Geometry::new(capacity, min, max, count).map_err(|_| EINVAL)
}

/// A new CBT for a device of `capacity` sectors.
/// The maps of a tracker.
pub(crate) type TrackerCbt = Cbt<PageMap>;

/// What a CBT store's header records of a tracker's maps.
#[derive(Clone, Copy)]
pub(crate) struct MapFields {
    /// log2 of the tracking block size, bytes.
    pub(crate) block_shift: u32,
    pub(crate) block_count: u32,
    pub(crate) previous: u8,
    pub(crate) active: u8,
    pub(crate) generation: [u8; 16],
}

impl MapFields {
    pub(crate) fn of(cbt: &TrackerCbt) -> Self {
        let g = cbt.geometry();
        Self {
            block_shift: g.shift(),
            block_count: g.count(),
            previous: cbt.previous_number(),
            active: cbt.active_number(),
            generation: *cbt.generation(),
        }
    }
}

/// Fresh maps, in a new generation, for a device of `capacity` sectors.
pub(crate) fn new_cbt(capacity: u64) -> Result<TrackerCbt> {
    let g = tracking_geometry(capacity)?;
    let bytes = g.count() as usize;
    Cbt::new(
        g,
        PageMap::new(bytes)?,
        PageMap::sparse(bytes)?,
        PageMap::new(differs_bytes::<PageMap>(bytes))?,
        random_uuid(),
    )
    .map_err(|_| ENOMEM)
}

/// Copy on write of a device in a taken snapshot, as the tracker sees it:
/// where its writes go once they are marked in the CBT. (The tracker does
/// not know how copies are made: `diff_area` implements this.)
pub(crate) trait CopyOnWrite: Send + Sync {
    /// A write to the device, after the CBT has marked it: let it go on or
    /// take it over until the data it overwrites is saved.
    fn on_write(self: Arc<Self>, bio: IncomingBio<'_>);

    /// The device went away. Called from the filter's detach, in process
    /// context under the block layer's removal locks: it may take short
    /// sleeping locks, not wait for I/O.
    fn original_gone(&self);
}

/// What the write path needs, under one lock: the CBT, while the device
/// is in a taken snapshot its copy-on-write state, and with a CBT store
/// its write-intent marks.
pub(crate) struct TrackState {
    cbt: Cbt<PageMap>,
    diff: Option<Arc<dyn CopyOnWrite>>,
    /// TAKE is switching: new writes wait (see [`Tracker::hold_writes`]).
    holding: bool,
    /// The store's marks: a write whose blocks are not marked durably
    /// waits for a flush of them before it goes on.
    marks: Option<MarkLog>,
}

/// How long TAKE waits for the writes in flight on a device before it gives
/// up with `EBUSY`: long enough for any working device.
const DRAIN_LIMIT_NS: i64 = 30_000_000_000;

/// Change tracking state of one device; the filter's data.
///
/// The tracker holds its device by reference, not open: an administrator
/// can still remove the device (`dmsetup remove`, `losetup -d`, `rmmod` of
/// its driver) between backups, which ends the tracking. Only a taken
/// snapshot holds the device open. When the device goes, the reference
/// goes with it: a disk's last reference calls its driver's `free_disk`,
/// so one kept after that could outlive the driver module.
#[pin_data]
pub(crate) struct Tracker {
    dev: DevT,
    /// The whole disk `dev` is on (itself if it is one).
    whole: DevT,
    /// The device, until it goes away ([`FilterOps::detached`]).
    #[pin]
    bdev: SpinLock<Option<BdevRef>>,
    #[pin]
    cbt: SpinLock<TrackState>,
    /// Writers waiting for TAKE to end its hold.
    #[pin]
    resume: CondVar,
    /// Writes let through and not yet completed.
    inflight: Arc<InFlight>,
    pool: Arc<WatchPool>,
    /// The device went away; the filter is gone.
    gone: AtomicBool,
    /// The device's capacity was set since the maps were made: what it
    /// holds may have changed without a bio, even if its size is the same
    /// again (an LV shrunk and extended). The next CREATE or TAKE starts
    /// over.
    replaced: AtomicBool,
    /// Write-intent flushes done (PERSIST_STATUS).
    flushes: AtomicU64,
}

/// New writes to a device wait while this lives (see
/// [`Tracker::hold_writes`]).
pub(crate) struct Hold<'a>(&'a Tracker);

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        self.0.cbt.lock().holding = false;
        self.0.resume.notify_all();
    }
}

impl Tracker {
    /// A tracker for the device `bdev`, with fresh maps.
    /// The filter counts the writes it lets through with records of `pool`.
    pub(crate) fn new(bdev: BdevRef, pool: Arc<WatchPool>) -> Result<Arc<Self>> {
        let cbt = new_cbt(bdev.nr_sectors())?;
        Self::with_cbt(bdev, pool, cbt, None)
    }

    /// A tracker for `bdev` that goes on with `cbt` (maps taken up from a
    /// CBT store, made by [`new_cbt`] for this device), keeping the
    /// store's write-intent marks in `marks`.
    pub(crate) fn with_cbt(
        bdev: BdevRef,
        pool: Arc<WatchPool>,
        cbt: TrackerCbt,
        marks: Option<MarkLog>,
    ) -> Result<Arc<Self>> {
        let inflight = InFlight::new()?;
        Arc::pin_init(
            pin_init!(Self {
                dev: bdev.dev(),
                whole: bdev.whole_dev(),
                bdev <- new_spinlock!(Some(bdev), "blksnap_tracker_bdev"),
                cbt <- new_spinlock!(
                    TrackState { cbt, diff: None, holding: false, marks },
                    "blksnap_tracker"
                ),
                resume <- new_condvar!("blksnap_resume"),
                inflight,
                pool,
                gone: AtomicBool::new(false),
                replaced: AtomicBool::new(false),
                flushes: AtomicU64::new(0),
            }),
            GFP_KERNEL,
        )
    }

    pub(crate) fn dev(&self) -> DevT {
        self.dev
    }

    /// The whole disk the device is on (the device itself if it is one).
    pub(crate) fn whole_dev(&self) -> DevT {
        self.whole
    }

    /// Whether `file` is an open file of the tracked device itself (not of
    /// another that took its number after it went away).
    pub(crate) fn is_device(&self, file: &BdevFile) -> bool {
        self.bdev.lock().as_ref().is_some_and(|b| b.is(file))
    }

    /// The device's size in sectors, `ENODEV` once it went away.
    fn nr_sectors(&self) -> Result<u64> {
        self.bdev
            .lock()
            .as_ref()
            .map(|b| b.nr_sectors())
            .ok_or(ENODEV)
    }

    /// Bytes of the active map (`snapshot` false) or the snapshot map from
    /// `offset` into `out`; how many (0 past the end). For the checkpoints
    /// of a CBT store.
    pub(crate) fn read_either_map(&self, snapshot: bool, offset: usize, out: &mut [u8]) -> usize {
        self.cbt.lock().cbt.read_map(snapshot, offset, out)
    }

    /// What a CBT store's header records of the maps.
    pub(crate) fn map_fields(&self) -> MapFields {
        MapFields::of(&self.cbt.lock().cbt)
    }

    /// The device's size and the sectors written to it since it appeared;
    /// `ENODEV` once it went away.
    pub(crate) fn size_and_written(&self) -> Result<(u64, u64)> {
        self.bdev
            .lock()
            .as_ref()
            .map(|b| (b.nr_sectors(), b.sectors_written()))
            .ok_or(ENODEV)
    }

    /// Whether the device went away under the tracker.
    pub(crate) fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }

    /// Starts a new map and generation if the device changed size, or had
    /// its capacity set at all since the maps were made.
    pub(crate) fn check_resize(&self) -> Result {
        let capacity = self.nr_sectors()?;
        let replaced = self.replaced.swap(false, Ordering::AcqRel);
        if !replaced && !self.cbt.lock().cbt.resized(capacity) {
            return Ok(());
        }
        let fresh = new_cbt(capacity)?;
        let old = core::mem::replace(&mut self.cbt.lock().cbt, fresh);
        drop(old);
        pr_info!(
            "{}:{}: its size was set anew: change tracking restarts\n",
            self.dev().major(),
            self.dev().minor()
        );
        Ok(())
    }

    /// TAKE, first step: new writes to the device wait until the returned
    /// hold is dropped. Writes already let through go on.
    pub(crate) fn hold_writes(&self) -> Hold<'_> {
        self.cbt.lock().holding = true;
        Hold(self)
    }

    /// TAKE, second step (under a hold): waits until every write let
    /// through has completed. Fails with `EINTR` on a signal and with
    /// `EBUSY` if the device keeps a write longer than [`DRAIN_LIMIT_NS`].
    pub(crate) fn drain(&self) -> Result {
        let start = Ktime::ktime_get();
        while self.inflight.count() != 0 {
            if (Ktime::ktime_get() - start).to_ns() > DRAIN_LIMIT_NS {
                let dev = self.dev();
                pr_warn!(
                    "{}:{}: writes in flight did not complete: TAKE gives up\n",
                    dev.major(),
                    dev.minor()
                );
                return Err(EBUSY);
            }
            sleep_interruptible(1)?;
        }
        Ok(())
    }

    /// TAKE, third step (under a hold, after the drain): memory for the
    /// snapshot map pages that the switch fills. With writes held, what
    /// the switch needs cannot change meanwhile.
    pub(crate) fn reserve_map_pages(&self) -> Result<KVec<MapPage>> {
        let need = self.cbt.lock().cbt.missing_for_switch();
        map_pages(need)
    }

    /// TAKE: at one instant for this device's writes, switches the maps
    /// (the snapshot map becomes what the active map is, its new pages
    /// taken from `pages`) and starts copy on write into `diff`.
    /// Returns the numbering from before the switch, for
    /// [`Tracker::undo_snapshot`].
    pub(crate) fn start_snapshot(
        &self,
        diff: Arc<dyn CopyOnWrite>,
        pages: KVec<MapPage>,
    ) -> Numbers {
        let mut pages = pages.into_iter();
        let mut st = self.cbt.lock();
        let before = st.cbt.numbers();
        if !st.cbt.switch(random_uuid, &mut || pages.next()) {
            // Not reachable with the pages reserved; if it were, tracking
            // starts over in a new generation rather than lose changes.
            pr_err!(
                "{}:{}: change map pages missing: tracking restarts\n",
                self.dev().major(),
                self.dev().minor()
            );
        }
        st.diff = Some(diff);
        drop(st);
        // Pages left over are freed after the lock.
        drop(pages);
        before
    }

    /// Undoes [`Tracker::start_snapshot`] for a TAKE that failed after its
    /// switch: copy on write stops and the numbering is as it was (unless
    /// the switch started a new generation, which stays).
    pub(crate) fn undo_snapshot(&self, before: Numbers) {
        let mut st = self.cbt.lock();
        let diff = st.diff.take();
        let undone = st.cbt.undo_switch(before);
        drop(st);
        drop(diff);
        if !undone {
            pr_info!(
                "{}:{}: TAKE failed after a new generation began: it stays\n",
                self.dev().major(),
                self.dev().minor()
            );
        }
    }

    /// Stops copy on write (DESTROY); returns the area that was in use.
    pub(crate) fn end_snapshot(&self) -> Option<Arc<dyn CopyOnWrite>> {
        self.cbt.lock().diff.take()
    }

    /// Marks sectors changed outside the write path (user request, image
    /// writes). Fails when there is no memory for the snapshot map's pages
    /// (`ENOMEM`) or the map keeps being replaced (`EBUSY`): then nothing
    /// is marked.
    pub(crate) fn mark_dirty(&self, sector: u64, len: u64) -> Result {
        // Only a map replaced in between (the device changed size) needs
        // another round; one that keeps changing gets `EBUSY`.
        for _ in 0..4 {
            let need = self.cbt.lock().cbt.missing_for_dirty(sector, len);
            let mut pages = map_pages(need)?.into_iter();
            let done = self
                .cbt
                .lock()
                .cbt
                .mark_dirty(sector, len, &mut || pages.next());
            if done {
                return Ok(());
            }
        }
        Err(EBUSY)
    }

    /// Copies snapshot map bytes from `offset` into `out`; returns how many.
    pub(crate) fn read_map(&self, offset: usize, out: &mut [u8]) -> usize {
        self.cbt.lock().cbt.read_snapshot(offset, out)
    }

    /// Bytes in the map.
    pub(crate) fn map_len(&self) -> usize {
        self.cbt.lock().cbt.geometry().count() as usize
    }

    /// The ABI description of the tracker.
    pub(crate) fn info(&self) -> uapi::BlkSnapCbtInfo {
        let dev = self.dev();
        let st = self.cbt.lock();
        let cbt = &st.cbt;
        let g = cbt.geometry();
        uapi::BlkSnapCbtInfo {
            dev_id: uapi::BlkSnapDev {
                mj: dev.major(),
                mn: dev.minor(),
            },
            blk_size: g.unit_bytes(),
            device_capacity: g.capacity().saturating_mul(512),
            blk_count: g.count(),
            generation_id: uapi::BlkSnapUuid {
                b: *cbt.generation(),
            },
            snap_number: cbt.previous_number(),
            ..Default::default()
        }
    }
}

/// How long a checkpoint waits for a write-intent flush under way: long
/// enough for any working store.
const MARKS_IDLE_LIMIT_NS: i64 = 30_000_000_000;

impl Tracker {
    /// Write-intent flushes done so far.
    pub(crate) fn mark_flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// Whether write-intent marks are kept.
    pub(crate) fn has_marks(&self) -> bool {
        self.cbt.lock().marks.is_some()
    }

    /// Lets writes taken off the write path go through it again.
    fn let_go(self: &Arc<Self>, mut list: BioList) {
        while let Some(bio) = list.pop() {
            bio.refilter(|b| Self::submit_bio(self, b));
        }
    }

    /// Before a checkpoint: no write-intent flush starts, and the one under
    /// way has ended. Writes that need a flush wait meanwhile (not in
    /// flight: a drain does not wait for them). Call before
    /// [`Tracker::hold_writes`], since the flush lets writes go through
    /// the write path. `EBUSY` if the flush does not end in time; then
    /// nothing is paused.
    pub(crate) fn pause_marks(self: &Arc<Self>) -> Result {
        match self.cbt.lock().marks.as_mut() {
            Some(log) => log.paused = true,
            None => return Ok(()),
        }
        let start = Ktime::ktime_get();
        while self.cbt.lock().marks.as_ref().is_some_and(|l| l.busy) {
            if (Ktime::ktime_get() - start).to_ns() > MARKS_IDLE_LIMIT_NS {
                self.resume_marks(BioList::new());
                return Err(EBUSY);
            }
            sleep(1);
        }
        Ok(())
    }

    /// After [`Tracker::pause_marks`] (and the hold, if any, dropped):
    /// flushes start again, and `released` (what
    /// [`Tracker::replace_marks`] took out) goes through the write path.
    pub(crate) fn resume_marks(self: &Arc<Self>, released: BioList) {
        let kick = match self.cbt.lock().marks.as_mut() {
            Some(log) => {
                log.paused = false;
                log.kick()
            }
            None => None,
        };
        if let Some((work, wq)) = kick {
            MarkWork::start(work, &wq, self.clone());
        }
        self.let_go(released);
    }

    /// Under a pause and a hold, once a checkpoint is durable: the marks of
    /// its new epoch (`None`: no marks). Returns the writes that waited for
    /// the old marks, for [`Tracker::resume_marks`].
    pub(crate) fn replace_marks(&self, marks: Option<MarkLog>) -> BioList {
        let old = core::mem::replace(&mut self.cbt.lock().marks, marks);
        match old {
            Some(mut log) => log.take_waiting(),
            None => BioList::new(),
        }
    }

    /// The tracker ends: no more marks, and the writes that waited for
    /// them go on.
    pub(crate) fn stop_marks(self: &Arc<Self>) {
        // On EBUSY the marks go all the same: no flush is started again.
        let _ = self.pause_marks();
        let released = self.replace_marks(None);
        self.resume_marks(released);
    }

    /// The write-intent worker ([`MarkWork`]): writes the marks that writes
    /// wait for, flushes the store's device, lets those writes go, and
    /// again until none waits.
    pub(crate) fn flush_marks(self: &Arc<Self>, work: &MarkWork) {
        let mut guard = work.buf.lock();
        let buf = &mut *guard;
        loop {
            let (ticket, epoch, dest) = {
                let mut st = self.cbt.lock();
                let Some(log) = st.marks.as_mut() else {
                    return;
                };
                if log.paused {
                    log.busy = false;
                    return;
                }
                let Some(flush) = log.bits.begin_flush() else {
                    // Nothing to flush: whatever waits goes through again.
                    log.busy = false;
                    let stray = log.take_waiting();
                    drop(st);
                    self.let_go(stray);
                    return;
                };
                let [now, next] = &mut log.waiting;
                now.append(next.take());
                (flush.ticket, log.epoch, log.dest.clone())
            };
            let mut ok = true;
            let mut from = 0u32;
            loop {
                let block = {
                    let st = self.cbt.lock();
                    match st.marks.as_ref() {
                        Some(log) if log.epoch == epoch => {
                            let b = log.bits.flush_blocks().find(|&b| b >= from);
                            if let Some(b) = b {
                                log.bits.block_payload(b, buf.payload_mut());
                            }
                            b
                        }
                        _ => None,
                    }
                };
                let Some(b) = block else {
                    break;
                };
                if dest.write_block(buf, epoch, b).is_err() {
                    ok = false;
                    break;
                }
                from = b + 1;
            }
            // Each block was written with FUA: no flush of the device.
            if !ok {
                self.marks_failed(&dest, buf);
                return;
            }
            let released = {
                let mut st = self.cbt.lock();
                match st.marks.as_mut() {
                    Some(log) if log.epoch == epoch => {
                        log.bits.flushed(ticket);
                        let [now, _] = &mut log.waiting;
                        now.take()
                    }
                    _ => return,
                }
            };
            self.flushes.fetch_add(1, Ordering::Relaxed);
            self.let_go(released);
        }
    }

    /// A write or flush of the marks failed: no more marks. The store is
    /// spoiled so that no attach trusts it (its seal, if it comes and
    /// succeeds, makes it whole again), and the writes that waited go on.
    fn marks_failed(self: &Arc<Self>, dest: &MarkDest, buf: &mut MarkBuf) {
        let marks = self.cbt.lock().marks.take();
        let dev = self.dev();
        pr_err!(
            "{}:{}: a write-intent write to its CBT store failed: marks stop, the store is made invalid\n",
            dev.major(),
            dev.minor()
        );
        if dest.spoil(buf).is_err() {
            pr_err!(
                "{}:{}: the CBT store could not be made invalid: detach it before the next restart\n",
                dev.major(),
                dev.minor()
            );
        }
        if let Some(mut log) = marks {
            let waiting = log.take_waiting();
            drop(log);
            self.let_go(waiting);
        }
    }
}

impl FilterOps for Tracker {
    fn submit_bio(this: &Arc<Self>, bio: IncomingBio<'_>) {
        if !bio.changes_data() {
            return;
        }
        let (diff, entry) = {
            let mut st = this.cbt.lock();
            while st.holding {
                if bio.is_nowait() {
                    drop(st);
                    bio.take().end(BlkStatus::Again);
                    return;
                }
                this.resume.wait(&mut st);
            }
            let units = st.cbt.geometry().units_of(bio.sector(), bio.sectors());
            if let (Some(log), Some((first, end))) = (st.marks.as_mut(), units) {
                if let Note::Wait(ticket) = log.bits.note(first, end) {
                    // Not before its marks are durable: it waits, not
                    // counted as in flight, and comes through here again.
                    if bio.is_nowait() {
                        drop(st);
                        bio.take().end(BlkStatus::Again);
                        return;
                    }
                    let kick = log.wait_for(ticket, bio.take());
                    drop(st);
                    if let Some((work, wq)) = kick {
                        MarkWork::start(work, &wq, this.clone());
                    }
                    return;
                }
            }
            st.cbt.mark_write(bio.sector(), bio.sectors());
            // Counted under the lock, so that a hold sees it.
            (st.diff.clone(), this.inflight.enter())
        };
        // Counted until it completes: held by copy on write or not.
        if bio.watch(&this.pool, entry).is_err() {
            // Only a REQ_NOWAIT bio finds no record.
            bio.take().end(BlkStatus::Again);
            return;
        }
        if let Some(diff) = diff {
            diff.on_write(bio);
        }
    }

    fn resized(&self) {
        self.replaced.store(true, Ordering::Release);
    }

    fn detached(&self) {
        self.gone.store(true, Ordering::Relaxed);
        // The driver may be unloaded next: no reference to its disk stays.
        // Not the last one (the driver still holds its own), so the put
        // after the lock does not release the disk here.
        let bdev = self.bdev.lock().take();
        drop(bdev);
        // Writes waiting for marks would go to a device that is gone.
        let marks = self.cbt.lock().marks.take();
        if let Some(mut log) = marks {
            let mut waiting = log.take_waiting();
            while let Some(bio) = waiting.pop() {
                bio.end(BlkStatus::IoErr);
            }
        }
        // An image of a device that is gone cannot be read whole any more.
        let diff = self.cbt.lock().diff.clone();
        if let Some(diff) = diff {
            diff.original_gone();
        }
        let dev = self.dev();
        pr_info!(
            "{}:{} went away: change tracking of it ends; its next backup is a full one\n",
            dev.major(),
            dev.minor()
        );
    }
}
