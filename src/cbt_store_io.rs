// SPDX-License-Identifier: GPL-2.0

//! A CBT store on a block device: the block I/O that the checkpoint and
//! attach of `logic::cbt_store` run over. Whole store blocks (one page
//! each) at the sectors of the store's extents, through the module's page
//! I/O (which bypasses filters, so the store's own writes are never
//! tracked), made durable with a cache flush of the store's device.

use kernel::alloc::flags::GFP_KERNEL;
use kernel::page::{Page, PAGE_SIZE};
use kernel::prelude::*;

use crate::kernel_ext::block::BdevFile;
use crate::kernel_ext::mem::{copy_from_page, copy_to_page};
use crate::kernel_ext::page_io::{page_io, Dir};
use crate::logic::cbt_store::{Extents, StoreIo};
use crate::logic::persist::STORE_BLOCK;

// A store block is one page: one bio each.
const _: () = assert!(STORE_BLOCK == PAGE_SIZE);

/// A store at `extents` of `bdev`, with the page its I/O goes through.
pub(crate) struct BdevStore<'a> {
    bdev: &'a BdevFile,
    extents: Extents<'a>,
    page: Page,
}

impl<'a> BdevStore<'a> {
    pub(crate) fn new(bdev: &'a BdevFile, extents: Extents<'a>) -> Result<Self> {
        Ok(Self {
            bdev,
            extents,
            page: Page::alloc_page(GFP_KERNEL)?,
        })
    }
}

impl StoreIo for BdevStore<'_> {
    fn read(&mut self, block: u64, buf: &mut [u8]) -> bool {
        let (Some(sector), Some(dst)) = (self.extents.sector_of(block), buf.get_mut(..STORE_BLOCK))
        else {
            return false;
        };
        let pages = core::slice::from_ref(&self.page);
        page_io(self.bdev, sector, pages, STORE_BLOCK, Dir::Read).is_ok()
            && copy_from_page(&self.page, dst).is_ok()
    }

    fn write(&mut self, block: u64, buf: &[u8]) -> bool {
        let (Some(sector), Some(src)) = (self.extents.sector_of(block), buf.get(..STORE_BLOCK))
        else {
            return false;
        };
        copy_to_page(&mut self.page, src).is_ok()
            && page_io(
                self.bdev,
                sector,
                core::slice::from_ref(&self.page),
                STORE_BLOCK,
                Dir::Write,
            )
            .is_ok()
    }

    fn flush(&mut self) -> bool {
        self.bdev.flush().is_ok()
    }
}
