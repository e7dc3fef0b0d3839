// SPDX-License-Identifier: GPL-2.0

//! A tracker's CBT store (`Documentation/persistence.rst`): taken up when
//! IOCTL_BLK_SNAP_TRACKER_PERSIST starts tracking a device, sealed when the
//! tracker is detached (IOCTL_BLK_SNAP_TRACKER_DETACH, module unload). The
//! procedures are `logic::cbt_store`'s; this gives them the store's device
//! and the tracker's maps, and decides what is written when.
//!
//! While a store is attached and its device is in no snapshot, the
//! tracker keeps write-intent marks in it (`intent.rs`): the header says
//! so, and an attach in a later boot replays them. A checkpoint under a
//! hold of the device's writes ([`Store::checkpoint_held`]) starts each
//! epoch, turns the marks off for a snapshot's life and seals the store.

use kernel::alloc::flags::GFP_KERNEL;
use kernel::prelude::*;
use kernel::sync::Arc;

use crate::cbt_store_io::BdevStore;
use crate::intent::{MarkDest, MarkLog};
use crate::kernel_ext::bio_list::BioList;
use crate::kernel_ext::block::{BdevFile, DevT};
use crate::kernel_ext::workqueue::WorkQueue;
use crate::logic::cbt_store::{
    attach, checkpoint, current_header, spoiled_header, store_is_there, Extents, StoreIo,
};
use crate::logic::persist::{
    require_marks, DeviceNow, Header, Layout, Reset, IDENTITY_BYTES, STORE_BLOCK,
};
use crate::logic::storage::overlaps_sorted;
use crate::storage::whole_disk_sorted;
use crate::tracker::{map_page, new_cbt, MapFields, Tracker, TrackerCbt};

/// Most ranges a store may have (a file's extents).
pub(crate) const MAX_RANGES: usize = 4096;

/// Sectors per store block.
const BLOCK_SECTORS: u64 = (STORE_BLOCK / 512) as u64;

/// A tracker's store: where it is, what names the device, and the header
/// that counts there.
pub(crate) struct Store {
    bdev: Arc<BdevFile>,
    ranges: KVVec<(u64, u64)>,
    /// Where the write-intent workers run.
    wq: Arc<WorkQueue>,
    /// Where marks go, once the tracking block count is known.
    dest: Option<Arc<MarkDest>>,
    identity: [u8; IDENTITY_BYTES],
    boot_id: [u8; 16],
    current: Option<(u8, Header)>,
    /// Why tracking started afresh at the attach (0: it went on).
    reset: u32,
}

impl Store {
    /// The store at `ranges` of `bdev` (open for writing); `EINVAL` if the
    /// ranges are not whole store blocks on the device, or overlap.
    pub(crate) fn new(
        bdev: BdevFile,
        ranges: KVVec<(u64, u64)>,
        identity: [u8; IDENTITY_BYTES],
        boot_id: [u8; 16],
        wq: Arc<WorkQueue>,
    ) -> Result<Self> {
        if ranges.is_empty() || ranges.len() > MAX_RANGES {
            return Err(EINVAL);
        }
        Extents::new(&ranges, bdev.nr_sectors()).map_err(|_| EINVAL)?;
        Ok(Self {
            bdev: Arc::new(bdev, GFP_KERNEL)?,
            ranges,
            wq,
            dest: None,
            identity,
            boot_id,
            current: None,
            reset: 0,
        })
    }

    /// Records the attach's reset reason (`blk_snap_persist_reset`).
    pub(crate) fn set_reset(&mut self, reset: u32) {
        self.reset = reset;
    }

    /// The attach's reset reason and the sequence number of the store's
    /// last checkpoint (PERSIST_STATUS).
    pub(crate) fn status(&self) -> (u32, u64) {
        (self.reset, self.current.map_or(0, |(_, h)| h.seq))
    }

    /// The store's device.
    pub(crate) fn bdev(&self) -> &BdevFile {
        &self.bdev
    }

    /// The store's ranges in its whole disk's sectors, sorted (as
    /// [`Store::overlaps`] and `Storage::overlaps` take them).
    pub(crate) fn abs_sorted(&self) -> Result<KVVec<(u64, u64)>> {
        whole_disk_sorted(&self.bdev, &self.ranges)
    }

    /// Whether one of the store's ranges lies on whole disk `whole` and
    /// overlaps one of `sorted` (sorted, disjoint ranges in the disk's own
    /// sectors).
    pub(crate) fn overlaps(&self, whole: DevT, sorted: &[(u64, u64)]) -> bool {
        let offset = self.bdev.start_sect();
        self.bdev.whole_dev() == whole
            && self
                .ranges
                .iter()
                .any(|&(s, n)| overlaps_sorted(sorted, s.saturating_add(offset), n))
    }

    /// Whether the store lies on `dev` (on whole disk `whole`): its writes
    /// then count in the device's statistics.
    pub(crate) fn counts_in(&self, dev: DevT, whole: DevT) -> bool {
        self.bdev.dev() == dev || (dev == whole && self.bdev.whole_dev() == whole)
    }

    fn extents(&self) -> Result<Extents<'_>> {
        Extents::new(&self.ranges, self.bdev.nr_sectors()).map_err(|_| EINVAL)
    }

    /// Whether a store is there: a valid copy of its header.
    pub(crate) fn is_there(&self) -> Result<bool> {
        let mut io = BdevStore::new(&self.bdev, self.extents()?)?;
        let mut buf = KVec::from_elem(0u8, STORE_BLOCK, GFP_KERNEL)?;
        Ok(store_is_there(&mut io, &mut buf))
    }

    /// Maps for `bdev`, about to be tracked, with `written` sectors written
    /// to it so far: the store's, if it may be taken up, else fresh ones;
    /// and the reason when fresh (0 when the chain goes on). `ENOSPC` if
    /// the store is too small for the maps.
    pub(crate) fn take_up(&mut self, bdev: &BdevFile, written: u64) -> Result<(TrackerCbt, u32)> {
        let mut cbt = new_cbt(bdev.nr_sectors())?;
        let MapFields {
            block_shift: shift,
            block_count: count,
            ..
        } = MapFields::of(&cbt);
        let extents = self.extents()?;
        let blocks = extents.blocks();
        if Layout::new(count).total() > blocks {
            return Err(ENOSPC);
        }
        let mut io = BdevStore::new(&self.bdev, extents)?;
        let mut buf = KVec::from_elem(0u8, STORE_BLOCK, GFP_KERNEL)?;
        let now = DeviceNow {
            capacity: bdev.nr_sectors(),
            block_shift: shift,
            identity: &self.identity,
            boot_id: &self.boot_id,
            written,
        };
        let mut loaded = true;
        let mut put = |snapshot: bool, offset: usize, bytes: &[u8]| {
            loaded &= cbt.load_bytes(snapshot, offset, bytes, &mut map_page);
        };
        // Blocks that write-intent marks say an earlier boot wrote.
        let mut marked = KVVec::from_elem(0u8, (count as usize).div_ceil(8), GFP_KERNEL)?;
        let mut mark = |b: u32| {
            if let Some(byte) = marked.get_mut(b as usize / 8) {
                *byte |= 1 << (b % 8);
            }
        };
        let found = attach(&mut io, blocks, &now, &mut put, &mut mark, &mut buf);
        let reset = found.and_then(|(b, h)| require_marks(&h, &self.boot_id).map(|()| (b, h)));
        match reset {
            Ok((block, h)) => {
                if !loaded {
                    return Err(ENOMEM);
                }
                self.current = Some((block, h));
                if cbt.adopt(h.previous, h.active, h.generation).is_err() {
                    return Ok((new_cbt(bdev.nr_sectors())?, Reset::StoreDamaged as u32));
                }
                let g = *cbt.geometry();
                for (k, &byte) in marked.iter().enumerate() {
                    for j in (0..8).filter(|j| byte & (1 << j) != 0) {
                        let b = (k * 8 + j) as u32;
                        cbt.mark_write(g.unit_start(b), g.unit_len(b));
                    }
                }
                Ok((cbt, 0))
            }
            Err(why) => {
                // The next checkpoint must pass whatever header is there.
                self.current = current_header(&mut io, &mut buf);
                Ok((new_cbt(bdev.nr_sectors())?, why as u32))
            }
        }
    }

    /// Writes a checkpoint of maps that `read` reads (with `fields`, for a
    /// device of `capacity` sectors with `written` sectors written),
    /// sealed if `clean`, else saying whether write-intent marks are kept
    /// (`intent`). `EIO` if the store could not be written: the previous
    /// checkpoint stays.
    fn write(
        &mut self,
        fields: MapFields,
        capacity: u64,
        written: u64,
        (clean, intent): (bool, bool),
        read: &dyn Fn(bool, usize, &mut [u8]) -> usize,
    ) -> Result {
        let extents = self.extents()?;
        let next = Header {
            seq: 0,
            clean,
            intent: intent && !clean,
            block_shift: fields.block_shift,
            capacity,
            block_count: fields.block_count,
            store_blocks: extents.blocks(),
            generation: fields.generation,
            previous: fields.previous,
            active: fields.active,
            map_slot: 0,
            map_seq: 0,
            epoch: 0,
            identity: self.identity,
            boot_id: self.boot_id,
            written,
        };
        let mut io = BdevStore::new(&self.bdev, extents)?;
        let mut buf = KVec::from_elem(0u8, STORE_BLOCK, GFP_KERNEL)?;
        match checkpoint(&mut io, self.current, next, read, &mut buf) {
            Ok(c) => {
                self.current = Some(c);
                Ok(())
            }
            Err(_) => Err(EIO),
        }
    }

    /// Sectors a checkpoint writes, for `block_count` tracking blocks: a
    /// store on the tracked device adds them to its write count.
    pub(crate) fn own_sectors(block_count: u32) -> u64 {
        let l = Layout::new(block_count);
        (2 * u64::from(l.map_blocks()) + u64::from(l.intent_blocks()) + 1) * BLOCK_SECTORS
    }

    /// Marks the store as in use before tracking starts with `cbt` (taken
    /// up or fresh): a checkpoint that is not sealed and keeps no marks,
    /// so that tracking that ends before its marks start (a crash, a
    /// failed PERSIST) leaves a store that the next attach refuses, never
    /// one whose maps miss writes.
    pub(crate) fn mark_in_use(&mut self, cbt: &TrackerCbt, capacity: u64) -> Result {
        let read =
            |snapshot: bool, offset: usize, out: &mut [u8]| cbt.read_map(snapshot, offset, out);
        self.write(MapFields::of(cbt), capacity, 0, (false, false), &read)
    }

    /// Empty marks for the epoch that the next checkpoint starts.
    fn next_marks(&mut self, block_count: u32) -> Result<MarkLog> {
        // A device resized under its tracker has new maps: a new layout.
        let dest = match self.dest.clone() {
            Some(d) if d.block_count() == block_count => d,
            _ => {
                let d = Arc::new(
                    MarkDest::new(self.bdev.clone(), &self.extents()?, block_count)?,
                    GFP_KERNEL,
                )?;
                self.dest = Some(d.clone());
                d
            }
        };
        let epoch = self.current.map_or(0, |(_, h)| h.epoch + 1);
        MarkLog::new(dest, epoch, block_count, self.wq.clone())
    }

    /// A checkpoint of `tracker`'s maps with its writes held and those in
    /// flight drained (and write-intent flushes paused), so that it has
    /// every write that completed and no other; then `after` holds. On
    /// failure the tracker goes on as it was (the previous checkpoint
    /// counts in the store).
    pub(crate) fn checkpoint_held(&mut self, tracker: &Arc<Tracker>, after: After) -> Result {
        let log = match after {
            After::Marks => Some(self.next_marks(tracker.map_fields().block_count)?),
            _ => None,
        };
        tracker.pause_marks()?;
        let hold = tracker.hold_writes();
        let r = self.write_held(tracker, after);
        let released = match &r {
            Ok(()) => tracker.replace_marks(log),
            Err(_) => BioList::new(),
        };
        drop(hold);
        tracker.resume_marks(released);
        r
    }

    fn write_held(&mut self, tracker: &Tracker, after: After) -> Result {
        tracker.drain()?;
        let fields = tracker.map_fields();
        let (capacity, mut written) = tracker.size_and_written()?;
        let sealed = after == After::Sealed;
        if !sealed {
            // Only a seal records the count: an attach in the same boot
            // takes up a sealed store only.
            written = 0;
        } else if self.counts_in(tracker.dev(), tracker.whole_dev()) {
            written += Self::own_sectors(fields.block_count);
        }
        let read = |snapshot: bool, offset: usize, out: &mut [u8]| {
            tracker.read_either_map(snapshot, offset, out)
        };
        let flags = (sealed, after == After::Marks);
        self.write(fields, capacity, written, flags, &read)
    }

    /// Seals `tracker`'s maps into the store (a clean detach).
    pub(crate) fn seal(&mut self, tracker: &Arc<Tracker>) -> Result {
        self.checkpoint_held(tracker, After::Sealed)
    }

    /// Tracking with the store goes on without marks from now on (a
    /// snapshot's life, the tracker's end without a seal): the store must
    /// say so, so that a crash meanwhile costs a full backup rather than
    /// marks that miss writes. If that cannot be written (or the device
    /// went away), marks stop and the store is spoiled; `EIO` if that
    /// fails too.
    pub(crate) fn stop_marks(&mut self, tracker: &Arc<Tracker>) -> Result {
        if !self.current.is_some_and(|(_, h)| h.intent) {
            return Ok(());
        }
        if !tracker.is_gone() && self.checkpoint_held(tracker, After::NoMarks).is_ok() {
            return Ok(());
        }
        tracker.stop_marks();
        self.spoil()?;
        // Both copies are spoiled: none claims marks.
        self.current = self
            .current
            .map(|(b, h)| (b, Header { intent: false, ..h }));
        Ok(())
    }

    /// Makes the store fail its checks at the next attach (both header
    /// copies), for when it cannot be kept right.
    pub(crate) fn spoil(&self) -> Result {
        let dev = self.bdev.dev();
        let mut io = BdevStore::new(&self.bdev, self.extents()?)?;
        let mut buf = KVec::from_elem(0u8, STORE_BLOCK, GFP_KERNEL)?;
        spoiled_header(&mut buf);
        let ok = io.write(0, &buf) && io.write(1, &buf) && io.flush();
        if ok {
            pr_warn!(
                "CBT store on {}:{} made invalid: its next attach starts afresh\n",
                dev.major(),
                dev.minor()
            );
            Ok(())
        } else {
            pr_err!(
                "CBT store on {}:{} could not be made invalid: detach it before the next restart\n",
                dev.major(),
                dev.minor()
            );
            Err(EIO)
        }
    }
}

/// What [`Store::checkpoint_held`] leaves.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum After {
    /// The store sealed (a clean detach); marks stop.
    Sealed,
    /// Marks kept from this checkpoint on, in a new epoch.
    Marks,
    /// In use without marks.
    NoMarks,
}
