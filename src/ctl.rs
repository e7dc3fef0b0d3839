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

use crate::event_queue::WaitError;
use crate::kernel_ext::block::DevT;
use crate::kernel_ext::cred;
use crate::kernel_ext::errno::enodata;
use crate::kernel_ext::gendisk::BlockMajor;
use crate::kernel_ext::inflight::WatchPool;
use crate::kernel_ext::mem::zeroed_box;
use crate::kernel_ext::misc::FileOperations;
use crate::kernel_ext::page_io;
use crate::kernel_ext::workqueue::WorkQueue;
use crate::persist::{Store, MAX_RANGES as MAX_STORE_RANGES};
use crate::snapshot::{open_dev, ImageEnv, Persisting, State};
use crate::storage::whole_disk_sorted;
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

/// [`read_ranges`] as `(start, count)` pairs of sectors.
fn read_sector_pairs(ptr: u64, count: u32) -> Result<KVVec<(u64, u64)>> {
    let ranges = read_ranges(ptr, count)?;
    let mut pairs = KVVec::with_capacity(ranges.len(), GFP_KERNEL)?;
    for r in ranges.iter() {
        pairs.push((r.sector_offset, r.sector_count), GFP_KERNEL)?;
    }
    Ok(pairs)
}

fn dev_of(d: &uapi::BlkSnapDev) -> Result<DevT> {
    DevT::new(d.mj, d.mn).ok_or(ENODEV)
}

/// State behind `/dev/blksnap`.
pub(crate) struct Control {
    state: Pin<KBox<Mutex<State>>>,
    copy_wq: Arc<WorkQueue>,
    start_wq: Arc<WorkQueue>,
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
        let mut all = self.state.lock().take_all();
        // Stores first, while their trackers still watch their devices.
        all.seal_stores();
        drop(all);
        // No copy runs any more: the completions of the last ones queue
        // their final steps, and must have returned before the queues go.
        page_io::wait_idle();
        self.io_wq.drain();
        self.start_wq.drain();
        self.copy_wq.drain();
    }
}

impl Control {
    pub(crate) fn new(module: &'static ThisModule) -> Result<Self> {
        let state = KBox::pin_init(new_mutex!(State::new(), "blksnap_state"), GFP_KERNEL)?;
        let copy_wq = Arc::new(WorkQueue::new(c_str!("blksnap_copy"), 0)?, GFP_KERNEL)?;
        let start_wq = Arc::new(WorkQueue::new(c_str!("blksnap_start"), 0)?, GFP_KERNEL)?;
        let io_wq = Arc::new(WorkQueue::new(c_str!("blksnap_io"), 0)?, GFP_KERNEL)?;
        let major = BlockMajor::register(c_str!("blksnap-image"))?;
        let pool = Arc::new(WatchPool::new(WATCH_RESERVE)?, GFP_KERNEL)?;
        Ok(Control {
            state,
            copy_wq,
            start_wq,
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
        let id = st.create(devs, &self.pool)?;
        req.id = uapi::BlkSnapUuid { b: id };
        if let Err(e) = write_arg(arg, &req) {
            // Nobody can name the snapshot: take it back (it was never
            // taken: nothing to wait for).
            let ended = st.destroy(&id)?.wait();
            st.release(ended);
            return Err(e);
        }
        Ok(0)
    }

    fn snapshot_destroy(&self, arg: usize) -> Result<isize> {
        let req: uapi::BlkSnapSnapshotDestroy = read_arg(arg)?;
        // The end waits for the snapshot's own copies and image I/O: not
        // under the state lock, which other snapshots' calls need.
        let destroyed = self.state.lock().destroy(&req.id.b)?;
        let ended = destroyed.wait();
        self.state.lock().release(ended);
        Ok(0)
    }

    fn snapshot_collect(&self, arg: usize) -> Result<isize> {
        let mut req: uapi::BlkSnapSnapshotCollect = read_arg(arg)?;
        let st = self.state.lock();
        let ids = st.ids().map(|b| uapi::BlkSnapUuid { b });
        collect_out(req.ids, req.count, st.snapshot_count() as u32, ids, |n| {
            req.count = n;
            write_arg(arg, &req)
        })
    }

    fn tracker_remove(&self, arg: usize) -> Result<isize> {
        let req: uapi::BlkSnapTrackerRemove = read_arg(arg)?;
        let dev = dev_of(&req.dev_id)?;
        self.state.lock().remove_tracker(dev)?;
        Ok(0)
    }

    fn tracker_persist(&self, arg: usize) -> Result<isize> {
        let mut req: uapi::BlkSnapTrackerPersist = read_arg(arg)?;
        if req.reserved != [0; 5]
            || req.flags & !uapi::BLK_SNAP_PERSIST_EXISTING != 0
            || req.count == 0
            || req.count as usize > MAX_STORE_RANGES
        {
            return Err(EINVAL);
        }
        let existing = req.flags & uapi::BLK_SNAP_PERSIST_EXISTING != 0;
        let dev = dev_of(&req.dev_id)?;
        let store_dev = dev_of(&req.store_dev_id)?;
        if store_dev.major() == self.major.major() {
            return Err(EINVAL);
        }
        let ranges = read_sector_pairs(req.ranges, req.count)?;
        let bdev = open_dev(store_dev, true)?;
        let store = Store::new(bdev, ranges, req.identity, req.boot_id, self.io_wq.clone())?;
        self.state.lock().check_store(&store)?;
        // The store's I/O, without the state lock.
        let p = Persisting::prepare(dev, store, existing)?;
        let (reset, tracker) = self.state.lock().persist(p, &self.pool)?;
        let f = tracker.map_fields();
        req.reset = reset;
        req.previous = f.previous;
        req.active = f.active;
        req.generation.b = f.generation;
        write_arg(arg, &req)?;
        Ok(0)
    }

    fn tracker_detach(&self, arg: usize) -> Result<isize> {
        let req: uapi::BlkSnapTrackerDetach = read_arg(arg)?;
        if req.flags != 0 || req.reserved != 0 {
            return Err(EINVAL);
        }
        let dev = dev_of(&req.dev_id)?;
        let mut d = self.state.lock().detach_begin(dev)?;
        // The seal's I/O, without the state lock.
        if let Err(e) = d.seal() {
            if self.state.lock().detach_undo(d).is_err() {
                pr_warn!(
                    "{}:{}: not sealed, and tracking ended\n",
                    dev.major(),
                    dev.minor()
                );
            }
            return Err(if e == EINTR { EINTR } else { EIO });
        }
        drop(d);
        pr_info!(
            "stopped tracking {}:{}, its store sealed\n",
            dev.major(),
            dev.minor()
        );
        Ok(0)
    }

    fn tracker_persist_status(&self, arg: usize) -> Result<isize> {
        let mut req: uapi::BlkSnapTrackerPersistStatus = read_arg(arg)?;
        let dev = dev_of(&req.dev_id)?;
        let st = self.state.lock().persist_status(dev)?;
        req.flags = if st.store {
            uapi::BLK_SNAP_PERSIST_STATUS_STORE
        } else {
            0
        };
        req.reset = st.reset;
        req.generation.b = st.generation;
        req.checkpoint = st.checkpoint;
        req.intent_flushes = st.flushes;
        write_arg(arg, &req)?;
        Ok(0)
    }

    fn tracker_collect(&self, arg: usize) -> Result<isize> {
        let mut req: uapi::BlkSnapTrackerCollect = read_arg(arg)?;
        // Only reads: trackers of devices that went away are not listed,
        // and the calls that change the trackers forget them.
        let st = self.state.lock();
        let infos = st.trackers().map(|t| t.info());
        collect_out(
            req.cbt_info_array,
            req.count,
            st.tracker_count() as u32,
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
        let tracker = self.state.lock().taken_tracker(dev)?;
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
            tracker.mark_dirty(r.sector_offset, r.sector_count)?;
        }
        Ok(0)
    }

    fn snapshot_append_storage(&self, arg: usize) -> Result<isize> {
        let req: uapi::BlkSnapSnapshotAppendStorage = read_arg(arg)?;
        self.state.lock().events(&req.id.b)?;
        if req.count == 0 || req.count > MAX_RANGES {
            return Err(EINVAL);
        }
        let dev = dev_of(&req.dev_id)?;
        // An image as storage would copy on write into itself.
        if dev.major() == self.major.major() {
            return Err(EINVAL);
        }
        let mut pairs = read_sector_pairs(req.ranges, req.count)?;
        let bdev = Arc::new(open_dev(dev, true)?, GFP_KERNEL)?;
        // For the module-wide overlap check: storage given to two snapshots
        // is the same space too.
        let abs = whole_disk_sorted(&bdev, &pairs)?;

        // Under the state lock, so that no other append slips in between
        // the check and the append.
        self.state
            .lock()
            .append_storage(&req.id.b, bdev, &mut pairs, &abs)?;
        Ok(0)
    }

    fn snapshot_take(&self, arg: usize) -> Result<isize> {
        let req: uapi::BlkSnapSnapshotTake = read_arg(arg)?;
        let env = ImageEnv {
            major: self.major.major(),
            module: self.module,
            copy_wq: self.copy_wq.clone(),
            start_wq: self.start_wq.clone(),
            io_wq: self.io_wq.clone(),
        };
        // The switch may wait long (freezes, a slow device's writes in
        // flight): not under the state lock, which other snapshots' calls
        // need. The snapshot is marked as being taken meanwhile.
        let mut taking = self.state.lock().take_begin(&req.id.b, &env)?;
        let switched = taking.switch();
        self.state.lock().take_end(taking, switched, &env)?;
        Ok(0)
    }

    fn snapshot_collect_images(&self, arg: usize) -> Result<isize> {
        let mut req: uapi::BlkSnapSnapshotCollectImages = read_arg(arg)?;
        let st = self.state.lock();
        let major = self.major.major();
        let count = st.images(&req.id.b)?.count() as u32;
        let infos = st
            .images(&req.id.b)?
            .map(|(o, minor)| uapi::BlkSnapImageInfo {
                orig_dev_id: uapi::BlkSnapDev {
                    mj: o.major(),
                    mn: o.minor(),
                },
                image_dev_id: uapi::BlkSnapDev {
                    mj: major,
                    mn: minor,
                },
            });
        collect_out(req.image_info_array, req.count, count, infos, |n| {
            req.count = n;
            write_arg(arg, &req)
        })
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
        let events = self.state.lock().events(&ev.id.b)?;
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
        // An unknown number is ENOTTY for anyone; a known one but VERSION
        // needs CAP_SYS_ADMIN.
        type Handler = fn(&Control, usize) -> Result<isize>;
        let call: Handler = match cmd {
            uapi::IOCTL_BLK_SNAP_VERSION => return self.version(arg),
            uapi::IOCTL_BLK_SNAP_TRACKER_REMOVE => Self::tracker_remove,
            uapi::IOCTL_BLK_SNAP_TRACKER_COLLECT => Self::tracker_collect,
            uapi::IOCTL_BLK_SNAP_TRACKER_READ_CBT_MAP => Self::tracker_read_cbt_map,
            uapi::IOCTL_BLK_SNAP_TRACKER_MARK_DIRTY_BLOCKS => Self::tracker_mark_dirty_blocks,
            uapi::IOCTL_BLK_SNAP_SNAPSHOT_CREATE => Self::snapshot_create,
            uapi::IOCTL_BLK_SNAP_SNAPSHOT_DESTROY => Self::snapshot_destroy,
            uapi::IOCTL_BLK_SNAP_SNAPSHOT_COLLECT => Self::snapshot_collect,
            uapi::IOCTL_BLK_SNAP_SNAPSHOT_WAIT_EVENT => Self::snapshot_wait_event,
            uapi::IOCTL_BLK_SNAP_SNAPSHOT_APPEND_STORAGE => Self::snapshot_append_storage,
            uapi::IOCTL_BLK_SNAP_SNAPSHOT_TAKE => Self::snapshot_take,
            uapi::IOCTL_BLK_SNAP_SNAPSHOT_COLLECT_IMAGES => Self::snapshot_collect_images,
            uapi::IOCTL_BLK_SNAP_TRACKER_PERSIST => Self::tracker_persist,
            uapi::IOCTL_BLK_SNAP_TRACKER_DETACH => Self::tracker_detach,
            uapi::IOCTL_BLK_SNAP_TRACKER_PERSIST_STATUS => Self::tracker_persist_status,
            _ => return Err(ENOTTY),
        };
        if !cred::capable_sys_admin() {
            return Err(EPERM);
        }
        call(self, arg)
    }
}
