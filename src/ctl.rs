// SPDX-License-Identifier: GPL-2.0

//! The control device `/dev/blksnap`: checks the caller, copies arguments in
//! and out of user space, and dispatches each ioctl.
//!
//! Every count and length from user space is checked against a cap before
//! anything is allocated, and structures are copied by what each call means
//! (the direction bits of the ioctl numbers are not reliable).

use core::mem::size_of;

use kernel::alloc::flags::GFP_KERNEL;
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};
use kernel::types::{AsBytes, FromBytes};
use kernel::uaccess::{UserSlice, UserSliceReader};
use kernel::{c_str, new_mutex, page::PAGE_SIZE, ThisModule};

use crate::diff_area::DiffArea;
use crate::event_queue::{EventQueue, WaitError};
use crate::kernel_ext::block::{BdevFile, DevT};
use crate::kernel_ext::cred;
use crate::kernel_ext::errno::enodata;
use crate::kernel_ext::errno::{ealready, eopnotsupp};
use crate::kernel_ext::filter::Attached;
use crate::kernel_ext::gendisk::{BioDisk, BlockMajor};
use crate::kernel_ext::inflight::WatchPool;
use crate::kernel_ext::mem::zeroed_box;
use crate::kernel_ext::misc::FileOperations;
use crate::kernel_ext::params::Param;
use crate::kernel_ext::random::random_uuid;
use crate::kernel_ext::workqueue::WorkQueue;
use crate::logic::events::Event;
use crate::slots::Slots;
use crate::storage::Storage;
use crate::tracker::Tracker;
use crate::uapi;

/// Most devices in one snapshot.
const MAX_SNAPSHOT_DEVICES: u32 = 256;
/// Most ranges in one call.
const MAX_RANGES: u32 = 65536;

/// Watch records kept for writes submitted when memory is short.
const WATCH_RESERVE: i32 = 64;

/// Copies a `T` in from the user address `arg`.
fn read_arg<T: FromBytes>(arg: usize) -> Result<T> {
    UserSlice::new(arg, size_of::<T>()).reader().read::<T>()
}

/// Copies `value` out to the user address `arg`.
fn write_arg<T: AsBytes>(arg: usize, value: &T) -> Result {
    UserSlice::new(arg, size_of::<T>()).writer().write(value)
}

/// A reader over a user array of `count` `T`s at `ptr`.
fn user_array<T>(ptr: u64, count: u32) -> Result<UserSliceReader> {
    let len = (count as usize).checked_mul(size_of::<T>()).ok_or(EINVAL)?;
    let ptr = usize::try_from(ptr).map_err(|_| EFAULT)?;
    Ok(UserSlice::new(ptr, len).reader())
}

/// The collect protocol shared by SNAPSHOT_COLLECT, COLLECT_IMAGES and
/// TRACKER_COLLECT: with a NULL array only the count is reported; with an
/// array of `room` entries too small for `need`, the count is reported and
/// the call fails with `ENODATA`; otherwise the array is filled. The caller
/// writes the count back in every case, through `report`.
fn collect_out<T: AsBytes>(
    ptr: u64,
    room: u32,
    need: u32,
    items: impl Iterator<Item = T>,
    report: impl FnOnce(u32) -> Result,
) -> Result<isize> {
    if ptr == 0 {
        report(need)?;
        return Ok(0);
    }
    if room < need {
        report(need)?;
        return Err(enodata());
    }
    let ptr = usize::try_from(ptr).map_err(|_| EFAULT)?;
    let mut w = UserSlice::new(ptr, need as usize * size_of::<T>()).writer();
    for item in items.take(need as usize) {
        w.write(&item)?;
    }
    report(need)?;
    Ok(0)
}

/// Reads `count` (already capped) ranges from user space; `EINVAL` if one
/// is empty.
fn read_ranges(ptr: u64, count: u32) -> Result<KVVec<uapi::BlkSnapBlockRange>> {
    let mut reader = user_array::<uapi::BlkSnapBlockRange>(ptr, count)?;
    let mut ranges = KVVec::with_capacity(count as usize, GFP_KERNEL)?;
    for _ in 0..count {
        let r: uapi::BlkSnapBlockRange = reader.read()?;
        if r.sector_count == 0 {
            return Err(EINVAL);
        }
        ranges.push(r, GFP_KERNEL)?;
    }
    Ok(ranges)
}

/// Writes `blksnap-image<n>` into `buf`; returns its length.
fn fmt_image_name(buf: &mut [u8; 32], n: u32) -> usize {
    let prefix = uapi::BLK_SNAP_IMAGE_NAME.as_bytes();
    let mut len = prefix.len().min(buf.len());
    buf[..len].copy_from_slice(&prefix[..len]);
    let mut digits = [0u8; 10];
    let mut k = 0;
    let mut v = n;
    loop {
        digits[k] = b'0' + (v % 10) as u8;
        k += 1;
        v /= 10;
        if v == 0 || k == digits.len() {
            break;
        }
    }
    while k > 0 && len < buf.len() {
        k -= 1;
        buf[len] = digits[k];
        len += 1;
    }
    len
}

/// Opens device `dev`: `ENODEV` if there is none (whatever the block layer
/// said), but a shortage of memory stays `ENOMEM`.
fn open_dev(dev: DevT, write: bool) -> Result<BdevFile> {
    BdevFile::open(dev, write).map_err(|e| if e == ENOMEM { ENOMEM } else { ENODEV })
}

fn dev_of(d: &uapi::BlkSnapDev) -> Result<DevT> {
    DevT::new(d.mj, d.mn).ok_or(ENODEV)
}

/// A tracked device.
struct TrackerEntry {
    tracker: Arc<Tracker>,
    /// Keeps the filter attached; dropping it detaches.
    _filter: Attached<Tracker>,
    /// The snapshot the device is in.
    snapshot: Option<[u8; 16]>,
}

/// A device of a taken snapshot: its copy-on-write state and its image.
struct Image {
    area: Arc<DiffArea>,
    disk: Option<BioDisk<DiffArea>>,
    minor: u32,
}

/// A snapshot: a set of tracked devices.
struct Snapshot {
    id: [u8; 16],
    devices: KVec<DevT>,
    taken: bool,
    events: Arc<EventQueue>,
    storage: Arc<Storage>,
    /// After TAKE, one per device.
    images: KVec<Image>,
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        // Copies waiting for storage give up at once; writes stop being
        // copied, the images go (no image bio starts once a disk is
        // deleted), then every held write is let go.
        for img in self.images.iter() {
            img.area.set_going();
        }
        self.storage.close();
        for img in self.images.iter() {
            drop(img.area.tracker().end_snapshot());
        }
        for img in self.images.iter_mut() {
            drop(img.disk.take());
            img.area.close();
        }
        self.events.close();
    }
}

/// Everything the ioctls work on; guarded by one mutex that the I/O path
/// never takes.
struct State {
    trackers: Slots<TrackerEntry>,
    snapshots: Slots<Snapshot>,
}

impl State {
    fn tracker(&self, dev: DevT) -> Option<&TrackerEntry> {
        self.trackers.find(|t| t.tracker.dev() == dev)
    }

    fn snapshot(&self, id: &[u8; 16]) -> Result<&Snapshot> {
        self.snapshots.find(|s| &s.id == id).ok_or(ESRCH)
    }

    fn snapshot_mut(&mut self, id: &[u8; 16]) -> Result<&mut Snapshot> {
        self.snapshots.iter_mut().find(|s| &s.id == id).ok_or(ESRCH)
    }

    /// The lowest image number no image uses.
    /// `also` holds images being made, not yet in any snapshot.
    fn free_minor(&self, also: &[Image]) -> u32 {
        let used = |n: u32| {
            also.iter().any(|i| i.minor == n)
                || self
                    .snapshots
                    .iter()
                    .any(|s| s.images.iter().any(|i| i.minor == n))
        };
        let mut n = 0;
        while used(n) {
            n += 1;
        }
        n
    }

    /// The tracker of an original device, or of the original of an image.
    fn tracker_of(&self, dev: DevT, image_major: u32) -> Option<Arc<Tracker>> {
        if dev.major() == image_major {
            return self
                .snapshots
                .iter()
                .flat_map(|s| s.images.iter())
                .find(|i| i.minor == dev.minor())
                .map(|i| i.area.tracker().clone());
        }
        self.tracker(dev).map(|t| t.tracker.clone())
    }

    /// `EBUSY` if tracking `dev` (on whole disk `whole`) would overlap a
    /// tracked disk or partition other than `dev` itself.
    fn check_overlap(&self, dev: DevT, whole: DevT) -> Result {
        for t in self.trackers.iter() {
            let other = t.tracker.bdev();
            if other.dev() == dev {
                continue;
            }
            // A disk and one of its partitions: a bio meets one filter
            // only, so the two could never both see every write.
            if other.dev() == whole || other.whole_dev() == dev {
                return Err(EBUSY);
            }
        }
        Ok(())
    }

    /// Forgets the trackers of devices that went away, unless a snapshot
    /// still names them (it fails at TAKE, or its image fails reads).
    fn purge_gone(&mut self) {
        while let Some(t) = self
            .trackers
            .remove_first(|t| t.tracker.is_gone() && t.snapshot.is_none())
        {
            drop(t);
        }
    }
}

/// State behind `/dev/blksnap`.
pub(crate) struct Control {
    state: Pin<KBox<Mutex<State>>>,
    copy_wq: Arc<WorkQueue>,
    io_wq: Arc<WorkQueue>,
    major: BlockMajor,
    module: &'static ThisModule,
    /// Records counting the writes that filters let through; dropped last,
    /// once those writes have completed.
    pool: Arc<WatchPool>,
}

impl Drop for Control {
    fn drop(&mut self) {
        // Unload: end every snapshot and tracker, then wait for the workers
        // before the queue and the image major go.
        let (snapshots, trackers) = {
            let mut st = self.state.lock();
            (
                core::mem::replace(&mut st.snapshots, Slots::new()),
                core::mem::replace(&mut st.trackers, Slots::new()),
            )
        };
        drop(snapshots);
        drop(trackers);
        self.io_wq.drain();
        self.copy_wq.drain();
    }
}

impl Control {
    pub(crate) fn new(module: &'static ThisModule) -> Result<Self> {
        let state = KBox::pin_init(
            new_mutex!(
                State {
                    trackers: Slots::new(),
                    snapshots: Slots::new()
                },
                "blksnap_state"
            ),
            GFP_KERNEL,
        )?;
        let copy_wq = Arc::new(WorkQueue::new(c_str!("blksnap_copy"), 0)?, GFP_KERNEL)?;
        let io_wq = Arc::new(WorkQueue::new(c_str!("blksnap_io"), 0)?, GFP_KERNEL)?;
        let major = BlockMajor::register(c_str!("blksnap-image"))?;
        let pool = Arc::new(WatchPool::new(WATCH_RESERVE)?, GFP_KERNEL)?;
        Ok(Control {
            state,
            copy_wq,
            io_wq,
            major,
            module,
            pool,
        })
    }

    fn version(&self, arg: usize) -> Result<isize> {
        write_arg(arg, &uapi::VERSION)?;
        Ok(0)
    }

    fn snapshot_create(&self, arg: usize) -> Result<isize> {
        let mut req: uapi::BlkSnapSnapshotCreate = read_arg(arg)?;
        if req.count == 0 || req.count > MAX_SNAPSHOT_DEVICES {
            return Err(EINVAL);
        }
        let mut reader = user_array::<uapi::BlkSnapDev>(req.dev_id_array, req.count)?;
        let mut devs = KVec::with_capacity(req.count as usize, GFP_KERNEL)?;
        for _ in 0..req.count {
            let d: uapi::BlkSnapDev = reader.read()?;
            let dev = dev_of(&d)?;
            if devs.contains(&dev) {
                return Err(EINVAL);
            }
            devs.push(dev, GFP_KERNEL)?;
        }

        let mut st = self.state.lock();
        // A device that went away and came back (same number) starts over.
        st.purge_gone();
        // Check every device before changing anything. New devices are open
        // only for the attach; their trackers then hold them by reference.
        let mut fresh: KVec<BdevFile> = KVec::new();
        for &dev in devs.iter() {
            if let Some(t) = st.tracker(dev) {
                if t.snapshot.is_some() {
                    return Err(EBUSY);
                }
                st.check_overlap(dev, t.tracker.bdev().whole_dev())?;
                continue;
            }
            let bdev = open_dev(dev, false)?;
            // Copy-on-write would have to follow write pointers.
            if bdev.is_zoned() {
                return Err(eopnotsupp());
            }
            st.check_overlap(bdev.dev(), bdev.whole_dev())?;
            // Disk and partition both named in this one call.
            for other in fresh.iter() {
                if other.dev() == bdev.whole_dev() || other.whole_dev() == bdev.dev() {
                    return Err(EBUSY);
                }
            }
            fresh.push(bdev, GFP_KERNEL)?;
        }
        for &dev in devs.iter() {
            if let Some(t) = st.tracker(dev) {
                t.tracker.check_resize()?;
            }
        }
        let events = EventQueue::new()?;
        let storage = Storage::new(events.clone())?;
        st.snapshots.reserve(1)?;
        st.trackers.reserve(fresh.len())?;
        // Start tracking on the new devices, with their file systems frozen
        // so that no write slips past the attach half-done.
        for bdev in fresh.into_iter() {
            let tracker = Tracker::new(bdev.hold(), self.pool.clone())?;
            let filter = {
                let _frozen = bdev.freeze()?;
                Attached::attach(bdev.hold(), tracker.clone())?
            };
            pr_info!("tracking {}:{}\n", bdev.dev().major(), bdev.dev().minor());
            st.trackers.insert(TrackerEntry {
                tracker,
                _filter: filter,
                snapshot: None,
            })?;
        }

        let id = random_uuid();
        for t in st.trackers.iter_mut() {
            if devs.iter().any(|d| *d == t.tracker.dev()) {
                t.snapshot = Some(id);
            }
        }
        events.push(Event::low_free_space(
            EventQueue::now(),
            Param::DiffStorageMinimum.get(),
        ));
        st.snapshots.insert(Snapshot {
            id,
            devices: devs,
            taken: false,
            events,
            storage,
            images: KVec::new(),
        })?;

        req.id = uapi::BlkSnapUuid { b: id };
        if let Err(e) = write_arg(arg, &req) {
            // Nobody can name the snapshot: take it back.
            Self::destroy_locked(&mut st, &id)?;
            return Err(e);
        }
        Ok(0)
    }

    fn destroy_locked(st: &mut State, id: &[u8; 16]) -> Result {
        let snap = st.snapshots.remove_first(|s| &s.id == id).ok_or(ESRCH)?;
        for t in st.trackers.iter_mut() {
            if t.snapshot.as_ref() == Some(id) {
                t.snapshot = None;
            }
        }
        drop(snap);
        Ok(())
    }

    fn snapshot_destroy(&self, arg: usize) -> Result<isize> {
        let req: uapi::BlkSnapSnapshotDestroy = read_arg(arg)?;
        Self::destroy_locked(&mut self.state.lock(), &req.id.b)?;
        Ok(0)
    }

    fn snapshot_collect(&self, arg: usize) -> Result<isize> {
        let mut req: uapi::BlkSnapSnapshotCollect = read_arg(arg)?;
        let st = self.state.lock();
        let ids = st.snapshots.iter().map(|s| uapi::BlkSnapUuid { b: s.id });
        collect_out(req.ids, req.count, st.snapshots.len() as u32, ids, |n| {
            req.count = n;
            write_arg(arg, &req)
        })
    }

    fn tracker_remove(&self, arg: usize) -> Result<isize> {
        let req: uapi::BlkSnapTrackerRemove = read_arg(arg)?;
        let dev = dev_of(&req.dev_id)?;
        let mut st = self.state.lock();
        if st.tracker(dev).ok_or(ENODEV)?.snapshot.is_some() {
            return Err(EBUSY);
        }
        drop(st.trackers.remove_first(|t| t.tracker.dev() == dev));
        pr_info!("stopped tracking {}:{}\n", dev.major(), dev.minor());
        Ok(0)
    }

    fn tracker_collect(&self, arg: usize) -> Result<isize> {
        let mut req: uapi::BlkSnapTrackerCollect = read_arg(arg)?;
        let mut st = self.state.lock();
        st.purge_gone();
        let infos = st.trackers.iter().map(|t| t.tracker.info());
        collect_out(
            req.cbt_info_array,
            req.count,
            st.trackers.len() as u32,
            infos,
            |n| {
                req.count = n;
                write_arg(arg, &req)
            },
        )
    }

    fn tracker_read_cbt_map(&self, arg: usize) -> Result<isize> {
        let req: uapi::BlkSnapTrackerReadCbtBitmap = read_arg(arg)?;
        let dev = dev_of(&req.dev_id)?;
        let tracker = {
            let st = self.state.lock();
            let t = st.tracker(dev).ok_or(ENODEV)?;
            let taken = match &t.snapshot {
                Some(id) => st.snapshots.iter().any(|s| &s.id == id && s.taken),
                None => false,
            };
            if !taken {
                return Err(EPERM);
            }
            t.tracker.clone()
        };
        let offset = req.offset as usize;
        let total = tracker
            .map_len()
            .saturating_sub(offset)
            .min(req.length as usize);
        if total == 0 {
            return Ok(0);
        }
        let ptr = usize::try_from(req.buff).map_err(|_| EFAULT)?;
        let mut w = UserSlice::new(ptr, total).writer();
        // The map is read under the tracker's spinlock, so it goes through a
        // page of kernel memory on its way to user space.
        let mut page = zeroed_box::<[u8; PAGE_SIZE]>(GFP_KERNEL)?;
        let mut done = 0;
        while done < total {
            let want = (total - done).min(PAGE_SIZE);
            let n = tracker.read_map(offset + done, &mut page[..want]);
            if n == 0 {
                break;
            }
            w.write_slice(&page[..n])?;
            done += n;
        }
        Ok(done as isize)
    }

    fn tracker_mark_dirty_blocks(&self, arg: usize) -> Result<isize> {
        let req: uapi::BlkSnapTrackerMarkDirtyBlocks = read_arg(arg)?;
        if req.count == 0 || req.count > MAX_RANGES {
            return Err(EINVAL);
        }
        let dev = dev_of(&req.dev_id)?;
        let tracker = self
            .state
            .lock()
            .tracker_of(dev, self.major.major())
            .ok_or(ENODEV)?;
        // All or nothing: every range is read and checked before any is marked.
        for r in read_ranges(req.dirty_blocks_array, req.count)?.iter() {
            tracker.mark_dirty(r.sector_offset, r.sector_count);
        }
        Ok(0)
    }

    fn snapshot_append_storage(&self, arg: usize) -> Result<isize> {
        let req: uapi::BlkSnapSnapshotAppendStorage = read_arg(arg)?;
        self.state.lock().snapshot(&req.id.b)?;
        if req.count == 0 || req.count > MAX_RANGES {
            return Err(EINVAL);
        }
        let dev = dev_of(&req.dev_id)?;
        // An image as storage would copy on write into itself.
        if dev.major() == self.major.major() {
            return Err(EINVAL);
        }
        let ranges = read_ranges(req.ranges, req.count)?;
        let mut pairs = KVVec::with_capacity(ranges.len(), GFP_KERNEL)?;
        for r in ranges.iter() {
            pairs.push((r.sector_offset, r.sector_count), GFP_KERNEL)?;
        }
        drop(ranges);
        let bdev = Arc::new(open_dev(dev, true)?, GFP_KERNEL)?;
        // The same ranges in whole-disk sectors, for the module-wide overlap
        // check: storage given through a disk and through its partition, or
        // to two snapshots, is the same space. Sums past the end are caught
        // by `append`'s own checks; saturating keeps them harmless here.
        let mut abs = KVVec::with_capacity(pairs.len(), GFP_KERNEL)?;
        let offset = bdev.start_sect();
        for &(start, len) in pairs.iter() {
            abs.push((start.saturating_add(offset), len), GFP_KERNEL)?;
        }
        abs.sort_unstable();

        // Under the state lock, so that no other append slips in between
        // the check and the append.
        let st = self.state.lock();
        let storage = st.snapshot(&req.id.b)?.storage.clone();
        if st
            .snapshots
            .iter()
            .any(|s| s.storage.overlaps(bdev.whole_dev(), &abs))
        {
            return Err(EINVAL);
        }
        storage.append(bdev, &mut pairs)?;
        Ok(0)
    }

    fn snapshot_take(&self, arg: usize) -> Result<isize> {
        let req: uapi::BlkSnapSnapshotTake = read_arg(arg)?;
        let mut st = self.state.lock();
        let snap = st.snapshot(&req.id.b)?;
        if snap.taken {
            return Err(ealready());
        }
        if snap.storage.total() == 0 {
            return Err(ENOSPC);
        }
        // The snapshot holds its devices open from now on: their images
        // read from them.
        let mut trackers = KVec::with_capacity(snap.devices.len(), GFP_KERNEL)?;
        let mut origs = KVec::with_capacity(snap.devices.len(), GFP_KERNEL)?;
        for &dev in snap.devices.iter() {
            let t = st.tracker(dev).ok_or(ENODEV)?;
            if t.tracker.is_gone() {
                return Err(ENODEV);
            }
            let orig = open_dev(dev, false)?;
            if !t.tracker.bdev().is(&orig) {
                // Another device took the number of the one tracked.
                return Err(ENODEV);
            }
            trackers.push(t.tracker.clone(), GFP_KERNEL)?;
            origs.push(Arc::new(orig, GFP_KERNEL)?, GFP_KERNEL)?;
        }
        for t in trackers.iter() {
            t.check_resize()?;
        }
        let mut areas = KVec::with_capacity(trackers.len(), GFP_KERNEL)?;
        for (t, orig) in trackers.iter().zip(origs.iter()) {
            areas.push(
                DiffArea::new(
                    t.clone(),
                    orig.clone(),
                    snap.storage.clone(),
                    snap.events.clone(),
                    self.copy_wq.clone(),
                    self.io_wq.clone(),
                )?,
                GFP_KERNEL,
            )?;
        }
        let mut images = KVec::with_capacity(areas.len(), GFP_KERNEL)?;

        // One instant for all devices: freeze every file system, hold new
        // writes, wait for those in flight, switch every map and start copy
        // on write, let the writes go, thaw. A raw write racing TAKE is thus
        // wholly before the snapshot (in the image, in the map taken now) or
        // wholly after it (copied first).
        {
            let mut frozen = KVec::with_capacity(origs.len(), GFP_KERNEL)?;
            for orig in origs.iter() {
                frozen.push(orig.freeze()?, GFP_KERNEL)?;
            }
            let mut holds = KVec::with_capacity(trackers.len(), GFP_KERNEL)?;
            for t in trackers.iter() {
                holds.push(t.hold_writes(), GFP_KERNEL)?;
            }
            for t in trackers.iter() {
                t.drain()?;
            }
            for (t, a) in trackers.iter().zip(areas.iter()) {
                t.start_snapshot(a.clone());
            }
        }

        for a in areas.iter() {
            let minor = st.free_minor(&images);
            let mut name = [0u8; 32];
            let len = fmt_image_name(&mut name, minor);
            let disk = match BioDisk::add(
                &name[..len],
                self.major.major(),
                minor,
                a.capacity(),
                a.logical_block_size(),
                a.clone(),
                self.module,
            ) {
                Ok(d) => d,
                Err(_) => {
                    // Our side of the disk (name, number, size, block size)
                    // is checked, so the block layer failed for want of
                    // resources: under allocation failures it can say
                    // EINVAL as well as ENOMEM. Report ENOMEM.
                    // Undo: no copy on write without images.
                    for t in trackers.iter() {
                        drop(t.end_snapshot());
                    }
                    for a in areas.iter() {
                        a.close();
                    }
                    return Err(ENOMEM);
                }
            };
            images.push(
                Image {
                    area: a.clone(),
                    disk: Some(disk),
                    minor,
                },
                GFP_KERNEL,
            )?;
        }
        let snap = st.snapshot_mut(&req.id.b)?;
        snap.images = images;
        snap.taken = true;
        Ok(0)
    }

    fn snapshot_collect_images(&self, arg: usize) -> Result<isize> {
        let mut req: uapi::BlkSnapSnapshotCollectImages = read_arg(arg)?;
        let st = self.state.lock();
        let snap = st.snapshot(&req.id.b)?;
        let major = self.major.major();
        let infos = snap.images.iter().map(|img| {
            let o = img.area.dev();
            uapi::BlkSnapImageInfo {
                orig_dev_id: uapi::BlkSnapDev {
                    mj: o.major(),
                    mn: o.minor(),
                },
                image_dev_id: uapi::BlkSnapDev {
                    mj: major,
                    mn: img.minor,
                },
            }
        });
        collect_out(
            req.image_info_array,
            req.count,
            snap.images.len() as u32,
            infos,
            |n| {
                req.count = n;
                write_arg(arg, &req)
            },
        )
    }

    fn snapshot_wait_event(&self, arg: usize) -> Result<isize> {
        let mut ev = zeroed_box::<uapi::BlkSnapSnapshotEvent>(GFP_KERNEL)?;
        {
            let mut r = UserSlice::new(arg, size_of::<uapi::BlkSnapSnapshotEvent>()).reader();
            let id: uapi::BlkSnapUuid = r.read()?;
            let timeout_ms: u32 = r.read()?;
            ev.id = id;
            ev.timeout_ms = timeout_ms;
        }
        let events = {
            let st = self.state.lock();
            st.snapshot(&ev.id.b)?.events.clone()
        };
        let got = match events.wait(ev.timeout_ms) {
            Ok(e) => e,
            Err(WaitError::Timeout) => return Err(ENOENT),
            Err(WaitError::Interrupted) => return Err(EINTR),
            Err(WaitError::Closed) => return Err(ESRCH),
        };
        ev.code = got.code;
        ev.time_label = got.time_ns;
        ev.data[..got.data.len()].copy_from_slice(&got.data);
        write_arg(arg, &*ev)?;
        Ok(0)
    }
}

impl FileOperations for Control {
    fn ioctl(&self, cmd: u32, arg: usize) -> Result<isize> {
        // Dispatch on the full number: type, nr, size and direction bits.
        let known = matches!(
            cmd,
            uapi::IOCTL_BLK_SNAP_VERSION
                | uapi::IOCTL_BLK_SNAP_TRACKER_REMOVE
                | uapi::IOCTL_BLK_SNAP_TRACKER_COLLECT
                | uapi::IOCTL_BLK_SNAP_TRACKER_READ_CBT_MAP
                | uapi::IOCTL_BLK_SNAP_TRACKER_MARK_DIRTY_BLOCKS
                | uapi::IOCTL_BLK_SNAP_SNAPSHOT_CREATE
                | uapi::IOCTL_BLK_SNAP_SNAPSHOT_DESTROY
                | uapi::IOCTL_BLK_SNAP_SNAPSHOT_APPEND_STORAGE
                | uapi::IOCTL_BLK_SNAP_SNAPSHOT_TAKE
                | uapi::IOCTL_BLK_SNAP_SNAPSHOT_COLLECT
                | uapi::IOCTL_BLK_SNAP_SNAPSHOT_COLLECT_IMAGES
                | uapi::IOCTL_BLK_SNAP_SNAPSHOT_WAIT_EVENT
        );
        if !known {
            return Err(ENOTTY);
        }
        if cmd != uapi::IOCTL_BLK_SNAP_VERSION && !cred::capable_sys_admin() {
            return Err(EPERM);
        }
        match cmd {
            uapi::IOCTL_BLK_SNAP_VERSION => self.version(arg),
            uapi::IOCTL_BLK_SNAP_TRACKER_REMOVE => self.tracker_remove(arg),
            uapi::IOCTL_BLK_SNAP_TRACKER_COLLECT => self.tracker_collect(arg),
            uapi::IOCTL_BLK_SNAP_TRACKER_READ_CBT_MAP => self.tracker_read_cbt_map(arg),
            uapi::IOCTL_BLK_SNAP_TRACKER_MARK_DIRTY_BLOCKS => self.tracker_mark_dirty_blocks(arg),
            uapi::IOCTL_BLK_SNAP_SNAPSHOT_CREATE => self.snapshot_create(arg),
            uapi::IOCTL_BLK_SNAP_SNAPSHOT_DESTROY => self.snapshot_destroy(arg),
            uapi::IOCTL_BLK_SNAP_SNAPSHOT_COLLECT => self.snapshot_collect(arg),
            uapi::IOCTL_BLK_SNAP_SNAPSHOT_WAIT_EVENT => self.snapshot_wait_event(arg),
            uapi::IOCTL_BLK_SNAP_SNAPSHOT_APPEND_STORAGE => self.snapshot_append_storage(arg),
            uapi::IOCTL_BLK_SNAP_SNAPSHOT_TAKE => self.snapshot_take(arg),
            uapi::IOCTL_BLK_SNAP_SNAPSHOT_COLLECT_IMAGES => self.snapshot_collect_images(arg),
            _ => Err(ENOTTY),
        }
    }
}
