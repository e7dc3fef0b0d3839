// SPDX-License-Identifier: GPL-2.0

//! Trackers with a CBT store (`Documentation/persistence.rst`): PERSIST,
//! in two steps so that the store's I/O runs without the state lock
//! ([`Persisting::prepare`], then [`State::persist`]); DETACH, which seals
//! the store without the lock ([`State::detach_begin`], [`Detaching`]);
//! and the seal of every store at unload ([`State::seal_stores`]).

use kernel::prelude::*;
use kernel::sync::Arc;

use super::{open_dev, State, TrackerEntry};
use crate::kernel_ext::block::{BdevFile, DevT};
use crate::kernel_ext::errno::eopnotsupp;
use crate::kernel_ext::filter::Attached;
use crate::kernel_ext::inflight::WatchPool;
use crate::logic::persist::Reset;
use crate::persist::{After, Store};
use crate::tracker::{new_cbt, MapFields, Tracker, TrackerCbt};
use crate::uapi::BLK_SNAP_PERSIST_IN_MEMORY;

/// A device about to be tracked with a store: open, its maps taken up
/// from the store (or fresh), the store marked in use.
pub(crate) struct Persisting {
    bdev: BdevFile,
    store: Store,
    cbt: TrackerCbt,
    reset: u32,
    /// The device's write count when the store was read.
    written: u64,
}

impl Persisting {
    /// PERSIST, first step, without the state lock (it reads and writes
    /// the store): opens `dev` and takes up `store`'s maps for it. With
    /// `existing`, `ENOENT` (and nothing written) unless a store is there.
    pub(crate) fn prepare(dev: DevT, mut store: Store, existing: bool) -> Result<Self> {
        let bdev = open_dev(dev, false)?;
        if bdev.is_zoned() {
            return Err(eopnotsupp());
        }
        let mut written = bdev.sectors_written();
        if existing && !store.is_there()? {
            return Err(ENOENT);
        }
        let (cbt, reset) = store.take_up(&bdev, written)?;
        store.mark_in_use(&cbt, bdev.nr_sectors())?;
        if store.counts_in(bdev.dev(), bdev.whole_dev()) {
            // Its own writes, which the check before the attach expects.
            written += Store::own_sectors(MapFields::of(&cbt).block_count);
        }
        Ok(Self {
            bdev,
            store,
            cbt,
            reset,
            written,
        })
    }
}

/// What PERSIST_STATUS reports of a tracker.
pub(crate) struct PersistStatus {
    /// A store is attached.
    pub(crate) store: bool,
    /// The attach's reset reason (`blk_snap_persist_reset`).
    pub(crate) reset: u32,
    pub(crate) generation: [u8; 16],
    /// The sequence number of the store's last checkpoint.
    pub(crate) checkpoint: u64,
    /// Write-intent flushes done.
    pub(crate) flushes: u64,
}

/// A tracker taken out of the state by DETACH, its filter still attached
/// (so no other tracker can start on the device), until its store is
/// sealed.
pub(crate) struct Detaching(TrackerEntry);

impl Detaching {
    /// Seals the store: the tracker's maps, numbers and the device's write
    /// count. On success the tracker goes when this is dropped.
    pub(crate) fn seal(&mut self) -> Result {
        let e = &mut self.0;
        match e.store.as_mut() {
            Some(store) => store.seal(&e.tracker),
            None => Err(ENOENT),
        }
    }
}

impl State {
    /// PERSIST, second step: a device not tracked starts tracking with the
    /// maps `p` took up; a device tracked (since `prepare`, or before) gets
    /// the store and keeps its maps in memory. Returns the reset reason
    /// and the tracker.
    pub(crate) fn persist(
        &mut self,
        p: Persisting,
        pool: &Arc<WatchPool>,
    ) -> Result<(u32, Arc<Tracker>)> {
        self.purge_gone();
        // Again, under the lock: another PERSIST may have taken the store
        // since the first check.
        self.check_store(&p.store)?;
        let dev = p.bdev.dev();
        if let Some(t) = self.trackers.iter_mut().find(|t| t.tracker.dev() == dev) {
            if t.store.is_some() || t.snapshot.is_some() {
                return Err(EBUSY);
            }
            let mut store = p.store;
            store.set_reset(BLK_SNAP_PERSIST_IN_MEMORY);
            // The store holds what PERSIST took up, not these maps: they
            // go in now, and marks start with them.
            store.checkpoint_held(&t.tracker, After::Marks)?;
            t.store = Some(store);
            return Ok((BLK_SNAP_PERSIST_IN_MEMORY, t.tracker.clone()));
        }
        self.check_overlap(dev, p.bdev.whole_dev())?;
        self.trackers.reserve(1)?;
        let Persisting {
            bdev,
            mut store,
            mut cbt,
            mut reset,
            written,
        } = p;
        // Frozen, so that no write through a file system slips between the
        // check of the write count and the attach.
        let (tracker, filter) = {
            let _frozen = bdev.freeze()?;
            if bdev.sectors_written() != written {
                cbt = new_cbt(bdev.nr_sectors())?;
                // A store that had nothing to go on from keeps its reason.
                if reset == 0 {
                    reset = Reset::WrittenUntracked as u32;
                }
            }
            let tracker = Tracker::with_cbt(bdev.hold(), pool.clone(), cbt, None)?;
            let filter = Attached::attach(&bdev, tracker.clone())?;
            (tracker, filter)
        };
        store.set_reset(reset);
        // Marks from a checkpoint of the maps the tracker started with (a
        // fresh generation's, if the count moved): until it is durable the
        // store says it keeps none, so a failure here costs only a full
        // backup after a crash.
        if let Err(e) = store.checkpoint_held(&tracker, After::Marks) {
            pr_warn!(
                "{}:{}: write-intent marks not started ({:?}): a crash costs a full backup\n",
                dev.major(),
                dev.minor(),
                e
            );
        }
        // Room reserved above: no allocation, no failure.
        self.trackers.insert(TrackerEntry {
            tracker: tracker.clone(),
            _filter: filter,
            snapshot: None,
            store: Some(store),
        })?;
        if reset == 0 {
            pr_info!(
                "tracking {}:{}, going on from its store\n",
                dev.major(),
                dev.minor()
            );
        } else {
            pr_info!(
                "tracking {}:{} afresh (store: reason {})\n",
                dev.major(),
                dev.minor(),
                reset
            );
        }
        Ok((reset, tracker))
    }

    /// `EBUSY` if `store` shares blocks with another tracker's store or
    /// with a snapshot's storage (each would overwrite the other), or if
    /// its writes would reach a device in a snapshot.
    pub(crate) fn check_store(&self, store: &Store) -> Result {
        let abs = store.abs_sorted()?;
        let whole = store.bdev().whole_dev();
        let shared = self
            .trackers
            .iter()
            .filter_map(|t| t.store.as_ref())
            .any(|s| s.overlaps(whole, &abs))
            || self
                .snapshots
                .iter()
                .any(|s| s.storage.overlaps(whole, &abs));
        if shared {
            return Err(EBUSY);
        }
        self.check_store_device(store.bdev())
    }

    /// `EBUSY` if the writes of a store on `bdev` would reach a device in
    /// a snapshot: they pass every filter, so its image would show them.
    pub(crate) fn check_store_device(&self, bdev: &BdevFile) -> Result {
        let mut devs = KVec::new();
        for t in self.trackers.iter().filter(|t| t.snapshot.is_some()) {
            devs.push((t.tracker.dev(), t.tracker.whole_dev()), GFP_KERNEL)?;
        }
        match super::reached(bdev, &devs)? {
            Some(_) => Err(EBUSY),
            None => Ok(()),
        }
    }

    /// PERSIST_STATUS of `dev` (`ENODEV` if it is not tracked); reads
    /// only.
    pub(crate) fn persist_status(&self, dev: DevT) -> Result<PersistStatus> {
        let t = self.tracker(dev).ok_or(ENODEV)?;
        let (reset, checkpoint) = t.store.as_ref().map_or((0, 0), Store::status);
        Ok(PersistStatus {
            store: t.store.is_some(),
            reset,
            generation: t.tracker.map_fields().generation,
            checkpoint,
            flushes: t.tracker.mark_flushes(),
        })
    }

    /// DETACH, first step: takes the tracker of `dev` out, to be sealed
    /// without the state lock.
    pub(crate) fn detach_begin(&mut self, dev: DevT) -> Result<Detaching> {
        self.purge_gone();
        let t = self.tracker(dev).ok_or(ENODEV)?;
        if t.snapshot.is_some() {
            return Err(EBUSY);
        }
        match t.store.as_ref() {
            None => return Err(ENOENT),
            // Its writes would show in that snapshot's image.
            Some(store) => self.check_store_device(store.bdev())?,
        }
        self.trackers.reserve(1)?;
        let entry = self
            .trackers
            .remove_first(|t| t.tracker.dev() == dev)
            .ok_or(ENODEV)?;
        Ok(Detaching(entry))
    }

    /// DETACH whose seal failed: the tracker goes on (room for it was kept
    /// when it was taken out).
    pub(crate) fn detach_undo(&mut self, d: Detaching) -> Result {
        self.trackers.insert(d.0)
    }

    /// Unload: seals every store (the trackers are taken out of the state
    /// already, so without the lock). A store that cannot be sealed stays
    /// as it was marked, in use: its next attach starts afresh.
    pub(crate) fn seal_stores(&mut self) {
        for t in self.trackers.iter_mut() {
            if let Some(store) = t.store.as_mut() {
                let dev = t.tracker.dev();
                match store.seal(&t.tracker) {
                    Ok(()) => pr_info!("{}:{}: store sealed\n", dev.major(), dev.minor()),
                    Err(e) => {
                        pr_warn!(
                            "{}:{}: store not sealed ({:?}): its next attach starts afresh\n",
                            dev.major(),
                            dev.minor(),
                            e
                        );
                        // Dropping the entry ends its marks (or spoils
                        // the store).
                    }
                }
            }
        }
    }
}
