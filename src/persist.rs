// SPDX-License-Identifier: GPL-2.0

//! A tracker's CBT store (`Documentation/persistence.rst`): taken up when
//! IOCTL_BLK_SNAP_TRACKER_PERSIST starts tracking a device, sealed when the
//! tracker is detached (IOCTL_BLK_SNAP_TRACKER_DETACH, module unload). The
//! procedures are `logic::cbt_store`'s; this gives them the store's device
//! and the tracker's maps, and decides what is written when.
//!
//! The write-intent protocol is not here yet: a store is taken up only if
//! it was sealed, so a crash costs a full backup, never a wrong one.

use kernel::alloc::flags::GFP_KERNEL;
use kernel::prelude::*;

use crate::cbt_store_io::BdevStore;
use crate::kernel_ext::block::{BdevFile, DevT};
use crate::logic::cbt_store::{attach, checkpoint, current_header, Extents};
use crate::logic::persist::{
    require_seal, DeviceNow, Header, Layout, Reset, IDENTITY_BYTES, STORE_BLOCK,
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
    bdev: BdevFile,
    ranges: KVVec<(u64, u64)>,
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
    ) -> Result<Self> {
        if ranges.is_empty() || ranges.len() > MAX_RANGES {
            return Err(EINVAL);
        }
        Extents::new(&ranges, bdev.nr_sectors()).map_err(|_| EINVAL)?;
        Ok(Self {
            bdev,
            ranges,
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
    fn counts_in(&self, dev: DevT, whole: DevT) -> bool {
        self.bdev.dev() == dev || (dev == whole && self.bdev.whole_dev() == whole)
    }

    fn extents(&self) -> Result<Extents<'_>> {
        Extents::new(&self.ranges, self.bdev.nr_sectors()).map_err(|_| EINVAL)
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
        let found = attach(&mut io, blocks, &now, &mut put, &mut buf);
        // Sealed stores only, until the write-intent protocol is in.
        let reset = found.and_then(|(b, h)| require_seal(&h, &self.boot_id).map(|()| (b, h)));
        match reset {
            Ok((block, h)) => {
                if !loaded {
                    return Err(ENOMEM);
                }
                self.current = Some((block, h));
                if cbt.adopt(h.previous, h.active, h.generation).is_ok() {
                    return Ok((cbt, 0));
                }
                Ok((new_cbt(bdev.nr_sectors())?, Reset::StoreDamaged as u32))
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
    /// sealed if `clean`. `EIO`
    /// if the store could not be written: the previous checkpoint stays.
    fn write(
        &mut self,
        fields: MapFields,
        capacity: u64,
        written: u64,
        clean: bool,
        read: &dyn Fn(bool, usize, &mut [u8]) -> usize,
    ) -> Result {
        let extents = self.extents()?;
        let next = Header {
            seq: 0,
            clean,
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

    /// Marks the store as in use before tracking starts with `cbt` (taken
    /// up or fresh): a checkpoint that is not sealed, so that tracking that
    /// ends without a seal (a crash, TRACKER_REMOVE) leaves a store that
    /// the next attach refuses, never one whose maps miss writes.
    pub(crate) fn mark_in_use(&mut self, cbt: &TrackerCbt, capacity: u64) -> Result {
        let read =
            |snapshot: bool, offset: usize, out: &mut [u8]| cbt.read_map(snapshot, offset, out);
        self.write(MapFields::of(cbt), capacity, 0, false, &read)
    }

    /// Seals `tracker`'s maps into the store. Its writes are held and those
    /// in flight drained meanwhile, so that the device's write count in the
    /// header is that of every write the maps have, and of nothing else.
    pub(crate) fn seal(&mut self, tracker: &Tracker) -> Result {
        let hold = tracker.hold_writes();
        tracker.drain()?;
        let fields = tracker.map_fields();
        let (capacity, mut written) = tracker.size_and_written()?;
        if self.counts_in(tracker.dev(), tracker.whole_dev()) {
            // The seal's own writes: both maps and the header.
            let maps = u64::from(Layout::new(fields.block_count).map_blocks());
            written += (2 * maps + 1) * BLOCK_SECTORS;
        }
        let read = |snapshot: bool, offset: usize, out: &mut [u8]| {
            tracker.read_either_map(snapshot, offset, out)
        };
        let r = self.write(fields, capacity, written, true, &read);
        drop(hold);
        r
    }
}
