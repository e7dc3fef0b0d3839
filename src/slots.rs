// SPDX-License-Identifier: GPL-2.0

//! A small collection with removal, since 6.12's `KVec` can only grow.
//!
//! Removed entries leave an empty slot that the next insertion reuses, so
//! memory stays bounded by the most entries ever held at once, and removal
//! never allocates (it cannot fail).

use kernel::alloc::flags::GFP_KERNEL;
use kernel::prelude::*;

pub(crate) struct Slots<T> {
    slots: KVec<Option<T>>,
}

impl<T> Slots<T> {
    pub(crate) const fn new() -> Self {
        Self { slots: KVec::new() }
    }

    /// Makes sure `n` more insertions will not allocate.
    pub(crate) fn reserve(&mut self, n: usize) -> Result {
        let free = self.slots.iter().filter(|s| s.is_none()).count();
        if n > free {
            self.slots.reserve(n - free, GFP_KERNEL)?;
        }
        Ok(())
    }

    pub(crate) fn insert(&mut self, value: T) -> Result {
        if let Some(slot) = self.slots.iter_mut().find(|s| s.is_none()) {
            *slot = Some(value);
            return Ok(());
        }
        self.slots.push(Some(value), GFP_KERNEL)?;
        Ok(())
    }

    /// Removes and returns the first entry that `pred` accepts.
    pub(crate) fn remove_first(&mut self, mut pred: impl FnMut(&T) -> bool) -> Option<T> {
        self.slots
            .iter_mut()
            .find(|s| s.as_ref().is_some_and(&mut pred))?
            .take()
    }

    pub(crate) fn len(&self) -> usize {
        self.iter().count()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().filter_map(|s| s.as_ref())
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.slots.iter_mut().filter_map(|s| s.as_mut())
    }

    pub(crate) fn find(&self, mut pred: impl FnMut(&T) -> bool) -> Option<&T> {
        self.iter().find(|t| pred(t))
    }
}
