// SPDX-License-Identifier: GPL-2.0

//! SNAPSHOT_TAKE, in three steps: under the state lock the checks and the
//! copy-on-write state of each device ([`State::take_begin`]); without it
//! the one instant of the snapshot ([`Taking::switch`]); under it again
//! the images, or the undoing of it all ([`State::take_end`]).

use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::ThisModule;

use super::{open_dev, Image, State};
use crate::diff_area::DiffArea;
use crate::kernel_ext::block::BdevFile;
use crate::kernel_ext::errno::ealready;
use crate::kernel_ext::gendisk::BioDisk;
use crate::kernel_ext::shrinker::Shrinker;
use crate::kernel_ext::workqueue::WorkQueue;
use crate::logic::cbt::Numbers;
use crate::tracker::Tracker;
use crate::uapi;

/// What TAKE needs to make images.
pub(crate) struct ImageEnv {
    /// The image disks' major number.
    pub(crate) major: u32,
    pub(crate) module: &'static ThisModule,
    pub(crate) copy_wq: Arc<WorkQueue>,
    pub(crate) start_wq: Arc<WorkQueue>,
    pub(crate) io_wq: Arc<WorkQueue>,
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

/// A TAKE under way (see [`State::take_begin`]): what it works on, held
/// while the state lock is not.
pub(crate) struct Taking {
    id: [u8; 16],
    trackers: KVec<Arc<Tracker>>,
    origs: KVec<Arc<BdevFile>>,
    areas: KVec<Arc<DiffArea>>,
    /// Each tracker's numbering before the switch, to undo it with (room
    /// for all of them made before the switch).
    before: KVec<Numbers>,
}

impl Taking {
    /// TAKE, second step, without the state lock, since it may wait long
    /// (for a slow device's writes in flight, up to 30 s, or a freeze):
    /// one instant for all devices. Freezes every file system, holds new
    /// writes, waits for those in flight, switches every map and starts
    /// copy on write, lets the writes go, thaws. A raw write racing TAKE is
    /// thus wholly before the snapshot (in the image, in the map taken now)
    /// or wholly after it (copied first).
    pub(crate) fn switch(&mut self) -> Result {
        let mut frozen = KVec::with_capacity(self.origs.len(), GFP_KERNEL)?;
        for orig in self.origs.iter() {
            frozen.push(orig.freeze()?, GFP_KERNEL)?;
        }
        let mut holds = KVec::with_capacity(self.trackers.len(), GFP_KERNEL)?;
        for t in self.trackers.iter() {
            holds.push(t.hold_writes(), GFP_KERNEL)?;
        }
        for t in self.trackers.iter() {
            t.drain()?;
        }
        let mut map_pages = KVec::with_capacity(self.trackers.len(), GFP_KERNEL)?;
        for t in self.trackers.iter() {
            map_pages.push(t.reserve_map_pages()?, GFP_KERNEL)?;
        }
        for ((t, a), pages) in self.trackers.iter().zip(self.areas.iter()).zip(map_pages) {
            // Within the room made in `take_begin`: no allocation here.
            self.before
                .push(t.start_snapshot(a.clone(), pages), GFP_ATOMIC)?;
        }
        Ok(())
    }
}

impl State {
    /// No write-intent marks on the devices of snapshot `id` while it
    /// lives, nor in stores whose writes reach one of them: the marks'
    /// writes pass every filter (an image would show them), and the
    /// snapshot's switch moves its devices' change numbers on. Each such
    /// store is checkpointed without marks before the snapshot's instant
    /// (so it is in the images as it was then); the snapshot's release
    /// starts marks again ([`State::release`]). `EIO` if a store can be
    /// neither checkpointed nor spoiled.
    fn stop_marks_for(&mut self, id: &[u8; 16]) -> Result {
        let snap = self.snapshot(id)?;
        let mut devs = KVec::with_capacity(snap.devices.len(), GFP_KERNEL)?;
        for &d in snap.devices.iter() {
            let whole = self.tracker(d).map_or(d, |t| t.tracker.whole_dev());
            devs.push((d, whole), GFP_KERNEL)?;
        }
        for t in self.trackers.iter_mut() {
            let Some(store) = t.store.as_mut() else {
                continue;
            };
            if t.snapshot.as_ref() == Some(id) || super::reached(store.bdev(), &devs)?.is_some() {
                store.stop_marks(&t.tracker)?;
            }
        }
        Ok(())
    }

    /// SNAPSHOT_TAKE of snapshot `id`, first step: checks, opens the
    /// devices and makes their copy-on-write state, and marks the
    /// snapshot as being taken. [`Taking::switch`] follows without the
    /// state lock, then [`Self::take_end`] under it.
    pub(crate) fn take_begin(&mut self, id: &[u8; 16], env: &ImageEnv) -> Result<Taking> {
        let snap = self.snapshot(id)?;
        if snap.taken || snap.taking {
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
            let t = self.tracker(dev).ok_or(ENODEV)?;
            if t.tracker.is_gone() {
                return Err(ENODEV);
            }
            let orig = open_dev(dev, false)?;
            if !t.tracker.is_device(&orig) {
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
                    env.copy_wq.clone(),
                    env.start_wq.clone(),
                    env.io_wq.clone(),
                )?,
                GFP_KERNEL,
            )?;
        }
        let before = KVec::with_capacity(trackers.len(), GFP_KERNEL)?;
        self.stop_marks_for(id)?;
        self.snapshot_mut(id)?.taking = true;
        Ok(Taking {
            id: *id,
            trackers,
            origs,
            areas,
            before,
        })
    }

    /// An image disk for each of `areas`; on failure none (those made are
    /// deleted, so that no image bio comes after).
    fn make_images(&self, areas: &[Arc<DiffArea>], env: &ImageEnv) -> Result<KVec<Image>> {
        let mut images = KVec::with_capacity(areas.len(), GFP_KERNEL)?;
        for a in areas.iter() {
            let minor = self.free_minor(&images);
            let mut name = [0u8; 32];
            let len = fmt_image_name(&mut name, minor);
            // Our side of the disk (name, number, size, block size) is
            // checked, so the block layer failed for want of resources:
            // under allocation failures it can say EINVAL as well as
            // ENOMEM. Report ENOMEM.
            let disk = BioDisk::add(
                &name[..len],
                env.major,
                minor,
                a.capacity(),
                a.logical_block_size(),
                a.clone(),
                env.module,
            )
            .map_err(|_| ENOMEM)?;
            let cache = Shrinker::register(a.clone())?;
            images.push(
                Image {
                    area: a.clone(),
                    disk: Some(disk),
                    minor,
                    _cache: cache,
                },
                GFP_KERNEL,
            )?;
        }
        Ok(images)
    }

    /// SNAPSHOT_TAKE, last step, with the result of [`Taking::switch`]:
    /// an image of each device. If the switch or an image fails, nothing
    /// of the TAKE stays: no copy on write, no image.
    pub(crate) fn take_end(&mut self, taking: Taking, switched: Result, env: &ImageEnv) -> Result {
        let Taking {
            id, areas, before, ..
        } = taking;
        // DESTROY is refused while `taking` is set: the snapshot is there.
        let snap = self.snapshot_mut(&id)?;
        snap.taking = false;
        let storage = snap.storage.clone();
        switched?;
        let images = match self.make_images(&areas, env) {
            Ok(images) => images,
            Err(e) => {
                // Undo it all: copy on write stops and the maps' numbering
                // is as before, the copies end (as a going snapshot's: no
                // corrupted event for a snapshot never taken), and their
                // storage is free again.
                for (a, b) in areas.iter().zip(before.iter()) {
                    a.tracker().undo_snapshot(*b);
                }
                for a in areas.iter() {
                    a.set_going();
                    a.close();
                }
                storage.release_all();
                return Err(e);
            }
        };
        let snap = self.snapshot_mut(&id)?;
        snap.images = images;
        snap.taken = true;
        Ok(())
    }
}
