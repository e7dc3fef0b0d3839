// SPDX-License-Identifier: GPL-2.0

//! The image disk of a device: reads served from the original, from
//! storage or from memory (a chunk being copied, or cached), with
//! neighbouring chunks from one place read in one bio; writes, which save
//! the chunk first and then write to its copy in storage; and the bounce
//! buffer for storage whose logical blocks are larger than the image's.
//!
//! An image read of the original counts as a reader of its chunk, which
//! keeps writes to the original held until it is done. Image bios are
//! counted until they end, so that DESTROY can wait for them.

use core::sync::atomic::Ordering;

use kernel::alloc::flags::GFP_KERNEL;
use kernel::c_str;
use kernel::page::PAGE_SIZE;
use kernel::prelude::*;
use kernel::rbtree::RBTreeNodeReservation;
use kernel::sync::Arc;

use crate::kernel_ext::bio::{BioOp, BlkStatus, OwnedBio};
use crate::kernel_ext::bio_list::BioList;
use crate::kernel_ext::block::BdevFile;
use crate::kernel_ext::errno::eopnotsupp;
use crate::kernel_ext::gendisk::DiskOps;
use crate::kernel_ext::mem::NoIo;
use crate::kernel_ext::page_io::{page_io, Dir};
use crate::logic::storage::Region;

use super::buffers::alloc_pages;
use super::chunks::{Chunk, ChunkData, State};
use super::copy::CopyWork;
use super::DiffArea;

/// Where an image read of one chunk goes.
pub(super) enum Source {
    Original,
    Storage(Region, Arc<BdevFile>),
    Memory(Arc<ChunkData>),
}

impl DiskOps for DiffArea {
    /// `/sys/block/<image>/blksnap/`: the snapshot's diff storage, appended
    /// and consumed, in 512-byte sectors (shared by the snapshot's images),
    /// and this device's chunk size. Tools grow storage as it is consumed.
    const ATTR_GROUP: &'static CStr = c_str!("blksnap");
    const ATTRS: &'static [&'static CStr] = &[
        c_str!("diff_storage_total"),
        c_str!("diff_storage_used"),
        c_str!("chunk_sectors"),
    ];

    fn submit_bio(this: &Arc<Self>, bio: OwnedBio) {
        let counted = ImageIo::new(this.clone());
        // If the work item cannot be allocated, the closure and the bio in it
        // are dropped, which ends the bio with an I/O error (and then drops
        // the count): nothing else to do with the error.
        let _ = this.io_wq.spawn(move || {
            counted.0.image_io(bio);
            drop(counted);
        });
    }

    fn attr(this: &Arc<Self>, index: usize) -> u64 {
        match index {
            0 => this.storage.total(),
            1 => this.storage.used(),
            _ => this.geometry.unit_sectors(),
        }
    }
}

/// One image bio counted in [`DiffArea::image_ios`] until this is dropped,
/// after the bio ended.
pub(super) struct ImageIo(Arc<DiffArea>);

impl ImageIo {
    fn new(area: Arc<DiffArea>) -> Self {
        // No lock needed: DESTROY waits only after the image disk is
        // deleted, when no bio comes in any more.
        area.image_ios.fetch_add(1, Ordering::AcqRel);
        Self(area)
    }
}

impl Drop for ImageIo {
    fn drop(&mut self) {
        let _c = self.0.chunks.lock();
        if self.0.image_ios.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.settled.notify_all();
        }
    }
}

impl DiffArea {
    /// Chooses where an image read of chunk `idx` goes, counting a reader of
    /// the original.
    pub(super) fn read_source(
        &self,
        idx: u32,
        reservation: &mut Option<RBTreeNodeReservation<u32, Chunk>>,
    ) -> Result<Source> {
        let mut c = self.chunks.lock();
        match c.map.get_mut(&idx) {
            Some(chunk) => match chunk.state {
                State::Stored(_) | State::Copying if chunk.mem.is_some() => {
                    Ok(Source::Memory(chunk.mem.clone().ok_or(EIO)?))
                }
                State::Stored(r) => Ok(Source::Storage(r, chunk.storage.clone().ok_or(EIO)?)),
                State::Failed => Err(EIO),
                State::Original | State::Copying => {
                    chunk.readers += 1;
                    Ok(Source::Original)
                }
            },
            None => {
                let res = reservation.take().ok_or(ENOMEM)?;
                let mut chunk = Chunk::new(State::Original);
                chunk.readers = 1;
                c.map.insert(res.into_node(idx, chunk));
                Ok(Source::Original)
            }
        }
    }

    /// An image read of the original for chunk `idx` is done.
    pub(super) fn read_done(self: &Arc<Self>, idx: u32) {
        let mut released = BioList::new();
        {
            let mut c = self.chunks.lock();
            let mut forget = false;
            if let Some(chunk) = c.map.get_mut(&idx) {
                chunk.readers = chunk.readers.saturating_sub(1);
                if chunk.writable() {
                    released = chunk.held.take();
                }
                forget = chunk.readers == 0
                    && matches!(chunk.state, State::Original)
                    && chunk.held.is_empty();
            }
            if forget {
                // Keep memory proportional to changes, not to reads.
                c.map.remove(&idx);
            }
        }
        while let Some(bio) = released.pop() {
            self.hold_or_release(bio);
        }
    }

    /// Makes sure chunk `idx` is in storage and returns its region, for
    /// image writes. The copy goes through the device's copy slots like any
    /// other, so image writes add nothing to the memory copies use.
    pub(super) fn ensure_stored(self: &Arc<Self>, idx: u32) -> Result<(Region, Arc<BdevFile>)> {
        let mut reservation = RBTreeNodeReservation::new(GFP_KERNEL).ok();
        self.queue_room(1)?;
        let mut to_start = KVec::<(Arc<CopyWork>, u32)>::with_capacity(1, GFP_KERNEL)?;
        let mut guard = self.chunks.lock();
        loop {
            if self.is_corrupted() || guard.closed {
                return Err(EIO);
            }
            let c = &mut *guard;
            let copy = match c.map.get_mut(&idx) {
                Some(chunk) => match chunk.state {
                    State::Stored(r) => {
                        // The image write makes the cached data stale.
                        let stale = chunk.mem.take();
                        let dev = chunk.storage.clone().ok_or(EIO);
                        drop(guard);
                        self.reclaim(stale);
                        return Ok((r, dev?));
                    }
                    State::Failed => return Err(EIO),
                    State::Copying => false,
                    State::Original => {
                        chunk.state = State::Copying;
                        true
                    }
                },
                None => {
                    let res = reservation.take().ok_or(ENOMEM)?;
                    c.map.insert(res.into_node(idx, Chunk::new(State::Copying)));
                    true
                }
            };
            if copy {
                if c.queued.room(&c.ring) == 0 {
                    // Used up since `queue_room`: give the chunk back.
                    if let Some(chunk) = c.map.get_mut(&idx) {
                        chunk.state = State::Original;
                    }
                    drop(guard);
                    self.queue_room(1)?;
                    guard = self.chunks.lock();
                    continue;
                }
                Self::start_or_queue(c, idx, &mut to_start);
                drop(guard);
                // The slot taken goes to its copy before anything can fail:
                // a slot dropped here would never come back, and the chunk
                // would stay `Copying` (its writes, DESTROY and unload
                // waiting for ever).
                self.spawn_copies(core::mem::take(&mut to_start));
                to_start = KVec::with_capacity(1, GFP_KERNEL)?;
                guard = self.chunks.lock();
                continue;
            }
            self.settled.wait(&mut guard);
        }
    }

    /// Performs bytes `[done, done + part)` of image bio `bio` on storage
    /// device `dev` at `sector`. A storage device whose logical blocks are
    /// larger than the image's (4Kn storage under a 512-byte original)
    /// cannot take a part that is not aligned to them: such a part goes
    /// through a bounce buffer of whole blocks (read, and for a write,
    /// modify and write back, one at a time per device).
    pub(super) fn storage_io(
        &self,
        bio: &OwnedBio,
        done: u32,
        part: u32,
        dev: &BdevFile,
        sector: u64,
        write: bool,
    ) -> Result {
        let lbs = u64::from(dev.logical_block_size() >> 9).max(1);
        let n = u64::from(part >> 9);
        if sector % lbs == 0 && n % lbs == 0 {
            return bio.io_part(done, part, dev, sector);
        }
        let first = sector / lbs * lbs;
        let end = sector.checked_add(n).ok_or(EIO)?.div_ceil(lbs) * lbs;
        let bytes = usize::try_from((end - first) * 512).map_err(|_| EIO)?;
        let at = usize::try_from((sector - first) * 512).map_err(|_| EIO)?;
        let pages = alloc_pages(bytes.div_ceil(PAGE_SIZE), GFP_KERNEL)?;
        let _rmw = self.bounce.lock();
        page_io(dev, first, &pages, bytes, Dir::Read)?;
        bio.copy_pages(done as usize, &pages, at, part as usize, !write)?;
        if write {
            page_io(dev, first, &pages, bytes, Dir::Write)?;
        }
        Ok(())
    }

    /// [`Self::storage_io`] on a chunk's copy in storage: if that fails,
    /// the snapshot's data is lost or cannot be reached, so the image is
    /// corrupted (the event tells user space), not just this bio failed.
    pub(super) fn stored_io(
        &self,
        bio: &OwnedBio,
        done: u32,
        part: u32,
        dev: &BdevFile,
        sector: u64,
        write: bool,
    ) -> Result {
        let r = self.storage_io(bio, done, part, dev, sector, write);
        if let Err(e) = r {
            if e != ENOMEM {
                self.corrupt(EIO);
            }
        }
        r
    }

    /// Worker: serves one image bio.
    pub(super) fn image_io(self: &Arc<Self>, bio: OwnedBio) {
        let _noio = NoIo::enter();
        let status = match self.image_io_inner(&bio) {
            Ok(()) => BlkStatus::Ok,
            Err(e) if e == eopnotsupp() => BlkStatus::NotSupp,
            Err(_) => BlkStatus::IoErr,
        };
        bio.end(status);
    }

    pub(super) fn image_io_inner(self: &Arc<Self>, bio: &OwnedBio) -> Result {
        let write = match bio.op() {
            BioOp::Read => false,
            BioOp::Write => true,
            _ => return Err(eopnotsupp()),
        };
        if self.is_corrupted() {
            return Err(EIO);
        }
        let total = bio.size();
        let mut sector = bio.sector();
        let mut done: u32 = 0;
        // The source of the chunk after a run of reads, found while
        // extending the run (an original source counts a reader).
        let mut pending: Option<(u32, Source)> = None;
        while done < total {
            let (idx, _) = self.geometry.units_of(sector, 1).ok_or(EIO)?;
            let part = self.part_in_chunk(idx, sector, total - done)?;
            let in_chunk = sector - self.geometry.unit_start(idx);
            if write {
                let (region, dev) = self.ensure_stored(idx)?;
                self.stored_io(bio, done, part, &dev, region.sector + in_chunk, true)?;
                self.tracker.mark_dirty(sector, u64::from(part >> 9))?;
                done += part;
                sector += u64::from(part >> 9);
                continue;
            }
            let src = match pending.take() {
                Some((i, src)) if i == idx => src,
                other => {
                    self.drop_source(other);
                    let mut reservation = RBTreeNodeReservation::new(GFP_KERNEL).ok();
                    self.read_source(idx, &mut reservation)?
                }
            };
            // The chunks after this one that read from where this one ends
            // (the original, or the next region of the same storage) join
            // it: one I/O for the run.
            let (len, last) = self.extend_run(&src, idx, done + part, total, part, &mut pending);
            let r = match &src {
                Source::Storage(region, dev) => {
                    self.stored_io(bio, done, len, dev, region.sector + in_chunk, false)
                }
                Source::Memory(data) => {
                    let at = usize::try_from(in_chunk * 512).map_err(|_| EIO)?;
                    bio.copy_pages(done as usize, data.pages(), at, len as usize, true)
                }
                Source::Original => {
                    let r = bio.io_part(done, len, &self.orig, sector);
                    // Writes to the original stop being held once the
                    // image is corrupted or the snapshot is going, and one
                    // may have landed while this read was in flight: only
                    // a read that ended before either is known to hold the
                    // data of TAKE.
                    let stale = self.is_corrupted() || self.going.load(Ordering::Acquire);
                    for i in idx..=last {
                        self.read_done(i);
                    }
                    if r.is_ok() && stale {
                        Err(EIO)
                    } else {
                        r
                    }
                }
            };
            if let Err(e) = r {
                self.drop_source(pending.take());
                return Err(e);
            }
            done += len;
            sector += u64::from(len >> 9);
        }
        self.drop_source(pending);
        Ok(())
    }

    /// Bytes of an image bio from `sector` that lie in chunk `idx`, at most
    /// `left`.
    pub(super) fn part_in_chunk(&self, idx: u32, sector: u64, left: u32) -> Result<u32> {
        let chunk_end = self.geometry.unit_start(idx) + self.geometry.unit_len(idx);
        u32::try_from(((chunk_end - sector) * 512).min(u64::from(left))).map_err(|_| EIO)
    }

    /// Extends an image read that starts in chunk `first` with `len` bytes
    /// (its first chunk's part) over the following chunks whose data lies
    /// right after it on the same device, up to byte `total` of the bio
    /// (`at` is where the run ends so far). Returns the run's length and
    /// last chunk; the source of the first chunk that does not join goes
    /// to `pending`.
    pub(super) fn extend_run(
        &self,
        src: &Source,
        first: u32,
        mut at: u32,
        total: u32,
        mut len: u32,
        pending: &mut Option<(u32, Source)>,
    ) -> (u32, u32) {
        let mut last = first;
        let mut end_sector = match src {
            Source::Storage(r, _) => r.sector + self.geometry.unit_sectors(),
            // Data in memory is one chunk's: no run.
            Source::Memory(_) => return (len, last),
            Source::Original => 0,
        };
        while at < total {
            let n = last + 1;
            let part = match self.part_in_chunk(n, self.geometry.unit_start(n), total - at) {
                Ok(p) if p > 0 => p,
                _ => break,
            };
            let mut reservation = RBTreeNodeReservation::new(GFP_KERNEL).ok();
            let Ok(next) = self.read_source(n, &mut reservation) else {
                break;
            };
            let joins = match (src, &next) {
                (Source::Original, Source::Original) => true,
                (Source::Storage(_, dev), Source::Storage(r, d)) => {
                    Arc::ptr_eq(d, dev) && r.sector == end_sector
                }
                _ => false,
            };
            if !joins {
                *pending = Some((n, next));
                break;
            }
            end_sector += self.geometry.unit_sectors();
            len += part;
            at += part;
            last = n;
        }
        (len, last)
    }

    /// Gives up a source found but not used (an original source counted a
    /// reader).
    pub(super) fn drop_source(self: &Arc<Self>, src: Option<(u32, Source)>) {
        if let Some((idx, Source::Original)) = src {
            self.read_done(idx);
        }
    }
}
