// SPDX-License-Identifier: GPL-2.0

//! A snapshot's diff storage: the sector ranges appended by user space, on
//! devices held open for writing, from which chunk regions are allocated.
//!
//! Allocation happens in the copy-on-write workers (process context), so a
//! mutex guards the state. When no region is free, the allocating worker
//! raises a low free space event and waits up to `diff_storage_wait_ms` for
//! APPEND_STORAGE; only then does it give up with `ENOSPC`. The wait is the
//! snapshot's own (no other snapshot's copies queue behind it) and ends at
//! once when the snapshot goes.

use core::sync::atomic::{AtomicBool, Ordering};

use kernel::alloc::flags::GFP_KERNEL;
use kernel::prelude::*;
use kernel::sync::{Arc, CondVar, Mutex};
use kernel::time::msecs_to_jiffies;
use kernel::{new_condvar, new_mutex, pin_init};

use crate::event_queue::EventQueue;
use crate::kernel_ext::block::{BdevFile, DevT};
use crate::kernel_ext::params::Param;
use crate::logic::events::Event;
use crate::logic::storage::{overlaps_sorted, validate_ranges, Allocator, Region, StorageRange};

struct State {
    /// Every range appended, in order; `StorageRange::dev` indexes `devs`.
    ranges: KVec<StorageRange>,
    devs: KVec<Arc<BdevFile>>,
    alloc: Allocator,
    /// The snapshot is going: no more allocations, no more waiting.
    closed: bool,
}

#[pin_data]
pub(crate) struct Storage {
    #[pin]
    state: Mutex<State>,
    #[pin]
    appended: CondVar,
    events: Arc<EventQueue>,
}

impl Storage {
    pub(crate) fn new(events: Arc<EventQueue>) -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self {
                state <- new_mutex!(State { ranges: KVec::new(), devs: KVec::new(), alloc: Allocator::new(), closed: false },
                    "blksnap_storage"),
                appended <- new_condvar!("blksnap_storage_appended"),
                events,
            }),
            GFP_KERNEL,
        )
    }

    /// Sectors appended so far.
    pub(crate) fn total(&self) -> u64 {
        self.state.lock().alloc.total()
    }

    /// Sectors consumed so far (chunks stored, and the gaps allocation
    /// skipped): what a tool compares with [`Self::total`] to append
    /// storage as it is used, not as the low free space events ask.
    pub(crate) fn used(&self) -> u64 {
        self.state.lock().alloc.used()
    }

    /// Appends `ranges` (`(start, len)` sectors) of `bdev` after checking
    /// them: `EINVAL` for empty, unaligned, out-of-device or overlapping
    /// ranges. Wakes writers waiting for storage.
    pub(crate) fn append(&self, bdev: Arc<BdevFile>, ranges: &mut [(u64, u64)]) -> Result {
        let align = u64::from(bdev.logical_block_size() >> 9).max(1);
        let mut st = self.state.lock();
        let idx = match st.devs.iter().position(|d| d.dev() == bdev.dev()) {
            Some(i) => i,
            None => st.devs.len(),
        };
        let existing = st
            .ranges
            .iter()
            .filter(|r| r.dev as usize == idx)
            .map(|r| (r.start, r.len));
        validate_ranges(ranges, existing, bdev.nr_sectors(), align).map_err(|_| EINVAL)?;
        st.ranges.reserve(ranges.len(), GFP_KERNEL)?;
        if idx == st.devs.len() {
            st.devs.push(bdev, GFP_KERNEL)?;
        }
        for &(start, len) in ranges.iter() {
            st.ranges.push(
                StorageRange {
                    dev: idx as u32,
                    start,
                    len,
                },
                GFP_KERNEL,
            )?;
            st.alloc.appended(len);
        }
        drop(st);
        self.appended.notify_all();
        Ok(())
    }

    /// Makes all storage free again (a TAKE that failed after its switch:
    /// what its copies stored belongs to no snapshot). The copies must have
    /// ended.
    pub(crate) fn release_all(&self) {
        self.state.lock().alloc.release_all();
    }

    /// Ends every wait for storage at once and refuses allocations from
    /// now on (DESTROY, unload).
    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
        self.appended.notify_all();
    }

    /// Whether one of the ranges appended so far lies on whole disk `whole`
    /// and overlaps one of `sorted` (sorted, disjoint `(start, len)` ranges
    /// in the disk's own sectors, whichever partition they were given on).
    pub(crate) fn overlaps(&self, whole: DevT, sorted: &[(u64, u64)]) -> bool {
        let st = self.state.lock();
        st.ranges.iter().any(|r| match st.devs.get(r.dev as usize) {
            Some(d) if d.whole_dev() == whole => {
                overlaps_sorted(sorted, r.start.saturating_add(d.start_sect()), r.len)
            }
            _ => false,
        })
    }

    /// Wakes the allocations waiting for storage, so that those whose
    /// `abandon` is set now give up (a device's image was corrupted).
    /// Takes the storage mutex (briefly), so that no waiter misses it.
    pub(crate) fn kick(&self) {
        let _st = self.state.lock();
        self.appended.notify_all();
    }

    /// Allocates `len` sectors, waiting for more storage if there is none;
    /// `EIO` at once if `abandon` is set (before or during the wait: see
    /// [`Self::kick`]).
    pub(crate) fn alloc(&self, len: u64, abandon: &AtomicBool) -> Result<(Region, Arc<BdevFile>)> {
        let minimum = Param::DiffStorageMinimum.get();
        let mut left =
            msecs_to_jiffies(Param::DiffStorageWaitMs.get().min(u64::from(u32::MAX)) as u32);
        let mut st = self.state.lock();
        loop {
            let st_ref = &mut *st;
            if st_ref.closed || abandon.load(Ordering::Acquire) {
                return Err(EIO);
            }
            if let Some(region) = st_ref.alloc.alloc(&st_ref.ranges, len) {
                if st_ref.alloc.low_space_due(minimum / 2) {
                    self.events
                        .push(Event::low_free_space(EventQueue::now(), minimum));
                }
                let dev = st_ref
                    .devs
                    .get(region.dev as usize)
                    .cloned()
                    .ok_or(EINVAL)?;
                return Ok((region, dev));
            }
            // Nothing free: ask for more (once per append) and wait.
            if st_ref.alloc.low_space_due(u64::MAX) {
                self.events
                    .push(Event::low_free_space(EventQueue::now(), minimum));
            }
            if left == 0 {
                return Err(ENOSPC);
            }
            match self.appended.wait_interruptible_timeout(&mut st, left) {
                kernel::sync::CondVarTimeoutResult::Woken { jiffies } => left = jiffies,
                kernel::sync::CondVarTimeoutResult::Signal { jiffies } => left = jiffies,
                kernel::sync::CondVarTimeoutResult::Timeout => left = 0,
            }
        }
    }
}

/// `pairs` (sector ranges of `bdev`) in its whole disk's sectors, sorted:
/// what the module-wide overlap checks take, since ranges given through a
/// disk and through its partition are the same space. Sums past the end
/// saturate, harmless here: the ranges' own checks catch them.
pub(crate) fn whole_disk_sorted(
    bdev: &BdevFile,
    pairs: &[(u64, u64)],
) -> Result<KVVec<(u64, u64)>> {
    let offset = bdev.start_sect();
    let mut abs = KVVec::with_capacity(pairs.len(), GFP_KERNEL)?;
    for &(start, len) in pairs.iter() {
        abs.push((start.saturating_add(offset), len), GFP_KERNEL)?;
    }
    abs.sort_unstable();
    Ok(abs)
}
