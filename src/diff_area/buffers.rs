// SPDX-License-Identifier: GPL-2.0

//! Chunk buffers: a device's pool of spare buffers (filled with one at
//! TAKE, at most one per copy slot) and the pages behind them. A copy that
//! finds no spare buffer and no memory takes a cached chunk's buffer, or
//! waits for a running copy to give one back. Shared chunk data (a copy's
//! buffer that image reads use) comes back here from its last holder.
//!
//! Memory reclaim takes cached chunks back too, through the device's
//! shrinker (their data is in storage: only image reads get slower).

use kernel::alloc::flags::__GFP_NOWARN;
use kernel::alloc::flags::GFP_KERNEL;
use kernel::page::{Page, PAGE_SIZE};
use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::time::msecs_to_jiffies;

use crate::kernel_ext::page_io::PageVec;
use crate::kernel_ext::shrinker::Shrink;
use crate::logic::geometry::Geometry;

use super::chunks::ChunkData;
use super::DiffArea;
use crate::kernel_ext::mem::alloc_n;

/// A chunk buffer from a device's pool, given back when dropped.
pub(super) struct Buffer<'a> {
    pub(super) area: &'a DiffArea,
    pub(super) pages: KVec<Page>,
}

impl Drop for Buffer<'_> {
    fn drop(&mut self) {
        let pages = core::mem::take(&mut self.pages);
        self.area.put_buffer(pages);
    }
}

/// A chunk buffer of `geometry`'s chunk size.
pub(super) fn alloc_buffer(geometry: &Geometry, flags: kernel::alloc::Flags) -> Result<KVec<Page>> {
    let bytes = usize::try_from(geometry.unit_sectors() * 512).map_err(|_| EINVAL)?;
    alloc_pages(bytes.div_ceil(PAGE_SIZE), flags)
}

/// `n` pages.
pub(super) fn alloc_pages(n: usize, flags: kernel::alloc::Flags) -> Result<KVec<Page>> {
    Ok(alloc_n(n, flags, || Page::alloc_page(flags))?)
}

impl DiffArea {
    /// Gives `data`'s pages back to the pool, unless someone else still
    /// holds it: an image read copying from it (the pages then go when it
    /// is done), or the cache.
    pub(super) fn reclaim(&self, data: Option<Arc<ChunkData>>) {
        if let Some(pages) = data.and_then(PageVec::into_pages) {
            self.put_buffer(pages);
        }
    }

    /// A chunk buffer: a spare one, a new one, or, when memory is short,
    /// the next one a running copy gives back (or memory that an image
    /// read gives back). Some copy or read always holds a buffer if none
    /// is spare (TAKE made one, and the pool never lets the last one go),
    /// so the wait ends.
    pub(super) fn get_buffer(&self) -> Buffer<'_> {
        loop {
            if let Some(pages) = self.buffers.lock().iter_mut().find_map(Option::take) {
                return Buffer { area: self, pages };
            }
            if let Ok(pages) = alloc_buffer(&self.geometry, GFP_KERNEL | __GFP_NOWARN) {
                return Buffer { area: self, pages };
            }
            // Memory is short: the cache gives way to copies.
            let evicted = self.chunks.lock().evict();
            if let Some(pages) = evicted.and_then(PageVec::into_pages) {
                if !pages.is_empty() {
                    return Buffer { area: self, pages };
                }
            }
            let mut spare = self.buffers.lock();
            if spare.iter().all(Option::is_none) {
                // A buffer whose pages an image read still held is freed,
                // not given back, when that read ends: memory may come
                // back with no signal, so look again now and then (the
                // loop looks whether woken, timed out or signalled).
                let _ = self
                    .buffer_back
                    .wait_interruptible_timeout(&mut spare, msecs_to_jiffies(20));
            }
        }
    }

    /// Takes a buffer back: kept as a spare, or freed if enough are.
    pub(super) fn put_buffer(&self, pages: KVec<Page>) {
        // A buffer whose pages went to a `ChunkData` comes back empty.
        if pages.is_empty() {
            return;
        }
        let extra = {
            let mut spare = self.buffers.lock();
            let kept = spare.iter().filter(|b| b.is_some()).count();
            match spare.iter_mut().find(|b| b.is_none()) {
                Some(place) if kept < self.keep_buffers => {
                    *place = Some(pages);
                    None
                }
                _ => Some(pages),
            }
        };
        self.buffer_back.notify_all();
        drop(extra);
    }
}

/// The chunk cache under memory pressure, counted in pages: reclaim takes
/// the oldest cached chunks first.
impl Shrink for DiffArea {
    fn count(&self) -> usize {
        let cached = self.chunks.lock().cached.len();
        cached.saturating_mul(self.chunk_pages())
    }

    fn scan(&self, nr: usize) -> usize {
        let per = self.chunk_pages().max(1);
        let mut freed = 0;
        while freed < nr {
            let Some(data) = self.chunks.lock().evict() else {
                break;
            };
            // The pages go now, or when an image read copying from them
            // is done (which then gives them to the pool).
            drop(data);
            freed += per;
        }
        freed
    }
}

impl DiffArea {
    /// Pages in a chunk buffer.
    fn chunk_pages(&self) -> usize {
        (self.geometry.unit_bytes() as usize).div_ceil(PAGE_SIZE)
    }
}
