// SPDX-License-Identifier: GPL-2.0

//! Snapshots and the trackers of their devices: their lifecycle (CREATE,
//! APPEND_STORAGE, TAKE, DESTROY) and the rules between them (a device in
//! one snapshot at a time, a disk and its partitions never tracked together,
//! storage never shared). The control device (`ctl.rs`) copies arguments
//! and calls in here; this calls the trackers, copy on write and storage.

use kernel::alloc::flags::GFP_KERNEL;
use kernel::prelude::*;
use kernel::sync::Arc;

use crate::diff_area::DiffArea;
use crate::event_queue::EventQueue;
use crate::kernel_ext::block::{BdevFile, DevT};
use crate::kernel_ext::errno::eopnotsupp;
use crate::kernel_ext::filter::Attached;
use crate::kernel_ext::gendisk::BioDisk;
use crate::kernel_ext::inflight::WatchPool;
use crate::kernel_ext::params::Param;
use crate::kernel_ext::random::random_uuid;
use crate::kernel_ext::shrinker::Shrinker;
use crate::logic::devices::{disk_and_partition, shares_blocks};
use crate::logic::events::Event;
use crate::persist::{After, Store};
use crate::slots::Slots;
use crate::storage::Storage;
use crate::tracker::Tracker;

mod persist;
mod take;
pub(crate) use persist::Persisting;
pub(crate) use take::ImageEnv;

/// `EINVAL` if storage on `bdev` would reach one of `devs`, devices of a
/// taken snapshot: itself, through a disk and its partition, or through the
/// devices `bdev` is built on (an LV on the disk being snapshotted). The
/// module's storage writes pass every filter, which is only right for
/// blocks that held nothing of the snapshot at TAKE: storage given before
/// TAKE (a storage file's blocks then). Blocks appended after TAKE may be
/// those of a file deleted since, which the image must still show.
/// `devs` pairs each device with its whole disk.
fn refuse_storage_under(bdev: &BdevFile, devs: &[(DevT, DevT)]) -> Result {
    if let Some(d) = reached(bdev, devs)? {
        pr_err!(
            "storage on {}:{} reaches {}:{}, a device of the taken snapshot: \
             append such storage before TAKE\n",
            bdev.dev().major(),
            bdev.dev().minor(),
            d.major(),
            d.minor()
        );
        return Err(EINVAL);
    }
    Ok(())
}

/// The first of `devs` (each with its whole disk) that I/O to `bdev`
/// reaches: itself, through a disk and its partition, or through the
/// devices `bdev` is built on.
fn reached(bdev: &BdevFile, devs: &[(DevT, DevT)]) -> Result<Option<DevT>> {
    let lower = bdev.lower_devices()?;
    let mut wholes = KVec::with_capacity(lower.len() + 1, GFP_KERNEL)?;
    wholes.push((bdev.dev(), bdev.whole_dev()), GFP_KERNEL)?;
    for &dev in lower.iter() {
        // Its whole disk, from the device itself; one that cannot be
        // opened cannot be told apart from a device of the snapshot.
        let whole = open_dev(dev, false)?.whole_dev();
        wholes.push((dev, whole), GFP_KERNEL)?;
    }
    for &s in wholes.iter() {
        for &(d, d_whole) in devs.iter() {
            if shares_blocks(s, (d, d_whole)) {
                return Ok(Some(d));
            }
        }
    }
    Ok(None)
}

/// Opens device `dev`: `ENODEV` if there is none (whatever the block layer
/// said); a shortage of memory (`ENOMEM`), a device held exclusively or
/// otherwise busy (`EBUSY`), one the caller may not open (`EACCES`) and a
/// read-only one opened for writing (`EROFS`) keep their own errno.
pub(crate) fn open_dev(dev: DevT, write: bool) -> Result<BdevFile> {
    BdevFile::open(dev, write).map_err(|e| {
        if [ENOMEM, EBUSY, EACCES, EROFS].contains(&e) {
            e
        } else {
            ENODEV
        }
    })
}

/// A tracked device.
struct TrackerEntry {
    tracker: Arc<Tracker>,
    /// Keeps the filter attached; dropping it detaches.
    _filter: Attached<Tracker>,
    /// The snapshot the device is in.
    snapshot: Option<[u8; 16]>,
    /// Its CBT store, sealed when the tracker is detached.
    store: Option<Store>,
}

impl Drop for TrackerEntry {
    fn drop(&mut self) {
        // A store left in use must not claim marks that nobody keeps any
        // more (a sealed one has none): the device may be written next
        // with no tracker.
        if let Some(store) = self.store.as_mut() {
            let _ = store.stop_marks(&self.tracker);
        }
        // Writes waiting for marks go on before the filter goes.
        self.tracker.stop_marks();
    }
}

/// A device of a taken snapshot: its copy-on-write state and its image.
struct Image {
    area: Arc<DiffArea>,
    disk: Option<BioDisk<DiffArea>>,
    minor: u32,
    /// Lets memory reclaim take the area's cached chunks back.
    _cache: Shrinker<DiffArea>,
}

/// A snapshot: a set of tracked devices.
struct Snapshot {
    id: [u8; 16],
    devices: KVec<DevT>,
    taken: bool,
    /// A TAKE is under way without the state lock (see [`Taking`]):
    /// DESTROY and another TAKE are refused meanwhile.
    taking: bool,
    /// [`Snapshot::stop`] has run.
    stopped: bool,
    events: Arc<EventQueue>,
    storage: Arc<Storage>,
    /// After TAKE, one per device.
    images: KVec<Image>,
}

impl Snapshot {
    /// The quick part of the end, done under the state lock (and only
    /// once): copies waiting for storage give up at once, writes stop
    /// being copied, the images go (no image bio starts once a disk is
    /// deleted, and their minors are free again).
    fn stop(&mut self) {
        if core::mem::replace(&mut self.stopped, true) {
            return;
        }
        for img in self.images.iter() {
            img.area.set_going();
        }
        self.storage.close();
        for img in self.images.iter() {
            drop(img.area.tracker().end_snapshot());
        }
        for img in self.images.iter_mut() {
            drop(img.disk.take());
        }
    }
}

impl Drop for Snapshot {
    /// The end: after [`Snapshot::stop`], every held write is let go, and
    /// the copies and image bios still running are waited for. DESTROY
    /// drops a snapshot after the state lock, so that these waits (a copy
    /// on a slow device) hold up no other snapshot.
    fn drop(&mut self) {
        self.stop();
        for img in self.images.iter() {
            img.area.close();
        }
        self.events.close();
    }
}

/// A snapshot taken out of the state by DESTROY, stopped; its devices stay
/// in it (no other snapshot can have them) until [`Destroyed::wait`] and
/// [`State::release`].
pub(crate) struct Destroyed {
    snap: Snapshot,
    id: [u8; 16],
}

/// A destroyed snapshot whose end is over: [`State::release`] frees its
/// devices.
pub(crate) struct Ended([u8; 16]);

impl Destroyed {
    /// Waits for the end of the snapshot's copies and image I/O: call it
    /// without the state lock.
    pub(crate) fn wait(self) -> Ended {
        drop(self.snap);
        Ended(self.id)
    }
}

/// Everything the ioctls work on: the trackers and the snapshots. The
/// control device guards it with one mutex that the I/O path never takes.
pub(crate) struct State {
    // Dropped in this order: snapshots end before the trackers' filters go.
    snapshots: Slots<Snapshot>,
    trackers: Slots<TrackerEntry>,
}

impl State {
    pub(crate) fn new() -> Self {
        State {
            trackers: Slots::new(),
            snapshots: Slots::new(),
        }
    }

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
    pub(crate) fn tracker_of(&self, dev: DevT, image_major: u32) -> Option<Arc<Tracker>> {
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
            // A disk and one of its partitions: a bio meets one filter
            // only, so the two could never both see every write.
            if disk_and_partition((t.tracker.dev(), t.tracker.whole_dev()), (dev, whole)) {
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

    /// Checks every device of a CREATE before anything changes: tracked
    /// ones must be in no snapshot and of unchanged size, new ones must
    /// open and overlap no tracked device nor each other. Returns the new
    /// ones, open only for the attach (their trackers then hold them by
    /// reference).
    fn check_devices(&self, devs: &[DevT]) -> Result<KVec<BdevFile>> {
        let mut fresh: KVec<BdevFile> = KVec::new();
        for &dev in devs.iter() {
            if let Some(t) = self.tracker(dev) {
                if t.snapshot.is_some() {
                    return Err(EBUSY);
                }
                self.check_overlap(dev, t.tracker.whole_dev())?;
                continue;
            }
            let bdev = open_dev(dev, false)?;
            // Copy-on-write would have to follow write pointers.
            if bdev.is_zoned() {
                return Err(eopnotsupp());
            }
            self.check_overlap(bdev.dev(), bdev.whole_dev())?;
            // Disk and partition both named in this one call.
            let pair = (bdev.dev(), bdev.whole_dev());
            if fresh
                .iter()
                .any(|o| disk_and_partition((o.dev(), o.whole_dev()), pair))
            {
                return Err(EBUSY);
            }
            fresh.push(bdev, GFP_KERNEL)?;
        }
        for &dev in devs.iter() {
            if let Some(t) = self.tracker(dev) {
                t.tracker.check_resize()?;
            }
        }
        Ok(fresh)
    }

    /// SNAPSHOT_CREATE of the devices `devs` (checked distinct): a tracker
    /// for each device that has none, then the snapshot; returns its id.
    pub(crate) fn create(&mut self, devs: KVec<DevT>, pool: &Arc<WatchPool>) -> Result<[u8; 16]> {
        // A device that went away and came back (same number) starts over.
        self.purge_gone();
        let fresh = self.check_devices(&devs)?;
        let events = EventQueue::new()?;
        let storage = Storage::new(events.clone())?;
        self.snapshots.reserve(1)?;
        self.trackers.reserve(fresh.len())?;
        for entry in attach_all(fresh, pool)?.into_iter() {
            let dev = entry.tracker.dev();
            // Room reserved above: no allocation, no failure.
            self.trackers.insert(entry)?;
            pr_info!("tracking {}:{}\n", dev.major(), dev.minor());
        }

        let id = random_uuid();
        for t in self.trackers.iter_mut() {
            if devs.iter().any(|d| *d == t.tracker.dev()) {
                t.snapshot = Some(id);
            }
        }
        events.push(Event::low_free_space(
            EventQueue::now(),
            Param::DiffStorageMinimum.get(),
        ));
        self.snapshots.insert(Snapshot {
            id,
            devices: devs,
            taken: false,
            taking: false,
            stopped: false,
            events,
            storage,
            images: KVec::new(),
        })?;
        Ok(id)
    }

    /// SNAPSHOT_DESTROY: the images go, held writes are let go, the
    /// storage is released; the trackers stay.
    pub(crate) fn destroy(&mut self, id: &[u8; 16]) -> Result<Destroyed> {
        if self.snapshot(id)?.taking {
            return Err(EBUSY);
        }
        let mut snap = self.snapshots.remove_first(|s| &s.id == id).ok_or(ESRCH)?;
        snap.stop();
        Ok(Destroyed { snap, id: *id })
    }

    /// The devices of a destroyed snapshot, whose end [`Destroyed`] waited
    /// for, are free for another snapshot.
    pub(crate) fn release(&mut self, gone: Ended) {
        for t in self.trackers.iter_mut() {
            if t.snapshot.as_ref() == Some(&gone.0) {
                t.snapshot = None;
            }
        }
        self.restart_marks();
    }

    /// Write-intent marks again for every store that has none and whose
    /// tracker is in no snapshot, nor its writes reach a device in one: a
    /// checkpoint of the maps as they are starts them.
    fn restart_marks(&mut self) {
        let mut devs = KVec::new();
        for t in self.trackers.iter().filter(|t| t.snapshot.is_some()) {
            if devs
                .push((t.tracker.dev(), t.tracker.whole_dev()), GFP_KERNEL)
                .is_err()
            {
                return;
            }
        }
        for t in self.trackers.iter_mut() {
            let Some(store) = t.store.as_mut() else {
                continue;
            };
            if t.snapshot.is_some() || t.tracker.is_gone() || t.tracker.has_marks() {
                continue;
            }
            if !matches!(reached(store.bdev(), &devs), Ok(None)) {
                continue;
            }
            if let Err(e) = store.checkpoint_held(&t.tracker, After::Marks) {
                let dev = t.tracker.dev();
                pr_warn!(
                    "{}:{}: write-intent marks not started again ({:?}): a crash costs a full backup\n",
                    dev.major(),
                    dev.minor(),
                    e
                );
            }
        }
    }

    /// The ids of the snapshots.
    pub(crate) fn ids(&self) -> impl Iterator<Item = [u8; 16]> + '_ {
        self.snapshots.iter().map(|s| s.id)
    }

    pub(crate) fn snapshot_count(&self) -> usize {
        self.snapshots.len()
    }

    /// The trackers.
    /// The trackers of devices that are there (a tracker whose device went
    /// away is forgotten by the next call that changes the trackers).
    pub(crate) fn trackers(&self) -> impl Iterator<Item = &Arc<Tracker>> + '_ {
        self.trackers
            .iter()
            .map(|t| &t.tracker)
            .filter(|t| !t.is_gone())
    }

    pub(crate) fn tracker_count(&self) -> usize {
        self.trackers().count()
    }

    /// TRACKER_REMOVE: `ENODEV` without a tracker, `EBUSY` in a snapshot.
    pub(crate) fn remove_tracker(&mut self, dev: DevT) -> Result {
        self.purge_gone();
        if self.tracker(dev).ok_or(ENODEV)?.snapshot.is_some() {
            return Err(EBUSY);
        }
        drop(self.trackers.remove_first(|t| t.tracker.dev() == dev));
        pr_info!("stopped tracking {}:{}\n", dev.major(), dev.minor());
        Ok(())
    }

    /// The tracker of `dev` if the device is in a taken snapshot (its
    /// snapshot map is then that snapshot's): `ENODEV` without a tracker,
    /// `EPERM` otherwise.
    pub(crate) fn taken_tracker(&self, dev: DevT) -> Result<Arc<Tracker>> {
        let t = self.tracker(dev).ok_or(ENODEV)?;
        let taken = match &t.snapshot {
            Some(id) => self.snapshots.iter().any(|s| &s.id == id && s.taken),
            None => false,
        };
        if !taken {
            return Err(EPERM);
        }
        Ok(t.tracker.clone())
    }

    /// SNAPSHOT_APPEND_STORAGE of `pairs` (sectors of `bdev`) to snapshot
    /// `id`; `abs` holds the same ranges in whole-disk sectors, sorted, for
    /// the module-wide overlap check (`EINVAL`).
    pub(crate) fn append_storage(
        &self,
        id: &[u8; 16],
        bdev: Arc<BdevFile>,
        pairs: &mut KVVec<(u64, u64)>,
        abs: &[(u64, u64)],
    ) -> Result {
        let snap = self.snapshot(id)?;
        if snap.taken {
            let mut devs = KVec::with_capacity(snap.devices.len(), GFP_KERNEL)?;
            for &d in snap.devices.iter() {
                let whole = self.tracker(d).map_or(d, |t| t.tracker.whole_dev());
                devs.push((d, whole), GFP_KERNEL)?;
            }
            refuse_storage_under(&bdev, &devs)?;
        }
        let storage = snap.storage.clone();
        let whole = bdev.whole_dev();
        if self
            .snapshots
            .iter()
            .any(|s| s.storage.overlaps(whole, abs))
            || self
                .trackers
                .iter()
                .filter_map(|t| t.store.as_ref())
                .any(|s| s.overlaps(whole, abs))
        {
            return Err(EINVAL);
        }
        storage.append(bdev, pairs)
    }

    /// The images of snapshot `id`: original device and image minor.
    pub(crate) fn images(&self, id: &[u8; 16]) -> Result<impl Iterator<Item = (DevT, u32)> + '_> {
        Ok(self
            .snapshot(id)?
            .images
            .iter()
            .map(|i| (i.area.dev(), i.minor)))
    }

    /// The event queue of snapshot `id`.
    pub(crate) fn events(&self, id: &[u8; 16]) -> Result<Arc<EventQueue>> {
        Ok(self.snapshot(id)?.events.clone())
    }

    /// Everything, taken out (unload): dropping it ends every snapshot and
    /// tracker.
    pub(crate) fn take_all(&mut self) -> State {
        core::mem::replace(self, State::new())
    }
}

/// Starts tracking on the new devices `fresh`, with their file systems
/// frozen so that no write slips past the attach half-done. All or
/// nothing: a device that fails leaves no tracker or filter on the others
/// (dropping the entries made so far detaches them).
fn attach_all(fresh: KVec<BdevFile>, pool: &Arc<WatchPool>) -> Result<KVec<TrackerEntry>> {
    let mut attached = KVec::with_capacity(fresh.len(), GFP_KERNEL)?;
    for bdev in fresh.into_iter() {
        let tracker = Tracker::new(bdev.hold(), pool.clone())?;
        let filter = {
            let _frozen = bdev.freeze()?;
            Attached::attach(&bdev, tracker.clone())?
        };
        attached.push(
            TrackerEntry {
                tracker,
                _filter: filter,
                snapshot: None,
                store: None,
            },
            GFP_KERNEL,
        )?;
    }
    Ok(attached)
}
